//! Playgrounds and libraries: who may wipe or load-test a database.
//!
//! Developers seed databases to play in and benchmark; libraries keep theirs. The two need
//! different rules for the commands that replace or churn everything (`seed --replace`,
//! `bench borrow`), and the database itself says which it is:
//!
//! - a seed records when it wrote the data (`library_setting` `seeded_at`, in the seed's own
//!   transaction) and writes an audit row under the actor who ran it;
//! - a database is a **playground** while every audited change since that moment is a
//!   benchmark's own work (rows written inside a `bench.borrow` run's window);
//! - anything else is a **library**: a database never seeded, or one changed since. There,
//!   those commands need an admin and `--confirm`.

use chrono::{DateTime, Utc};
use postgres::GenericClient;

use crate::actor::{Ctx, Role};
use crate::error::{Error, Refusal, Result};

/// The `library_setting` key a seed writes.
pub const SEEDED_AT: &str = "seeded_at";

/// How long after a benchmark run's deadline its own work (returning its loans) may still be
/// written, when no `bench.finished` row closes its window: a run killed before it wrote one.
pub const BENCH_WINDOW_SLACK_SECONDS: i64 = 120;

/// What a database is, for the destructive commands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// Only a seed and benchmarks wrote it.
    Playground,
    /// Someone's data: never seeded, or changed since.
    Library,
}

/// Decides whether the database is a playground or a library.
pub fn kind(client: &mut impl GenericClient) -> Result<Kind> {
    let seeded_at: Option<DateTime<Utc>> = client
        .query_opt(
            "SELECT value::timestamptz FROM library_setting WHERE key = $1",
            &[&SEEDED_AT],
        )?
        .map(|r| r.get(0));
    let Some(seeded_at) = seeded_at else {
        return Ok(Kind::Library);
    };
    // recorded_at is the real time of every row, whatever `--at` said.
    let changed: bool = client
        .query_one(
            // Both CTEs are MATERIALIZED: inlined, the runs would be looked up again for
            // every audit row since the seed, a scan of the whole log each (quadratic after a
            // benchmark's tens of thousands of rows); materialized, the check is two scans.
            "WITH marks AS MATERIALIZED (
                 SELECT action, outcome, entity_id, recorded_at, details FROM audit_log
                 WHERE action IN ('bench.borrow', 'bench.finished') AND recorded_at >= $1),
             runs AS MATERIALIZED (
                 SELECT b.recorded_at AS started,
                        coalesce((SELECT min(f.recorded_at) FROM marks f
                                  WHERE f.action = 'bench.finished' AND f.entity_id = b.entity_id),
                                 (b.details->>'deadline')::timestamptz
                                   + make_interval(secs => $2)) AS ended
                 FROM marks b
                 WHERE b.action = 'bench.borrow' AND b.outcome = 'ok')
             SELECT EXISTS (
                 SELECT 1 FROM audit_log a
                 WHERE a.recorded_at > $1
                   AND a.action NOT IN ('bench.borrow', 'bench.finished')
                   AND NOT EXISTS (SELECT 1 FROM runs r
                                   WHERE a.recorded_at BETWEEN r.started AND r.ended))",
            &[&seeded_at, &(BENCH_WINDOW_SLACK_SECONDS as f64)],
        )?
        .get(0);
    Ok(if changed {
        Kind::Library
    } else {
        Kind::Playground
    })
}

/// The rule for commands that replace or churn a whole database: anyone on a playground; on
/// a library, an admin who passed `--confirm`.
pub fn authorise(
    client: &mut impl GenericClient,
    ctx: &Ctx,
    confirm: bool,
    what: &str,
) -> Result<Kind> {
    let kind = kind(client)?;
    if kind == Kind::Library {
        if ctx.actor.role != Role::Admin {
            return Err(Error::denied(format!(
                "this database holds a library (changed since it was seeded, or never seeded): \
                 only an admin may {what} ({} is {})",
                ctx.actor.name,
                ctx.actor.role.as_str()
            )));
        }
        if !confirm {
            return Err(Error::refused(
                Refusal::ConfirmationRequired,
                format!(
                    "this database holds a library (changed since it was seeded, or never seeded): \
                     to {what} anyway, pass --confirm"
                ),
            ));
        }
    }
    Ok(kind)
}

/// Records, inside a seed's own transaction, that a seed wrote this database, with the seed's
/// audit row under the actor who ran it.
pub fn record_seed(
    client: &mut impl GenericClient,
    ctx: &Ctx,
    details: serde_json::Value,
) -> Result<()> {
    client.execute(
        "INSERT INTO library_setting (key, value) VALUES ($1, now()::text)
         ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value",
        &[&SEEDED_AT],
    )?;
    crate::audit::record(
        client,
        &Ctx::new(ctx.actor.clone()),
        &crate::audit::Entry {
            action: "seed.run",
            entity_type: "database",
            entity_id: None,
            outcome: "ok",
            details,
        },
    )?;
    // The seed's own row is part of the seed, not a change after it.
    client.execute(
        "UPDATE library_setting SET value = clock_timestamp()::text WHERE key = $1",
        &[&SEEDED_AT],
    )?;
    Ok(())
}
