//! ε-scaling auction (Bertsekas 1988) that gives the native solver near-optimal column
//! potentials on matrices where its augmenting paths are long (`State::augment_all` decides).
//!
//! The augmenting row reduction is an auction with *zero* increment: a bidding row lowers its
//! best column's potential only until its second-best column ties, so on matrices whose rows
//! compete for the same near-equal columns (activation statistics of biased units) it
//! degenerates into price wars, gives up, and leaves most rows to the shortest-path phase (at
//! n = 2048: 1 690 free rows, 1.05 M row scans, see `BENCHMARKS.md`). With a positive increment `ε` every bid lowers
//! a potential by at least `ε`, so the wars end; scaling `ε` down by [`THETA`] per phase keeps the
//! number of bids per phase small. The result is ε-optimal (every row's column within `ε` of its
//! best reduced cost), not exact: the caller feeds its potentials and matching to the exact
//! warm start, which keeps only the exactly tight pairs, and the shortest-path phase then
//! finishes from potentials so close to optimal that its paths are short.
//!
//! Serial (Gauss–Seidel) bidding: deterministic and independent of the thread count.
//!
//! D. P. Bertsekas, *The auction algorithm: a distributed relaxation method for the assignment
//! problem*, Annals of Operations Research 14, 105–123 (1988).

use super::kernels::{ld, two_smallest};
use super::native::{Costs, NONE};
use crate::float::Float;

/// Factor by which `ε` shrinks between phases.
pub(super) const THETA: f64 = 8.0;

/// First `ε`, as a fraction of the spread of the finite entries.
const EPS_START: f64 = 1.0 / 64.0;

/// Last `ε`, as a fraction of the spread of the finite entries ...
const EPS_FINAL: f64 = 1e-9;

/// ... but at least this fraction of the largest finite magnitude (or of the potential a bid
/// lowers), far above the rounding of the potentials (`2^-44`).
const EPS_MIN_REL: f64 = 5.684_341_886_080_802e-14;

/// Cap on the bids of the whole auction, per row (a safety net: it also stops the auction on
/// problems without a finite assignment, whose bids would never end). The matrices of
/// `BENCHMARKS.md` need 30–90.
const MAX_BIDS_PER_ROW: usize = 200;

/// Potentials and matching of an ε-optimal assignment (internal, minimising frame).
pub(super) struct Auctioned {
    pub v: Vec<f64>,
    pub col4row: Vec<usize>,
}

/// Run the ε-scaling auction on the square problem `c` from the column potentials `v0`.
/// At the bid cap it stops and returns what it reached (the matching may then be partial).
/// `None` when a bidding row has no finite entry, all finite entries are equal, or a potential is not
/// finite (the caller then continues without it).
pub(super) fn auction<T: Float, const NEG: bool>(c: Costs<'_, T>, v0: &[f64]) -> Option<Auctioned> {
    let n = c.nr;
    debug_assert!(n == c.nc && v0.len() == n);
    let mut v = v0.to_vec();
    let mut col4row = vec![NONE; n];
    let mut row4col = vec![NONE; n];
    let mut free: Vec<usize> = Vec::with_capacity(n);
    let (spread, max_abs) = spread::<T, NEG>(c)?;
    // The last ε stays far above the rounding of the potentials (2^-44 max |c| at least).
    let eps_final = (spread * EPS_FINAL).max(max_abs * EPS_MIN_REL);
    let mut eps = (spread * EPS_START).max(eps_final);
    let max_bids = MAX_BIDS_PER_ROW * n;
    let mut bids = 0usize;
    'phases: loop {
        col4row.fill(NONE);
        row4col.fill(NONE);
        free.clear();
        free.extend((0..n).rev());
        while let Some(i) = free.pop() {
            bids += 1;
            if bids > max_bids {
                // Keep what the auction reached: its potentials still help the exact phase.
                break 'phases;
            }
            let row = c.row(i);
            let (w1, j1, w2, _) = two_smallest::<T, NEG>(row, &v);
            if w1 == f64::INFINITY {
                return None;
            }
            // Lower v_j1 so that j1 is ε worse than the second-best column for row i.
            // (At least a few ulps of v_j1, so that every bid changes it.)
            let gap = if w2.is_finite() { w2 - w1 } else { 0.0 };
            v[j1] -= (gap + eps).max(v[j1].abs() * EPS_MIN_REL);
            let old = std::mem::replace(&mut row4col[j1], i);
            col4row[i] = j1;
            if old != NONE {
                col4row[old] = NONE;
                free.push(old);
            }
        }
        #[cfg(feature = "lap-stats")]
        super::stats::with(|s| {
            s.auction_phases += 1;
            s.auction_bids = bids;
            s.auction_per_phase.push(bids);
        });
        if eps <= eps_final {
            break;
        }
        eps = (eps / THETA).max(eps_final);
    }
    v.iter()
        .all(|x| x.is_finite())
        .then_some(Auctioned { v, col4row })
}

