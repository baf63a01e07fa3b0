//! Principal angles and CCA alignment (feature `linalg`), against closed forms and independent
//! computations written here: planted angles between explicitly constructed subspaces, the
//! angle between a vector and a subspace by projection, exact invertible maps between features,
//! and reparameterised linear networks.
#![cfg(feature = "linalg")]

use std::collections::BTreeMap;
use std::f64::consts::{FRAC_PI_2, FRAC_PI_4};

use llfc::analysis::subspace::{feature_subspace_angles, principal_angles, weight_subspace_angles};
use llfc::matching::cca::{
    apply_cca, cca, cca_alignment_from_features, mlp_function_change, CcaOptions, CcaStats,
    Regularization,
};
use llfc::{mlp, Error, Params, Permutation, PermutationSpec};
use ndarray::{s, Array1, Array2, ArrayD, Axis};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// Angles are resolved to this absolute accuracy (the requirement; the sine formula
/// reaches ~1e-15, so it leaves room for the conditioning of the mixed bases below).
const ANGLE_TOL: f64 = 1e-10;

fn rng(seed: u64) -> ChaCha8Rng {
    ChaCha8Rng::seed_from_u64(seed)
}

fn random_matrix(rows: usize, cols: usize, rng: &mut ChaCha8Rng) -> Array2<f64> {
    Array2::from_shape_simple_fn((rows, cols), || rng.random::<f64>() * 2.0 - 1.0)
}

/// Modified Gram–Schmidt on the columns of `q` (full column rank), in place.
fn gram_schmidt(q: &mut Array2<f64>) {
    for j in 0..q.ncols() {
        for i in 0..j {
            let proj = q.column(i).dot(&q.column(j));
            let qi = q.column(i).to_owned();
            q.column_mut(j).scaled_add(-proj, &qi);
        }
        let norm = q.column(j).dot(&q.column(j)).sqrt();
        q.column_mut(j).mapv_inplace(|v| v / norm);
    }
}

/// A random `n × n` orthogonal matrix: Gram–Schmidt twice (so orthonormal to ~1e-16).
fn random_orthogonal(n: usize, rng: &mut ChaCha8Rng) -> Array2<f64> {
    let mut q = random_matrix(n, n, rng);
    gram_schmidt(&mut q);
    gram_schmidt(&mut q);
    q
}

/// A well-conditioned invertible `n × n` matrix and its inverse: `Q D` with `Q` orthogonal and
/// `D` diagonal in `[0.5, 2]`, so the inverse is `D⁻¹ Qᵀ` (no inversion needed).
fn invertible(n: usize, rng: &mut ChaCha8Rng) -> (Array2<f64>, Array2<f64>) {
    let q = random_orthogonal(n, rng);
    let d = Array1::from_shape_simple_fn(n, || 0.5 + 1.5 * rng.random::<f64>());
    let m = &q * &d.view().insert_axis(Axis(0));
    let inv = q.t().to_owned() / d.view().insert_axis(Axis(1));
    (m, inv)
}

fn max_abs_diff(a: &Array2<f64>, b: &Array2<f64>) -> f64 {
    assert_eq!(a.dim(), b.dim());
    a.iter().zip(b).fold(0.0, |m, (x, y)| m.max((x - y).abs()))
}

/// Subspaces with planted principal angles: `A = span(q_1 … q_p)` and
/// `B = span(cos θ_i q_i + sin θ_i q_{p+i})`, each basis then mixed by a random invertible
/// matrix (which changes the basis, not the span). Needs `n ≥ 2p`.
fn planted(n: usize, thetas: &[f64], rng: &mut ChaCha8Rng) -> (Array2<f64>, Array2<f64>) {
    let p = thetas.len();
    let q = random_orthogonal(n, rng);
    let a = q.slice(s![.., ..p]).to_owned();
    let mut b = Array2::zeros((n, p));
    for (i, t) in thetas.iter().enumerate() {
        let col = &q.column(i) * t.cos() + &q.column(p + i) * t.sin();
        b.column_mut(i).assign(&col);
    }
    let (ma, _) = invertible(p, rng);
    let (mb, _) = invertible(p, rng);
    (a.dot(&ma), b.dot(&mb))
}

