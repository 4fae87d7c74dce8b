//! How a convolution input becomes a matrix and back, for every spatial rank (1 or 2): the
//! [`Lowering`] of a layer (its window and rank) and the [`Frame`] of one call. Both cores
//! ([dense](super::dense_core), [PHM](super::phm_core)) run on it.

use ndarray::{Array2, Array4, ArrayD, ArrayView2, ArrayViewD, Axis, IxDyn};

use crate::error::Result;
use crate::kernels::im2col::{col2im, im2col, ConvGeometry};
use crate::Float;

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

    /// `cols(X)` `(B·H_out·W_out, C_in·kh·kw)` and the frame.
    ///
    /// # Panics
    /// If `x` does not fit (wrong rank or channels, kernel larger than the padded input).
    #[track_caller]
    pub(crate) fn lower<F: Float>(
        &self,
        context: &str,
        x: ArrayViewD<'_, F>,
    ) -> (Array2<F>, Frame) {
        let f = self
            .frame(x.shape())
            .unwrap_or_else(|e| panic!("{context}: {e}"));
        let x = x.as_standard_layout();
        let x4 = x
            .view()
            .into_shape_with_order((f.batch, self.geometry.channels(), f.h, f.w))
            .expect("standard layout reshapes");
        let mut cols = Array2::zeros((f.batch * f.ho * f.wo, self.geometry.cols()));
        im2col(x4, &self.geometry, (f.ho, f.wo), cols.view_mut());
        (cols, f)
    }

    /// Rows `(B·H_out·W_out, C_out)` to the channels-first output.
    pub(crate) fn raise_output<F: Float>(&self, y: ArrayView2<'_, F>, f: &Frame) -> ArrayD<F> {
        let c = y.ncols();
        let y = y
            .into_shape_with_order((f.batch, f.ho * f.wo, c))
            .expect("rows are batch × positions");
        let y = y.permuted_axes([0, 2, 1]).as_standard_layout().into_owned();
        y.into_shape_with_order(IxDyn(&self.output_dims(f, c)))
            .expect("standard layout reshapes")
    }

    /// The channels-first output gradient as rows `(B·H_out·W_out, C_out)`.
    ///
    /// # Panics
    /// If `g` is not the shape of the forward's output.
    #[track_caller]
    pub(crate) fn grad_rows<F: Float>(
        &self,
        context: &str,
        g: ArrayViewD<'_, F>,
        f: &Frame,
        out_channels: usize,
    ) -> Array2<F> {
        let expected = self.output_dims(f, out_channels);
        if g.shape() != expected.as_slice() {
            panic!(
                "{context}: grad_output has shape {:?}, expected {expected:?}",
                g.shape()
            );
        }
        let g = g.as_standard_layout();
        let g3 = g
            .view()
            .into_shape_with_order((f.batch, out_channels, f.ho * f.wo))
            .expect("standard layout reshapes");
        let rows = g3
            .permuted_axes([0, 2, 1])
            .as_standard_layout()
            .into_owned();
        rows.into_shape_with_order((f.batch * f.ho * f.wo, out_channels))
            .expect("standard layout reshapes")
    }

    /// `dX = col2im(dcols)` in the input's shape.
    pub(crate) fn raise_input_grad<F: Float>(
        &self,
        dcols: ArrayView2<'_, F>,
        f: &Frame,
    ) -> ArrayD<F> {
        let c = self.geometry.channels();
        let mut dx = Array4::zeros((f.batch, c, f.h, f.w));
        col2im(dcols, &self.geometry, (f.ho, f.wo), dx.view_mut());
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
