//! History in monthly partitions (SPEC §17): ended loans and old audit rows move out of the hot
//! tables into `loan_history` (with their notices, `notice_history`) and `audit_history`, a
//! month's partition can be exported in the backup format and dropped, and the partitions of
//! the coming months are made ahead of need.
//!
//! The moves run in the schema (V25, `libctl_archive_loans`/`libctl_archive_audit`, as the
//! owner, each checking its caller and writing its batch's audit row), one batch per
//! transaction. A batch walks the hot table's primary key, a UUID v7 whose time is the row's
//! own (a loan's borrowing, an audit row's `at`): the walk stops at the cut-off's time plus a
//! day, so it never reads the newer part of the table, and a killed run's rerun finds the
//! rows already moved gone and carries on. Partitions are made before the batches, each in a
//! short transaction of its own, because creating one locks its parent.

use std::path::{Path, PathBuf};
use std::time::Instant;

use chrono::{DateTime, Datelike, Days, Months, NaiveDate, Utc};
use postgres::{Client, GenericClient};
use serde::Serialize;
use serde_json::json;
use uuid::Uuid;

use crate::actor::{Capability, Ctx};
use crate::audit::{self, Audited, Operation};
use crate::backup::{self, Manifest, TableEntry};
use crate::error::{Error, Result};

/// Rows per batch, each batch one transaction.
pub const BATCH: i32 = 5_000;

/// Default age of the loans `archive loans` moves: ended more than 24 months ago.
pub const LOAN_MONTHS: u32 = 24;

/// Default age of the audit rows `archive audit` moves: older than 13 months (a year of
/// rate-limit and audit windows stays hot, plus the month in progress).
pub const AUDIT_MONTHS: u32 = 13;

/// Months ahead whose partitions the nightly makes.
pub const MONTHS_AHEAD: u32 = 3;

/// Which history `archive` moves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    /// Ended loans, with their notices.
    Loans,
    /// Audit rows.
    Audit,
}

impl Kind {
    fn action(self) -> &'static str {
        match self {
            Kind::Loans => "archive.loans",
            Kind::Audit => "archive.audit",
        }
    }

    fn history_tables(self) -> &'static [&'static str] {
        match self {
            Kind::Loans => &["loan_history", "notice_history"],
            Kind::Audit => &["audit_history"],
        }
    }
}

/// The first day of `at`'s UTC month.
pub fn month_of(at: DateTime<Utc>) -> NaiveDate {
    at.date_naive().with_day(1).expect("day 1 exists")
}

/// `now` less `months` months, at the start of that UTC day: the default cut-offs.
pub fn months_ago(now: DateTime<Utc>, months: u32) -> DateTime<Utc> {
    let day = now.date_naive() - Months::new(months);
    day.and_hms_opt(0, 0, 0).expect("midnight").and_utc()
}

/// Makes the partitions of every month from `first` to `last` (first days), each in its own
/// transaction. Returns the partitions that did not exist before.
pub fn ensure_partitions(
    client: &mut Client,
    table: &str,
    first: NaiveDate,
    last: NaiveDate,
) -> Result<Vec<String>> {
    let mut made = Vec::new();
    let mut month = first.with_day(1).expect("day 1");
    while month <= last {
        made.extend(ensure_partition(client, table, month)?);
        month = month + Months::new(1);
    }
    Ok(made)
}

/// Makes one month's partition in the caller's transaction; its name if it is new.
fn ensure_partition(
    client: &mut impl GenericClient,
    table: &str,
    month: NaiveDate,
) -> Result<Option<String>> {
    let name = crate::db::partition_name(table, month);
    let existed: bool = client
        .query_one("SELECT to_regclass($1) IS NOT NULL", &[&name])?
        .get(0);
    if existed {
        return Ok(None);
    }
    client.execute("SELECT libctl_history_partition($1, $2)", &[&table, &month])?;
    Ok(Some(name))
}

/// Makes one month's partition as a plain table of its parent's columns and checks, with no
/// index, for a bulk load (a restore, a seed) in the caller's transaction; [`attach`] indexes
/// it once loaded.
pub fn make_detached(client: &mut impl GenericClient, table: &str, month: NaiveDate) -> Result<()> {
    client.execute(
        "SELECT libctl_history_partition($1, $2, true)",
        &[&table, &month],
    )?;
    Ok(())
}

