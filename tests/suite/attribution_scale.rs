//! The LLFC error attribution and the convolutional commutativity are scale-safe, like the rest
//! of `metrics` (issue 10, item 7, extended to `metrics::attribution` and `conv_commutativity`):
//! features of 1e±300 give the shares, ratios and relative deviations of unscaled ones, and
//! norms scaled by `|s|`.

use llfc::metrics::attribution::{
    attribution_dense, local_split_activation, local_split_conv, local_split_dense, Activation,
    AttributionOptions, ConvLayer, DenseLayer, Deviation, LocalSplit, Part,
};
use llfc::metrics::{conv_commutativity, ConvGeometry};
use ndarray::{Array, Array1, Array2, Array4, Dimension, ShapeBuilder};
use proptest::prelude::*;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// Magnitudes in [0.1, 1] with random signs: every value stays a normal f64 at 1e-300.
fn random<D: Dimension, Sh: ShapeBuilder<Dim = D>>(
    shape: Sh,
    rng: &mut ChaCha8Rng,
) -> Array<f64, D> {
    Array::from_shape_simple_fn(shape, || {
        let m = rng.random_range(0.1..1.0);
        if rng.random::<bool>() {
            m
        } else {
            -m
        }
    })
}

/// How a scaled result must compare with the unscaled one.
#[derive(Clone, Copy)]
struct Expect {
    /// `|s|`: norms are multiplied by it.
    factor: f64,
    /// Relative tolerance; 0 demands bit-for-bit equality (a power-of-two scale).
    tol: f64,
}

impl Expect {
    fn value(&self, got: f64, want: f64, what: &str) {
        if self.tol == 0.0 {
            assert_eq!(got, want, "{what}");
        } else {
            let err = (got - want).abs();
            assert!(
                err <= self.tol * (1.0 + want.abs()),
                "{what}: {got} vs {want}"
            );
        }
    }

    fn option(&self, got: Option<f64>, want: Option<f64>, what: &str) {
        assert_eq!(got.is_some(), want.is_some(), "{what}: {got:?} vs {want:?}");
        if let (Some(g), Some(w)) = (got, want) {
            self.value(g, w, what);
        }
    }

    /// A norm: `got / |s|` against `want`, to `tol` relative to `magnitude` (the size of the
    /// quantities it is computed from: a deviation is a difference of terms of the reference's
    /// size, so its rounding is relative to the reference, not to itself).
    fn norm(&self, got: f64, want: f64, magnitude: f64, what: &str) {
        assert!(got.is_finite(), "{what}: {got}");
        if self.tol == 0.0 {
            assert_eq!(got, want * self.factor, "{what}");
        } else {
            let err = (got / self.factor - want).abs();
            let bound = self.tol * want.abs().max(magnitude);
            assert!(err <= bound, "{what}: {got} / {} vs {want}", self.factor);
        }
    }

    /// Norms, relative deviation, and — where the deviation is more than rounding (relative
    /// above 1e-10; a zero deviation, e.g. layer 0's, has shares and a closure that are ratios
    /// of roundings) — the shares and the closure.
    fn totals(&self, got: Totals<'_>, want: Totals<'_>, what: &str) {
        let magnitude = want.norm.max(want.reference);
        self.norm(got.norm, want.norm, magnitude, &format!("{what} ‖Δ‖"));
        self.norm(
            got.reference,
            want.reference,
            magnitude,
            &format!("{what} ‖reference‖"),
        );
        self.option(got.relative, want.relative, &format!("{what} relative"));
        let meaningful = self.tol == 0.0 || want.relative.is_some_and(|r| r > 1e-10);
        assert_eq!(got.parts.len(), want.parts.len());
        for ((g, w), name) in got.parts.iter().zip(want.parts).zip(want.names) {
            let what = format!("{what} {name}");
            self.norm(g.norm, w.norm, magnitude, &format!("{what} norm"));
            if meaningful {
                self.option(g.share, w.share, &format!("{what} share"));
            }
        }
        if meaningful {
            self.option(got.closure, want.closure, &format!("{what} closure"));
        }
    }

    fn deviation(&self, got: &Deviation, want: &Deviation, what: &str) {
        self.totals(Totals::of_deviation(got), Totals::of_deviation(want), what);
    }

