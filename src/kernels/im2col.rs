//! Lowering convolutions onto matrix products: `im2col` and its adjoint `col2im`, one image
//! at a time.
//!
//! A 2-D convolution of `X` `(B, C, H, W)` with a kernel `K` `(C_out, C, kh, kw)` (stride `s`,
//! zero padding `p`, dilation `d`, PyTorch's cross-correlation) is, image by image, the matrix
//! product
//!
//! ```text
//!     Y[b] = K̂ · cols(X[b])          K̂: (C_out, C·kh·kw)   cols(X[b]): (C·kh·kw, H_out·W_out)
//!     cols(X[b])[(c, i, j), (oh, ow)] = X[b, c, oh·s_h + i·d_h − p_h, ow·s_w + j·d_w − p_w]
//!                                       (0 outside the input: zero padding)
//!     H_out = ⌊(H + 2p_h − d_h·(kh − 1) − 1) / s_h⌋ + 1      (likewise W_out)
//! ```
//!
//! `Y[b]` `(C_out, H_out·W_out)` is the image's channels-first output as it is stored: the
//! product writes it in place, with no permutation of channels. Rows of `cols` are in
//! **channel-major** order `(c, i, j)`, the order of PyTorch's weight layout
//! `(C_out, C, kh, kw)` flattened: so `K̂` is the kernel reshaped, and for a PHM kernel
//! `K = Σ A_i ⊗ F_i` the `n` row segments of height `C/n·kh·kw` hold input channels
//! `c·C/n .. (c+1)·C/n`: `K̂` is the PHM weight with `in = C·kh·kw` and blocks
//! `(C_out/n) × (C/n·kh·kw)`, the `F_i` reshaped. Backward, per image:
//! `dK̂ += dY[b] · cols(X[b])ᵀ` and `dX[b] = col2im(K̂ᵀ · dY[b])`, where `col2im` is the
//! adjoint of `im2col` (it adds each entry back where it was read from).
//!
//! ```
//! use phm_nn::kernels::im2col::{im2col, ConvGeometry};
//! use ndarray::{Array2, Array3};
//! // One 1×3×3 image holding 0..9, a 2×2 kernel window, stride 1, no padding.
//! let g = ConvGeometry::new(1, (2, 2), (1, 1), (0, 0), (1, 1))?;
//! assert_eq!(g.output_size(3, 3)?, (2, 2));
//! let x = Array3::from_shape_fn((1, 3, 3), |(_, i, j)| (3 * i + j) as f64);
//! let mut cols = Array2::zeros((g.cols(), 4));
//! im2col(x.view(), &g, (2, 2), cols.view_mut());
//! assert_eq!(cols.column(0).to_vec(), [0.0, 1.0, 3.0, 4.0]); // window at (0, 0)
//! assert_eq!(cols.column(3).to_vec(), [4.0, 5.0, 7.0, 8.0]); // window at (1, 1)
//! assert_eq!(cols.row(0).to_vec(), [0.0, 1.0, 3.0, 4.0]); // tap (0, 0) at every position
//! # Ok::<(), phm_nn::PhmError>(())
//! ```

use ndarray::{ArrayView2, ArrayView3, ArrayViewMut2, ArrayViewMut3};

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

/// The outputs `lo..hi` along one axis whose tap `k` reads inside the input (`0 ≤ o·s + k·d − p
/// < size`), clamped to `0..out`; every other output reads the padding.
#[inline]
fn inside(k: usize, s: usize, d: usize, p: usize, size: usize, out: usize) -> (usize, usize) {
    let offset = k * d;
    let lo = if offset >= p {
        0
    } else {
        (p - offset).div_ceil(s)
    };
    let hi = if size + p > offset {
        ((size + p - 1 - offset) / s + 1).min(out)
    } else {
        0
    };
    (lo.min(hi), hi)
}

