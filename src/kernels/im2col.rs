//! Lowering convolutions onto matrix products: `im2col` and its adjoint `col2im`.
//!
//! A 2-D convolution of `X` `(B, C, H, W)` with a kernel `K` `(C_out, C, kh, kw)` (stride `s`,
//! zero padding `p`, dilation `d`, PyTorch's cross-correlation) is the matrix product
//!
//! ```text
//!     Y_rows = cols(X) · K̂ᵀ          cols(X): (B·H_out·W_out, C·kh·kw)   K̂: (C_out, C·kh·kw)
//!     cols(X)[(b, oh, ow), (c, i, j)] = X[b, c, oh·s_h + i·d_h − p_h, ow·s_w + j·d_w − p_w]
//!                                       (0 outside the input: zero padding)
//!     H_out = ⌊(H + 2p_h − d_h·(kh − 1) − 1) / s_h⌋ + 1      (likewise W_out)
//! ```
//!
//! Columns are in **channel-major** order `(c, i, j)`, the order of PyTorch's weight layout
//! `(C_out, C, kh, kw)` flattened: so `K̂` is the kernel reshaped, and for a PHM kernel
//! `K = Σ A_i ⊗ F_i` the `n` column segments of width `C/n·kh·kw` hold input channels
//! `c·C/n .. (c+1)·C/n` — the lowered product is a PHM product with `in = C·kh·kw` and blocks
//! `(C_out/n) × (C/n·kh·kw)`, the `F_i` reshaped. `col2im` is the adjoint (it adds each column
//! entry back where it was read from), which is the input gradient `dX = col2im(dcols)`.
//!
//! ```
//! use phm_nn::kernels::im2col::{im2col, ConvGeometry};
//! use ndarray::{Array2, Array4};
//! // One 1×3×3 image holding 0..9, a 2×2 kernel window, stride 1, no padding.
//! let g = ConvGeometry::new(1, (2, 2), (1, 1), (0, 0), (1, 1))?;
//! assert_eq!(g.output_size(3, 3)?, (2, 2));
//! let x = Array4::from_shape_fn((1, 1, 3, 3), |(_, _, i, j)| (3 * i + j) as f64);
//! let mut cols = Array2::zeros((4, g.cols()));
//! im2col(x.view(), &g, (2, 2), cols.view_mut());
//! assert_eq!(cols.row(0).to_vec(), [0.0, 1.0, 3.0, 4.0]); // window at (0, 0)
//! assert_eq!(cols.row(3).to_vec(), [4.0, 5.0, 7.0, 8.0]); // window at (1, 1)
//! # Ok::<(), phm_nn::PhmError>(())
//! ```

use ndarray::{ArrayView2, ArrayView4, ArrayViewMut2, ArrayViewMut4};

use crate::error::{PhmError, Result};
use crate::Float;

/// The sizes of a 2-D convolution window (a 1-D one is `kh = 1`, `s_h = d_h = 1`, `p_h = 0`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConvGeometry {
    channels: usize,
    kernel: (usize, usize),
    stride: (usize, usize),
    padding: (usize, usize),
    dilation: (usize, usize),
}

impl ConvGeometry {
    /// A window over `channels` input channels: kernel `(kh, kw)`, stride, zero padding and
    /// dilation as `(height, width)` pairs.
    ///
    /// # Errors
    /// [`PhmError::ZeroSize`] for zero channels or a zero kernel size;
    /// [`PhmError::InvalidArgument`] for a zero stride or dilation;
    /// [`PhmError::TooLarge`] if `channels·kh·kw`, the dilated kernel span `d·(k − 1) + 1` or
    /// `2·p + d·(k − 1) + 1` overflows `usize` on either axis (the message names the values):
    /// every size computed from the geometry later is then computed with checked arithmetic.
    pub fn new(
        channels: usize,
        kernel: (usize, usize),
        stride: (usize, usize),
        padding: (usize, usize),
        dilation: (usize, usize),
    ) -> Result<Self> {
        if channels == 0 {
            return Err(PhmError::ZeroSize {
                what: "in_channels",
            });
        }
        if kernel.0 == 0 || kernel.1 == 0 {
            return Err(PhmError::ZeroSize {
                what: "kernel_size",
            });
        }
        for (what, (a, b)) in [("stride", stride), ("dilation", dilation)] {
            if a == 0 || b == 0 {
                return Err(PhmError::InvalidArgument {
                    what,
                    reason: format!("{what} must be positive, got ({a}, {b})"),
                });
            }
        }
        let g = ConvGeometry {
            channels,
            kernel,
            stride,
            padding,
            dilation,
        };
        channels
            .checked_mul(kernel.0)
            .and_then(|v| v.checked_mul(kernel.1))
            .ok_or_else(|| PhmError::TooLarge {
                what: "kernel",
                reason: format!("{channels}·{}·{} overflows", kernel.0, kernel.1),
            })?;
        for (axis, k, d, p) in [
            ("height", kernel.0, dilation.0, padding.0),
            ("width", kernel.1, dilation.1, padding.1),
        ] {
            let span = (k - 1)
                .checked_mul(d)
                .and_then(|v| v.checked_add(1))
                .ok_or_else(|| PhmError::TooLarge {
                    what: "dilation",
                    reason: format!(
                        "the dilated kernel along {axis}, dilation {d} · (kernel {k} − 1) + 1, \
                         overflows usize"
                    ),
                })?;
            p.checked_mul(2)
                .and_then(|v| v.checked_add(span))
                .ok_or_else(|| PhmError::TooLarge {
                    what: "padding",
                    reason: format!(
                        "padding {p} per side along {axis}: 2 · {p} + the dilated kernel span \
                         {span} overflows usize"
                    ),
                })?;
        }
        Ok(g)
    }

