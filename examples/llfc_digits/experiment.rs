//! The experiment of `llfc_digits`: train an independent pair (A, B) and a spawned pair (A, C)
//! of ReLU MLPs on the digits data, align B to A by weight and by activation matching, and
//! measure linear mode connectivity (LMC) and layerwise linear feature connectivity (LLFC) of
//! every pair.
//!
//! `tests/science.rs` includes this file with `#[path]`, so the example and the test that holds
//! the paper's findings run the same pipeline.

use std::collections::BTreeMap;
use std::sync::Mutex;

use llfc::data::Dataset;
use llfc::lmc::{self, BarrierKind, Curve};
use llfc::matching::activation::{activation_matching_from_features, ActivationMatchingOptions};
use llfc::matching::weight::{weight_matching_with_progress, MatchingEvent, WeightMatchingOptions};
use llfc::metrics::{llfc_report_mlp, CosineVariant, LlfcReport};
use llfc::mlp::{self, FeatureKind, SgdConfig, TrainState};
use llfc::{apply_permutations, Params, PermutationSpec, Result};
use ndarray::ArrayD;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;

/// Scalar type of the experiment: f32 keeps training fast; every metric accumulates in f64.
pub type Real = f32;

/// One architecture and its training recipe.
#[derive(Clone, Debug)]
pub struct Setup {
    /// Layer widths `[in, h₁, …, out]`.
    pub widths: Vec<usize>,
    /// SGD with momentum; `sgd.epochs` is the total number of epochs of every model.
    pub sgd: SgdConfig,
    /// Epoch after which C is spawned from A (`0 < spawn_epoch < sgd.epochs`).
    pub spawn_epoch: usize,
    /// Master seed; every initialisation and data order is derived from it.
    pub seed: u64,
}

impl Setup {
    /// The widths as `64-128-10`.
    pub fn name(&self) -> String {
        let widths: Vec<String> = self.widths.iter().map(ToString::to_string).collect();
        widths.join("-")
    }

    /// Number of linear layers `L` (so `L − 1` hidden layers, `P_0 … P_{L−2}`).
    pub fn num_layers(&self) -> usize {
        self.widths.len() - 1
    }

    /// A derived RNG: `stream` 0/1 initialise A/B, 2/3/4 draw the data orders of A/B/C.
    fn rng(&self, stream: u64) -> ChaCha8Rng {
        ChaCha8Rng::seed_from_u64(self.seed.wrapping_mul(1000).wrapping_add(stream))
    }

    /// The SGD configuration running `epochs` epochs.
    fn sgd_for(&self, epochs: usize) -> SgdConfig {
        SgdConfig { epochs, ..self.sgd }
    }
}

/// Which model is training, for progress reports.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Model {
    /// A: its own initialisation and data order.
    A,
    /// B: another initialisation and data order.
    B,
    /// C: spawned from A after `spawn_epoch` epochs, then its own data order.
    C,
}

/// The three trained endpoints.
#[derive(Clone, Debug)]
pub struct Trained {
    /// Model A (the reference every other model is compared with).
    pub a: Params<Real>,
    /// Model B, trained independently of A.
    pub b: Params<Real>,
    /// Model C, spawned from A.
    pub c: Params<Real>,
}

/// Receives progress from [`run`]; every method defaults to doing nothing (`()` observes
/// nothing).
pub trait Observer {
    /// A stage of the pipeline begins.
    fn stage(&mut self, _stage: Stage) {}
    /// `model` finished epoch `epoch` (counted from 1, spawned models continue A's count).
    fn epoch(&mut self, _model: Model, _epoch: usize) {}
    /// Weight matching finished sweep `sweep` (from 0) with objective `⟨θ_A, π(θ_B)⟩`.
    fn sweep(&mut self, _sweep: usize, _objective: f64) {}
    /// A step inside the running stage finished (e.g. one start of commutativity matching).
    fn step(&mut self, _what: &str) {}
}

impl Observer for () {}

