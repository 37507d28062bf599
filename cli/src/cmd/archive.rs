//! `libctl archive`: history into its monthly partitions, exported and dropped (SPEC §17).

use chrono::{DateTime, NaiveDate, Utc};
use clap::{Args, Subcommand};

use crate::app::{parse_timestamp, App};
use libcore::archive::{self, Kind};

#[derive(Debug, Subcommand)]
pub enum ArchiveCommand {
    /// Move loans that ended before a date, with their notices, to loan_history (admin or system; counts only, unless --confirm)
    Loans(LoansArgs),
    /// Move audit rows older than a date to audit_history (admin or system; counts only, unless --confirm)
    Audit(AuditArgs),
    /// Write one month of history in the backup format, verify it, and with --drop drop the month (admin)
    Export(ExportArgs),
    /// The history partitions and their rows
    List,
}

#[derive(Debug, Args)]
pub struct LoansArgs {
    /// Loans that ended before this [default: 24 months ago]
    #[arg(long, value_parser = parse_timestamp)]
    pub ended_before: Option<DateTime<Utc>>,
    #[command(flatten)]
    pub run: RunArgs,
}

#[derive(Debug, Args)]
pub struct AuditArgs {
    /// Audit rows whose time is before this [default: 13 months ago]
    #[arg(long, value_parser = parse_timestamp)]
    pub before: Option<DateTime<Utc>>,
    #[command(flatten)]
    pub run: RunArgs,
}

#[derive(Debug, Args)]
pub struct RunArgs {
    /// Really move the rows (otherwise only count them)
    #[arg(long)]
    pub confirm: bool,
    /// Rows per batch; each batch is one transaction
    #[arg(long, default_value_t = archive::BATCH)]
    pub batch: i32,
}

#[derive(Debug, Args)]
pub struct ExportArgs {
    /// loan_history (with its notices) or audit_history
    #[arg(long)]
    pub table: String,
    /// The month, YYYY-MM (a UTC month)
    #[arg(long, value_parser = parse_month)]
    pub month: NaiveDate,
    /// Directory to write `<table>_yYYYYmMM/` into
    #[arg(long)]
    pub dir: std::path::PathBuf,
    /// After the export verifies, detach and drop the month
    #[arg(long)]
    pub drop: bool,
}

fn parse_month(s: &str) -> Result<NaiveDate, String> {
    NaiveDate::parse_from_str(&format!("{s}-01"), "%Y-%m-%d")
        .map_err(|_| format!("{s:?} is not a month (YYYY-MM)"))
}

pub fn run(app: &mut App, command: ArchiveCommand) -> anyhow::Result<()> {
    match command {
        ArchiveCommand::Loans(a) => {
            let before = a
                .ended_before
                .unwrap_or_else(|| archive::months_ago(Utc::now(), archive::LOAN_MONTHS));
            move_rows(app, Kind::Loans, before, &a.run)
        }
        ArchiveCommand::Audit(a) => {
            let before = a
                .before
                .unwrap_or_else(|| archive::months_ago(Utc::now(), archive::AUDIT_MONTHS));
            move_rows(app, Kind::Audit, before, &a.run)
        }
        ArchiveCommand::Export(a) => {
            let url = app.database_url()?;
            let ctx = app.ctx(&mut libcore::db::connect_current(&url)?)?;
            let export = archive::export(&url, &ctx, &a.table, a.month, &a.dir, a.drop)?;
            app.out.record(&export)?;
            Ok(())
        }
        ArchiveCommand::List => {
            let (mut client, ctx) = app.session()?;
            let partitions = archive::list(&mut client, &ctx)?;
            app.out.rows(&partitions)?;
            Ok(())
        }
    }
}

fn move_rows(
    app: &mut App,
    kind: Kind,
    before: DateTime<Utc>,
    args: &RunArgs,
) -> anyhow::Result<()> {
    let (mut client, ctx) = app.session()?;
    let show = app.show_progress();
    let run = archive::run(
        &mut client,
        &ctx,
        kind,
        before,
        args.confirm,
        args.batch,
        |rows| {
            if show {
                eprint!("\rlibctl: {rows} row(s) moved");
            }
        },
    )?;
    if show && run.moved {
        eprintln!();
    }
    if !run.moved && !app.global.quiet {
        eprintln!(
            "libctl: {} row(s) would move; add --confirm to move them",
            run.rows
        );
    }
    app.out.record(&run)?;
    Ok(())
}
