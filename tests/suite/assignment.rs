//! Integration tests of `llfc::assignment` through the public API.
//!
//! Tolerances: costs in these tests are O(1) (or integers, summed exactly), and a total is a sum
//! of at most a few thousand such terms, so two optimal totals computed in a different order
//! agree to ~1e-13 relative; `1e-9` (relative, floored at 1) leaves a wide margin while still
//! detecting any suboptimal assignment, whose total differs by at least the smallest nonzero
//! cost gap (≥ 1 for integer costs, typically ≫ 1e-9 for random floats).

use approx::assert_relative_eq;
use llfc::assignment::{
    linear_sum_assignment, linear_sum_assignment_warm, solve_with, Assignment, Candidates,
    LapOptions, Presolve, Solver, Ties,
};
use llfc::Error;
use ndarray::{array, Array2};
use proptest::prelude::*;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

pub(super) const KM: LapOptions = LapOptions {
    solver: Solver::KuhnMunkres,
    presolve: Presolve::Never,
    candidates: Candidates::Never,
    ties: Ties::Any,
};

/// The native solver with its f32 presolve forced on every f64 matrix, whatever its size.
pub(super) const ALWAYS: LapOptions = LapOptions {
    solver: Solver::Native,
    presolve: Presolve::Always,
    candidates: Candidates::Never,
    ties: Ties::Any,
};

/// The native solver without its f32 presolve.
pub(super) const NEVER: LapOptions = LapOptions {
    solver: Solver::Native,
    presolve: Presolve::Never,
    candidates: Candidates::Never,
    ties: Ties::Any,
};

/// Brute force over all injections of the smaller side into the larger one.
pub(super) fn brute_force(c: &Array2<f64>, maximize: bool) -> f64 {
    let t = if c.nrows() > c.ncols() {
        c.t().to_owned()
    } else {
        c.clone()
    };
    let sign = if maximize { -1.0 } else { 1.0 };
    let (r, n) = t.dim();
    let mut cols: Vec<usize> = (0..n).collect();
    let mut best = f64::INFINITY;
    fn rec(
        k: usize,
        r: usize,
        cols: &mut [usize],
        t: &Array2<f64>,
        s: f64,
        acc: f64,
        best: &mut f64,
    ) {
        if k == r {
            *best = best.min(acc);
            return;
        }
        for q in k..cols.len() {
            cols.swap(k, q);
            rec(k + 1, r, cols, t, s, acc + s * t[[k, cols[k]]], best);
            cols.swap(k, q);
        }
    }
    rec(0, r, &mut cols, &t, sign, 0.0, &mut best);
    sign * best
}

/// Check the structural contract of an assignment for a `rows × cols` matrix.
pub(super) fn check_structure(a: &Assignment, c: &Array2<f64>) {
    let (r, n) = c.dim();
    assert_eq!(a.shape, (r, n));
    assert_eq!(a.row_ind.len(), r.min(n));
    assert_eq!(a.col_ind.len(), r.min(n));
    assert!(
        a.row_ind.windows(2).all(|w| w[0] < w[1]),
        "rows sorted and distinct"
    );
    let mut seen = vec![false; n];
    for &j in &a.col_ind {
        assert!(j < n && !seen[j], "columns distinct");
        seen[j] = true;
    }
    let total: f64 = a
        .row_ind
        .iter()
        .zip(&a.col_ind)
        .map(|(&i, &j)| c[[i, j]])
        .sum();
    assert_eq!(a.total, total, "total is the sum of the original entries");
}

