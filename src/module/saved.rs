//! A layer's stack of saved forward states: [`SavedStates`].

use std::fmt::{self, Debug, Display};
use std::sync::{Mutex, MutexGuard, PoisonError};

/// A layer's stack of saved forward states of type `T`.
///
/// `forward` pushes what `backward` needs, `backward` pops the most recent one (panicking with
/// one message, `"{layer}::backward called before forward …"`, when none is left),
/// [`Module::zero_grad`](super::Module::zero_grad) clears the states no backward consumed, and
/// [`Module::pending`](super::Module::pending) counts them. A layer hands its stack to the
/// contract through [`Module::saved_states`](super::Module::saved_states); the defaults of
/// `clear_saved` and `pending` do the rest.
///
/// ```
/// use phm_nn::module::SavedStates;
/// let mut saved = SavedStates::new();
/// saved.push(1.5f64);
/// saved.push(2.5);
/// assert_eq!(saved.len(), 2);
/// assert_eq!(saved.pop("MyLayer"), 2.5); // last in, first out
/// saved.clear();
/// assert!(saved.is_empty());
/// ```
///
/// The stack sits behind a lock only so that the contract can count and clear it through one
/// shared accessor ([`Module::saved_states`](super::Module::saved_states)); `push`, `pop`
/// and `clear` take `&mut self` and never lock.
pub struct SavedStates<T> {
    states: Mutex<Vec<T>>,
}

impl<T> SavedStates<T> {
    /// An empty stack.
    pub fn new() -> Self {
        SavedStates {
            states: Mutex::new(Vec::new()),
        }
    }

    fn get_mut(&mut self) -> &mut Vec<T> {
        self.states
            .get_mut()
            .unwrap_or_else(PoisonError::into_inner)
    }

    fn lock(&self) -> MutexGuard<'_, Vec<T>> {
        self.states.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Saves the state of one forward pass.
    pub fn push(&mut self, state: T) {
        self.get_mut().push(state);
    }

    /// The state of the most recent forward pass not yet gone back through.
    ///
    /// # Panics
    /// If none is left: `"{layer}::backward called before forward (each backward needs its
    /// own forward)"`, at the caller's location.
    #[track_caller]
    pub fn pop(&mut self, layer: impl Display) -> T {
        match self.get_mut().pop() {
            Some(state) => state,
            None => panic!(
                "{layer}::backward called before forward (each backward needs its own forward)"
            ),
        }
    }

    /// Number of states held.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// Whether no state is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Drops every state.
    pub fn clear(&mut self) {
        self.get_mut().clear();
    }

    /// Removes and returns every state, oldest first (for a layer that recycles the arrays of
    /// dropped states).
    pub fn take_all(&mut self) -> Vec<T> {
        std::mem::take(self.get_mut())
    }
}

impl<T> Default for SavedStates<T> {
    fn default() -> Self {
        Self::new()
    }
}

impl<T: Clone> Clone for SavedStates<T> {
    fn clone(&self) -> Self {
        SavedStates {
            states: Mutex::new(self.lock().clone()),
        }
    }
}

impl<T> Debug for SavedStates<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SavedStates({} pending)", self.len())
    }
}

/// A [`SavedStates`] of any state type, as the contract sees it: counted and cleared.
pub trait StateStack: Send + Sync {
    /// Number of states held.
    fn pending(&self) -> usize;

    /// Drops every state (through `&self`; the stack's lock makes this safe).
    fn discard(&self);
}

impl<T: Send> StateStack for SavedStates<T> {
    fn pending(&self) -> usize {
        self.len()
    }

    fn discard(&self) {
        self.lock().clear();
    }
}