    /// Input channels `C`.
    pub fn channels(&self) -> usize {
        self.channels
    }

    /// Kernel size `(kh, kw)`.
    pub fn kernel(&self) -> (usize, usize) {
        self.kernel
    }

    /// Stride `(s_h, s_w)`.
    pub fn stride(&self) -> (usize, usize) {
        self.stride
    }

    /// Zero padding `(p_h, p_w)` on each side.
    pub fn padding(&self) -> (usize, usize) {
        self.padding
    }

    /// Dilation `(d_h, d_w)`.
    pub fn dilation(&self) -> (usize, usize) {
        self.dilation
    }

    /// Columns of the lowered matrix, `C·kh·kw`.
    pub fn cols(&self) -> usize {
        self.channels * self.kernel.0 * self.kernel.1
    }

    /// PyTorch's output size `⌊(H + 2p − d·(k − 1) − 1)/s⌋ + 1` on both axes.
    ///
    /// # Errors
    /// - [`PhmError::InvalidArgument`] if the dilated kernel `d·(k − 1) + 1` is larger than the
    ///   padded input `H + 2p` on either axis (the message names both);
    /// - [`PhmError::TooLarge`] if the padded input `H + 2p` overflows `usize`.
    pub fn output_size(&self, h: usize, w: usize) -> Result<(usize, usize)> {
        let axis = |name: &str, size: usize, k: usize, s: usize, p: usize, d: usize| {
            // Fits: checked by `new`.
            let span = d * (k - 1) + 1;
            let padded = p
                .checked_mul(2)
                .and_then(|v| v.checked_add(size))
                .ok_or_else(|| PhmError::TooLarge {
                    what: "padded input",
                    reason: format!("size {size} + 2 · padding {p} along {name} overflows usize"),
                })?;
            if span > padded {
                Err(PhmError::InvalidArgument {
                    what: "kernel_size",
                    reason: format!(
                        "the dilated kernel spans {span} along {name} (kernel {k}, dilation {d}) \
                         but the padded input has only {padded} (size {size}, padding {p} per side)"
                    ),
                })
            } else {
                Ok((padded - span) / s + 1)
            }
        };
        let (kh, kw) = self.kernel;
        Ok((
            axis(
                "height",
                h,
                kh,
                self.stride.0,
                self.padding.0,
                self.dilation.0,
            )?,
            axis(
                "width",
                w,
                kw,
                self.stride.1,
                self.padding.1,
                self.dilation.1,
            )?,
        ))
    }
}

/// Input position of output `o`, kernel tap `k` along one axis, or `None` in the padding.
#[inline]
fn source(o: usize, k: usize, s: usize, d: usize, p: usize, size: usize) -> Option<usize> {
    (o * s + k * d).checked_sub(p).filter(|&i| i < size)
}

