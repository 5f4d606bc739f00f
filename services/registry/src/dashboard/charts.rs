//! Server-side SVG charts: line charts over time or steps, grouped bars (histogram overlays,
//! per-day counts) and the lineage graph. Plain strings, no JavaScript, so a chart is an
//! `<img>` that works offline and in any browser.

use std::fmt::Write as _;

const WIDTH: f64 = 640.0;
const HEIGHT: f64 = 240.0;
const LEFT: f64 = 56.0;
const RIGHT: f64 = 16.0;
const TOP: f64 = 40.0;
const BOTTOM: f64 = 40.0;
const PALETTE: [&str; 6] = [
    "#2f6fed", "#e8710a", "#067647", "#c4320a", "#7a5af8", "#667085",
];

/// One named line of a chart.
#[derive(Debug, Clone)]
pub(crate) struct Series {
    /// Legend name.
    pub name: String,
    /// Points (x, y), in x order.
    pub points: Vec<(f64, f64)>,
}

/// What the x axis counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Axis {
    /// Milliseconds since the epoch, labelled as UTC times.
    Time,
    /// Plain numbers such as training steps.
    Number,
}

/// Escapes text for SVG.
pub(crate) fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

fn short(value: f64) -> String {
    let magnitude = value.abs();
    if magnitude >= 1e6 {
        format!("{:.1}M", value / 1e6)
    } else if magnitude >= 1e4 {
        format!("{:.0}k", value / 1e3)
    } else if magnitude >= 100.0 || value == value.trunc() {
        format!("{value:.0}")
    } else if magnitude >= 1.0 {
        format!("{value:.2}")
    } else {
        format!("{value:.3}")
    }
}

fn time_label(millis: f64) -> String {
    chrono::DateTime::from_timestamp_millis(millis as i64)
        .map(|t| t.format("%H:%M:%S").to_string())
        .unwrap_or_default()
}

fn frame(svg: &mut String, title: &str) {
    let _ = write!(
        svg,
        r##"<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {WIDTH} {HEIGHT}" width="{WIDTH}" height="{HEIGHT}" font-family="system-ui, sans-serif" font-size="11" role="img" aria-label="{t}"><title>{t}</title><rect width="100%" height="100%" fill="#fff"/><text x="{LEFT}" y="16" font-size="13" font-weight="600" fill="#1d2433">{t}</text>"##,
        t = escape(title)
    );
}

fn empty(svg: &mut String, message: &str) {
    let _ = write!(
        svg,
        r##"<text x="{}" y="{}" text-anchor="middle" fill="#667085">{}</text></svg>"##,
        WIDTH / 2.0,
        HEIGHT / 2.0,
        escape(message)
    );
}

/// Rounds a range out to ticks: (low, high, step).
fn ticks(low: f64, high: f64, count: usize) -> (f64, f64, f64) {
    let span = if high > low { high - low } else { 1.0 };
    let raw = span / count as f64;
    let magnitude = 10f64.powf(raw.log10().floor());
    let step = [1.0, 2.0, 2.5, 5.0, 10.0]
        .iter()
        .map(|m| m * magnitude)
        .find(|s| *s >= raw)
        .unwrap_or(raw);
    let low = (low / step).floor() * step;
    let high = ((high / step).ceil() * step).max(low + step);
    (low, high, step)
}

/// Horizontal grid lines with their values, from `low` to `high` every `step`.
fn y_axis(svg: &mut String, (low, high, step): (f64, f64, f64), sy: &dyn Fn(f64) -> f64) {
    let mut y = low;
    while y <= high + step / 2.0 {
        let _ = write!(
            svg,
            r##"<line x1="{LEFT}" x2="{}" y1="{py:.1}" y2="{py:.1}" stroke="#e4e7ec"/><text x="{}" y="{:.1}" text-anchor="end" fill="#667085">{}</text>"##,
            WIDTH - RIGHT,
            LEFT - 6.0,
            sy(y) + 4.0,
            short(y),
            py = sy(y)
        );
        y += step;
    }
}

