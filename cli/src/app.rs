//! Top-level arguments, the shared command context, and error reporting.

use std::process::ExitCode;

use anyhow::Context as _;
use chrono::{DateTime, Utc};
use clap::{Args, Parser};
use libcore::cluster::{self, UrlSource};
use libcore::replica::{self, Source};

use crate::cmd::Command;
use crate::render::{Format, Renderer};

/// Run a library's circulation on PostgreSQL.
#[derive(Debug, Parser)]
#[command(
    name = "libctl",
    version,
    about,
    propagate_version = true,
    max_term_width = 100
)]
pub struct Cli {
    #[command(flatten)]
    pub global: Global,
    #[command(subcommand)]
    pub command: Command,
}

/// Options every command takes.
#[derive(Debug, Clone, Args)]
pub struct Global {
    /// PostgreSQL URL [default: postgres://postgres@127.0.0.1:5432/library, or the embedded cluster]
    #[arg(long, global = true, env = "DATABASE_URL", hide_env_values = true)]
    pub database_url: Option<String>,
    /// Who is acting: a member's email, or `system` for cron
    #[arg(long, global = true, env = "LIBCTL_ACTOR")]
    pub actor: Option<String>,
    /// Output format
    #[arg(long, global = true, value_enum, default_value_t = Format::Table)]
    pub format: Format,
    /// Only errors on stderr
    #[arg(long, short, global = true, conflicts_with = "verbose")]
    pub quiet: bool,
    /// More detail on stderr
    #[arg(long, short, global = true)]
    pub verbose: bool,
    /// Backdate "now" for offline circulation and backfills (RFC 3339; librarians and admins)
    #[arg(long, global = true, value_parser = parse_timestamp)]
    pub at: Option<DateTime<Utc>>,
    /// A streaming replica for read-only commands (reports, audit export, rate-limit audit,
    /// db check, holds shelf, bench reports, backup create --from-replica)
    #[arg(
        long,
        global = true,
        env = "LIBCTL_REPLICA_URL",
        hide_env_values = true
    )]
    pub replica_url: Option<String>,
    /// Seconds of replay lag beyond which the replica is not used
    #[arg(long, global = true, default_value_t = 60.0, value_parser = parse_lag)]
    pub max_replica_lag: f64,
    /// Exit 10 instead of reading from the primary when the replica cannot be used
    #[arg(long, global = true)]
    pub replica_only: bool,
}

/// A replay lag limit: seconds, 0 or more.
fn parse_lag(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if v.is_finite() && v >= 0.0 => Ok(v),
        _ => Err(format!("{s:?} is not a number of seconds, 0 or more")),
    }
}

/// Parses an RFC 3339 timestamp, or a bare date taken as midnight UTC.
pub fn parse_timestamp(s: &str) -> Result<DateTime<Utc>, String> {
    if let Ok(t) = DateTime::parse_from_rfc3339(s) {
        return Ok(t.with_timezone(&Utc));
    }
    if let Ok(d) = s.parse::<chrono::NaiveDate>() {
        return Ok(d.and_hms_opt(0, 0, 0).expect("midnight").and_utc());
    }
    Err(format!(
        "{s:?} is not an RFC 3339 timestamp (2024-05-01T10:00:00Z) or a date"
    ))
}

/// What every command gets: the global options and the renderer.
pub struct App {
    pub global: Global,
    pub out: Renderer,
}

impl App {
    /// The database URL, starting the embedded cluster when that is the default.
    pub fn database_url(&self) -> anyhow::Result<String> {
        let (url, source) = cluster::resolve_url(self.global.database_url.as_deref())?;
        match source {
            UrlSource::Embedded { data_dir, started } if !self.global.quiet => {
                let verb = if started { "started" } else { "using" };
                eprintln!(
                    "libctl: {verb} the embedded PostgreSQL in {} on port {} (no --database-url given and nothing at 127.0.0.1:5432)",
                    data_dir.display(),
                    cluster::EMBEDDED_PORT
                );
            }
            _ => {}
        }
        Ok(url)
    }

