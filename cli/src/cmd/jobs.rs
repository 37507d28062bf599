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
    /// Issue every notice due by a date (overdue, courtesy, membership), each once per its key;
    /// grouped per member
    Generate(NoticesArgs),
    /// Write again the notices issued on a date (when their file was lost); issues nothing
    Export(NoticesArgs),
    /// The queued letters (members who get notices on paper) as one printable HTML file,
    /// one letter per page; marks them sent
    Print(PrintArgs),
    /// Deliveries: queued, sent, failed or skipped
    Outbox(OutboxArgs),
    /// Send the queued email notices through an SMTP server, oldest first, at most --rate a minute
    Send(SendArgs),
}

#[derive(Debug, Args)]
pub struct SendArgs {
    #[command(flatten)]
    pub smtp: SmtpArgs,
    /// At most this many messages this run
    #[arg(long)]
    pub limit: Option<i64>,
    /// Render and count what would be sent; send and change nothing
    #[arg(long)]
    pub dry_run: bool,
    /// Print the counts by outcome as one JSON line
    #[arg(long)]
    pub summary_json: bool,
}

/// Where and how email notices go out.
#[derive(Debug, Args)]
pub struct SmtpArgs {
    /// smtp://[user:pass@]host:port (add ?tls=required for STARTTLS), or smtps://…
    #[arg(long, env = "LIBCTL_SMTP_URL", hide_env_values = true)]
    pub smtp_url: Option<String>,
    /// The sender address [default: the library_contact setting]
    #[arg(long)]
    pub from: Option<String>,
    /// Messages a minute, at most
    #[arg(long, default_value = "60/min", value_parser = parse_rate)]
    pub rate: u32,
    /// Attempts before a message is marked failed
    #[arg(long, default_value_t = 5)]
    pub max_attempts: i32,
    /// Templates (<kind>.txt) overriding the built-in ones
    #[arg(long)]
    pub template_dir: Option<PathBuf>,
}

/// `N/min` or `N`.
fn parse_rate(s: &str) -> Result<u32, String> {
    s.trim_end_matches("/min")
        .parse::<u32>()
        .ok()
        .filter(|n| (1..=6000).contains(n))
        .ok_or_else(|| format!("{s:?} is not a rate such as 60/min (1 to 6000)"))
}

impl SmtpArgs {
    /// The sender's options.
    pub fn options(
        &self,
        limit: Option<i64>,
        dry_run: bool,
    ) -> anyhow::Result<libcore::outbox::SendOptions> {
        let smtp_url = self.smtp_url.clone().ok_or_else(|| {
            libcore::Error::invalid(
                "invalid_input",
                "--smtp-url (or LIBCTL_SMTP_URL) is required",
            )
        })?;
        Ok(libcore::outbox::SendOptions {
            smtp_url,
            from: self.from.clone(),
            per_minute: self.rate,
            limit,
            dry_run,
            max_attempts: self.max_attempts,
            template_dir: self.template_dir.clone(),
        })
    }
}

#[derive(Debug, Args)]
pub struct PrintArgs {
    /// The HTML file to write (atomically)
    #[arg(long)]
    pub out: PathBuf,
    /// Letters of notices issued up to this date [default: today, library time]
    #[arg(long)]
    pub as_of: Option<NaiveDate>,
    /// Templates (<kind>.txt) overriding the built-in ones [default: the notice_template_dir setting]
    #[arg(long)]
    pub template_dir: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct OutboxArgs {
    /// queued, sent, failed or skipped
    #[arg(long)]
    pub status: Option<String>,
    #[command(flatten)]
    pub page: super::PageArgs,
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
    /// After the pipeline, send the queued email notices (as `notices send`)
    #[arg(long, requires = "smtp_url")]
    pub send: bool,
    #[command(flatten)]
    pub smtp: SmtpArgs,
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
        NoticesCommand::Print(p) => {
            let as_of = match p.as_of {
                Some(d) => d,
                None => today(app, &mut client)?,
            };
            let mut staged = StagedFile::new(&p.out);
            let printed = libcore::outbox::print(
                &mut client,
                &ctx,
                as_of,
                p.template_dir.as_deref(),
                &mut |page| {
                    staged
                        .write(|f| {
                            use std::io::Write;
                            Ok(f.write_all(page.as_bytes())
                                .map_err(|e| libcore::Error::io("writing letters", e))?)
                        })
                        .map_err(|e| libcore::Error::Internal(format!("{e:#}")))
                },
            )?;
            staged.publish()?;
            if !app.global.quiet {
                eprintln!("libctl: {printed} letter(s) written to {}", p.out.display());
            }
            app.out
                .record(&serde_json::json!({ "printed": printed, "out": p.out }))?;
            return Ok(ExitCode::SUCCESS);
        }
        NoticesCommand::Send(a) => {
            let options = a.smtp.options(a.limit, a.dry_run)?;
            let run = libcore::outbox::send(&mut client, &ctx, &options)?;
            if a.summary_json {
                app.out.json_line(&run)?;
            } else {
                app.out.record(&run)?;
            }
            return Ok(ExitCode::SUCCESS);
        }
        NoticesCommand::Outbox(o) => {
            let page = libcore::outbox::list(
                &mut client,
                &ctx,
                o.status.as_deref(),
                o.page.limit,
                o.page.cursor.as_deref(),
            )?;
            app.out.page(&page)?;
            return Ok(ExitCode::SUCCESS);
        }
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
    let sent = if a.send && !a.dry_run {
        let (mut client, ctx) = app.session()?;
        let options = a.smtp.options(None, false)?;
        Some(libcore::outbox::send(&mut client, &ctx, &options)?)
    } else {
        None
    };
    let mut summary =
        serde_json::to_value(&run).map_err(|e| libcore::Error::Internal(e.to_string()))?;
    if let Some(sent) = sent {
        summary["sent"] = serde_json::json!(sent);
    }
    if a.summary_json {
        app.out.json_line(&summary)?;
    } else {
        app.out.record(&summary)?;
    }
    Ok(ExitCode::SUCCESS)
}
