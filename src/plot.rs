//! `analyze --plot FILE.svg`: one service's (or one flow's) timeline as an
//! SVG, panels stacked on one time axis (seconds since the capture's first
//! packet): RTT p50/p99 per direction, retransmissions, throughput,
//! zero-window time and new connections per interval.

use std::collections::BTreeMap;
use std::path::Path;

use plotters::prelude::*;
use wirelens_ctrl::agg::Counters;
use wirelens_dataplane::stats::Histogram;

use crate::timeline::Slot;

/// Width and height of the picture, in pixels.
const SIZE: (u32, u32) = (1100, 1250);

type Points = Vec<(f64, f64)>;

/// One panel: its title, y-axis description and series (label, colour, points).
struct Panel {
    title: &'static str,
    y_desc: &'static str,
    series: Vec<(&'static str, RGBColor, Points)>,
}

/// The series of the timeline `rows` (interval start -> counters).
fn panels(rows: &BTreeMap<u64, Slot>, t0: u64, width_ns: u64) -> Vec<Panel> {
    let x = |b: u64| b.saturating_sub(t0) as f64 / 1e9;
    let secs = width_ns as f64 / 1e9;
    let each = |f: &dyn Fn(&Counters) -> Option<f64>| -> Points {
        rows.iter()
            .filter_map(|(&b, s)| f(&s.c).map(|v| (x(b), v)))
            .collect()
    };
    let q = |h: &Histogram, p: f64| h.quantile(p).map(|v| v as f64 / 1e6);
    vec![
        Panel {
            title: "RTT per interval",
            y_desc: "RTT (ms)",
            series: vec![
                ("c2s p50", RED, each(&|c| q(&c.rtt_server, 0.5))),
                (
                    "c2s p99",
                    RGBColor(255, 150, 150),
                    each(&|c| q(&c.rtt_server, 0.99)),
                ),
                ("s2c p50", BLUE, each(&|c| q(&c.rtt_client, 0.5))),
                (
                    "s2c p99",
                    RGBColor(140, 160, 255),
                    each(&|c| q(&c.rtt_client, 0.99)),
                ),
            ],
        },
        Panel {
            title: "Retransmissions per interval",
            y_desc: "retransmitted packets",
            series: vec![
                ("retransmits", RED, each(&|c| Some(c.retransmits as f64))),
                (
                    "lost before tap",
                    MAGENTA,
                    each(&|c| Some(c.hole_fill as f64)),
                ),
            ],
        },
        Panel {
            title: "Throughput",
            y_desc: "Mbit/s",
            series: vec![(
                "both directions",
                GREEN,
                each(&|c| Some(c.bytes as f64 * 8.0 / secs / 1e6)),
            )],
        },
        Panel {
            title: "Zero-window time per interval",
            y_desc: "stalled (ms)",
            series: vec![(
                "zero window",
                BLACK,
                each(&|c| Some(c.zero_window_ns as f64 / 1e6)),
            )],
        },
        Panel {
            title: "New connections",
            y_desc: "per second",
            series: vec![(
                "new connections",
                CYAN,
                each(&|c| Some(c.flows as f64 / secs)),
            )],
        },
    ]
}

/// Draws `rows` (one service's or flow's intervals) to the SVG at `path`.
pub fn svg(
    path: &Path,
    what: &str,
    rows: &BTreeMap<u64, Slot>,
    t0: u64,
    width_ns: u64,
) -> Result<(), String> {
    draw(path, what, rows, t0, width_ns).map_err(|e| e.to_string())
}

fn draw(
    path: &Path,
    what: &str,
    rows: &BTreeMap<u64, Slot>,
    t0: u64,
    width_ns: u64,
) -> Result<(), Box<dyn std::error::Error>> {
    let root = SVGBackend::new(path, SIZE).into_drawing_area();
    root.fill(&WHITE)?;
    let root = root.titled(what, ("sans-serif", 22))?;
    let panels = panels(rows, t0, width_ns);
    let areas = root.split_evenly((panels.len(), 1));
    let x_max = rows
        .keys()
        .next_back()
        .map_or(1.0, |&b| (b + width_ns).saturating_sub(t0) as f64 / 1e9)
        .max(1e-3);
    for (panel, area) in panels.iter().zip(areas.iter()) {
        let y_max = panel
            .series
            .iter()
            .flat_map(|s| s.2.iter().map(|p| p.1))
            .fold(0.0f64, f64::max);
        let y_max = if y_max > 0.0 { y_max * 1.1 } else { 1.0 };
        let mut chart = ChartBuilder::on(area)
            .caption(panel.title, ("sans-serif", 16))
            .margin(8)
            .x_label_area_size(34)
            .y_label_area_size(70)
            .build_cartesian_2d(0.0..x_max, 0.0..y_max)?;
        chart
            .configure_mesh()
            .x_desc("time since capture start (s)")
            .y_desc(panel.y_desc)
            .x_labels(12)
            .y_labels(6)
            .draw()?;
        for (label, colour, points) in &panel.series {
            let c = *colour;
            chart
                .draw_series(LineSeries::new(points.iter().copied(), c.stroke_width(2)))?
                .label(*label)
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], c));
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperLeft)
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .draw()?;
    }
    root.present()?;
    Ok(())
}
