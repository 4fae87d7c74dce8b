//! How a convolution runs on matrix products, for every spatial rank (1 or 2): the
//! [`Lowering`] of a layer (its window and rank) and the [`Frame`] of one call. Both cores
//! ([dense](super::dense_core), [PHM](super::phm_core)) run on it with the kernel as a
//! matrix `K̂` `(C_out, C_in·kh·kw)`.
//!
//! ```text
//!     forward   Y[b] = K̂ · cols(X[b]) + bias            (C_out, H_out·W_out), written in place
//!     backward  dK̂ += Σ_b G[b] · cols(X[b])ᵀ    db += Σ_{b, positions} G[b]
//!               dX[b] = col2im(K̂ᵀ · G[b])
//! ```
//!
//! One image at a time ([`im2col`](crate::kernels::im2col)'s transposed lowering), so the
//! channels-first tensors are never permuted, the lowered image stays in cache, and images
//! are split across the pool ([`for_each_chunk`]) with each image's product single-threaded
//! on its chunk's thread; each chunk sums its own `dK̂`, `db`, added in image order at the
//! end. A 1-D input `(B, C, L)` is the 2-D one with `H = 1`. The backward pass lowers the
//! saved input again rather than keeping every lowered image (`kh·kw` times the input).

use std::sync::Mutex;

use ndarray::{
    Array, Array1, Array2, Array3, Array4, ArrayD, ArrayView1, ArrayView2, ArrayView3, ArrayView4,
    ArrayViewD, ArrayViewMut1, ArrayViewMut2, Axis, CowArray, Dimension, Ix3, Ix4, IxDyn,
    ShapeBuilder,
};

use crate::error::Result;
use crate::kernels::buffer_pool;
use crate::kernels::gemm::gemm;
use crate::kernels::im2col::{col2im, im2col, ConvGeometry};
use crate::kernels::parallel::{for_each_chunk, for_each_chunk2};
use crate::Float;

/// Multiply-adds of a product that count as one element-wise operation when deciding whether
/// to split a convolution across threads (a SIMD GEMM does 16–32 multiply-adds per cycle,
/// an element-wise pass about one operation).
const PRODUCT_OPS_PER_UNIT: usize = 16;

/// Options `(stride, padding, dilation)` as `(height, width)` pairs.
pub(crate) type Options = ((usize, usize), (usize, usize), (usize, usize));

/// The sizes of one call: batch, input and output spatial sizes (1-D: `h = ho = 1`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Frame {
    pub batch: usize,
    pub h: usize,
    pub w: usize,
    pub ho: usize,
    pub wo: usize,
}

/// Spatial rank (1 or 2) and the window of a convolution: how an input is lowered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Lowering {
    pub geometry: ConvGeometry,
    pub rank: usize,
}