/// LP duality certificate of an optimal assignment (see `Assignment`): dual feasibility,
/// complementary slackness, and on the side that may stay unassigned potentials of the right
/// sign, zero where unassigned; all within `t` (the solver keeps them exactly up to the
/// rounding of path lengths, far below `t` for entries of order 1).
pub(super) fn check_duals(a: &Assignment, c: &Array2<f64>, maximize: bool, t: f64) {
    let d = a.duals.as_ref().expect("native solver returns duals");
    let s = if maximize { -1.0 } else { 1.0 };
    for ((i, j), &x) in c.indexed_iter() {
        assert!(
            s * (x - d.u[i] - d.v[j]) >= -t,
            "dual feasibility at ({i}, {j})"
        );
    }
    for (&i, &j) in a.row_ind.iter().zip(&a.col_ind) {
        assert!(
            (c[[i, j]] - d.u[i] - d.v[j]).abs() <= t,
            "slackness at ({i}, {j})"
        );
    }
    let (pots, assigned) = if c.nrows() <= c.ncols() {
        (&d.v, &a.col_ind)
    } else {
        (&d.u, &a.row_ind)
    };
    if c.nrows() != c.ncols() {
        for (k, &p) in pots.iter().enumerate() {
            assert!(s * p <= t, "sign of the potential {k} of the larger side");
            if !assigned.contains(&k) {
                assert_eq!(p, 0.0, "unassigned {k} has a zero potential");
            }
        }
    }
}

pub(super) fn tol(x: f64) -> f64 {
    1e-9 * x.abs().max(1.0)
}

fn matrix(rng: &mut ChaCha8Rng, r: usize, n: usize, kind: u8) -> Array2<f64> {
    Array2::from_shape_fn((r, n), |_| match kind {
        0 => rng.random::<f64>(),
        1 => f64::from(rng.random_range(0..4u8)), // many ties
        _ => f64::from(rng.random_range(-50..50i8)),
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(400))]

    #[test]
    fn equals_brute_force(seed in any::<u64>(), r in 0usize..7, n in 0usize..7, kind in 0u8..3, maximize: bool) {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let c = matrix(&mut rng, r, n, kind);
        let a = linear_sum_assignment(c.view(), maximize).unwrap();
        check_structure(&a, &c);
        let expected = if r == 0 || n == 0 { 0.0 } else { brute_force(&c, maximize) };
        prop_assert!((a.total - expected).abs() <= tol(expected), "{} vs {}", a.total, expected);
        let k = solve_with(c.view(), maximize, &KM).unwrap();
        check_structure(&k, &c);
        prop_assert!((k.total - expected).abs() <= tol(expected));
        let p = solve_with(c.view(), maximize, &ALWAYS).unwrap();
        check_structure(&p, &c);
        prop_assert!((p.total - expected).abs() <= tol(expected));
    }

    #[test]
    fn forbidden_entries_match_brute_force(seed in any::<u64>(), r in 1usize..6, n in 1usize..6, maximize: bool) {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let forbidden = if maximize { f64::NEG_INFINITY } else { f64::INFINITY };
        let c = Array2::from_shape_fn((r, n), |_| {
            if rng.random_bool(0.3) { forbidden } else { f64::from(rng.random_range(0..10u8)) }
        });
        let expected = brute_force(&c, maximize);
        for opts in [LapOptions::default(), KM, ALWAYS] {
            match solve_with(c.view(), maximize, &opts) {
                Ok(a) => {
                    check_structure(&a, &c);
                    prop_assert!(expected.is_finite());
                    prop_assert!((a.total - expected).abs() <= tol(expected));
                }
                Err(Error::Infeasible) => prop_assert!(expected.is_infinite()),
                Err(e) => prop_assert!(false, "unexpected error {e}"),
            }
        }
    }

    #[test]
    fn maximize_is_minimize_of_negation(seed in any::<u64>(), r in 1usize..40, n in 1usize..40) {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let c = matrix(&mut rng, r, n, 0);
        let max = linear_sum_assignment(c.view(), true).unwrap();
        let min = linear_sum_assignment((-&c).view(), false).unwrap();
        prop_assert!((max.total + min.total).abs() <= tol(max.total));
    }
}

