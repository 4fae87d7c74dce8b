//! Adapters (Houlsby et al. 2019; Compacter, Karimi Mahabadi et al. 2021): a small residual
//! bottleneck inserted into a frozen pretrained model, trained alone.
//!
//! ```text
//!     h ↦ h + up(act(down(h)))        down: d → m,  up: m → d,  h: (…, d)
//! ```
//!
//! The projections are a [`Projection`]: dense ([`Projection::Dense`]), PHM
//! ([`Projection::Phm`]) or low-rank PHM ([`Projection::LowRankPhm`], Compacter's choice);
//! PHM projections can share one rule set across every adapter of a model
//! ([`AdapterConfig::init_shared`]).
//!
//! **Near-identity init.** The up-projection starts with weights of standard deviation
//! [`up_init_std`](AdapterConfig::up_init_std) (default `1e-4`) and a zero bias, so a fresh
//! adapter changes its input by about `1e-4` relative — the pretrained model's outputs are
//! kept until training moves the adapter (see [`Projection::build_scaled`]: dense/PHM draw
//! the weight or blocks `N(0, std²)`; LPHM keeps `V`'s default and draws `U` so that
//! `W_up`'s entries have that standard deviation, so `U` still receives gradients of
//! ordinary size).
//!
//! Parameters of one adapter (bias included, `m` the bottleneck width):
//!
//! | kind                      | trainable parameters                         |
//! |---------------------------|----------------------------------------------|
//! | dense                     | `2·d·m + m + d`                              |
//! | PHM, own rules            | `n³ + 2·d·m/n + m + d`                       |
//! | LPHM, own rules           | `n³ + 2·r·(d + m) + m + d`                   |
//! | LPHM, shared rules        | `2·r·(d + m) + m + d` (+ `n³` once per model)|
//!
//! (An adapter's own rules are one rule set used by both of its projections.)
//!
//! ```
//! use phm_nn::prelude::*;
//! use phm_nn::nn::{AdapterConfig, PhmRules, Projection};
//! let mut rng = StdRng::seed_from_u64(0);
//! let (d, m, n, r) = (64, 16, 4, 1);
//! let dense = AdapterConfig::new(d, m, Projection::Dense).init::<f64, _>(&mut rng)?;
//! assert_eq!(dense.num_parameters(), 2 * d * m + m + d);
//! let phm = AdapterConfig::new(d, m, Projection::phm(n)).init::<f64, _>(&mut rng)?;
//! assert_eq!(phm.num_parameters(), n * n * n + 2 * d * m / n + m + d);
//! let lphm = AdapterConfig::new(d, m, Projection::low_rank(n, r)).init::<f64, _>(&mut rng)?;
//! assert_eq!(lphm.num_parameters(), n * n * n + 2 * r * (d + m) + m + d);
//!
//! // Compacter: two adapters sharing one rule set; the n³ rules are counted once.
//! let rules = PhmRules::<f64>::new(n, Rule::Learned(Init::UnitFibers), &mut rng)?;
//! let cfg = AdapterConfig::new(d, m, Projection::low_rank(n, r));
//! let pair = Sequential::new()
//!     .add(cfg.init_shared(&rules, &mut rng)?)
//!     .add(cfg.init_shared(&rules, &mut rng)?);
//! assert_eq!(pair.num_parameters(), n * n * n + 2 * (2 * r * (d + m) + m + d));
//!
//! // A fresh adapter is the identity up to ~1e-4.
//! let h = ArrayD::from_shape_fn(IxDyn(&[8, d]), |i| (i[0] as f64 - i[1] as f64).sin());
//! let out = lphm.infer(h.view());
//! assert!((&out - &h).iter().all(|e| e.abs() < 1e-3));
//! # Ok::<(), phm_nn::PhmError>(())
//! ```
//!
//! To adapt a trained [`Sequential`]: [`freeze`] it, [`insert_adapters`] after chosen layers,
//! replace the head, and train; [`ParameterCount::of`] reports trainable and frozen counts.

use ndarray::{ArrayD, ArrayViewD};
use rand::Rng;

use crate::error::{PhmError, Result};
use crate::module::{clone_model, params, Module, Sequential};
use crate::nn::activation::{Gelu, Relu, Tanh};
use crate::nn::projection::Projection;
use crate::nn::rules::PhmRules;
use crate::Float;

