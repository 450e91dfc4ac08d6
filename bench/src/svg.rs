//! Hand-written SVG plots for the benchmark report: latency by percentile (HDR style) and
//! throughput over time.
//!
//! Plain strings rather than a plotting crate: two kinds of line chart do not justify a
//! dependency, and a standalone SVG renders wherever the Markdown report does (GitHub, a browser).
//! Every function is pure, so a report re-rendered from report.json draws identical plots.

use std::fmt::Write as _;

const WIDTH: f64 = 800.0;
const HEIGHT: f64 = 420.0;
const PLOT_LEFT: f64 = 72.0;
const PLOT_RIGHT: f64 = 596.0;
const PLOT_TOP: f64 = 44.0;
const PLOT_BOTTOM: f64 = 364.0;
/// The legend sits in its own column right of the plot, so it never hides a curve.
const LEGEND_X: f64 = 612.0;
/// What fits between the legend's swatch and the right edge at the 12px font.
const LEGEND_LINE_CHARS: usize = 24;
const LEGEND_LINE_HEIGHT: f64 = 14.0;

/// Tableau 10. Colour follows a series' position, so callers that pass the same targets in the
/// same order get the same colour for a broker in every plot.
const PALETTE: [&str; 10] = [
    "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
    "#bcbd22", "#17becf",
];

/// Percentile tick labels, one per decade of 1/(1-p).
const PERCENTILE_TICKS: [&str; 7] = ["0%", "90%", "99%", "99.9%", "99.99%", "99.999%", "99.9999%"];
/// The 100th percentile (the maximum) lies at infinity on a 1/(1-p) axis; it is drawn at the
/// last tick instead, so the plot still shows the worst case.
const TAIL_DECADES_MAX: f64 = (PERCENTILE_TICKS.len() - 1) as f64;
/// Below two decades (99%) the tail that tells brokers apart would not be on the plot at all.
const TAIL_DECADES_MIN: f64 = 2.0;

/// A log latency axis once the spread exceeds this, since a linear axis would flatten the lower
/// series into the x axis when one broker's tail is orders of magnitude above the other's.
const LOG_SCALE_SPREAD: f64 = 20.0;

/// Latency by percentile, one line per series, on HDR Histogram's usual axes: x is
/// log10(1/(1-p)) so each decade of nines gets equal width; y is milliseconds.
///
/// `series` holds (label, [(percentile in 0..=100, latency in µs)]). A series with no points
/// keeps its legend entry and colour, marked "(no data)".
pub fn latency_percentiles(title: &str, series: &[(&str, &[(f64, u64)])]) -> String {
    let lines: Vec<Vec<(f64, f64)>> = series
        .iter()
        .map(|(_, points)| {
            let mut line: Vec<(f64, f64)> = points
                .iter()
                .filter(|(p, _)| p.is_finite())
                .map(|&(p, us)| (tail_decades(p), us as f64 / 1000.0))
                .collect();
            line.sort_by(|a, b| a.0.total_cmp(&b.0));
            line
        })
        .collect();

    let furthest = lines.iter().flatten().map(|&(x, _)| x).fold(0.0, f64::max);
    let decades = furthest.ceil().clamp(TAIL_DECADES_MIN, TAIL_DECADES_MAX);
    let x = Axis {
        lo: 0.0,
        hi: decades,
        log: false,
        ticks: (0..=decades as usize)
            .map(|d| (d as f64, PERCENTILE_TICKS[d].to_string()))
            .collect(),
        minor: Vec::new(),
    };
    let y = value_axis(lines.iter().flatten().map(|&(_, ms)| ms), true);

    let mut out = String::new();
    let entries: Vec<LegendEntry> = series
        .iter()
        .zip(&lines)
        .enumerate()
        .map(|(i, ((label, _), line))| LegendEntry {
            label: label.to_string(),
            colour: colour(i),
            dashed: false,
            has_data: !line.is_empty(),
        })
        .collect();
    // Writing into a String cannot fail.
    let _ = draw(
        &mut out,
        title,
        &x,
        &y,
        "percentile",
        "latency (ms)",
        |out, plot| {
            for (i, line) in lines.iter().enumerate() {
                plot.line(out, line, colour(i), false)?;
            }
            legend(out, &entries)
        },
    );
    out
}