#[test]
fn agrees_with_kuhn_munkres_on_integers_up_to_200() -> Result<(), Error> {
    let mut rng = ChaCha8Rng::seed_from_u64(11);
    for &(r, n) in &[
        (200, 200),
        (150, 200),
        (200, 120),
        (97, 97),
        (60, 180),
        (1, 200),
    ] {
        for k in [3i32, 1000, 1_000_000] {
            let c = Array2::from_shape_fn((r, n), |_| f64::from(rng.random_range(-k..k)));
            for maximize in [false, true] {
                let a = linear_sum_assignment(c.view(), maximize)?;
                let b = solve_with(c.view(), maximize, &KM)?;
                check_structure(&a, &c);
                assert_eq!(
                    a.total, b.total,
                    "integer costs: both exact ({r}x{n}, k={k})"
                );
            }
        }
    }
    Ok(())
}

/// Matrices where a few rows own every column minimum (dominant rows, like activation
/// statistics of biased units): column reduction leaves > 90 % of the rows free and the native
/// solver restarts its row reduction from zero potentials. Exact against Kuhn–Munkres on
/// integers; small 7 × 7 ones with one dominant row (just under the threshold, so the ordinary
/// path) against brute force.
#[test]
fn dominant_rows_take_the_fallback_path_and_stay_exact() -> Result<(), Error> {
    let mut rng = ChaCha8Rng::seed_from_u64(21);
    for &n in &[31usize, 64, 150, 200] {
        for dominant in [1usize, 3] {
            let c = Array2::from_shape_fn((n, n), |(i, _)| {
                let x = f64::from(rng.random_range(0..50i32));
                if i < dominant {
                    x - 1000.0
                } else {
                    x + 10.0 * (i % 7) as f64
                }
            });
            for maximize in [false, true] {
                // Maximisation of the negation: the dominant rows own every column maximum.
                let c = if maximize { c.mapv(|x| -x) } else { c.clone() };
                let a = linear_sum_assignment(c.view(), maximize)?;
                let b = solve_with(c.view(), maximize, &KM)?;
                check_structure(&a, &c);
                assert_eq!(a.total, b.total, "n={n} dominant={dominant} max={maximize}");
            }
        }
    }
    for seed in 0..50u64 {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let n = 7;
        let c = Array2::from_shape_fn((n, n), |(i, _)| {
            rng.random::<f64>() + if i == 0 { -5.0 } else { 0.0 }
        });
        let a = linear_sum_assignment(c.view(), false)?;
        check_structure(&a, &c);
        assert!((a.total - brute_force(&c, false)).abs() <= tol(a.total));
    }
    Ok(())
}

#[test]
fn agrees_with_kuhn_munkres_on_floats_within_its_bound() -> Result<(), Error> {
    let mut rng = ChaCha8Rng::seed_from_u64(12);
    for &(r, n) in &[(200, 200), (120, 200), (200, 150)] {
        let c = Array2::from_shape_fn((r, n), |_| rng.random::<f64>() * 100.0 - 30.0);
        let a = linear_sum_assignment(c.view(), false)?;
        let b = solve_with(c.view(), false, &KM)?;
        // Documented bound: n · s with K = ⌊2^60 / (n (n+1))⌋, s = 2^⌈log2(range / K)⌉.
        let m = r.min(n) as f64;
        let range =
            c.fold(f64::NEG_INFINITY, |a, &b| a.max(b)) - c.fold(f64::INFINITY, |a, &b| a.min(b));
        let k = (2f64.powi(60) / (m * (m + 1.0))).floor();
        let step = 2f64.powf((range / k).log2().ceil());
        assert!(b.total >= a.total - tol(a.total), "native is optimal");
        assert!(
            b.total - a.total <= m * step + tol(a.total),
            "KM within its bound"
        );
    }
    Ok(())
}

