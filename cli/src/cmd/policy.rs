//! `libctl policy …` and `libctl closed-day …`: the rules and the calendar.

use std::process::ExitCode;

use chrono::NaiveDate;
use clap::{Args, Subcommand};
use libcore::{calendar, policy};

use crate::app::App;

#[derive(Debug, Subcommand)]
pub enum PolicyCommand {
    /// Show the circulation rules and the library time zone
    Show,
    /// Change a category's rule, the library time zone or the item barcode prefix (admin)
    Set(Box<SetArgs>),
}

#[derive(Debug, Args)]
#[command(group = clap::ArgGroup::new("target").required(true).args(["category", "timezone", "item_barcode_prefix", "default_replacement_cents", "library_name", "library_contact", "currency", "notice_template_dir"]).multiple(true))]
pub struct SetArgs {
    /// Member category whose rule changes (created if new)
    #[arg(long)]
    pub category: Option<String>,
    #[arg(long, requires = "category")]
    pub loan_days: Option<i32>,
    #[arg(long, requires = "category")]
    pub max_loans: Option<i32>,
    #[arg(long, requires = "category")]
    pub max_renewals: Option<i32>,
    #[arg(long, requires = "category")]
    pub fine_cents_per_day: Option<i64>,
    #[arg(long, requires = "category")]
    pub grace_days: Option<i32>,
    #[arg(long, requires = "category")]
    pub max_fine_cents: Option<i64>,
    /// Live (waiting or ready) holds a member may have at once
    #[arg(long, requires = "category")]
    pub max_holds: Option<i32>,
    /// Open days a ready hold waits on the hold shelf
    #[arg(long, requires = "category")]
    pub hold_pickup_days: Option<i32>,
    /// Days before a loan's due date its courtesy notice goes out (0: none)
    #[arg(long, requires = "category")]
    pub courtesy_days: Option<i32>,
    /// Days before a membership lapses its notice goes out (0: none)
    #[arg(long, requires = "category")]
    pub expiry_notice_days: Option<i32>,
    /// Days overdue after which the nightly declares a loan lost (0: never)
    #[arg(long, requires = "category")]
    pub lost_after_days: Option<i32>,
    /// Fee charged with a lost item's replacement price
    #[arg(long, requires = "category")]
    pub processing_fee_cents: Option<i64>,
    /// Whether a lost item that comes back refunds its replacement charge (true|false)
    #[arg(long, requires = "category")]
    pub lost_refund_on_return: Option<bool>,
    /// Claims of a return a member may make before the next needs an override
    #[arg(long, requires = "category")]
    pub max_claims_returned: Option<i32>,
    /// Whether the nightly renews loans falling due (true|false)
    #[arg(long, requires = "category")]
    pub auto_renew: Option<bool>,
    /// Replacement price of a lost item that has no price of its own
    #[arg(long)]
    pub default_replacement_cents: Option<i64>,
    /// The library's name, as letters and emails sign them
    #[arg(long)]
    pub library_name: Option<String>,
    /// How readers reach the library (address, phone, email), under every notice
    #[arg(long)]
    pub library_contact: Option<String>,
    /// The currency amounts are shown in, e.g. EUR
    #[arg(long)]
    pub currency: Option<String>,
    /// A directory of notice templates (<kind>.txt) overriding the built-in ones
    #[arg(long)]
    pub notice_template_dir: Option<String>,
    /// IANA time zone of the library, e.g. Europe/Berlin
    #[arg(long)]
    pub timezone: Option<String>,
    /// Prefix of generated item barcodes, 1–12 digits (default 3)
    #[arg(long)]
    pub item_barcode_prefix: Option<String>,
}

#[derive(Debug, Subcommand)]
pub enum ClosedDayCommand {
    /// Close the library on a date (admin)
    Add(AddClosedArgs),
    /// List closed days
    List,
    /// Reopen a date (admin)
    Remove(RemoveClosedArgs),
}

