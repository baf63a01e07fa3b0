//! The SVG plot of `subspace_digits`: mean principal angle per layer, one line per pair, in three
//! panels (weights' left and right singular subspaces, features' principal subspaces).

use std::error::Error;
use std::path::Path;

use plotters::prelude::*;

use crate::experiment::Method;
use crate::{Angles, Pair, Ridge, K};

/// The colour of a pair (the methods keep their `llfc_digits` colours).
fn colour(pair: Pair) -> RGBColor {
    match pair {
        Pair::Permutation(Method::Naive) => RGBColor(214, 39, 40),
        Pair::Permutation(Method::WeightMatched) => RGBColor(31, 119, 180),
        Pair::Permutation(Method::ActivationMatched) => RGBColor(44, 160, 44),
        Pair::Permutation(Method::Spawned) => RGBColor(148, 103, 189),
        Pair::Cca(Ridge::Small) => RGBColor(255, 127, 14),
        Pair::Cca(Ridge::Relative) => RGBColor(23, 190, 207),
        Pair::Cca(Ridge::Paper) => RGBColor(140, 86, 75),
    }
}

/// Picks one kind of angles of a pair.
type Pick = fn(&Angles) -> &Vec<f64>;

/// Write `angles_<arch>.svg`: x is the layer, y the mean of its `K` principal angles.
///
/// # Errors
/// If the directory or the file cannot be written.
pub fn plot_angles(
    arch: &str,
    layers: &[String],
    angles: &[Angles],
    path: &Path,
) -> Result<(), Box<dyn Error>> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let root = SVGBackend::new(path, (1680, 440)).into_drawing_area();
    root.fill(&WHITE)?;
    let panels = root.split_evenly((1, 3));
    let kinds: [(&str, Pick); 3] = [
        ("weights: left (output) subspaces", |a| &a.left),
        ("weights: right (input) subspaces", |a| &a.right),
        ("features: principal subspaces", |a| &a.features),
    ];
    #[allow(clippy::cast_precision_loss)]
    let x_max = layers.len() as f64 + 0.5;
    for (area, (title, values)) in panels.iter().zip(kinds) {
        let mut chart = ChartBuilder::on(area)
            .caption(format!("MLP {arch}, {title}"), ("sans-serif", 16))
            .margin(12)
            .x_label_area_size(36)
            .y_label_area_size(56)
            .build_cartesian_2d(0.5..x_max, 0.0..90.0)?;
        chart
            .configure_mesh()
            .x_labels(layers.len())
            .x_label_formatter(&|x| {
                let i = x.round();
                #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
                let idx = (i as usize).wrapping_sub(1);
                layers.get(idx).cloned().unwrap_or_default()
            })
            .y_desc(format!("mean of the top-{K} principal angles (°)"))
            .draw()?;
        for ang in angles {
            let c = colour(ang.pair);
            #[allow(clippy::cast_precision_loss)]
            let points: Vec<(f64, f64)> = values(ang)
                .iter()
                .enumerate()
                .map(|(l, &v)| (l as f64 + 1.0, v))
                .collect();
            chart
                .draw_series(LineSeries::new(points.clone(), c.stroke_width(2)))?
                .label(ang.pair.label())
                .legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 20, y)], c.stroke_width(2))
                });
            chart.draw_series(points.into_iter().map(|p| Circle::new(p, 3, c.filled())))?;
        }
        chart
            .configure_series_labels()
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK)
            .position(SeriesLabelPosition::LowerRight)
            .draw()?;
    }
    root.present()?;
    Ok(())
}