/// Dual feasibility and complementary slackness on random 1000 × 1000 matrices.
///
/// Tolerance `1e-10 · max|c|`: each potential changes once per augmentation with a rounding
/// error of at most one ulp of values bounded by a small multiple of `max|c|`, so after
/// n = 1000 augmentations the drift is below `1000 · 2^-52 · O(1) · max|c| ≈ 2e-13 · max|c|`.
#[test]
fn optimality_certificate_1000() -> Result<(), Error> {
    let mut rng = ChaCha8Rng::seed_from_u64(13);
    for (n, maximize, opts) in [
        (1000, false, LapOptions::default()),
        (1000, true, LapOptions::default()),
        (1000, false, ALWAYS),
        (1000, true, ALWAYS),
    ] {
        let c = Array2::from_shape_fn((n, n), |_| rng.random::<f64>());
        let a = solve_with(c.view(), maximize, &opts)?;
        let d = a.duals.as_ref().expect("native solver returns duals");
        let t = 1e-10;
        let s = if maximize { -1.0 } else { 1.0 };
        for i in 0..n {
            for j in 0..n {
                assert!(
                    s * (c[[i, j]] - d.u[i] - d.v[j]) >= -t,
                    "dual feasibility at ({i}, {j})"
                );
            }
            let j = a.col_ind[i];
            assert!(
                (c[[i, j]] - d.u[i] - d.v[j]).abs() <= t,
                "complementary slackness row {i}"
            );
        }
        let dual: f64 = d.u.iter().sum::<f64>() + d.v.iter().sum::<f64>();
        assert_relative_eq!(dual, a.total, max_relative = 1e-9);
        assert!(a.permutation().is_some());
    }
    Ok(())
}

#[test]
fn rectangular_duals_certify_too() -> Result<(), Error> {
    let mut rng = ChaCha8Rng::seed_from_u64(14);
    for (r, n) in [(50, 80), (80, 50)] {
        let c = Array2::from_shape_fn((r, n), |_| rng.random::<f64>());
        let a = linear_sum_assignment(c.view(), false)?;
        let d = a.duals.as_ref().unwrap();
        for i in 0..r {
            for j in 0..n {
                assert!(c[[i, j]] - d.u[i] - d.v[j] >= -1e-12);
            }
        }
        // The side that may stay unassigned has non-positive potentials, zero where unassigned.
        let (pots, assigned) = if r <= n {
            (&d.v, &a.col_ind)
        } else {
            (&d.u, &a.row_ind)
        };
        for (k, &p) in pots.iter().enumerate() {
            assert!(p <= 1e-12);
            if !assigned.contains(&k) {
                assert_eq!(p, 0.0);
            }
        }
        assert_relative_eq!(
            d.u.iter().sum::<f64>() + d.v.iter().sum::<f64>(),
            a.total,
            max_relative = 1e-12
        );
    }
    Ok(())
}

#[test]
fn warm_start_is_exact_on_perturbed_matrices() -> Result<(), Error> {
    let mut rng = ChaCha8Rng::seed_from_u64(15);
    for &(r, n, maximize) in &[
        (300, 300, true),
        (300, 300, false),
        (200, 260, true),
        (260, 200, false),
    ] {
        let c = Array2::from_shape_fn((r, n), |_| rng.random::<f64>());
        let mut prev = linear_sum_assignment(c.view(), maximize)?;
        for eps in [1e-6, 1e-3, 1e-1, 1.0] {
            let c2 = c.mapv(|x| x + eps * (rng.random::<f64>() - 0.5));
            let warm = linear_sum_assignment_warm(c2.view(), maximize, &prev)?;
            let cold = linear_sum_assignment(c2.view(), maximize)?;
            check_structure(&warm, &c2);
            check_duals(&warm, &c2, maximize, 1e-12);
            assert!(
                (warm.total - cold.total).abs() <= tol(cold.total),
                "eps {eps}"
            );
            prev = warm;
        }
    }
    // A stale warm start from an unrelated matrix only costs time.
    let a = Array2::from_shape_fn((100, 100), |_| rng.random::<f64>());
    let b = Array2::from_shape_fn((100, 100), |_| rng.random::<f64>() * 1e3 - 7.0);
    let pa = linear_sum_assignment(a.view(), false)?;
    let warm = linear_sum_assignment_warm(b.view(), false, &pa)?;
    assert_relative_eq!(
        warm.total,
        linear_sum_assignment(b.view(), false)?.total,
        max_relative = 1e-9
    );
    Ok(())
}

