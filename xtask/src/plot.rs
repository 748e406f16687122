//! The benchmark's pictures (PNG, drawn with plotters): forwarding rate per
//! method, cost per packet per path, cost versus tracked flows.
use std::path::Path;

use anyhow::{anyhow, Context as _};
use plotters::prelude::*;

/// The font plotters draws text with (Debian's fonts-dejavu-core, installed
/// by `cargo xtask setup`).
pub const FONT: &str = "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf";

pub fn init_font() -> anyhow::Result<()> {
    let bytes = std::fs::read(FONT).with_context(|| format!("reading {FONT}"))?;
    let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
    plotters::style::register_font("sans-serif", FontStyle::Normal, bytes)
        .map_err(|_| anyhow!("{FONT} is not a usable font"))
}

fn e<E: std::fmt::Debug>(err: E) -> anyhow::Error {
    anyhow!("drawing: {err:?}")
}

/// One bar: label, value, and the range of the rounds.
pub struct Bar {
    pub label: String,
    pub value: f64,
    pub min: f64,
    pub max: f64,
}

/// Horizontal bars with the rounds' range drawn over each.
pub fn bars(path: &Path, title: &str, unit: &str, bars: &[Bar]) -> anyhow::Result<()> {
    let h = 90 + 42 * bars.len() as u32;
    let root = BitMapBackend::new(path, (1000, h)).into_drawing_area();
    root.fill(&WHITE).map_err(e)?;
    let top = bars.iter().map(|b| b.max.max(b.value)).fold(0.0, f64::max) * 1.15;
    let n = bars.len() as i32;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 22))
        .margin(12)
        .x_label_area_size(36)
        .y_label_area_size(260)
        .build_cartesian_2d(0.0..top.max(1e-9), (0..n - 1).into_segmented())
        .map_err(e)?;
    let labels: Vec<String> = bars.iter().map(|b| b.label.clone()).collect();
    chart
        .configure_mesh()
        .disable_y_mesh()
        .x_desc(unit)
        .y_labels(bars.len())
        .y_label_formatter(&|v| match v {
            SegmentValue::CenterOf(i) => labels
                .get((n - 1 - *i) as usize)
                .cloned()
                .unwrap_or_default(),
            _ => String::new(),
        })
        .label_style(("sans-serif", 15))
        .draw()
        .map_err(e)?;
    for (i, b) in bars.iter().enumerate() {
        let y = n - 1 - i as i32;
        let color = Palette99::pick(i).mix(0.85);
        chart
            .draw_series(std::iter::once(Rectangle::new(
                [
                    (0.0, SegmentValue::Exact(y)),
                    (b.value, SegmentValue::Exact(y + 1)),
                ],
                color.filled(),
            )))
            .map_err(e)?;
        chart
            .draw_series(std::iter::once(PathElement::new(
                vec![
                    (b.min, SegmentValue::CenterOf(y)),
                    (b.max, SegmentValue::CenterOf(y)),
                ],
                BLACK.stroke_width(2),
            )))
            .map_err(e)?;
        chart
            .draw_series(std::iter::once(Text::new(
                match b.value {
                    v if v >= 100.0 => format!("{v:.0}"),
                    v if v >= 10.0 => format!("{v:.1}"),
                    v => format!("{v:.2}"),
                },
                (b.max.max(b.value) + top * 0.01, SegmentValue::CenterOf(y)),
                ("sans-serif", 15),
            )))
            .map_err(e)?;
    }
    root.present().map_err(e)?;
    Ok(())
}

/// Lines over a logarithmic x axis (e.g. cost versus tracked flows).
pub fn lines(
    path: &Path,
    title: &str,
    x_desc: &str,
    y_desc: &str,
    series: &[(&str, Vec<(f64, f64)>)],
) -> anyhow::Result<()> {
    let root = BitMapBackend::new(path, (1000, 520)).into_drawing_area();
    root.fill(&WHITE).map_err(e)?;
    let xs = series.iter().flat_map(|s| s.1.iter().map(|p| p.0));
    let x_max = xs.fold(1.0, f64::max) * 2.0;
    let y_max = series
        .iter()
        .flat_map(|s| s.1.iter().map(|p| p.1))
        .fold(0.0, f64::max)
        * 1.2;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 22))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(60)
        .build_cartesian_2d((0.5..x_max).log_scale(), 0.0..y_max.max(1.0))
        .map_err(e)?;
    chart
        .configure_mesh()
        .x_desc(x_desc)
        .y_desc(y_desc)
        .x_label_formatter(&|v| match *v {
            v if v >= 1e6 => format!("{:.0}M", v / 1e6),
            v if v >= 1e3 => format!("{:.0}k", v / 1e3),
            v => format!("{v:.0}"),
        })
        .y_label_formatter(&|v| format!("{v:.0}"))
        .label_style(("sans-serif", 15))
        .draw()
        .map_err(e)?;
    for (i, (name, pts)) in series.iter().enumerate() {
        let color = Palette99::pick(i).to_rgba();
        chart
            .draw_series(LineSeries::new(pts.clone(), color.stroke_width(3)))
            .map_err(e)?
            .label(*name)
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(3))
            });
        chart
            .draw_series(pts.iter().map(|p| Circle::new(*p, 4, color.filled())))
            .map_err(e)?;
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .label_font(("sans-serif", 15))
        .draw()
        .map_err(e)?;
    root.present().map_err(e)?;
    Ok(())
}