fn sorted(v: &[f64]) -> Vec<f64> {
    let mut v = v.to_vec();
    v.sort_by(f64::total_cmp);
    v
}

fn assert_angles(found: &Array1<f64>, want: &[f64], tol: f64) {
    let want = sorted(want);
    assert_eq!(found.len(), want.len(), "{found} vs {want:?}");
    for (f, w) in found.iter().zip(&want) {
        assert!((f - w).abs() <= tol, "angle {f:e} vs {w:e} (all: {found})");
    }
}

#[test]
fn planted_angles_are_recovered_including_near_zero_ones() {
    let thetas = [
        1e-13,
        3e-10,
        1e-7,
        1e-4,
        0.3,
        FRAC_PI_4 - 1e-6,
        1.2,
        FRAC_PI_2 - 1e-9,
    ];
    let mut r = rng(1);
    let (a, b) = planted(20, &thetas, &mut r);
    let found = principal_angles(a.view(), b.view()).unwrap();
    assert_angles(&found, &thetas, ANGLE_TOL);
    // Arccos of the cosines alone cannot see the smallest ones: the first two planted angles
    // have cosines that round to 1, and arccos resolves nothing below ~1.5e-8.
    assert!(found[0] < 1e-12 && found[1] < 1e-9 && found[1] > 1e-10);
    // Symmetric in A and B.
    let back = principal_angles(b.view(), a.view()).unwrap();
    assert!(found.iter().zip(&back).all(|(x, y)| (x - y).abs() < 1e-14));
}

#[test]
fn identical_subspaces_give_zero_and_orthogonal_ones_give_right_angles() {
    let mut r = rng(2);
    let a = random_matrix(12, 4, &mut r);
    let (mix, _) = invertible(4, &mut r);
    let same = principal_angles(a.view(), a.dot(&mix).view()).unwrap();
    assert_angles(&same, &[0.0; 4], 1e-14);
    let q = random_orthogonal(12, &mut r);
    let (x, y) = (q.slice(s![.., ..3]), q.slice(s![.., 3..8]));
    let right = principal_angles(x, y).unwrap();
    assert_angles(&right, &[FRAC_PI_2; 3], 1e-14);
}

#[test]
fn subspaces_of_different_dimension_and_a_vector_against_a_subspace() {
    let mut r = rng(3);
    // B (dimension 5) contains A's first direction and is at 0.4 from its second one.
    let q = random_orthogonal(10, &mut r);
    let a = q.slice(s![.., ..2]).to_owned();
    let mut b = q.slice(s![.., 2..7]).to_owned();
    b.column_mut(0).assign(&q.column(0));
    let tilted = &q.column(1) * 0.4f64.cos() + &q.column(7) * 0.4f64.sin();
    b.column_mut(1).assign(&tilted);
    for (x, y) in [(&a, &b), (&b, &a)] {
        assert_angles(
            &principal_angles(x.view(), y.view()).unwrap(),
            &[0.0, 0.4],
            1e-14,
        );
    }
    // A vector against a random subspace: the angle is arcsin(‖v − P v‖ / ‖v‖), with P the
    // projection on a Gram–Schmidt basis of the subspace — an independent computation.
    let w = random_matrix(10, 3, &mut r);
    let v = random_matrix(10, 1, &mut r);
    let mut basis = w.clone();
    gram_schmidt(&mut basis);
    let vv = v.column(0);
    let residual = &vv - &basis.dot(&basis.t().dot(&vv));
    let want = (residual.dot(&residual).sqrt() / vv.dot(&vv).sqrt()).asin();
    let found = principal_angles(v.view(), w.view()).unwrap();
    assert_angles(&found, &[want], 1e-14);
}

