//! `libctl db …`: init, migrate, status, check, up, down.

use std::process::ExitCode;

use clap::{Args, Subcommand};
use libcore::{cluster, db, members};
use serde::Serialize;

use crate::app::App;

#[derive(Debug, Subcommand)]
pub enum DbCommand {
    /// Create the database if missing, migrate, and create the first admin if there is none
    Init(InitArgs),
    /// Apply pending migrations (idempotent)
    Migrate,
    /// Schema version, row counts and the policy
    Status,
    /// Verify every circulation invariant; exit 8 on any violation
    Check,
    /// Start the embedded PostgreSQL cluster (.libctl/pg or $LIBCTL_HOME/pg)
    Up,
    /// Stop the embedded PostgreSQL cluster
    Down,
}

#[derive(Debug, Args)]
pub struct InitArgs {
    /// Email of the first admin
    #[arg(long, default_value = "admin@library.test")]
    pub admin_email: String,
    /// Name of the first admin
    #[arg(long, default_value = "Library Administrator")]
    pub admin_name: String,
}

impl Default for InitArgs {
    fn default() -> Self {
        InitArgs {
            admin_email: "admin@library.test".into(),
            admin_name: "Library Administrator".into(),
        }
    }
}

#[derive(Serialize)]
struct InitReport {
    database_created: bool,
    migrations_applied: Vec<i32>,
    schema_version: i32,
    admin_created: Option<String>,
}

/// `db init` for commands (like `seed`) that run it themselves.
pub fn init(
    app: &App,
    args: &InitArgs,
) -> anyhow::Result<(libcore::Client, bool, Vec<i32>, Option<String>)> {
    let url = app.database_url()?;
    let created = db::create_database_if_missing(&url)?;
    let mut client = db::connect(&url)?;
    let applied = db::migrate(&mut client)?;
    let admin = members::bootstrap_admin(&mut client, &args.admin_email, &args.admin_name)?;
    Ok((client, created, applied, admin.map(|a| a.email)))
}

pub fn run(app: &mut App, command: DbCommand) -> anyhow::Result<ExitCode> {
    match command {
        DbCommand::Init(args) => {
            let (_, database_created, migrations_applied, admin_created) = init(app, &args)?;
            app.out.record(&InitReport {
                database_created,
                migrations_applied,
                schema_version: db::latest_version(),
                admin_created,
            })?;
        }
        DbCommand::Migrate => {
            let mut client = db::connect(&app.database_url()?)?;
            let applied = db::migrate(&mut client)?;
            app.out.record(&serde_json::json!({
                "migrations_applied": applied,
                "schema_version": db::applied_version(&mut client)?,
            }))?;
        }
        DbCommand::Status => {
            let mut client = db::connect(&app.database_url()?)?;
            let status = db::status(&mut client)?;
            // The policy, where the database is whole enough to have one.
            let policy =
                if status.schema_version.is_some() && !status.state.starts_with("incomplete") {
                    Some(libcore::policy::show(&mut client)?)
                } else {
                    None
                };
            // Who this login acts as, on a schema that knows logins.
            let identity = if status.state == "ok" {
                Some(libcore::actor::binding(&mut client)?.describe())
            } else {
                None
            };
            match app.out.format() {
                crate::render::Format::Json | crate::render::Format::Ndjson => {
                    app.out.record(&serde_json::json!({
                        "schema_version": status.schema_version,
                        "binary_schema_version": status.binary_schema_version,
                        "state": status.state,
                        "tables": status.tables,
                        "policy": policy,
                        "identity": identity,
                    }))?
                }
                _ => {
                    app.out.record(&serde_json::json!({
                        "schema_version": status.schema_version,
                        "binary_schema_version": status.binary_schema_version,
                        "state": status.state,
                        "timezone": policy.as_ref().map(|p| p.timezone.clone()),
                        "identity": identity,
                    }))?;
                    app.out.rows(&status.tables)?;
                    if let Some(policy) = &policy {
                        app.out.rows(&policy.rules)?;
                    }
                }
            }
        }
        DbCommand::Check => {
            let (url, _) = app.read_url()?;
            let mut client = db::connect_current(&url)?;
            let results = db::check(&mut client)?;
            app.out.rows(results.iter().map(|r| {
                serde_json::json!({
                    "invariant": r.invariant,
                    "violations": r.violations,
                    "examples": r.examples.join("; "),
                })
            }))?;
            db::fail_on_violations(&results)?;
        }
        DbCommand::Up => {
            let started = cluster::up()?;
            app.out.record(&serde_json::json!({
                "started": started,
                "url": cluster::embedded_url(),
                "data_dir": cluster::home().join("pg"),
            }))?;
        }
        DbCommand::Down => {
            let stopped = cluster::down()?;
            app.out.record(&serde_json::json!({ "stopped": stopped }))?;
        }
    }
    Ok(ExitCode::SUCCESS)
}