fn legend(svg: &mut String, names: &[&str]) {
    let mut x = LEFT;
    for (i, name) in names.iter().enumerate() {
        let _ = write!(
            svg,
            r##"<rect x="{x}" y="22" width="10" height="10" fill="{}"/><text x="{}" y="31" fill="#1d2433">{}</text>"##,
            PALETTE[i % PALETTE.len()],
            x + 14.0,
            escape(name)
        );
        x += 22.0 + 6.5 * name.chars().count() as f64;
    }
}

/// A line chart; `threshold` draws a dashed horizontal line (e.g. a drift threshold).
pub(crate) fn line_chart(
    title: &str,
    series: &[Series],
    axis: Axis,
    threshold: Option<f64>,
) -> String {
    let mut svg = String::new();
    frame(&mut svg, title);
    let points = series.iter().flat_map(|s| s.points.iter());
    let (mut x0, mut x1, mut y0, mut y1) = (f64::MAX, f64::MIN, f64::MAX, f64::MIN);
    for (x, y) in points.filter(|(x, y)| x.is_finite() && y.is_finite()) {
        (x0, x1) = (x0.min(*x), x1.max(*x));
        (y0, y1) = (y0.min(*y), y1.max(*y));
    }
    if x0 > x1 {
        empty(&mut svg, "no data yet");
        return svg;
    }
    if let Some(t) = threshold {
        (y0, y1) = (y0.min(t), y1.max(t));
    }
    let (y0, y1, y_step) = ticks(y0.min(0.0), y1, 4);
    if x1 <= x0 {
        x1 = x0 + 1.0;
    }
    let plot_width = WIDTH - LEFT - RIGHT;
    let plot_height = HEIGHT - TOP - BOTTOM;
    let sx = |x: f64| LEFT + (x - x0) / (x1 - x0) * plot_width;
    let sy = |y: f64| TOP + plot_height - (y - y0) / (y1 - y0) * plot_height;
    y_axis(&mut svg, (y0, y1, y_step), &sy);
    for i in 0..=4 {
        let x = x0 + (x1 - x0) * f64::from(i) / 4.0;
        let label = match axis {
            Axis::Time => time_label(x),
            Axis::Number => short(x),
        };
        let _ = write!(
            svg,
            r##"<text x="{:.1}" y="{}" text-anchor="middle" fill="#667085">{label}</text>"##,
            sx(x),
            HEIGHT - BOTTOM + 16.0
        );
    }
    if let Some(t) = threshold {
        let _ = write!(
            svg,
            r##"<line x1="{LEFT}" x2="{}" y1="{py:.1}" y2="{py:.1}" stroke="#c4320a" stroke-dasharray="4 3"><title>threshold {}</title></line>"##,
            WIDTH - RIGHT,
            short(t),
            py = sy(t)
        );
    }
    for (i, line) in series.iter().enumerate() {
        let color = PALETTE[i % PALETTE.len()];
        let path: Vec<String> = line
            .points
            .iter()
            .filter(|(x, y)| x.is_finite() && y.is_finite())
            .map(|(x, y)| format!("{:.1},{:.1}", sx(*x), sy(*y)))
            .collect();
        let _ = write!(
            svg,
            r##"<polyline class="series" data-name="{}" fill="none" stroke="{color}" stroke-width="2" points="{}"/>"##,
            escape(&line.name),
            path.join(" ")
        );
        if path.len() == 1 {
            let _ = write!(
                svg,
                r##"<circle r="3" fill="{color}" cx="{}" cy="{}"/>"##,
                path[0].split(',').next().unwrap_or("0"),
                path[0].split(',').nth(1).unwrap_or("0"),
            );
        }
    }
    let names: Vec<&str> = series.iter().map(|s| s.name.as_str()).collect();
    legend(&mut svg, &names);
    svg.push_str("</svg>");
    svg
}