/// The non-linearity between the projections.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum AdapterActivation {
    /// ReLU.
    Relu,
    /// GELU (default).
    #[default]
    Gelu,
    /// tanh.
    Tanh,
}

/// Configuration of an [`Adapter`].
#[derive(Debug, Clone, PartialEq)]
pub struct AdapterConfig {
    /// Width `d` of the hidden state the adapter is inserted on.
    pub width: usize,
    /// Bottleneck width `m`.
    pub hidden: usize,
    /// The projections: dense, PHM or low-rank PHM.
    pub projection: Projection,
    /// The non-linearity (default GELU).
    pub activation: AdapterActivation,
    /// Standard deviation of the up-projection's weight entries at init (default `1e-4`);
    /// `0` makes a fresh adapter exactly the identity.
    pub up_init_std: f64,
}

impl AdapterConfig {
    /// An adapter on a width-`width` hidden state with a `hidden`-wide bottleneck.
    #[must_use]
    pub fn new(width: usize, hidden: usize, projection: Projection) -> Self {
        AdapterConfig {
            width,
            hidden,
            projection,
            activation: AdapterActivation::default(),
            up_init_std: 1e-4,
        }
    }

    /// Sets the non-linearity.
    #[must_use]
    pub fn with_activation(mut self, activation: AdapterActivation) -> Self {
        self.activation = activation;
        self
    }

    /// Sets the up-projection's init standard deviation.
    #[must_use]
    pub fn with_up_init_std(mut self, std: f64) -> Self {
        self.up_init_std = std;
        self
    }

    /// The rule set the PHM projections would draw for themselves ([`Projection::new_rules`]);
    /// share it across adapters with [`init_shared`](Self::init_shared).
    ///
    /// # Errors
    /// [`PhmError::InvalidArgument`] for [`Projection::Dense`], and the errors of
    /// [`Projection::new_rules`].
    pub fn new_rules<F: Float, R: Rng + ?Sized>(&self, rng: &mut R) -> Result<PhmRules<F>> {
        self.projection
            .new_rules(rng)?
            .ok_or_else(|| PhmError::InvalidArgument {
                what: "projection",
                reason: "dense adapters have no rules".to_string(),
            })
    }

    /// Builds an adapter with its own parameters (for PHM projections, one rule set shared
    /// by its down- and up-projection).
    ///
    /// # Errors
    /// As [`init_shared`](Self::init_shared).
    pub fn init<F: Float, R: Rng + ?Sized>(&self, rng: &mut R) -> Result<Adapter<F>> {
        let rules = self.projection.new_rules(rng)?;
        self.build(rules.as_ref(), rng)
    }

    /// Builds an adapter whose PHM projections (down and up) use `rules`, shared with every
    /// other layer built on them (Compacter's shared rules). [`Projection::Phm`] needs full
    /// rules; [`Projection::LowRankPhm`] takes full or factorized ones.
    ///
    /// # Errors
    /// - [`PhmError::InvalidArgument`] for dense projections, and the errors of
    ///   [`Projection::build`] and [`Projection::build_scaled`]: rules of another `n`,
    ///   factorized rules for PHM projections, an up-init std that is negative or not finite;
    /// - [`PhmError::ZeroSize`], [`PhmError::NotDivisible`], [`PhmError::ZeroN`] for sizes
    ///   that do not fit `n` (or a rank of 0).
    pub fn init_shared<F: Float, R: Rng + ?Sized>(
        &self,
        rules: &PhmRules<F>,
        rng: &mut R,
    ) -> Result<Adapter<F>> {
        if self.projection == Projection::Dense {
            return Err(PhmError::InvalidArgument {
                what: "projection",
                reason: "dense adapters have no rules to share".to_string(),
            });
        }
        self.build(Some(rules), rng)
    }

    fn build<F: Float, R: Rng + ?Sized>(
        &self,
        rules: Option<&PhmRules<F>>,
        rng: &mut R,
    ) -> Result<Adapter<F>> {
        let (d, m) = (self.width, self.hidden);
        let down = self.projection.build(d, m, rules, rng)?;
        let up = self
            .projection
            .build_scaled(m, d, self.up_init_std, rules, rng)?;
        let act: Box<dyn Module<F>> = match self.activation {
            AdapterActivation::Relu => Box::new(Relu::new()),
            AdapterActivation::Gelu => Box::new(Gelu::new()),
            AdapterActivation::Tanh => Box::new(Tanh::new()),
        };
        Ok(Adapter {
            width: d,
            down,
            act,
            up,
        })
    }
}

