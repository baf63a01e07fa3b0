//! What stays fixed while one hidden permutation `P_ℓ` of commutativity matching changes (the
//! others held): exact `O(d²)` scoring of any candidate `P_ℓ` and the Frank–Wolfe coefficient.
//!
//! With `q = P_ℓ`, the two terms of `J` that depend on it are (see the parent module)
//!
//! ```text
//! J_ℓ     = tr(W_A G_ℓ W_Aᵀ) + tr(W̃ G_ℓ W̃ᵀ) − 2 Σ_i S_ℓ[i, q(i)]      (0 for ℓ = 0)
//! J_{ℓ+1} = tr(M G Mᵀ) = ⟨G, N⟩,  G = gram(C, q),  N = Mᵀ M = gram(Z, q),
//! ```
//!
//! where `gram(m, q)[a, b] = m_aa[a, b] − m_ab[a, q(b)] − m_ab[b, q(a)] + m_bb[q(a), q(b)]`,
//! `C` are the feature moments of hidden layer ℓ and `Z = (UᵀU, UᵀV, VᵀV)` the weight moments of
//! layer ℓ + 1 (`U = W_A^{ℓ+1}`, `V = P_{ℓ+1} W_B^{ℓ+1}`), since `M = U − V Qᵀ` gives
//! `Mᵀ M = UᵀU − UᵀV Qᵀ − Q VᵀU + Q VᵀV Qᵀ`. `UᵀU` and `VᵀV = W_Bᵀ P_{ℓ+1}ᵀ P_{ℓ+1} W_B =
//! W_Bᵀ W_B` depend on no permutation (the problem computes them once per layer), so building
//! the cache costs one `d × d × d` product for `UᵀV` and, for `ℓ > 0`, three for `S_ℓ` (two)
//! and the weight-bound coefficient (one); the constant `tr(W_A G_ℓ W_Aᵀ) + tr(W̃ G_ℓ W̃ᵀ) =
//! ⟨G_ℓ, W_AᵀW_A + (W_BᵀW_B)[q, q]⟩` (`q = P_{ℓ−1}`) takes `O(d²)` from layer ℓ's fixed weight
//! moments. Scoring a candidate costs `O(d²)`.

use ndarray::Array2;

use super::{gram, gram_inner, matmul, transposed, Moments, Problem};
use crate::permutation::Permutation;

/// The fixed parts of `J_ℓ` and `J_{ℓ+1}` for hidden layer `ℓ`.
pub(super) struct LayerCache<'a> {
    /// Feature moments of hidden layer ℓ.
    pub c: &'a Moments,
    /// Weight moments `(UᵀU, UᵀV, VᵀV)` of layer ℓ + 1.
    pub z: Moments,
    /// `S_ℓ = W_A G_ℓ W̃ᵀ` (`None` for ℓ = 0, where `J_0 = 0`).
    pub s: Option<Array2<f64>>,
    /// `tr(W_A G_ℓ W_Aᵀ) + tr(W̃ G_ℓ W̃ᵀ)`.
    constant: f64,
    /// `‖D_{ℓ−1}‖² = tr G_ℓ` times `W_A^ℓ W̃ᵀ` (`None` for ℓ = 0, where `D_{−1} = 0`): the
    /// layer-ℓ half of the weight-bound coefficient.
    own_weights: Option<Array2<f64>>,
}

