//! `libctl lost`, `libctl lost auto` and `libctl claim-returned`.

use std::process::ExitCode;

use chrono::NaiveDate;
use clap::{Args, Subcommand};
use libcore::lost;

use crate::app::App;
use crate::cmd::circulation::LoanArgs;

#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true, subcommand_negates_reqs = true)]
pub struct LostArgs {
    #[command(subcommand)]
    pub command: Option<LostCommand>,
    #[command(flatten)]
    pub loan: Option<LoanArgs>,
}

#[derive(Debug, Subcommand)]
pub enum LostCommand {
    /// Declare lost every loan overdue past its category's lost_after_days (nightly does this)
    Auto(AutoArgs),
}

#[derive(Debug, Args)]
pub struct AutoArgs {
    /// The night to run for
    #[arg(long)]
    pub as_of: NaiveDate,
    /// List each loan and charge; change nothing
    #[arg(long)]
    pub dry_run: bool,
    /// Refuse (too_many_items, exit 4) to mark more items than this
    #[arg(long, default_value_t = lost::DEFAULT_MAX_ITEMS)]
    pub max_items: i64,
}

pub fn run_lost(app: &mut App, a: LostArgs) -> anyhow::Result<ExitCode> {
    let (mut client, ctx) = app.session()?;
    match (a.command, a.loan) {
        (Some(LostCommand::Auto(auto)), _) => {
            let run = lost::auto(&mut client, &ctx, auto.as_of, auto.dry_run, auto.max_items)?;
            match app.out.format() {
                crate::render::Format::Json | crate::render::Format::Ndjson => {
                    app.out.record(&run)?
                }
                _ => {
                    app.out.rows(&run.loans)?;
                    app.out.note(&format!(
                        "{} loan(s){} lost as of {}: {} cents of replacements, {} cents of fees",
                        run.declared,
                        if run.dry_run {
                            " would be declared"
                        } else {
                            " declared"
                        },
                        run.as_of,
                        run.replacement_cents,
                        run.processing_fee_cents
                    ))?;
                }
            }
        }
        (None, Some(loan)) => {
            app.out
                .record(&lost::declare(&mut client, &ctx, &loan.loan_ref())?)?;
        }
        (None, None) => {
            return Err(libcore::Error::invalid(
                "invalid_input",
                "name the loan: --item BARCODE, --loan ID, or --member with --book; or `lost auto`",
            )
            .into())
        }
    }
    Ok(ExitCode::SUCCESS)
}

pub fn run_claim_returned(app: &mut App, a: LoanArgs) -> anyhow::Result<ExitCode> {
    let (mut client, ctx) = app.session()?;
    app.out
        .record(&lost::claim_returned(&mut client, &ctx, &a.loan_ref())?)?;
    Ok(ExitCode::SUCCESS)
}
