//! A small PHM classifier for the checkpoint and training tests: `PhmLinear(d → h, n)` → ReLU
//! → `Linear(h → c)`, whose phm-nn twin is the `Sequential` of the same layers (parameter
//! paths `0.rules`, `0.blocks`, `0.bias`, `2.weight`, `2.bias`).

#![allow(dead_code)]

pub mod parity;

use burn::module::Module;
use burn::tensor::activation::relu;
use burn::tensor::{Device, Tensor};
use phm_burn::linear::{Linear, PhmLinear};
use phm_burn::{burn, Bridge};
use phm_nn::{Float, PhmError, Relu, Result, Sequential};

/// `PhmLinear(d → h, n)` → ReLU → `Linear(h → c)` as a burn module.
#[derive(Module, Debug)]
pub struct TinyPhmMlp {
    /// The PHM layer (phm-nn path `0`).
    pub phm: PhmLinear,
    /// The dense output layer (phm-nn path `2`).
    pub out: Linear,
}

impl TinyPhmMlp {
    /// Logits `(b, c)` of inputs `(b, d)`.
    pub fn forward(&self, x: Tensor<2>) -> Tensor<2> {
        self.out.forward(relu(self.phm.forward(x)))
    }
}

/// `result` with the tensor named in a mismatch prefixed by the layer's path in the model.
fn within<T>(prefix: &str, result: Result<T>) -> Result<T> {
    result.map_err(|e| match e {
        PhmError::CheckpointMismatch {
            source,
            tensor,
            expected,
            found,
        } => PhmError::CheckpointMismatch {
            source,
            tensor: format!("{prefix}.{tensor}"),
            expected,
            found,
        },
        e => e,
    })
}

fn layer<F: Float, T: phm_nn::Module<F>>(seq: &Sequential<F>, i: usize) -> Result<&T> {
    seq.get::<T>(i).ok_or_else(|| PhmError::InvalidArgument {
        what: "native model",
        reason: format!("layer {i} is not a {}", std::any::type_name::<T>()),
    })
}

impl Bridge for TinyPhmMlp {
    type Native<F: Float> = Sequential<F>;

    fn to_native<F: Float>(&self) -> Result<Sequential<F>> {
        let phm = within("0", self.phm.to_native::<F>())?;
        let out = within("2", self.out.to_native::<F>())?;
        Ok(Sequential::new().add(phm).add(Relu::new()).add(out))
    }

    fn from_native<F: Float>(native: &Sequential<F>, device: &Device) -> Result<Self> {
        Ok(Self {
            phm: PhmLinear::from_native(layer::<F, phm_nn::PhmLinear<F>>(native, 0)?, device)?,
            out: Linear::from_native(layer::<F, phm_nn::Linear<F>>(native, 2)?, device)?,
        })
    }
}

/// The phm-nn model `PhmLinear(d → h, n)` → ReLU → `Linear(h → c)`, initialised from `seed`.
pub fn native_mlp<F: Float>(d: usize, h: usize, c: usize, n: usize, seed: u64) -> Sequential<F> {
    use phm_nn::rand::SeedableRng;
    let mut rng = phm_nn::rand::rngs::StdRng::seed_from_u64(seed);
    let phm = phm_nn::PhmLinearConfig::new(d, h, n)
        .init::<F, _>(&mut rng)
        .expect("valid config");
    let out = phm_nn::LinearConfig::new(h, c)
        .init::<F, _>(&mut rng)
        .expect("valid config");
    Sequential::new().add(phm).add(Relu::new()).add(out)
}