/// Throughput over time: one solid line per series (publish MB/s) and, for each series with a
/// non-empty entry in `consume` at the same index, a dashed line in the same colour.
///
/// `publish` holds (label, [(seconds since the load started, MB/s)]). When `warmup_end_s` is
/// given, the warm-up is shaded and its end marked, so the measured window is visible.
pub fn throughput_timeline(
    title: &str,
    publish: &[(&str, &[(f64, f64)])],
    consume: &[&[(f64, f64)]],
    warmup_end_s: Option<f64>,
) -> String {
    let finite = |points: &[(f64, f64)]| -> Vec<(f64, f64)> {
        points
            .iter()
            .copied()
            .filter(|(t, v)| t.is_finite() && v.is_finite())
            .collect()
    };
    let publish_lines: Vec<Vec<(f64, f64)>> = publish.iter().map(|(_, p)| finite(p)).collect();
    let consume_lines: Vec<Vec<(f64, f64)>> = consume.iter().map(|c| finite(c)).collect();
    let all = || publish_lines.iter().chain(&consume_lines).flatten();

    let t_max = all()
        .map(|&(t, _)| t)
        .chain(warmup_end_s.filter(|w| w.is_finite()))
        .fold(0.0, f64::max);
    let x = linear_axis(0.0, t_max);
    let y = value_axis(all().map(|&(_, v)| v), false);

    let mut entries: Vec<LegendEntry> = publish
        .iter()
        .enumerate()
        .map(|(i, (label, _))| LegendEntry {
            label: label.to_string(),
            colour: colour(i),
            dashed: false,
            has_data: !publish_lines[i].is_empty()
                || consume_lines.get(i).is_some_and(|c| !c.is_empty()),
        })
        .collect();
    if consume_lines.iter().any(|c| !c.is_empty()) {
        // A key for line styles, in neutral grey so it is not mistaken for a series.
        entries.push(LegendEntry {
            label: String::new(),
            colour: "none",
            dashed: false,
            has_data: true,
        });
        for (label, dashed) in [("publish", false), ("consume", true)] {
            entries.push(LegendEntry {
                label: label.to_string(),
                colour: "#555555",
                dashed,
                has_data: true,
            });
        }
    }

    let mut out = String::new();
    // Writing into a String cannot fail.
    let _ = draw(
        &mut out,
        title,
        &x,
        &y,
        "seconds since the load started",
        "MB/s",
        |out, plot| {
            if let Some(w) = warmup_end_s.filter(|w| w.is_finite() && *w > 0.0) {
                plot.warmup(out, w)?;
            }
            for (i, line) in publish_lines.iter().enumerate() {
                plot.line(out, line, colour(i), false)?;
            }
            for (i, line) in consume_lines.iter().enumerate() {
                plot.line(out, line, colour(i), true)?;
            }
            legend(out, &entries)
        },
    );
    out
}

fn colour(i: usize) -> &'static str {
    PALETTE[i % PALETTE.len()]
}

/// Decades of 1/(1-p) for a percentile p in 0..=100.
fn tail_decades(percentile: f64) -> f64 {
    let tail = (1.0 - percentile / 100.0).max(10f64.powf(-TAIL_DECADES_MAX));
    (-tail.log10()).max(0.0)
}

/// Escapes text for SVG content and attribute values.
fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            c => out.push(c),
        }
    }
    out
}

struct Axis {
    lo: f64,
    hi: f64,
    log: bool,
    ticks: Vec<(f64, String)>,
    /// Unlabelled gridlines (the 2..9 multiples within each decade of a log axis).
    minor: Vec<f64>,
}

impl Axis {
    /// Position of `v` along the axis, 0..=1; values outside the range (zero on a log axis)
    /// are pinned to its edge rather than drawn off the plot.
    fn fraction(&self, v: f64) -> f64 {
        let f = if self.log {
            let v = v.max(self.lo);
            (v.log10() - self.lo.log10()) / (self.hi.log10() - self.lo.log10())
        } else {
            (v - self.lo) / (self.hi - self.lo)
        };
        if f.is_finite() {
            f.clamp(0.0, 1.0)
        } else {
            0.0
        }
    }
}

