//! `libctl hold place|cancel` and `libctl holds [shelf|expire]`.

use std::process::ExitCode;

use chrono::NaiveDate;
use clap::{Args, Subcommand};
use libcore::holds::{self, HoldFilter};
use uuid::Uuid;

use crate::app::App;

#[derive(Debug, Subcommand)]
pub enum HoldCommand {
    /// Ask to be next for a title whose copies are all out
    Place(PlaceArgs),
    /// Cancel a waiting or ready hold (a ready hold's item passes to the next in line)
    Cancel(CancelArgs),
}

#[derive(Debug, Args)]
pub struct PlaceArgs {
    /// Member id or email
    #[arg(long)]
    pub member: String,
    /// Book id or ISBN
    #[arg(long)]
    pub book: String,
}

#[derive(Debug, Args)]
pub struct CancelArgs {
    /// The hold's id
    pub hold: Uuid,
}

#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct HoldsArgs {
    #[command(subcommand)]
    pub command: Option<HoldsCommand>,
    /// Member id or email
    #[arg(long)]
    pub member: Option<String>,
    /// Book id or ISBN
    #[arg(long)]
    pub book: Option<String>,
    /// waiting, ready, fulfilled, cancelled or expired
    #[arg(long)]
    pub status: Option<String>,
    #[command(flatten)]
    pub page: super::PageArgs,
}

#[derive(Debug, Subcommand)]
pub enum HoldsCommand {
    /// The morning list: items to put on the hold shelf, and holds past their pickup day to clear
    Shelf(ShelfArgs),
    /// Expire ready holds past their pickup day and pass their items on (nightly does this)
    Expire(ExpireArgs),
}

#[derive(Debug, Args)]
pub struct ShelfArgs {
    /// The morning to list for [default: today, library time]
    #[arg(long)]
    pub as_of: Option<NaiveDate>,
}

#[derive(Debug, Args)]
pub struct ExpireArgs {
    /// Expire holds whose last pickup day is before this date
    #[arg(long)]
    pub as_of: NaiveDate,
    /// Run everything and roll it back: print what would expire
    #[arg(long)]
    pub dry_run: bool,
}

pub fn run_hold(app: &mut App, command: HoldCommand) -> anyhow::Result<ExitCode> {
    let (mut client, ctx) = app.session()?;
    let hold = match command {
        HoldCommand::Place(a) => holds::place(&mut client, &ctx, &a.member, &a.book)?,
        HoldCommand::Cancel(a) => holds::cancel(&mut client, &ctx, a.hold)?,
    };
    app.out.record(&hold)?;
    Ok(ExitCode::SUCCESS)
}

pub fn run_holds(app: &mut App, a: HoldsArgs) -> anyhow::Result<ExitCode> {
    let (mut client, ctx) = app.session()?;
    match a.command {
        Some(HoldsCommand::Shelf(s)) => {
            let as_of = match s.as_of {
                Some(day) => day,
                None => super::jobs::today(app, &mut client)?,
            };
            drop(client);
            app.read(|out, client, ctx| Ok(out.rows(holds::shelf(client, ctx, as_of)?)?))?;
        }
        Some(HoldsCommand::Expire(e)) => {
            app.out
                .record(&holds::expire(&mut client, &ctx, e.as_of, e.dry_run)?)?;
        }
        None => {
            let filter = HoldFilter {
                member: a.member,
                book: a.book,
                status: a.status,
            };
            let page = holds::list(
                &mut client,
                &ctx,
                &filter,
                a.page.limit,
                a.page.cursor.as_deref(),
            )?;
            app.out.page(&page)?;
        }
    }
    Ok(ExitCode::SUCCESS)
}
