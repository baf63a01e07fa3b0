//! The integration test suite, through the public API only: one test binary (one link) for
//! every area, each area a module of its own.

mod align_check_cli;
mod align_cli;
mod assignment;
#[path = "../../examples/common/cnn.rs"]
mod cnn;
mod commutativity_matching;
mod io;
mod llfc_report_cli;
mod lmc;
mod matching;
mod metrics;
mod mlp;
mod params;
mod permutation;
mod science;
mod spec;
mod spec_builtins;
mod spec_check;
mod spec_generator;
