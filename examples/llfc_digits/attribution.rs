//! LLFC error attribution in `llfc_digits` (`llfc::metrics::attribution`): for every pair, the
//! deviation of θ(½)'s features from the interpolated features, layer by layer, split exactly
//! into the transported contributions of every layer's commutativity failure
//! `K^ℓ = −α(1 − α)(H_A − H_B)(W_A − W_B)ᵀ` and every ReLU's weak-additivity failure
//! `E^ℓ = σ(Z_lin) − α σ(Z_A) − (1 − α) σ(Z_B)`; a table and an SVG of stacked shares.

use std::error::Error;
use std::path::{Path, PathBuf};

use llfc::data::Dataset;
use llfc::metrics::attribution::{attribution_mlp, Attribution, Deviation, Source};
use plotters::prelude::*;
use rayon::prelude::*;

use crate::commutativity::Row;
use crate::experiment::{Method, Outcome, Setup};
use crate::table::layer_name;

/// The α of the attribution.
const ALPHA: f64 = 0.5;

/// One pair's attribution.
pub struct PairAttribution {
    /// Pair label.
    pub label: &'static str,
    /// The attribution at α = ½ on the test set.
    pub attribution: Attribution,
}

impl PairAttribution {
    /// The post-activation deviation `ΔH^ℓ` (the logits' `ΔZ` for the last layer).
    fn post(&self, layer: usize) -> &Deviation {
        &self.attribution.layers[0][layer].post
    }
}

/// Attribute every pair of `rows` (naive, weight-, activation- and commutativity-matched) and
/// the spawned pair of `outcome`, on the test set at α = ½.
///
/// # Errors
/// What [`attribution_mlp`] reports.
pub fn compute(
    data: &Dataset<f32>,
    outcome: &Outcome,
    rows: &[Row],
) -> llfc::Result<Vec<PairAttribution>> {
    let spawned = outcome.pair(Method::Spawned);
    // The classic alignments (no descent), the spawned pair, then commutativity matching.
    let classic = rows.iter().filter(|r| r.descent.is_none());
    let descents = rows.iter().filter(|r| r.descent.is_some());
    let seconds = classic
        .map(|r| (r.label, &r.pair.second))
        .chain(std::iter::once((Method::Spawned.label(), &spawned.second)))
        .chain(descents.map(|r| (r.label, &r.pair.second)));
    seconds
        .collect::<Vec<_>>()
        .into_par_iter()
        .map(|(label, b)| {
            Ok(PairAttribution {
                label,
                attribution: attribution_mlp(&outcome.a, b, &data.x_test, &[ALPHA])?,
            })
        })
        .collect()
}

/// `C(h2)` for the commutativity of the layer producing h2, `E(h1)` for h1's ReLU.
fn source_name(source: Source, layers: usize) -> String {
    match source {
        Source::Commutativity { layer } => format!("C({})", layer_name(layer, layers)),
        Source::WeakAdditivity { layer } => format!("E({})", layer_name(layer, layers)),
    }
}

/// The sources that can be non-zero (`K^0 = 0`: both models read the same input).
fn live_sources(p: &PairAttribution) -> Vec<Source> {
    p.attribution
        .sources
        .iter()
        .copied()
        .filter(|s| *s != Source::Commutativity { layer: 0 })
        .collect()
}

/// Print the relative deviations per layer and the shares of the logits' deviation.
pub fn print(setup: &Setup, pairs: &[PairAttribution]) {
    let layers = setup.num_layers();
    println!(
        "LLFC error attribution at α = ½ on the test set (exact: ΔH^ℓ = H_α − H_lin is the sum of \
         every source's transported contribution):"
    );
    println!("  ‖ΔH‖ / ‖H_lin‖ per layer (post-activations; the logits for the last):");
    let header: String = (0..layers)
        .map(|l| format!(" {:>8}", layer_name(l, layers)))
        .collect();
    println!("  {:<20}{header}", "pair");
    for p in pairs {
        let values: String = (0..layers)
            .map(|l| format!(" {:>8.4}", p.post(l).relative.unwrap_or(f64::NAN)))
            .collect();
        println!("  {:<20}{values}", p.label);
    }
    let Some(first) = pairs.first() else { return };
    let sources = live_sources(first);
    println!(
        "  shares of ‖ΔZ_logits‖² = Σ_s ⟨c_s, ΔZ⟩ (C(x): commutativity of the layer producing x, \
         −¼(H_A − H_B)(W_A − W_B)ᵀ; E(x): ReLU weak additivity at x):"
    );
    let header: String = sources
        .iter()
        .map(|&s| format!(" {:>9}", source_name(s, layers)))
        .collect();
    println!("  {:<20}{header}  {:>9}", "pair", "closure");
    for p in pairs {
        let logits = p.post(layers - 1);
        let values: String = sources
            .iter()
            .map(|&s| {
                let share = logits.contribution(s).and_then(|c| c.share);
                format!(" {:>9.3}", share.unwrap_or(f64::NAN))
            })
            .collect();
        let closure = logits.closure.unwrap_or(f64::NAN);
        println!("  {:<20}{values}  {closure:>9.1e}", p.label);
    }
    println!();
}

