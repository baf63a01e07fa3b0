//! The crate's error type.
//!
//! Every fallible function of `llfc` returns [`Result<T>`], whose error is the single
//! [`Error`] enum below. Variants are structured (they carry the parameter, axis, shapes or file
//! involved) so that callers can react programmatically and users get a precise message.

use std::path::PathBuf;

/// Result alias used throughout the crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong in `llfc`.
///
/// The enum is `#[non_exhaustive]`: new variants may be added in minor releases.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Two arrays (or an array and an expectation) disagree in shape.
    #[error("shape mismatch in {what}: expected {expected:?}, found {found:?}")]
    ShapeMismatch {
        /// What was being compared (a parameter name, an argument name, ...).
        what: String,
        /// The expected shape.
        expected: Vec<usize>,
        /// The shape that was found.
        found: Vec<usize>,
    },
    /// A value is NaN or infinite where only finite values are allowed.
    #[error("non-finite value (NaN or infinity) in {what}")]
    NonFinite {
        /// Where the value was found.
        what: String,
    },
    /// An input that must not be empty is empty.
    #[error("empty input: {what}")]
    EmptyInput {
        /// What was empty.
        what: String,
    },
    /// A permutation entry lies outside `0..len`.
    #[error("invalid permutation: entry {index} is {value}, outside 0..{len}")]
    PermutationOutOfRange {
        /// Position of the offending entry.
        index: usize,
        /// The offending value.
        value: usize,
        /// Length of the permutation.
        len: usize,
    },
    /// A permutation maps two positions to the same value.
    #[error("invalid permutation: value {value} appears at positions {first} and {second}")]
    PermutationDuplicate {
        /// The repeated value.
        value: usize,
        /// First position holding it.
        first: usize,
        /// Second position holding it.
        second: usize,
    },
    /// An axis index is beyond an array's rank.
    #[error("axis {axis} of `{what}` is out of range for an array of rank {rank}")]
    AxisOutOfRange {
        /// The array (parameter) concerned.
        what: String,
        /// The requested axis.
        axis: usize,
        /// The array's number of dimensions.
        rank: usize,
    },
    /// A permutation's length does not match the size of the axis it acts on.
    #[error(
        "permutation `{perm}` has length {perm_len}, but axis {axis} of `{param}` has size {axis_len}"
    )]
    PermutationLength {
        /// Permutation name.
        perm: String,
        /// Parameter name.
        param: String,
        /// Axis of the parameter.
        axis: usize,
        /// Length of the permutation.
        perm_len: usize,
        /// Size of the axis.
        axis_len: usize,
    },
    /// A parameter named in a permutation spec (or in another parameter set) is missing.
    #[error("parameter `{param}` is required but missing from {context}")]
    MissingParam {
        /// The missing parameter name.
        param: String,
        /// Where it was looked for.
        context: String,
    },
    /// A parameter is present in one set but unexpected in another.
    #[error("parameter `{param}` is not expected in {context}")]
    UnexpectedParam {
        /// The unexpected parameter name.
        param: String,
        /// The set in which it is unexpected.
        context: String,
    },
    /// A spec (or a model such as `mlp`) expects a different number of axes for a parameter
    /// than the tensor has.
    #[error("`{param}` is expected to have {spec_rank} axes (by the spec or the model), but the tensor has rank {rank}")]
    RankMismatch {
        /// Parameter name.
        param: String,
        /// Number of axes expected.
        spec_rank: usize,
        /// Rank of the tensor.
        rank: usize,
    },
    /// Two axes governed by the same permutation have different sizes.
    #[error(
        "permutation `{perm}` acts on axis {first_axis} of `{first_param}` (size {first_len}) \
         and on axis {second_axis} of `{second_param}` (size {second_len})"
    )]
    InconsistentPermutationSize {
        /// Permutation name.
        perm: String,
        /// First parameter using it.
        first_param: String,
        /// Axis of the first parameter.
        first_axis: usize,
        /// Size of that axis.
        first_len: usize,
        /// Second parameter using it.
        second_param: String,
        /// Axis of the second parameter.
        second_axis: usize,
        /// Size of that axis.
        second_len: usize,
    },
    /// A permutation name is required (by a spec) but none was supplied, or one was supplied that
    /// the spec does not know.
    #[error("permutation `{perm}` {problem}")]
    PermutationName {
        /// Permutation name.
        perm: String,
        /// What is wrong with it.
        problem: String,
    },
    /// A permutation of a spec is applied to the output (produced) axis of some parameter but
    /// no parameter consumes it (or the reverse): permuting B with it changes the function.
    #[error("permutation `{perm}` is {problem} (first use: axis {axis} of `{param}`)")]
    UnbalancedPermutation {
        /// Permutation name.
        perm: String,
        /// `"produced but never consumed"` or `"consumed but never produced"`, or for an
        /// attention query/key permutation `"consumed by a parameter"`.
        problem: String,
        /// A parameter that uses it.
        param: String,
        /// The axis of that parameter.
        axis: usize,
    },
    /// One permutation acts on two axes of one tensor without being declared recurrent.
    #[error(
        "permutation `{perm}` acts on axes {first_axis} and {second_axis} of `{param}`; \
         declare it `recurrent` if that is intended"
    )]
    RepeatedPermutation {
        /// Permutation name (or the permutation it is tied to through `embeds`).
        perm: String,
        /// Parameter name.
        param: String,
        /// First axis.
        first_axis: usize,
        /// Second axis.
        second_axis: usize,
    },
    /// The segments of a segmented axis do not add up to the axis size.
    #[error("the segments of axis {axis} of `{param}` add up to {segments_len}, but the axis has size {axis_len}")]
    SegmentMismatch {
        /// Parameter name.
        param: String,
        /// The segmented axis.
        axis: usize,
        /// Sum of the segment sizes.
        segments_len: usize,
        /// Size of the axis.
        axis_len: usize,
    },
    /// Structured permutations (heads, ties, embeddings) declared inconsistently, or a
    /// permutation that does not have the structure its declaration requires.
    #[error("structured permutation `{perm}`: {reason}")]
    Structure {
        /// Permutation name.
        perm: String,
        /// What is wrong.
        reason: String,
    },
    /// A spec is malformed on its own (independently of any parameters).
    #[error("invalid permutation spec: {reason}")]
    InvalidSpec {
        /// Why it is invalid.
        reason: String,
    },
    /// An argument value is out of its documented domain.
    #[error("invalid argument `{name}`: {reason}")]
    InvalidArgument {
        /// Argument name.
        name: &'static str,
        /// Why it is invalid.
        reason: String,
    },
    /// A matrix has a lower numerical rank than an operation needs (e.g. the top-`k` singular
    /// subspace of a weight of rank below `k`, or an unregularised covariance that is singular).
    #[error("{what} has numerical rank {rank}, but {required} is required")]
    RankDeficient {
        /// The matrix concerned.
        what: String,
        /// Its numerical rank.
        rank: usize,
        /// The rank the operation needs.
        required: usize,
    },
    /// A LAPACK routine failed (e.g. an SVD that did not converge).
    #[error("linear algebra failed on {what}: {reason}")]
    LinearAlgebra {
        /// The matrix concerned.
        what: String,
        /// The backend's message.
        reason: String,
    },
    /// A linear assignment problem has no assignment of finite total cost.
    #[error("infeasible assignment: no complete assignment with finite cost exists")]
    Infeasible,
    /// An operating-system I/O error while reading or writing a file.
    #[error("I/O error on `{}`: {source}", path.display())]
    Io {
        /// The file concerned.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// A permuted model computes a different function: the spec is not a symmetry of the model
    /// (see [`crate::spec::check_invariance`]).
    #[error(
        "the permuted model computes a different function: max |Δoutput| = {max_abs_diff:.3e} > tolerance {tol:.1e}{}",
        if broken.is_empty() { String::new() } else { format!(" (broken by permutation(s) {})", broken.join(", ")) }
    )]
    NotInvariant {
        /// Largest absolute output difference with all permutations applied.
        max_abs_diff: f64,
        /// The tolerance.
        tol: f64,
        /// The permutations that change the output on their own.
        broken: Vec<String>,
    },
    /// A file is malformed (truncated, corrupted, wrong dtype, unexpected layout).
    #[error("malformed file `{}`{}: {reason}", path.display(), key.as_ref().map(|k| format!(" (key `{k}`)")).unwrap_or_default())]
    Format {
        /// The file concerned.
        path: PathBuf,
        /// The entry inside the file, if any.
        key: Option<String>,
        /// What is wrong.
        reason: String,
    },
}

/// `text` fit for a one-line message: control characters escaped, at most `max` characters
/// kept (then `…` and the number of characters left out). Errors quote what a file contains
/// through it.
#[cfg_attr(not(any(feature = "io", feature = "serde")), allow(dead_code))]
pub(crate) fn clip(text: &str, max: usize) -> String {
    let mut out = String::new();
    let mut chars = text.chars();
    for c in chars.by_ref().take(max) {
        if c.is_control() {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    let rest = chars.count();
    if rest > 0 {
        out.push_str(&format!("… ({rest} more characters)"));
    }
    out
}