#[test]
fn warm_start_rejects_bad_previous() {
    let c = array![[1.0, 2.0], [3.0, 4.0]];
    let other = linear_sum_assignment(array![[1.0, 2.0, 3.0]].view(), false).unwrap();
    assert!(matches!(
        linear_sum_assignment_warm(c.view(), false, &other),
        Err(Error::ShapeMismatch { .. })
    ));
    let km = solve_with(c.view(), false, &KM).unwrap();
    assert!(km.duals.is_none());
    assert!(matches!(
        linear_sum_assignment_warm(c.view(), false, &km),
        Err(Error::InvalidArgument { .. })
    ));
    let mut bad = linear_sum_assignment(c.view(), false).unwrap();
    bad.duals.as_mut().unwrap().v[0] = f64::NAN;
    assert!(matches!(
        linear_sum_assignment_warm(c.view(), false, &bad),
        Err(Error::NonFinite { .. })
    ));
}

#[test]
fn bad_inputs_are_errors() {
    let nan = array![[1.0, f64::NAN], [0.0, 1.0]];
    let inf = f64::INFINITY;
    for opts in [LapOptions::default(), KM] {
        let run = |c: &Array2<f64>, max: bool| solve_with(c.view(), max, &opts);
        assert!(matches!(run(&nan, false), Err(Error::NonFinite { .. })));
        assert!(matches!(run(&nan, true), Err(Error::NonFinite { .. })));
        // The opposite infinity is invalid (SciPy: "matrix contains invalid numeric entries").
        assert!(matches!(
            run(&array![[1.0, -inf], [0.0, 1.0]], false),
            Err(Error::NonFinite { .. })
        ));
        assert!(matches!(
            run(&array![[1.0, inf], [0.0, 1.0]], true),
            Err(Error::NonFinite { .. })
        ));
        // Infeasible patterns.
        assert!(matches!(
            run(&array![[inf, inf], [0.0, 1.0]], false),
            Err(Error::Infeasible)
        ));
        assert!(matches!(
            run(&array![[inf, 1.0], [inf, 1.0]], false),
            Err(Error::Infeasible)
        ));
        assert!(matches!(
            run(&array![[-inf, 1.0], [-inf, 2.0]], true),
            Err(Error::Infeasible)
        ));
        assert!(matches!(
            run(&array![[1.0, inf, inf], [2.0, inf, inf]], false),
            Err(Error::Infeasible)
        ));
        assert!(matches!(
            run(&array![[inf], [inf], [inf]], false),
            Err(Error::Infeasible)
        ));
        // Feasible with forbidden pairs: the only finite assignment is the anti-diagonal.
        let a = run(&array![[inf, 2.0], [3.0, inf]], false).unwrap();
        assert_eq!((a.col_ind.clone(), a.total), (vec![1, 0], 5.0));
    }
}

#[test]
fn empty_matrices_give_empty_assignments() -> Result<(), Error> {
    for (r, n) in [(0, 0), (0, 3), (3, 0)] {
        let c = Array2::<f64>::zeros((r, n));
        for opts in [LapOptions::default(), KM, ALWAYS] {
            let a = solve_with(c.view(), false, &opts)?;
            assert!(a.row_ind.is_empty() && a.col_ind.is_empty());
            assert_eq!(a.total, 0.0);
            assert_eq!(a.shape, (r, n));
        }
    }
    assert_eq!(
        linear_sum_assignment(Array2::<f64>::zeros((0, 0)).view(), false)?
            .permutation()
            .map(|p| p.len()),
        Some(0)
    );
    Ok(())
}