#[test]
fn f32_bases_and_rank_deficient_bases() {
    let mut r = rng(4);
    let (a, b) = planted(8, &[0.2, 0.9], &mut r);
    let found = principal_angles(a.mapv(|v| v as f32).view(), b.mapv(|v| v as f32).view()).unwrap();
    assert_angles(&found, &[0.2, 0.9], 1e-6); // f32 input: rounding of the data, ~1e-7
                                              // A repeated column: the column space has dimension 2, so 2 angles (SciPy's `orth`).
    let mut dup = Array2::zeros((8, 3));
    dup.slice_mut(s![.., ..2]).assign(&a);
    dup.column_mut(2).assign(&a.column(0));
    let found = principal_angles(dup.view(), b.view()).unwrap();
    assert_angles(&found, &[0.2, 0.9], ANGLE_TOL);
    // A zero matrix spans {0}: no angles.
    assert_eq!(
        principal_angles(Array2::<f64>::zeros((8, 2)).view(), b.view())
            .unwrap()
            .len(),
        0
    );
}

#[test]
fn principal_angles_reject_bad_input() {
    let a = Array2::<f64>::eye(3);
    let b = Array2::<f64>::zeros((4, 2));
    assert!(matches!(
        principal_angles(a.view(), b.view()),
        Err(Error::ShapeMismatch { .. })
    ));
    let mut nan = Array2::<f64>::eye(3);
    nan[[1, 1]] = f64::NAN;
    assert!(matches!(
        principal_angles(a.view(), nan.view()),
        Err(Error::NonFinite { .. })
    ));
    let empty = Array2::<f64>::zeros((0, 2));
    assert!(matches!(
        principal_angles(empty.view(), empty.view()),
        Err(Error::EmptyInput { .. })
    ));
}

/// `Σ_i s_i u_i v_iᵀ` over the columns of `u` and `v`.
fn from_svd(u: &Array2<f64>, s: &[f64], v: &Array2<f64>) -> Array2<f64> {
    let scaled = &u.slice(s![.., ..s.len()]) * &Array1::from(s.to_vec()).insert_axis(Axis(0));
    scaled.dot(&v.slice(s![.., ..s.len()]).t())
}

/// Rotate columns `i` and `k + i` of `q` by `θ_i` (keeps `q` orthogonal).
fn rotate_pairs(q: &Array2<f64>, thetas: &[f64]) -> Array2<f64> {
    let k = thetas.len();
    let mut out = q.clone();
    for (i, t) in thetas.iter().enumerate() {
        let (x, y) = (q.column(i), q.column(k + i));
        out.column_mut(i).assign(&(&x * t.cos() + &y * t.sin()));
        out.column_mut(k + i)
            .assign(&(&x * -t.sin() + &y * t.cos()));
    }
    out
}

#[test]
fn weight_subspaces_with_planted_singular_vectors() {
    let mut r = rng(5);
    let (u, v) = (random_orthogonal(6, &mut r), random_orthogonal(12, &mut r));
    let sv = [5.0, 4.0, 1.0, 0.5, 0.2, 0.1];
    let (left, right) = ([1e-9, 0.5], [0.25, 1e-11]);
    let wa = from_svd(&u, &sv, &v);
    let wb = from_svd(
        &rotate_pairs(&u, &left),
        &[7.0, 3.0, 0.9, 0.4, 0.3, 0.1],
        &rotate_pairs(&v, &right),
    );
    let mut a = Params::new();
    let mut b = Params::new();
    a.insert("fc.weight", wa.clone().into_dyn());
    b.insert("fc.weight", wb.clone().into_dyn());
    // The same numbers as a conv weight [6, 3, 2, 2] (reshaped to [6, 12] by the function).
    a.insert(
        "conv.weight",
        wa.clone()
            .into_shape_with_order((6, 3, 2, 2))
            .unwrap()
            .into_dyn(),
    );
    b.insert(
        "conv.weight",
        wb.clone()
            .into_shape_with_order((6, 3, 2, 2))
            .unwrap()
            .into_dyn(),
    );
    let angles = weight_subspace_angles(&a, &b, &["fc.weight", "conv.weight"], 2).unwrap();
    for layer in &angles {
        assert_angles(&layer.left, &left, ANGLE_TOL);
        assert_angles(&layer.right, &right, ANGLE_TOL);
        assert!(
            (layer.singular_a[0] - 5.0).abs() < 1e-13 && (layer.singular_b[1] - 3.0).abs() < 1e-13
        );
    }
    assert_eq!(angles[1].name, "conv.weight");
    assert_eq!(angles[0].left, angles[1].left);
    // A model against itself.
    let same = weight_subspace_angles(&a, &a, &["fc.weight"], 4).unwrap();
    assert!(same[0]
        .left
        .iter()
        .chain(&same[0].right)
        .all(|&t| t < 1e-14));
}