/// Attaches a month [`make_detached`] made and a bulk load filled: ATTACH builds its indexes
/// from the parent's, so the parent's index definitions are never replayed.
pub fn attach(client: &mut impl GenericClient, table: &str, month: NaiveDate) -> Result<()> {
    client.execute("SELECT libctl_history_attach($1, $2)", &[&table, &month])?;
    Ok(())
}

/// The nightly's part: the partitions of this month and the next [`MONTHS_AHEAD`], for every
/// history table, so no move ever waits on making one. Run in a short transaction of its own
/// (making a partition locks its parent). Returns those made.
pub fn ensure_upcoming(client: &mut impl GenericClient, now: DateTime<Utc>) -> Result<Vec<String>> {
    let first = month_of(now);
    let mut made = Vec::new();
    for table in crate::db::PARTITIONED {
        for ahead in 0..=MONTHS_AHEAD {
            made.extend(ensure_partition(client, table, first + Months::new(ahead))?);
        }
    }
    Ok(made)
}

/// What `archive loans` / `archive audit` did, or with `confirm` unset would do.
#[derive(Debug, Clone, Serialize)]
pub struct Run {
    /// Loans or audit rows.
    pub kind: Kind,
    /// Rows ended (loans) or written (audit) before this move.
    pub before: DateTime<Utc>,
    /// Rows moved, or for a dry run the rows that would move.
    pub rows: i64,
    /// Batches committed.
    pub batches: u64,
    /// Partitions made for the move.
    pub partitions_made: Vec<String>,
    /// False for the count without `--confirm`.
    pub moved: bool,
    /// Seconds taken.
    pub seconds: f64,
}

/// The smallest UUID v7 of `at`'s millisecond: the walk's bounds.
fn id_floor(at: DateTime<Utc>) -> Uuid {
    crate::ids::id_from_parts(at, 0)
}

/// `archive loans --ended-before D` / `archive audit --before D`: moves in batches of
/// `batch` rows; without `confirm` only counts. Admin or `system`. `progress` hears the rows
/// moved so far after each batch.
pub fn run(
    client: &mut Client,
    ctx: &Ctx,
    kind: Kind,
    before: DateTime<Utc>,
    confirm: bool,
    batch: i32,
    mut progress: impl FnMut(i64),
) -> Result<Run> {
    ctx.require(Capability::Archive)?;
    if before > ctx.now() {
        return Err(Error::invalid(
            "invalid_date",
            format!("{before} is in the future: only the past is archived"),
        ));
    }
    if batch < 1 {
        return Err(Error::invalid(
            "invalid_input",
            "the batch size must be at least 1",
        ));
    }
    let started = Instant::now();
    // Rows whose own time is past the cut-off plus a day cannot qualify: the walk stops there.
    let upto = id_floor(before + Days::new(1));
    let (hot, count_sql) = match kind {
        Kind::Loans => (
            "loan",
            "SELECT count(*) FROM loan WHERE id < $2 AND returned_at < $1",
        ),
        Kind::Audit => (
            "audit_log",
            "SELECT count(*) FROM audit_log WHERE id < $2 AND at < $1",
        ),
    };
    if !confirm {
        let rows: i64 = client.query_one(count_sql, &[&before, &upto])?.get(0);
        return Ok(Run {
            kind,
            before,
            rows,
            batches: 0,
            partitions_made: Vec::new(),
            moved: false,
            seconds: started.elapsed().as_secs_f64(),
        });
    }
    // The partitions from the oldest row's month (its id's time, a month early for the loan
    // borrowed at the end of one month and returned in it) to the cut-off's.
    // `hot` is one of two fixed names.
    let oldest: Option<Uuid> = client
        .query_opt(&format!("SELECT id FROM {hot} ORDER BY id LIMIT 1"), &[])?
        .map(|r| r.get(0));
    let mut partitions_made = Vec::new();
    if let Some(oldest) = oldest {
        let first = oldest
            .get_timestamp()
            .map(|t| {
                let (secs, nanos) = t.to_unix();
                DateTime::from_timestamp(secs as i64, nanos).unwrap_or(before)
            })
            .unwrap_or(before)
            .min(before);
        let first = month_of(first) - Months::new(1);
        for table in kind.history_tables() {
            partitions_made.extend(ensure_partitions(client, table, first, month_of(before))?);
        }
    }
    let function = match kind {
        Kind::Loans => {
            "SELECT moved, last_id FROM libctl_archive_loans($1, $2, $3, $4, $5, $6, $7)"
        }
        Kind::Audit => {
            "SELECT moved, last_id FROM libctl_archive_audit($1, $2, $3, $4, $5, $6, $7)"
        }
    };
    let op = Operation::new(
        kind.action(),
        kind.history_tables()[0],
        json!({ "before": before }),
    );
    let mut after = Uuid::nil();
    let mut rows = 0i64;
    let mut batches = 0u64;
    loop {
        let (moved, last): (i64, Option<Uuid>) = audit::run(client, ctx, &op, |tx| {
            ctx.require(Capability::Archive)?;
            let row = tx.query_one(
                function,
                &[
                    &before,
                    &after,
                    &upto,
                    &batch,
                    &crate::ids::new_id(ctx.now()),
                    &ctx.actor.name,
                    &ctx.actor.role.as_str(),
                ],
            )?;
            Ok(Audited::written((row.get(0), row.get(1))))
        })?;
        let Some(last) = last else { break };
        after = last;
        rows += moved;
        batches += 1;
        progress(rows);
    }
    Ok(Run {
        kind,
        before,
        rows,
        batches,
        partitions_made,
        moved: true,
        seconds: started.elapsed().as_secs_f64(),
    })
}

