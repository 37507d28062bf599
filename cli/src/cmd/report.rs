//! `libctl report KIND`: render what libcore's reports stream.

use std::process::ExitCode;

use chrono::{DateTime, NaiveDate, Utc};
use clap::Args;
use libcore::reports::{self, Kind, ReportOptions};

use crate::app::App;
use crate::render::{Format, Renderer};

/// `top-rated` is the reviews' report; `html` the page of them all; every other kind is one of
/// libcore's report kinds.
const TOP_RATED: &str = "top-rated";
const HTML: &str = "html";

fn kind_names() -> Vec<&'static str> {
    Kind::ALL
        .iter()
        .map(|k| k.as_str())
        .chain([TOP_RATED, HTML])
        .collect()
}

#[derive(Debug, Args)]
pub struct ReportArgs {
    #[arg(value_parser = clap::builder::PossibleValuesParser::new(kind_names()))]
    pub kind: String,
    /// The report's "now" (RFC 3339 or a date, taken as its end in library time) [default: now]
    #[arg(long, value_parser = crate::app::parse_timestamp)]
    pub as_of: Option<DateTime<Utc>>,
    /// First day of the window, inclusive
    #[arg(long)]
    pub from: Option<NaiveDate>,
    /// Last day of the window, inclusive
    #[arg(long)]
    pub to: Option<NaiveDate>,
    #[arg(long)]
    pub limit: Option<i64>,
    /// holds: flag titles with more waiting holds per copy than this [default: 3]
    #[arg(long)]
    pub ratio: Option<f64>,
    /// top-rated: only books with at least this many reviews
    #[arg(long, default_value_t = 5)]
    pub min_reviews: i32,
    /// trends, overdue, popular, holds, risk: also draw the report's chart as SVG into FILE
    #[arg(long)]
    pub chart: Option<std::path::PathBuf>,
    /// html: the page to write (atomically)
    #[arg(long)]
    pub out: Option<std::path::PathBuf>,
}

/// Writes a chart with the data it was drawn from.
fn write_chart(
    path: &std::path::Path,
    svg: libcore::Result<String>,
    data: serde_json::Value,
) -> anyhow::Result<()> {
    let svg = libcore::charts::with_data(svg?, &data);
    super::jobs::write_atomically(path, |f| {
        use std::io::Write;
        Ok(f.write_all(svg.as_bytes())
            .map_err(|e| libcore::Error::io("writing the chart", e))?)
    })
}

pub fn run(app: &mut App, a: ReportArgs) -> anyhow::Result<ExitCode> {
    let quiet = app.global.quiet;
    let charted = ["trends", "overdue", "popular", "holds", "risk"];
    if a.chart.is_some() && !charted.contains(&a.kind.as_str()) {
        return Err(libcore::Error::invalid(
            "invalid_input",
            format!(
                "--chart draws {}; {} has no chart",
                charted.join(", "),
                a.kind
            ),
        )
        .into());
    }
    if a.kind == HTML {
        let Some(out) = a.out.clone() else {
            return Err(libcore::Error::invalid(
                "invalid_input",
                "report html needs --out FILE.html",
            )
            .into());
        };
        let started = std::time::Instant::now();
        let page = app.read(|_, client, ctx| {
            let options = options(client, &a)?;
            Ok(libcore::report_page::render(client, ctx, &options)?)
        })?;
        super::jobs::write_atomically(&out, |f| {
            use std::io::Write;
            Ok(f.write_all(page.as_bytes())
                .map_err(|e| libcore::Error::io("writing the report", e))?)
        })?;
        if !quiet {
            eprintln!(
                "libctl: report written to {} in {:.2} s",
                out.display(),
                started.elapsed().as_secs_f64()
            );
        }
        return Ok(ExitCode::SUCCESS);
    }
    app.read(|out, client, ctx| report(out, client, ctx, &a, quiet))?;
    Ok(ExitCode::SUCCESS)
}

/// The reports' options from the arguments; a bare `--as-of` date means the end of that day
/// in library time.
fn options(client: &mut libcore::Client, a: &ReportArgs) -> anyhow::Result<ReportOptions> {
    let as_of = match a.as_of {
        Some(t) if t.time() == chrono::NaiveTime::MIN => {
            Some(libcore::calendar::Calendar::load(client)?.end_of_day(t.date_naive()))
        }
        other => other,
    };
    Ok(ReportOptions {
        as_of,
        from: a.from,
        to: a.to,
        limit: a.limit,
        ratio: a.ratio,
    })
}

