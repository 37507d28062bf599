//! `libctl backup create | verify | restore | list | prune`.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Subcommand};
use libcore::backup::{self, CreateOptions, Retention};
use libcore::restore::{self, RestoreOptions, Restored};
use serde::Serialize;

use crate::app::App;

#[derive(Debug, Subcommand)]
pub enum BackupCommand {
    /// One consistent snapshot, N parallel workers, zstd + blake3, written to NAME.partial then renamed
    Create(CreateArgs),
    /// Re-hash, decompress and count every table; exit 8 on any difference
    Verify(VerifyArgs),
    /// Verify, then load into a target database (admin); refuses a non-empty target without --force
    Restore(RestoreArgs),
    /// Complete backups under ROOT, newest first
    List(ListArgs),
    /// Remove backups the retention policy does not keep (and stale .partial directories)
    Prune(PruneArgs),
}

fn default_jobs() -> usize {
    std::thread::available_parallelism().map_or(2, |n| n.get())
}

#[derive(Debug, Args)]
pub struct CreateArgs {
    /// The backup root
    #[arg(long)]
    pub dir: PathBuf,
    #[arg(long)]
    pub jobs: Option<usize>,
    /// Directory name [default: libctl-<UTC timestamp>]
    #[arg(long)]
    pub name: Option<String>,
    /// Print the summary as one JSON line
    #[arg(long)]
    pub summary_json: bool,
    /// Read the tables from the replica (--replica-url) when it passes its checks
    #[arg(long)]
    pub from_replica: bool,
}

#[derive(Debug, Args)]
pub struct VerifyArgs {
    pub dir: PathBuf,
    #[arg(long)]
    pub jobs: Option<usize>,
}

#[derive(Debug, Args)]
pub struct RestoreArgs {
    pub dir: PathBuf,
    #[arg(long)]
    pub target_url: String,
    #[arg(long)]
    pub jobs: Option<usize>,
    /// Replace a target that holds data
    #[arg(long)]
    pub force: bool,
    #[arg(long)]
    pub summary_json: bool,
}

#[derive(Debug, Args)]
pub struct ListArgs {
    pub root: PathBuf,
}

#[derive(Debug, Args)]
pub struct PruneArgs {
    pub root: PathBuf,
    #[arg(long, default_value_t = 0)]
    pub keep_last: usize,
    #[arg(long, default_value_t = 0)]
    pub keep_daily: usize,
    #[arg(long, default_value_t = 0)]
    pub keep_weekly: usize,
    #[arg(long)]
    pub dry_run: bool,
}

#[derive(Serialize)]
struct CreateSummary<'a> {
    path: &'a std::path::Path,
    tables: usize,
    rows: u64,
    bytes: u64,
    raw_bytes: u64,
    seconds: f64,
}

fn summary_line(app: &mut App, json_line: bool, value: &impl Serialize) -> anyhow::Result<()> {
    if json_line {
        app.out.json_line(value)?;
    } else {
        app.out.record(value)?;
    }
    Ok(())
}

pub fn run(app: &mut App, command: BackupCommand) -> anyhow::Result<ExitCode> {
    match command {
        BackupCommand::Create(a) => {
            let primary = app.database_url()?;
            let ctx = app.ctx(&mut libcore::db::connect_current(&primary)?)?;
            // pg_export_snapshot works on a standby: the workers share the replica's snapshot.
            let url = if a.from_replica {
                if app.global.replica_url.is_none() {
                    return Err(libcore::Error::invalid(
                        "invalid_input",
                        "--from-replica needs --replica-url (or LIBCTL_REPLICA_URL)",
                    )
                    .into());
                }
                app.read_url()?.0
            } else {
                primary
            };
            if app.show_progress() {
                eprintln!("libctl: backing up to {} …", a.dir.display());
            }
            let created = backup::create(
                &url,
                &ctx,
                &CreateOptions {
                    root: a.dir,
                    name: a.name,
                    jobs: a.jobs.unwrap_or_else(default_jobs),
                },
            )?;
            let summary = CreateSummary {
                path: &created.path,
                tables: created.manifest.tables.len(),
                rows: created.manifest.rows(),
                bytes: created.manifest.bytes(),
                raw_bytes: created.manifest.tables.iter().map(|t| t.raw_bytes).sum(),
                seconds: created.seconds,
            };
            summary_line(app, a.summary_json, &summary)?;
        }
        BackupCommand::Verify(a) => {
            let verified = backup::verify(&a.dir, a.jobs.unwrap_or_else(default_jobs))?;
            app.out.record(&verified)?;
        }
        BackupCommand::Restore(a) => {
            // No connection to DATABASE_URL: in a disaster it names the database that is lost.
            // The restore authorises the actor in the target, or in the backup.
            if app.global.at.is_some() {
                anyhow::bail!(libcore::Error::invalid(
                    "invalid_input",
                    "--at does not apply to a restore"
                ));
            }
            let restored: Restored = restore::restore(
                &a.dir,
                app.global.actor.as_deref(),
                &RestoreOptions {
                    target_url: a.target_url,
                    jobs: a.jobs.unwrap_or_else(default_jobs),
                    force: a.force,
                },
            )?;
            summary_line(app, a.summary_json, &restored)?;
        }
        BackupCommand::List(a) => app.out.rows(backup::list(&a.root)?)?,
        BackupCommand::Prune(a) => {
            let pruned = backup::prune(
                &a.root,
                Retention {
                    keep_last: a.keep_last,
                    keep_daily: a.keep_daily,
                    keep_weekly: a.keep_weekly,
                },
                a.dry_run,
                chrono::Utc::now(),
            )?;
            app.out.record(&pruned)?;
        }
    }
    Ok(ExitCode::SUCCESS)
}