    fn split(&self, got: &LocalSplit, want: &LocalSplit, what: &str) {
        self.totals(Totals::of_split(got), Totals::of_split(want), what);
    }
}

/// What [`Expect::totals`] compares of a [`Deviation`] or a [`LocalSplit`].
struct Totals<'a> {
    norm: f64,
    reference: f64,
    relative: Option<f64>,
    closure: Option<f64>,
    parts: Vec<&'a Part>,
    names: Vec<String>,
}

impl<'a> Totals<'a> {
    fn of_deviation(d: &'a Deviation) -> Self {
        Self {
            norm: d.norm,
            reference: d.reference_norm,
            relative: d.relative,
            closure: d.closure,
            parts: d.contributions.iter().map(|c| &c.part).collect(),
            names: d
                .contributions
                .iter()
                .map(|c| format!("{:?}", c.source))
                .collect(),
        }
    }

    fn of_split(d: &'a LocalSplit) -> Self {
        Self {
            norm: d.norm,
            reference: d.reference_norm,
            relative: d.relative,
            closure: d.closure,
            parts: vec![&d.propagated, &d.own],
            names: vec!["propagated".into(), "own".into()],
        }
    }
}

/// Model `m`'s dense layers: weights `w[ℓ][m]`, biases `b[ℓ][m]`.
fn layers_of<'a>(
    w: &'a [[Array2<f64>; 2]],
    b: &'a [[Array1<f64>; 2]],
    m: usize,
) -> Vec<DenseLayer<'a, f64>> {
    w.iter()
        .zip(b)
        .map(|(w, b)| DenseLayer {
            weight: w[m].view(),
            bias: Some(b[m].view()),
        })
        .collect()
}

