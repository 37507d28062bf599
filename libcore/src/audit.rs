//! The append-only audit log (SPEC §9) and the one transaction runner every mutation goes
//! through.
//!
//! [`run`] owns the shape of a mutation: open a transaction, do the work, write the `ok` audit
//! row inside the same transaction, commit; retry transient conflicts (40001, 40P01) up to three
//! times with jittered exponential backoff; and when a rule refuses or a permission check
//! denies, roll back first and then audit the attempt on its own, so a failed command changes
//! nothing but the log.

use std::sync::LazyLock;
use std::time::Duration;

use chrono::{DateTime, Utc};
use postgres::types::{ToSql, Type};
use postgres::{Client, GenericClient, Transaction};
use serde_json::{json, Value};
use uuid::Uuid;

use crate::actor::Ctx;
use crate::error::{Error, Result};
use crate::ids;
use crate::ratelimit::gate::Gate;
use crate::session::{self, Connection, Statements};

/// How many times a transient conflict is retried before it surfaces.
pub const MAX_RETRIES: u32 = 3;

/// Transient conflicts retried in this process so far, by every runner: a benchmark reads it
/// before and after a run.
pub static RETRIES: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

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
    /// The body already wrote its `ok` row with an [`OkRow`]; [`run_on`] writes none.
    written: bool,
}

impl<T> Audited<T> {
    /// Wraps a value with its entity id and audit details.
    pub fn new(value: T, entity_id: impl ToString, details: Value) -> Audited<T> {
        Audited {
            value,
            entity_id: Some(entity_id.to_string()),
            details,
            written: false,
        }
    }

    /// A value with audit details but no entity (the mutation created or changed none).
    pub fn without_entity(value: T, details: Value) -> Audited<T> {
        Audited {
            value,
            entity_id: None,
            details,
            written: false,
        }
    }

    /// A value whose `ok` row the body wrote itself: in its last statement ([`OkRow`]), or
    /// through a server function that audits its own work (`libctl_audit_prune`).
    pub fn written(value: T) -> Audited<T> {
        Audited {
            value,
            entity_id: None,
            details: Value::Null,
            written: true,
        }
    }
}