/// The colour of a source: blues for commutativity, oranges for weak additivity, darker for
/// deeper layers.
fn colour(source: Source, layers: usize) -> RGBColor {
    let shade = |layer: usize, lo: (u8, u8, u8), hi: (u8, u8, u8)| {
        #[allow(clippy::cast_precision_loss)]
        let t = layer as f64 / layers.max(2).saturating_sub(1) as f64;
        let mix = |a: u8, b: u8| {
            let v = f64::from(a) + t * (f64::from(b) - f64::from(a));
            // Always within [0, 255]: a convex combination of two u8 values.
            #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
            let v = v.round() as u8;
            v
        };
        RGBColor(mix(lo.0, hi.0), mix(lo.1, hi.1), mix(lo.2, hi.2))
    };
    match source {
        Source::Commutativity { layer } => shade(layer, (158, 202, 225), (8, 48, 107)),
        Source::WeakAdditivity { layer } => shade(layer, (253, 190, 133), (166, 54, 3)),
    }
}

/// One panel: stacked shares of `ΔH^ℓ` per layer, positive parts upward, negative downward.
fn panel(
    area: &DrawingArea<SVGBackend<'_>, plotters::coord::Shift>,
    p: &PairAttribution,
    layers: usize,
    (lo, hi): (f64, f64),
) -> Result<(), Box<dyn Error>> {
    #[allow(clippy::cast_precision_loss)]
    let right = layers as f64 - 0.5;
    let mut chart = ChartBuilder::on(area)
        .caption(format!("{} (α = ½)", p.label), ("sans-serif", 17))
        .margin(10)
        .x_label_area_size(32)
        .y_label_area_size(52)
        .build_cartesian_2d(-0.5..right, lo..hi)?;
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_labels(layers)
        .x_label_formatter(&|x| {
            let l = x.round();
            if (x - l).abs() < 1e-9 && l >= 0.0 {
                // Integral and non-negative: a layer index.
                #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
                let l = l as usize;
                layer_name(l, layers)
            } else {
                String::new()
            }
        })
        .y_desc("share of ‖ΔH‖²")
        .draw()?;
    let mut base = vec![(0.0f64, 0.0f64); layers];
    for source in live_sources(p) {
        let c = colour(source, layers);
        let mut bars = Vec::new();
        for (l, (up, down)) in base.iter_mut().enumerate() {
            let Some(share) = p.post(l).contribution(source).and_then(|c| c.share) else {
                continue;
            };
            #[allow(clippy::cast_precision_loss)]
            let x = l as f64;
            let (y0, y1) = if share >= 0.0 {
                *up += share;
                (*up - share, *up)
            } else {
                *down += share;
                (*down - share, *down)
            };
            bars.push(Rectangle::new([(x - 0.32, y0), (x + 0.32, y1)], c.filled()));
        }
        chart
            .draw_series(bars)?
            .label(source_name(source, layers))
            .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 12, y + 5)], c.filled()));
    }
    chart.draw_series(std::iter::once(PathElement::new(
        vec![(-0.5, 0.0), (right, 0.0)],
        BLACK.stroke_width(1),
    )))?;
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .position(SeriesLabelPosition::UpperLeft)
        .draw()?;
    Ok(())
}

/// `attribution_<arch>.svg`: one panel per pair, the stacked shares of every source in the
/// deviation `ΔH^ℓ` of each layer.
///
/// # Errors
/// If the directory cannot be created or the file cannot be written.
pub fn plot(
    setup: &Setup,
    pairs: &[PairAttribution],
    dir: &Path,
) -> Result<PathBuf, Box<dyn Error>> {
    std::fs::create_dir_all(dir)?;
    let path = dir.join(format!("attribution_{}.svg", setup.name()));
    let layers = setup.num_layers();
    let columns = pairs.len().min(4);
    let rows = pairs.len().div_ceil(4);
    let size = (
        u32::try_from(columns).expect("small") * 430,
        u32::try_from(rows).expect("small") * 380,
    );
    // One y range for every panel, so that the panels compare.
    let (mut lo, mut hi) = (0.0f64, 1.0f64);
    for p in pairs {
        for l in 0..layers {
            let shares = live_sources(p)
                .into_iter()
                .filter_map(|s| p.post(l).contribution(s).and_then(|c| c.share));
            let (up, down) =
                shares.fold(
                    (0.0, 0.0),
                    |(u, d), s| {
                        if s >= 0.0 {
                            (u + s, d)
                        } else {
                            (u, d + s)
                        }
                    },
                );
            hi = hi.max(up);
            lo = lo.min(down);
        }
    }
    let margin = 0.08 * (hi - lo);
    {
        let root = SVGBackend::new(&path, size).into_drawing_area();
        root.fill(&WHITE)?;
        let areas = root.split_evenly((rows, columns));
        for (area, p) in areas.iter().zip(pairs) {
            panel(area, p, layers, (lo - margin, hi + margin))?;
        }
        root.present()?;
    }
    Ok(path)
}