/// Check every scale-free quantity of the attribution, the local splits and the conv
/// commutativity at features (and biases) times `s > 0` against the unscaled ones.
fn check_scale(seed: u64, s: f64, alpha: f64, expect: Expect) {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let widths = [4, 6, 5, 3];
    let w: Vec<[Array2<f64>; 2]> = widths
        .windows(2)
        .map(|p| {
            [
                random((p[1], p[0]), &mut rng),
                random((p[1], p[0]), &mut rng),
            ]
        })
        .collect();
    let b: Vec<[Array1<f64>; 2]> = widths[1..]
        .iter()
        .map(|&o| [random(o, &mut rng), random(o, &mut rng)])
        .collect();
    let x: Array2<f64> = random((7, 4), &mut rng);
    let bs: Vec<[Array1<f64>; 2]> = b.iter().map(|[p, q]| [p * s, q * s]).collect();
    let acts = [Activation::Relu, Activation::Relu, Activation::Identity];
    let alphas = [alpha, 0.5];
    let opts = AttributionOptions::default();
    let (la, lb) = (layers_of(&w, &b, 0), layers_of(&w, &b, 1));
    let att = attribution_dense(&la, &lb, &acts, &x, &alphas, &opts).unwrap();
    let xs = &x * s;
    let (las, lbs) = (layers_of(&w, &bs, 0), layers_of(&w, &bs, 1));
    let atts = attribution_dense(&las, &lbs, &acts, &xs, &alphas, &opts).unwrap();
    for (row, rows) in att.layers.iter().zip(&atts.layers) {
        for (l, ls) in row.iter().zip(rows) {
            let what = format!("layer {} α {}", l.layer, l.alpha);
            expect.deviation(&ls.pre, &l.pre, &format!("{what} pre"));
            expect.deviation(&ls.post, &l.post, &format!("{what} post"));
        }
    }

    // Local splits of the first layer from features (inputs H and biases scaled together).
    let h: [Array2<f64>; 3] = [
        random((7, 4), &mut rng),
        random((7, 4), &mut rng),
        random((7, 4), &mut rng),
    ];
    let hs: Vec<Array2<f64>> = h.iter().map(|v| v * s).collect();
    let dense = |biases: &[[Array1<f64>; 2]], h: &[Array2<f64>]| {
        let (la, lb) = (layers_of(&w, biases, 0)[0], layers_of(&w, biases, 1)[0]);
        local_split_dense(la, lb, h[0].view(), h[1].view(), h[2].view(), alpha).unwrap()
    };
    expect.split(&dense(&bs, &hs), &dense(&b, &h), "local dense");
    let act = local_split_activation(&h[0], &h[1], &h[2], alpha).unwrap();
    let act_s = local_split_activation(&hs[0], &hs[1], &hs[2], alpha).unwrap();
    expect.split(&act_s, &act, "local activation");

    // Conv: local split (inputs and biases scaled) and commutativity (inputs scaled, and weights
    // scaled by s with inputs by 1/s: R is bilinear).
    let geometry = ConvGeometry {
        padding: [1, 1],
        stride: [2, 1],
        ..ConvGeometry::default()
    };
    let cw: [Array4<f64>; 2] = [
        random((3, 2, 3, 3), &mut rng),
        random((3, 2, 3, 3), &mut rng),
    ];
    let cb: [Array1<f64>; 2] = [random(3, &mut rng), random(3, &mut rng)];
    let cbs = [&cb[0] * s, &cb[1] * s];
    let ch: [Array4<f64>; 3] = [
        random((3, 2, 5, 4), &mut rng),
        random((3, 2, 5, 4), &mut rng),
        random((3, 2, 5, 4), &mut rng),
    ];
    let chs: Vec<Array4<f64>> = ch.iter().map(|v| v * s).collect();
    let conv = |bias: &[Array1<f64>; 2], h: &[Array4<f64>]| {
        let layer = |m: usize| ConvLayer {
            weight: cw[m].view(),
            bias: Some(bias[m].view()),
        };
        let (ha, hb, hal) = (h[0].view(), h[1].view(), h[2].view());
        local_split_conv(layer(0), layer(1), ha, hb, hal, alpha, &geometry).unwrap()
    };
    expect.split(&conv(&cbs, &chs), &conv(&cb, &ch), "local conv");
    let commute = |w: &[Array4<f64>], h: &[Array4<f64>]| {
        conv_commutativity(
            w[0].view(),
            w[1].view(),
            h[0].view(),
            h[1].view(),
            &geometry,
        )
        .unwrap()
    };
    let c = commute(&cw, &ch);
    let cs = commute(&cw, &chs);
    expect.option(cs.relative, c.relative, "conv relative");
    expect.option(cs.vanilla, c.vanilla, "conv vanilla");
    expect.option(cs.baseline, c.baseline, "conv baseline");
    expect.norm(
        cs.residual_norm,
        c.residual_norm,
        c.residual_norm,
        "conv ‖R‖",
    );
    let ci = commute(&[&cw[0] * s, &cw[1] * s], &[&ch[0] / s, &ch[1] / s]);
    let inverse = Expect {
        factor: 1.0,
        ..expect
    };
    inverse.option(ci.relative, c.relative, "conv relative, W·s and H/s");
    inverse.option(ci.baseline, c.baseline, "conv baseline, W·s and H/s");
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    /// Scales `10^k`, `k ∈ [−300, 300]`. Tolerance 1e-9 relative: multiplying by `10^k` rounds
    /// every input entry by at most ε = 2^−53 relative (`x / s` for the inverse case too);
    /// the forward pass through 3 layers of width ≤ 6 and the sums of ≤ 7·6 terms grow that to
    /// ~1e-14, and a share `⟨c, Δ⟩ / ‖Δ‖²` divides by a deviation that may be a cancellation of
    /// O(1) terms to ~1e-3 of them: 1e-9 leaves a margin of ~10² on top. Random inputs put no
    /// pre-activation within 1e-15 of a ReLU kink, so no unit changes side under the rounding.
    #[test]
    fn attribution_does_not_depend_on_the_scale(
        seed in any::<u64>(),
        k in -300.0f64..300.0,
        alpha in 0.0f64..1.0,
    ) {
        let s = 10f64.powf(k);
        check_scale(seed, s, alpha, Expect { factor: s, tol: 1e-9 });
    }

    /// Scales `2^j`, `j ∈ [−990, 990]`: exact, so every share, ratio and closure is the same
    /// bit for bit and every norm is exactly `2^j` times the unscaled one.
    #[test]
    fn power_of_two_scales_are_exact(
        seed in any::<u64>(),
        j in -990i32..990,
        alpha in 0.0f64..1.0,
    ) {
        let s = 2f64.powi(j);
        check_scale(seed, s, alpha, Expect { factor: s, tol: 0.0 });
    }
}
