//! A series as an SVG chart, rendered here so any page (or the README) can show one without
//! JavaScript: the min–max band and mean of the history, its trend line, and, with a
//! threshold, the forecast's likely path inside its interval up to the crossing.

use svg::node::element::{Line, Path, Polyline, Rectangle, Text};
use svg::Document;

use super::forecast::PathPoint;

const WIDTH: f64 = 800.0;
const HEIGHT: f64 = 320.0;
const LEFT: f64 = 60.0;
const RIGHT: f64 = 20.0;
const TOP: f64 = 40.0;
const BOTTOM: f64 = 36.0;
const DAY_MS: i64 = 86_400_000;

/// One bucket of the history.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ChartBucket {
    pub ts_ms: i64,
    pub avg: f64,
    pub min: f64,
    pub max: f64,
}

/// Everything a chart shows.
pub struct Chart<'a> {
    pub title: &'a str,
    pub history: &'a [ChartBucket],
    /// A line through the history: (slope per day, intercept at day 0).
    pub trend: Option<(f64, f64)>,
    pub forecast: &'a [PathPoint],
    pub threshold: Option<f64>,
    pub crossing_ms: Option<i64>,
}

struct Scale {
    t0: i64,
    t1: i64,
    v0: f64,
    v1: f64,
}

impl Scale {
    fn x(&self, ts: i64) -> f64 {
        let span = (self.t1 - self.t0).max(1) as f64;
        LEFT + (ts - self.t0) as f64 / span * (WIDTH - LEFT - RIGHT)
    }

    fn y(&self, value: f64) -> f64 {
        let span = (self.v1 - self.v0).max(f64::EPSILON);
        TOP + (1.0 - (value - self.v0) / span) * (HEIGHT - TOP - BOTTOM)
    }

    fn point(&self, ts: i64, value: f64) -> String {
        format!("{:.1},{:.1}", self.x(ts), self.y(value))
    }
}

fn scale(chart: &Chart<'_>) -> Option<Scale> {
    let first = chart.history.first()?.ts_ms;
    let last = chart
        .forecast
        .last()
        .map(|p| p.ts_ms)
        .unwrap_or(chart.history.last()?.ts_ms);
    let values = chart
        .history
        .iter()
        .flat_map(|b| [b.min, b.max])
        .chain(chart.forecast.iter().flat_map(|p| [p.earliest, p.latest]))
        .chain(chart.threshold)
        .filter(|v| v.is_finite());
    let (lo, hi) = values.fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| {
        (lo.min(v), hi.max(v))
    });
    let pad = ((hi - lo) * 0.05).max(0.5);
    Some(Scale {
        t0: first,
        t1: last.max(first + 1),
        v0: lo - pad,
        v1: hi + pad,
    })
}

/// The chart as an SVG document; a chart with no history says so.
pub fn render(chart: &Chart<'_>) -> String {
    let mut document = Document::new()
        .set("viewBox", (0, 0, WIDTH, HEIGHT))
        .set("width", WIDTH)
        .set("height", HEIGHT)
        .set("font-family", "sans-serif")
        .set("font-size", 11)
        .add(
            Rectangle::new()
                .set("width", WIDTH)
                .set("height", HEIGHT)
                .set("fill", "#ffffff"),
        )
        .add(
            text(LEFT, 22.0, chart.title)
                .set("font-size", 14)
                .set("font-weight", "bold"),
        );
    let Some(scale) = scale(chart) else {
        return document
            .add(text(LEFT, HEIGHT / 2.0, "no data in this window"))
            .to_string();
    };
    document = axes(document, &scale);
    document = document
        .add(band(
            &scale,
            chart.history.iter().map(|b| (b.ts_ms, b.min, b.max)),
            "#1f77b4",
        ))
        .add(
            Polyline::new()
                .set("class", "history")
                .set("fill", "none")
                .set("stroke", "#1f77b4")
                .set("stroke-width", 1.5)
                .set(
                    "points",
                    points(&scale, chart.history.iter().map(|b| (b.ts_ms, b.avg))),
                ),
        );
    if let (Some((slope, intercept)), Some(first), Some(last)) =
        (chart.trend, chart.history.first(), chart.history.last())
    {
        let at = |ts: i64| intercept + slope * ts as f64 / DAY_MS as f64;
        document = document.add(
            line(
                &scale,
                (first.ts_ms, at(first.ts_ms)),
                (last.ts_ms, at(last.ts_ms)),
            )
            .set("class", "trend")
            .set("stroke", "#2ca02c")
            .set("stroke-dasharray", "6 3"),
        );
    }
    if !chart.forecast.is_empty() {
        document = document
            .add(band(
                &scale,
                chart
                    .forecast
                    .iter()
                    .map(|p| (p.ts_ms, p.latest, p.earliest)),
                "#ff7f0e",
            ))
            .add(
                Polyline::new()
                    .set("class", "forecast")
                    .set("fill", "none")
                    .set("stroke", "#ff7f0e")
                    .set("stroke-width", 1.5)
                    .set("stroke-dasharray", "4 3")
                    .set(
                        "points",
                        points(&scale, chart.forecast.iter().map(|p| (p.ts_ms, p.likely))),
                    ),
            );
    }
    if let Some(threshold) = chart.threshold {
        document = document
            .add(
                line(&scale, (scale.t0, threshold), (scale.t1, threshold))
                    .set("class", "threshold")
                    .set("stroke", "#d62728")
                    .set("stroke-dasharray", "2 2"),
            )
            .add(
                text(
                    LEFT + 4.0,
                    scale.y(threshold) - 4.0,
                    &format!("threshold {}", round(threshold)),
                )
                .set("fill", "#d62728"),
            );
    }
    if let Some(at) = chart.crossing_ms {
        let x = scale.x(at);
        document = document
            .add(
                Line::new()
                    .set("class", "crossing")
                    .set("x1", x)
                    .set("x2", x)
                    .set("y1", TOP)
                    .set("y2", HEIGHT - BOTTOM)
                    .set("stroke", "#d62728"),
            )
            .add(crossing_label(x, at));
    }
    document.to_string()
}