#[test]
fn weight_subspace_angles_reject_bad_input() {
    let mut r = rng(6);
    let mut a = Params::new();
    let u = random_orthogonal(4, &mut r);
    let v = random_orthogonal(5, &mut r);
    a.insert("w", from_svd(&u, &[3.0, 2.0], &v).into_dyn()); // rank 2, shape [4, 5]
    a.insert("b", Array1::<f64>::zeros(4).into_dyn());
    let k_err = |k| weight_subspace_angles(&a, &a, &["w"], k).unwrap_err();
    assert!(matches!(k_err(0), Error::InvalidArgument { name: "k", .. }));
    assert!(matches!(k_err(5), Error::InvalidArgument { name: "k", .. }));
    assert!(matches!(
        k_err(3),
        Error::RankDeficient {
            rank: 2,
            required: 3,
            ..
        }
    ));
    assert!(weight_subspace_angles(&a, &a, &["w"], 2).is_ok());
    assert!(matches!(
        weight_subspace_angles(&a, &a, &["b"], 1),
        Err(Error::RankMismatch { .. })
    ));
    assert!(matches!(
        weight_subspace_angles(&a, &a, &["missing"], 1),
        Err(Error::MissingParam { .. })
    ));
    let mut b = a.clone();
    b.insert("w", Array2::<f64>::zeros((5, 4)).into_dyn());
    assert!(matches!(
        weight_subspace_angles(&a, &b, &["w"], 1),
        Err(Error::ShapeMismatch { .. })
    ));
    assert!(matches!(
        weight_subspace_angles::<f64, &str>(&a, &a, &[], 1),
        Err(Error::EmptyInput { .. })
    ));
}

#[test]
fn feature_subspaces_with_planted_principal_directions() {
    // Centred features of rank exactly k along orthonormal directions D (plus a mean offset):
    // their top-k principal subspace is span D.
    let (n, d, k) = (50, 7, 3);
    let mut r = rng(7);
    let q = random_orthogonal(d, &mut r);
    let thetas = [2e-10, 0.1, 1.0];
    let (da, db) = (
        q.slice(s![.., ..k]).to_owned(),
        rotate_pairs(&q, &thetas).slice(s![.., ..k]).to_owned(),
    );
    let features = |dirs: &Array2<f64>, r: &mut ChaCha8Rng| {
        let scores = random_matrix(n, k, r);
        let offset = random_matrix(1, d, r);
        (scores.dot(&dirs.t()) + offset).into_dyn()
    };
    let (ha, hb) = (features(&da, &mut r), features(&db, &mut r));
    let found = feature_subspace_angles(ha.view(), hb.view(), k).unwrap();
    assert_angles(&found, &thetas, ANGLE_TOL);
    // k above the rank of the centred features, k above the width, different widths.
    assert!(matches!(
        feature_subspace_angles(ha.view(), hb.view(), k + 1),
        Err(Error::RankDeficient {
            rank: 3,
            required: 4,
            ..
        })
    ));
    assert!(matches!(
        feature_subspace_angles(ha.view(), hb.view(), d + 1),
        Err(Error::InvalidArgument { name: "k", .. })
    ));
    let narrow = ha.slice(s![.., ..d - 1]).to_owned().into_dyn();
    assert!(matches!(
        feature_subspace_angles(ha.view(), narrow.view(), 1),
        Err(Error::ShapeMismatch { .. })
    ));
}

/// Features `b` (`[n, d]`, random, with a mean) and `a = b Mᵀ + c`: each sample `a = M b + c`.
fn mapped_features(n: usize, m: &Array2<f64>, r: &mut ChaCha8Rng) -> (Array2<f64>, Array2<f64>) {
    let b = random_matrix(n, m.ncols(), r) + 0.3;
    let c = random_matrix(1, m.nrows(), r);
    (b.dot(&m.t()) + c, b)
}