/// The stages of [`run`], in order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stage {
    /// Training A, C and B (`3 · epochs − spawn_epoch` epochs in all).
    Training,
    /// Weight matching of B onto A.
    WeightMatching,
    /// Activation matching of B onto A.
    ActivationMatching,
    /// Measuring the four pairs.
    Measuring,
    /// Commutativity matching of B onto A from every start, and measuring those pairs, with
    /// REPAIR of the naive and matched paths and measuring them alongside.
    CommutativityMatching,
    /// LLFC error attribution of every pair.
    Attribution,
}

/// Train A and B from their own initialisations and data orders, and spawn C from A after
/// `setup.spawn_epoch` epochs: C copies A's parameters *and* momentum buffers there and
/// continues with its own data order. B, and then A's and C's continuations, train in
/// parallel (each model's run is sequential and seeded, so the models do not depend on it).
///
/// # Errors
/// What [`mlp::init`] and [`TrainState::fit`] report (a bad setup, divergence).
pub fn train_models<O: Observer + Send>(
    setup: &Setup,
    data: &Dataset<Real>,
    observer: &mut O,
) -> Result<Trained> {
    let (head, total) = (setup.spawn_epoch, setup.sgd.epochs);
    let observer = Mutex::new(observer);
    // Continue `state` for `epochs` epochs with the data order `rng`, reporting as `model`.
    let fit = |state: &mut TrainState<Real>, epochs: usize, rng: &mut ChaCha8Rng, model| {
        let config = setup.sgd_for(epochs);
        let (x, y) = (&data.x_train, &data.y_train);
        state
            .fit(x, y, &config, rng, |s, _| {
                observer
                    .lock()
                    .expect("no observer panicked")
                    .epoch(model, s.epoch());
            })
            .map(|_| ())
    };
    // Three OS threads, not rayon tasks: B trains for `total` epochs, A for `head` epochs and
    // then A and C for `total − head` each. On two cores the operating system shares the cores
    // among the three (critical path ≈ (2·total + total − head) / 2 epochs), where rayon's two
    // workers would run C only after B (`head` + 2·(total − head) epochs). Each model's training
    // is sequential and seeded: the results do not depend on the scheduling.
    let (a_and_c, b) = std::thread::scope(|scope| {
        let b = scope.spawn(|| -> Result<TrainState<Real>> {
            let mut b = TrainState::new(&mlp::init(&setup.widths, &mut setup.rng(1))?)?;
            fit(&mut b, total, &mut setup.rng(3), Model::B)?;
            Ok(b)
        });
        let a_and_c = (|| -> Result<(TrainState<Real>, TrainState<Real>)> {
            let mut a = TrainState::new(&mlp::init(&setup.widths, &mut setup.rng(0))?)?;
            let mut order_a = setup.rng(2);
            fit(&mut a, head, &mut order_a, Model::A)?;
            let mut c = a.clone();
            let c = scope.spawn(move || -> Result<TrainState<Real>> {
                fit(&mut c, total - head, &mut setup.rng(4), Model::C)?;
                Ok(c)
            });
            let done_a = fit(&mut a, total - head, &mut order_a, Model::A);
            let c = c.join().expect("training C does not panic")?;
            done_a?;
            Ok((a, c))
        })();
        (a_and_c, b.join().expect("training B does not panic"))
    });
    let ((a, c), b) = (a_and_c?, b?);
    Ok(Trained {
        a: a.into_params(),
        b: b.into_params(),
        c: c.into_params(),
    })
}

/// B permuted by weight matching onto A (Git Re-Basin Alg. 1, default options), reporting
/// every sweep.
///
/// # Errors
/// What [`weight_matching_with_progress`] and [`apply_permutations`] report.
pub fn weight_matched(
    spec: &PermutationSpec,
    a: &Params<Real>,
    b: &Params<Real>,
    observer: &mut impl Observer,
) -> Result<Params<Real>> {
    let options = WeightMatchingOptions::default();
    let matching = weight_matching_with_progress(spec, a, b, &options, |event| {
        if let MatchingEvent::Sweep {
            sweep, objective, ..
        } = event
        {
            observer.sweep(*sweep, *objective);
        }
    })?;
    apply_permutations(spec, &matching.perms, b)
}

