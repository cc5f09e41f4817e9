//! The SVG chart, three panels side by side, one row per strategy: the
//! median throughput and median p99 ack latency over the trials, each with
//! a whisker from the trials' min to their max (log scales: the strategies
//! differ by orders of magnitude), then the CPU seconds per million records
//! of each process (client, and gateway after it in a lighter shade; log
//! scale too, as `seed-sync` costs thirty times the others). The runs at
//! load follow the strategies in the first two panels.

use std::path::Path;

use plotters::coord::Shift;
use plotters::prelude::*;

use super::report::{Group, Report, Spread, si};

const WIDTH: u32 = 1500;
const HEIGHT: u32 = 480;
const COLORS: [RGBColor; 9] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(127, 127, 127),
    RGBColor(188, 189, 34),
];
/// The gateway process's share of a CPU bar: a lighter shade.
const GATEWAY_SHADE: f64 = 0.45;

/// One row of a panel.
struct Row {
    label: String,
    /// The bar, and its whisker.
    value: Spread,
    color: RGBColor,
}

/// Draws `report` into `path`.
pub fn draw(report: &Report, path: &Path) -> Result<(), String> {
    if report.strategies.is_empty() {
        return Err("no strategy acknowledged any record: nothing to draw".into());
    }
    let root = SVGBackend::new(path, (WIDTH, HEIGHT)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| e.to_string())?;
    let first = report
        .runs
        .iter()
        .find(|r| r.group == Group::Main)
        .ok_or("no trial to draw")?;
    let title = format!(
        "kafka-gateway bench: {} trials each (median, whiskers min-max), records of {} bytes, \
         {} streams, batches of {}",
        report.method.trials, first.record_bytes, first.streams, first.batch
    );
    let root = root
        .titled(&title, ("sans-serif", 20))
        .map_err(|e| e.to_string())?;
    let panels = root.split_evenly((1, 3));

    let color = |i: usize| COLORS[i % COLORS.len()];
    let at_load: Vec<_> = report
        .runs
        .iter()
        .filter(|r| r.group == Group::LatencyAtLoad && r.records_ok > 0)
        .collect();
    let rows = |f: &dyn Fn(&super::report::Summary) -> Spread,
                g: &dyn Fn(&super::report::RunReport) -> f64| {
        let strategies = report.strategies.iter().enumerate().map(|(i, s)| Row {
            label: s.strategy.name().to_owned(),
            value: f(s),
            color: color(i),
        });
        let runs = at_load.iter().enumerate().map(|(i, r)| {
            let v = g(r);
            Row {
                label: r.label(),
                value: Spread {
                    median: v,
                    min: v,
                    max: v,
                },
                color: color(report.strategies.len() + i),
            }
        });
        strategies.chain(runs).collect::<Vec<_>>()
    };
    log_bars(
        &panels[0],
        "throughput (records/s, log scale)",
        &rows(&|s| s.records_per_sec, &|r| r.records_per_sec),
        &si,
    )?;
    log_bars(
        &panels[1],
        "p99 ack latency (ms, log scale)",
        &rows(&|s| s.p99_ms, &|r| r.latency_ms.p99),
        &|v| format!("{v:.1}"),
    )?;
    cpu_bars(&panels[2], report, &color)?;
    root.present().map_err(|e| e.to_string())
}

/// A horizontal bar per row on a log scale, first row on top, each with
/// its whisker and annotated with its label and median.
fn log_bars(
    area: &DrawingArea<SVGBackend<'_>, Shift>,
    caption: &str,
    rows: &[Row],
    format: &dyn Fn(f64) -> String,
) -> Result<(), String> {
    let positive = rows
        .iter()
        .flat_map(|r| [r.value.min, r.value.max])
        .filter(|v| *v > 0.0);
    let low = positive.clone().fold(f64::INFINITY, f64::min);
    let high = positive.fold(0.0, f64::max);
    if !(low.is_finite() && high > 0.0) {
        return Ok(());
    }
    let floor = 10f64.powf((low.log10() - 0.3).floor());
    // Room right of the longest bar for its annotation.
    let ceiling = 10f64.powf((high.log10() + 1.6).ceil());
    let n = rows.len() as f64;
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
    for (i, row) in rows.iter().enumerate() {
        let y = n - 1.0 - i as f64;
        let Spread { median, min, max } = row.value;
        if median > 0.0 {
            chart
                .draw_series(std::iter::once(Rectangle::new(
                    [(floor, y + 0.15), (median, y + 0.85)],
                    row.color.filled(),
                )))
                .map_err(|e| e.to_string())?;
        }
        if max > min && min > 0.0 {
            whisker(&mut chart, min, max, y + 0.5)?;
        }
        let text = format!("{}: {}", row.label, format(median));
        chart
            .draw_series(std::iter::once(Text::new(
                text,
                (max.max(median).max(floor) * 1.1, y + 0.62),
                ("sans-serif", 13).into_font(),
            )))
            .map_err(|e| e.to_string())?;
    }
    Ok(())
}

