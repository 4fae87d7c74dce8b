//! The exact position of a random number generator, to copy or save it: [`RngState`].
//!
//! [`Dropout`](crate::nn::Dropout) copies its generator through it (`ChaCha8Rng` is not
//! `Clone`), and training checkpoints ([`crate::io`], re-exported as `io::RngState`) save it
//! so that a resumed run draws exactly the numbers the interrupted one would have.

use rand::rngs::ChaCha8Rng;
use rand::SeedableRng;

/// The exact position of a [`ChaCha8Rng`]: its seed, stream and word position.
///
/// [`RngState::to_rng`] gives a generator that continues with exactly the numbers the saved
/// one would have drawn next.
///
/// ```
/// use phm_nn::rng::RngState;
/// use phm_nn::rand::{rngs::ChaCha8Rng, RngExt, SeedableRng};
///
/// let mut rng = ChaCha8Rng::seed_from_u64(7);
/// let _: u64 = rng.random();
/// let mut copy = RngState::of(&rng).to_rng();
/// assert_eq!(rng.random::<u64>(), copy.random::<u64>());
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RngState {
    /// The 32-byte key.
    pub seed: [u8; 32],
    /// The stream number.
    pub stream: u64,
    /// The position in the stream, in 32-bit words.
    pub word_pos: u128,
}

impl RngState {
    /// The state of `rng`.
    pub fn of(rng: &ChaCha8Rng) -> Self {
        RngState {
            seed: rng.get_seed(),
            stream: rng.get_stream(),
            word_pos: rng.get_word_pos(),
        }
    }

    /// A generator at this state.
    pub fn to_rng(&self) -> ChaCha8Rng {
        let mut rng = ChaCha8Rng::from_seed(self.seed);
        rng.set_stream(self.stream);
        rng.set_word_pos(self.word_pos);
        rng
    }
}
