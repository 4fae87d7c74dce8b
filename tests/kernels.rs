//! The materialized and factored kernels agree with each other and with the naive formula
//! (forward, dX, dA, dS, db), over n, sizes, batch and f32/f64; Auto and the weight cache.
mod common;

use common::xorshift;
use ndarray::{Array1, Array2, Array3, Axis};
use phm_nn::kernels::phm;
use phm_nn::{Float, Kernel, Mode, Module, PhmLinear, PhmShape, Strategy};
use proptest::prelude::*;

/// Output and every gradient of one forward/backward with the given kernel.
struct Run<F> {
    y: Array2<F>,
    dx: Array2<F>,
    grads: Vec<ndarray::ArrayD<F>>,
}

fn run<F: Float>(
    a: &Array3<f64>,
    s: &Array3<f64>,
    bias: &Array1<f64>,
    x: &Array2<f64>,
    g: &Array2<f64>,
    strategy: Strategy,
) -> Run<F> {
    let cast = |v: &f64| F::of(*v);
    let mut layer = PhmLinear::from_parts(a.map(cast), s.map(cast), Some(bias.map(cast)))
        .unwrap()
        .with_strategy(strategy);
    let y = layer.forward(x.map(cast).view().into_dyn());
    let dx = layer.backward(g.map(cast).view().into_dyn());
    let mut grads = Vec::new();
    layer.visit_params(&mut |_, p| grads.push(p.grad().to_owned()));
    let y = y.into_dimensionality().unwrap();
    let dx = dx.into_dimensionality().unwrap();
    Run { y, dx, grads }
}

fn max_diff<F: Float, D: ndarray::Dimension>(
    a: &ndarray::Array<F, D>,
    b: &ndarray::Array<f64, D>,
) -> f64 {
    a.iter()
        .zip(b.iter())
        .map(|(x, y)| (x.as_f64() - y).abs())
        .fold(0.0, f64::max)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 40, ..ProptestConfig::default() })]

    #[test]
    fn kernels_agree_with_the_naive_formula(
        n in prop::sample::select(vec![1usize, 2, 3, 4, 8]),
        p in 1usize..5,
        q in 1usize..5,
        batch in prop::sample::select(vec![1usize, 2, 5, 17]),
        seed in any::<u64>(),
    ) {
        let (k, d) = (n * p, n * q);
        let a = xorshift(seed, (n, n, n));
        let s = xorshift(seed ^ 1, (n, p, q));
        let bias = xorshift(seed ^ 2, k);
        let x = xorshift(seed ^ 3, (batch, d));
        let g = xorshift(seed ^ 4, (batch, k));

        // Naive reference: W = Σ kron(A_i, S_i), Y = X Wᵀ + b, dX = G W, dW = Gᵀ X, and
        // dA, dS by the definition of the Kronecker product.
        let mut w = Array2::zeros((k, d));
        for i in 0..n {
            w += &phm::kron(a.index_axis(Axis(0), i), s.index_axis(Axis(0), i));
        }
        let y_ref = x.dot(&w.t()) + &bias;
        let dx_ref = g.dot(&w);
        let dw = g.t().dot(&x);
        let mut da_ref = Array3::<f64>::zeros((n, n, n));
        let mut ds_ref = Array3::<f64>::zeros((n, p, q));
        for i in 0..n {
            for r in 0..n {
                for c in 0..n {
                    let block = dw.slice(ndarray::s![r * p..(r + 1) * p, c * q..(c + 1) * q]);
                    da_ref[[i, r, c]] = (&block * &s.index_axis(Axis(0), i)).sum();
                    ds_ref.index_axis_mut(Axis(0), i).scaled_add(a[[i, r, c]], &block);
                }
            }
        }
        let db_ref = g.sum_axis(Axis(0));

        for strategy in [Strategy::Materialized, Strategy::Factored, Strategy::Auto] {
            let r64 = run::<f64>(&a, &s, &bias, &x, &g, strategy);
            prop_assert!(max_diff(&r64.y, &y_ref) < 1e-12, "{:?} y", strategy);
            prop_assert!(max_diff(&r64.dx, &dx_ref) < 1e-12, "{:?} dx", strategy);
            prop_assert!(max_diff(&r64.grads[0], &da_ref.clone().into_dyn()) < 1e-11, "{:?} dA", strategy);
            prop_assert!(max_diff(&r64.grads[1], &ds_ref.clone().into_dyn()) < 1e-11, "{:?} dS", strategy);
            prop_assert!(max_diff(&r64.grads[2], &db_ref.clone().into_dyn()) < 1e-12, "{:?} db", strategy);
            let r32 = run::<f32>(&a, &s, &bias, &x, &g, strategy);
            let tol = 1e-4 * (batch as f64).max(1.0);
            prop_assert!(max_diff(&r32.y, &y_ref) < tol, "{:?} f32 y", strategy);
            prop_assert!(max_diff(&r32.dx, &dx_ref) < tol, "{:?} f32 dx", strategy);
            prop_assert!(max_diff(&r32.grads[0], &da_ref.clone().into_dyn()) < tol, "{:?} f32 dA", strategy);
            prop_assert!(max_diff(&r32.grads[1], &ds_ref.clone().into_dyn()) < tol, "{:?} f32 dS", strategy);
        }
    }
}

