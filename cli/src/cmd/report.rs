//! `libctl report KIND`: render what libcore's reports stream.

use std::process::ExitCode;

use chrono::{DateTime, NaiveDate, Utc};
use clap::Args;
use libcore::reports::{self, Kind, ReportOptions};

use crate::app::App;
use crate::render::{Format, Renderer};

/// `top-rated` is the reviews' report; every other kind is one of libcore's report kinds.
const TOP_RATED: &str = "top-rated";

fn kind_names() -> Vec<&'static str> {
    Kind::ALL
        .iter()
        .map(|k| k.as_str())
        .chain([TOP_RATED])
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
}

pub fn run(app: &mut App, a: ReportArgs) -> anyhow::Result<ExitCode> {
    let quiet = app.global.quiet;
    app.read(|out, client, ctx| report(out, client, ctx, &a, quiet))?;
    Ok(ExitCode::SUCCESS)
}

/// Runs one report on `client` (the replica or the primary) and renders it.
fn report(
    out: &mut Renderer,
    client: &mut libcore::Client,
    ctx: &libcore::actor::Ctx,
    a: &ReportArgs,
    quiet: bool,
) -> anyhow::Result<()> {
    let as_of = match a.as_of {
        // A bare date means the end of that day in library time.
        Some(t) if t.time() == chrono::NaiveTime::MIN => {
            Some(libcore::calendar::Calendar::load(client)?.end_of_day(t.date_naive()))
        }
        other => other,
    };
    let options = ReportOptions {
        as_of,
        from: a.from,
        to: a.to,
        limit: a.limit,
        ratio: a.ratio,
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
            crate::render::emit_rows(out, |emit| {
                waits = Some(reports::holds(client, ctx, &options, emit)?);
                Ok(())
            })?;
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
        Kind::Risk => crate::render::emit_rows(out, |emit| {
            reports::risk(client, ctx, &options, emit).map(|_| ())
        })?,
        Kind::Popular => out.rows(reports::ranked(client, ctx, &options, false)?)?,
        Kind::TopMembers => out.rows(reports::ranked(client, ctx, &options, true)?)?,
        Kind::Trends => out.rows(reports::trends(client, ctx, &options)?)?,
    }
    Ok(())
}