/// Grouped bars: one group per label, one bar per series.
pub(crate) fn bar_chart(title: &str, labels: &[String], series: &[(String, Vec<f64>)]) -> String {
    let mut svg = String::new();
    frame(&mut svg, title);
    let high = series
        .iter()
        .flat_map(|(_, v)| v.iter().copied())
        .filter(|v| v.is_finite())
        .fold(0.0, f64::max);
    if labels.is_empty() || series.is_empty() {
        empty(&mut svg, "no data yet");
        return svg;
    }
    let (_, high, step) = ticks(0.0, high, 4);
    let plot_width = WIDTH - LEFT - RIGHT;
    let plot_height = HEIGHT - TOP - BOTTOM;
    let sy = |y: f64| TOP + plot_height - y / high * plot_height;
    y_axis(&mut svg, (0.0, high, step), &sy);
    let group = plot_width / labels.len() as f64;
    let bar = (group * 0.8) / series.len() as f64;
    let every = labels.len().div_ceil(7);
    for (g, label) in labels.iter().enumerate() {
        let gx = LEFT + group * g as f64 + group * 0.1;
        for (i, (name, values)) in series.iter().enumerate() {
            let value = values.get(g).copied().unwrap_or(0.0);
            let top = sy(value.max(0.0));
            let _ = write!(
                svg,
                r##"<rect x="{:.1}" y="{top:.1}" width="{:.1}" height="{:.1}" fill="{}" fill-opacity="0.85"><title>{} {}: {}</title></rect>"##,
                gx + bar * i as f64,
                bar.max(1.0),
                (TOP + plot_height - top).max(0.0),
                PALETTE[i % PALETTE.len()],
                escape(name),
                escape(label),
                short(value)
            );
        }
        if g % every == 0 {
            let _ = write!(
                svg,
                r##"<text x="{:.1}" y="{}" text-anchor="middle" fill="#667085">{}</text>"##,
                gx + group * 0.4,
                HEIGHT - BOTTOM + 16.0,
                escape(label)
            );
        }
    }
    let names: Vec<&str> = series.iter().map(|(n, _)| n.as_str()).collect();
    legend(&mut svg, &names);
    svg.push_str("</svg>");
    svg
}

/// A node of the lineage graph.
#[derive(Debug, Clone)]
pub(crate) struct Node {
    /// Stable id, used by edges.
    pub id: String,
    /// What it is: `dataset`, `run`, `version` or `deployment`.
    pub kind: &'static str,
    /// The text in the box.
    pub label: String,
}

