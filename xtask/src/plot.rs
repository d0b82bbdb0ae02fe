//! Small SVG plots for `BENCHMARKS.md`, drawn from the samples the
//! benchmarks leave in `target/bench/`: latency histograms (log-spaced
//! buckets, one outline per series) and a value over time (memory during a
//! storm). Plain SVG text, so a Markdown viewer shows it as an image.

use std::fmt::Write as _;

const WIDTH: f64 = 640.0;
const HEIGHT: f64 = 240.0;
const LEFT: f64 = 56.0;
const RIGHT: f64 = 16.0;
const TOP: f64 = 44.0;
const BOTTOM: f64 = 40.0;
const COLOURS: [&str; 4] = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd"];

/// One named series of values.
pub struct Series<'a> {
    pub name: &'a str,
    pub values: &'a [f64],
}

/// Numbers, one per line, from a samples file; lines that are not a
/// number are skipped.
pub fn read_samples(text: &str) -> Vec<f64> {
    text.lines().filter_map(|l| l.trim().parse().ok()).collect()
}

/// Pairs `x y`, one per line.
pub fn read_points(text: &str) -> Vec<(f64, f64)> {
    text.lines()
        .filter_map(|l| {
            let mut parts = l.split_whitespace();
            Some((parts.next()?.parse().ok()?, parts.next()?.parse().ok()?))
        })
        .collect()
}

fn frame(svg: &mut String, title: &str, x_label: &str, y_label: &str) {
    let _ = write!(
        svg,
        r##"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" viewBox="0 0 {WIDTH} {HEIGHT}" font-family="sans-serif" font-size="11"><rect width="100%" height="100%" fill="#fff"/><text x="{LEFT}" y="16" font-size="13">{title}</text><text x="{}" y="{}" text-anchor="middle">{x_label}</text><text x="12" y="{}" transform="rotate(-90 12 {})" text-anchor="middle">{y_label}</text><line x1="{LEFT}" y1="{}" x2="{}" y2="{}" stroke="#333"/><line x1="{LEFT}" y1="{TOP}" x2="{LEFT}" y2="{}" stroke="#333"/>"##,
        LEFT + (WIDTH - LEFT - RIGHT) / 2.0,
        HEIGHT - 6.0,
        TOP + (HEIGHT - TOP - BOTTOM) / 2.0,
        TOP + (HEIGHT - TOP - BOTTOM) / 2.0,
        HEIGHT - BOTTOM,
        WIDTH - RIGHT,
        HEIGHT - BOTTOM,
        HEIGHT - BOTTOM,
    );
}

