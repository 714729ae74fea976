//! Tooling, the last step of loadgen: `--report FILE` draws the run with plotters' SVG backend —
//! throughput (sent and alerts per second) and latency percentiles per second from the
//! [`timeline`](crate::timeline), and the latency distribution of the whole run (percentile
//! on a "nines" axis, as HdrHistogram plots it). `.svg` writes the charts; `.html` a page with
//! the charts inline and the summary table. Pure: data in, text out.

use crate::report::{human_us, Summary};
use crate::timeline::Interval;
use hdrhistogram::Histogram;
use plotters::coord::types::RangedCoordf64;
use plotters::prelude::*;
use std::path::Path;
use thiserror::Error;

#[derive(Debug, Error)]
#[error("cannot draw the report: {0}")]
pub struct PlotError(String);

fn err<E: std::fmt::Display>(e: E) -> PlotError {
    PlotError(e.to_string())
}

/// What `--report` writes, by the file's extension.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Svg,
    Html,
}

impl Format {
    pub fn of(path: &Path) -> Option<Format> {
        match path.extension()?.to_str()?.to_ascii_lowercase().as_str() {
            "svg" => Some(Format::Svg),
            "html" | "htm" => Some(Format::Html),
            _ => None,
        }
    }
}

const WIDTH: u32 = 960;
const PANEL: u32 = 360;
const FONT: &str = "sans-serif";

/// Series colours: sent, alerts / p50, p90, p99, max.
const COLOURS: [RGBColor; 4] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(214, 39, 40),
    RGBColor(90, 90, 90),
];

/// The three charts, one SVG document.
pub fn svg(s: &Summary, rows: &[Interval], latency: &Histogram<u64>) -> Result<String, PlotError> {
    let mut out = String::new();
    {
        let root = SVGBackend::with_string(&mut out, (WIDTH, PANEL * 3)).into_drawing_area();
        root.fill(&WHITE).map_err(err)?;
        let panels = root.split_evenly((3, 1));
        throughput(&panels[0], s, rows)?;
        percentiles(&panels[1], rows)?;
        distribution(&panels[2], latency)?;
        root.present().map_err(err)?;
    }
    Ok(out)
}

type Area<'a> = DrawingArea<SVGBackend<'a>, plotters::coord::Shift>;

/// One series' value of an interval.
type Pick = fn(&Interval) -> u64;

fn x_end(rows: &[Interval]) -> f64 {
    rows.last().map_or(1.0, |r| r.t_s + 1.0).max(1.0)
}

fn throughput(area: &Area, s: &Summary, rows: &[Interval]) -> Result<(), PlotError> {
    let y_max = rows
        .iter()
        .map(|r| r.sent.max(r.alerts))
        .max()
        .unwrap_or(1)
        .max(1) as f64
        * 1.1;
    let caption = format!(
        "Throughput per second ({} sent, {} alerts received, {} lost)",
        s.sent, s.received_alerts, s.lost
    );
    let mut chart = ChartBuilder::on(area)
        .caption(caption, (FONT, 18))
        .margin(12)
        .x_label_area_size(36)
        .y_label_area_size(70)
        .build_cartesian_2d(0f64..x_end(rows), 0f64..y_max)
        .map_err(err)?;
    chart
        .configure_mesh()
        .x_desc("seconds since the start")
        .y_desc("messages per second")
        .draw()
        .map_err(err)?;
    let series: [(&'static str, Pick); 2] =
        [("sent", |r| r.sent), ("alerts received", |r| r.alerts)];
    let lines = series.map(|(name, pick)| {
        let pts = rows.iter().map(|r| (r.t_s + 0.5, pick(r) as f64));
        (name, pts.collect())
    });
    draw_lines(&mut chart, lines, SeriesLabelPosition::UpperRight)
}

/// Draws named lines in the palette's order, with their legend at `legend`.
fn draw_lines<'a, Y: Ranged<ValueType = f64>>(
    chart: &mut ChartContext<'a, SVGBackend<'a>, Cartesian2d<RangedCoordf64, Y>>,
    lines: impl IntoIterator<Item = (&'static str, Vec<(f64, f64)>)>,
    legend: SeriesLabelPosition,
) -> Result<(), PlotError> {
    for (i, (name, pts)) in lines.into_iter().enumerate() {
        let c = COLOURS[i % COLOURS.len()];
        chart
            .draw_series(LineSeries::new(pts, c.stroke_width(2)))
            .map_err(err)?
            .label(name)
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], c.stroke_width(2)));
    }
    chart
        .configure_series_labels()
        .position(legend)
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()
        .map_err(err)
}

