//! The append-only audit log (SPEC §9) and the one transaction runner every mutation goes
//! through.
//!
//! [`run`] owns the shape of a mutation: open a transaction, do the work, write the `ok` audit
//! row inside the same transaction, commit; retry transient conflicts (40001, 40P01) up to three
//! times with jittered exponential backoff; and when a rule refuses or a permission check
//! denies, roll back first and then audit the attempt on its own, so a failed command changes
//! nothing but the log.

use std::time::Duration;

use chrono::{DateTime, Utc};
use postgres::{Client, GenericClient, Transaction};
use serde_json::{json, Value};
use uuid::Uuid;

use crate::actor::Ctx;
use crate::error::{Error, Result};
use crate::ids;

/// How many times a transient conflict is retried before it surfaces.
pub const MAX_RETRIES: u32 = 3;

/// What a mutation is, for its audit row.
#[derive(Debug, Clone)]
pub struct Operation {
    /// Dotted action name, e.g. `loan.borrow`.
    pub action: &'static str,
    /// The table or concept acted on, e.g. `loan`.
    pub entity_type: &'static str,
    /// The input as given, kept on refused and denied rows so the attempt can be understood.
    pub input: Value,
}

impl Operation {
    /// Describes a mutation.
    pub fn new(action: &'static str, entity_type: &'static str, input: Value) -> Operation {
        Operation {
            action,
            entity_type,
            input,
        }
    }
}

/// The result of a successful mutation with what its audit row should say.
#[derive(Debug)]
pub struct Audited<T> {
    /// What the caller gets back.
    pub value: T,
    /// The id of the entity created or changed.
    pub entity_id: Option<String>,
    /// Details for the audit row; before/after values for updates.
    pub details: Value,
}

impl<T> Audited<T> {
    /// Wraps a value with its entity id and audit details.
    pub fn new(value: T, entity_id: impl ToString, details: Value) -> Audited<T> {
        Audited {
            value,
            entity_id: Some(entity_id.to_string()),
            details,
        }
    }
}

/// Runs `body` in a transaction as described in the module docs.
pub fn run<T>(
    client: &mut Client,
    ctx: &Ctx,
    op: &Operation,
    mut body: impl FnMut(&mut Transaction<'_>) -> Result<Audited<T>>,
) -> Result<T> {
    let mut attempt = 0;
    loop {
        let result: Result<T> = (|| {
            let mut tx = client.transaction()?;
            let done = body(&mut tx)?;
            record(
                &mut tx,
                ctx,
                &Entry {
                    action: op.action,
                    entity_type: op.entity_type,
                    entity_id: done.entity_id.clone(),
                    outcome: "ok",
                    details: done.details,
                },
            )?;
            tx.commit()?;
            Ok(done.value)
        })();
        match result {
            Ok(value) => return Ok(value),
            Err(e) if e.is_transient() && attempt < MAX_RETRIES => {
                attempt += 1;
                std::thread::sleep(backoff(attempt));
            }
            Err(e) => {
                record_failure(client, ctx, op, &e);
                return Err(e);
            }
        }
    }
}

/// Audits a refused, denied or rate-limited attempt after its transaction rolled back.
/// Faults (database errors, bugs) are not attempts by a person and are left to the logs.
pub fn record_failure(client: &mut Client, ctx: &Ctx, op: &Operation, error: &Error) {
    let Some(outcome) = error.audit_outcome() else {
        return;
    };
    let entry = Entry {
        action: op.action,
        entity_type: op.entity_type,
        entity_id: None,
        outcome,
        details: json!({
            "input": op.input,
            "error": { "code": error.code(), "message": error.to_string() },
        }),
    };
    if let Err(audit_error) = record(client, ctx, &entry) {
        tracing::warn!(%audit_error, action = op.action, "could not audit a failed attempt");
    }
}

/// Exponential backoff with full jitter: 0..(10 ms × 2^attempt).
fn backoff(attempt: u32) -> Duration {
    let ceiling_ms = 10u64 << attempt.min(6);
    Duration::from_millis(rand::random_range(1..=ceiling_ms))
}

/// One audit row.
#[derive(Debug, Clone)]
pub struct Entry {
    /// Dotted action name.
    pub action: &'static str,
    /// Entity type.
    pub entity_type: &'static str,
    /// Entity id, if one exists.
    pub entity_id: Option<String>,
    /// `ok`, `refused`, `denied` or `rate_limited`.
    pub outcome: &'static str,
    /// JSON details.
    pub details: Value,
}

/// Appends one audit row at the context's effective time; `recorded_at` keeps the real time.
pub fn record(client: &mut impl GenericClient, ctx: &Ctx, entry: &Entry) -> Result<()> {
    let at = ctx.now();
    client.execute(
        "INSERT INTO audit_log (id, at, actor, actor_role, action, entity_type, entity_id, outcome, details)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
        &[
            &ids::new_id(at),
            &at,
            &ctx.actor.name,
            &ctx.actor.role.as_str(),
            &entry.action,
            &entry.entity_type,
            &entry.entity_id,
            &entry.outcome,
            &entry.details,
        ],
    )?;
    Ok(())
}

/// One row of `audit export`.
#[derive(Debug, Clone, serde::Serialize)]
pub struct AuditRow {
    /// Row id.
    pub id: Uuid,
    /// Effective time.
    pub at: DateTime<Utc>,
    /// Wall-clock time it was written.
    pub recorded_at: DateTime<Utc>,
    /// Actor name.
    pub actor: String,
    /// Actor role.
    pub actor_role: String,
    /// Action.
    pub action: String,
    /// Entity type.
    pub entity_type: Option<String>,
    /// Entity id.
    pub entity_id: Option<String>,
    /// Outcome.
    pub outcome: String,
    /// JSON details.
    pub details: Value,
}

/// The most recent audit rows, newest first; for `audit tail` and tests.
pub fn recent(client: &mut Client, limit: i64) -> Result<Vec<AuditRow>> {
    let rows = client.query(
        "SELECT id, at, recorded_at, actor, actor_role, action, entity_type, entity_id, outcome, details
         FROM audit_log ORDER BY at DESC, id DESC LIMIT $1",
        &[&limit],
    )?;
    Ok(rows.iter().map(audit_row).collect())
}

fn audit_row(r: &postgres::Row) -> AuditRow {
    AuditRow {
        id: r.get(0),
        at: r.get(1),
        recorded_at: r.get(2),
        actor: r.get(3),
        actor_role: r.get(4),
        action: r.get(5),
        entity_type: r.get(6),
        entity_id: r.get(7),
        outcome: r.get(8),
        details: r.get(9),
    }
}