/// What `archive export` wrote.
#[derive(Debug, Clone, Serialize)]
pub struct Export {
    /// The directory written, `<dir>/<partition>`.
    pub path: PathBuf,
    /// The partitions exported (a loan month carries its notices' month).
    pub tables: Vec<TableEntry>,
    /// Rows exported.
    pub rows: u64,
    /// True when the month was dropped after the export verified.
    pub dropped: bool,
}

/// `archive export --table T --month M --dir DIR [--drop]`: writes one month of history in
/// the backup format (one zstd binary COPY per partition, blake3 of each file, a manifest and
/// its checksum), reads it back to verify it, and with `drop` detaches and drops the month,
/// refusing if it no longer holds exactly what was written. Admin only (`system` may export
/// but not drop).
pub fn export(
    url: &str,
    ctx: &Ctx,
    table: &str,
    month: NaiveDate,
    dir: &Path,
    drop: bool,
) -> Result<Export> {
    ctx.require(if drop {
        Capability::Administer
    } else {
        Capability::Archive
    })?;
    let tables: &[&str] = match table {
        "loan_history" => &["loan_history", "notice_history"],
        "audit_history" => &["audit_history"],
        other => {
            return Err(Error::invalid(
                "invalid_input",
                format!(
                    "{other:?} is not an exportable history table (loan_history or audit_history)"
                ),
            ))
        }
    };
    let month = month.with_day(1).expect("day 1");
    let current = month_of(ctx.now());
    if month >= current {
        return Err(Error::invalid(
            "invalid_input",
            format!(
                "{} is not over yet: only past months are exported",
                month.format("%Y-%m")
            ),
        ));
    }
    let leaf = crate::db::partition_name(table, month);
    let mut client = crate::db::connect_current(url)?;
    let exists: bool = client
        .query_one("SELECT to_regclass($1) IS NOT NULL", &[&leaf])?
        .get(0);
    if !exists {
        return Err(Error::not_found(
            "history partition",
            format!("{table} {}", month.format("%Y-%m")),
        ));
    }
    let target = dir.join(&leaf);
    if target.exists() {
        return Err(Error::invalid(
            "invalid_input",
            format!("{} already exists", target.display()),
        ));
    }
    if !dir.exists() {
        backup::private_dir(dir)?;
    }
    let partial = dir.join(format!("{leaf}.partial"));
    if partial.exists() {
        std::fs::remove_dir_all(&partial)
            .map_err(|e| Error::io(format!("removing {}", partial.display()), e))?;
    }
    backup::private_dir(&partial)?;
    let written = (|| -> Result<Manifest> {
        let mut tx = client
            .build_transaction()
            .isolation_level(postgres::IsolationLevel::RepeatableRead)
            .read_only(true)
            .start()?;
        let schema_version: i32 = tx
            .query_one("SELECT max(version) FROM refinery_schema_history", &[])?
            .get(0);
        let mut entries = Vec::new();
        for t in tables {
            let name = crate::db::partition_name(t, month);
            let present: bool = tx
                .query_one("SELECT to_regclass($1) IS NOT NULL", &[&name])?
                .get(0);
            if present {
                entries.push(backup::dump_table(&mut tx, &name, &partial)?);
            }
        }
        tx.commit()?;
        let manifest = Manifest {
            format_version: backup::FORMAT_VERSION,
            schema_version,
            tool_version: env!("CARGO_PKG_VERSION").to_string(),
            created_at: Utc::now(),
            tables: entries,
        };
        backup::write_manifest(&partial, &manifest)?;
        backup::fsync_dir(&partial)?;
        verify_export(&partial)
            .map_err(|e| Error::Internal(format!("the export failed its own verification: {e}")))?;
        Ok(manifest)
    })();
    let manifest = match written {
        Ok(m) => m,
        Err(e) => {
            let _ = std::fs::remove_dir_all(&partial);
            return Err(e);
        }
    };
    std::fs::rename(&partial, &target)
        .map_err(|e| Error::io(format!("renaming {}", partial.display()), e))?;
    backup::fsync_dir(dir)?;
    let rows: u64 = manifest.tables.iter().map(|t| t.rows).sum();
    if drop {
        let expected = manifest
            .tables
            .iter()
            .find(|t| t.table == leaf)
            .map_or(0, |t| t.rows as i64);
        let op = Operation::new(
            "archive.drop",
            "history",
            json!({ "table": table, "month": month }),
        );
        audit::run(&mut client, ctx, &op, |tx| {
            ctx.require(Capability::Administer)?;
            tx.query_one(
                "SELECT libctl_history_drop($1, $2, $3, $4, $5, $6)",
                &[
                    &table,
                    &month,
                    &expected,
                    &crate::ids::new_id(ctx.now()),
                    &ctx.actor.name,
                    &ctx.actor.role.as_str(),
                ],
            )?;
            Ok(Audited::written(()))
        })?;
    }
    Ok(Export {
        path: target,
        tables: manifest.tables,
        rows,
        dropped: drop,
    })
}