#[test]
fn more_rows_than_columns_assigns_every_column() -> Result<(), Error> {
    let c = array![[5.0, 1.0], [0.0, 9.0], [2.0, 0.5], [7.0, 7.0]];
    let a = linear_sum_assignment(c.view(), false)?;
    assert_eq!(a.row_ind, vec![1, 2]);
    assert_eq!(a.col_ind, vec![0, 1]);
    assert_eq!(a.total, 0.5);
    assert_eq!(a.row_to_col(), vec![None, Some(0), Some(1), None]);
    assert_eq!(a.col_of_row(2), Some(1));
    assert_eq!(a.col_of_row(0), None);
    assert!(a.permutation().is_none());
    let d = a.duals.as_ref().unwrap();
    assert_eq!((d.u.len(), d.v.len()), (4, 2));
    Ok(())
}

#[test]
fn degenerate_values_never_panic_or_hang() -> Result<(), Error> {
    let n = 300;
    for value in [
        0.0,
        -0.0,
        1.0,
        1e300,
        -1e300,
        1e-300,
        f64::MAX,
        f64::MIN_POSITIVE,
    ] {
        let c = Array2::from_elem((n, n), value);
        let a = linear_sum_assignment(c.view(), false)?;
        assert!(a.permutation().is_some());
        // f64::MAX overflows f32 (the presolve is skipped); 1e-300 rounds to 0 in f32.
        assert!(solve_with(c.view(), true, &ALWAYS)?.permutation().is_some());
        let b = linear_sum_assignment(Array2::from_elem((n / 2, n), value).view(), true)?;
        assert_eq!(b.row_ind.len(), n / 2);
    }
    // Huge and tiny magnitudes mixed: the optimum must still be found.
    let mut rng = ChaCha8Rng::seed_from_u64(16);
    for scale in [1e300, 1e-300, 5e305] {
        let c = matrix(&mut rng, 6, 6, 2).mapv(|x| x * scale);
        let expected = brute_force(&c, false);
        for opts in [LapOptions::default(), ALWAYS] {
            let a = solve_with(c.view(), false, &opts)?;
            assert!(
                (a.total - expected).abs() <= 1e-9 * expected.abs(),
                "scale {scale}, {opts:?}"
            );
        }
    }
    let extreme = array![[f64::MAX, -f64::MAX], [-f64::MAX, f64::MAX]];
    assert_eq!(
        linear_sum_assignment(extreme.view(), false)?.col_ind,
        vec![1, 0]
    );
    assert_eq!(
        linear_sum_assignment(extreme.view(), true)?.col_ind,
        vec![0, 1]
    );
    Ok(())
}

/// Integers plus perturbations of `1e-9` that f32 cannot represent (half an ulp of 1 in f32 is
/// `6e-8`): the f32 presolve sees only ties, and the exact phase must still find the optimum
/// of the perturbations. Optimal totals agree to `1e-12` (sums of 120 terms below 4, rounded
/// in f64 to ~1e-13), while missing the optimum costs a multiple of `~1e-10`.
#[test]
fn the_f32_presolve_never_changes_the_optimum() -> Result<(), Error> {
    let mut rng = ChaCha8Rng::seed_from_u64(18);
    for (r, n) in [(120, 120), (60, 120), (120, 60)] {
        for maximize in [false, true] {
            let c = Array2::from_shape_fn((r, n), |_| {
                f64::from(rng.random_range(0..4u8)) + 1e-9 * rng.random::<f64>()
            });
            let exact = solve_with(c.view(), maximize, &NEVER)?;
            let presolved = solve_with(c.view(), maximize, &ALWAYS)?;
            check_structure(&presolved, &c);
            check_duals(&presolved, &c, maximize, 1e-12);
            assert!(
                (presolved.total - exact.total).abs() <= 1e-12,
                "{r}x{n}, maximize {maximize}: {} vs {}",
                presolved.total,
                exact.total
            );
        }
    }
    // `Presolve::Auto` at its threshold (2^23 entries), rectangular: same optimum as without.
    let c = Array2::from_shape_fn((1024, 8192), |_| rng.random::<f64>());
    assert_eq!(c.len(), Presolve::AUTO_MIN_ENTRIES);
    let auto = linear_sum_assignment(c.view(), false)?;
    let never = solve_with(c.view(), false, &NEVER)?;
    check_structure(&auto, &c);
    assert_relative_eq!(auto.total, never.total, max_relative = 1e-12);
    Ok(())
}

