//! The integration test suite, through the public API only: one test binary (one link) for
//! every area, each area a module of its own.

mod align_cli;
mod align_structured;
mod assignment;
mod commutativity_matching;
mod io;
mod llfc_report_cli;
mod lmc;
mod matching;
mod matching_structured;
mod metrics;
mod mlp;
mod params;
mod permutation;
mod resnet_option_a;
mod science;
mod spec;
mod spec_structured;
mod spec_transformer;