#[test]
fn cca_of_an_exact_invertible_map_recovers_it() {
    let mut r = rng(8);
    let (m, m_inv) = invertible(6, &mut r);
    let (a, b) = mapped_features(300, &m, &mut r);
    let mut stats = CcaStats::new(6, 6);
    // Streamed in two batches of different sizes.
    stats
        .update(a.slice(s![..120, ..]), b.slice(s![..120, ..]))
        .unwrap();
    stats
        .update(a.slice(s![120.., ..]), b.slice(s![120.., ..]))
        .unwrap();
    assert_eq!(stats.count(), 300);
    let exact = CcaOptions {
        regularization: Regularization::Relative(0.0),
    };
    let c = cca(&stats, &exact).unwrap();
    assert!(
        c.correlations.iter().all(|&rho| (rho - 1.0).abs() < 1e-10),
        "{}",
        c.correlations
    );
    assert!(max_abs_diff(&c.transform, &m) < 1e-10);
    assert!(max_abs_diff(c.inverse.as_ref().unwrap(), &m_inv) < 1e-10);
    // With a small ridge (a multiple of the mean variance on both sides) the map is still
    // close and the correlations are just below 1.
    let small = CcaOptions {
        regularization: Regularization::Relative(1e-4),
    };
    let c = cca(&stats, &small).unwrap();
    assert!(c
        .correlations
        .iter()
        .all(|&rho| rho < 1.0 && rho > 1.0 - 1e-3));
    assert!(max_abs_diff(&c.transform, &m) < 1e-3);
}

#[test]
fn canonical_variables_have_the_reported_correlations() {
    // Noisy, rectangular (d_a = 4, d_b = 3): the correlation of the projections `X_A w_A,i` and
    // `X_B w_B,i`, computed here from the raw features, is ρ_i, and different pairs are
    // uncorrelated.
    let mut r = rng(9);
    let n = 400;
    let shared = random_matrix(n, 2, &mut r);
    let a = shared.dot(&random_matrix(2, 4, &mut r)) + random_matrix(n, 4, &mut r) * 0.5;
    let b = shared.dot(&random_matrix(2, 3, &mut r)) + random_matrix(n, 3, &mut r) * 0.5;
    let mut stats = CcaStats::new(4, 3);
    stats.update(a.view(), b.view()).unwrap();
    let exact = CcaOptions {
        regularization: Regularization::Relative(0.0),
    };
    let c = cca(&stats, &exact).unwrap();
    assert_eq!(c.correlations.len(), 3);
    assert!(c.inverse.is_none());
    let centred = |x: &Array2<f64>| x - &x.mean_axis(Axis(0)).unwrap().insert_axis(Axis(0));
    let (pa, pb) = (
        centred(&a).dot(&c.directions_a),
        centred(&b).dot(&c.directions_b),
    );
    for i in 0..3 {
        for j in 0..3 {
            let cov = pa.column(i).dot(&pb.column(j)) / n as f64;
            let want = if i == j { c.correlations[i] } else { 0.0 };
            assert!((cov - want).abs() < 1e-10, "({i}, {j}): {cov} vs {want}");
            // Whitened: unit variance, uncorrelated within each model.
            let var = pa.column(i).dot(&pa.column(j)) / n as f64;
            assert!((var - f64::from(u8::from(i == j))).abs() < 1e-10);
        }
    }
    assert!(c.correlations[0] > 0.5 && c.correlations[2] < c.correlations[1]);
}

#[test]
fn cca_statistics_stream_and_merge() {
    let mut r = rng(10);
    let (a, b) = (random_matrix(90, 3, &mut r), random_matrix(90, 2, &mut r));
    let mut whole = CcaStats::new(3, 2);
    whole.update(a.view(), b.view()).unwrap();
    let (mut first, mut second) = (CcaStats::new(3, 2), CcaStats::new(3, 2));
    first
        .update(a.slice(s![..31, ..]), b.slice(s![..31, ..]))
        .unwrap();
    second
        .update(a.slice(s![31.., ..]), b.slice(s![31.., ..]))
        .unwrap();
    first.merge(&second).unwrap();
    let (x, y) = (whole.covariances().unwrap(), first.covariances().unwrap());
    assert!(max_abs_diff(&x.0, &y.0) < 1e-14 && max_abs_diff(&x.1, &y.1) < 1e-14);
    assert!(max_abs_diff(&x.2, &y.2) < 1e-14);
    // Σ_AA against the textbook formula.
    let ca = &a - &a.mean_axis(Axis(0)).unwrap().insert_axis(Axis(0));
    assert!(max_abs_diff(&x.0, &(ca.t().dot(&ca) / 90.0)) < 1e-14);
}

