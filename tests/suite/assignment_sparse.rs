//! The sparse candidate presolve of the native solver (`src/assignment/sparse.rs`,
//! [`Candidates`]) through the public API: with [`Candidates::Always`] the optimum must equal
//! brute force (small matrices), the Kuhn–Munkres backend (integers, exact) and the solver
//! without the presolve (larger matrices), with a valid dual certificate, on uniform, Gaussian
//! product, tied, integer, rectangular, forbidden-pair and f32 matrices, and the result must
//! not depend on the thread count. The unit tests of `sparse.rs` force candidate lists too short
//! to contain the optimum, so that the certificate check fails and the dense repair runs.
//!
//! Tolerances are those of `assignment.rs` (`tol`: 1e-9 relative, floored at 1; integer costs
//! are summed exactly and compared exactly).

use llfc::assignment::{solve_with, Candidates, LapOptions, Presolve, Solver, Ties};
use llfc::Error;
use ndarray::Array2;
use proptest::prelude::*;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::assignment::{brute_force, check_duals, check_structure, tol, KM, NEVER};

/// The native solver with the sparse presolve forced on (and no f32 presolve).
const SPARSE: LapOptions = LapOptions {
    solver: Solver::Native,
    presolve: Presolve::Never,
    candidates: Candidates::Always,
    ties: Ties::Any,
};

/// Seeded `r × c` matrices of several families (`kind`): 0 uniform, 1 Gaussian product
/// `−A Bᵀ` (rank 8), 2 small integers, 3 constant with a few distinct entries, 4 uniform with
/// strong row and column means (activation-statistics-like).
fn family(r: usize, c: usize, kind: u8, seed: u64) -> Array2<f64> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    match kind {
        0 => Array2::from_shape_fn((r, c), |_| rng.random::<f64>()),
        1 => {
            let a = Array2::from_shape_fn((r, 8), |_| rng.random::<f64>() - 0.5);
            let b = Array2::from_shape_fn((c, 8), |_| rng.random::<f64>() - 0.5);
            -a.dot(&b.t())
        }
        2 => Array2::from_shape_fn((r, c), |_| f64::from(rng.random_range(0..6u8))),
        3 => Array2::from_shape_fn((r, c), |_| {
            if rng.random::<u8>() % 16 == 0 {
                1.0
            } else {
                2.0
            }
        }),
        _ => {
            let rm: Vec<f64> = (0..r).map(|_| 5.0 * rng.random::<f64>()).collect();
            let cm: Vec<f64> = (0..c).map(|_| 5.0 * rng.random::<f64>()).collect();
            Array2::from_shape_fn((r, c), |(i, j)| rm[i] * cm[j] + rng.random::<f64>())
        }
    }
}

#[test]
fn sparse_presolve_matches_the_dense_solver_on_every_family() -> Result<(), Error> {
    for kind in 0..5u8 {
        for (r, c) in [(300, 300), (200, 320), (320, 200)] {
            for maximize in [false, true] {
                let m = family(r, c, kind, u64::from(kind) * 7 + r as u64);
                let a = solve_with(m.view(), maximize, &SPARSE)?;
                let b = solve_with(m.view(), maximize, &NEVER)?;
                check_structure(&a, &m);
                check_duals(&a, &m, maximize, 1e-9);
                if kind == 2 || kind == 3 {
                    assert_eq!(a.total, b.total, "kind {kind} {r}x{c} max {maximize}");
                } else {
                    let d = (a.total - b.total).abs();
                    assert!(d <= tol(b.total), "kind {kind} {r}x{c}: {d}");
                }
            }
        }
    }
    Ok(())
}

#[test]
fn sparse_presolve_is_exact_on_integers_against_kuhn_munkres() -> Result<(), Error> {
    // Integer costs of range ≤ 50 are represented exactly by the Kuhn–Munkres backend.
    for seed in 0..6u64 {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let n = 120 + 10 * seed as usize;
        let m = Array2::from_shape_fn((n, n), |_| f64::from(rng.random_range(0..50u8)));
        let a = solve_with(m.view(), seed % 2 == 0, &SPARSE)?;
        let km = solve_with(m.view(), seed % 2 == 0, &KM)?;
        assert_eq!(a.total, km.total, "seed {seed}");
    }
    Ok(())
}

