//! The integration test suite, through the public API only: one test binary (one link) for
//! every area, each area a module of its own.

mod activation_api;
mod activation_stats;
mod align_check_cli;
mod align_cli;
mod align_structured;
mod assignment;
mod assignment_auction;
mod assignment_sparse;
mod attribution;
mod attribution_scale;
mod cli_support;
#[path = "../../examples/common/cnn.rs"]
mod cnn;
mod commutativity_matching;
mod io;
mod io_hardening;
mod lap_cli;
mod linalg;
mod llfc_report_attribution;
mod llfc_report_cli;
mod lmc;
mod matching;
mod matching_structured;
mod metrics;
mod mlp;
mod params;
mod permutation;
mod reliability;
mod repair;
mod repair_cli;
mod resnet_option_a;
mod science;
mod spec;
mod spec_builtins;
mod spec_check;
mod spec_generator;
mod spec_structured;
mod spec_transformer;
mod spec_views_structured;