    /// A connection to a database whose schema matches this binary (exit 10 otherwise).
    pub fn client(&self) -> anyhow::Result<libcore::Client> {
        Ok(libcore::db::connect_current(&self.database_url()?)?)
    }

    /// The resolved actor and effective time.
    pub fn ctx(&self, client: &mut libcore::Client) -> anyhow::Result<libcore::actor::Ctx> {
        Ok(libcore::audit::resolve_actor(
            client,
            self.global.actor.as_deref(),
            self.global.at,
        )?)
    }

    /// A connection plus context: what most commands start with.
    pub fn session(&self) -> anyhow::Result<(libcore::Client, libcore::actor::Ctx)> {
        let mut client = self.client()?;
        let ctx = self.ctx(&mut client)?;
        Ok((client, ctx))
    }

    /// Where a read-only command reads: the replica when one is configured and passes its
    /// checks (`libcore::replica::connect`), else the primary, with one warning line; with
    /// `--replica-only`, a replica that cannot be used is exit 10.
    pub fn read_url(&self) -> anyhow::Result<(String, Source)> {
        match self.replica_client()? {
            Some((client, source, url)) => {
                drop(client);
                Ok((url, source))
            }
            None => Ok((self.database_url()?, Source::Primary)),
        }
    }

    /// The replica's connection when it passes its checks; `None` (after the warning) when
    /// the command reads from the primary.
    fn replica_client(&self) -> anyhow::Result<Option<(libcore::Client, Source, String)>> {
        let Some(url) = self.global.replica_url.as_deref() else {
            if self.global.replica_only {
                return Err(libcore::Error::Unavailable(
                    "--replica-only needs --replica-url (or LIBCTL_REPLICA_URL)".into(),
                )
                .into());
            }
            return Ok(None);
        };
        match replica::connect(url, self.global.max_replica_lag) {
            Ok((client, source)) => {
                self.announce(source);
                Ok(Some((client, source, url.to_string())))
            }
            Err(e) if self.global.replica_only => Err(e.into()),
            Err(e) => {
                if !self.global.quiet {
                    eprintln!("libctl: warning: not reading from the replica: {e}; reading from the primary");
                }
                self.announce(Source::Primary);
                Ok(None)
            }
        }
    }

    /// Says where a read-only command read, when a replica is configured: a JSON line on
    /// stderr in the JSON formats, a note otherwise (none with --quiet).
    fn announce(&self, source: Source) {
        if matches!(self.out.format(), Format::Json | Format::Ndjson) {
            eprintln!("{}", serde_json::json!(source));
        } else if !self.global.quiet {
            match source {
                Source::Replica {
                    replica_lag_seconds,
                } => eprintln!("libctl: read from the replica ({replica_lag_seconds:.1} s behind)"),
                Source::Primary => eprintln!("libctl: read from the primary"),
            }
        }
    }

    /// Runs a read-only command's `body` on the replica when one is configured and usable,
    /// else on the primary. The actor is resolved on the primary (a refused assumption is
    /// audited there). A query the standby cancels for a recovery conflict, or whose session
    /// it ends, is run once more on the primary (rows a streamed format had already printed
    /// are printed again).
    pub fn read<T>(
        &mut self,
        mut body: impl FnMut(
            &mut Renderer,
            &mut libcore::Client,
            &libcore::actor::Ctx,
        ) -> anyhow::Result<T>,
    ) -> anyhow::Result<T> {
        let (mut primary, ctx) = self.session()?;
        let Some((mut client, _, _)) = self.replica_client()? else {
            return body(&mut self.out, &mut primary, &ctx);
        };
        match body(&mut self.out, &mut client, &ctx) {
            Err(e) => {
                let lost = e
                    .chain()
                    .filter_map(|c| c.downcast_ref::<libcore::Error>())
                    .find_map(replica::read_lost);
                let Some(lost) = lost else {
                    return Err(e);
                };
                if !self.global.quiet {
                    let why = match lost {
                        replica::ReadLost::RecoveryConflict => {
                            "the replica cancelled the read (conflict with recovery)"
                        }
                        replica::ReadLost::ConnectionLost => {
                            "the replica ended the session during the read"
                        }
                    };
                    eprintln!("libctl: warning: {why}; reading from the primary");
                }
                self.announce(Source::Primary);
                body(&mut self.out, &mut primary, &ctx)
            }
            ok => ok,
        }
    }