/// The lineage graph: one column per kind (dataset → run → version → deployment), boxes joined
/// by arrows.
pub(crate) fn lineage_graph(title: &str, nodes: &[Node], edges: &[(String, String)]) -> String {
    const KINDS: [&str; 4] = ["dataset", "run", "version", "deployment"];
    const BOX_WIDTH: f64 = 140.0;
    const BOX_HEIGHT: f64 = 34.0;
    let rows = KINDS
        .iter()
        .map(|k| nodes.iter().filter(|n| n.kind == *k).count())
        .max()
        .unwrap_or(0)
        .max(1);
    let height = TOP + 24.0 + rows as f64 * (BOX_HEIGHT + 14.0) + 10.0;
    let column = (WIDTH - 20.0) / KINDS.len() as f64;
    let mut place = std::collections::HashMap::new();
    for (c, kind) in KINDS.iter().enumerate() {
        for (r, node) in nodes.iter().filter(|n| n.kind == *kind).enumerate() {
            let x = 10.0 + column * c as f64 + (column - BOX_WIDTH) / 2.0;
            let y = TOP + 24.0 + r as f64 * (BOX_HEIGHT + 14.0);
            place.insert(node.id.as_str(), (x, y));
        }
    }
    let mut svg = format!(
        r##"<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {WIDTH} {height}" width="{WIDTH}" height="{height}" font-family="system-ui, sans-serif" font-size="11" role="img" aria-label="{t}"><title>{t}</title><defs><marker id="arrow" viewBox="0 0 10 10" refX="9" refY="5" markerWidth="7" markerHeight="7" orient="auto"><path d="M0,0 L10,5 L0,10 z" fill="#667085"/></marker></defs><rect width="100%" height="100%" fill="#fff"/><text x="10" y="16" font-size="13" font-weight="600" fill="#1d2433">{t}</text>"##,
        t = escape(title)
    );
    for (c, kind) in KINDS.iter().enumerate() {
        let _ = write!(
            svg,
            r##"<text x="{:.1}" y="{}" text-anchor="middle" fill="#667085">{kind}s</text>"##,
            10.0 + column * c as f64 + column / 2.0,
            TOP + 12.0
        );
    }
    if nodes.is_empty() {
        empty(&mut svg, "no lineage yet");
        return svg;
    }
    for (from, to) in edges {
        let (Some((x0, y0)), Some((x1, y1))) = (place.get(from.as_str()), place.get(to.as_str()))
        else {
            continue;
        };
        let _ = write!(
            svg,
            r##"<line class="edge" x1="{:.1}" y1="{:.1}" x2="{:.1}" y2="{:.1}" stroke="#667085" marker-end="url(#arrow)"/>"##,
            x0 + BOX_WIDTH,
            y0 + BOX_HEIGHT / 2.0,
            x1 - 2.0,
            y1 + BOX_HEIGHT / 2.0
        );
    }
    for (i, node) in nodes.iter().enumerate() {
        let Some((x, y)) = place.get(node.id.as_str()) else {
            continue;
        };
        let color = PALETTE[KINDS.iter().position(|k| *k == node.kind).unwrap_or(i) % 4];
        let label: String = node.label.chars().take(22).collect();
        let _ = write!(
            svg,
            r##"<g class="node" data-kind="{}"><rect x="{x:.1}" y="{y:.1}" width="{BOX_WIDTH}" height="{BOX_HEIGHT}" rx="6" fill="#fff" stroke="{color}" stroke-width="2"/><text x="{:.1}" y="{:.1}" text-anchor="middle" fill="#1d2433">{}</text><title>{}</title></g>"##,
            node.kind,
            x + BOX_WIDTH / 2.0,
            y + BOX_HEIGHT / 2.0 + 4.0,
            escape(&label),
            escape(&node.label)
        );
    }
    svg.push_str("</svg>");
    svg
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_line_chart_places_points_inside_the_plot_and_escapes_names() {
        let svg = line_chart(
            "latency <µs>",
            &[Series {
                name: "p50 & p95".into(),
                points: vec![(0.0, 0.0), (10.0, 5.0), (20.0, 10.0)],
            }],
            Axis::Number,
            Some(8.0),
        );
        assert!(svg.starts_with("<svg") && svg.ends_with("</svg>"));
        assert!(svg.contains("latency &lt;µs&gt;") && svg.contains("p50 &amp; p95"));
        let points = svg
            .split("points=\"")
            .nth(1)
            .and_then(|rest| rest.split('"').next())
            .unwrap_or_default();
        let xy: Vec<(f64, f64)> = points
            .split(' ')
            .filter_map(|p| p.split_once(','))
            .filter_map(|(x, y)| Some((x.parse().ok()?, y.parse().ok()?)))
            .collect();
        assert_eq!(xy.len(), 3);
        assert_eq!(xy[0].0, LEFT);
        assert_eq!(xy[2].0, WIDTH - RIGHT);
        // Higher values are drawn higher up (smaller y), the largest at the top of its axis.
        assert!(xy[0].1 > xy[1].1 && xy[1].1 > xy[2].1);
        assert!(xy[2].1 >= TOP);
        assert!(svg.contains("threshold 8"));
    }

    #[test]
    fn bars_are_as_tall_as_their_values() {
        let svg = bar_chart(
            "h",
            &["a".into(), "b".into()],
            &[("reference".into(), vec![10.0, 5.0])],
        );
        let heights: Vec<f64> = svg
            .split("<rect ")
            .filter(|rect| rect.contains("fill-opacity"))
            .filter_map(|rect| {
                rect.split("height=\"")
                    .nth(1)?
                    .split('"')
                    .next()?
                    .parse()
                    .ok()
            })
            .collect();
        assert_eq!(heights.len(), 2, "{svg}");
        assert!((heights[0] - 2.0 * heights[1]).abs() < 0.2, "{heights:?}");
    }

    #[test]
    fn charts_without_data_say_so() {
        assert!(line_chart("x", &[], Axis::Time, None).contains("no data yet"));
        assert!(lineage_graph("x", &[], &[]).contains("no lineage yet"));
    }
}