/// The CPU panel: per strategy, the client's median CPU seconds per million
/// records, and the gateway's stacked after it in a lighter shade, with a
/// whisker over the trials' totals.
fn cpu_bars(
    area: &DrawingArea<SVGBackend<'_>, Shift>,
    report: &Report,
    color: &dyn Fn(usize) -> RGBColor,
) -> Result<(), String> {
    let rows: Vec<_> = report
        .strategies
        .iter()
        .enumerate()
        .filter_map(|(i, s)| {
            let client = s.cpu_s_per_million?.median;
            let gateway = s.gateway_cpu_s_per_million.map(|g| g.median);
            Some((
                i,
                s.strategy.name(),
                client,
                gateway,
                s.total_cpu_s_per_million,
            ))
        })
        .collect();
    let high = rows
        .iter()
        .map(|(_, _, client, gateway, total)| {
            total.map_or(client + gateway.unwrap_or(0.0), |t| t.max)
        })
        .fold(0.0, f64::max);
    let low = rows
        .iter()
        .map(|(_, _, client, _, _)| *client)
        .filter(|v| *v > 0.0)
        .fold(f64::INFINITY, f64::min);
    if rows.is_empty() || high <= 0.0 || !low.is_finite() {
        return Ok(());
    }
    let floor = 10f64.powf((low.log10() - 0.3).floor());
    // Room right of the longest bar for its annotation.
    let ceiling = 10f64.powf((high.log10() + 1.2).ceil());
    let n = rows.len() as f64;
    let mut chart = ChartBuilder::on(area)
        .caption(
            "CPU s per million records (client | gateway, log scale)",
            ("sans-serif", 16),
        )
        .margin(16)
        .x_label_area_size(30)
        .y_label_area_size(10)
        .build_cartesian_2d((floor..ceiling).log_scale(), 0.0..n)
        .map_err(|e| e.to_string())?;
    chart
        .configure_mesh()
        .disable_y_mesh()
        .y_labels(0)
        .x_label_formatter(&|x| format!("{x}"))
        .draw()
        .map_err(|e| e.to_string())?;
    for (row, (i, name, client, gateway, total)) in rows.iter().enumerate() {
        let y = n - 1.0 - row as f64;
        let shade = color(*i);
        chart
            .draw_series(std::iter::once(Rectangle::new(
                [(floor, y + 0.15), (client.max(floor), y + 0.85)],
                shade.filled(),
            )))
            .map_err(|e| e.to_string())?;
        let mut end = *client;
        if let Some(gateway) = gateway {
            end += gateway;
            chart
                .draw_series(std::iter::once(Rectangle::new(
                    [(*client, y + 0.15), (end, y + 0.85)],
                    shade.mix(GATEWAY_SHADE).filled(),
                )))
                .map_err(|e| e.to_string())?;
        }
        if let Some(total) = total.filter(|t| t.max > t.min && t.min > 0.0) {
            whisker(&mut chart, total.min, total.max, y + 0.5)?;
            end = end.max(total.max);
        }
        let text = match gateway {
            Some(gateway) => format!("{name}: {client:.2} | {gateway:.2}"),
            None => format!("{name}: {client:.2}"),
        };
        chart
            .draw_series(std::iter::once(Text::new(
                text,
                (end.max(floor) * 1.1, y + 0.62),
                ("sans-serif", 13).into_font(),
            )))
            .map_err(|e| e.to_string())?;
    }
    Ok(())
}

/// A horizontal whisker from `min` to `max` at height `y`, with end caps.
fn whisker<X>(
    chart: &mut ChartContext<
        '_,
        SVGBackend<'_>,
        Cartesian2d<X, plotters::coord::types::RangedCoordf64>,
    >,
    min: f64,
    max: f64,
    y: f64,
) -> Result<(), String>
where
    X: Ranged<ValueType = f64>,
{
    let ink = BLACK.stroke_width(1);
    let lines = [
        vec![(min, y), (max, y)],
        vec![(min, y - 0.15), (min, y + 0.15)],
        vec![(max, y - 0.15), (max, y + 0.15)],
    ];
    chart
        .draw_series(lines.into_iter().map(|line| PathElement::new(line, ink)))
        .map_err(|e| e.to_string())?;
    Ok(())
}
