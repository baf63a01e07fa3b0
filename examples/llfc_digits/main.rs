//! The LLFC paper's findings on real data, in well under a minute:
//! `cargo run --release --example llfc_digits [-- OUTPUT_DIR]`.
//!
//! On the bundled UCI digits (8×8 images, fixed train/test split; `llfc::data::digits`), for a
//! deep 64-128-128-128-10 and a wide 64-512-512-10 ReLU MLP (f32), it trains
//! - an independent pair (A, B): different initialisations and data orders, and
//! - a spawned pair (A, C): C shares A's first epochs (initialisation, batches and momentum)
//!   and then continues with its own data order (Frankle et al. 2020),
//!
//! aligns B to A by weight matching and by activation matching (Ainsworth et al. 2023, Git
//! Re-Basin), and prints per architecture: the endpoints' test accuracy, the loss and error
//! barriers of the naive, weight-matched, activation-matched and spawned pairs, the LLFC
//! distance `E[1 − cos_α]` of every layer next to its baseline, and the weak-additivity and
//! commutativity residuals (Zhou et al. 2023). It then aligns B by commutativity matching
//! (`llfc::matching::commutativity`, from the identity, weight- and activation-matching
//! starts) and compares the objective `J`, the residuals, LLFC and the barriers of all the
//! alignments of B, and shows what REPAIR (Jordan et al. 2023) of θ(α) does to the barriers
//! and to LLFC of the naive and matched pairs, and the exact attribution of each layer's LLFC
//! deviation to its sources. SVG plots go to `$CARGO_TARGET_DIR/llfc_digits/`
//! (`target/llfc_digits/` when `CARGO_TARGET_DIR` is unset, or the directory given as the first
//! argument). Training is seeded and deterministic.

mod attribution;
mod commutativity;
mod experiment;
mod plots;
mod progress;
mod repair;
mod table;

use std::error::Error;
use std::path::PathBuf;

use llfc::mlp::SgdConfig;

use experiment::{run, Observer, Real, Setup, Stage};
use progress::Progress;

/// Points of the α grid of the LMC curves and LLFC measurements (0, 0.05, …, 1).
const GRID_POINTS: usize = 21;

/// The training recipe shared by both architectures: plain SGD with momentum at a constant
/// learning rate; the number of epochs is set per architecture.
const SGD: SgdConfig = SgdConfig {
    learning_rate: 0.05,
    momentum: 0.9,
    weight_decay: 0.0,
    nesterov: false,
    batch_size: 32,
    epochs: 0,
};

/// The two architectures and their epochs: enough for ≈ 97 % test accuracy (the deeper,
/// narrower network needs more). Training much longer makes the endpoints agree ever more at
/// the logits, which shrinks the logits' baseline faster than the matched pairs'
/// `E[1 − cos_α]` (see the README). C is spawned after 2 epochs.
fn setups() -> Vec<Setup> {
    [
        (vec![64, 128, 128, 128, 10], 15),
        (vec![64, 512, 512, 10], 10),
    ]
    .into_iter()
    .map(|(widths, epochs)| Setup {
        widths,
        sgd: SgdConfig { epochs, ..SGD },
        spawn_epoch: 2,
        seed: 0,
    })
    .collect()
}

/// The output directory: the first argument, or `llfc_digits/` in Cargo's target directory
/// (`$CARGO_TARGET_DIR` when set, else `target/`).
fn output_dir() -> PathBuf {
    std::env::args_os().nth(1).map_or_else(
        || {
            std::env::var_os("CARGO_TARGET_DIR")
                .map_or_else(|| PathBuf::from("target"), PathBuf::from)
                .join("llfc_digits")
        },
        PathBuf::from,
    )
}

fn main() -> Result<(), Box<dyn Error>> {
    let dir = output_dir();
    let data = llfc::data::digits::<Real>();
    let alphas = llfc::lmc::uniform_grid(GRID_POINTS)?;
    println!(
        "UCI digits: {} training / {} test samples (fixed split), 10 classes\n",
        data.y_train.len(),
        data.y_test.len()
    );
    for setup in setups() {
        let mut progress = Progress::new(&setup);
        let outcome = run(&setup, &data, &alphas, &mut progress)?;
        // REPAIR needs nothing from commutativity matching: it runs alongside, on the cores
        // the descents leave idle.
        let (rows, repairs) = rayon::join(
            || commutativity::compare(&setup, &data, &alphas, &outcome, &mut progress),
            || repair::compare(&data, &alphas, &outcome),
        );
        let (rows, repairs) = (rows?, repairs?);
        progress.stage(Stage::Attribution);
        let attributions = attribution::compute(&data, &outcome, &rows)?;
        progress.finish();
        table::print_outcome(&setup, &outcome, GRID_POINTS);
        commutativity::print(&setup, &rows);
        repair::print(&setup, &repairs);
        attribution::print(&setup, &attributions);
        for path in plots::write_plots(&setup, &outcome, &dir)? {
            println!("plot: {}", path.display());
        }
        let path = attribution::plot(&setup, &attributions, &dir)?;
        println!("plot: {}", path.display());
        println!();
    }
    table::print_legend();
    Ok(())
}