fn legend(svg: &mut String, names: &[&str]) {
    // One row under the title.
    let mut x = LEFT;
    for (i, name) in names.iter().enumerate() {
        let y = 34.0;
        let _ = write!(
            svg,
            r#"<rect x="{x}" y="{}" width="10" height="10" fill="{}"/><text x="{}" y="{}">{}</text>"#,
            y - 9.0,
            COLOURS[i % COLOURS.len()],
            x + 14.0,
            y,
            escape(name)
        );
        x += 24.0 + 6.5 * name.chars().count() as f64;
    }
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// A histogram of latencies in milliseconds, buckets spaced evenly on a
/// log scale from the smallest to the largest value of all series.
pub fn histogram(title: &str, series: &[Series]) -> String {
    const BUCKETS: usize = 40;
    let all = series.iter().flat_map(|s| s.values.iter().copied());
    let (low, high) = all
        .filter(|v| *v > 0.0)
        .fold((f64::MAX, f64::MIN), |(lo, hi), v| (lo.min(v), hi.max(v)));
    let mut svg = String::new();
    frame(&mut svg, title, "ms (log scale)", "events");
    if low >= high {
        svg.push_str("</svg>\n");
        return svg;
    }
    let (log_low, log_high) = (low.log10(), high.log10() + 1e-9);
    let bucket = |v: f64| {
        (((v.max(low).log10() - log_low) / (log_high - log_low)) * BUCKETS as f64) as usize
    };
    let counts: Vec<Vec<usize>> = series
        .iter()
        .map(|s| {
            let mut c = vec![0; BUCKETS];
            for v in s.values {
                c[bucket(*v).min(BUCKETS - 1)] += 1;
            }
            c
        })
        .collect();
    let top = counts.iter().flatten().copied().max().unwrap_or(1).max(1) as f64;
    let plot_w = WIDTH - LEFT - RIGHT;
    let plot_h = HEIGHT - TOP - BOTTOM;
    let x_of = |log_v: f64| LEFT + (log_v - log_low) / (log_high - log_low) * plot_w;
    // Axis ticks at 1, 2, 5 x 10^k.
    let mut decade = 10f64.powf(log_low.floor());
    while decade <= high * 1.0001 {
        for step in [1.0, 2.0, 5.0] {
            let v = decade * step;
            if v >= low && v <= high {
                let x = x_of(v.log10());
                let _ = write!(
                    svg,
                    r##"<line x1="{x:.1}" y1="{}" x2="{x:.1}" y2="{}" stroke="#333"/><text x="{x:.1}" y="{}" text-anchor="middle">{}</text>"##,
                    HEIGHT - BOTTOM,
                    HEIGHT - BOTTOM + 4.0,
                    HEIGHT - BOTTOM + 16.0,
                    trim(v)
                );
            }
        }
        decade *= 10.0;
    }
    let _ = write!(
        svg,
        r#"<text x="{}" y="{}" text-anchor="end">{}</text>"#,
        LEFT - 4.0,
        TOP + 4.0,
        top as usize
    );
    for (i, c) in counts.iter().enumerate() {
        let mut points = String::new();
        for (b, count) in c.iter().enumerate() {
            let x0 = LEFT + plot_w * b as f64 / BUCKETS as f64;
            let x1 = LEFT + plot_w * (b + 1) as f64 / BUCKETS as f64;
            let y = HEIGHT - BOTTOM - plot_h * *count as f64 / top;
            let _ = write!(points, "{x0:.1},{y:.1} {x1:.1},{y:.1} ");
        }
        let _ = write!(
            svg,
            r#"<polyline points="{LEFT},{} {points}{},{}" fill="{}" fill-opacity="0.25" stroke="{}"/>"#,
            HEIGHT - BOTTOM,
            WIDTH - RIGHT,
            HEIGHT - BOTTOM,
            COLOURS[i % COLOURS.len()],
            COLOURS[i % COLOURS.len()],
        );
    }
    legend(&mut svg, &series.iter().map(|s| s.name).collect::<Vec<_>>());
    svg.push_str("</svg>\n");
    svg
}

/// Lines of `y` against `x`, one per series.
pub fn lines(
    title: &str,
    x_label: &str,
    y_label: &str,
    series: &[(&str, &[(f64, f64)])],
) -> String {
    let mut svg = String::new();
    frame(&mut svg, title, x_label, y_label);
    let points = series.iter().flat_map(|(_, p)| p.iter());
    let (x_max, y_max) = points.fold((0f64, 0f64), |(x, y), (px, py)| (x.max(*px), y.max(*py)));
    if x_max <= 0.0 || y_max <= 0.0 {
        svg.push_str("</svg>\n");
        return svg;
    }
    let plot_w = WIDTH - LEFT - RIGHT;
    let plot_h = HEIGHT - TOP - BOTTOM;
    for (label, x, anchor) in [
        ("0".to_string(), LEFT, "start"),
        (trim(x_max), WIDTH - RIGHT, "end"),
    ] {
        let _ = write!(
            svg,
            r#"<text x="{x}" y="{}" text-anchor="{anchor}">{label}</text>"#,
            HEIGHT - BOTTOM + 16.0
        );
    }
    let _ = write!(
        svg,
        r#"<text x="{}" y="{}" text-anchor="end">{}</text><text x="{}" y="{}" text-anchor="end">0</text>"#,
        LEFT - 4.0,
        TOP + 4.0,
        trim(y_max),
        LEFT - 4.0,
        HEIGHT - BOTTOM
    );
    for (i, (_, p)) in series.iter().enumerate() {
        let path: String = p
            .iter()
            .map(|(x, y)| {
                format!(
                    "{:.1},{:.1} ",
                    LEFT + plot_w * x / x_max,
                    HEIGHT - BOTTOM - plot_h * y / y_max
                )
            })
            .collect();
        let _ = write!(
            svg,
            r#"<polyline points="{path}" fill="none" stroke="{}" stroke-width="1.5"/>"#,
            COLOURS[i % COLOURS.len()]
        );
    }
    legend(
        &mut svg,
        &series.iter().map(|(n, _)| *n).collect::<Vec<_>>(),
    );
    svg.push_str("</svg>\n");
    svg
}

/// A number without needless digits.
fn trim(v: f64) -> String {
    if v >= 10.0 {
        format!("{v:.0}")
    } else if v >= 1.0 {
        format!("{v:.1}").trim_end_matches(".0").to_string()
    } else {
        format!("{v:.2}")
            .trim_end_matches('0')
            .trim_end_matches('.')
            .to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_histogram_counts_every_value_once() {
        let a = [0.3, 0.4, 0.5, 0.5, 2.0];
        let b = [3.0, 4.0, 5.0];
        let svg = histogram(
            "t",
            &[
                Series {
                    name: "a",
                    values: &a,
                },
                Series {
                    name: "b <x>",
                    values: &b,
                },
            ],
        );
        assert!(svg.starts_with("<svg") && svg.ends_with("</svg>\n"));
        assert_eq!(svg.matches("<polyline").count(), 2);
        assert!(svg.contains("b &lt;x&gt;"));
        // The tallest bucket is the label of the y axis.
        assert!(svg.contains(">2</text>"), "{svg}");
    }

    #[test]
    fn nothing_to_plot_is_an_empty_frame() {
        let svg = histogram(
            "t",
            &[Series {
                name: "a",
                values: &[],
            }],
        );
        assert!(svg.ends_with("</svg>\n"));
        assert!(!svg.contains("<polyline"));
        let svg = lines("t", "x", "y", &[("a", &[])]);
        assert!(!svg.contains("<polyline"));
    }

    #[test]
    fn samples_and_points_are_read_leniently() {
        assert_eq!(read_samples("1.5\nx\n2\n"), [1.5, 2.0]);
        assert_eq!(read_points("0 10\n5\n10 20\n"), [(0.0, 10.0), (10.0, 20.0)]);
    }
}
