//! What cron runs: `fines …`, `notices generate`, `nightly`.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use chrono::NaiveDate;
use clap::{Args, Subcommand};
use libcore::{fines, jobs, notices};

use crate::app::App;
use crate::render::{Format, Renderer};

#[derive(Debug, Subcommand)]
pub enum FinesCommand {
    /// Assess the fine of every open overdue loan as of a date (idempotent; job lock)
    Accrue(AsOfArgs),
    /// Record a payment (at most the outstanding balance)
    Pay(PayArgs),
    /// A member's loans with fines, payments, waivers and balance
    Show(ShowArgs),
}

#[derive(Debug, Args)]
pub struct AsOfArgs {
    /// The date to assess through [default: today, library time]
    #[arg(long)]
    pub as_of: Option<NaiveDate>,
}

#[derive(Debug, Args)]
pub struct PayArgs {
    /// Member id or email
    #[arg(long)]
    pub member: String,
    #[arg(long)]
    pub amount_cents: i64,
}

#[derive(Debug, Args)]
pub struct ShowArgs {
    /// Member id or email
    #[arg(long)]
    pub member: String,
}

#[derive(Debug, Subcommand)]
pub enum NoticesCommand {
    /// Issue every overdue notice due by a date, each (loan, level) once; grouped per member
    Generate(NoticesArgs),
}

#[derive(Debug, Args)]
pub struct NoticesArgs {
    #[arg(long)]
    pub as_of: Option<NaiveDate>,
    /// Write the notices to FILE (atomically) instead of stdout
    #[arg(long)]
    pub out: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct NightlyArgs {
    #[arg(long)]
    pub as_of: Option<NaiveDate>,
    /// Run everything and roll it back
    #[arg(long)]
    pub dry_run: bool,
    /// Print the summary as one JSON line
    #[arg(long)]
    pub summary_json: bool,
    /// Write Prometheus text metrics here (atomically), for node_exporter's textfile collector
    #[arg(long)]
    pub metrics_file: Option<PathBuf>,
    /// Write the notices issued to FILE (csv or json by --format)
    #[arg(long)]
    pub notices_out: Option<PathBuf>,
}

fn today(app: &App, client: &mut libcore::Client) -> anyhow::Result<NaiveDate> {
    let calendar = libcore::calendar::Calendar::load(client)?;
    Ok(calendar.local_date(app.global.at.unwrap_or_else(chrono::Utc::now)))
}

/// Writes `contents` to `path` atomically: a temporary file beside it, then a rename.
pub fn write_atomically(
    path: &Path,
    contents: impl FnOnce(&mut std::fs::File) -> anyhow::Result<()>,
) -> anyhow::Result<()> {
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().to_string())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{name}.tmp{}", std::process::id()));
    {
        let mut file = std::fs::File::create(&tmp)
            .map_err(|e| libcore::Error::io(format!("creating {}", tmp.display()), e))?;
        contents(&mut file)?;
        file.sync_all()
            .map_err(|e| libcore::Error::io(format!("writing {}", tmp.display()), e))?;
    }
    std::fs::rename(&tmp, path)
        .map_err(|e| libcore::Error::io(format!("renaming to {}", path.display()), e))?;
    Ok(())
}

/// Renders notices: grouped per member for json, one row per notice for csv/ndjson/table.
fn render_notices(out: &mut Renderer, issued: &[notices::Notice]) -> anyhow::Result<()> {
    match out.format() {
        Format::Json => out.record(&notices::group_by_member(issued))?,
        _ => out.rows(issued)?,
    }
    Ok(())
}

fn notices_to_file(path: &Path, format: Format, issued: &[notices::Notice]) -> anyhow::Result<()> {
    let issued = issued.to_vec();
    write_atomically(path, move |file| {
        let handle = file
            .try_clone()
            .map_err(|e| libcore::Error::io("writing notices", e))?;
        let mut out = Renderer::to_writer(format, Box::new(handle));
        render_notices(&mut out, &issued)
    })
}

pub fn run_fines(app: &mut App, command: FinesCommand) -> anyhow::Result<ExitCode> {
    let (mut client, ctx) = app.session()?;
    match command {
        FinesCommand::Accrue(a) => {
            let as_of = match a.as_of {
                Some(d) => d,
                None => today(app, &mut client)?,
            };
            app.out.record(&fines::accrue(&mut client, &ctx, as_of)?)?;
        }
        FinesCommand::Pay(a) => {
            app.out
                .record(&fines::pay(&mut client, &ctx, &a.member, a.amount_cents)?)?
        }
        FinesCommand::Show(a) => {
            let account = fines::show(&mut client, &ctx, &a.member)?;
            match app.out.format() {
                Format::Json | Format::Ndjson => app.out.record(&account)?,
                _ => {
                    app.out.note(&format!(
                        "{} <{}>",
                        account.member.name, account.member.email
                    ))?;
                    app.out.rows(&account.loans)?;
                    app.out.record(&serde_json::json!({
                        "payments_cents": account.payments_cents,
                        "waivers_cents": account.waivers_cents,
                        "balance_cents": account.balance_cents,
                    }))?;
                }
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

pub fn run_notices(app: &mut App, command: NoticesCommand) -> anyhow::Result<ExitCode> {
    let NoticesCommand::Generate(a) = command;
    let (mut client, ctx) = app.session()?;
    let as_of = match a.as_of {
        Some(d) => d,
        None => today(app, &mut client)?,
    };
    let issued = notices::generate(&mut client, &ctx, as_of)?;
    match &a.out {
        Some(path) => {
            notices_to_file(path, app.out.format(), &issued)?;
            if !app.global.quiet {
                eprintln!(
                    "libctl: {} notice(s) written to {}",
                    issued.len(),
                    path.display()
                );
            }
        }
        None => render_notices(&mut app.out, &issued)?,
    }
    Ok(ExitCode::SUCCESS)
}

pub fn run_nightly(app: &mut App, a: NightlyArgs) -> anyhow::Result<ExitCode> {
    let result = (|| -> anyhow::Result<jobs::Nightly> {
        let (mut client, ctx) = app.session()?;
        let as_of = match a.as_of {
            Some(d) => d,
            None => today(app, &mut client)?,
        };
        Ok(jobs::nightly(&mut client, &ctx, as_of, a.dry_run)?)
    })();
    if let Some(path) = &a.metrics_file {
        if !a.dry_run {
            let previous = std::fs::read_to_string(path)
                .ok()
                .and_then(|t| jobs::previous_last_success(&t));
            let now = chrono::Utc::now().timestamp_millis() as f64 / 1000.0;
            let text = jobs::prometheus_metrics(result.as_ref().ok(), previous, now);
            write_atomically(path, |f| {
                use std::io::Write;
                Ok(f.write_all(text.as_bytes())
                    .map_err(|e| libcore::Error::io("writing metrics", e))?)
            })?;
        }
    }
    let run = result?;
    if let Some(path) = &a.notices_out {
        notices_to_file(path, app.out.format(), &run.notices)?;
    }
    if a.summary_json {
        println!("{}", serde_json::to_string(&run)?);
    } else {
        app.out.record(&run)?;
    }
    Ok(ExitCode::SUCCESS)
}