/// Writes `cols(X)` `(B·H_out·W_out, C·kh·kw)` for `x` `(B, C, H, W)` (see the
/// [module docs](self)); `out` is [`ConvGeometry::output_size`] of `(H, W)`.
///
/// # Panics
/// If `x` does not have `g.channels()` channels, or `cols` is not
/// `(B·H_out·W_out, C·kh·kw)` in standard layout.
#[track_caller]
pub fn im2col<F: Float>(
    x: ArrayView4<'_, F>,
    g: &ConvGeometry,
    out: (usize, usize),
    mut cols: ArrayViewMut2<'_, F>,
) {
    let (b, c, h, w) = x.dim();
    let (ho, wo) = out;
    assert_eq!(
        c, g.channels,
        "im2col: input has {c} channels, expected {}",
        g.channels
    );
    let k = g.cols();
    assert_eq!(
        cols.dim(),
        (b * ho * wo, k),
        "im2col: cols has the wrong shape"
    );
    let x = x.as_standard_layout();
    let xs = x.as_slice().expect("standard layout");
    let cs = cols
        .as_slice_mut()
        .expect("im2col: cols must be in standard layout");
    let (kh, kw) = g.kernel;
    let ((sh, sw), (ph, pw), (dh, dw)) = (g.stride, g.padding, g.dilation);
    for bi in 0..b {
        for oh in 0..ho {
            for ow in 0..wo {
                let row = &mut cs[((bi * ho + oh) * wo + ow) * k..][..k];
                let mut idx = 0;
                for ci in 0..c {
                    let plane = &xs[(bi * c + ci) * h * w..][..h * w];
                    for ki in 0..kh {
                        let Some(ih) = source(oh, ki, sh, dh, ph, h) else {
                            row[idx..idx + kw].fill(F::zero());
                            idx += kw;
                            continue;
                        };
                        let line = &plane[ih * w..][..w];
                        // Undilated taps all inside the row: one contiguous copy.
                        match (ow * sw).checked_sub(pw).filter(|&s| s + kw <= w) {
                            Some(start) if dw == 1 => {
                                row[idx..idx + kw].copy_from_slice(&line[start..start + kw]);
                                idx += kw;
                            }
                            _ => {
                                for kj in 0..kw {
                                    row[idx] = source(ow, kj, sw, dw, pw, w)
                                        .map_or(F::zero(), |iw| line[iw]);
                                    idx += 1;
                                }
                            }
                        }
                    }
                }
            }
        }
    }
}

/// The adjoint of [`im2col`]: adds every entry of `cols` into the input position it was read
/// from (entries read from the padding are dropped). With `cols = dL/dcols` this adds
/// `dL/dX` into `dx` `(B, C, H, W)`.
///
/// # Panics
/// If the shapes do not fit as in [`im2col`], or `dx` is not in standard layout.
#[track_caller]
pub fn col2im<F: Float>(
    cols: ArrayView2<'_, F>,
    g: &ConvGeometry,
    out: (usize, usize),
    mut dx: ArrayViewMut4<'_, F>,
) {
    let (b, c, h, w) = dx.dim();
    let (ho, wo) = out;
    assert_eq!(
        c, g.channels,
        "col2im: dx has {c} channels, expected {}",
        g.channels
    );
    let k = g.cols();
    assert_eq!(
        cols.dim(),
        (b * ho * wo, k),
        "col2im: cols has the wrong shape"
    );
    let cols = cols.as_standard_layout();
    let cs = cols.as_slice().expect("standard layout");
    let xs = dx
        .as_slice_mut()
        .expect("col2im: dx must be in standard layout");
    let (kh, kw) = g.kernel;
    let ((sh, sw), (ph, pw), (dh, dw)) = (g.stride, g.padding, g.dilation);
    for bi in 0..b {
        for oh in 0..ho {
            for ow in 0..wo {
                let row = &cs[((bi * ho + oh) * wo + ow) * k..][..k];
                let mut idx = 0;
                for ci in 0..c {
                    let plane = &mut xs[(bi * c + ci) * h * w..][..h * w];
                    for ki in 0..kh {
                        let Some(ih) = source(oh, ki, sh, dh, ph, h) else {
                            idx += kw;
                            continue;
                        };
                        let line = &mut plane[ih * w..][..w];
                        for kj in 0..kw {
                            if let Some(iw) = source(ow, kj, sw, dw, pw, w) {
                                line[iw] += row[idx];
                            }
                            idx += 1;
                        }
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::{Array2, Array4};

    /// `⟨im2col(x), c⟩ = ⟨x, col2im(c)⟩`: col2im is the adjoint, with stride, padding and
    /// dilation.
    #[test]
    fn col2im_is_the_adjoint_of_im2col() {
        let g = ConvGeometry::new(2, (2, 3), (2, 1), (1, 2), (1, 2)).unwrap();
        let (h, w) = (5, 4);
        let out = g.output_size(h, w).unwrap();
        let x = Array4::from_shape_fn((2, 2, h, w), |(a, b, c, d)| {
            ((a * 7 + b * 5 + c * 3 + d) % 11) as f64 - 5.0
        });
        let rows = 2 * out.0 * out.1;
        let c = Array2::from_shape_fn((rows, g.cols()), |(i, j)| {
            ((i * 3 + j * 7) % 13) as f64 - 6.0
        });
        let mut cols = Array2::zeros((rows, g.cols()));
        im2col(x.view(), &g, out, cols.view_mut());
        let mut dx = Array4::zeros(x.raw_dim());
        col2im(c.view(), &g, out, dx.view_mut());
        assert_eq!((&cols * &c).sum(), (&x * &dx).sum());
    }
}