/// A residual bottleneck `h ↦ h + up(act(down(h)))` on the last axis; see the
/// [module docs](self).
///
/// `Clone` keeps the sharing inside the adapter (its two projections on one rule set) and
/// shares nothing with the original.
#[derive(Debug)]
pub struct Adapter<F: Float> {
    width: usize,
    down: Box<dyn Module<F>>,
    act: Box<dyn Module<F>>,
    up: Box<dyn Module<F>>,
}

impl<F: Float> Clone for Adapter<F> {
    fn clone(&self) -> Self {
        let (down, act, up) = clone_model(&(self.down.clone(), self.act.clone(), self.up.clone()));
        Adapter {
            width: self.width,
            down,
            act,
            up,
        }
    }
}

impl<F: Float> Adapter<F> {
    /// An adapter from any projections: `down` `(…, width) → (…, m)`, an element-wise `act`,
    /// `up` `(…, m) → (…, width)`.
    ///
    /// # Errors
    /// [`PhmError::InvalidArgument`] if `down` does not take `width` or `up` does not give
    /// `width` back (when the modules report their output shapes).
    pub fn new(
        width: usize,
        down: impl Module<F>,
        act: impl Module<F>,
        up: impl Module<F>,
    ) -> Result<Self> {
        let out = down
            .output_shape(&[1, width])
            .and_then(|mid| up.output_shape(&mid));
        if let Some(out) = out {
            if out != [1, width] {
                return Err(PhmError::InvalidArgument {
                    what: "up",
                    reason: format!(
                        "the projections map [1, {width}] to {out:?}, not back to [1, {width}]"
                    ),
                });
            }
        }
        Ok(Adapter {
            width,
            down: Box::new(down),
            act: Box::new(act),
            up: Box::new(up),
        })
    }

    /// The width `d` the adapter acts on.
    pub fn width(&self) -> usize {
        self.width
    }

    /// The down-projection.
    pub fn down(&self) -> &dyn Module<F> {
        self.down.as_ref()
    }

    /// The up-projection.
    pub fn up(&self) -> &dyn Module<F> {
        self.up.as_ref()
    }
}

impl<F: Float> Module<F> for Adapter<F> {
    /// `h + up(act(down(h)))`.
    ///
    /// # Panics
    /// If the last axis of `x` is not the adapter's width.
    #[track_caller]
    fn forward(&mut self, x: ArrayViewD<'_, F>) -> ArrayD<F> {
        let z = self.down.forward(x.view());
        let a = self.act.forward(z.view());
        let mut y = self.up.forward(a.view());
        y += &x;
        y
    }

    /// `dh = g + down'(act'(up'(g)))`.
    ///
    /// # Panics
    /// As the projections' `backward`.
    #[track_caller]
    fn backward(&mut self, grad_output: ArrayViewD<'_, F>) -> ArrayD<F> {
        let da = self.up.backward(grad_output.view());
        let dz = self.act.backward(da.view());
        let mut dx = self.down.backward(dz.view());
        dx += &grad_output;
        dx
    }

    /// # Panics
    /// As [`forward`](Module::forward).
    #[track_caller]
    fn infer(&self, x: ArrayViewD<'_, F>) -> ArrayD<F> {
        let z = self.down.infer(x.view());
        let a = self.act.infer(z.view());
        let mut y = self.up.infer(a.view());
        y += &x;
        y
    }

    fn visit_children<'a>(&'a self, f: &mut dyn FnMut(&str, &'a dyn Module<F>)) {
        f("down", self.down.as_ref());
        f("act", self.act.as_ref());
        f("up", self.up.as_ref());
    }

    fn visit_children_mut<'a>(&'a mut self, f: &mut dyn FnMut(&str, &'a mut dyn Module<F>)) {
        f("down", self.down.as_mut());
        f("act", self.act.as_mut());
        f("up", self.up.as_mut());
    }