/// Writes the transposed lowering `colsᵀ(X)` `(C·kh·kw, H_out·W_out)` of one image `x`
/// `(C, H, W)` (see the [module docs](self)); `out` is [`ConvGeometry::output_size`] of
/// `(H, W)`. Row `(c, i, j)` holds input channel `c` shifted by the tap `(i, j)`: copies of
/// whole input rows where the stride is 1.
///
/// # Panics
/// If `x` does not have `g.channels()` channels, or `cols` is not `(C·kh·kw, H_out·W_out)` in
/// standard layout.
#[track_caller]
pub fn im2col<F: Float>(
    x: ArrayView3<'_, F>,
    g: &ConvGeometry,
    out: (usize, usize),
    mut cols: ArrayViewMut2<'_, F>,
) {
    let (c, h, w) = x.dim();
    let (ho, wo) = out;
    assert_eq!(
        c, g.channels,
        "im2col: input has {c} channels, expected {}",
        g.channels
    );
    assert_eq!(
        cols.dim(),
        (g.cols(), ho * wo),
        "im2col: cols has the wrong shape"
    );
    let x = x.as_standard_layout();
    let xs = x.as_slice().expect("standard layout");
    let cs = cols
        .as_slice_mut()
        .expect("im2col: cols must be in standard layout");
    let (kh, kw) = g.kernel;
    let ((sh, sw), (ph, pw), (dh, dw)) = (g.stride, g.padding, g.dilation);
    if h * w == 0 {
        // Every tap reads the padding.
        cs.fill(F::zero());
        return;
    }
    let mut rows = cs.chunks_exact_mut(ho * wo);
    // Stride 1 and as many output columns as input columns ("same" padding): every tap is a
    // shifted copy of the whole plane.
    let contiguous = (sh, sw) == (1, 1) && wo == w;
    for plane in xs.chunks_exact(h * w).take(c) {
        for ki in 0..kh {
            let (oh_lo, oh_hi) = inside(ki, sh, dh, ph, h, ho);
            for kj in 0..kw {
                let row = rows.next().expect("C·kh·kw rows");
                let (ow_lo, ow_hi) = inside(kj, sw, dw, pw, w, wo);
                if contiguous {
                    // Output (oh, ow) reads input (oh + ki·d_h − p_h, ow + kj·d_w − p_w): a
                    // constant shift of the flat index, so one copy of the valid rows, then
                    // the columns that wrapped around a row edge are zeroed.
                    let shift = (ki * dh * w + kj * dw) as isize - (ph * w + pw) as isize;
                    row[..oh_lo * wo].fill(F::zero());
                    row[oh_hi * wo..].fill(F::zero());
                    let lo = ((oh_lo * wo) as isize).max(-shift) as usize;
                    let hi = ((oh_hi * wo) as isize).min((h * w) as isize - shift);
                    if (lo as isize) < hi {
                        let (hi, from) = (hi as usize, (lo as isize + shift) as usize);
                        row[lo..hi].copy_from_slice(&plane[from..from + hi - lo]);
                    }
                    // Usually one or two entries per row (the padding): plain stores.
                    let right = ow_hi.max(ow_lo);
                    if ow_lo > 0 || right < wo {
                        for line in row[oh_lo * wo..oh_hi * wo].chunks_exact_mut(wo) {
                            for v in &mut line[..ow_lo] {
                                *v = F::zero();
                            }
                            for v in &mut line[right..] {
                                *v = F::zero();
                            }
                        }
                    }
                    continue;
                }
                for (oh, dst) in row.chunks_exact_mut(wo).enumerate() {
                    if oh < oh_lo || oh >= oh_hi || ow_lo >= ow_hi {
                        dst.fill(F::zero());
                        continue;
                    }
                    let line = &plane[(oh * sh + ki * dh - ph) * w..][..w];
                    dst[..ow_lo].fill(F::zero());
                    dst[ow_hi..].fill(F::zero());
                    let first = ow_lo * sw + kj * dw - pw;
                    if sw == 1 {
                        dst[ow_lo..ow_hi].copy_from_slice(&line[first..first + ow_hi - ow_lo]);
                    } else {
                        for (d, &v) in dst[ow_lo..ow_hi]
                            .iter_mut()
                            .zip(line[first..].iter().step_by(sw))
                        {
                            *d = v;
                        }
                    }
                }
            }
        }
    }
}