impl Lowering {
    fn expected(&self) -> &'static str {
        if self.rank == 1 {
            "[batch, channels, length]"
        } else {
            "[batch, channels, height, width]"
        }
    }

    /// The frame of an input of `shape`, or why it does not fit.
    pub(crate) fn frame(&self, shape: &[usize]) -> std::result::Result<Frame, String> {
        let c = self.geometry.channels();
        if shape.len() != self.rank + 2 || shape[1] != c {
            return Err(format!(
                "input has shape {shape:?}, expected {} with {c} channels",
                self.expected()
            ));
        }
        let (h, w) = if self.rank == 1 {
            (1, shape[2])
        } else {
            (shape[2], shape[3])
        };
        let (ho, wo) = self
            .geometry
            .output_size(h, w)
            .map_err(|e| format!("input has shape {shape:?}: {e}"))?;
        // The lowered matrix `(B·H_out·W_out, C·kh·kw)` must be countable (and addressable).
        shape[0]
            .checked_mul(ho)
            .and_then(|v| v.checked_mul(wo))
            .and_then(|rows| rows.checked_mul(self.geometry.cols()))
            .filter(|&n| n <= isize::MAX as usize / 8)
            .ok_or_else(|| {
                format!(
                    "input has shape {shape:?}: the output ({ho} × {wo} positions per sample, \
                     batch {}) lowered to {} columns is too large to allocate",
                    shape[0],
                    self.geometry.cols()
                )
            })?;
        Ok(Frame {
            batch: shape[0],
            h,
            w,
            ho,
            wo,
        })
    }

    /// The output shape for an input of `shape`, if it fits.
    pub(crate) fn output_shape(&self, shape: &[usize], out_channels: usize) -> Option<Vec<usize>> {
        self.frame(shape)
            .ok()
            .map(|f| self.output_dims(&f, out_channels))
    }

    fn output_dims(&self, f: &Frame, channels: usize) -> Vec<usize> {
        if self.rank == 1 {
            vec![f.batch, channels, f.wo]
        } else {
            vec![f.batch, channels, f.ho, f.wo]
        }
    }

    /// The frame of `x`, or a panic naming the shapes.
    #[track_caller]
    pub(crate) fn frame_of(&self, context: &str, shape: &[usize]) -> Frame {
        self.frame(shape)
            .unwrap_or_else(|e| panic!("{context}: {e}"))
    }

    /// `x` `(B, C, L)` or `(B, C, H, W)` as `(B, C, H, W)` in standard layout (a view when it
    /// already is).
    pub(crate) fn images<'a, F: Float>(
        &self,
        x: ArrayViewD<'a, F>,
        f: &Frame,
    ) -> CowArray<'a, F, Ix4> {
        let dim = (f.batch, self.geometry.channels(), f.h, f.w);
        if x.is_standard_layout() {
            CowArray::from(
                x.into_shape_with_order(dim)
                    .expect("standard layout reshapes"),
            )
        } else {
            CowArray::from(
                x.as_standard_layout()
                    .into_owned()
                    .into_shape_with_order(dim)
                    .expect("standard layout reshapes"),
            )
        }
    }

    /// The pass's size in the pool's units of element-wise operations: the multiply-adds of
    /// the products over [`PRODUCT_OPS_PER_UNIT`] (products run many times faster per
    /// operation than element-wise passes, so small convolutions stay on the calling thread).
    fn work(&self, f: &Frame, out_channels: usize) -> usize {
        f.batch
            .saturating_mul(out_channels)
            .saturating_mul(f.ho * f.wo)
            .saturating_mul(self.geometry.cols())
            / PRODUCT_OPS_PER_UNIT
    }

    /// Whether `cols(X[b])` is the image itself, `(C, H·W)`: a 1×1 window, stride 1, no
    /// padding (the lowering is skipped).
    fn is_pointwise(&self) -> bool {
        let g = &self.geometry;
        g.kernel() == (1, 1) && g.stride() == (1, 1) && g.padding() == (0, 0)
    }

    /// An array shaped `dim` from the [buffer pool](crate::kernels::buffer_pool), with
    /// unspecified contents the caller overwrites; or a panic naming the size when this
    /// machine cannot allocate it (rather than an abort).
    #[track_caller]
    fn buffer<F: Float, D: Dimension>(context: &str, what: &str, dim: D) -> Array<F, D> {
        let len = dim.size();
        if len.saturating_mul(std::mem::size_of::<F>()) > buffer_pool::limit() {
            // Not one the pool holds: check it can be allocated at all.
            let mut probe: Vec<F> = Vec::new();
            if probe.try_reserve_exact(len).is_err() {
                panic!(
                    "{context}: the {what} ({len} values, {} bytes) is too large to allocate",
                    len.saturating_mul(std::mem::size_of::<F>())
                );
            }
        }
        buffer_pool::for_overwrite(dim)
    }

    /// `Y[b] = K̂ · cols(X[b]) + bias` for every image (split across the pool by images, each
    /// image's product on its thread), written channels-first in the output's shape.
    /// `k` is `(C_out, C_in·kh·kw)`. With `keep`, also returns a copy of `x` for the backward
    /// pass, made image by image on the same threads.
    #[track_caller]
    pub(crate) fn forward<F: Float>(
        &self,
        context: &str,
        x: ArrayView4<'_, F>,
        f: &Frame,
        (k, bias): (ArrayView2<'_, F>, Option<ArrayView1<'_, F>>),
        keep: bool,
    ) -> (ArrayD<F>, Option<Array4<F>>) {
        let c_out = k.nrows();
        let positions = f.ho * f.wo;
        // Every image's output is written whole by its product (`beta = 0`).
        let mut y: Array3<F> = Self::buffer(context, "output", Ix3(f.batch, c_out, positions));
        let work = self.work(f, c_out);
        let pointwise = self.is_pointwise();
        // `im2col` writes every entry of its buffer.
        let scratch = || {
            buffer_pool::for_overwrite(if pointwise {
                (0, 0)
            } else {
                (self.geometry.cols(), positions)
            })
        };
        let image =
            |x_img: ArrayView3<'_, F>, mut y_img: ArrayViewMut2<'_, F>, cols: &mut Array2<F>| {
                let cols = if pointwise {
                    x_img
                        .into_shape_with_order((self.geometry.channels(), positions))
                        .expect("images are in standard layout")
                } else {
                    im2col(x_img, &self.geometry, (f.ho, f.wo), cols.view_mut());
                    cols.view()
                };
                gemm(F::one(), &k, &cols, F::zero(), &mut y_img);
                // The bias while the image's output is still in cache.
                if let Some(b) = &bias {
                    for (mut row, &v) in y_img.outer_iter_mut().zip(b) {
                        row += v;
                    }
                }
            };
        let mut kept = keep.then(|| Self::buffer(context, "saved input", x.raw_dim()));
        match kept.as_mut() {
            Some(kept) => {
                for_each_chunk2(
                    y.view_mut(),
                    kept.view_mut(),
                    Axis(0),
                    work,
                    |start, mut ys, mut ks| {
                        let mut cols = scratch();
                        for (i, (y_img, mut k_img)) in
                            ys.outer_iter_mut().zip(ks.outer_iter_mut()).enumerate()
                        {
                            k_img.assign(&x.index_axis(Axis(0), start + i));
                            image(k_img.view(), y_img, &mut cols);
                        }
                        buffer_pool::recycle(cols);
                    },
                );
            }
            None => for_each_chunk(y.view_mut(), Axis(0), work, |start, mut ys| {
                let mut cols = scratch();
                for (i, y_img) in ys.outer_iter_mut().enumerate() {
                    image(x.index_axis(Axis(0), start + i), y_img, &mut cols);
                }
                buffer_pool::recycle(cols);
            }),
        }
        let y = y
            .into_shape_with_order(IxDyn(&self.output_dims(f, c_out)))
            .expect("standard layout reshapes");
        (y, kept)
    }

    /// Backward of [`forward`](Self::forward) for the output gradient `g`: adds
    /// `dK̂ += Σ_b G[b] · cols(X[b])ᵀ` into `dk` and the bias gradient `Σ_{b, positions} G`
    /// into `db` (when given) and returns `dX`, `dX[b] = col2im(K̂ᵀ · G[b])`, in the input's
    /// shape. Images are split across the pool; each chunk of images sums its own partial
    /// `dK̂`, `db`, and the partials are added in image order.
    ///
    /// # Panics
    /// If `g` is not the shape of the forward's output.
    #[track_caller]
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn backward<F: Float>(
        &self,
        context: &str,
        x: ArrayView4<'_, F>,
        f: &Frame,
        k: ArrayView2<'_, F>,
        g: ArrayViewD<'_, F>,
        dk: Option<ArrayViewMut2<'_, F>>,
        db: Option<ArrayViewMut1<'_, F>>,
    ) -> ArrayD<F> {
        let c_out = k.nrows();
        let expected = self.output_dims(f, c_out);
        if g.shape() != expected.as_slice() {
            panic!(
                "{context}: grad_output has shape {:?}, expected {expected:?}",
                g.shape()
            );
        }
        let positions = f.ho * f.wo;
        let g = g.as_standard_layout();
        let g = g
            .view()
            .into_shape_with_order((f.batch, c_out, positions))
            .expect("standard layout reshapes");
        let c = self.geometry.channels();
        // Every image is written below: by a product with `beta = 0`, or zeroed just before
        // `col2im` adds into it (while it is in cache).
        let mut dx: Array4<F> = Self::buffer(context, "input gradient", Ix4(f.batch, c, f.h, f.w));
        let (want_dk, want_db) = (dk.is_some(), db.is_some());
        let work = self.work(f, c_out);
        let pointwise = self.is_pointwise();
        let partials = Mutex::new(Vec::new());
        for_each_chunk(dx.view_mut(), Axis(0), work, |start, mut chunk| {
            // Both written whole: by `im2col` and by a product with `beta = 0`.
            let scratch = |rows| {
                buffer_pool::for_overwrite(if pointwise { (0, 0) } else { (rows, positions) })
            };
            let (mut cols, mut dcols) =
                (scratch(self.geometry.cols()), scratch(self.geometry.cols()));
            // dK̂'s partial, column-major: with cols row-major the backend runs this product
            // about twice as fast into a column-major output as into a row-major one.
            let (dk_rows, dk_cols) = if want_dk { k.dim() } else { (0, 0) };
            let mut dk_part = buffer_pool::zeros((dk_rows, dk_cols).f());
            let mut db_part = Array1::zeros(if want_db { c_out } else { 0 });
            for (i, mut dx_img) in chunk.outer_iter_mut().enumerate() {
                let b = start + i;
                let g_img = g.index_axis(Axis(0), b);
                if want_db {
                    db_part += &g_img.sum_axis(Axis(1));
                }
                if want_dk {
                    let x_img = x.index_axis(Axis(0), b);
                    let cols = if pointwise {
                        x_img
                            .into_shape_with_order((c, positions))
                            .expect("images are in standard layout")
                    } else {
                        im2col(x_img, &self.geometry, (f.ho, f.wo), cols.view_mut());
                        cols.view()
                    };
                    gemm(
                        F::one(),
                        &g_img,
                        &cols.t(),
                        F::one(),
                        &mut dk_part.view_mut(),
                    );
                }
                if pointwise {
                    let mut dx_img = dx_img
                        .view_mut()
                        .into_shape_with_order((c, positions))
                        .expect("images are in standard layout");
                    gemm(F::one(), &k.t(), &g_img, F::zero(), &mut dx_img);
                } else {
                    gemm(F::one(), &k.t(), &g_img, F::zero(), &mut dcols.view_mut());
                    dx_img.fill(F::zero());
                    col2im(
                        dcols.view(),
                        &self.geometry,
                        (f.ho, f.wo),
                        dx_img.view_mut(),
                    );
                }
            }
            buffer_pool::recycle(cols);
            buffer_pool::recycle(dcols);
            partials
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push((start, dk_part, db_part));
        });
        let mut partials = partials.into_inner().unwrap_or_else(|e| e.into_inner());
        partials.sort_by_key(|p| p.0);
        if let Some(mut dk) = dk {
            partials.iter().for_each(|(_, p, _)| dk += p);
        }
        if let Some(mut db) = db {
            partials.iter().for_each(|(_, _, p)| db += p);
        }
        partials
            .into_iter()
            .for_each(|(_, dk_part, _)| buffer_pool::recycle(dk_part));
        if self.rank == 1 {
            dx.index_axis_move(Axis(2), 0).into_dyn()
        } else {
            dx.into_dyn()
        }
    }
}

/// The lowering of a rank-1 (`kernel = [k]`, options on the width) or rank-2 convolution.
pub(crate) fn lowering(
    rank: usize,
    in_channels: usize,
    kernel: &[usize],
    (stride, padding, dilation): Options,
) -> Result<Lowering> {
    let kernel = if rank == 1 {
        (1, kernel[0])
    } else {
        (kernel[0], kernel[1])
    };
    Ok(Lowering {
        geometry: ConvGeometry::new(in_channels, kernel, stride, padding, dilation)?,
        rank,
    })
}