#[test]
fn forced_strategies_are_obeyed_and_auto_picks_by_cost() {
    let big = PhmShape::new(4096, 4096, 4).unwrap();
    for mode in [Mode::Training, Mode::Inference] {
        for current in [false, true] {
            assert_eq!(
                Strategy::Factored.resolve(big, 256, current, mode),
                Kernel::Factored
            );
            // Inference (`&self`) without a cached W builds one for the call.
            assert_eq!(
                Strategy::Materialized.resolve(big, 1, current, mode),
                Kernel::Materialized
            );
        }
    }
    // Cases where the bench report (BENCHMARKS.md) shows a clear winner (≥ 1.3×):
    // batch 1 is memory-bound, reading k·d/n weights beats reading k·d, cached or not;
    assert_eq!(
        Strategy::Auto.resolve(big, 1, true, Mode::Inference),
        Kernel::Factored
    );
    assert_eq!(
        Strategy::Auto.resolve(big, 1, false, Mode::Training),
        Kernel::Factored
    );
    // at batch 32 the factored GEMM has B·n rows and runs closer to peak than the cached W's;
    assert_eq!(
        Strategy::Auto.resolve(big, 32, true, Mode::Inference),
        Kernel::Factored
    );
    let tall = PhmShape::new(4096, 1024, 4).unwrap();
    assert_eq!(
        Strategy::Auto.resolve(tall, 32, false, Mode::Training),
        Kernel::Factored
    );
    // a small layer at batch 256 with a current W: one plain GEMM, nothing to mix;
    let small = PhmShape::new(256, 256, 4).unwrap();
    assert_eq!(
        Strategy::Auto.resolve(small, 256, true, Mode::Inference),
        Kernel::Materialized
    );
    // n = 16 on a small layer: mixing (2·B·n²·k) costs more than rebuilding W.
    let wide = PhmShape::new(256, 256, 16).unwrap();
    assert_eq!(
        Strategy::Auto.resolve(wide, 32, false, Mode::Training),
        Kernel::Materialized
    );
}

#[test]
fn layer_reports_the_kernel_and_cache_state() {
    let n = 2;
    let mut layer = PhmLinear::from_parts(xorshift(1, (n, n, n)), xorshift(2, (n, 3, 3)), None)
        .unwrap()
        .with_strategy(Strategy::Materialized);
    assert!(!layer.weight_is_current());
    let x = xorshift(3, (4, 6));
    let y = layer.forward(x.view().into_dyn());
    assert!(layer.weight_is_current());
    assert_eq!(layer.kernel_for(4, Mode::Inference), Kernel::Materialized);
    // The cached W is served by infer, and agrees with the factored kernel.
    layer.set_strategy(Strategy::Factored);
    let yf = layer.infer(x.view().into_dyn());
    assert!(max_diff(&yf, &y) < 1e-12);
    layer.clear_cache();
    assert!(!layer.weight_is_current());
    // Forced materialized inference without a cache builds W for the call, and caches nothing.
    layer.set_strategy(Strategy::Materialized);
    let ym = layer.infer(x.view().into_dyn());
    assert!(max_diff(&ym, &y) < 1e-12);
    assert!(!layer.weight_is_current());
    // cache_weight builds W for the inference paths, and Auto then uses it at large batch.
    layer.set_strategy(Strategy::Auto);
    layer.cache_weight().unwrap();
    assert!(layer.weight_is_current());
    let small =
        PhmLinear::from_parts(xorshift(1, (4, 4, 4)), xorshift(2, (4, 64, 64)), None).unwrap();
    let mut small = small;
    // 256 × 256 at 64 rows: building W (40 per entry) tips the balance to factored, a cached
    // W to materialized; at 256 rows a W built for the call already pays.
    assert_eq!(small.kernel_for(64, Mode::Inference), Kernel::Factored);
    assert_eq!(small.kernel_for(256, Mode::Inference), Kernel::Materialized);
    small.cache_weight().unwrap();
    assert_eq!(small.kernel_for(64, Mode::Inference), Kernel::Materialized);
}

#[test]
fn optimizer_step_invalidates_the_cached_weight() {
    use phm_nn::optim::{Optimizer, Sgd, SgdConfig};
    let n = 2;
    for strategy in [Strategy::Materialized, Strategy::Auto] {
        let mut layer = PhmLinear::from_parts(xorshift(1, (n, n, n)), xorshift(2, (n, 2, 2)), None)
            .unwrap()
            .with_strategy(strategy);
        let x = xorshift(3, (3, 4));
        let y0 = layer.forward(x.view().into_dyn());
        layer.backward(Array2::ones((3, 4)).view().into_dyn());
        let mut opt = Sgd::new(SgdConfig {
            lr: 0.1,
            ..SgdConfig::default()
        })
        .unwrap();
        opt.step(&mut layer).unwrap();
        assert!(!layer.weight_is_current(), "a step must mark W stale");
        // The next forward uses the new weights: compare with a fresh layer built from them.
        let fresh =
            PhmLinear::from_parts(layer.rules().to_owned(), layer.blocks().to_owned(), None)
                .unwrap();
        let want = fresh.infer(x.view().into_dyn());
        let y1 = layer.forward(x.view().into_dyn());
        assert!(
            max_diff(&y1, &want) < 1e-12,
            "{strategy:?}: stale weight used"
        );
        assert!(max_diff(&y1, &y0) > 1e-3, "the step changed the output");
        assert!(max_diff(&layer.infer(x.view().into_dyn()), &want) < 1e-12);
    }
}
