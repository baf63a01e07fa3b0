//! The integration test suite, through the public API only: one test binary (one link) for
//! every area, each area a module of its own.

mod align_cli;
mod assignment;
mod attribution;
mod attribution_scale;
mod cli_support;
mod commutativity_matching;
mod io;
mod io_hardening;
mod lap_cli;
mod llfc_report_attribution;
mod llfc_report_cli;
mod lmc;
mod matching;
mod metrics;
mod mlp;
mod params;
mod permutation;
mod reliability;
mod repair;
mod repair_cli;
mod science;
mod spec;
