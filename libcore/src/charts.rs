//! Charts of the reports (issue 29), as SVG drawn with `plotters`: each report's natural
//! chart, axes labelled with units, the window and as-of time in the title, in black and
//! greys (with markers and outlines) so it stays readable printed in grey.
//!
//! The label font (DejaVu Sans) is embedded, so the layout is the same on every machine.

use std::sync::Once;

use chrono::{DateTime, NaiveDate, Utc};
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use crate::error::{Error, Result};
use crate::reports::{HoldsRow, OverdueTiers, RankedRow, RiskRow, TrendRow};

const WIDTH: u32 = 800;
const HEIGHT: u32 = 450;
const FONT: &str = "sans-serif";
/// Greys from dark to light: distinct when printed in grey.
const SHADES: [RGBColor; 4] = [
    RGBColor(40, 40, 40),
    RGBColor(100, 100, 100),
    RGBColor(160, 160, 160),
    RGBColor(210, 210, 210),
];

fn register_font() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let _ = plotters::style::register_font(
            FONT,
            FontStyle::Normal,
            include_bytes!("../assets/DejaVuSans.ttf"),
        );
    });
}

fn drawing_error(e: impl std::fmt::Display) -> Error {
    Error::Internal(format!("drawing a chart: {e}"))
}

/// The title line: what, over which window, as of when.
pub fn title(what: &str, window: Option<(NaiveDate, NaiveDate)>, as_of: DateTime<Utc>) -> String {
    match window {
        Some((from, to)) => format!(
            "{what}, {from} to {to} (as of {})",
            as_of.format("%Y-%m-%d %H:%M UTC")
        ),
        None => format!("{what} (as of {})", as_of.format("%Y-%m-%d %H:%M UTC")),
    }
}

/// A chart that says there is nothing to draw.
fn empty(title: &str) -> Result<String> {
    register_font();
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (WIDTH, HEIGHT)).into_drawing_area();
        root.fill(&WHITE).map_err(drawing_error)?;
        root.draw(&Text::new(
            title.to_string(),
            (20, 20),
            (FONT, 18).into_font(),
        ))
        .map_err(drawing_error)?;
        root.draw(&Text::new(
            "No data in this window.".to_string(),
            (20, (HEIGHT / 2) as i32),
            (FONT, 16).into_font(),
        ))
        .map_err(drawing_error)?;
        root.present().map_err(drawing_error)?;
    }
    Ok(svg)
}

/// Vertical bars, one per (label, value), with the value written on each.
fn bars(title: &str, x_desc: &str, y_desc: &str, data: &[(String, f64)]) -> Result<String> {
    if data.is_empty() || data.iter().all(|(_, v)| *v == 0.0) {
        return empty(title);
    }
    register_font();
    let max = data.iter().map(|(_, v)| *v).fold(0.0, f64::max) * 1.15;
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (WIDTH, HEIGHT)).into_drawing_area();
        root.fill(&WHITE).map_err(drawing_error)?;
        let labels: Vec<String> = data.iter().map(|(l, _)| l.clone()).collect();
        let mut chart = ChartBuilder::on(&root)
            .caption(title, (FONT, 18))
            .margin(15)
            .x_label_area_size(50)
            .y_label_area_size(70)
            // Segments 0..=n-1: one per bar.
            .build_cartesian_2d((0..data.len() - 1).into_segmented(), 0.0..max)
            .map_err(drawing_error)?;
        let whole = data.iter().all(|(_, v)| v.fract() == 0.0);
        chart
            .configure_mesh()
            .disable_x_mesh()
            .light_line_style(TRANSPARENT)
            .x_desc(x_desc)
            .y_desc(y_desc)
            .x_labels(data.len().min(20))
            .x_label_formatter(&|v| match v {
                SegmentValue::CenterOf(i) => labels.get(*i).cloned().unwrap_or_default(),
                _ => String::new(),
            })
            .y_label_formatter(&|v| axis_number(*v, whole))
            .label_style((FONT, 12))
            .axis_desc_style((FONT, 14))
            .draw()
            .map_err(drawing_error)?;
        chart
            .draw_series(data.iter().enumerate().map(|(i, (_, v))| {
                let mut bar = Rectangle::new(
                    [
                        (SegmentValue::Exact(i), 0.0),
                        (SegmentValue::Exact(i + 1), *v),
                    ],
                    SHADES[1].filled(),
                );
                bar.set_margin(0, 0, 12, 12);
                bar
            }))
            .map_err(drawing_error)?;
        chart
            .draw_series(data.iter().enumerate().map(|(i, (_, v))| {
                Text::new(
                    format_value(*v),
                    (SegmentValue::CenterOf(i), *v + max * 0.02),
                    TextStyle::from((FONT, 13).into_font())
                        .pos(Pos::new(HPos::Center, VPos::Bottom)),
                )
            }))
            .map_err(drawing_error)?;
        root.present().map_err(drawing_error)?;
    }
    Ok(svg)
}

