//! Bar charts as hand-written SVG, rendered on the server: no script, no
//! fonts or files fetched, readable offline. One chart type covers every
//! plot the dashboard draws: bars over categories, stacked when there is
//! more than one series (spending per day by role and model), single
//! otherwise (merges per hour, median time per status, judge scores).
//!
//! Each bar's height is proportional to its value (`value / max * plot
//! height`, the axis maximum rounded up to a round number); every bar has
//! a `<title>` with its exact value, and the figure lists the series in a
//! legend and carries a text description for screen readers.

use maud::{html, Markup, PreEscaped};
use std::fmt::Write as _;

/// Colours of the series, in order (Okabe–Ito: distinguishable with the
/// common colour-vision deficiencies, and dark enough on white).
pub(crate) const PALETTE: [&str; 8] = [
    "#0072B2", "#E69F00", "#009E73", "#CC79A7", "#56B4E9", "#D55E00", "#7A6F00", "#444444",
];

const WIDTH: f64 = 640.0;
const HEIGHT: f64 = 240.0;
const LEFT: f64 = 60.0;
const RIGHT: f64 = 12.0;
const TOP: f64 = 14.0;
const BOTTOM: f64 = 46.0;

/// How values are written on the axis and in tooltips.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Unit {
    Usd,
    Count,
    Seconds,
    Score,
}

impl Unit {
    pub(crate) fn format(self, v: f64) -> String {
        match self {
            Unit::Usd if v != 0.0 && v.abs() < 0.01 => format!("${v:.4}"),
            Unit::Usd if v != 0.0 && v.abs() < 1.0 => format!("${v:.3}"),
            Unit::Usd => format!("${v:.2}"),
            Unit::Count => format!("{v:.0}"),
            Unit::Score => format!("{v:.1}"),
            Unit::Seconds => duration_text(v),
        }
    }
}

/// `42 s`, `3.5 min`, `2.1 h`.
pub(crate) fn duration_text(seconds: f64) -> String {
    if seconds < 90.0 {
        format!("{seconds:.0} s")
    } else if seconds < 5400.0 {
        format!("{:.1} min", seconds / 60.0)
    } else {
        format!("{:.1} h", seconds / 3600.0)
    }
}

/// One stacked layer: a name for the legend and a value per category.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Series {
    pub name: String,
    pub values: Vec<f64>,
}

/// A bar chart: categories along the x axis, one bar each, made of the
/// series' values stacked bottom-up.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct BarChart {
    /// The element id (`plot-cost`), also what tests look the chart up by.
    pub id: String,
    pub title: String,
    pub unit: Unit,
    pub categories: Vec<String>,
    /// Short axis labels, one per category, when the categories' names
    /// (which the tooltips and the description use) are too long for the
    /// axis; empty: the categories, shortened.
    pub labels: Vec<String>,
    /// Each series' colour, when its meaning has one (green for kept);
    /// empty: the palette, in order.
    pub colours: Vec<&'static str>,
    pub series: Vec<Series>,
    /// A fixed axis maximum (10 for judge scores); else from the data.
    pub max: Option<f64>,
}

impl BarChart {
    /// The tallest stack.
    fn data_max(&self) -> f64 {
        (0..self.categories.len())
            .map(|i| {
                self.series
                    .iter()
                    .map(|s| s.values.get(i).copied().unwrap_or(0.0).max(0.0))
                    .sum::<f64>()
            })
            .fold(0.0, f64::max)
    }

    fn is_empty(&self) -> bool {
        self.data_max() <= 0.0
    }

    /// The figure: title, the SVG (or a note when there is nothing to
    /// draw) and the legend.
    pub(crate) fn render(&self) -> Markup {
        let empty = self.is_empty();
        html! {
            figure.plot id=(self.id) {
                figcaption { (self.title) }
                @if empty {
                    p.muted { "Nothing to show yet." }
                } @else {
                    (PreEscaped(self.svg()))
                    @if self.series.len() > 1 {
                        ul.legend aria-label="Legend" {
                            @for (i, s) in self.series.iter().enumerate() {
                                li {
                                    svg.swatch width="12" height="12" viewBox="0 0 12 12" aria-hidden="true" {
                                        rect width="12" height="12" fill=(self.colour(i)) {}
                                    }
                                    " " (s.name)
                                }
                            }
                        }
                    }
                }
            }
        }
    }

