//! The report's two charts as plain SVG: RSS versus idle sessions (log x axis), and the latency
//! distribution as a cumulative curve (log x axis, percent of messages delivered within x ms).

use crate::report::ServerResult;
use std::fmt::Write as _;

const W: f64 = 720.0;
const H: f64 = 420.0;
/// Plot area margins: left, right, top, bottom.
const ML: f64 = 70.0;
const MR: f64 = 180.0;
const MT: f64 = 40.0;
const MB: f64 = 50.0;
const COLOURS: &[&str] = &[
    "#d62728", "#ff7f0e", "#2ca02c", "#1f77b4", "#9467bd", "#8c564b",
];

struct Axes {
    x0: f64,
    x1: f64,
    y0: f64,
    y1: f64,
}

impl Axes {
    /// x is given as log10 already.
    fn px(&self, x: f64) -> f64 {
        ML + (x - self.x0) / (self.x1 - self.x0).max(1e-9) * (W - ML - MR)
    }
    fn py(&self, y: f64) -> f64 {
        H - MB - (y - self.y0) / (self.y1 - self.y0).max(1e-9) * (H - MT - MB)
    }
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

fn frame(s: &mut String, title: &str, xlabel: &str, ylabel: &str) {
    let _ = write!(
        s,
        "<svg xmlns='http://www.w3.org/2000/svg' width='{W}' height='{H}' font-family='sans-serif' font-size='12'>\
         <rect width='100%' height='100%' fill='white'/>\
         <text x='{}' y='22' text-anchor='middle' font-size='15'>{}</text>\
         <text x='{}' y='{}' text-anchor='middle'>{}</text>\
         <text transform='translate(16,{}) rotate(-90)' text-anchor='middle'>{}</text>",
        (W - MR + ML) / 2.0,
        escape(title),
        (W - MR + ML) / 2.0,
        H - 12.0,
        escape(xlabel),
        (H - MB + MT) / 2.0,
        escape(ylabel)
    );
}

/// Decade ticks on a log axis, labelled with `fmt`.
fn log_ticks(s: &mut String, a: &Axes, fmt: impl Fn(f64) -> String) {
    let mut d = a.x0.floor();
    while d <= a.x1 + 1e-9 {
        if d >= a.x0 - 1e-9 {
            let x = a.px(d);
            let _ = write!(
                s,
                "<line x1='{x:.1}' y1='{}' x2='{x:.1}' y2='{}' stroke='#ddd'/>\
                 <text x='{x:.1}' y='{}' text-anchor='middle'>{}</text>",
                MT,
                H - MB,
                H - MB + 16.0,
                fmt(10f64.powf(d))
            );
        }
        d += 1.0;
    }
}

fn y_ticks(s: &mut String, a: &Axes, n: usize, unit: &str) {
    for i in 0..=n {
        let v = a.y0 + (a.y1 - a.y0) * i as f64 / n as f64;
        let y = a.py(v);
        let _ = write!(
            s,
            "<line x1='{ML}' y1='{y:.1}' x2='{}' y2='{y:.1}' stroke='#ddd'/>\
             <text x='{}' y='{:.1}' text-anchor='end'>{v:.0}{unit}</text>",
            W - MR,
            ML - 6.0,
            y + 4.0
        );
    }
}

fn legend(s: &mut String, i: usize, name: &str) {
    let y = MT + 10.0 + i as f64 * 20.0;
    let _ = write!(
        s,
        "<line x1='{}' y1='{y}' x2='{}' y2='{y}' stroke='{}' stroke-width='3'/>\
         <text x='{}' y='{}'>{}</text>",
        W - MR + 12.0,
        W - MR + 32.0,
        COLOURS[i % COLOURS.len()],
        W - MR + 38.0,
        y + 4.0,
        escape(name)
    );
}

fn polyline(s: &mut String, i: usize, pts: &[(f64, f64)]) {
    let p: Vec<String> = pts.iter().map(|(x, y)| format!("{x:.1},{y:.1}")).collect();
    let _ = write!(
        s,
        "<polyline fill='none' stroke='{}' stroke-width='2' points='{}'/>",
        COLOURS[i % COLOURS.len()],
        p.join(" ")
    );
    for (x, y) in pts {
        let _ = write!(
            s,
            "<circle cx='{x:.1}' cy='{y:.1}' r='3' fill='{}'/>",
            COLOURS[i % COLOURS.len()]
        );
    }
}

/// RSS (MiB) against idle sessions, one line per server.
pub fn memory(rs: &[ServerResult]) -> String {
    let max_n = rs
        .iter()
        .flat_map(|r| r.steps.iter().map(|s| s.up))
        .max()
        .unwrap_or(10)
        .max(10);
    let max_mib = rs
        .iter()
        .flat_map(|r| r.steps.iter().map(|s| s.rss_kib as f64 / 1024.0))
        .fold(1.0, f64::max);
    let min_n = rs
        .iter()
        .flat_map(|r| r.steps.iter().map(|s| s.up))
        .min()
        .unwrap_or(10)
        .max(1);
    let a = Axes {
        x0: (min_n as f64).log10().floor(),
        x1: (max_n as f64).log10().ceil(),
        y0: 0.0,
        y1: (max_mib * 1.1).ceil(),
    };
    let mut s = String::new();
    frame(
        &mut s,
        "RSS with N idle authenticated TLS sessions",
        "idle sessions (log scale)",
        "RSS (MiB)",
    );
    log_ticks(&mut s, &a, |v| format!("{v:.0}"));
    y_ticks(&mut s, &a, 5, "");
    for (i, r) in rs.iter().enumerate() {
        let pts: Vec<(f64, f64)> = r
            .steps
            .iter()
            .filter(|st| st.up > 0)
            .map(|st| {
                (
                    a.px((st.up as f64).log10()),
                    a.py(st.rss_kib as f64 / 1024.0),
                )
            })
            .collect();
        polyline(&mut s, i, &pts);
        legend(&mut s, i, &r.name);
    }
    s.push_str("</svg>\n");
    s
}

/// Cumulative latency distribution, one curve per server.
pub fn latency(rs: &[ServerResult]) -> String {
    let all = || {
        rs.iter()
            .filter_map(|r| r.latency.as_ref())
            .flat_map(|l| l.samples.iter().copied())
    };
    let lo = all().filter(|&v| v > 0).min().unwrap_or(100).max(10) as f64 / 1000.0;
    let hi = all().max().unwrap_or(10_000).max(1000) as f64 / 1000.0;
    let a = Axes {
        x0: lo.log10().floor(),
        x1: hi.log10().ceil(),
        y0: 0.0,
        y1: 100.0,
    };
    let mut s = String::new();
    frame(
        &mut s,
        "Latency distribution at a fixed offered load",
        "latency (ms, log scale)",
        "messages delivered within (%)",
    );
    log_ticks(&mut s, &a, |v| {
        if v < 1.0 {
            format!("{v}")
        } else {
            format!("{v:.0}")
        }
    });
    y_ticks(&mut s, &a, 5, "%");
    for (i, r) in rs.iter().enumerate() {
        let Some(l) = &r.latency else { continue };
        let n = l.samples.len();
        if n == 0 {
            continue;
        }
        // About 200 points per curve, always including the maximum.
        let step = (n / 200).max(1);
        let mut pts = vec![];
        let mut k = 0;
        while k < n {
            let ms = (l.samples[k].max(1) as f64 / 1000.0).max(lo);
            pts.push((a.px(ms.log10()), a.py((k + 1) as f64 * 100.0 / n as f64)));
            k += step;
        }
        let ms = (l.samples[n - 1].max(1) as f64 / 1000.0).max(lo);
        pts.push((a.px(ms.log10()), a.py(100.0)));
        let p: Vec<String> = pts.iter().map(|(x, y)| format!("{x:.1},{y:.1}")).collect();
        let _ = write!(
            s,
            "<polyline fill='none' stroke='{}' stroke-width='2' points='{}'/>",
            COLOURS[i % COLOURS.len()],
            p.join(" ")
        );
        legend(
            &mut s,
            i,
            &format!("{} (p99 {:.1} ms)", r.name, l.pct(0.99)),
        );
    }
    s.push_str("</svg>\n");
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scenarios::{Latency, Step};

    #[test]
    fn charts_are_well_formed_and_name_every_server() {
        let mut r = ServerResult {
            name: "a<b".into(),
            ..Default::default()
        };
        r.steps = vec![
            Step {
                requested: 100,
                up: 100,
                rss_kib: 9000,
                ..Default::default()
            },
            Step {
                requested: 1000,
                up: 1000,
                rss_kib: 30000,
                ..Default::default()
            },
        ];
        r.latency = Some(Latency {
            samples: (1..=1000).collect(),
            ..Default::default()
        });
        for svg in [
            memory(std::slice::from_ref(&r)),
            latency(std::slice::from_ref(&r)),
        ] {
            assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"));
            assert!(svg.contains("a&lt;b"), "{svg}");
            assert!(svg.contains("<polyline"));
            assert!(!svg.contains("NaN"));
        }
    }
}