/// The post-activations of every hidden layer on `x`, keyed `P_0, P_1, …` like
/// [`PermutationSpec::mlp`]'s permutations of those units.
fn hidden_features(
    params: &Params<Real>,
    x: &ndarray::Array2<Real>,
) -> Result<BTreeMap<String, ArrayD<Real>>> {
    let features = mlp::forward_features(params, x)?;
    let hidden = features.num_layers() - 1;
    Ok((0..hidden)
        .map(|l| {
            let post = features.get(l, FeatureKind::Post).expect("hidden layer");
            (format!("P_{l}"), post.clone().into_dyn())
        })
        .collect())
}

/// B permuted by activation matching onto A: per hidden layer, the permutation maximising the
/// summed correlation of matched units' post-activations on the training inputs (Git
/// Re-Basin §3.1, the library's default statistic).
///
/// # Errors
/// What [`mlp::forward_features`], [`activation_matching_from_features`] and
/// [`apply_permutations`] report.
pub fn activation_matched(
    spec: &PermutationSpec,
    a: &Params<Real>,
    b: &Params<Real>,
    x: &ndarray::Array2<Real>,
) -> Result<Params<Real>> {
    let options = ActivationMatchingOptions::default();
    let perms = activation_matching_from_features(
        &hidden_features(a, x)?,
        &hidden_features(b, x)?,
        &options,
    )?;
    apply_permutations(spec, &perms, b)
}

/// How the second endpoint of a pair was obtained.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Method {
    /// (A, B) as trained.
    Naive,
    /// (A, π(B)) with π from weight matching.
    WeightMatched,
    /// (A, π(B)) with π from activation matching.
    ActivationMatched,
    /// (A, C), C spawned from A.
    Spawned,
}

impl Method {
    /// Every method, in table order.
    pub const ALL: [Self; 4] = [
        Self::Naive,
        Self::WeightMatched,
        Self::ActivationMatched,
        Self::Spawned,
    ];

    /// Short label for tables and legends.
    pub fn label(self) -> &'static str {
        match self {
            Self::Naive => "naive (A, B)",
            Self::WeightMatched => "weight-matched",
            Self::ActivationMatched => "activation-matched",
            Self::Spawned => "spawned (A, C)",
        }
    }
}

/// The LMC curve and LLFC report of one pair, both on the test set.
#[derive(Clone, Debug)]
pub struct PairResult {
    /// How the pair was made.
    pub method: Method,
    /// Test loss and error along `θ(α) = α θ_A + (1 − α) θ_B`.
    pub curve: Curve,
    /// LLFC, weak additivity and commutativity at the same α grid.
    pub report: LlfcReport,
    /// The second endpoint (B as trained, π(B), or C).
    pub second: Params<Real>,
}

impl PairResult {
    /// The interpolated loss barrier `max_α [v(α) − (α v(1) + (1 − α) v(0))]`.
    pub fn loss_barrier(&self) -> f64 {
        self.curve
            .loss_barrier(BarrierKind::Interpolated)
            .expect("the grid holds both endpoints")
            .height
    }

    /// The interpolated error barrier (fraction of test samples).
    pub fn error_barrier(&self) -> f64 {
        self.curve
            .error_barrier(BarrierKind::Interpolated)
            .expect("the grid holds both endpoints")
            .height
    }

    /// Index of `alpha` in the grid.
    fn alpha_index(&self, alpha: f64) -> usize {
        self.report
            .alphas
            .iter()
            .position(|&a| (a - alpha).abs() < 1e-9)
            .unwrap_or_else(|| panic!("alpha {alpha} is not on the grid"))
    }

    /// `(E[1 − cos_α], E[1 − cos_{A,B}])` of layer ℓ's post-activations (the logits for
    /// ℓ = L − 1).
    pub fn llfc(&self, alpha: f64, layer: usize) -> (f64, f64) {
        let m = self
            .report
            .layer(self.alpha_index(alpha), layer, FeatureKind::Post)
            .expect("layer in range");
        (m.distance.mean_or_nan(), m.baseline.mean_or_nan())
    }