impl<'a> LayerCache<'a> {
    /// The cache of hidden layer `l` at `perms` (only `perms[l]` may change while it is used).
    pub fn new(problem: &'a Problem, perms: &[Vec<usize>], l: usize) -> Self {
        let (u, wb) = (&problem.wa[l + 1], &problem.wb[l + 1]);
        let id: Vec<usize> = (0..u.nrows()).collect();
        let p = problem.out_perm(perms, l + 1, &id);
        let v = Array2::from_shape_fn(wb.dim(), |(r, c)| wb[[p[r], c]]);
        let grams = problem.weight_grams(l + 1);
        let uv = matmul(u.t(), v.view());
        let z = Moments {
            aa: grams.uu.clone(),
            aa_t: grams.uu_t.clone(),
            ab_t: transposed(uv.view()),
            ab: uv,
            bb: grams.vv.clone(),
            bb_t: grams.vv_t.clone(),
        };
        let (s, constant, own_weights) = if l == 0 {
            (None, 0.0, None)
        } else {
            let q = &perms[l - 1];
            let (wa, wb) = (&problem.wa[l], &problem.wb[l]);
            let wt = Array2::from_shape_fn(wb.dim(), |(r, c)| wb[[r, q[c]]]);
            let g = gram(&problem.moments[l - 1], q);
            let wag = matmul(wa.view(), g.view());
            // tr(W_A G W_Aᵀ) + tr(W̃ G W̃ᵀ) = ⟨G, W_AᵀW_A⟩ + ⟨G, W̃ᵀW̃⟩ with
            // W̃ᵀW̃ = (W_BᵀW_B)[q, q]: O(d²) from the layer's fixed weight moments.
            let grams = problem.weight_grams(l);
            let constant: f64 = g
                .outer_iter()
                .zip(grams.uu.outer_iter())
                .zip(q)
                .map(|((g_row, uu_row), &qi)| {
                    let vv_row = grams.vv.row(qi);
                    g_row
                        .iter()
                        .zip(uu_row)
                        .zip(q)
                        .map(|((&g, &u), &qj)| g * (u + vv_row[qj]))
                        .sum::<f64>()
                })
                .sum();
            let mut own_weights = matmul(wa.view(), wt.t());
            own_weights *= g.diag().sum();
            (
                Some(matmul(wag.view(), wt.t())),
                constant,
                Some(own_weights),
            )
        };
        Self {
            c: &problem.moments[l],
            z,
            s,
            constant,
            own_weights,
        }
    }

    /// `(J_ℓ, J_{ℓ+1})` at `P_ℓ = q`, in `O(d²)`.
    pub fn terms(&self, q: &[usize]) -> (f64, f64) {
        (self.own_term(q), gram_inner(self.c, &self.z, q))
    }

    /// `J_ℓ` at `P_ℓ = q`, in `O(d)`.
    pub fn own_term(&self, q: &[usize]) -> f64 {
        self.s.as_ref().map_or(0.0, |s| {
            let linear: f64 = q.iter().enumerate().map(|(i, &j)| s[[i, j]]).sum();
            self.constant - 2.0 * linear
        })
    }

    /// `S_ℓ + T_ℓ` at `P_ℓ = q`: `T_ℓ = G (Mᵀ V) + N (C_AB − Q C_BB)` with
    /// `Mᵀ V = UᵀV − Q VᵀV` (the negative half-gradient of `J` in `P_ℓ`, see the parent module).
    pub fn frank_wolfe(&self, q: &[usize]) -> Array2<f64> {
        let (c, z) = (self.c, &self.z);
        let (g, n) = (gram(c, q), gram(z, q));
        let mtv = Array2::from_shape_fn(z.ab.dim(), |(i, j)| z.ab[[i, j]] - z.bb[[q[i], j]]);
        let d = Array2::from_shape_fn(c.ab.dim(), |(i, j)| c.ab[[i, j]] - c.bb[[q[i], j]]);
        let mut coef = matmul(g.view(), mtv.view());
        coef += &matmul(n.view(), d.view());
        if let Some(s) = &self.s {
            coef += s;
        }
        coef
    }

    /// The weight-bound coefficient at `P_ℓ = q`:
    /// `‖D_{ℓ−1}‖² W_A^ℓ W̃ᵀ + ‖D_ℓ(q)‖² UᵀV`, whose LAP minimises
    /// `‖D_{ℓ−1}‖² ‖E_ℓ(P)‖² + ‖D_ℓ(q)‖² ‖E_{ℓ+1}(P)‖²`, the Cauchy–Schwarz bound
    /// `J_ℓ + J_{ℓ+1} ≤ ‖E_ℓ‖² ‖D_{ℓ−1}‖² + ‖E_{ℓ+1}‖² ‖D_ℓ‖²` with the feature factors frozen
    /// (`‖D‖² = tr G`, per sample; see the parent module).
    pub fn weight_bound(&self, q: &[usize]) -> Array2<f64> {
        let c = self.c;
        let d_sq: f64 = q
            .iter()
            .enumerate()
            .map(|(i, &j)| c.aa[[i, i]] - 2.0 * c.ab[[i, j]] + c.bb[[j, j]])
            .sum();
        let mut coef = &self.z.ab * d_sq;
        if let Some(own) = &self.own_weights {
            coef += own;
        }
        coef
    }
}