/// "crosses <date>" beside the crossing line, on whichever side has room.
fn crossing_label(x: f64, at: i64) -> Text {
    let label = text(x, TOP + 12.0, &format!("crosses {}", date(at))).set("fill", "#d62728");
    if x > WIDTH * 0.75 {
        label.set("x", x - 4.0).set("text-anchor", "end")
    } else {
        label.set("x", x + 4.0)
    }
}

fn text(x: f64, y: f64, content: &str) -> Text {
    Text::new(content).set("x", x).set("y", y)
}

fn line(scale: &Scale, from: (i64, f64), to: (i64, f64)) -> Line {
    Line::new()
        .set("x1", scale.x(from.0))
        .set("y1", scale.y(from.1))
        .set("x2", scale.x(to.0))
        .set("y2", scale.y(to.1))
        .set("stroke-width", 1.2)
}

fn points(scale: &Scale, values: impl Iterator<Item = (i64, f64)>) -> String {
    values
        .map(|(ts, v)| scale.point(ts, v))
        .collect::<Vec<_>>()
        .join(" ")
}

/// A filled area between a lower and an upper value at each instant.
fn band(scale: &Scale, values: impl Iterator<Item = (i64, f64, f64)>, colour: &str) -> Path {
    let values: Vec<(i64, f64, f64)> = values.collect();
    let upper = values.iter().map(|(t, _, hi)| scale.point(*t, *hi));
    let lower = values.iter().rev().map(|(t, lo, _)| scale.point(*t, *lo));
    let outline: Vec<String> = upper.chain(lower).collect();
    Path::new()
        .set("class", "band")
        .set("d", format!("M{}Z", outline.join(" L")))
        .set("fill", colour)
        .set("fill-opacity", 0.15)
        .set("stroke", "none")
}

fn axes(mut document: Document, scale: &Scale) -> Document {
    for i in 0..=4 {
        let value = scale.v0 + (scale.v1 - scale.v0) * f64::from(i) / 4.0;
        let y = scale.y(value);
        document = document
            .add(
                Line::new()
                    .set("x1", LEFT)
                    .set("x2", WIDTH - RIGHT)
                    .set("y1", y)
                    .set("y2", y)
                    .set("stroke", "#e0e0e0"),
            )
            .add(text(LEFT - 6.0, y + 4.0, &format!("{}", round(value))).set("text-anchor", "end"));
        let ts = scale.t0 + (scale.t1 - scale.t0) * i64::from(i) / 4;
        document = document.add(
            text(scale.x(ts), HEIGHT - BOTTOM + 16.0, &date(ts)).set("text-anchor", anchor(i)),
        );
    }
    document
}

/// The first and last date labels stay inside the chart.
fn anchor(i: i32) -> &'static str {
    match i {
        0 => "start",
        4 => "end",
        _ => "middle",
    }
}

fn round(value: f64) -> f64 {
    (value * 10.0).round() / 10.0
}

fn date(ts_ms: i64) -> String {
    let mut text = super::super::rfc3339(ts_ms);
    text.truncate(10);
    text
}