/// Runs one report on `client` (the replica or the primary) and renders it.
fn report(
    out: &mut Renderer,
    client: &mut libcore::Client,
    ctx: &libcore::actor::Ctx,
    a: &ReportArgs,
    quiet: bool,
) -> anyhow::Result<()> {
    let options = options(client, a)?;
    let title = |what: &str| {
        libcore::charts::title(
            what,
            a.from.zip(a.to),
            options.as_of.unwrap_or_else(chrono::Utc::now),
        )
    };
    if a.kind == TOP_RATED {
        out.rows(libcore::reviews::top_rated(
            client,
            ctx,
            a.min_reviews,
            a.limit.unwrap_or(20),
        )?)?;
        return Ok(());
    }
    match a.kind.parse::<Kind>()? {
        Kind::Summary => out.record(&reports::summary(client, ctx, &options)?)?,
        Kind::Overdue => {
            let mut tiers = None;
            crate::render::emit_rows(out, |emit| {
                tiers = Some(reports::overdue(client, ctx, &options, emit)?);
                Ok(())
            })?;
            if let (Some(t), Some(path)) = (&tiers, &a.chart) {
                write_chart(
                    path,
                    libcore::charts::overdue(t, &title("Open overdue loans by tier")),
                    serde_json::json!(t),
                )?;
            }
            if let (Some(t), Format::Table) = (&tiers, out.format()) {
                out.record(t)?;
            } else if let (Some(t), false) = (&tiers, quiet) {
                eprintln!(
                    "overdue per tier: 1-3 days {}, 4-7 days {}, 8+ days {}",
                    t.tier_1_3, t.tier_4_7, t.tier_8_plus
                );
            }
        }
        Kind::Fines => crate::render::emit_rows(out, |emit| {
            reports::fines(client, ctx, &options, emit).map(|_| ())
        })?,
        Kind::Inventory => crate::render::emit_rows(out, |emit| {
            reports::inventory(client, ctx, &options, emit).map(|_| ())
        })?,
        Kind::Holds => {
            let mut waits = None;
            let mut charted = Vec::new();
            crate::render::emit_rows(out, |emit| {
                waits = Some(reports::holds(client, ctx, &options, &mut |row| {
                    if a.chart.is_some() && charted.len() < 20 {
                        charted.push(row.clone());
                    }
                    emit(row)
                })?);
                Ok(())
            })?;
            if let Some(path) = &a.chart {
                write_chart(
                    path,
                    libcore::charts::holds(&charted, &title("Waiting holds per copy, worst first")),
                    serde_json::json!(charted),
                )?;
            }
            if let (Some(w), Format::Table) = (&waits, out.format()) {
                out.record(w)?;
            } else if let (Some(w), false) = (&waits, quiet) {
                eprintln!(
                    "holds ready {} to {}: {}, mean hours from placing to ready {}",
                    w.from,
                    w.to,
                    w.holds_ready,
                    w.mean_hours_to_ready
                        .map_or_else(|| "-".to_string(), |h| format!("{h:.1}"))
                );
            }
        }
        Kind::Risk => {
            let mut charted = Vec::new();
            crate::render::emit_rows(out, |emit| {
                reports::risk(client, ctx, &options, &mut |row| {
                    if a.chart.is_some() {
                        charted.push(row.clone());
                    }
                    emit(row)
                })
                .map(|_| ())
            })?;
            if let Some(path) = &a.chart {
                let counts: serde_json::Map<String, serde_json::Value> =
                    ["HIGH", "MEDIUM", "LOW", "NEW"]
                        .iter()
                        .map(|l| {
                            (
                                l.to_string(),
                                charted.iter().filter(|r| r.risk == *l).count().into(),
                            )
                        })
                        .collect();
                write_chart(
                    path,
                    libcore::charts::risk(&charted, &title("Members by risk level")),
                    serde_json::json!(counts),
                )?;
            }
        }
        Kind::Popular => {
            let rows = reports::ranked(client, ctx, &options, false)?;
            if let Some(path) = &a.chart {
                write_chart(
                    path,
                    libcore::charts::popular(
                        &rows,
                        &title(if a.from.is_some() || a.to.is_some() {
                            "Most borrowed titles"
                        } else {
                            "Most borrowed titles, last 30 days"
                        }),
                    ),
                    serde_json::json!(rows),
                )?;
            }
            out.rows(rows)?
        }
        Kind::TopMembers => out.rows(reports::ranked(client, ctx, &options, true)?)?,
        Kind::Trends => {
            let rows = reports::trends(client, ctx, &options)?;
            if let Some(path) = &a.chart {
                write_chart(
                    path,
                    libcore::charts::trends(
                        &rows,
                        &title("Loans and returns per month"),
                        options.as_of.unwrap_or_else(chrono::Utc::now),
                    ),
                    serde_json::json!(rows),
                )?;
            }
            out.rows(rows)?
        }
    }
    Ok(())
}