    fn describe(&self) -> String {
        let w = self.width;
        match self
            .down
            .output_shape(&[1, w])
            .and_then(|s| s.last().copied())
        {
            Some(m) => format!("Adapter({w} → {m} → {w})"),
            None => format!("Adapter({w} → … → {w})"),
        }
    }

    fn output_shape(&self, input: &[usize]) -> Option<Vec<usize>> {
        (input.last() == Some(&self.width)).then(|| input.to_vec())
    }
}

/// Makes every parameter of `model` trainable (`true`) or frozen (`false`), shared tensors
/// included (they are frozen for every layer that uses them).
pub fn set_trainable<F: Float>(model: &dyn Module<F>, trainable: bool) {
    for (_, p) in params(model) {
        p.set_trainable(trainable);
    }
}

/// Freezes every parameter of `model`: the first step of adapting a pretrained model.
pub fn freeze<F: Float>(model: &dyn Module<F>) {
    set_trainable(model, false);
}

/// Inserts an adapter after each layer listed in `after` (indices into `model` as it is
/// before the call; any order), made by `make(index)`. Returns the new positions of the
/// adapters, in increasing order.
///
/// ```
/// use phm_nn::prelude::*;
/// use phm_nn::nn::{freeze, insert_adapters, AdapterConfig, ParameterCount, Projection};
/// let mut rng = StdRng::seed_from_u64(0);
/// let mut model = Sequential::<f32>::new()
///     .add(LinearConfig::new(64, 32).init(&mut rng)?)
///     .add(Relu::new())
///     .add(LinearConfig::new(32, 10).init(&mut rng)?);
/// freeze(&model);
/// let cfg = AdapterConfig::new(32, 8, Projection::low_rank(4, 1));
/// let rules = cfg.new_rules(&mut rng)?;
/// let at = insert_adapters(&mut model, &[1], |_| cfg.init_shared(&rules, &mut rng))?;
/// assert_eq!(at, [2]);
/// let count = ParameterCount::of(&model);
/// assert_eq!(count.trainable, 64 + 2 * (32 + 8) + 8 + 32); // rules + U, V + biases
/// assert_eq!(count.frozen, 64 * 32 + 32 + 32 * 10 + 10);
/// # Ok::<(), phm_nn::PhmError>(())
/// ```
///
/// # Errors
/// [`PhmError::InvalidArgument`] if an index is out of range or listed twice (the model is
/// then unchanged), or the first error `make` returns (adapters already inserted stay).
pub fn insert_adapters<F: Float>(
    model: &mut Sequential<F>,
    after: &[usize],
    mut make: impl FnMut(usize) -> Result<Adapter<F>>,
) -> Result<Vec<usize>> {
    let mut sorted = after.to_vec();
    sorted.sort_unstable();
    for w in sorted.windows(2) {
        if w[0] == w[1] {
            return Err(PhmError::InvalidArgument {
                what: "after",
                reason: format!("layer {} is listed twice", w[0]),
            });
        }
    }
    if let Some(&last) = sorted.last() {
        if last >= model.len() {
            return Err(PhmError::InvalidArgument {
                what: "after",
                reason: format!("layer {last} is past the end ({} layers)", model.len()),
            });
        }
    }
    // From the back, so that earlier indices still point at the same layers.
    for &i in sorted.iter().rev() {
        let adapter = make(i)?;
        model.insert(i + 1, adapter);
    }
    Ok(sorted.iter().enumerate().map(|(j, &i)| i + 1 + j).collect())
}

/// Trainable and frozen scalars of a model, each shared tensor counted once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ParameterCount {
    /// Scalars an optimizer updates.
    pub trainable: usize,
    /// Frozen scalars.
    pub frozen: usize,
}

impl ParameterCount {
    /// Counts `model`'s parameters.
    pub fn of<F: Float>(model: &dyn Module<F>) -> Self {
        ParameterCount {
            trainable: model.num_parameters(),
            frozen: model.num_frozen_parameters(),
        }
    }

    /// All scalars, trainable and frozen.
    pub fn total(&self) -> usize {
        self.trainable + self.frozen
    }

    /// Trainable scalars as a percentage of all (`0` for an empty model).
    pub fn trainable_percent(&self) -> f64 {
        if self.total() == 0 {
            0.0
        } else {
            100.0 * self.trainable as f64 / self.total() as f64
        }
    }
}