/// Runs `body` in a transaction as described in the module docs, after the rate-limit check.
pub fn run<T>(
    client: &mut Client,
    ctx: &Ctx,
    op: &Operation,
    mut body: impl FnMut(&mut Transaction<'_>) -> Result<Audited<T>>,
) -> Result<T> {
    run_on(client, ctx, op, |tx, statements, gate| {
        gate.pass(tx, statements)?;
        body(tx)
    })
}

/// [`run`] on a connection that may keep its statements prepared (a [`Session`]), for a body
/// that passes the rate-limit [`Gate`] itself, before its work: on its own, or with its first
/// read in the same round trip. A body that fails before passing it (an unknown key, a denied
/// permission) still has the gate checked first, so a rate-limited actor is told so whatever
/// else is wrong, as if the limit had been checked first.
///
/// [`Session`]: crate::session::Session
pub fn run_on<T>(
    connection: &mut impl Connection,
    ctx: &Ctx,
    op: &Operation,
    mut body: impl FnMut(
        &mut Transaction<'_>,
        Option<&mut Statements>,
        &mut Gate<'_>,
    ) -> Result<Audited<T>>,
) -> Result<T> {
    let (client, mut statements) = connection.parts();
    let mut attempt = 0;
    loop {
        let result: Result<T> = (|| {
            let mut tx = client.transaction()?;
            let mut gate = Gate::new(ctx, op.action);
            let done = match body(&mut tx, statements.as_deref_mut(), &mut gate) {
                Ok(_) if !gate.passed() => {
                    return Err(Error::Internal(format!(
                        "{} did its work without passing the rate-limit gate",
                        op.action
                    )))
                }
                Ok(done) => done,
                Err(e) if !gate.passed() && !matches!(e, Error::Database(_)) => {
                    gate.pass(&mut tx, statements.as_deref_mut())?;
                    return Err(e);
                }
                Err(e) => return Err(e),
            };
            if !done.written {
                append(
                    &mut tx,
                    statements.as_deref_mut(),
                    ctx,
                    &Entry {
                        action: op.action,
                        entity_type: op.entity_type,
                        entity_id: done.entity_id.clone(),
                        outcome: "ok",
                        details: done.details,
                    },
                )?;
            }
            tx.commit()?;
            Ok(done.value)
        })();
        match result {
            Ok(value) => return Ok(value),
            Err(e) if e.is_transient() && attempt < MAX_RETRIES => {
                attempt += 1;
                RETRIES.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                std::thread::sleep(backoff(attempt));
            }
            Err(e) => {
                record_failure_on(client, statements.as_deref_mut(), ctx, op, &e);
                return Err(e);
            }
        }
    }
}

/// Audits a refused, denied or rate-limited attempt after its transaction rolled back.
/// Faults (database errors, bugs) are not attempts by a person and are left to the logs.
pub fn record_failure(client: &mut Client, ctx: &Ctx, op: &Operation, error: &Error) {
    record_failure_on(client, None, ctx, op, error);
}

fn record_failure_on(
    client: &mut Client,
    statements: Option<&mut Statements>,
    ctx: &Ctx,
    op: &Operation,
    error: &Error,
) {
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
    if let Err(audit_error) = append(client, statements, ctx, &entry) {
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

/// Resolves the acting member as [`crate::actor::resolve`] does, and audits a login that named
/// someone it may not act as (`actor.assume`, denied) before refusing with `actor_mismatch`.
pub fn resolve_actor(
    client: &mut impl GenericClient,
    actor: Option<&str>,
    at: Option<chrono::DateTime<chrono::Utc>>,
) -> Result<Ctx> {
    match crate::actor::resolve_or_mismatch(client, actor, at)? {
        Ok(ctx) => Ok(ctx),
        Err(mismatch) => {
            record(
                client,
                &Ctx::new(mismatch.acting.clone()),
                &Entry {
                    action: "actor.assume",
                    entity_type: "member",
                    entity_id: None,
                    outcome: "denied",
                    details: json!({ "requested": mismatch.requested, "login": mismatch.login }),
                },
            )?;
            Err(mismatch.error())
        }
    }
}

/// Appends one audit row at the context's effective time; `recorded_at` keeps the real time.
pub fn record(client: &mut impl GenericClient, ctx: &Ctx, entry: &Entry) -> Result<()> {
    append(client, None, ctx, entry)
}

fn append(
    client: &mut impl GenericClient,
    statements: Option<&mut Statements>,
    ctx: &Ctx,
    entry: &Entry,
) -> Result<()> {
    let row = RowValues::new(ctx, entry, ctx.now());
    session::execute(client, statements, &INSERT_ROW, &row.params())?;
    Ok(())
}

/// The INSERT of one audit row, its values numbered from `$first` in [`RowValues::params`]'s
/// order.
fn insert_row_sql(first: usize) -> String {
    let values: Vec<String> = (first..first + RowValues::COUNT)
        .map(|n| format!("${n}"))
        .collect();
    format!(
        "INSERT INTO audit_log (id, at, actor, actor_role, action, entity_type, entity_id, outcome, details) VALUES ({})",
        values.join(", ")
    )
}

static INSERT_ROW: LazyLock<String> = LazyLock::new(|| insert_row_sql(1));

/// One audit row's values.
struct RowValues {
    id: Uuid,
    at: DateTime<Utc>,
    actor: String,
    actor_role: &'static str,
    action: &'static str,
    entity_type: &'static str,
    entity_id: Option<String>,
    outcome: &'static str,
    details: Value,
}

impl RowValues {
    const COUNT: usize = 9;

    fn new(ctx: &Ctx, entry: &Entry, at: DateTime<Utc>) -> RowValues {
        RowValues {
            id: ids::new_id(at),
            at,
            actor: ctx.actor.name.clone(),
            actor_role: ctx.actor.role.as_str(),
            action: entry.action,
            entity_type: entry.entity_type,
            entity_id: entry.entity_id.clone(),
            outcome: entry.outcome,
            details: entry.details.clone(),
        }
    }

    fn params(&self) -> [(&(dyn ToSql + Sync), Type); RowValues::COUNT] {
        [
            (&self.id, Type::UUID),
            (&self.at, Type::TIMESTAMPTZ),
            (&self.actor, Type::TEXT),
            (&self.actor_role, Type::TEXT),
            (&self.action, Type::TEXT),
            (&self.entity_type, Type::TEXT),
            (&self.entity_id, Type::TEXT),
            (&self.outcome, Type::TEXT),
            (&self.details, Type::JSONB),
        ]
    }
}

/// The `ok` row of a mutation, for a body that writes it in its own last statement rather than
/// leave it to [`run_on`]: on the borrow/return/renew hot path that is one round trip fewer,
/// out of six. The statement carries the row's INSERT as a data-modifying CTE ([`OkRow::sql`]),
/// which PostgreSQL runs whether or not the statement reads it, and the body returns
/// [`Audited::written`].
pub struct OkRow(RowValues);

impl OkRow {
    /// The `ok` row of `op` by the context's actor, stamped `at`: the effective time the body
    /// acted at, so the row and the change it describes carry the same time.
    pub fn new(
        ctx: &Ctx,
        op: &Operation,
        at: DateTime<Utc>,
        entity_id: impl ToString,
        details: Value,
    ) -> OkRow {
        OkRow(RowValues::new(
            ctx,
            &Entry {
                action: op.action,
                entity_type: op.entity_type,
                entity_id: Some(entity_id.to_string()),
                outcome: "ok",
                details,
            },
            at,
        ))
    }

    /// `WITH audited AS (INSERT INTO audit_log …), {ctes} {statement}`, where `statement` and
    /// `ctes` (empty, or a CTE list without `WITH`) use parameters `$1..$own` and the row's
    /// values follow them.
    pub fn sql(own: usize, ctes: &str, statement: &str) -> String {
        let comma = if ctes.is_empty() { "" } else { ", " };
        format!(
            "WITH audited AS ({}){comma}{ctes} {statement}",
            insert_row_sql(own + 1)
        )
    }

    /// `own` parameters followed by the row's values, in the numbering of [`OkRow::sql`].
    pub fn params<'a>(
        &'a self,
        own: &[(&'a (dyn ToSql + Sync), Type)],
    ) -> Vec<(&'a (dyn ToSql + Sync), Type)> {
        let mut all = own.to_vec();
        all.extend(self.0.params());
        all
    }
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

/// Filters for `audit export`.
#[derive(Debug, Clone, Default)]
pub struct ExportFilter {
    /// From (inclusive).
    pub from: Option<DateTime<Utc>>,
    /// To (inclusive).
    pub to: Option<DateTime<Utc>>,
    /// Only this actor.
    pub actor: Option<String>,
    /// Only this action.
    pub action: Option<String>,
}

/// Streams audit rows in time order (staff and `system`).
pub fn export(
    client: &mut Client,
    ctx: &Ctx,
    filter: &ExportFilter,
    emit: &mut dyn FnMut(AuditRow) -> Result<()>,
) -> Result<u64> {
    use postgres::fallible_iterator::FallibleIterator;
    ctx.require(crate::actor::Capability::Reports)?;
    let params: [&(dyn postgres::types::ToSql + Sync); 4] =
        [&filter.from, &filter.to, &filter.actor, &filter.action];
    let mut rows = client.query_raw(
        "SELECT id, at, recorded_at, actor, actor_role, action, entity_type, entity_id, outcome, details
         FROM audit_all
         WHERE ($1::timestamptz IS NULL OR at >= $1) AND ($2::timestamptz IS NULL OR at <= $2)
           AND ($3::text IS NULL OR actor = $3) AND ($4::text IS NULL OR action = $4)
         ORDER BY at, id",
        params.iter().copied(),
    )?;
    let mut n = 0;
    while let Some(row) = rows.next()? {
        emit(audit_row(&row))?;
        n += 1;
    }
    Ok(n)
}