    /// The chart as an `<svg>` element.
    pub(crate) fn svg(&self) -> String {
        let max = nice_ceiling(self.max.unwrap_or(0.0).max(self.data_max()));
        let plot_w = WIDTH - LEFT - RIGHT;
        let plot_h = HEIGHT - TOP - BOTTOM;
        let n = self.categories.len().max(1) as f64;
        let slot = plot_w / n;
        let bar_w = (slot * 0.7).clamp(2.0, 48.0);
        let mut s = String::new();
        let _ = write!(
            s,
            r#"<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {WIDTH} {HEIGHT}" role="img" aria-label="{}" class="chart">"#,
            esc(&self.title)
        );
        let _ = write!(s, "<desc>{}</desc>", esc(&self.description()));
        self.axes(&mut s, max, plot_h);
        let label_every = (self.categories.len() / 12).max(1);
        for (i, cat) in self.categories.iter().enumerate() {
            let x = LEFT + slot * i as f64 + (slot - bar_w) / 2.0;
            let mut y = TOP + plot_h;
            for (k, series) in self.series.iter().enumerate() {
                let v = series.values.get(i).copied().unwrap_or(0.0);
                if v <= 0.0 {
                    continue;
                }
                let h = v / max * plot_h;
                y -= h;
                let _ = write!(
                    s,
                    r#"<rect class="bar" x="{x:.2}" y="{y:.2}" width="{bar_w:.2}" height="{h:.2}" fill="{}"><title>{}{}: {}</title></rect>"#,
                    self.colour(k),
                    esc(cat),
                    if self.series.len() > 1 {
                        format!(", {}", esc(&series.name))
                    } else {
                        String::new()
                    },
                    esc(&self.unit.format(v))
                );
            }
            if i % label_every == 0 {
                let label = self.labels.get(i).unwrap_or(cat);
                let _ = write!(
                    s,
                    r#"<text class="x-label" x="{:.2}" y="{:.2}" text-anchor="middle">{}</text>"#,
                    LEFT + slot * i as f64 + slot / 2.0,
                    TOP + plot_h + 16.0,
                    esc(&short(label, 12))
                );
            }
        }
        s.push_str("</svg>");
        s
    }

    /// The y axis with three ticks, and the baseline.
    fn axes(&self, s: &mut String, max: f64, plot_h: f64) {
        for k in 0..=2 {
            let v = max * f64::from(k) / 2.0;
            let y = TOP + plot_h - plot_h * f64::from(k) / 2.0;
            let _ = write!(
                s,
                r#"<line class="grid" x1="{LEFT}" x2="{:.2}" y1="{y:.2}" y2="{y:.2}"></line><text class="y-label" x="{:.2}" y="{:.2}" text-anchor="end">{}</text>"#,
                WIDTH - RIGHT,
                LEFT - 6.0,
                y + 4.0,
                esc(&self.unit.format(v))
            );
        }
    }

    /// Series `k`'s colour.
    fn colour(&self, k: usize) -> &'static str {
        self.colours.get(k).copied().unwrap_or_else(|| colour(k))
    }

    /// The data in words, for screen readers.
    fn description(&self) -> String {
        let parts: Vec<String> = self
            .categories
            .iter()
            .enumerate()
            .map(|(i, c)| {
                let total: f64 = self
                    .series
                    .iter()
                    .map(|s| s.values.get(i).copied().unwrap_or(0.0))
                    .sum();
                format!("{c}: {}", self.unit.format(total))
            })
            .collect();
        format!("{}. {}", self.title, parts.join("; "))
    }
}

fn colour(i: usize) -> &'static str {
    PALETTE[i % PALETTE.len()]
}

/// The smallest of 1, 2, 2.5, 5 × 10^k at or above `v` (1 for nothing).
fn nice_ceiling(v: f64) -> f64 {
    if v.partial_cmp(&0.0) != Some(std::cmp::Ordering::Greater) || !v.is_finite() {
        return 1.0;
    }
    let mag = 10f64.powf(v.log10().floor());
    [1.0, 2.0, 2.5, 5.0, 10.0]
        .iter()
        .map(|m| m * mag)
        .find(|c| *c >= v * (1.0 - 1e-12))
        .unwrap_or(10.0 * mag)
}

fn short(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        return text.to_string();
    }
    let cut: String = text.chars().take(max.saturating_sub(1)).collect();
    format!("{cut}…")
}

