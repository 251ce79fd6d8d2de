//! The plots BENCHMARKS.md shows, drawn from a run's figures as SVG: packets per second
//! against the number of bindings (throughput family), and bind latency against the number
//! of bindings (control family).

use std::path::Path;

use anyhow::{Result, anyhow};
use plotters::prelude::*;

use crate::figures::Figure;

const COLORS: [RGBColor; 6] = [
    RGBColor(0x1f, 0x77, 0xb4),
    RGBColor(0xff, 0x7f, 0x0e),
    RGBColor(0x2c, 0xa0, 0x2c),
    RGBColor(0xd6, 0x27, 0x28),
    RGBColor(0x94, 0x67, 0xbd),
    RGBColor(0x7f, 0x7f, 0x7f),
];

type Series = (String, Vec<(f64, f64)>);

/// The points of every figure whose variant starts with one of `prefixes` and ends with
/// `suffix`, with `metric`, by prefix. Figures without a binding count sit at every x in `xs`
/// (a reference line).
fn series(figs: &[Figure], prefixes: &[(&str, &str)], suffix: &str, metric: &str, xs: &[f64]) -> Vec<Series> {
    let mut out = Vec::new();
    for (prefix, label) in prefixes {
        let mut pts: Vec<(f64, f64)> = Vec::new();
        for f in figs
            .iter()
            .filter(|f| f.variant.starts_with(prefix) && f.variant.ends_with(suffix) && f.metric == metric)
        {
            match f.bindings {
                Some(b) => pts.push((b as f64, f.value)),
                None => pts.extend(xs.iter().map(|&x| (x, f.value))),
            }
        }
        pts.sort_by(|a, b| a.0.total_cmp(&b.0));
        if !pts.is_empty() {
            out.push((label.to_string(), pts));
        }
    }
    out
}

fn draw(
    area: &DrawingArea<SVGBackend, plotters::coord::Shift>,
    title: &str,
    (x_desc, y_desc): (&str, &str),
    data: &[Series],
    log_y: bool,
) -> Result<()> {
    let err = |e: DrawingAreaErrorKind<_>| anyhow!("plot {title}: {e:?}");
    let all = data.iter().flat_map(|(_, p)| p.iter());
    let x_max = all.clone().map(|p| p.0).fold(1.0, f64::max) * 2.0;
    let y_max = all.clone().map(|p| p.1).fold(0.0, f64::max) * 1.15;
    let y_min = all.map(|p| p.1).fold(f64::MAX, f64::min).max(1e-3) / 2.0;
    let mut b = ChartBuilder::on(area);
    b.caption(title, ("sans-serif", 18))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(60);
    macro_rules! body {
        ($chart:expr) => {{
            let mut chart = $chart;
            chart
                .configure_mesh()
                .x_desc(x_desc)
                .y_desc(y_desc)
                .draw()
                .map_err(err)?;
            for (i, (label, pts)) in data.iter().enumerate() {
                let c = COLORS[i % COLORS.len()];
                chart
                    .draw_series(LineSeries::new(pts.iter().copied(), c.stroke_width(2)))
                    .map_err(err)?
                    .label(label.as_str())
                    .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], c.stroke_width(2)));
                chart
                    .draw_series(pts.iter().map(|&p| Circle::new(p, 3, c.filled())))
                    .map_err(err)?;
            }
            chart
                .configure_series_labels()
                .background_style(WHITE.mix(0.85))
                .border_style(BLACK)
                .position(SeriesLabelPosition::UpperLeft)
                .draw()
                .map_err(err)?;
        }};
    }
    if log_y {
        body!(
            b.build_cartesian_2d((0.5f64..x_max).log_scale(), (y_min..y_max).log_scale())
                .map_err(err)?
        );
    } else {
        body!(
            b.build_cartesian_2d((0.5f64..x_max).log_scale(), 0f64..y_max)
                .map_err(err)?
        );
    }
    Ok(())
}

const THROUGHPUT: [(&str, &str); 5] = [
    ("eip fast path: UDP", "eip fast path"),
    ("eip fallback: UDP", "eip fallback"),
    ("iptables-legacy DNAT/SNAT: UDP", "iptables-legacy"),
    ("nftables map: UDP", "nftables map"),
    ("plain routing (no NAT): UDP", "plain routing"),
];

const CONTROL: [(&str, &str); 4] = [
    ("eip bind (API)", "eip bind, API"),
    ("eip bind (CLI process)", "eip bind, CLI"),
    ("iptables-legacy -A", "iptables -A x2"),
    ("nft add element", "nft add element"),
];

/// Writes `throughput.svg` and `bind-latency.svg` into `dir` from whatever of their figures
/// `figs` holds; returns the files written.
pub fn write(figs: &[Figure], dir: &Path) -> Result<Vec<std::path::PathBuf>> {
    std::fs::create_dir_all(dir)?;
    let mut written = Vec::new();
    let sizes: Vec<f64> = {
        let mut v: Vec<f64> = figs
            .iter()
            .filter(|f| f.bench == "throughput")
            .filter_map(|f| f.bindings.map(|b| b as f64))
            .collect();
        v.sort_by(f64::total_cmp);
        v.dedup();
        v
    };
    if !sizes.is_empty() {
        let path = dir.join("throughput.svg");
        let root = SVGBackend::new(&path, (1200, 900)).into_drawing_area();
        root.fill(&WHITE).map_err(|e| anyhow!("{e:?}"))?;
        let panels = root.split_evenly((2, 2));
        for (area, (dir_, flows)) in panels.iter().zip([
            ("outside to VM", "one flow"),
            ("outside to VM", "new flow per packet"),
            ("VM to outside", "one flow"),
            ("VM to outside", "new flow per packet"),
        ]) {
            let data = series(
                figs,
                &THROUGHPUT,
                &format!("{dir_}, {flows}"),
                "delivered",
                &sizes,
            );
            draw(
                area,
                &format!("UDP 64 B, {dir_}, {flows}"),
                ("bindings", "delivered kpps"),
                &data,
                false,
            )?;
        }
        root.present().map_err(|e| anyhow!("{e:?}"))?;
        written.push(path.clone());
    }
    let control: Vec<&Figure> = figs.iter().filter(|f| f.bench == "control").collect();
    if control.iter().any(|f| f.metric == "bind p99") {
        // 0 bindings cannot sit on a log axis: it is drawn at 1.
        let shifted: Vec<Figure> = control
            .into_iter()
            .map(|f| Figure {
                bindings: f.bindings.map(|b| b.max(1)),
                ..f.clone()
            })
            .collect();
        let path = dir.join("bind-latency.svg");
        let root = SVGBackend::new(&path, (1200, 450)).into_drawing_area();
        root.fill(&WHITE).map_err(|e| anyhow!("{e:?}"))?;
        let panels = root.split_evenly((1, 2));
        for (area, metric) in panels.iter().zip(["bind p50", "bind p99"]) {
            let data = series(&shifted, &CONTROL, ")", metric, &[]);
            draw(
                area,
                &format!("one more binding, {metric} (0 bindings drawn at 1)"),
                ("bindings already in place", "ms"),
                &data,
                true,
            )?;
        }
        root.present().map_err(|e| anyhow!("{e:?}"))?;
        written.push(path.clone());
    }
    Ok(written)
}