    /// Weak-additivity residual `‖σ(αZ_A + (1−α)Z_B) − (ασ(Z_A) + (1−α)σ(Z_B))‖ / ‖…‖` of
    /// hidden layer ℓ.
    pub fn weak_additivity(&self, alpha: f64, layer: usize) -> f64 {
        self.report.weak_additivity[self.alpha_index(alpha)][layer]
            .relative
            .unwrap_or(f64::NAN)
    }

    /// Commutativity residual `‖(W_A − W_B)(H_A − H_B)‖ / ‖W_A H_A + W_B H_B‖` of layer ℓ.
    pub fn commutativity(&self, layer: usize) -> f64 {
        self.report.commutativity[layer]
            .relative
            .unwrap_or(f64::NAN)
    }
}

/// Measure one pair on the test set: the LMC curve on `alphas` and the LLFC report on
/// `report_alphas` (each α of the report is computed on its own, so a shorter grid gives the
/// same values at its α and saves a forward pass and the metrics per α left out). On one grid
/// both come from one forward pass of θ(α) per α ([`lmc::mlp_curve_and_report`]).
///
/// # Errors
/// What [`lmc::mlp_curve`] and [`llfc_report_mlp`] report.
#[allow(clippy::float_cmp)]
pub fn measure(
    method: Method,
    a: &Params<Real>,
    b: &Params<Real>,
    data: &Dataset<Real>,
    alphas: &[f64],
    report_alphas: &[f64],
) -> Result<PairResult> {
    let (x, y, signed) = (&data.x_test, &data.y_test, CosineVariant::Signed);
    let (curve, report) = if report_alphas == alphas {
        lmc::mlp_curve_and_report(a, b, x, y, alphas, signed)?
    } else {
        let report = llfc_report_mlp(a, b, x, report_alphas, signed)?;
        (lmc::mlp_curve(a, b, x, y, alphas)?, report)
    };
    Ok(PairResult {
        method,
        curve,
        report,
        second: b.clone(),
    })
}

/// Everything [`run`] produces for one setup.
#[derive(Clone, Debug)]
pub struct Outcome {
    /// Model A, the first endpoint of every pair.
    pub a: Params<Real>,
    /// Test accuracy of A, B and C.
    pub accuracy: [f64; 3],
    /// One result per [`Method`], in [`Method::ALL`] order.
    pub pairs: Vec<PairResult>,
}

impl Outcome {
    /// The result of `method`.
    pub fn pair(&self, method: Method) -> &PairResult {
        self.pairs
            .iter()
            .find(|p| p.method == method)
            .expect("every method is measured")
    }
}

/// The whole experiment for one setup: train A, B, C; match B onto A by weights and by
/// activations (on the training inputs); measure the four pairs on the test set at `alphas`
/// (which must hold 0 and 1). Independent parts run in parallel (models, pairs); every result
/// is the same on any number of threads.
///
/// # Errors
/// What the stages report.
pub fn run(
    setup: &Setup,
    data: &Dataset<Real>,
    alphas: &[f64],
    observer: &mut (impl Observer + Send),
) -> Result<Outcome> {
    let spec = PermutationSpec::mlp(setup.num_layers());
    observer.stage(Stage::Training);
    let Trained { a, b, c } = &train_models(setup, data, observer)?;
    observer.stage(Stage::WeightMatching);
    let b_weight = weight_matched(&spec, a, b, observer)?;
    observer.stage(Stage::ActivationMatching);
    let b_activation = activation_matched(&spec, a, b, &data.x_train)?;
    observer.stage(Stage::Measuring);
    let second_endpoints = [
        (Method::Naive, b),
        (Method::WeightMatched, &b_weight),
        (Method::ActivationMatched, &b_activation),
        (Method::Spawned, c),
    ];
    let pairs = second_endpoints
        .into_par_iter()
        .map(|(method, other)| measure(method, a, other, data, alphas, alphas))
        .collect::<Result<Vec<_>>>()?;
    let test_accuracy = |p: &Params<Real>| -> Result<f64> {
        Ok(mlp::evaluate(p, &data.x_test, &data.y_test)?.accuracy)
    };
    Ok(Outcome {
        a: a.clone(),
        accuracy: [test_accuracy(a)?, test_accuracy(b)?, test_accuracy(c)?],
        pairs,
    })
}