/// The [`LayerCache`] of one hidden layer `ℓ`, kept across sweeps while the permutations it
/// depends on (`P_{ℓ−1}` for `S_ℓ`, `P_{ℓ+1}` for the weight moments) stay the same, and the
/// solution of the LAP of `S_ℓ` ([`StepKind::LayerTerm`](super::StepKind::LayerTerm)), which depends on `P_{ℓ−1}` alone.
/// Rebuilding it from the same permutations would compute the same values.
pub(super) struct CachedLayer<'a> {
    before: Option<Vec<usize>>,
    after: Option<Vec<usize>>,
    /// The cache.
    pub cache: LayerCache<'a>,
    /// The solution of the LAP of `S_ℓ`, once solved.
    pub layer_term: Option<Permutation>,
}

impl<'a> CachedLayer<'a> {
    /// The cache of layer `l` at `perms`, made anew only if its neighbours' permutations
    /// changed since it was made.
    pub fn get<'s>(
        slot: &'s mut Option<Self>,
        problem: &'a Problem,
        perms: &[Vec<usize>],
        l: usize,
    ) -> &'s mut Self {
        let before = l.checked_sub(1).map(|k| perms[k].clone());
        let after = perms.get(l + 1).cloned();
        let valid = matches!(slot, Some(c) if c.before == before && c.after == after);
        if !valid {
            *slot = Some(Self {
                before,
                after,
                cache: LayerCache::new(problem, perms, l),
                layer_term: None,
            });
        }
        slot.as_mut().expect("made above")
    }
}

#[cfg(test)]
mod tests {
    use super::super::{CommutativityStats, Problem};
    use super::*;
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    /// `Σ_ij x_ij y_ij`.
    fn inner(x: &Array2<f64>, y: &Array2<f64>) -> f64 {
        x.iter().zip(y).map(|(a, b)| a * b).sum()
    }

    fn random(rng: &mut ChaCha8Rng, r: usize, c: usize) -> Array2<f64> {
        Array2::from_shape_fn((r, c), |_| rng.random_range(-1.0..1.0))
    }

    /// Dense `tr(M G Mᵀ)` for a matrix `Q`, with `M = U − V Qᵀ`.
    fn dense_term(u: &Array2<f64>, v: &Array2<f64>, q: &Array2<f64>, m: &Moments) -> f64 {
        let mm = u - &v.dot(&q.t());
        let g = &m.aa - &m.ab.dot(&q.t()) - &q.dot(&m.ab.t()) + &q.dot(&m.bb).dot(&q.t());
        (&mm.dot(&g) * &mm).sum()
    }

