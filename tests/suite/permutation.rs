//! Permutation algebra laws and `permute_axis`, checked with proptest.

use llfc::{permute_axis, Error, Permutation};
use ndarray::{ArrayD, IxDyn};
use proptest::prelude::*;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

/// A random permutation of length `n` drawn from a seeded generator.
fn perm(n: usize, seed: u64) -> Permutation {
    Permutation::random(n, &mut ChaCha8Rng::seed_from_u64(seed))
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    #[test]
    fn inverse_composes_to_identity(n in 0usize..40, seed in any::<u64>()) {
        let p = perm(n, seed);
        prop_assert!(p.compose(&p.inverse()).unwrap().is_identity());
        prop_assert!(p.inverse().compose(&p).unwrap().is_identity());
        prop_assert_eq!(p.inverse().inverse(), p);
    }

    #[test]
    fn composition_is_associative(n in 0usize..30, s1 in any::<u64>(), s2 in any::<u64>(), s3 in any::<u64>()) {
        let (p, q, r) = (perm(n, s1), perm(n, s2), perm(n, s3));
        let left = p.compose(&q).unwrap().compose(&r).unwrap();
        let right = p.compose(&q.compose(&r).unwrap()).unwrap();
        prop_assert_eq!(left, right);
    }

    #[test]
    fn identity_is_neutral(n in 0usize..30, seed in any::<u64>()) {
        let p = perm(n, seed);
        let e = Permutation::identity(n);
        prop_assert_eq!(p.compose(&e).unwrap(), p.clone());
        prop_assert_eq!(e.compose(&p).unwrap(), p);
    }

    #[test]
    fn inverse_of_composition_reverses_order(n in 0usize..30, s1 in any::<u64>(), s2 in any::<u64>()) {
        let (p, q) = (perm(n, s1), perm(n, s2));
        prop_assert_eq!(
            p.compose(&q).unwrap().inverse(),
            q.inverse().compose(&p.inverse()).unwrap()
        );
    }

    #[test]
    fn new_accepts_exactly_bijections(map in proptest::collection::vec(0usize..8, 0..8)) {
        let mut sorted = map.clone();
        sorted.sort_unstable();
        let is_bijection = sorted == (0..map.len()).collect::<Vec<_>>();
        prop_assert_eq!(Permutation::new(map).is_ok(), is_bijection);
    }

    /// Permuting by p then by q equals permuting by p∘q, on every axis of a 3-d tensor, and
    /// permuting by p then by p⁻¹ restores the tensor exactly.
    #[test]
    fn permute_axis_laws(d0 in 1usize..5, d1 in 1usize..5, d2 in 1usize..5, axis in 0usize..3, s1 in any::<u64>(), s2 in any::<u64>()) {
        let shape = [d0, d1, d2];
        let x = ArrayD::from_shape_fn(IxDyn(&shape), |i| (i[0] * 100 + i[1] * 10 + i[2]) as f64);
        let n = shape[axis];
        let (p, q) = (perm(n, s1), perm(n, s2));
        let twice = permute_axis(&permute_axis(&x, axis, &p).unwrap(), axis, &q).unwrap();
        prop_assert_eq!(&twice, &permute_axis(&x, axis, &p.compose(&q).unwrap()).unwrap());
        let back = permute_axis(&permute_axis(&x, axis, &p).unwrap(), axis, &p.inverse()).unwrap();
        prop_assert_eq!(&back, &x);
        // Definition: out[.., i, ..] = x[.., p[i], ..].
        let y = permute_axis(&x, axis, &p).unwrap();
        for (idx, &v) in y.indexed_iter() {
            let mut src: Vec<usize> = (0..3).map(|k| idx[k]).collect();
            src[axis] = p[src[axis]];
            prop_assert_eq!(v, x[IxDyn(&src)]);
        }
    }
}

/// `P W` with the explicit permutation matrix `P[i, p[i]] = 1` equals `permute_axis(W, 0, p)`,
/// and `W Pᵀ` equals `permute_axis(W, 1, p)`: the convention of the crate docs.
#[test]
fn permute_axis_matches_permutation_matrix() -> Result<(), Error> {
    let p = perm(6, 3);
    let mut pm = ndarray::Array2::<f64>::zeros((6, 6));
    for i in 0..6 {
        pm[[i, p[i]]] = 1.0;
    }
    let w = ndarray::Array2::from_shape_fn((6, 6), |(i, j)| (i * 7 + j * 3) as f64 - 10.0);
    assert_eq!(pm.dot(&w), permute_axis(&w, 0, &p)?);
    assert_eq!(w.dot(&pm.t()), permute_axis(&w, 1, &p)?);
    Ok(())
}

#[test]
fn compose_rejects_length_mismatch() {
    let err = Permutation::identity(3).compose(&Permutation::identity(4));
    assert!(matches!(err, Err(Error::ShapeMismatch { .. })));
}

#[cfg(feature = "serde")]
#[test]
fn serde_validates_permutations() {
    let p: Permutation = serde_json::from_str("[2, 0, 1]").unwrap();
    assert_eq!(p.as_slice(), &[2, 0, 1]);
    assert_eq!(serde_json::to_string(&p).unwrap(), "[2,0,1]");
    assert!(serde_json::from_str::<Permutation>("[0, 0, 1]").is_err());
}