/// Log axis bounds (ms) around the values, never empty.
fn log_range(values: impl Iterator<Item = f64>) -> std::ops::Range<f64> {
    let (lo, hi) = values
        .filter(|v| *v > 0.0)
        .fold((f64::MAX, 0f64), |(lo, hi), v| (lo.min(v), hi.max(v)));
    if hi <= 0.0 {
        return 0.01..10.0;
    }
    (lo / 2.0).max(0.001)..hi * 2.0
}

fn percentiles(area: &Area, rows: &[Interval]) -> Result<(), PlotError> {
    let ms = |us: u64| us as f64 / 1000.0;
    let y = log_range(
        rows.iter()
            .flat_map(|r| [ms(r.latency_us.p50), ms(r.latency_us.max)]),
    );
    let mut chart = ChartBuilder::on(area)
        .caption(
            "End-to-end latency per second (alerts received in that second)",
            (FONT, 18),
        )
        .margin(12)
        .x_label_area_size(36)
        .y_label_area_size(70)
        .build_cartesian_2d(0f64..x_end(rows), y.log_scale())
        .map_err(err)?;
    chart
        .configure_mesh()
        .x_desc("seconds since the start")
        .y_desc("latency (ms)")
        .y_labels(8)
        .y_label_formatter(&|v| format!("{v}"))
        .draw()
        .map_err(err)?;
    let series: [(&'static str, Pick); 4] = [
        ("p50", |r| r.latency_us.p50),
        ("p90", |r| r.latency_us.p90),
        ("p99", |r| r.latency_us.p99),
        ("max", |r| r.latency_us.max),
    ];
    let lines = series.map(|(name, pick)| {
        let pts = rows.iter().filter(|r| pick(r) > 0);
        (name, pts.map(|r| (r.t_s + 0.5, ms(pick(r)))).collect())
    });
    draw_lines(&mut chart, lines, SeriesLabelPosition::UpperRight)
}

/// `-log10(1 - q)`: 1 = 90 %, 2 = 99 %, 3 = 99.9 %.
fn nines(q: f64) -> f64 {
    -(1.0 - q).max(1e-9).log10()
}

/// The whole run's latency distribution: `(nines, ms)` points of HdrHistogram's percentile
/// iteration (5 ticks per half distance), below the 100th percentile.
pub fn distribution_points(h: &Histogram<u64>) -> Vec<(f64, f64)> {
    if h.is_empty() {
        return Vec::new();
    }
    h.iter_quantiles(5)
        .filter(|v| v.quantile_iterated_to() < 1.0)
        .map(|v| {
            (
                nines(v.quantile_iterated_to()),
                v.value_iterated_to() as f64 / 1000.0,
            )
        })
        .collect()
}

fn distribution(area: &Area, h: &Histogram<u64>) -> Result<(), PlotError> {
    let pts = distribution_points(h);
    let x_max = pts
        .iter()
        .map(|p| p.0)
        .fold(1.0f64, f64::max)
        .ceil()
        .max(2.0);
    let y = log_range(pts.iter().map(|p| p.1).chain([h.max() as f64 / 1000.0]));
    let caption = if h.is_empty() {
        "Latency distribution (no alerts)".to_string()
    } else {
        format!(
            "Latency distribution of the run ({} samples, max {})",
            h.len(),
            human_us(h.max())
        )
    };
    let mut chart = ChartBuilder::on(area)
        .caption(caption, (FONT, 18))
        .margin(12)
        .x_label_area_size(36)
        .y_label_area_size(70)
        .build_cartesian_2d(0f64..x_max, y.log_scale())
        .map_err(err)?;
    chart
        .configure_mesh()
        .x_desc("percentile")
        .y_desc("latency (ms)")
        .y_labels(8)
        .y_label_formatter(&|v| format!("{v}"))
        .x_labels(x_max as usize + 1)
        .x_label_formatter(&|x| {
            let p = 100.0 * (1.0 - 10f64.powf(-x));
            let digits = (x.round() as usize).saturating_sub(2);
            format!("{p:.digits$}%")
        })
        .draw()
        .map_err(err)?;
    draw_lines(
        &mut chart,
        [("latency at percentile", pts)],
        SeriesLabelPosition::UpperLeft,
    )
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// A page: the charts inline and the summary table.
pub fn html(s: &Summary, rows: &[Interval], latency: &Histogram<u64>) -> Result<String, PlotError> {
    let chart = svg(s, rows, latency)?;
    let chart = chart
        .trim_start()
        .strip_prefix("<?xml version=\"1.0\" encoding=\"UTF-8\"?>")
        .unwrap_or(&chart);
    Ok(format!(
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
         <title>loadgen report</title>\n\
         <style>body{{font-family:sans-serif;margin:2em}}pre{{background:#f6f6f6;padding:1em}}</style>\n\
         </head>\n<body>\n<h1>loadgen report</h1>\n<pre>{}</pre>\n{}\n</body>\n</html>\n",
        escape(&s.table()),
        chart.trim()
    ))
}

/// Writes the report in the format the file name asks for.
pub fn write(
    path: &Path,
    s: &Summary,
    rows: &[Interval],
    latency: &Histogram<u64>,
) -> Result<(), PlotError> {
    let text = match Format::of(path) {
        Some(Format::Html) => html(s, rows, latency)?,
        _ => svg(s, rows, latency)?,
    };
    std::fs::write(path, text).map_err(|e| PlotError(format!("{}: {e}", path.display())))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::account::new_latency_histogram;
    use crate::report::Latency;

    fn rows() -> Vec<Interval> {
        (0..5)
            .map(|i| Interval {
                t_s: i as f64,
                sent: 1000 + i * 10,
                alerts: 300,
                latency_us: Latency {
                    p50: 800 + i * 100,
                    p90: 1500,
                    p99: 4000,
                    p999: 5000,
                    max: 9000,
                },
            })
            .collect()
    }

    fn histogram() -> Histogram<u64> {
        let mut h = new_latency_histogram();
        for v in 1..=10_000u64 {
            h.record(v).unwrap();
        }
        h
    }

    #[test]
    fn formats_come_from_the_extension() {
        assert_eq!(Format::of(Path::new("r.svg")), Some(Format::Svg));
        assert_eq!(Format::of(Path::new("a/r.HTML")), Some(Format::Html));
        assert_eq!(Format::of(Path::new("r.png")), None);
        assert_eq!(Format::of(Path::new("r")), None);
    }

    #[test]
    fn svg_is_xml_with_every_series() {
        let s = Summary {
            sent: 5100,
            ..Default::default()
        };
        let out = svg(&s, &rows(), &histogram()).unwrap();
        let doc = roxmltree::Document::parse(&out).expect("well-formed SVG");
        assert_eq!(doc.root_element().tag_name().name(), "svg");
        let texts: Vec<&str> = doc
            .descendants()
            .filter(|n| n.is_text())
            .filter_map(|n| n.text())
            .collect();
        for want in [
            "sent",
            "alerts received",
            "p50",
            "p90",
            "p99",
            "max",
            "latency at percentile",
            "99%",
        ] {
            assert!(
                texts.iter().any(|t| t.trim() == want),
                "no {want:?} in {texts:?}"
            );
        }
        // One polyline per series: 2 + 4 + 1 (legend samples are paths too).
        let lines = doc
            .descendants()
            .filter(|n| n.tag_name().name() == "polyline")
            .count();
        assert!(lines >= 7, "{lines} polylines");
    }

    #[test]
    fn an_empty_run_still_draws() {
        let out = svg(&Summary::default(), &[], &new_latency_histogram()).unwrap();
        roxmltree::Document::parse(&out).unwrap();
        assert!(out.contains("no alerts"));
    }

    #[test]
    fn html_holds_the_table_and_the_chart() {
        let s = Summary {
            sent: 5100,
            ..Default::default()
        };
        let page = html(&s, &rows(), &histogram()).unwrap();
        assert!(page.starts_with("<!DOCTYPE html>"));
        assert!(page.contains("<svg") && page.contains("5,100"));
        assert!(!page.contains("<?xml"));
    }

    #[test]
    fn distribution_axis_is_in_nines() {
        let pts = distribution_points(&histogram());
        assert!(pts.first().unwrap().0 == 0.0);
        assert!(pts.windows(2).all(|w| w[0].0 <= w[1].0 && w[0].1 <= w[1].1));
        let near_99 = pts.iter().find(|p| (p.0 - 2.0).abs() < 0.05).unwrap();
        assert!((near_99.1 - 9.9).abs() < 0.1, "{near_99:?}");
    }
}
