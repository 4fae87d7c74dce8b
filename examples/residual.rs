//! Models as plain structs of modules: a residual PHM block and a two-branch model, trained
//! for a few steps, with their summaries and typed access to the layers inside.
//!
//! Run: `cargo run --release --example residual` (a few seconds).

use phm_nn::module::{find_all, for_each_mut, summary};
use phm_nn::prelude::*;
use phm_nn::rand::RngExt;

/// `y = x + W₂ · gelu(W₁ x)`, both maps PHM layers sharing one rule tensor.
#[derive(Debug, Clone)]
struct Residual {
    inner: Sequential<f32>,
}

impl Residual {
    fn new(width: usize, hidden: usize, n: usize, rng: &mut StdRng) -> Result<Self> {
        let down = PhmLinearConfig::new(width, hidden, n).init(rng)?;
        let up = PhmLinearConfig::new(hidden, width, n).init_shared(down.rules_param(), rng)?;
        Ok(Residual {
            inner: Sequential::new().add(down).add(Gelu::new()).add(up),
        })
    }
}

impl Module<f32> for Residual {
    fn forward(&mut self, x: ArrayViewD<'_, f32>) -> ArrayD<f32> {
        &x + &self.inner.forward(x.view().into_dyn())
    }

    fn backward(&mut self, g: ArrayViewD<'_, f32>) -> ArrayD<f32> {
        // d(x + f(x)) = g + J_fᵀ g
        &g + &self.inner.backward(g.view().into_dyn())
    }

    fn infer(&self, x: ArrayViewD<'_, f32>) -> ArrayD<f32> {
        &x + &self.inner.infer(x.view().into_dyn())
    }

    fn visit_children<'a>(&'a self, f: &mut dyn FnMut(&str, &'a dyn Module<f32>)) {
        f("inner", &self.inner);
    }

    fn visit_children_mut<'a>(&'a mut self, f: &mut dyn FnMut(&str, &'a mut dyn Module<f32>)) {
        f("inner", &mut self.inner);
    }

    fn output_shape(&self, input: &[usize]) -> Option<Vec<usize>> {
        Some(input.to_vec())
    }

    fn is_chain(&self) -> bool {
        true // one child, on the block's input: its shapes follow from ours
    }
}

/// `y = head(relu(phm(x)) + relu(dense(x)))`: two branches on the same input.
#[derive(Debug, Clone)]
struct TwoBranch {
    phm: PhmLinear<f32>,
    dense: Linear<f32>,
    act_phm: Relu<f32>,
    act_dense: Relu<f32>,
    head: Linear<f32>,
}

impl Module<f32> for TwoBranch {
    fn forward(&mut self, x: ArrayViewD<'_, f32>) -> ArrayD<f32> {
        let a = self
            .act_phm
            .forward(self.phm.forward(x.view().into_dyn()).view().into_dyn());
        let b = self
            .act_dense
            .forward(self.dense.forward(x.view().into_dyn()).view().into_dyn());
        self.head.forward((&a + &b).view().into_dyn())
    }

    fn backward(&mut self, g: ArrayViewD<'_, f32>) -> ArrayD<f32> {
        let g = self.head.backward(g);
        let ga = self
            .phm
            .backward(self.act_phm.backward(g.view().into_dyn()).view().into_dyn());
        let gb = self.dense.backward(
            self.act_dense
                .backward(g.view().into_dyn())
                .view()
                .into_dyn(),
        );
        ga + gb
    }

    fn infer(&self, x: ArrayViewD<'_, f32>) -> ArrayD<f32> {
        let a = self
            .act_phm
            .infer(self.phm.infer(x.view().into_dyn()).view().into_dyn());
        let b = self
            .act_dense
            .infer(self.dense.infer(x.view().into_dyn()).view().into_dyn());
        self.head.infer((&a + &b).view().into_dyn())
    }

    fn visit_children<'a>(&'a self, f: &mut dyn FnMut(&str, &'a dyn Module<f32>)) {
        f("phm", &self.phm);
        f("dense", &self.dense);
        f("act_phm", &self.act_phm);
        f("act_dense", &self.act_dense);
        f("head", &self.head);
    }

    fn visit_children_mut<'a>(&'a mut self, f: &mut dyn FnMut(&str, &'a mut dyn Module<f32>)) {
        f("phm", &mut self.phm);
        f("dense", &mut self.dense);
        f("act_phm", &mut self.act_phm);
        f("act_dense", &mut self.act_dense);
        f("head", &mut self.head);
    }

    fn output_shape(&self, input: &[usize]) -> Option<Vec<usize>> {
        self.head.output_shape(&self.phm.output_shape(input)?)
    }
}

/// Trains `model` to map `x` to `sin(x)`-like targets for a few Adam steps; returns the first
/// and last loss.
fn train(
    model: &mut dyn Module<f32>,
    rng: &mut StdRng,
    width: usize,
    out: usize,
) -> Result<(f32, f32)> {
    let x = ArrayD::from_shape_simple_fn(IxDyn(&[64, width]), || rng.random_range(-1.0f32..1.0));
    let target = ArrayD::from_shape_fn(IxDyn(&[64, out]), |i| (x[[i[0], i[1]]] * 3.0).sin());
    let mut opt = Adam::new(AdamConfig {
        lr: 1e-2,
        ..AdamConfig::default()
    })?;
    let mut losses = Vec::new();
    for _ in 0..200 {
        model.zero_grad();
        let y = model.forward(x.view().into_dyn());
        let loss = mse(y.view(), target.view());
        model.backward(loss.grad.view().into_dyn());
        opt.step(model)?;
        losses.push(loss.value);
    }
    Ok((losses[0], *losses.last().expect("200 steps")))
}

fn main() -> Result<()> {
    let mut rng = StdRng::seed_from_u64(0);
    let width = 32;

    let mut deep = Sequential::new()
        .add(Residual::new(width, 64, 4, &mut rng)?)
        .add(Residual::new(width, 64, 4, &mut rng)?)
        .add(LinearConfig::new(width, width).init(&mut rng)?);
    println!("A stack of two residual PHM blocks (rules shared inside each block):\n");
    println!("{}\n", summary(&deep, &[64, width]));
    let (first, last) = train(&mut deep, &mut rng, width, width)?;
    println!("training loss: {first:.4} -> {last:.4}\n");

    let mut branches = TwoBranch {
        phm: PhmLinearConfig::new(width, 64, 4).init(&mut rng)?,
        dense: LinearConfig::new(width, 64).init(&mut rng)?,
        act_phm: Relu::new(),
        act_dense: Relu::new(),
        head: LinearConfig::new(64, 8).init(&mut rng)?,
    };
    println!("A two-branch model (PHM and dense branches, summed):\n");
    println!("{}\n", summary(&branches, &[64, width]));
    let (first, last) = train(&mut branches, &mut rng, width, 8)?;
    println!("training loss: {first:.4} -> {last:.4}\n");

    // Typed access inside a model: cache W in every PHM layer for large-batch inference.
    for_each_mut::<f32, PhmLinear<f32>>(&mut deep, &mut |_, l| l.cache_weight().unwrap());
    let cached: Vec<String> = find_all::<f32, PhmLinear<f32>>(&deep)
        .into_iter()
        .map(|(path, l)| {
            format!(
                "{path} ({})",
                if l.weight_is_current() {
                    "W cached"
                } else {
                    "-"
                }
            )
        })
        .collect();
    println!("PHM layers in the residual stack: {}", cached.join(", "));
    Ok(())
}