/// Verifies an export directory: its manifest against its checksum, that it lists only
/// history partitions, and every file against its size, blake3 and row count. Returns the
/// manifest; an integrity error (exit 8) names each problem.
pub fn verify_export(dir: &Path) -> Result<Manifest> {
    let manifest = backup::read_manifest_unchecked(dir)?;
    let mut problems: Vec<String> = manifest
        .tables
        .iter()
        .filter(|e| crate::db::partition_of(&e.table).is_none())
        .map(|e| format!("{} is not a history partition", e.table))
        .collect();
    if problems.is_empty() {
        problems.extend(
            manifest
                .tables
                .iter()
                .flat_map(|e| backup::verify_table(dir, e)),
        );
    }
    if problems.is_empty() {
        Ok(manifest)
    } else {
        Err(Error::Integrity {
            violations: problems,
        })
    }
}

/// One partition of history, as `archive list` shows it.
#[derive(Debug, Clone, Serialize)]
pub struct Partition {
    /// The parent table.
    pub table: String,
    /// The month (its first day).
    pub month: NaiveDate,
    /// Its name.
    pub partition: String,
    /// Rows (the planner's estimate once analysed, else counted).
    pub rows: i64,
}

/// `archive list`: every history partition with its rows.
pub fn list(client: &mut impl GenericClient, ctx: &Ctx) -> Result<Vec<Partition>> {
    ctx.require(Capability::Reports)?;
    let rows = client.query(
        "SELECT p.relname::text, c.relname::text, c.reltuples::bigint
         FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid JOIN pg_class p ON p.oid = i.inhparent
         WHERE p.relname = ANY($1) ORDER BY p.relname, c.relname",
        &[&crate::db::PARTITIONED],
    )?;
    let mut out = Vec::new();
    for row in rows {
        let partition: String = row.get(1);
        let Some((parent, month)) = crate::db::partition_of(&partition) else {
            continue;
        };
        let estimate: i64 = row.get(2);
        let n: i64 = if estimate >= 0 {
            estimate
        } else {
            // Never analysed: counted. Names come from the catalog and match the pattern above.
            client
                .query_one(&format!("SELECT count(*) FROM {partition}"), &[])?
                .get(0)
        };
        out.push(Partition {
            table: parent.to_string(),
            month,
            partition,
            rows: n,
        });
    }
    Ok(out)
}