    #[test]
    fn frank_wolfe_coefficient_is_the_gradient() {
        let mut rng = ChaCha8Rng::seed_from_u64(5);
        let (d_in, d, d_out, n) = (3, 5, 4, 40);
        let ha = random(&mut rng, n, d).mapv(f64::abs);
        let hb = random(&mut rng, n, d).mapv(f64::abs);
        let mut st = CommutativityStats::new(d);
        st.update(ha.view(), hb.view()).unwrap();
        let problem = Problem::from_parts(
            vec![random(&mut rng, d, d_in), random(&mut rng, d_out, d)],
            vec![random(&mut rng, d, d_in), random(&mut rng, d_out, d)],
            vec![st.moments().unwrap()],
        );
        let q = vec![2, 0, 4, 1, 3];
        let qm = Array2::from_shape_fn((d, d), |(i, j)| f64::from(u8::from(q[i] == j)));
        let cache = LayerCache::new(&problem, std::slice::from_ref(&q), 0);
        let coef = cache.frank_wolfe(&q);
        // Directional derivative of term 1 along a random E: ⟨∇, E⟩ = −2 ⟨coef, E⟩ (S_0 = 0).
        let e = random(&mut rng, d, d);
        let (u, v, mom) = (&problem.wa[1], &problem.wb[1], &problem.moments[0]);
        let h = 1e-5;
        let fd = (dense_term(u, v, &(&qm + &(&e * h)), mom)
            - dense_term(u, v, &(&qm - &(&e * h)), mom))
            / (2.0 * h);
        let analytic = -2.0 * (&coef * &e).sum();
        assert!(
            (fd - analytic).abs() < 1e-6 * analytic.abs().max(1.0),
            "{fd} vs {analytic}"
        );
        // And the term itself agrees with the dense formula.
        let t = problem.term(std::slice::from_ref(&q), 1);
        assert!((t - dense_term(u, v, &qm, mom)).abs() < 1e-10 * t.abs().max(1.0));
        // Term 1 is linear in its output permutation when P_1 is hidden: check S_1 through
        // a three-layer problem, J_1(P) − J_1(P') = −2 (⟨P, S_1⟩ − ⟨P', S_1⟩).
        let mut st2 = CommutativityStats::new(d_out);
        st2.update(
            random(&mut rng, n, d_out).view(),
            random(&mut rng, n, d_out).view(),
        )
        .unwrap();
        let three = Problem::from_parts(
            [problem.wa.clone(), vec![random(&mut rng, 2, d_out)]].concat(),
            [problem.wb.clone(), vec![random(&mut rng, 2, d_out)]].concat(),
            vec![st.moments().unwrap(), st2.moments().unwrap()],
        );
        let (p1, p2) = (vec![1, 3, 0, 2], vec![3, 2, 1, 0]);
        let perms = [q.clone(), p1.clone()];
        let cache3 = LayerCache::new(&three, &perms, 1);
        let s = cache3.s.clone().unwrap();
        // The cache's O(d²) scores equal the direct terms.
        let (t1, t2) = cache3.terms(&p2);
        let p2s = [q.clone(), p2.clone()];
        assert!((t1 - three.term(&p2s, 1)).abs() < 1e-10 * t1.abs().max(1.0));
        assert!((t2 - three.term(&p2s, 2)).abs() < 1e-10 * t2.abs().max(1.0));
        // The weight bound: ‖D_0‖² ‖E_1(P)‖² + ‖D_1(p1)‖² ‖E_2(P)‖² + 2 ⟨P, coef⟩ is the same
        // for every P, so the coefficient's LAP minimises the bound.
        let coef = cache3.weight_bound(&p1);
        let tr = |m: &Moments, q: &[usize]| gram(m, q).diag().sum();
        let (d0, d1) = (tr(&three.moments[0], &q), tr(&three.moments[1], &p1));
        let bound = |p: &[usize]| {
            let e1 = Array2::from_shape_fn(three.wa[1].dim(), |(r, c)| {
                three.wa[1][[r, c]] - three.wb[1][[p[r], q[c]]]
            });
            let e2 = Array2::from_shape_fn(three.wa[2].dim(), |(r, c)| {
                three.wa[2][[r, c]] - three.wb[2][[r, p[c]]]
            });
            let lin: f64 = p.iter().enumerate().map(|(i, &j)| coef[[i, j]]).sum();
            d0 * inner(&e1, &e1) + d1 * inner(&e2, &e2) + 2.0 * lin
        };
        let reference = bound(&p1);
        for p in [&p2, &vec![0, 1, 2, 3], &vec![2, 0, 3, 1]] {
            let b = bound(p);
            assert!(
                (b - reference).abs() < 1e-10 * reference.abs().max(1.0),
                "{b} vs {reference}"
            );
        }
        let lin = |p: &[usize]| p.iter().enumerate().map(|(i, &j)| s[[i, j]]).sum::<f64>();
        let diff = three.term(&[q.clone(), p1.clone()], 1) - three.term(&[q, p2.clone()], 1);
        let expect = -2.0 * (lin(&p1) - lin(&p2));
        assert!(
            (diff - expect).abs() < 1e-10 * expect.abs().max(1.0),
            "{diff} vs {expect}"
        );
    }
}
