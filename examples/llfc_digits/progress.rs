//! Progress of the experiment on stderr: an `indicatif` bar per stage on a terminal, one plain
//! line per finished stage otherwise (pipes, CI logs), so stdout carries only the tables. Each
//! finished stage reports its wall time and, on Linux, the CPU time of the whole process (all
//! threads, user + system) it took: on a shared machine the wall time says little.

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
    /// The running stage, its bar, its start time and the process's CPU time then.
    current: Option<(Stage, ProgressBar, Instant, Option<f64>)>,
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
        if let Some((stage, bar, start, cpu_start)) = self.current.take() {
            let secs = start.elapsed().as_secs_f64();
            let cpu = cpu_seconds()
                .zip(cpu_start)
                .map_or(String::new(), |(now, then)| {
                    format!(" (CPU {:.2} s)", now - then)
                });
            bar.finish_and_clear();
            eprintln!("[{}] {} done in {secs:.2} s{cpu}", self.name, label(stage));
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
        Stage::CommutativityMatching => {
            "commutativity matching (3 starts) and REPAIR (3 paths), measuring both"
        }
        Stage::Attribution => "LLFC error attribution",
    }
}

/// CPU time of this process so far (every thread, user + system), in seconds, from
/// `/proc/self/stat` (fields 14 and 15, in the kernel's fixed `USER_HZ` = 100 ticks per
/// second); `None` where that file does not exist (not Linux).
fn cpu_seconds() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // The command name (field 2) is parenthesised and may hold spaces: count after it.
    let rest = &stat[stat.rfind(')')? + 2..];
    let mut fields = rest.split_ascii_whitespace().skip(11);
    let (utime, stime): (u64, u64) = (fields.next()?.parse().ok()?, fields.next()?.parse().ok()?);
    #[allow(clippy::cast_precision_loss)]
    Some((utime + stime) as f64 / 100.0)
}

impl Observer for Progress {
    fn stage(&mut self, stage: Stage) {
        self.finish();
        self.current = Some((stage, self.bar(stage), Instant::now(), cpu_seconds()));
    }

    fn epoch(&mut self, model: Model, epoch: usize) {
        if let Some((_, bar, ..)) = &self.current {
            bar.inc(1);
            bar.set_message(format!("model {model:?}, epoch {epoch}"));
        }
    }

    fn step(&mut self, what: &str) {
        match &self.current {
            Some((_, bar, ..)) if self.interactive => {
                bar.println(format!("[{}] {what}", self.name))
            }
            _ => eprintln!("[{}] {what}", self.name),
        }
    }

    fn sweep(&mut self, sweep: usize, objective: f64) {
        if let Some((_, bar, ..)) = &self.current {
            bar.set_message(format!(
                "sweep {}, ⟨θ_A, π(θ_B)⟩ = {objective:.2}",
                sweep + 1
            ));
        }
    }
}
