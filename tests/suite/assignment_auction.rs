//! The native solver on matrices with dominant rows — where JV's row reduction stalls and the
//! ε-scaling auction takes over (`src/assignment/auction.rs`) — through the public API: the
//! optimum against brute force and the Kuhn–Munkres backend, the dual certificate, the f32
//! presolve, forbidden pairs, rectangular shapes, and independence of the thread count.
//!
//! The generators reproduce the structure that triggers the auction (long augmenting paths;
//! a unit test of the crate checks that rank-one matrices `m_i w_j` trigger it at n = 300 and
//! 600, and that uniform and small-integer matrices do not): rank-one dominant rows and
//! columns, plus noise, like activation statistics of biased units, `E[a bᵀ] ≈ E[a] E[b]ᵀ +
//! cov`.
//! With the `lap-stats` counters, the auction runs here on the dominant matrices at n = 500
//! (against Kuhn–Munkres, exact on integers), the rank-one matrices at n = 300 and 600 (against
//! the sorted closed form) and in the thread-count test (rank one, n = 600, with and without
//! the f32 presolve); the smaller ones check that the bail-out and the switch test leave the
//! ordinary path exact, and a unit proptest forces the auction path on matrices up to 7 × 7
//! against brute force.
//! Tolerances are those of `assignment.rs` (`tol`: 1e-9 relative, floored at 1; integer costs
//! are summed exactly, so integer totals are compared exactly).

use llfc::assignment::{linear_sum_assignment, solve_with, Assignment, LapOptions};
use llfc::Error;
use ndarray::Array2;
use proptest::prelude::*;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::assignment::{brute_force, check_duals, check_structure, tol, ALWAYS, KM, NEVER};

/// `m_i n_j + e_ij` with integer `m, n ∈ [1, 20]`, `e ∈ [0, 3]` (to be maximised).
fn dominant(r: usize, c: usize, seed: u64) -> Array2<f64> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let m: Vec<f64> = (0..r)
        .map(|_| f64::from(rng.random_range(1..=20u8)))
        .collect();
    let w: Vec<f64> = (0..c)
        .map(|_| f64::from(rng.random_range(1..=20u8)))
        .collect();
    Array2::from_shape_fn((r, c), |(i, j)| {
        m[i] * w[j] + f64::from(rng.random_range(0..=3u8))
    })
}

/// `E[a bᵀ]` over `s` shared Gaussian inputs of `relu(W x + b)` features of two random layers
/// with biases `N(0, 0.5²)` (`activation_stats_biased` of `BENCHMARKS.md`, smaller).
fn biased_stats(n: usize, s: usize, seed: u64) -> Array2<f64> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let d = 32;
    let mut gauss = |shape: (usize, usize)| {
        Array2::from_shape_simple_fn(shape, || {
            let (u1, u2) = (1.0 - rng.random::<f64>(), rng.random::<f64>());
            (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
        })
    };
    let x = gauss((s, d));
    let feats = |w: Array2<f64>, b: Array2<f64>| (x.dot(&w.t()) + &b).mapv(|z| z.max(0.0));
    let (w1, w2) = (
        gauss((n, d)) / (d as f64).sqrt(),
        gauss((n, d)) / (d as f64).sqrt(),
    );
    let (b1, b2) = (gauss((1, n)) * 0.5, gauss((1, n)) * 0.5);
    let (a, b) = (feats(w1, b1), feats(w2, b2));
    a.t().dot(&b) / s as f64
}

fn max_abs(c: &Array2<f64>) -> f64 {
    c.iter()
        .filter(|x| x.is_finite())
        .fold(0.0, |m, x| m.max(x.abs()))
}

#[test]
fn dominant_rows_match_kuhn_munkres_and_are_certified() -> Result<(), Error> {
    for (n, seed) in [(64usize, 1u64), (300, 2), (500, 3)] {
        let c = dominant(n, n, seed);
        for maximize in [true, false] {
            // Minimising the negation is the same problem seen from the other side.
            let c = if maximize { c.clone() } else { c.mapv(|x| -x) };
            let km = solve_with(c.view(), maximize, &KM)?;
            for opts in [NEVER, ALWAYS] {
                let a = solve_with(c.view(), maximize, &opts)?;
                check_structure(&a, &c);
                // Integer costs: Kuhn–Munkres is exact and the totals are exact sums.
                assert_eq!(a.total, km.total, "n {n} maximize {maximize} {opts:?}");
                check_duals(&a, &c, maximize, 1e-10 * max_abs(&c));
            }
        }
    }
    Ok(())
}

/// `m_i w_j` with factors uniform in `[0.1, 1.1)`: `m` is the first half of the factors.
fn rank_one(n: usize, seed: u64) -> (Array2<f64>, Vec<f64>) {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let m: Vec<f64> = (0..2 * n).map(|_| 0.1 + rng.random::<f64>()).collect();
    (Array2::from_shape_fn((n, n), |(i, j)| m[i] * m[n + j]), m)
}

