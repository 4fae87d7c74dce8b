//! Recurrent layers: [`Lstm`] and [`Gru`] over `(B, T, D)` batches (several layers,
//! bidirectional, padding masks, initial and final states) and their cells [`LstmCell`],
//! [`GruCell`], with dense, PHM (the PHM-LSTM of Zhang et al. 2021) or low-rank PHM
//! projections.
//!
//! The equations are PyTorch's (`nn.LSTM`, gates i, f, g, o; `nn.GRU`, gates r, z, n with
//! the reset gate applied after the hidden projection):
//!
//! ```text
//!     LSTM   a = W_i x_t + b_i + W_h h + b_h              (B, 4h)
//!            i, f, o = σ(a_i), σ(a_f), σ(a_o)    g = tanh(a_g)
//!            c' = f ⊙ c + i ⊙ g                  h' = o ⊙ tanh(c')
//!     GRU    r = σ(W_ir x + b_ir + W_hr h + b_hr)    z = σ(W_iz x + b_iz + W_hz h + b_hz)
//!            n = tanh(W_in x + b_in + r ⊙ (W_hn h + b_hn))     h' = (1 − z) ⊙ n + z ⊙ h
//! ```
//!
//! Each layer and direction has one input projection `ih` (`D_l → G·h`) and one hidden
//! projection `hh` (`h → G·h`), each a [`Projection`](crate::nn::Projection): dense, PHM
//! `W = Σ A_i ⊗ S_i` or low-rank PHM, with rules learned, fixed (the quaternion rules give a
//! quaternion LSTM) or shared by the whole model. A PHM projection writes its output by
//! hypercomplex component and the cell reads every gate as a PHM map with the same rules
//! (see [`gates`]). Parameters per layer and direction (`G` = 4 for the LSTM, 3 for the GRU;
//! `D_0 = D`, `D_l = h` or `2h` above the first layer):
//!
//! ```text
//!     Dense:         G·h·(D_l + h) + 2·G·h                  (= PyTorch's nn.LSTM / nn.GRU)
//!     PHM n:         2·n³ + G·h·(D_l + h)/n + 2·G·h         (n³ once per model when shared)
//!     LPHM n, r:     2·n³ + r·(2·G·h + D_l + h) + 2·G·h
//! ```
//!
//! # Shapes
//! - input `x`: `(B, T, D)`, batch first; padding mask `(B, T)` of `bool`, `true` =
//!   padding (the convention of the attention's key-padding mask; [`padding_mask`] builds it
//!   from lengths);
//! - output: `(B, T, directions·h)`, `[forward | reverse]` when bidirectional, zero at padded
//!   steps;
//! - states ([`RnnState`]): `h` (and `c` for the LSTM) `(layers·directions, B, h)`, as
//!   PyTorch's `h_n`, `c_n`.
//!
//! A padded step leaves the state unchanged, so sequences of different lengths in one batch
//! give exactly what PyTorch's packed sequences (`pack_padded_sequence`) give: outputs zero
//! past each sequence's end, final states taken at each sequence's last step, and the reverse
//! direction starting at each sequence's last step.
//!
//! # Backward
//! Exact backpropagation through time: [`Recurrent::backward_seq`] goes back through the
//! steps in reverse, through each step's gate equations (see the [`lstm`] and [`gru`]
//! modules) and hidden projection, then through the input projection once for all steps. It
//! takes the gradient of the outputs and, optionally, of the final state, and returns the
//! input's gradient and the initial state's gradient.
//!
//! ```
//! use phm_nn::prelude::*;
//! use phm_nn::nn::recurrent::{padding_mask, LstmConfig};
//! use phm_nn::nn::Projection;
//! let mut rng = StdRng::seed_from_u64(0);
//! // A PHM-LSTM (n = 4): 2·4³ + 4·8·(8 + 8)/4 + 2·4·8 = 320 parameters; dense: 4·8·16 + 64 = 576.
//! let mut lstm = LstmConfig::new(8, 8)
//!     .with_projection(Projection::phm(4))
//!     .init::<f64, _>(None, &mut rng)?;
//! assert_eq!(lstm.num_parameters(), 2 * 64 + 4 * 8 * 16 / 4 + 2 * 4 * 8);
//! let x = ArrayD::from_shape_fn(IxDyn(&[2, 5, 8]), |i| ((i[1] * 8 + i[2]) as f64).sin());
//! let mask = padding_mask(&[5, 3], 5)?; // the second sequence has 3 steps
//! let (y, last) = lstm.forward_seq(x.view(), Some(mask.view()), None);
//! assert_eq!(y.shape(), &[2, 5, 8]);
//! assert!(y.slice(s![1, 3.., ..]).iter().all(|&v| v == 0.0)); // zero past the end
//! // The final state of sequence 1 is its output at its last step, t = 2.
//! assert_eq!(last.h.slice(s![0, 1, ..]), y.slice(s![1, 2, ..]));
//! // Backward: output gradient in, input gradient and initial-state gradient out.
//! let (dx, _d_initial) = lstm.backward_seq(ArrayD::ones(IxDyn(&[2, 5, 8])).view(), None);
//! assert_eq!(dx.shape(), &[2, 5, 8]);
//! // Step by step through `&self`, as in generation: the same outputs.
//! let mut state = lstm.zero_state(1);
//! for t in 0..5 {
//!     let h = lstm.infer_step(x.slice(s![0..1, t, ..]), &mut state);
//!     assert!((h[[0, 3]] - y[[0, t, 3]]).abs() < 1e-12);
//! }
//! # use phm_nn::ndarray::s;
//! # Ok::<(), PhmError>(())
//! ```

mod cell;
mod config;
pub mod gates;
pub mod gru;
pub mod lstm;
mod sequence;
mod state;

pub use cell::RecurrentCell;
pub use config::RecurrentConfig;
pub use gates::Gates;
pub use gru::{Gru, GruCell, GruConfig, GruGates};
pub use lstm::{Lstm, LstmCell, LstmConfig, LstmGates};
pub use sequence::Recurrent;
pub use state::{padding_mask, CellState, RnnState};