#[derive(Debug, Args)]
pub struct AddClosedArgs {
    /// YYYY-MM-DD
    pub date: NaiveDate,
    #[arg(long)]
    pub reason: Option<String>,
}

#[derive(Debug, Args)]
pub struct RemoveClosedArgs {
    /// YYYY-MM-DD
    pub date: NaiveDate,
}

pub fn run(app: &mut App, command: PolicyCommand) -> anyhow::Result<ExitCode> {
    let (mut client, ctx) = app.session()?;
    match command {
        PolicyCommand::Show => {
            let p = policy::show(&mut client)?;
            match app.out.format() {
                crate::render::Format::Json => app.out.record(&p)?,
                _ => {
                    app.out.note(&format!("time zone: {}", p.timezone))?;
                    app.out
                        .note(&format!("item barcode prefix: {}", p.item_barcode_prefix))?;
                    app.out.note(&format!(
                        "default replacement price: {} cents",
                        p.default_replacement_cents
                    ))?;
                    app.out.rows(&p.rules)?;
                }
            }
        }
        PolicyCommand::Set(a) => {
            if let Some(tz) = &a.timezone {
                let tz = policy::set_timezone(&mut client, &ctx, tz)?;
                app.out.record(&serde_json::json!({ "timezone": tz }))?;
            }
            if let Some(prefix) = &a.item_barcode_prefix {
                let prefix = policy::set_item_barcode_prefix(&mut client, &ctx, prefix)?;
                app.out
                    .record(&serde_json::json!({ "item_barcode_prefix": prefix }))?;
            }
            for (key, value) in [
                ("library_name", &a.library_name),
                ("library_contact", &a.library_contact),
                ("currency", &a.currency),
                ("notice_template_dir", &a.notice_template_dir),
            ] {
                if let Some(value) = value {
                    let value = policy::set_notice_setting(&mut client, &ctx, key, value)?;
                    app.out.record(&serde_json::json!({ key: value }))?;
                }
            }
            if let Some(cents) = a.default_replacement_cents {
                let cents = policy::set_default_replacement_cents(&mut client, &ctx, cents)?;
                app.out
                    .record(&serde_json::json!({ "default_replacement_cents": cents }))?;
            }
            if let Some(category) = a.category {
                let rule = policy::set_rule(
                    &mut client,
                    &ctx,
                    &policy::RuleChange {
                        category,
                        loan_days: a.loan_days,
                        max_active_loans: a.max_loans,
                        max_renewals: a.max_renewals,
                        fine_cents_per_day: a.fine_cents_per_day,
                        grace_days: a.grace_days,
                        max_fine_cents_per_loan: a.max_fine_cents,
                        max_holds: a.max_holds,
                        hold_pickup_days: a.hold_pickup_days,
                        courtesy_days: a.courtesy_days,
                        expiry_notice_days: a.expiry_notice_days,
                        lost_after_days: a.lost_after_days,
                        processing_fee_cents: a.processing_fee_cents,
                        lost_refund_on_return: a.lost_refund_on_return,
                        max_claims_returned: a.max_claims_returned,
                        auto_renew: a.auto_renew,
                    },
                )?;
                app.out.record(&rule)?;
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

pub fn run_closed_day(app: &mut App, command: ClosedDayCommand) -> anyhow::Result<ExitCode> {
    let (mut client, ctx) = app.session()?;
    match command {
        ClosedDayCommand::Add(a) => app.out.record(&policy::add_closed_day(
            &mut client,
            &ctx,
            a.date,
            a.reason.as_deref(),
        )?)?,
        ClosedDayCommand::List => app.out.rows(calendar::closed_days(&mut client)?)?,
        ClosedDayCommand::Remove(a) => {
            app.out
                .record(&policy::remove_closed_day(&mut client, &ctx, a.date)?)?
        }
    }
    Ok(ExitCode::SUCCESS)
}