/// Horizontal bars, one per (label, value), largest first, for long labels (titles).
fn horizontal_bars(title: &str, x_desc: &str, data: &[(String, f64)]) -> Result<String> {
    if data.is_empty() {
        return empty(title);
    }
    register_font();
    let max = data.iter().map(|(_, v)| *v).fold(0.0, f64::max) * 1.15;
    let height = HEIGHT.max(60 + 28 * data.len() as u32);
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (WIDTH, height)).into_drawing_area();
        root.fill(&WHITE).map_err(drawing_error)?;
        let labels: Vec<String> = data.iter().map(|(l, _)| shorten(l, 38)).collect();
        let n = data.len();
        let mut chart = ChartBuilder::on(&root)
            .caption(title, (FONT, 18))
            .margin(15)
            .x_label_area_size(45)
            .y_label_area_size(290)
            .build_cartesian_2d(0.0..max, (0..n - 1).into_segmented())
            .map_err(drawing_error)?;
        let whole = data.iter().all(|(_, v)| v.fract() == 0.0);
        chart
            .configure_mesh()
            .disable_y_mesh()
            .light_line_style(TRANSPARENT)
            .x_desc(x_desc)
            .y_labels(n)
            // The largest on the top row.
            .y_label_formatter(&|v| match v {
                SegmentValue::CenterOf(i) => labels
                    .get(n.wrapping_sub(*i + 1))
                    .cloned()
                    .unwrap_or_default(),
                _ => String::new(),
            })
            .x_label_formatter(&|v| axis_number(*v, whole))
            .label_style((FONT, 12))
            .axis_desc_style((FONT, 14))
            .draw()
            .map_err(drawing_error)?;
        chart
            .draw_series(data.iter().enumerate().map(|(i, (_, v))| {
                let row = n - 1 - i;
                let mut bar = Rectangle::new(
                    [
                        (0.0, SegmentValue::Exact(row)),
                        (*v, SegmentValue::Exact(row + 1)),
                    ],
                    SHADES[1].filled(),
                );
                bar.set_margin(4, 4, 0, 0);
                bar
            }))
            .map_err(drawing_error)?;
        chart
            .draw_series(data.iter().enumerate().map(|(i, (_, v))| {
                Text::new(
                    format_value(*v),
                    (*v + max * 0.01, SegmentValue::CenterOf(n - 1 - i)),
                    TextStyle::from((FONT, 12).into_font()).pos(Pos::new(HPos::Left, VPos::Center)),
                )
            }))
            .map_err(drawing_error)?;
        root.present().map_err(drawing_error)?;
    }
    Ok(svg)
}

/// Embeds the data a chart was drawn from as JSON in its `<metadata>`, so a reader (or a
/// test) can check the picture against the report.
pub fn with_data(svg: String, data: &serde_json::Value) -> String {
    let json = data
        .to_string()
        .replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;");
    match svg
        .find("<svg")
        .and_then(|start| svg[start..].find('>').map(|end| start + end + 1))
    {
        Some(at) => format!(
            "{}\n<metadata id=\"libctl-data\">{json}</metadata>{}",
            &svg[..at],
            &svg[at..]
        ),
        None => svg,
    }
}

fn shorten(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        s.to_string()
    } else {
        format!("{}…", s.chars().take(max - 1).collect::<String>())
    }
}

/// An axis tick: whole numbers without decimals when the data are counts.
fn axis_number(v: f64, whole: bool) -> String {
    if whole {
        format!("{v:.0}")
    } else {
        format!("{v:.1}")
    }
}

fn format_value(v: f64) -> String {
    if v.fract() == 0.0 {
        format!("{v:.0}")
    } else {
        format!("{v:.2}")
    }
}

