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
    /// Assess and roll back: print what would be assessed
    #[arg(long)]
    pub dry_run: bool,
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
    /// Write again the notices issued on a date (when their file was lost); issues nothing
    Export(NoticesArgs),
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
    /// Run only this step, for the as-of night: expire-requests, auto-renew, accrue-fines,
    /// lost, expire-holds, notices or rollup
    pub step: Option<String>,
    #[arg(long)]
    pub as_of: Option<NaiveDate>,
    /// Run everything in one transaction and roll it back
    #[arg(long)]
    pub dry_run: bool,
    /// The lost step refuses (too_many_items, exit 4) to mark more items than this in a night
    #[arg(long, default_value_t = libcore::lost::DEFAULT_MAX_ITEMS)]
    pub max_lost_items: i64,
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

/// Today in library time (or the day of `--at`).
pub(crate) fn today(app: &App, client: &mut libcore::Client) -> anyhow::Result<NaiveDate> {
    let calendar = libcore::calendar::Calendar::load(client)?;
    Ok(calendar.local_date(app.global.at.unwrap_or_else(chrono::Utc::now)))
}

/// A file written beside its final path and renamed into place only when published: a reader
/// never sees half of it, and one never published is removed.
pub struct StagedFile {
    tmp: PathBuf,
    path: PathBuf,
    written: bool,
}

impl StagedFile {
    pub fn new(path: &Path) -> StagedFile {
        let dir = path
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().to_string())
            .unwrap_or_default();
        StagedFile {
            tmp: dir.join(format!(".{name}.tmp{}", std::process::id())),
            path: path.to_path_buf(),
            written: false,
        }
    }

    /// (Re)writes the staged content, private to its owner (0600) and synced to disk.
    pub fn write(
        &mut self,
        contents: impl FnOnce(&mut std::fs::File) -> anyhow::Result<()>,
    ) -> anyhow::Result<()> {
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create(true).truncate(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        let mut file = options
            .open(&self.tmp)
            .map_err(|e| libcore::Error::io(format!("creating {}", self.tmp.display()), e))?;
        self.written = true;
        contents(&mut file)?;
        file.sync_all()
            .map_err(|e| libcore::Error::io(format!("writing {}", self.tmp.display()), e))?;
        Ok(())
    }

    /// Renames the staged file into place.
    pub fn publish(mut self) -> anyhow::Result<()> {
        std::fs::rename(&self.tmp, &self.path)
            .map_err(|e| libcore::Error::io(format!("renaming to {}", self.path.display()), e))?;
        self.written = false;
        Ok(())
    }
}

impl Drop for StagedFile {
    fn drop(&mut self) {
        if self.written {
            let _ = std::fs::remove_file(&self.tmp);
        }
    }
}

/// Writes `contents` to `path` atomically: a temporary file beside it, then a rename.
pub fn write_atomically(
    path: &Path,
    contents: impl FnOnce(&mut std::fs::File) -> anyhow::Result<()>,
) -> anyhow::Result<()> {
    let mut staged = StagedFile::new(path);
    staged.write(contents)?;
    staged.publish()
}

/// Stages the notices file inside the job's transaction: a file that cannot be written fails
/// the job, and nothing is issued.
fn stage_notices(
    staged: &mut StagedFile,
    format: Format,
    issued: &[notices::Notice],
) -> libcore::Result<()> {
    staged
        .write(|file| {
            let handle = file
                .try_clone()
                .map_err(|e| libcore::Error::io("writing notices", e))?;
            let mut out = Renderer::to_writer(format, Box::new(handle));
            render_notices(&mut out, issued)
        })
        .map_err(|e| match e.downcast::<libcore::Error>() {
            Ok(core) => core,
            Err(other) => libcore::Error::Internal(format!("{other:#}")),
        })
}

/// Renders notices: grouped per member for json, one row per notice for csv/ndjson/table.
fn render_notices(out: &mut Renderer, issued: &[notices::Notice]) -> anyhow::Result<()> {
    match out.format() {
        Format::Json => out.record(&notices::group_by_member(issued))?,
        _ => out.rows(issued)?,
    }
    Ok(())
}

pub fn run_fines(app: &mut App, command: FinesCommand) -> anyhow::Result<ExitCode> {
    let (mut client, ctx) = app.session()?;
    match command {
        FinesCommand::Accrue(a) => {
            let as_of = match a.as_of {
                Some(d) => d,
                None => today(app, &mut client)?,
            };
            app.out
                .record(&fines::accrue(&mut client, &ctx, as_of, a.dry_run)?)?;
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
                    app.out.rows(&account.entries)?;
                    app.out.record(&serde_json::json!({
                        "by_kind": account.by_kind,
                        "balance_cents": account.balance_cents,
                    }))?;
                }
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

pub fn run_notices(app: &mut App, command: NoticesCommand) -> anyhow::Result<ExitCode> {
    let (mut client, ctx) = app.session()?;
    let (a, export) = match command {
        NoticesCommand::Generate(a) => (a, false),
        NoticesCommand::Export(a) => (a, true),
    };
    let as_of = match a.as_of {
        Some(d) => d,
        None => today(app, &mut client)?,
    };
    let format = app.out.format();
    let mut staged = a.out.as_deref().map(StagedFile::new);
    let issued = if export {
        let issued = notices::export(&mut client, &ctx, as_of)?;
        if let Some(staged) = &mut staged {
            stage_notices(staged, format, &issued)?;
        }
        issued
    } else {
        notices::generate(&mut client, &ctx, as_of, &mut |issued| match &mut staged {
            Some(staged) => stage_notices(staged, format, issued),
            None => Ok(()),
        })?
    };
    match (&a.out, staged) {
        (Some(path), Some(staged)) => {
            staged.publish()?;
            if !app.global.quiet {
                eprintln!(
                    "libctl: {} notice(s) written to {}",
                    issued.len(),
                    path.display()
                );
            }
        }
        _ => render_notices(&mut app.out, &issued)?,
    }
    Ok(ExitCode::SUCCESS)
}

pub fn run_nightly(app: &mut App, a: NightlyArgs) -> anyhow::Result<ExitCode> {
    let format = app.out.format();
    let mut staged = a.notices_out.as_deref().map(StagedFile::new);
    let result =
        (|| -> anyhow::Result<jobs::Nightly> {
            let (mut client, ctx) = app.session()?;
            let as_of = match a.as_of {
                Some(d) => d,
                None => today(app, &mut client)?,
            };
            let options = jobs::NightlyOptions {
                dry_run: a.dry_run,
                max_lost_items: a.max_lost_items,
                only: a.step.as_deref().map(jobs::Step::parse).transpose()?,
            };
            let run = jobs::nightly_with(&mut client, &ctx, as_of, &options, &mut |issued| {
                match &mut staged {
                    Some(staged) => stage_notices(staged, format, issued),
                    None => Ok(()),
                }
            })?;
            // Committed: the notices file goes into place (re-export with `notices export` if
            // this step is ever lost).
            if let Some(staged) = staged.take() {
                if !a.dry_run {
                    staged.publish()?;
                }
            }
            Ok(run)
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
    if a.summary_json {
        app.out.json_line(&run)?;
    } else {
        app.out.record(&run)?;
    }
    Ok(ExitCode::SUCCESS)
}
