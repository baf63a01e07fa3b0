//! Progress of the experiment on stderr: an `indicatif` bar per stage on a terminal, one plain
//! line per finished stage otherwise (pipes, CI logs), so stdout carries only the tables.

use std::io::IsTerminal;
use std::time::Instant;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::experiment::{Model, Observer, Setup, Stage};

/// Reports the stages of one setup's run.
pub struct Progress {
    /// The architecture, prefixed to every line.
    name: String,
    /// Epochs trained in all: A and B the full run, C all but the shared epochs.
    total_epochs: u64,
    /// Whether stderr is a terminal (bars) or not (plain lines).
    interactive: bool,
    /// The running stage, its bar and its start time.
    current: Option<(Stage, ProgressBar, Instant)>,
}

impl Progress {
    /// Progress for `setup`, drawing to stderr.
    pub fn new(setup: &Setup) -> Self {
        let epochs = setup.sgd.epochs;
        Self {
            name: setup.name(),
            total_epochs: (3 * epochs - setup.spawn_epoch) as u64,
            interactive: std::io::stderr().is_terminal(),
            current: None,
        }
    }

    /// A bar for `stage`: counted epochs for training, a spinner for the rest.
    fn bar(&self, stage: Stage) -> ProgressBar {
        let target = if self.interactive {
            ProgressDrawTarget::stderr()
        } else {
            ProgressDrawTarget::hidden()
        };
        let (bar, template) = match stage {
            Stage::Training => (
                ProgressBar::with_draw_target(Some(self.total_epochs), target),
                "{prefix} {spinner} {wide_bar} {pos}/{len} epochs  {msg}",
            ),
            _ => (
                ProgressBar::with_draw_target(None, target),
                "{prefix} {spinner} {msg}",
            ),
        };
        let style = ProgressStyle::with_template(template).expect("valid template");
        bar.set_style(style);
        bar.set_prefix(format!("[{}] {}", self.name, label(stage)));
        bar.enable_steady_tick(std::time::Duration::from_millis(100));
        bar
    }

    /// Close the running stage, if any, with its duration.
    pub fn finish(&mut self) {
        if let Some((stage, bar, start)) = self.current.take() {
            let secs = start.elapsed().as_secs_f64();
            bar.finish_and_clear();
            eprintln!("[{}] {} done in {secs:.2} s", self.name, label(stage));
        }
    }
}

/// What a stage does, in words.
fn label(stage: Stage) -> &'static str {
    match stage {
        Stage::Training => "training A, C, B",
        Stage::WeightMatching => "weight matching",
        Stage::ActivationMatching => "activation matching",
        Stage::Measuring => "measuring LMC and LLFC",
        Stage::CommutativityMatching => "commutativity matching (3 starts) and measuring",
    }
}

impl Observer for Progress {
    fn stage(&mut self, stage: Stage) {
        self.finish();
        self.current = Some((stage, self.bar(stage), Instant::now()));
    }

    fn epoch(&mut self, model: Model, epoch: usize) {
        if let Some((_, bar, _)) = &self.current {
            bar.inc(1);
            bar.set_message(format!("model {model:?}, epoch {epoch}"));
        }
    }

    fn step(&mut self, what: &str) {
        match &self.current {
            Some((_, bar, _)) if self.interactive => bar.println(format!("[{}] {what}", self.name)),
            _ => eprintln!("[{}] {what}", self.name),
        }
    }

    fn sweep(&mut self, sweep: usize, objective: f64) {
        if let Some((_, bar, _)) = &self.current {
            bar.set_message(format!(
                "sweep {}, ⟨θ_A, π(θ_B)⟩ = {objective:.2}",
                sweep + 1
            ));
        }
    }
}