/// The adjoint of [`im2col`] for one image: adds every entry of `cols`
/// `(C·kh·kw, H_out·W_out)` into the input position it was read from (entries read from the
/// padding are dropped). With `cols = dL/dcolsᵀ` this adds `dL/dX` into `dx` `(C, H, W)`.
///
/// # Panics
/// If the shapes do not fit as in [`im2col`], or `dx` is not in standard layout.
#[track_caller]
pub fn col2im<F: Float>(
    cols: ArrayView2<'_, F>,
    g: &ConvGeometry,
    out: (usize, usize),
    mut dx: ArrayViewMut3<'_, F>,
) {
    let (c, h, w) = dx.dim();
    let (ho, wo) = out;
    assert_eq!(
        c, g.channels,
        "col2im: dx has {c} channels, expected {}",
        g.channels
    );
    assert_eq!(
        cols.dim(),
        (g.cols(), ho * wo),
        "col2im: cols has the wrong shape"
    );
    let cols = cols.as_standard_layout();
    let cs = cols.as_slice().expect("standard layout");
    let xs = dx
        .as_slice_mut()
        .expect("col2im: dx must be in standard layout");
    let (kh, kw) = g.kernel;
    let ((sh, sw), (ph, pw), (dh, dw)) = (g.stride, g.padding, g.dilation);
    if h * w == 0 {
        return;
    }
    let mut rows = cs.chunks_exact(ho * wo);
    for plane in xs.chunks_exact_mut(h * w).take(c) {
        for ki in 0..kh {
            let (oh_lo, oh_hi) = inside(ki, sh, dh, ph, h, ho);
            for kj in 0..kw {
                let row = rows.next().expect("C·kh·kw rows");
                let (ow_lo, ow_hi) = inside(kj, sw, dw, pw, w, wo);
                if ow_lo >= ow_hi {
                    continue;
                }
                for oh in oh_lo..oh_hi {
                    let src = &row[oh * wo + ow_lo..oh * wo + ow_hi];
                    let line = &mut plane[(oh * sh + ki * dh - ph) * w..][..w];
                    let first = ow_lo * sw + kj * dw - pw;
                    if sw == 1 {
                        let line = &mut line[first..first + src.len()];
                        for (d, &v) in line.iter_mut().zip(src) {
                            *d += v;
                        }
                    } else {
                        for (d, &v) in line[first..].iter_mut().step_by(sw).zip(src) {
                            *d += v;
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
    use ndarray::{Array2, Array3};

    /// Geometries `(C, (kh, kw), stride, padding, dilation, (H, W))` with stride 2,
    /// dilation, padding wider than the kernel, 1×1, windows as wide as the padded input,
    /// rectangular everything; stride 1 with as many output as input columns (the shifted
    /// whole-plane copy) with and without dilation and padding.
    fn geometries() -> Vec<(ConvGeometry, (usize, usize))> {
        [
            (3, (3, 3), (1, 1), (1, 1), (1, 1), (7, 5)),
            (2, (2, 3), (2, 1), (1, 2), (1, 2), (5, 4)),
            (5, (1, 1), (1, 1), (0, 0), (1, 1), (4, 6)),
            (1, (1, 1), (2, 3), (1, 0), (1, 1), (5, 7)),
            (3, (3, 2), (2, 2), (0, 1), (2, 1), (9, 6)),
            (2, (4, 4), (3, 1), (2, 3), (1, 2), (3, 3)),
            (1, (3, 3), (1, 1), (1, 1), (1, 1), (1, 1)),
            (2, (5, 1), (1, 1), (0, 0), (1, 1), (5, 2)),
            (2, (3, 3), (1, 1), (2, 2), (2, 2), (6, 5)),
            (3, (3, 1), (1, 1), (0, 0), (1, 1), (6, 4)),
            (2, (2, 3), (1, 1), (3, 1), (1, 1), (2, 3)),
        ]
        .into_iter()
        .map(|(c, k, s, p, d, hw)| (ConvGeometry::new(c, k, s, p, d).unwrap(), hw))
        .collect()
    }

    fn image(c: usize, h: usize, w: usize) -> Array3<f64> {
        Array3::from_shape_fn((c, h, w), |(a, b, d)| {
            ((a * 7 + b * 5 + d * 3) % 11) as f64 - 5.0
        })
    }

    /// Every entry against the definition in the module docs, index by index.
    #[test]
    fn im2col_is_the_definition() {
        for (g, (h, w)) in geometries() {
            let (ho, wo) = g.output_size(h, w).unwrap();
            let x = image(g.channels(), h, w);
            let mut cols = Array2::from_elem((g.cols(), ho * wo), f64::NAN);
            im2col(x.view(), &g, (ho, wo), cols.view_mut());
            let (kh, kw) = g.kernel();
            let ((sh, sw), (ph, pw), (dh, dw)) = (g.stride(), g.padding(), g.dilation());
            for c in 0..g.channels() {
                for i in 0..kh {
                    for j in 0..kw {
                        for oh in 0..ho {
                            for ow in 0..wo {
                                let ih = (oh * sh + i * dh) as isize - ph as isize;
                                let iw = (ow * sw + j * dw) as isize - pw as isize;
                                let want = if (0..h as isize).contains(&ih)
                                    && (0..w as isize).contains(&iw)
                                {
                                    x[[c, ih as usize, iw as usize]]
                                } else {
                                    0.0
                                };
                                let got = cols[[(c * kh + i) * kw + j, oh * wo + ow]];
                                assert_eq!(got, want, "{g:?} ({h}, {w}) c={c} tap ({i}, {j})");
                            }
                        }
                    }
                }
            }
        }
    }

    /// `⟨im2col(x), c⟩ = ⟨x, col2im(c)⟩`: col2im is the adjoint (small integers: exact), and it
    /// adds into `dx` rather than overwriting it.
    #[test]
    fn col2im_is_the_adjoint_of_im2col() {
        for (g, (h, w)) in geometries() {
            let out = g.output_size(h, w).unwrap();
            let x = image(g.channels(), h, w);
            let c = Array2::from_shape_fn((g.cols(), out.0 * out.1), |(i, j)| {
                ((i * 3 + j * 7) % 13) as f64 - 6.0
            });
            let mut cols = Array2::zeros((g.cols(), out.0 * out.1));
            im2col(x.view(), &g, out, cols.view_mut());
            let mut dx = Array3::from_elem(x.raw_dim(), 1.0);
            col2im(c.view(), &g, out, dx.view_mut());
            dx -= 1.0;
            assert_eq!((&cols * &c).sum(), (&x * &dx).sum(), "{g:?} ({h}, {w})");
        }
    }
}
