//! `libctl report html`: one self-contained page for the library's managers (issue 29): the
//! summary figures, every report's chart as inline SVG, the top rows of each table, when it
//! was made and from which database. No script, font or image is fetched from anywhere; it
//! prints (A4 or Letter) and reads on a phone. The page is a MiniJinja template
//! (`templates/report.html`), which escapes everything but the charts.

use chrono::Utc;
use minijinja::{context, Environment};
use postgres::Client;

use crate::actor::Ctx;
use crate::charts;
use crate::error::{Error, Result};
use crate::ledger::{format_cents, thousands};
use crate::reports::{self, ReportOptions};

/// Rows of each table on the page.
const TOP: usize = 10;

/// Renders the page for `options` (the reports' as-of and window).
pub fn render(client: &mut Client, ctx: &Ctx, options: &ReportOptions) -> Result<String> {
    let summary = reports::summary(client, ctx, options)?;
    let currency = crate::policy::setting(client, "currency")?.unwrap_or_else(|| "EUR".into());
    let as_of = summary.as_of;
    let mut overdue_rows = Vec::new();
    let tiers = reports::overdue(client, ctx, options, &mut |r| {
        if overdue_rows.len() < TOP {
            overdue_rows.push(r);
        }
        Ok(())
    })?;
    let popular = reports::ranked(
        client,
        ctx,
        &ReportOptions {
            limit: Some(TOP as i64),
            ..options.clone()
        },
        false,
    )?;
    let mut holds = Vec::new();
    reports::holds(client, ctx, options, &mut |r| {
        holds.push(r);
        Ok(())
    })?;
    let mut risk = Vec::new();
    reports::risk(client, ctx, options, &mut |r| {
        risk.push(r);
        Ok(())
    })?;
    let trends = reports::trends(client, ctx, options)?;
    let window = match (trends.first(), trends.last()) {
        (Some(first), Some(last)) => format!(
            "{} to {}",
            first.month.format("%B %Y"),
            last.month.format("%B %Y")
        ),
        _ => "no months".to_string(),
    };
    let t = |what: &str| charts::title(what, None, as_of);
    let library = crate::policy::setting(client, "library_name")?;
    let database: String = client.query_one("SELECT current_database()", &[])?.get(0);
    let sections = vec![
        context! {
            heading => "Loans, returns and the overdue rate per month",
            svg => charts::trends(&trends, &t("Loans and returns per month"), as_of)?,
            headers => ["month", "loans", "returns", "late returns", "overdue rate (%)"],
            rows => trends.iter().rev().take(TOP).map(|r| vec![
                r.month.format("%Y-%m").to_string(), r.loans.to_string(), r.returns.to_string(),
                r.late_returns.to_string(), format!("{:.1}", r.overdue_rate_pct),
            ]).collect::<Vec<_>>(),
        },
        context! {
            heading => "Overdue loans by how late they are",
            svg => charts::overdue(&tiers, &t("Open overdue loans by tier"))?,
            headers => ["title", "member", "days overdue", "fine so far"],
            rows => overdue_rows.iter().map(|r| vec![
                r.title.clone(), r.email.clone(), r.days_overdue.to_string(),
                format_cents(r.fine_cents, &currency),
            ]).collect::<Vec<_>>(),
        },
        context! {
            heading => "Most borrowed titles",
            svg => charts::popular(&popular, &t(if options.from.is_some() || options.to.is_some() {
                "Most borrowed titles"
            } else {
                "Most borrowed titles, last 30 days"
            }))?,
            headers => ["title", "author", "loans"],
            rows => popular.iter().map(|r| vec![
                r.name.clone(), r.detail.clone(), r.loans.to_string(),
            ]).collect::<Vec<_>>(),
        },
        context! {
            heading => "Holds pressure",
            svg => charts::holds(&holds[..holds.len().min(TOP)], &t("Waiting holds per copy, worst first"))?,
            headers => ["title", "waiting holds", "copies", "holds per copy"],
            rows => holds.iter().take(TOP).map(|r| vec![
                r.title.clone(), r.waiting_holds.to_string(), r.copies.to_string(),
                format!("{:.2}", r.holds_per_copy),
            ]).collect::<Vec<_>>(),
        },
        context! {
            heading => "Members at risk",
            svg => charts::risk(&risk, &t("Members by risk level"))?,
            headers => ["member", "loans", "overdue", "risk"],
            rows => risk.iter().filter(|r| r.risk == "HIGH").take(TOP).map(|r| vec![
                r.email.clone(), r.loans.to_string(), r.overdue_loans.to_string(), r.risk.clone(),
            ]).collect::<Vec<_>>(),
        },
    ];
    let figures = vec![
        context! { label => "Titles", value => thousands(summary.books) },
        context! { label => "Copies", value => thousands(summary.copies) },
        context! { label => "On the shelf", value => thousands(summary.available_copies) },
        context! { label => "Active members", value => thousands(summary.active_members) },
        context! { label => "Open loans", value => thousands(summary.open_loans) },
        context! { label => "Overdue loans", value => thousands(summary.overdue_loans) },
        context! { label => "Utilisation", value => format!("{:.1} %", summary.utilisation_pct) },
        context! {
            label => "Outstanding fines",
            value => format_cents(summary.outstanding_fines_cents, &currency),
        },
    ];
    let mut env = Environment::new();
    env.add_template("report.html", include_str!("templates/report.html"))
        .map_err(|e| Error::Internal(format!("the report page template: {e}")))?;
    env.get_template("report.html")
        .and_then(|page| {
            page.render(context! {
                library => library.unwrap_or_else(|| "The Library".into()),
                window => window,
                as_of => as_of.format("%Y-%m-%d %H:%M UTC").to_string(),
                made_at => Utc::now().format("%Y-%m-%d %H:%M UTC").to_string(),
                database => database,
                version => env!("CARGO_PKG_VERSION"),
                empty => trends.iter().all(|r| r.loans == 0) && summary.open_loans == 0,
                figures => figures,
                sections => sections,
            })
        })
        .map_err(|e| Error::Internal(format!("rendering the report page: {e}")))
}