/// A y axis for `values`: from zero on a linear scale, or whole decades on a log scale when
/// `allow_log` and the values spread wider than `LOG_SCALE_SPREAD`.
fn value_axis(values: impl Iterator<Item = f64>, allow_log: bool) -> Axis {
    let (mut min_positive, mut max) = (f64::INFINITY, 0.0f64);
    for v in values.filter(|v| v.is_finite()) {
        max = max.max(v);
        if v > 0.0 {
            min_positive = min_positive.min(v);
        }
    }
    if allow_log && min_positive.is_finite() && max / min_positive > LOG_SCALE_SPREAD {
        log_axis(min_positive, max)
    } else {
        linear_axis(0.0, max)
    }
}

/// About five ticks at multiples of 1, 2 or 5 × 10^k, the range rounded out to a tick.
fn linear_axis(lo: f64, hi: f64) -> Axis {
    let span = if hi - lo > 0.0 { hi - lo } else { 1.0 };
    let raw = span / 5.0;
    let magnitude = 10f64.powf(raw.log10().floor());
    let step = magnitude
        * match raw / magnitude {
            n if n <= 1.0 => 1.0,
            n if n <= 2.0 => 2.0,
            n if n <= 5.0 => 5.0,
            _ => 10.0,
        };
    let decimals = (-step.log10().floor()).max(0.0) as usize;
    let count = (span / step - 1e-9).ceil().max(1.0) as usize;
    let ticks = (0..=count)
        .map(|k| {
            let v = lo + k as f64 * step;
            (v, format!("{v:.decimals$}"))
        })
        .collect();
    Axis {
        lo,
        hi: lo + count as f64 * step,
        log: false,
        ticks,
        minor: Vec::new(),
    }
}

fn log_axis(min: f64, max: f64) -> Axis {
    let lo_exp = min.log10().floor() as i32;
    let hi_exp = (max.log10().ceil() as i32).max(lo_exp + 1);
    let ticks = (lo_exp..=hi_exp)
        .map(|e| {
            let v = 10f64.powi(e);
            let decimals = (-e).max(0) as usize;
            (v, format!("{v:.decimals$}"))
        })
        .collect();
    let minor = (lo_exp..hi_exp)
        .flat_map(|e| (2..10).map(move |m| f64::from(m) * 10f64.powi(e)))
        .collect();
    Axis {
        lo: 10f64.powi(lo_exp),
        hi: 10f64.powi(hi_exp),
        log: true,
        ticks,
        minor,
    }
}

struct Plot<'a> {
    x: &'a Axis,
    y: &'a Axis,
}

impl Plot<'_> {
    fn px(&self, x: f64) -> f64 {
        PLOT_LEFT + self.x.fraction(x) * (PLOT_RIGHT - PLOT_LEFT)
    }

    fn py(&self, y: f64) -> f64 {
        PLOT_BOTTOM - self.y.fraction(y) * (PLOT_BOTTOM - PLOT_TOP)
    }

    fn line(
        &self,
        out: &mut String,
        points: &[(f64, f64)],
        colour: &str,
        dashed: bool,
    ) -> std::fmt::Result {
        if points.is_empty() {
            return Ok(());
        }
        let dash = if dashed {
            r#" stroke-dasharray="6 4""#
        } else {
            ""
        };
        write!(
            out,
            r#"<polyline fill="none" stroke="{colour}" stroke-width="1.8" stroke-linejoin="round"{dash} points=""#
        )?;
        for (i, &(x, y)) in points.iter().enumerate() {
            let sep = if i == 0 { "" } else { " " };
            write!(out, "{sep}{:.1},{:.1}", self.px(x), self.py(y))?;
        }
        writeln!(out, r#""/>"#)?;
        if let [(x, y)] = points {
            // A one-point polyline draws nothing; the dot keeps the value visible.
            writeln!(
                out,
                r#"<circle cx="{:.1}" cy="{:.1}" r="3" fill="{colour}"/>"#,
                self.px(*x),
                self.py(*y)
            )?;
        }
        Ok(())
    }

    fn warmup(&self, out: &mut String, end_s: f64) -> std::fmt::Result {
        let x = self.px(end_s);
        writeln!(
            out,
            r##"<rect x="{PLOT_LEFT:.1}" y="{PLOT_TOP:.1}" width="{:.1}" height="{:.1}" fill="#000000" fill-opacity="0.06"/>"##,
            x - PLOT_LEFT,
            PLOT_BOTTOM - PLOT_TOP
        )?;
        writeln!(
            out,
            r##"<line x1="{x:.1}" y1="{PLOT_TOP:.1}" x2="{x:.1}" y2="{PLOT_BOTTOM:.1}" stroke="#555555" stroke-dasharray="4 3"/>"##
        )?;
        // Inside the shaded band when it has room, else just right of the marker.
        let (tx, anchor, text) = if x - PLOT_LEFT > 56.0 {
            (x - 4.0, "end", "warm-up")
        } else {
            (x + 4.0, "start", "end of warm-up")
        };
        writeln!(
            out,
            r##"<text x="{tx:.1}" y="{:.1}" text-anchor="{anchor}" fill="#555555">{text}</text>"##,
            PLOT_TOP + 14.0
        )
    }
}