/// Escapes text for SVG/XML content and attribute values.
fn esc(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// (height, fill) of every bar in `svg`.
    fn bars(svg: &str) -> Vec<(f64, String)> {
        svg.split(r#"<rect class="bar""#)
            .skip(1)
            .map(|rest| {
                let attr = |name: &str| {
                    let start = rest.find(&format!(" {name}=\"")).unwrap() + name.len() + 3;
                    let end = rest[start..].find('"').unwrap();
                    rest[start..start + end].to_string()
                };
                (attr("height").parse().unwrap(), attr("fill"))
            })
            .collect()
    }

    fn chart(series: Vec<Series>, categories: &[&str]) -> BarChart {
        BarChart {
            id: "plot-test".into(),
            title: "Test <chart>".into(),
            unit: Unit::Usd,
            categories: categories.iter().map(|c| c.to_string()).collect(),
            labels: Vec::new(),
            colours: Vec::new(),
            series,
            max: None,
        }
    }

    #[test]
    fn bar_heights_are_proportional_to_the_values() {
        let c = chart(
            vec![Series {
                name: "merged".into(),
                values: vec![1.0, 2.0, 4.0, 0.0],
            }],
            &["a", "b", "c", "d"],
        );
        let svg = c.svg();
        let b = bars(&svg);
        assert_eq!(b.len(), 3, "a zero value draws no bar: {svg}");
        assert!((b[1].0 / b[0].0 - 2.0).abs() < 1e-2, "{b:?}");
        assert!((b[2].0 / b[0].0 - 4.0).abs() < 1e-2, "{b:?}");
        // The axis goes to 5 (a round number above 4): the tallest bar
        // fills four fifths of the plot.
        let plot_h = HEIGHT - TOP - BOTTOM;
        assert!((b[2].0 - plot_h * 0.8).abs() < 1e-2, "{b:?}");
        assert!(svg.contains("<title>c: $4.00</title>"), "{svg}");
        assert!(svg.contains("Test &lt;chart&gt;"), "escaped: {svg}");
    }

    #[test]
    fn series_stack_with_one_colour_each_and_a_legend() {
        let c = chart(
            vec![
                Series {
                    name: "worker · replay:worker".into(),
                    values: vec![3.0, 1.0],
                },
                Series {
                    name: "judge · replay:judge".into(),
                    values: vec![1.0, 0.0],
                },
            ],
            &["2026-03-01", "2026-03-02"],
        );
        let b = bars(&c.svg());
        assert_eq!(b.len(), 3);
        assert_eq!(b[0].1, PALETTE[0]);
        assert_eq!(b[1].1, PALETTE[1]);
        assert!((b[0].0 / b[1].0 - 3.0).abs() < 1e-2, "{b:?}");
        let html = c.render().into_string();
        assert!(html.contains(r#"id="plot-test""#), "{html}");
        assert!(html.contains("judge · replay:judge"), "{html}");
        assert_eq!(html.matches("<li>").count(), 2, "{html}");
    }

    #[test]
    fn a_fixed_maximum_and_an_empty_chart() {
        let mut c = chart(
            vec![Series {
                name: "score".into(),
                values: vec![5.0],
            }],
            &["attempt 1"],
        );
        c.max = Some(10.0);
        let b = bars(&c.svg());
        assert!(
            (b[0].0 - (HEIGHT - TOP - BOTTOM) / 2.0).abs() < 1e-2,
            "{b:?}"
        );
        let empty = chart(vec![], &["x"]).render().into_string();
        assert!(empty.contains("Nothing to show yet"), "{empty}");
        assert!(!empty.contains("<svg"), "{empty}");
    }

    #[test]
    fn short_axis_labels_and_colours_by_meaning() {
        let mut c = chart(
            vec![
                Series {
                    name: "kept".into(),
                    values: vec![6.0, 0.0],
                },
                Series {
                    name: "reverted".into(),
                    values: vec![0.0, 5.0],
                },
            ],
            &["attempt 4, iteration 1", "attempt 4, iteration 2"],
        );
        c.labels = vec!["4 · it 1".into(), "4 · it 2".into()];
        c.colours = vec![PALETTE[2], PALETTE[5]];
        let svg = c.svg();
        assert!(svg.contains(">4 · it 2</text>"), "the short label: {svg}");
        assert!(
            svg.contains("<title>attempt 4, iteration 2, reverted: $5.00</title>"),
            "the tooltip keeps the full name: {svg}"
        );
        let b = bars(&svg);
        assert_eq!(
            b.iter().map(|x| x.1.as_str()).collect::<Vec<_>>(),
            [PALETTE[2], PALETTE[5]]
        );
        let html = c.render().into_string();
        assert!(
            html.contains(&format!(r#"fill="{}""#, PALETTE[5])),
            "the legend uses the same colours: {html}"
        );
    }

    #[test]
    fn round_axis_maxima_and_units() {
        assert_eq!(nice_ceiling(0.0), 1.0);
        assert_eq!(nice_ceiling(4.0), 5.0);
        assert_eq!(nice_ceiling(0.013), 0.02);
        assert_eq!(nice_ceiling(10.0), 10.0);
        assert_eq!(nice_ceiling(11.0), 20.0);
        assert_eq!(Unit::Seconds.format(30.0), "30 s");
        assert_eq!(Unit::Seconds.format(180.0), "3.0 min");
        assert_eq!(Unit::Usd.format(0.0012), "$0.0012");
        assert_eq!(Unit::Usd.format(0.025), "$0.025");
        assert_eq!(Unit::Usd.format(0.0), "$0.00");
    }
}
