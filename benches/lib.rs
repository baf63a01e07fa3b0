//! The criterion benchmarks of `llfc` (`matching.rs`, `assignment.rs`, `metrics.rs`), a package
//! of their own so that the library's `cargo test` never builds criterion. Run them from the repository root:
//!
//! ```sh
//! cargo bench -p llfc-bench --bench matching
//! cargo bench -p llfc-bench --bench assignment
//! cargo bench -p llfc-bench --bench metrics
//! ```
