//! A small PHM classifier for the checkpoint and training tests: `PhmLinear(d → h, n)` → ReLU
//! → `Linear(h → c)`, whose phm-nn twin is the `Sequential` of the same layers (parameter
//! paths `0.rules`, `0.blocks`, `0.bias`, `2.weight`, `2.bias`).
//!
//! Written here with plain burn tensor ops so that these tests do not wait for the crate's
//! layer modules; `W = Σ_i A_i ⊗ S_i` is built as one broadcast product and a sum.

#![allow(dead_code)]

use burn::module::{Module, Param};
use burn::tensor::activation::relu;
use burn::tensor::{Device, Tensor};
use phm_burn::bridge::{array_from_tensor, tensor_from_array};
use phm_burn::{burn, Bridge};
use phm_nn::ndarray::Ix1;
use phm_nn::ndarray::{Ix2, Ix3};
use phm_nn::{Float, Linear, PhmError, PhmLinear, Relu, Result, Sequential};

/// `PhmLinear(d → h, n)` → ReLU → `Linear(h → c)` as a burn module.
#[derive(Module, Debug)]
pub struct TinyPhmMlp {
    /// Rules `A`: `(n, n, n)`.
    pub rules: Param<Tensor<3>>,
    /// Blocks `S`: `(n, h/n, d/n)`.
    pub blocks: Param<Tensor<3>>,
    /// First bias `(h)`.
    pub bias1: Param<Tensor<1>>,
    /// Output weight `(c, h)`.
    pub weight: Param<Tensor<2>>,
    /// Output bias `(c)`.
    pub bias2: Param<Tensor<1>>,
}

impl TinyPhmMlp {
    /// `W = Σ_i A_i ⊗ S_i`, `(h, d)`.
    pub fn phm_weight(&self) -> Tensor<2> {
        let [n, kn, dn] = self.blocks.val().dims();
        let a = self.rules.val().reshape([n, n, 1, n, 1]);
        let s = self.blocks.val().reshape([n, 1, kn, 1, dn]);
        (a * s).sum_dim(0).reshape([n * kn, n * dn])
    }

    /// Logits `(b, c)` of inputs `(b, d)`.
    pub fn forward(&self, x: Tensor<2>) -> Tensor<2> {
        let h = x.matmul(self.phm_weight().transpose()) + self.bias1.val().unsqueeze();
        relu(h).matmul(self.weight.val().transpose()) + self.bias2.val().unsqueeze()
    }
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
        let phm = PhmLinear::from_parts(
            array_from_tensor::<F, 3>(&self.rules.val(), "0.rules")?
                .into_dimensionality::<Ix3>()
                .expect("rank 3"),
            array_from_tensor::<F, 3>(&self.blocks.val(), "0.blocks")?
                .into_dimensionality::<Ix3>()
                .expect("rank 3"),
            Some(
                array_from_tensor::<F, 1>(&self.bias1.val(), "0.bias")?
                    .into_dimensionality::<Ix1>()
                    .expect("rank 1"),
            ),
        )?;
        let out = Linear::from_parts(
            array_from_tensor::<F, 2>(&self.weight.val(), "2.weight")?
                .into_dimensionality::<Ix2>()
                .expect("rank 2"),
            Some(
                array_from_tensor::<F, 1>(&self.bias2.val(), "2.bias")?
                    .into_dimensionality::<Ix1>()
                    .expect("rank 1"),
            ),
        )?;
        Ok(Sequential::new().add(phm).add(Relu::new()).add(out))
    }

    fn from_native<F: Float>(native: &Sequential<F>, device: &Device) -> Result<Self> {
        let phm: &PhmLinear<F> = layer(native, 0)?;
        let out: &Linear<F> = layer(native, 2)?;
        let bias = |b: Option<phm_nn::ndarray::Array1<F>>, what: &'static str| {
            b.ok_or(PhmError::InvalidArgument {
                what,
                reason: "the layer has no bias".into(),
            })
        };
        Ok(Self {
            rules: Param::from_tensor(tensor_from_array(phm.rules().into_dyn().view(), device)),
            blocks: Param::from_tensor(tensor_from_array(phm.blocks().into_dyn().view(), device)),
            bias1: Param::from_tensor(tensor_from_array(
                bias(phm.bias(), "0.bias")?.into_dyn().view(),
                device,
            )),
            weight: Param::from_tensor(tensor_from_array(out.weight().into_dyn().view(), device)),
            bias2: Param::from_tensor(tensor_from_array(
                bias(out.bias(), "2.bias")?.into_dyn().view(),
                device,
            )),
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