#[test]
fn f32_input_matches_f64() -> Result<(), Error> {
    let mut rng = ChaCha8Rng::seed_from_u64(17);
    let c32 = Array2::from_shape_fn((150, 170), |_| rng.random::<f32>());
    let c64 = c32.mapv(f64::from);
    for maximize in [false, true] {
        let a = linear_sum_assignment(c32.view(), maximize)?;
        let b = linear_sum_assignment(c64.view(), maximize)?;
        assert_relative_eq!(a.total, b.total, max_relative = 1e-12);
    }
    Ok(())
}

#[test]
fn non_standard_layouts_are_handled() -> Result<(), Error> {
    let mut rng = ChaCha8Rng::seed_from_u64(18);
    let c = Array2::from_shape_fn((40, 60), |_| rng.random::<f64>());
    let reference = linear_sum_assignment(c.view(), false)?;
    let fortran = c.t().as_standard_layout().to_owned();
    let a = linear_sum_assignment(fortran.t(), false)?; // a column-major view of `c`
    assert_eq!(a.total, reference.total);
    let strided = Array2::from_shape_fn(
        (40, 120),
        |(i, j)| if j % 2 == 0 { c[[i, j / 2]] } else { -1.0 },
    );
    let b = linear_sum_assignment(strided.slice(ndarray::s![.., ..;2]), false)?;
    assert_eq!(b.total, reference.total);
    Ok(())
}

/// `Ties::Scipy` returns SciPy's identity on constant matrices (SciPy's issue 11602), square
/// and rectangular both ways, below and above the direct-replay size (where the native solve's
/// certificate detects the ties).
#[test]
fn scipy_ties_give_the_identity_on_constant_matrices() -> llfc::Result<()> {
    let opts = LapOptions {
        ties: Ties::Scipy,
        ..LapOptions::default()
    };
    for (r, c) in [(8, 8), (5, 9), (9, 5), (300, 300), (200, 260)] {
        let m = Array2::<f64>::from_elem((r, c), 1.0);
        for maximize in [false, true] {
            let a = solve_with(m.view(), maximize, &opts)?;
            let k = r.min(c);
            assert_eq!(a.row_ind, (0..k).collect::<Vec<_>>(), "{r}x{c}");
            assert_eq!(a.col_ind, (0..k).collect::<Vec<_>>(), "{r}x{c}");
        }
    }
    Ok(())
}

/// `Ties::Scipy` is as optimal as the default on tie-heavy integer matrices (replayed), and
/// returns the default's assignment where the optimum is unique (continuous costs).
#[test]
fn scipy_ties_are_optimal_and_keep_unique_optima() -> llfc::Result<()> {
    let opts = LapOptions {
        ties: Ties::Scipy,
        ..LapOptions::default()
    };
    let mut rng = ChaCha8Rng::seed_from_u64(7);
    for &(r, c) in &[(150, 150), (140, 170), (170, 140)] {
        let ints = Array2::from_shape_fn((r, c), |_| f64::from(rng.random_range(0..6u8)));
        let a = solve_with(ints.view(), false, &opts)?;
        let b = linear_sum_assignment(ints.view(), false)?;
        assert_eq!(a.total, b.total, "integer totals are exact");
        let cont = Array2::from_shape_fn((r, c), |_| rng.random::<f64>());
        let a = solve_with(cont.view(), true, &opts)?;
        let b = linear_sum_assignment(cont.view(), true)?;
        assert_eq!((a.row_ind, a.col_ind), (b.row_ind, b.col_ind));
    }
    Ok(())
}