#[test]
fn rank_deficient_features_need_the_documented_ridge() {
    let mut r = rng(11);
    // B has a dead unit (constant 0) and a unit that copies another: Σ_BB has rank 3 of 5.
    let a = random_matrix(100, 5, &mut r);
    let mut b = a.clone();
    b.column_mut(1).fill(0.0);
    let copy = b.column(2).to_owned();
    b.column_mut(4).assign(&copy);
    let mut stats = CcaStats::new(5, 5);
    stats.update(a.view(), b.view()).unwrap();
    let zero = CcaOptions {
        regularization: Regularization::Relative(0.0),
    };
    assert!(matches!(
        cca(&stats, &zero),
        Err(Error::RankDeficient {
            rank: 3,
            required: 5,
            ..
        })
    ));
    // With a ridge: finite maps, three correlations near 1 (the shared units), two near 0.
    let small = CcaOptions {
        regularization: Regularization::Relative(1e-4),
    };
    let c = cca(&stats, &small).unwrap();
    assert!(c
        .transform
        .iter()
        .chain(c.inverse.as_ref().unwrap())
        .all(|v| v.is_finite()));
    assert!(c.correlations.slice(s![..3]).iter().all(|&rho| rho > 0.999));
    assert!(c
        .correlations
        .slice(s![3..])
        .iter()
        .all(|&rho| rho.abs() < 1e-6));
    // The ridge `ε tr(Σ)/d` is 0 for all-constant features: rejected; an absolute one works.
    let mut flat = CcaStats::new(2, 2);
    let ones = Array2::<f64>::ones((10, 2));
    flat.update(ones.view(), ones.view()).unwrap();
    assert!(matches!(
        cca(&flat, &CcaOptions::default()),
        Err(Error::RankDeficient { .. })
    ));
    let absolute = CcaOptions {
        regularization: Regularization::Absolute(0.1),
    };
    assert_eq!(
        cca(&flat, &absolute).unwrap().correlations,
        Array1::from(vec![0.0, 0.0])
    );
    for bad in [-1e-3, f64::NAN] {
        let options = CcaOptions {
            regularization: Regularization::Relative(bad),
        };
        assert!(matches!(
            cca(&stats, &options),
            Err(Error::InvalidArgument { .. })
        ));
    }
    assert!(matches!(
        cca(&CcaStats::new(2, 2), &zero),
        Err(Error::EmptyInput { .. })
    ));
    assert!(matches!(
        stats.update(a.view(), b.slice(s![..50, ..])),
        Err(Error::ShapeMismatch { .. })
    ));
    assert_eq!(stats.count(), 100); // nothing was added by the failed update
}

/// The linear network `z_ℓ = z_{ℓ−1} W_ℓᵀ + b_ℓ` (an MLP's parameters without the ReLUs): the
/// logits and every hidden layer's features.
fn linear_forward(params: &Params<f64>, x: &Array2<f64>) -> Vec<Array2<f64>> {
    let layers = mlp::num_layers(params).unwrap();
    let mut h = x.clone();
    let mut out = Vec::new();
    for l in 0..layers {
        let w = params[mlp::weight_name(l).as_str()]
            .view()
            .into_dimensionality::<ndarray::Ix2>()
            .unwrap();
        let b = params[mlp::bias_name(l).as_str()]
            .view()
            .into_dimensionality::<ndarray::Ix1>()
            .unwrap();
        h = h.dot(&w.t()) + b.insert_axis(Axis(0));
        out.push(h.clone());
    }
    out
}

