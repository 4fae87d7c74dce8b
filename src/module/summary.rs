//! A model summary, as torchinfo and Keras print: every module, its output shape where known,
//! its trainable and frozen parameter counts, and the totals.

use std::collections::HashSet;
use std::fmt;

use crate::module::{check_paths, join, Module, ParamId};
use crate::Float;

/// One row of a [`Summary`]: a module at some depth of the tree.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SummaryRow {
    /// Path of the module (`"0"`, `"encoder.1"`; `""` for the root).
    pub path: String,
    /// Depth in the tree (0 for the root).
    pub depth: usize,
    /// [`Module::describe`].
    pub description: String,
    /// Output shape for the summary's input shape, when known.
    pub output_shape: Option<Vec<usize>>,
    /// Trainable scalars first seen in this module's own tensors (for a leaf) — a tensor
    /// shared with an earlier module counts there, not here.
    pub trainable: usize,
    /// Frozen scalars first seen in this module's own tensors.
    pub frozen: usize,
    /// Scalars in tensors this module shares with an earlier one (not in the totals again).
    pub shared: usize,
}

/// The summary of a model; `Display` prints it as a table. Made by [`summary`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Summary {
    /// One row per module, parents before children.
    pub rows: Vec<SummaryRow>,
    /// Total trainable scalars (each tensor once).
    pub trainable: usize,
    /// Total frozen scalars (each tensor once).
    pub frozen: usize,
}

/// Summarizes `model` for an input of shape `input` (e.g. `&[32, 64]`; pass `&[]` to leave
/// shapes out).
///
/// ```
/// use phm_nn::prelude::*;
/// let mut rng = StdRng::seed_from_u64(0);
/// let model = Sequential::<f32>::new()
///     .add(PhmLinearConfig::new(64, 32, 4).init(&mut rng)?)
///     .add(Relu::new())
///     .add(LinearConfig::new(32, 10).init(&mut rng)?);
/// let s = summary(&model, &[16, 64]);
/// assert_eq!(s.rows[1].output_shape, Some(vec![16, 32]));
/// assert_eq!(s.trainable, (64 + 64 * 32 / 4 + 32) + (32 * 10 + 10));
/// println!("{s}");
/// # Ok::<(), phm_nn::PhmError>(())
/// ```
///
/// # Panics
/// If two modules or two different parameter tensors of `model` have the same path (a
/// `visit_children` of your own that names two children alike; see
/// [`check_paths`](crate::module::check_paths)): the rows would be ambiguous.
#[track_caller]
pub fn summary<F: Float>(model: &dyn Module<F>, input: &[usize]) -> Summary {
    if let Err(e) = check_paths(model) {
        panic!("summary: {e}");
    }
    let mut rows = Vec::new();
    let mut seen = HashSet::new();
    let input = (!input.is_empty()).then(|| input.to_vec());
    walk(model, String::new(), 0, input, &mut seen, &mut rows);
    let trainable = rows.iter().map(|r| r.trainable).sum();
    let frozen = rows.iter().map(|r| r.frozen).sum();
    Summary {
        rows,
        trainable,
        frozen,
    }
}

fn walk<F: Float>(
    m: &dyn Module<F>,
    path: String,
    depth: usize,
    input: Option<Vec<usize>>,
    seen: &mut HashSet<ParamId>,
    rows: &mut Vec<SummaryRow>,
) -> Option<Vec<usize>> {
    let output_shape = input.as_deref().and_then(|s| m.output_shape(s));
    let at = rows.len();
    rows.push(SummaryRow {
        path: path.clone(),
        depth,
        description: m.describe(),
        output_shape: output_shape.clone(),
        trainable: 0,
        frozen: 0,
        shared: 0,
    });
    let mut children = Vec::new();
    m.visit_children(&mut |name, child| children.push((name.to_string(), child)));
    if children.is_empty() {
        let (mut trainable, mut frozen, mut shared) = (0, 0, 0);
        m.visit_params(&mut |_, p| {
            if !seen.insert(p.id()) {
                shared += p.len();
            } else if p.is_trainable() {
                trainable += p.len();
            } else {
                frozen += p.len();
            }
        });
        let row = &mut rows[at];
        (row.trainable, row.frozen, row.shared) = (trainable, frozen, shared);
    } else {
        let chain = m.is_chain();
        let mut shape = input.clone();
        for (name, child) in children {
            let child_input = if chain { shape.clone() } else { None };
            let out = walk(
                child,
                join(&path, &name),
                depth + 1,
                child_input,
                seen,
                rows,
            );
            if chain {
                shape = out;
            }
        }
    }
    output_shape
}

impl fmt::Display for Summary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let shape = |s: &Option<Vec<usize>>| match s {
            Some(s) => format!("{s:?}"),
            None => "-".to_string(),
        };
        let name = |r: &SummaryRow| {
            let label = if r.path.is_empty() {
                r.description.clone()
            } else {
                format!("{}: {}", r.path, r.description)
            };
            format!("{}{}", "  ".repeat(r.depth), label)
        };
        let w = self
            .rows
            .iter()
            .map(|r| name(r).chars().count())
            .max()
            .unwrap_or(0)
            .max(5);
        let ws = self
            .rows
            .iter()
            .map(|r| shape(&r.output_shape).len())
            .max()
            .unwrap_or(0)
            .max(12);
        writeln!(
            f,
            "{:<w$}  {:>ws$}  {:>12}  {:>10}",
            "layer", "output shape", "trainable", "frozen"
        )?;
        writeln!(f, "{}", "-".repeat(w + ws + 28))?;
        for r in &self.rows {
            let shared = if r.shared > 0 {
                format!("  (+{} shared)", r.shared)
            } else {
                String::new()
            };
            writeln!(
                f,
                "{:<w$}  {:>ws$}  {:>12}  {:>10}{shared}",
                name(r),
                shape(&r.output_shape),
                r.trainable,
                r.frozen
            )?;
        }
        writeln!(f, "{}", "-".repeat(w + ws + 28))?;
        writeln!(f, "trainable parameters: {}", self.trainable)?;
        write!(f, "frozen parameters:    {}", self.frozen)
    }
}