struct LegendEntry {
    label: String,
    colour: &'static str,
    dashed: bool,
    has_data: bool,
}

fn legend(out: &mut String, entries: &[LegendEntry]) -> std::fmt::Result {
    let mut y = PLOT_TOP + 8.0;
    for entry in entries {
        if entry.colour != "none" {
            let dash = if entry.dashed {
                r#" stroke-dasharray="6 4""#
            } else {
                ""
            };
            writeln!(
                out,
                r#"<line x1="{LEGEND_X:.1}" y1="{y:.1}" x2="{:.1}" y2="{y:.1}" stroke="{}" stroke-width="2.5"{dash}/>"#,
                LEGEND_X + 22.0,
                entry.colour
            )?;
        }
        let mut lines = wrap(&entry.label, LEGEND_LINE_CHARS);
        if !entry.has_data {
            // Kept whole: "(no" and "data)" on separate lines would read as two remarks.
            const NO_DATA: &str = "(no data)";
            match lines.last_mut() {
                Some(last) if last.chars().count() + 1 + NO_DATA.len() <= LEGEND_LINE_CHARS => {
                    last.push(' ');
                    last.push_str(NO_DATA);
                }
                _ => lines.push(NO_DATA.to_string()),
            }
        }
        for (i, line) in lines.iter().enumerate() {
            writeln!(
                out,
                r#"<text x="{:.1}" y="{:.1}">{}</text>"#,
                LEGEND_X + 28.0,
                y + 4.0 + LEGEND_LINE_HEIGHT * i as f64,
                escape(line)
            )?;
        }
        y += 20.0 + LEGEND_LINE_HEIGHT * lines.len().saturating_sub(1) as f64;
    }
    Ok(())
}

/// Greedy word wrap; a word longer than a line is split, since SVG text never wraps by itself
/// and would run off the image.
fn wrap(text: &str, width: usize) -> Vec<String> {
    let mut lines: Vec<String> = Vec::new();
    let mut line = String::new();
    for word in text.split_whitespace() {
        let chars: Vec<char> = word.chars().collect();
        for piece in chars.chunks(width.max(1)) {
            let piece: String = piece.iter().collect();
            if !line.is_empty() && line.chars().count() + 1 + piece.chars().count() > width {
                lines.push(std::mem::take(&mut line));
            }
            if !line.is_empty() {
                line.push(' ');
            }
            line.push_str(&piece);
        }
    }
    if !line.is_empty() {
        lines.push(line);
    }
    lines
}