/// Hidden-layer features keyed like [`PermutationSpec::mlp`]'s permutations.
fn keyed(hidden: &[Array2<f64>]) -> BTreeMap<String, ArrayD<f64>> {
    hidden
        .iter()
        .enumerate()
        .map(|(l, h)| (format!("P_{l}"), h.clone().into_dyn()))
        .collect()
}

#[test]
fn cca_alignment_of_a_linear_network_keeps_its_function_and_undoes_a_reparameterisation() {
    // Inputs at least as wide as the hidden layers, so the hidden features have full rank.
    let widths = [8, 7, 6, 3];
    let spec = PermutationSpec::mlp(3);
    let mut r = rng(12);
    let a: Params<f64> = mlp::init(&widths, &mut r).unwrap();
    // B = A with hidden units mixed by invertible S_ℓ: W⁰ ← S₀W⁰, b⁰ ← S₀b⁰,
    // W¹ ← S₁W¹S₀⁻¹, b¹ ← S₁b¹, W² ← W²S₁⁻¹. Without ReLUs B computes A's function, and its
    // hidden features are S_ℓ times A's, so CCA must find T_ℓ = S_ℓ⁻¹ and map B back onto A.
    let (s0, s0_inv) = invertible(7, &mut r);
    let (s1, s1_inv) = invertible(6, &mut r);
    let mat = |p: &Params<f64>, name: String| -> Array2<f64> {
        p[name.as_str()]
            .view()
            .into_dimensionality()
            .unwrap()
            .to_owned()
    };
    let vec1 = |p: &Params<f64>, name: String| -> Array1<f64> {
        p[name.as_str()]
            .view()
            .into_dimensionality()
            .unwrap()
            .to_owned()
    };
    let mut b = Params::new();
    b.insert(
        "layers.0.weight",
        s0.dot(&mat(&a, mlp::weight_name(0))).into_dyn(),
    );
    b.insert(
        "layers.0.bias",
        s0.dot(&vec1(&a, mlp::bias_name(0))).into_dyn(),
    );
    b.insert(
        "layers.1.weight",
        s1.dot(&mat(&a, mlp::weight_name(1)))
            .dot(&s0_inv)
            .into_dyn(),
    );
    b.insert(
        "layers.1.bias",
        s1.dot(&vec1(&a, mlp::bias_name(1))).into_dyn(),
    );
    b.insert(
        "layers.2.weight",
        mat(&a, mlp::weight_name(2)).dot(&s1_inv).into_dyn(),
    );
    b.insert("layers.2.bias", vec1(&a, mlp::bias_name(2)).into_dyn());
    let x = random_matrix(200, 8, &mut r);
    let (fa, fb) = (linear_forward(&a, &x), linear_forward(&b, &x));
    let exact = CcaOptions {
        regularization: Regularization::Relative(0.0),
    };
    let alignment =
        cca_alignment_from_features(&keyed(&fa[..2]), &keyed(&fb[..2]), &exact).unwrap();
    assert!(max_abs_diff(&alignment["P_0"].transform, &s0_inv) < 1e-10);
    assert!(max_abs_diff(&alignment["P_1"].transform, &s1_inv) < 1e-10);
    let aligned = apply_cca(&spec, &alignment, &b).unwrap();
    assert!(aligned.distance(&a).unwrap() < 1e-10 * a.norm_sq().sqrt());
    // Independent A and B, default ridge: the aligned B computes B's function (to 1e-10
    // relative), since no nonlinearity sits between the maps and their inverses.
    let c: Params<f64> = mlp::init(&widths, &mut r).unwrap();
    let fc = linear_forward(&c, &x);
    let alignment =
        cca_alignment_from_features(&keyed(&fa[..2]), &keyed(&fc[..2]), &CcaOptions::default())
            .unwrap();
    let aligned = apply_cca(&spec, &alignment, &c).unwrap();
    let after = linear_forward(&aligned, &x);
    let change = max_abs_diff(&after[2], &fc[2]) / fc[2].iter().fold(0.0f64, |m, v| m.max(v.abs()));
    assert!(change < 1e-10, "relative change {change}");
    // ... and its hidden features are the mapped ones, T_ℓ h_ℓ.
    let mapped = fc[0].dot(&alignment["P_0"].transform.t());
    assert!(max_abs_diff(&after[0], &mapped) < 1e-10);
}