/// `report trends`: loans and returns per month as lines, the overdue rate on a second axis.
/// The month of `as_of` is labelled "to date": its fall is the month not being over.
pub fn trends(rows: &[TrendRow], title: &str, as_of: DateTime<Utc>) -> Result<String> {
    if rows.is_empty() {
        return empty(title);
    }
    register_font();
    let max = rows
        .iter()
        .map(|r| r.loans.max(r.returns))
        .max()
        .unwrap_or(0)
        .max(1) as f64
        * 1.15;
    let max_rate = rows
        .iter()
        .map(|r| r.overdue_rate_pct)
        .fold(0.0, f64::max)
        .max(1.0)
        * 1.2;
    let current = as_of.date_naive().format("%Y-%m").to_string();
    let months: Vec<String> = rows
        .iter()
        .map(|r| {
            let month = r.month.format("%Y-%m").to_string();
            if month == current {
                format!("{month} (to date)")
            } else {
                month
            }
        })
        .collect();
    let n = rows.len();
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (WIDTH, HEIGHT)).into_drawing_area();
        root.fill(&WHITE).map_err(drawing_error)?;
        let mut chart = ChartBuilder::on(&root)
            .caption(title, (FONT, 18))
            .margin(15)
            .x_label_area_size(50)
            .y_label_area_size(70)
            .right_y_label_area_size(70)
            .build_cartesian_2d(0..n.max(2) - 1, 0.0..max)
            .map_err(drawing_error)?
            .set_secondary_coord(0..n.max(2) - 1, 0.0..max_rate);
        chart
            .configure_mesh()
            .x_desc("month")
            .y_desc("loans and returns per month")
            .light_line_style(TRANSPARENT)
            .y_label_formatter(&|v| format!("{v:.0}"))
            .x_labels(n.min(12))
            .x_label_formatter(&|i| months.get(*i).cloned().unwrap_or_default())
            .label_style((FONT, 12))
            .axis_desc_style((FONT, 14))
            .draw()
            .map_err(drawing_error)?;
        chart
            .configure_secondary_axes()
            .y_desc("overdue rate (% of returns)")
            .label_style((FONT, 12))
            .axis_desc_style((FONT, 14))
            .draw()
            .map_err(drawing_error)?;
        let loans: Vec<(usize, f64)> = rows
            .iter()
            .enumerate()
            .map(|(i, r)| (i, r.loans as f64))
            .collect();
        let returns: Vec<(usize, f64)> = rows
            .iter()
            .enumerate()
            .map(|(i, r)| (i, r.returns as f64))
            .collect();
        let rate: Vec<(usize, f64)> = rows
            .iter()
            .enumerate()
            .map(|(i, r)| (i, r.overdue_rate_pct))
            .collect();
        chart
            .draw_series(LineSeries::new(loans.clone(), SHADES[0].stroke_width(3)))
            .map_err(drawing_error)?
            .label("loans")
            .legend(|(x, y)| PathElement::new([(x, y), (x + 20, y)], SHADES[0].stroke_width(3)));
        chart
            .draw_series(loans.iter().map(|p| Circle::new(*p, 4, SHADES[0].filled())))
            .map_err(drawing_error)?;
        chart
            .draw_series(LineSeries::new(returns.clone(), SHADES[1].stroke_width(2)))
            .map_err(drawing_error)?
            .label("returns")
            .legend(|(x, y)| PathElement::new([(x, y), (x + 20, y)], SHADES[1].stroke_width(2)));
        chart
            .draw_series(
                returns
                    .iter()
                    .map(|p| TriangleMarker::new(*p, 5, SHADES[1].filled())),
            )
            .map_err(drawing_error)?;
        chart
            .draw_secondary_series(LineSeries::new(rate.clone(), SHADES[2].stroke_width(2)))
            .map_err(drawing_error)?
            .label("overdue rate (%)")
            .legend(|(x, y)| PathElement::new([(x, y), (x + 20, y)], SHADES[2].stroke_width(2)));
        chart
            .draw_secondary_series(
                rate.iter()
                    .map(|p| Cross::new(*p, 5, SHADES[2].stroke_width(2))),
            )
            .map_err(drawing_error)?;
        chart
            .configure_series_labels()
            .background_style(WHITE.mix(0.9))
            .border_style(BLACK)
            .label_font((FONT, 12))
            .position(SeriesLabelPosition::UpperLeft)
            .draw()
            .map_err(drawing_error)?;
        root.present().map_err(drawing_error)?;
    }
    Ok(svg)
}

/// `report overdue`: open overdue loans by tier.
pub fn overdue(tiers: &OverdueTiers, title: &str) -> Result<String> {
    bars(
        title,
        "days overdue",
        "open overdue loans",
        &[
            ("1-3 days".into(), tiers.tier_1_3 as f64),
            ("4-7 days".into(), tiers.tier_4_7 as f64),
            ("8+ days".into(), tiers.tier_8_plus as f64),
        ],
    )
}

/// `report popular`: titles by loans in the window.
pub fn popular(rows: &[RankedRow], title: &str) -> Result<String> {
    horizontal_bars(
        title,
        "loans in the window",
        &rows
            .iter()
            .map(|r| (r.name.clone(), r.loans as f64))
            .collect::<Vec<_>>(),
    )
}

/// `report holds`: titles by waiting holds per copy, worst first.
pub fn holds(rows: &[HoldsRow], title: &str) -> Result<String> {
    horizontal_bars(
        title,
        "waiting holds per copy",
        &rows
            .iter()
            .map(|r| (r.title.clone(), r.holds_per_copy))
            .collect::<Vec<_>>(),
    )
}

/// `report risk`: members per risk level.
pub fn risk(rows: &[RiskRow], title: &str) -> Result<String> {
    let count = |level: &str| rows.iter().filter(|r| r.risk == level).count() as f64;
    bars(
        title,
        "risk level",
        "members",
        &["HIGH", "MEDIUM", "LOW", "NEW"]
            .iter()
            .map(|l| (l.to_string(), count(l)))
            .collect::<Vec<_>>(),
    )
}