#[test]
fn rank_one_matrices_are_certified() -> Result<(), Error> {
    for (n, seed) in [(300usize, 4u64), (600, 5)] {
        let (c, m) = rank_one(n, seed);
        // Maximised, the optimum pairs the sorted factors (rearrangement inequality).
        let (mut a, mut b) = (m[..n].to_vec(), m[n..].to_vec());
        a.sort_by(f64::total_cmp);
        b.sort_by(f64::total_cmp);
        let want: f64 = a.iter().zip(&b).map(|(x, y)| x * y).sum();
        for opts in [NEVER, ALWAYS] {
            let s = solve_with(c.view(), true, &opts)?;
            check_structure(&s, &c);
            assert!((s.total - want).abs() <= tol(want), "n {n} {opts:?}");
            check_duals(&s, &c, true, 1e-10 * max_abs(&c));
        }
    }
    Ok(())
}

#[test]
fn biased_activation_statistics_are_certified_in_f64_and_f32() -> Result<(), Error> {
    for (n, seed) in [(200usize, 7u64), (400, 8)] {
        let c = biased_stats(n, 2000, seed);
        let t = 1e-10 * max_abs(&c);
        let a = linear_sum_assignment(c.view(), true)?;
        check_structure(&a, &c);
        check_duals(&a, &c, true, t);
        let p = solve_with(c.view(), true, &ALWAYS)?;
        assert!((p.total - a.total).abs() <= tol(a.total), "presolve, n {n}");
        check_duals(&p, &c, true, t);
        // f32 input: optimal for the rounded matrix, certified on it.
        let c32 = c.mapv(|x| x as f32);
        let c32w = c32.mapv(f64::from);
        let a32 = linear_sum_assignment(c32.view(), true)?;
        check_structure(&a32, &c32w);
        check_duals(&a32, &c32w, true, 1e-6 * max_abs(&c32w));
        let want = linear_sum_assignment(c32w.view(), true)?.total;
        assert!((a32.total - want).abs() <= tol(want), "f32, n {n}");
    }
    Ok(())
}

#[test]
fn infeasible_dominant_matrices_are_errors() {
    // Rows 0 and 1 may only take column 0 (−∞ elsewhere when maximising): no assignment.
    let n = 120;
    let mut c = dominant(n, n, 11);
    for i in 0..2 {
        for j in 1..n {
            c[[i, j]] = f64::NEG_INFINITY;
        }
    }
    for opts in [NEVER, ALWAYS] {
        assert!(matches!(
            solve_with(c.view(), true, &opts),
            Err(Error::Infeasible)
        ));
    }
}

/// Bit-for-bit equality of two solutions (pairs, total and potentials).
fn assert_identical(a: &Assignment, b: &Assignment) {
    assert_eq!(a.col_ind, b.col_ind);
    assert_eq!(a.total.to_bits(), b.total.to_bits());
    let (da, db) = (a.duals.as_ref().unwrap(), b.duals.as_ref().unwrap());
    let bits = |x: &[f64]| x.iter().map(|y| y.to_bits()).collect::<Vec<_>>();
    assert_eq!(bits(&da.u), bits(&db.u));
    assert_eq!(bits(&da.v), bits(&db.v));
}

#[test]
fn results_are_bit_identical_under_one_and_two_threads() {
    let c = biased_stats(400, 2000, 21);
    let d = dominant(300, 300, 22);
    let r = rank_one(600, 23).0; // long paths: the auction runs
    let solve_all = || -> Vec<Assignment> {
        let opts: [LapOptions; 2] = [NEVER, ALWAYS];
        opts.iter()
            .flat_map(|o| [(&c, o), (&d, o), (&r, o)])
            .map(|(m, o)| solve_with(m.view(), true, o).unwrap())
            .collect()
    };
    let pool = |k| {
        rayon::ThreadPoolBuilder::new()
            .num_threads(k)
            .build()
            .unwrap()
    };
    let one = pool(1).install(solve_all);
    let two = pool(2).install(solve_all);
    for (a, b) in one.iter().zip(&two) {
        assert_identical(a, b);
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]
    /// Small dominant matrices, square or rectangular, with forbidden pairs and f32 input:
    /// the same optimum as brute force.
    #[test]
    fn small_dominant_matrices_match_brute_force(
        seed in any::<u64>(), r in 1usize..7, n in 1usize..7, maximize: bool, forbid: bool,
    ) {
        let mut c = dominant(r, n, seed);
        if !maximize {
            c.mapv_inplace(|x| -x);
        }
        if forbid {
            // One forbidden pair off the diagonal keeps a finite assignment.
            let bad = if maximize { f64::NEG_INFINITY } else { f64::INFINITY };
            if r > 1 && n > 1 {
                c[[0, 1]] = bad;
            }
        }
        let want = brute_force(&c, maximize);
        let a = linear_sum_assignment(c.view(), maximize).unwrap();
        check_structure(&a, &c);
        prop_assert_eq!(a.total, want);
        let p = solve_with(c.view(), maximize, &ALWAYS).unwrap();
        prop_assert_eq!(p.total, want);
        // Integers up to 403 are exact in f32.
        let a32 = linear_sum_assignment(c.mapv(|x| x as f32).view(), maximize).unwrap();
        prop_assert_eq!(a32.total, want);
    }
}
