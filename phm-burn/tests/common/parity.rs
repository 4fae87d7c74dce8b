//! Helpers of the parity tests (burn against phm-nn in f64): deterministic data, the
//! relative comparison, and gradients that must exist.

use phm_burn::bridge::array_from_tensor;
use phm_burn::burn::module::Param;
use phm_burn::burn::tensor::{DType, Gradients, Tensor};
use phm_nn::ndarray::{ArrayD, IxDyn};

/// The tolerance, relative to the reference's largest entry.
pub const TOL: f64 = 1e-10;

/// Values in `[-1, 1]` from a seeded xorshift, independent of the code under test.
pub fn data(seed: u64, shape: &[usize]) -> ArrayD<f64> {
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    ArrayD::from_shape_simple_fn(IxDyn(shape), || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        (state % 2001) as f64 / 1000.0 - 1.0
    })
}

/// Asserts that `t` is an f64 tensor equal to `want` to `TOL` relative to `want`'s largest
/// entry.
#[track_caller]
pub fn assert_match<const D: usize>(what: &str, t: &Tensor<D>, want: &ArrayD<f64>) {
    assert_eq!(t.dtype(), DType::F64, "{what}: not f64");
    let got = array_from_tensor::<f64, D>(t, what).unwrap();
    assert_eq!(got.shape(), want.shape(), "{what}: shape");
    let scale = want.iter().fold(0f64, |m, v| m.max(v.abs()));
    assert!(scale > 0.0, "{what}: the reference is all zeros");
    let err = (&got - want).iter().fold(0f64, |m, v| m.max(v.abs()));
    assert!(
        err <= TOL * scale,
        "{what}: max error {err:e} vs largest entry {scale:e}"
    );
}

/// The gradient of a parameter, which must exist.
#[track_caller]
pub fn grad<const D: usize>(p: &Param<Tensor<D>>, grads: &Gradients, what: &str) -> Tensor<D> {
    p.grad(grads)
        .unwrap_or_else(|| panic!("{what}: no gradient"))
}