/// The document, frame, gridlines and labels, with `body` drawing the data on top.
fn draw(
    out: &mut String,
    title: &str,
    x: &Axis,
    y: &Axis,
    x_label: &str,
    y_label: &str,
    body: impl FnOnce(&mut String, &Plot) -> std::fmt::Result,
) -> std::fmt::Result {
    let plot = Plot { x, y };
    writeln!(
        out,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" viewBox="0 0 {WIDTH} {HEIGHT}" font-family="sans-serif" font-size="12">"#
    )?;
    writeln!(
        out,
        r##"<rect width="{WIDTH}" height="{HEIGHT}" fill="#ffffff"/>"##
    )?;
    writeln!(
        out,
        r#"<text x="{:.1}" y="26" text-anchor="middle" font-size="15" font-weight="bold">{}</text>"#,
        WIDTH / 2.0,
        escape(title)
    )?;

    for &v in &y.minor {
        let py = plot.py(v);
        writeln!(
            out,
            r##"<line x1="{PLOT_LEFT:.1}" y1="{py:.1}" x2="{PLOT_RIGHT:.1}" y2="{py:.1}" stroke="#eeeeee"/>"##
        )?;
    }
    for (v, label) in &y.ticks {
        let py = plot.py(*v);
        writeln!(
            out,
            r##"<line x1="{PLOT_LEFT:.1}" y1="{py:.1}" x2="{PLOT_RIGHT:.1}" y2="{py:.1}" stroke="#cccccc"/>"##
        )?;
        writeln!(
            out,
            r#"<text x="{:.1}" y="{:.1}" text-anchor="end">{}</text>"#,
            PLOT_LEFT - 6.0,
            py + 4.0,
            escape(label)
        )?;
    }
    for (v, label) in &x.ticks {
        let px = plot.px(*v);
        writeln!(
            out,
            r##"<line x1="{px:.1}" y1="{PLOT_TOP:.1}" x2="{px:.1}" y2="{PLOT_BOTTOM:.1}" stroke="#cccccc"/>"##
        )?;
        writeln!(
            out,
            r#"<text x="{px:.1}" y="{:.1}" text-anchor="middle">{}</text>"#,
            PLOT_BOTTOM + 16.0,
            escape(label)
        )?;
    }
    writeln!(
        out,
        r##"<rect x="{PLOT_LEFT:.1}" y="{PLOT_TOP:.1}" width="{:.1}" height="{:.1}" fill="none" stroke="#333333"/>"##,
        PLOT_RIGHT - PLOT_LEFT,
        PLOT_BOTTOM - PLOT_TOP
    )?;
    writeln!(
        out,
        r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">{}</text>"#,
        (PLOT_LEFT + PLOT_RIGHT) / 2.0,
        PLOT_BOTTOM + 40.0,
        escape(x_label)
    )?;
    writeln!(
        out,
        r#"<text transform="translate(18,{:.1}) rotate(-90)" text-anchor="middle">{}</text>"#,
        (PLOT_TOP + PLOT_BOTTOM) / 2.0,
        escape(y_label)
    )?;

    body(out, &plot)?;
    write!(out, "</svg>")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Checks that tags nest and close, and that every '&' starts an entity: enough to catch
    /// what hand-written SVG gets wrong (unescaped labels, unbalanced elements).
    fn assert_well_formed(svg: &str) {
        assert!(svg.starts_with("<svg xmlns=\"http://www.w3.org/2000/svg\""));
        assert!(svg.ends_with("</svg>"));
        let mut open: Vec<&str> = Vec::new();
        let mut rest = svg;
        while let Some(start) = rest.find('<') {
            assert_text_escaped(&rest[..start]);
            let end = start + rest[start..].find('>').expect("every tag closes");
            let tag = &rest[start + 1..end];
            if let Some(name) = tag.strip_prefix('/') {
                assert_eq!(open.pop(), Some(name), "closing tag matches");
            } else if !tag.ends_with('/') {
                open.push(tag.split_whitespace().next().expect("tag name"));
            }
            assert_text_escaped(tag);
            rest = &rest[end + 1..];
        }
        assert!(open.is_empty(), "unclosed: {open:?}");
    }

    fn assert_text_escaped(text: &str) {
        for (i, _) in text.match_indices('&') {
            let entity = &text[i..];
            assert!(
                ["&amp;", "&lt;", "&gt;", "&quot;", "&apos;"]
                    .iter()
                    .any(|e| entity.starts_with(e)),
                "bare & in {text:?}"
            );
        }
    }

    const SPOOL: [(f64, u64); 5] = [
        (0.0, 300),
        (50.0, 900),
        (99.0, 2_000),
        (99.9, 3_100),
        (100.0, 4_000),
    ];
    const KAFKA: [(f64, u64); 5] = [
        (0.0, 2_000),
        (50.0, 9_000),
        (99.0, 40_000),
        (99.9, 90_000),
        (100.0, 250_000),
    ];

    #[test]
    fn percentile_plot_draws_a_line_per_series_and_escapes_labels() {
        let svg = latency_percentiles(
            "publish <latency>",
            &[("Spool", &SPOOL), ("Kafka & fsync", &KAFKA)],
        );
        assert_well_formed(&svg);
        assert_eq!(svg.matches("<polyline").count(), 2);
        assert!(svg.contains("Kafka &amp; fsync"));
        assert!(svg.contains("publish &lt;latency&gt;"));
        assert!(svg.contains(">99.9%<"));
        // 0.3 ms to 250 ms spans more than LOG_SCALE_SPREAD: decade ticks, minor gridlines.
        assert!(svg.contains(">0.1<") && svg.contains(">1000<"));
    }

    #[test]
    fn percentile_plot_keeps_colours_for_series_without_data() {
        let svg = latency_percentiles("e2e", &[("Spool", &[]), ("Kafka", &KAFKA)]);
        assert_well_formed(&svg);
        assert_eq!(svg.matches("<polyline").count(), 1);
        assert!(svg.contains("Spool (no data)"));
        assert!(svg.contains(&format!(r#"stroke="{}" stroke-width="1.8""#, PALETTE[1])));
    }

    #[test]
    fn close_latencies_use_a_linear_axis_from_zero() {
        let svg = latency_percentiles("x", &[("a", &[(50.0, 1_000), (99.0, 4_000)])]);
        assert_well_formed(&svg);
        assert!(svg.contains(">0<") && svg.contains(">4<"));
        assert!(!svg.contains("#eeeeee"), "no minor log gridlines");
    }

    #[test]
    fn long_legend_labels_wrap_instead_of_leaving_the_image() {
        assert_eq!(
            wrap("Kafka (fsync parity) & more", 24),
            ["Kafka (fsync parity) &", "more"]
        );
        assert_eq!(wrap("abcdefgh", 3), ["abc", "def", "gh"]);
        assert!(wrap("", 24).is_empty());
        let svg = latency_percentiles("x", &[("Kafka (fsync parity) & more", &[])]);
        assert_well_formed(&svg);
        assert!(svg.contains(">Kafka (fsync parity) &amp;<") && svg.contains(">more (no data)<"));
        let svg = latency_percentiles("x", &[("Kafka (fsync parity) &co", &[])]);
        assert!(svg.contains(">Kafka (fsync parity) &amp;co<") && svg.contains(">(no data)<"));
    }

    #[test]
    fn the_maximum_is_drawn_at_the_last_tick() {
        assert_eq!(tail_decades(0.0), 0.0);
        assert!((tail_decades(99.9) - 3.0).abs() < 1e-9);
        assert!((tail_decades(100.0) - TAIL_DECADES_MAX).abs() < 1e-9);
    }

    #[test]
    fn timeline_draws_publish_solid_consume_dashed_and_the_warmup() {
        let publish = [(0.0, 10.0), (1.0, 300.0), (2.0, 310.0)];
        let consume = [(0.0, 5.0), (1.0, 290.0), (2.0, 305.0)];
        let kafka = [(0.0, 10.0), (1.0, 150.0), (2.0, 140.0)];
        let svg = throughput_timeline(
            "a & b",
            &[("Spool", &publish), ("Kafka", &kafka)],
            &[&consume, &[]],
            Some(1.5),
        );
        assert_well_formed(&svg);
        assert_eq!(svg.matches("<polyline").count(), 3);
        assert_eq!(
            svg.matches(r#"stroke-width="1.8" stroke-linejoin="round" stroke-dasharray"#)
                .count(),
            1
        );
        assert!(svg.contains("warm-up"));
        assert!(svg.contains("a &amp; b"));
    }

    #[test]
    fn empty_plots_are_still_valid_svg() {
        assert_well_formed(&latency_percentiles("none", &[]));
        assert_well_formed(&throughput_timeline("none", &[], &[], None));
        assert_well_formed(&throughput_timeline(
            "one point",
            &[("a", &[(f64::NAN, 1.0), (1.0, 2.0)])],
            &[],
            Some(0.0),
        ));
    }
}
