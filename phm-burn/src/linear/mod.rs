//! The linear family as burn modules: dense [`Linear`], [`PhmLinear`], low-rank
//! [`LphmLinear`], and [`Projection`], the choice between them that projecting layers take.
//!
//! ```text
//!     Y = X Wᵀ + 1 bᵀ on the last axis      X: (…, d)   Y: (…, k)
//!     dense:  W: (k, d)
//!     PHM:    W = Σ_i A_i ⊗ S_i             A: (n, n, n)   S: (n, k/n, d/n)
//!     LPHM:   W = Σ_i A_i ⊗ (U_i V_iᵀ)      U: (n, k/n, r)   V: (n, d/n, r)
//! ```
//!
//! Each module has phm-nn's parameter names, shapes and init (its config draws the phm-nn
//! layer from a seeded `StdRng` and converts it), and a phm-nn twin through
//! [`Bridge`](crate::Bridge). Rules can be learned, fixed (frozen parameters), or shared: see
//! [`crate::rules`] for how a model holds shared rules once and passes them to
//! `forward_with_rules`.
//!
//! ```
//! use phm_burn::burn::tensor::{Device, Tensor};
//! use phm_burn::linear::{PhmLinearConfig, ProjectionConfig};
//!
//! let device = Device::default();
//! let layer = PhmLinearConfig::new(8, 4, 2).with_seed(1).init::<f32>(&device)?;
//! let y = layer.forward(Tensor::<3>::ones([2, 5, 8], &device)); // (B, T, d)
//! assert_eq!(y.dims(), [2, 5, 4]);
//! let q = ProjectionConfig::phm(4).init::<f32>(8, 8, 0, &device)?;
//! assert_eq!(q.forward(Tensor::<2>::ones([3, 8], &device)).dims(), [3, 8]);
//! # Ok::<(), phm_burn::phm_nn::PhmError>(())
//! ```

pub mod dense;
pub mod lphm;
pub mod phm;
pub mod projection;

pub use dense::{Linear, LinearConfig};
pub use lphm::{LphmLinear, LphmLinearConfig};
pub use phm::{PhmLinear, PhmLinearConfig};
pub use projection::{Projection, ProjectionConfig};

use burn::module::Param;
use burn::tensor::Tensor;
use phm_nn::ndarray::{Array, Dimension};
use phm_nn::{Float, Result};

use crate::bridge::array_from_tensor;

/// The values of `p` as an array of `F` with `Dim` axes; `name` names it in errors.
pub(crate) fn array_of<F: Float, Dim: Dimension, const D: usize>(
    p: &Param<Tensor<D>>,
    name: &str,
) -> Result<Array<F, Dim>> {
    Ok(array_from_tensor::<F, D>(&p.val(), name)?
        .into_dimensionality::<Dim>()
        .expect("a rank-D tensor has D axes"))
}

/// Adds `bias` `(k)` to `y` `(…, k)` on the last axis.
pub(crate) fn add_bias<const D: usize>(y: Tensor<D>, bias: Option<&Param<Tensor<1>>>) -> Tensor<D> {
    match bias {
        Some(b) => y + b.val().unsqueeze::<D>(),
        None => y,
    }
}

/// Panics with a message naming the layer if the input's dtype is not its parameters'.
#[track_caller]
pub(crate) fn check_dtype<const D: usize, const E: usize>(
    layer: &str,
    x: &Tensor<D>,
    param: &Tensor<E>,
) {
    assert_eq!(
        x.dtype(),
        param.dtype(),
        "{layer}: input of dtype {:?}, but the parameters are {:?}",
        x.dtype(),
        param.dtype()
    );
}

/// The rules a PHM-family layer uses for one call: its own, or the caller's shared ones.
///
/// # Panics
/// If the layer holds rules and `shared` is given too, or holds none and `shared` is `None`,
/// or the rules are not `(n, n, n)`.
#[track_caller]
pub(crate) fn pick_rules(
    layer: &str,
    own: Option<Tensor<3>>,
    shared: Option<&Tensor<3>>,
    n: usize,
) -> Tensor<3> {
    let a = match (own, shared) {
        (Some(a), None) => a,
        (None, Some(a)) => a.clone(),
        (Some(_), Some(_)) => panic!(
            "{layer}: the layer holds its own rules; pass `None` (shared rules are for layers built with `init_shared`)"
        ),
        (None, None) => panic!(
            "{layer}: the layer was built with shared rules; pass the model's rules to `forward_with_rules`"
        ),
    };
    assert_eq!(
        a.dims(),
        [n, n, n],
        "{layer}: rules of shape {:?}, expected {:?}",
        a.dims(),
        [n, n, n]
    );
    a
}