#[test]
fn forbidden_pairs_and_infeasible_problems_are_handled() -> Result<(), Error> {
    for seed in 0..8u64 {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let n = 150;
        let maximize = seed % 2 == 1;
        let bad = if maximize {
            f64::NEG_INFINITY
        } else {
            f64::INFINITY
        };
        // Every row keeps its diagonal entry, so a finite assignment exists; most of the
        // cheapest entries are forbidden.
        let m = Array2::from_shape_fn((n, n), |(i, j)| {
            let x: f64 = rng.random();
            if i != j && rng.random::<u8>() % 3 != 0 {
                bad
            } else {
                x
            }
        });
        let a = solve_with(m.view(), maximize, &SPARSE)?;
        let b = solve_with(m.view(), maximize, &NEVER)?;
        assert!((a.total - b.total).abs() <= tol(b.total), "seed {seed}");
        assert!(a.total.is_finite());
    }
    // A column of forbidden entries only: infeasible, with and without the presolve.
    let mut m = family(60, 60, 0, 3);
    m.column_mut(7).fill(f64::INFINITY);
    assert!(matches!(
        solve_with(m.view(), false, &SPARSE),
        Err(Error::Infeasible)
    ));
    // Forbidden entries leaving no complete assignment although every row and column has a
    // finite entry (a 2 × 3 block of finite entries in rows 0–1 … and row 2 too).
    let m = Array2::from_shape_fn((40, 40), |(i, j)| {
        if (i < 3) == (j < 2) {
            1.0 + (i * j) as f64
        } else {
            f64::INFINITY
        }
    });
    assert!(matches!(
        solve_with(m.view(), false, &SPARSE),
        Err(Error::Infeasible)
    ));
    Ok(())
}

#[test]
fn f32_input_and_constant_matrices() -> Result<(), Error> {
    let m = family(257, 257, 0, 11);
    let m32 = m.mapv(|x| x as f32);
    let a = solve_with(m32.view(), false, &SPARSE)?;
    let b = solve_with(m32.view(), false, &NEVER)?;
    assert_eq!(a.total, b.total);
    // Every assignment of a constant matrix is optimal; row 0 attains every column minimum
    // first, so the dominance test skips the presolve and the dense solver runs as without it.
    let c = Array2::from_elem((200, 200), 3.5);
    let a = solve_with(c.view(), false, &SPARSE)?;
    assert_eq!(a.total, 700.0);
    check_duals(&a, &c, false, 0.0);
    Ok(())
}

#[test]
fn scipy_ties_are_unchanged_by_the_presolve() -> Result<(), Error> {
    // Tied optima: the SciPy tie rule gives the same assignment with and without the presolve.
    for kind in [2u8, 3] {
        let m = family(180, 180, kind, 5);
        let with = |candidates| LapOptions {
            candidates,
            ties: Ties::Scipy,
            ..LapOptions::default()
        };
        let a = solve_with(m.view(), false, &with(Candidates::Always))?;
        let b = solve_with(m.view(), false, &with(Candidates::Never))?;
        assert_eq!(a.col_ind, b.col_ind, "kind {kind}");
    }
    Ok(())
}

#[test]
fn the_result_does_not_depend_on_the_thread_count() -> Result<(), Error> {
    // 700 columns: the row passes split into tasks of 94 rows, the column pass into 11
    // blocks, so two threads really share them.
    for kind in [0u8, 1, 4] {
        let m = family(700, 700, kind, 99);
        let solve = |threads: usize| {
            rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .expect("a thread pool")
                .install(|| solve_with(m.view(), true, &LapOptions::default()))
        };
        let one = solve(1)?;
        let two = solve(2)?;
        let sparse_two = rayon::ThreadPoolBuilder::new()
            .num_threads(2)
            .build()
            .expect("a thread pool")
            .install(|| solve_with(m.view(), true, &SPARSE))?;
        let sparse_one = rayon::ThreadPoolBuilder::new()
            .num_threads(1)
            .build()
            .expect("a thread pool")
            .install(|| solve_with(m.view(), true, &SPARSE))?;
        assert_eq!(one, two, "kind {kind}: default options");
        assert_eq!(sparse_one, sparse_two, "kind {kind}: sparse presolve");
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]
    /// Brute force on small matrices (every shape up to 6 × 6): with so few columns the
    /// candidate lists hold whole rows, so this checks the sparse solve and the hand-over to the
    /// exact phase; ties, negative entries and forbidden pairs included.
    #[test]
    fn sparse_presolve_equals_brute_force(
        seed in 0u64..1_000_000, r in 1usize..7, c in 1usize..7, kind in 0u8..3, maximize: bool,
    ) {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let bad = if maximize { f64::NEG_INFINITY } else { f64::INFINITY };
        let m = Array2::from_shape_fn((r, c), |(i, j)| match kind {
            0 => rng.random::<f64>() * 10.0 - 3.0,
            1 => f64::from(rng.random_range(0..3u8)),
            _ if i != j && rng.random::<u8>() % 4 == 0 => bad,
            _ => f64::from(rng.random_range(0..5u8)),
        });
        let want = brute_force(&m, maximize);
        match solve_with(m.view(), maximize, &SPARSE) {
            Ok(a) => {
                prop_assert!(want.is_finite());
                prop_assert!((a.total - want).abs() <= tol(want), "{} vs {}", a.total, want);
            }
            Err(Error::Infeasible) => prop_assert!(!want.is_finite()),
            Err(e) => prop_assert!(false, "unexpected error {e}"),
        }
    }
}