#[test]
fn cca_alignment_of_a_permuted_relu_network_is_the_permutation() {
    // A permutation commutes with ReLU: CCA of B = π(A) maps B back onto A exactly, and the
    // function of B is unchanged — the one nonlinear case where the alignment is exact.
    let widths = [6, 8, 8, 3];
    let spec = PermutationSpec::mlp(3);
    let mut r = rng(14); // seeds 13–22: a dead unit at 13 and 17 (see below), the others pass
    let a: Params<f64> = mlp::init(&widths, &mut r).unwrap();
    let perms: BTreeMap<String, Permutation> = [("P_0", 8), ("P_1", 8)]
        .into_iter()
        .map(|(k, n)| (k.to_string(), Permutation::random(n, &mut r)))
        .collect();
    let b = llfc::apply_permutations(&spec, &perms, &a).unwrap();
    let x = random_matrix(500, 6, &mut r) * 2.0;
    let hidden = |p: &Params<f64>| {
        let f = mlp::forward_features(p, &x).unwrap();
        keyed(&f.post[..2])
    };
    // The premise: no dead unit. A unit that is 0 on every input has zero variance, so its
    // correlation is 0 and CCA cannot tell which dead unit of A it corresponds to (any pairing
    // of zero-correlation directions is a valid T).
    for h in hidden(&a).values() {
        let var = h.var_axis(Axis(0), 0.0);
        assert!(var.iter().all(|&v| v > 1e-6), "a dead unit: {var}");
    }
    let alignment =
        cca_alignment_from_features(&hidden(&a), &hidden(&b), &CcaOptions::default()).unwrap();
    let aligned = apply_cca(&spec, &alignment, &b).unwrap();
    assert!(aligned.distance(&a).unwrap() < 1e-10 * a.norm_sq().sqrt());
    let change = mlp_function_change(&b, &aligned, &x).unwrap();
    assert!(change.relative_logits < 1e-10 && change.same_prediction == 1.0);
    // Independent ReLU networks: the alignment is an approximation and changes the function.
    let c: Params<f64> = mlp::init(&widths, &mut r).unwrap();
    let alignment =
        cca_alignment_from_features(&hidden(&a), &hidden(&c), &CcaOptions::default()).unwrap();
    let aligned = apply_cca(&spec, &alignment, &c).unwrap();
    let change = mlp_function_change(&c, &aligned, &x).unwrap();
    assert!(change.relative_logits > 1e-3, "{change:?}");
}

#[test]
fn apply_cca_rejects_maps_that_do_not_fit() {
    let spec = PermutationSpec::mlp(2);
    let mut r = rng(14);
    let a: Params<f64> = mlp::init(&[3, 4, 2], &mut r).unwrap();
    let x = random_matrix(50, 3, &mut r);
    let f = mlp::forward_features(&a, &x).unwrap();
    let features = keyed(&f.post[..1]);
    let alignment =
        cca_alignment_from_features(&features, &features, &CcaOptions::default()).unwrap();
    assert!(apply_cca(&spec, &alignment, &a).is_ok());
    assert!(matches!(
        apply_cca(&spec, &BTreeMap::new(), &a),
        Err(Error::PermutationName { .. })
    ));
    let mut extra = alignment.clone();
    extra.insert("P_9".into(), alignment["P_0"].clone());
    assert!(matches!(
        apply_cca(&spec, &extra, &a),
        Err(Error::PermutationName { .. })
    ));
    // A rectangular CCA (3 units of A against 4 of B) has no inverse.
    let narrow = keyed(&[f.post[0].slice(s![.., ..3]).to_owned()]);
    let rect = cca_alignment_from_features(&narrow, &features, &CcaOptions::default()).unwrap();
    assert!(matches!(
        apply_cca(&spec, &rect, &a),
        Err(Error::ShapeMismatch { .. })
    ));
    let mut nan = alignment;
    nan.get_mut("P_0").unwrap().transform[[0, 0]] = f64::NAN;
    assert!(matches!(
        apply_cca(&spec, &nan, &a),
        Err(Error::NonFinite { .. })
    ));
}