    /// True when progress may be drawn: stderr is a terminal and not --quiet.
    pub fn show_progress(&self) -> bool {
        use std::io::IsTerminal;
        !self.global.quiet && std::io::stderr().is_terminal()
    }
}

fn init_logging(global: &Global) {
    let default = if global.quiet {
        "error"
    } else if global.verbose {
        "info,refinery_core=warn,libcore=debug,seeder=debug,cli=debug"
    } else {
        "warn"
    };
    let filter = tracing_subscriber::EnvFilter::try_from_env("LIBCTL_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if std::env::var("LIBCTL_LOG_FORMAT").is_ok_and(|f| f.eq_ignore_ascii_case("json")) {
        builder.json().init();
    } else {
        builder.init();
    }
}

/// Parses, runs, and turns any error into `error[CODE]: message` and its exit code.
pub fn main() -> ExitCode {
    use clap::{CommandFactory, FromArgMatches};
    let matches = Cli::command().get_matches();
    let cli = match Cli::from_arg_matches(&matches) {
        Ok(cli) => cli,
        Err(e) => e.exit(),
    };
    init_logging(&cli.global);
    let format = cli.global.format;
    let mut app = App {
        global: cli.global,
        out: Renderer::new(format),
    };
    match crate::cmd::run(&mut app, cli.command).context("libctl") {
        Ok(code) => code,
        Err(error) => report(&error, format),
    }
}

/// Walks the error chain once: a broken pipe is a reader that stopped reading (exit 0);
/// a libcore error carries its own code; anything else is internal (exit 1).
fn report(error: &anyhow::Error, format: Format) -> ExitCode {
    for cause in error.chain() {
        if let Some(io) = cause.downcast_ref::<std::io::Error>() {
            if io.kind() == std::io::ErrorKind::BrokenPipe {
                return ExitCode::SUCCESS;
            }
        }
    }
    let core = error
        .chain()
        .find_map(|c| c.downcast_ref::<libcore::Error>());
    let (code, exit, message) = match core {
        Some(e) => (e.code(), e.exit_code(), e.to_string()),
        None => (
            "internal",
            1,
            format!("{:#}", error)
                .trim_start_matches("libctl: ")
                .to_string(),
        ),
    };
    if matches!(format, Format::Json | Format::Ndjson) {
        let mut body = serde_json::json!({ "code": code, "message": message });
        if let Some(libcore::Error::InvalidRows { rows }) = core {
            body["rows"] = serde_json::json!(rows);
        }
        eprintln!("{}", serde_json::json!({ "error": body }));
    } else {
        match core {
            Some(libcore::Error::InvalidRows { rows }) => {
                // A MARC import names records (their number and 001) in the reason itself.
                let records = rows.iter().all(|r| r.reason.starts_with("record "));
                eprintln!(
                    "error[{code}]: {} bad {}; nothing was written",
                    rows.len(),
                    if records { "record(s)" } else { "row(s)" }
                );
                for row in rows {
                    if records {
                        eprintln!("  {}", row.reason);
                    } else {
                        eprintln!("  line {}: {}", row.line, row.reason);
                    }
                }
            }
            _ => eprintln!("error[{code}]: {message}"),
        }
    }
    ExitCode::from(exit as u8)
}
