//! `libctl audit …` and `libctl rate-limit …`.

use std::process::ExitCode;

use chrono::{DateTime, Utc};
use clap::{Args, Subcommand};
use libcore::audit::{self, ExportFilter};
use libcore::ratelimit::{self, Policy};

use crate::app::{parse_timestamp, App};

#[derive(Debug, Subcommand)]
pub enum AuditCommand {
    /// Stream the audit log (csv, json or ndjson)
    Export(ExportArgs),
    /// Remove history older than a date (admin; counts only, unless --confirm)
    Prune(PruneArgs),
    /// Seal each complete day's audit rows into the hash chain (cron; nightly does it too)
    Seal(SealArgs),
    /// Recompute the hash chain; exit 8 naming the first day that no longer matches
    Verify(VerifyArgs),
    /// List the seals (keep `--format csv` output outside the database for `verify --seals`)
    Seals,
}

#[derive(Debug, Args)]
pub struct SealArgs {
    /// Seal days up to this one (never today, which is still being written) [default: yesterday]
    #[arg(long)]
    pub as_of: Option<chrono::NaiveDate>,
}

#[derive(Debug, Args)]
pub struct VerifyArgs {
    /// Start at this day's seal [default: the first]
    #[arg(long)]
    pub from: Option<chrono::NaiveDate>,
    /// A copy of the seals kept outside the database (`audit seals --format csv`)
    #[arg(long)]
    pub seals: Option<std::path::PathBuf>,
}

#[derive(Debug, Args)]
pub struct ExportArgs {
    #[arg(long, value_parser = parse_timestamp)]
    pub from: Option<DateTime<Utc>>,
    #[arg(long, value_parser = parse_timestamp)]
    pub to: Option<DateTime<Utc>>,
    /// Only this actor's rows (`--actor` is who is looking)
    #[arg(long)]
    pub for_actor: Option<String>,
    #[arg(long)]
    pub action: Option<String>,
}

#[derive(Debug, Args)]
pub struct PruneArgs {
    #[arg(long, value_parser = parse_timestamp)]
    pub before: DateTime<Utc>,
    /// Really delete (otherwise only count)
    #[arg(long)]
    pub confirm: bool,
}

#[derive(Debug, Subcommand)]
pub enum RateLimitCommand {
    /// Rate-limit policies
    #[command(subcommand)]
    Policy(PolicyCommand),
    /// An actor's current budget per policy
    Status(StatusArgs),
    /// Per actor: requests, peak sliding-window counts, violations, near misses, bursts; worst first
    Audit(RateAuditArgs),
}

#[derive(Debug, Subcommand)]
pub enum PolicyCommand {
    /// List the policies
    List,
    /// Create or change a policy (admin)
    Set(PolicySetArgs),
}

#[derive(Debug, Args)]
pub struct PolicySetArgs {
    /// member, librarian, admin or any
    #[arg(long)]
    pub role: String,
    /// borrow (borrow and renew) or mutation (everything)
    #[arg(long)]
    pub action_group: String,
    /// Attempts allowed in any sliding window of --window
    #[arg(long)]
    pub limit: i32,
    /// 60s, 15m, 1h, 1d
    #[arg(long)]
    pub window: String,
    /// At most this many within 10 seconds [default: the limit]
    #[arg(long)]
    pub burst: Option<i32>,
}

#[derive(Debug, Args)]
pub struct StatusArgs {
    /// The actor to inspect [default: yourself]
    #[arg(long = "for-actor")]
    pub target: Option<String>,
}

#[derive(Debug, Args)]
pub struct RateAuditArgs {
    #[arg(long, value_parser = parse_timestamp)]
    pub from: Option<DateTime<Utc>>,
    #[arg(long, value_parser = parse_timestamp)]
    pub to: Option<DateTime<Utc>>,
    /// Exit 4 when any violation is found (for cron alerting)
    #[arg(long)]
    pub fail_on_violation: bool,
}

pub fn run_audit(app: &mut App, command: AuditCommand) -> anyhow::Result<ExitCode> {
    match command {
        AuditCommand::Export(a) => {
            let filter = ExportFilter {
                from: a.from,
                to: a.to,
                actor: a.for_actor,
                action: a.action,
            };
            app.read(|out, client, ctx| {
                crate::render::emit_rows(out, |emit| {
                    audit::export(client, ctx, &filter, emit).map(|_| ())
                })
            })?;
        }
        AuditCommand::Prune(a) => {
            let (mut client, ctx) = app.session()?;
            let pruned = libcore::history::prune(&mut client, &ctx, a.before, a.confirm)?;
            if !pruned.deleted && !app.global.quiet {
                eprintln!(
                    "libctl: {} row(s) would be removed; add --confirm to remove them",
                    pruned.rows
                );
            }
            app.out.record(&pruned)?;
        }
        AuditCommand::Seal(a) => {
            let (mut client, ctx) = app.session()?;
            let run = libcore::history::seal(&mut client, &ctx, a.as_of)?;
            match app.out.format() {
                crate::render::Format::Json => app.out.record(&run)?,
                _ => app.out.rows(&run.sealed)?,
            }
        }
        AuditCommand::Verify(a) => {
            let (mut client, ctx) = app.session()?;
            let outside = a
                .seals
                .as_deref()
                .map(libcore::history::read_seals_csv)
                .transpose()?;
            let verified = libcore::history::verify(&mut client, &ctx, a.from, outside.as_deref())?;
            app.out.record(&verified)?;
        }
        AuditCommand::Seals => {
            let (mut client, ctx) = app.session()?;
            app.out.rows(libcore::history::list(&mut client, &ctx)?)?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

pub fn run_rate_limit(app: &mut App, command: RateLimitCommand) -> anyhow::Result<ExitCode> {
    if let RateLimitCommand::Status(a) = command {
        let (mut client, ctx) = app.session()?;
        let target = a.target.unwrap_or_else(|| ctx.actor.name.clone());
        app.out
            .rows(ratelimit::status(&mut client, &ctx, &target)?)?;
        return Ok(ExitCode::SUCCESS);
    }
    let (mut client, ctx) = app.session()?;
    match command {
        RateLimitCommand::Policy(PolicyCommand::List) => {
            app.out.rows(ratelimit::policies(&mut client)?)?
        }
        RateLimitCommand::Policy(PolicyCommand::Set(a)) => {
            let policy = Policy {
                role: a.role,
                action_group: a.action_group,
                limit_count: a.limit,
                window_seconds: ratelimit::parse_window(&a.window)?,
                burst: a.burst.unwrap_or(a.limit),
            };
            app.out
                .record(&ratelimit::set_policy(&mut client, &ctx, &policy)?)?;
        }
        RateLimitCommand::Status(_) => unreachable!("handled above"),
        RateLimitCommand::Audit(a) => {
            let to = a.to.unwrap_or_else(|| ctx.now());
            let from = a.from.unwrap_or(to - chrono::Duration::days(1));
            let (url, _) = app.read_url()?;
            let jobs = std::thread::available_parallelism().map_or(2, |n| n.get());
            let rows = ratelimit::audit_report(&url, &ctx, from, to, jobs)?;
            let violations: i64 = rows.iter().map(|r| r.violations).sum();
            app.out.rows(&rows)?;
            if a.fail_on_violation && violations > 0 {
                return Err(libcore::Error::refused(
                    libcore::Refusal::RateLimitViolations,
                    format!("{violations} rate-limit violation(s) between {from} and {to}"),
                )
                .into());
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
