//! The SVG chart: throughput and p99 ack latency per run, side by side, on
//! log scales (the strategies differ by orders of magnitude).

use std::path::Path;

use plotters::coord::Shift;
use plotters::prelude::*;

use super::report::{Report, RunReport, si};

const WIDTH: u32 = 1200;
const HEIGHT: u32 = 460;
const COLORS: [RGBColor; 8] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(127, 127, 127),
];

/// Draws the main runs (and the runs at load) of `report` into `path`.
pub fn draw(report: &Report, path: &Path) -> Result<(), String> {
    let runs: Vec<&RunReport> = report.runs.iter().filter(|r| r.records_ok > 0).collect();
    if runs.is_empty() {
        return Err("no run acknowledged any record: nothing to draw".into());
    }
    let root = SVGBackend::new(path, (WIDTH, HEIGHT)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| e.to_string())?;
    let title = format!(
        "kafka-gateway bench: {} records of {} bytes, {} streams, batches of {}",
        si(runs[0].records_requested as f64),
        runs[0].record_bytes,
        runs[0].streams,
        runs[0].batch
    );
    let root = root
        .titled(&title, ("sans-serif", 20))
        .map_err(|e| e.to_string())?;
    let (left, right) = root.split_horizontally(WIDTH / 2);
    let labels: Vec<String> = runs.iter().map(|r| r.label()).collect();
    bars(
        &left,
        "throughput (records/s, log scale)",
        &labels,
        &runs.iter().map(|r| r.records_per_sec).collect::<Vec<_>>(),
        &si,
    )?;
    bars(
        &right,
        "p99 ack latency (ms, log scale)",
        &labels,
        &runs.iter().map(|r| r.latency_ms.p99).collect::<Vec<_>>(),
        &|v| format!("{v:.1}"),
    )?;
    root.present().map_err(|e| e.to_string())
}

/// A horizontal bar per label on a log scale, first label on top, each
/// bar annotated with its label and value.
fn bars(
    area: &DrawingArea<SVGBackend<'_>, Shift>,
    caption: &str,
    labels: &[String],
    values: &[f64],
    format: &dyn Fn(f64) -> String,
) -> Result<(), String> {
    let positive = values.iter().copied().filter(|v| *v > 0.0);
    let low = positive.clone().fold(f64::INFINITY, f64::min);
    let high = positive.fold(0.0, f64::max);
    if !(low.is_finite() && high > 0.0) {
        return Ok(());
    }
    let floor = 10f64.powf((low.log10() - 0.3).floor());
    // Room right of the longest bar for its annotation.
    let ceiling = 10f64.powf((high.log10() + 1.6).ceil());
    let n = labels.len() as f64;
    let mut chart = ChartBuilder::on(area)
        .caption(caption, ("sans-serif", 16))
        .margin(16)
        .x_label_area_size(30)
        .y_label_area_size(10)
        .build_cartesian_2d((floor..ceiling).log_scale(), 0.0..n)
        .map_err(|e| e.to_string())?;
    chart
        .configure_mesh()
        .disable_y_mesh()
        .y_labels(0)
        .x_label_formatter(&|x| si(*x))
        .draw()
        .map_err(|e| e.to_string())?;
    for (i, (&value, label)) in values.iter().zip(labels).enumerate() {
        let row = n - 1.0 - i as f64;
        let color = COLORS[i % COLORS.len()];
        if value > 0.0 {
            chart
                .draw_series(std::iter::once(Rectangle::new(
                    [(floor, row + 0.15), (value, row + 0.85)],
                    color.filled(),
                )))
                .map_err(|e| e.to_string())?;
        }
        let text = format!("{label}: {}", format(value));
        chart
            .draw_series(std::iter::once(Text::new(
                text,
                (value.max(floor) * 1.1, row + 0.62),
                ("sans-serif", 13).into_font(),
            )))
            .map_err(|e| e.to_string())?;
    }
    Ok(())
}