/// `max − min` and `max |c|` over the finite entries (`None` if there are none or all are
/// equal: nothing to bid for).
fn spread<T: Float, const NEG: bool>(c: Costs<'_, T>) -> Option<(f64, f64)> {
    let (mut lo, mut hi) = (f64::INFINITY, f64::NEG_INFINITY);
    for &x in c.data {
        let y = ld::<T, NEG>(x);
        if y.is_finite() {
            lo = if y < lo { y } else { lo };
            hi = if y > hi { y } else { hi };
        }
    }
    let s = hi - lo;
    (s.is_finite() && s > 0.0).then_some((s, hi.abs().max(lo.abs())))
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};

    /// `m_i n_j + e_ij` with integer `m, n ∈ [1, 20]`, `e ∈ [0, 3]`, to be maximised: rank-one
    /// dominant rows and columns plus noise, full of ties — the structure of biased activation
    /// statistics (`E[a bᵀ] ≈ E[a] E[b]ᵀ + cov`), on which the row reduction stalls.
    pub(in crate::assignment) fn dominant(n: usize, seed: u64) -> Vec<f64> {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
        let m: Vec<f64> = (0..n)
            .map(|_| f64::from(rng.random_range(1..=20u8)))
            .collect();
        let w: Vec<f64> = (0..n)
            .map(|_| f64::from(rng.random_range(1..=20u8)))
            .collect();
        (0..n * n)
            .map(|k| m[k / n] * w[k % n] + f64::from(rng.random_range(0..=3u8)))
            .collect()
    }

    #[test]
    fn auction_is_complete_and_eps_optimal() {
        for seed in 0..12 {
            for n in [1usize, 2, 7, 40, 150] {
                let data = dominant(n, seed);
                let c = Costs {
                    data: &data,
                    nr: n,
                    nc: n,
                };
                let Some(a) = auction::<f64, true>(c, &vec![0.0; n]) else {
                    assert_eq!(n, 1, "only a 1 × 1 matrix has no spread to bid on");
                    continue;
                };
                let mut seen = vec![false; n];
                for &j in &a.col4row {
                    assert!(
                        j < n && !seen[j],
                        "a complete matching (seed {seed}, n {n})"
                    );
                    seen[j] = true;
                }
                // ε-complementary slackness of the last phase: each row's column is within
                // ε_final of its best reduced cost (up to the rounding of the potentials).
                let (spread, max_abs) = spread::<f64, true>(c).unwrap();
                let eps = (spread * EPS_FINAL).max(max_abs * EPS_MIN_REL);
                let vmax = a.v.iter().fold(0.0f64, |m, x| m.max(x.abs()));
                for i in 0..n {
                    let red = |k: usize| -data[i * n + k] - a.v[k];
                    let best = (0..n).map(red).fold(f64::INFINITY, f64::min);
                    let slack = red(a.col4row[i]) - best;
                    assert!(
                        slack <= eps * 1.000_001 + 1e-12 * (max_abs + vmax),
                        "seed {seed} n {n} row {i}: slack {slack} > ε {eps}"
                    );
                }
            }
        }
    }

    #[test]
    fn auction_stops_on_problems_without_a_finite_assignment() {
        // Rows 0 and 1 can only take column 0: the bids for it never end; the cap stops them.
        let n = 6;
        let data: Vec<f64> = (0..n * n)
            .map(|k| {
                let (i, j) = (k / n, k % n);
                if i < 2 && j > 0 {
                    f64::INFINITY
                } else {
                    (k % 5) as f64
                }
            })
            .collect();
        let c = Costs {
            data: &data,
            nr: n,
            nc: n,
        };
        let a = auction::<f64, false>(c, &vec![0.0; n]).expect("finite potentials");
        assert!(a.v.iter().all(|x| x.is_finite()));
        assert!(a.col4row.contains(&NONE), "the matching stays partial");
        // A row without any finite entry is reported when it bids.
        let mut rowless: Vec<f64> = (0..n * n).map(|k| (k % 5) as f64).collect();
        rowless[3 * n..4 * n].fill(f64::INFINITY);
        let c = Costs {
            data: &rowless,
            nr: n,
            nc: n,
        };
        assert!(auction::<f64, false>(c, &vec![0.0; n]).is_none());
    }
}
