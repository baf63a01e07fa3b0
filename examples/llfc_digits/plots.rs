//! SVG plots of `llfc_digits` with `plotters` (SVG backend only: text is written as SVG text
//! elements, so no system font or library is needed).

use std::error::Error;
use std::path::{Path, PathBuf};

use plotters::coord::ranged1d::{AsRangedCoord, ValueFormatter};
use plotters::coord::Shift;
use plotters::prelude::*;

use crate::experiment::{Method, Outcome, PairResult, Setup};
use crate::table::layer_name;

/// Size of one panel, in pixels.
const PANEL: (u32, u32) = (560, 420);

/// One polyline of a chart.
struct Line {
    /// The pair it belongs to (its colour and legend label).
    method: Method,
    /// `(α, value)` points.
    points: Vec<(f64, f64)>,
    /// Dashed lines are baselines and get no legend entry.
    dashed: bool,
}

/// The colour of a method, the same in every plot.
fn colour(method: Method) -> RGBColor {
    match method {
        Method::Naive => RGBColor(214, 39, 40),
        Method::WeightMatched => RGBColor(31, 119, 180),
        Method::ActivationMatched => RGBColor(44, 160, 44),
        Method::Spawned => RGBColor(148, 103, 189),
    }
}

/// `(min, max)` over every point of `lines`.
fn value_range(lines: &[Line]) -> (f64, f64) {
    lines
        .iter()
        .flat_map(|l| l.points.iter().map(|p| p.1))
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| {
            (lo.min(v), hi.max(v))
        })
}

/// A tick label: plain decimals down to 0.01, powers of ten below.
fn tick(v: &f64) -> String {
    if *v == 0.0 || v.abs() >= 0.01 {
        format!("{}", (v * 1000.0).round() / 1000.0)
    } else {
        format!("{v:.0e}")
    }
}

/// Draw `lines` against α ∈ [0, 1] in `area`, with the given y axis, and a legend at
/// `legend`.
fn draw_chart<Y>(
    area: &DrawingArea<SVGBackend<'_>, Shift>,
    (title, y_desc): (&str, &str),
    y_range: Y,
    lines: &[Line],
    legend: SeriesLabelPosition,
) -> Result<(), Box<dyn Error>>
where
    Y: AsRangedCoord<Value = f64>,
    Y::CoordDescType: ValueFormatter<f64>,
{
    let mut chart = ChartBuilder::on(area)
        .caption(title, ("sans-serif", 18))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(64)
        .build_cartesian_2d(0.0..1.0, y_range)?;
    chart
        .configure_mesh()
        .x_desc("α  (θ(α) = α θ_A + (1 − α) θ_B; α = 1 is A)")
        .y_desc(y_desc)
        .y_label_formatter(&tick)
        .draw()?;
    for line in lines {
        let style = colour(line.method).stroke_width(2);
        if line.dashed {
            chart.draw_series(DashedLineSeries::new(line.points.clone(), 6, 4, style))?;
        } else {
            let c = colour(line.method);
            chart
                .draw_series(LineSeries::new(line.points.clone(), style))?
                .label(line.method.label())
                .legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 20, y)], c.stroke_width(2))
                });
        }
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .position(legend)
        .draw()?;
    Ok(())
}

/// The curve of every pair as solid lines, `value` picking loss or error.
fn curve_lines(outcome: &Outcome, value: impl Fn(&PairResult, usize) -> f64) -> Vec<Line> {
    outcome
        .pairs
        .iter()
        .map(|pair| Line {
            method: pair.method,
            points: (0..pair.curve.len())
                .map(|k| (pair.curve.alphas[k], value(pair, k)))
                .collect(),
            dashed: false,
        })
        .collect()
}

/// `lmc_<arch>.svg`: test loss and test error along α for every pair.
fn plot_lmc(setup: &Setup, outcome: &Outcome, path: &Path) -> Result<(), Box<dyn Error>> {
    let root = SVGBackend::new(path, (2 * PANEL.0, PANEL.1)).into_drawing_area();
    root.fill(&WHITE)?;
    let panels = root.split_evenly((1, 2));
    let loss = curve_lines(outcome, |p, k| p.curve.loss[k]);
    let error = curve_lines(outcome, |p, k| 100.0 * p.curve.error[k]);
    for (area, (name, lines)) in panels.iter().zip([("loss", loss), ("error (%)", error)]) {
        let (_, hi) = value_range(&lines);
        let title = format!("MLP {}: test {name} along the path", setup.name());
        let y_desc = format!("test {name}");
        let legend = SeriesLabelPosition::UpperRight;
        draw_chart(area, (&title, &y_desc), 0.0..1.05 * hi, &lines, legend)?;
    }
    root.present()?;
    Ok(())
}

/// For one layer, every pair's `E[1 − cos_α]` at the interior α (solid) and its baseline
/// `E[1 − cos_{A,B}]` (dashed).
fn llfc_lines(outcome: &Outcome, layer: usize) -> Vec<Line> {
    let mut lines = Vec::new();
    for pair in &outcome.pairs {
        let alphas: Vec<f64> = pair.report.alphas.clone();
        let interior = alphas.iter().filter(|&&a| a > 0.0 && a < 1.0);
        let points: Vec<(f64, f64)> = interior
            .map(|&a| (a, pair.llfc(a, layer).0.max(1e-6)))
            .collect();
        let baseline = pair.llfc(0.5, layer).1;
        lines.push(Line {
            method: pair.method,
            points,
            dashed: false,
        });
        lines.push(Line {
            method: pair.method,
            points: vec![(0.0, baseline), (1.0, baseline)],
            dashed: true,
        });
    }
    lines
}

/// `llfc_<arch>.svg`: one panel per layer, `E[1 − cos_α]` (log scale) against the baselines.
fn plot_llfc(setup: &Setup, outcome: &Outcome, path: &Path) -> Result<(), Box<dyn Error>> {
    let layers = setup.num_layers();
    let columns = u32::try_from(layers.min(2)).expect("small");
    let rows = u32::try_from(layers.div_ceil(2)).expect("small");
    let size = (columns * PANEL.0, rows * PANEL.1);
    let root = SVGBackend::new(path, size).into_drawing_area();
    root.fill(&WHITE)?;
    let panels = root.split_evenly((layers.div_ceil(2), layers.min(2)));
    for (layer, area) in panels.iter().enumerate().take(layers) {
        let lines = llfc_lines(outcome, layer);
        let (lo, hi) = value_range(&lines);
        let title = format!(
            "{}: E[1 − cos_α] (solid) vs baseline E[1 − cos_A,B] (dashed)",
            layer_name(layer, layers)
        );
        let y = (0.1 * lo..2.0 * hi).log_scale();
        let texts = (title.as_str(), "E[1 − cos] (log scale)");
        draw_chart(area, texts, y, &lines, SeriesLabelPosition::LowerMiddle)?;
    }
    root.present()?;
    Ok(())
}

/// Write both plots of one architecture into `dir`; returns their paths.
///
/// # Errors
/// If the directory cannot be created or a file cannot be written.
pub fn write_plots(
    setup: &Setup,
    outcome: &Outcome,
    dir: &Path,
) -> Result<Vec<PathBuf>, Box<dyn Error>> {
    std::fs::create_dir_all(dir)?;
    let lmc = dir.join(format!("lmc_{}.svg", setup.name()));
    let llfc = dir.join(format!("llfc_{}.svg", setup.name()));
    plot_lmc(setup, outcome, &lmc)?;
    plot_llfc(setup, outcome, &llfc)?;
    Ok(vec![lmc, llfc])
}
