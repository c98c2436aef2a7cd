//! The chart of a run (SVG): throughput and latency percentiles, second by
//! second.

use std::path::Path;

use anyhow::anyhow;
use plotters::prelude::*;

use plotters::coord::types::RangedCoordf64;

use crate::report::{Report, Second};

/// Draws `report`'s timeline to an SVG file; `false` when it has none.
pub fn draw(report: &Report, path: &Path) -> anyhow::Result<bool> {
    let seconds = &report.timeline;
    if seconds.is_empty() {
        return Ok(false);
    }
    let root = SVGBackend::new(path, (1000, 720)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| anyhow!("{e}"))?;
    let (top, bottom) = root.split_vertically(340);
    let end = seconds.len() as f64;

    let most = seconds
        .iter()
        .map(|s| s.acknowledged.max(s.received).max(s.sent))
        .max()
        .unwrap_or(1)
        .max(1) as f64;
    let mut chart = ChartBuilder::on(&top)
        .caption(
            format!("passerelle bench {}: messages per second", report.scenario),
            ("sans-serif", 20),
        )
        .margin(12)
        .x_label_area_size(36)
        .y_label_area_size(70)
        .build_cartesian_2d(0f64..end, 0f64..most * 1.1)
        .map_err(|e| anyhow!("{e}"))?;
    chart
        .configure_mesh()
        .x_desc("seconds")
        .y_desc("messages/s")
        .draw()
        .map_err(|e| anyhow!("{e}"))?;
    let series = |f: fn(&Second) -> u64| {
        seconds
            .iter()
            .map(move |s| (s.second as f64 + 0.5, f(s) as f64))
            .collect::<Vec<_>>()
    };
    lines(
        &mut chart,
        [
            ("sent", BLUE, series(|s| s.sent)),
            ("accepted", GREEN, series(|s| s.acknowledged)),
            ("received", RED, series(|s| s.received)),
        ],
    )?;

    let ms = |us: u64| us as f64 / 1000.0;
    let highest = seconds
        .iter()
        .map(|s| ms(s.latency_us.p999))
        .fold(0.0, f64::max)
        .max(0.01);
    let mut chart = ChartBuilder::on(&bottom)
        .caption("end-to-end latency (ms), per second", ("sans-serif", 20))
        .margin(12)
        .x_label_area_size(36)
        .y_label_area_size(70)
        .build_cartesian_2d(0f64..end, 0f64..highest * 1.1)
        .map_err(|e| anyhow!("{e}"))?;
    chart
        .configure_mesh()
        .x_desc("seconds")
        .y_desc("ms")
        .draw()
        .map_err(|e| anyhow!("{e}"))?;
    let received: Vec<_> = seconds.iter().filter(|s| s.received > 0).collect();
    let percentile = |pick: fn(&Second) -> u64| {
        received
            .iter()
            .map(|s| (s.second as f64 + 0.5, ms(pick(s))))
            .collect::<Vec<_>>()
    };
    lines(
        &mut chart,
        [
            ("p50", GREEN, percentile(|s| s.latency_us.p50)),
            ("p99", BLUE, percentile(|s| s.latency_us.p99)),
            ("p99.9", RED, percentile(|s| s.latency_us.p999)),
        ],
    )?;
    root.present().map_err(|e| anyhow!("{e}"))?;
    Ok(true)
}

type Chart<'a> = ChartContext<'a, SVGBackend<'a>, Cartesian2d<RangedCoordf64, RangedCoordf64>>;

/// A named series of points, in its color.
type Series<'a> = (&'a str, RGBColor, Vec<(f64, f64)>);

/// Draws each named series as a line with dots (a run of one second has no
/// line to draw), then the legend.
fn lines<const N: usize>(chart: &mut Chart<'_>, series: [Series<'_>; N]) -> anyhow::Result<()> {
    for (name, color, points) in series {
        chart
            .draw_series(points.iter().map(|&p| Circle::new(p, 2, color.filled())))
            .map_err(|e| anyhow!("{e}"))?;
        chart
            .draw_series(LineSeries::new(points, color.stroke_width(2)))
            .map_err(|e| anyhow!("{e}"))?
            .label(name)
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 16, y)], color));
    }
    chart
        .configure_series_labels()
        .border_style(BLACK)
        .background_style(WHITE.mix(0.8))
        .draw()
        .map_err(|e| anyhow!("{e}"))?;
    Ok(())
}
