//! The database side of a seed, all inside the caller's one transaction: refuse or replace
//! existing data, capture and drop keys and indexes, truncate, COPY … FREEZE, rebuild.
//!
//! Every DDL statement replayed here comes from the catalog (`pg_get_constraintdef`,
//! `pg_indexes`) of the migrated schema, so the seeder never restates the schema and cannot
//! drift from the migrations.

use libcore::Result;
use postgres::Transaction;

/// Tables the seeder fills (or empties), children first.
pub(crate) const SEEDED_TABLES: &[&str] = &[
    "hold",
    "loan",
    "item",
    "account_entry",
    "audit_log",
    "book",
    "member",
    "closed_day",
    "circulation_month",
    "request",
    "review",
];

/// Tables later migrations add that reference seeded data; emptied too when they exist.
const DEPENDENT_TABLES: &[&str] = &[
    "notice",
    "review",
    "recommendation",
    "member_login",
    "audit_seal",
    "notice_history",
    "loan_history",
    "audit_history",
    "member_archived_fines",
    "book_dropped_loans",
];

/// Settings for a bulk load inside this transaction only.
/// Returns whether the database held data that the seed replaces; on a library (not a
/// playground) that needs an admin and `confirm`.
pub(crate) fn prepare(
    tx: &mut Transaction<'_>,
    ctx: &libcore::actor::Ctx,
    replace: bool,
    confirm: bool,
) -> Result<bool> {
    tx.batch_execute(
        "SET LOCAL maintenance_work_mem = '1GB';
         SET LOCAL synchronous_commit = off;
         SET LOCAL libctl.audit_maintenance = 'on';
         SET LOCAL lock_timeout = '30s';",
    )?;
    let has_data: bool = tx
        .query_one(
            "SELECT EXISTS (SELECT 1 FROM book) OR EXISTS (SELECT 1 FROM loan) OR (SELECT count(*) FROM member) > 1",
            &[],
        )?
        .get(0);
    if has_data && !replace {
        return Err(crate::not_empty());
    }
    if has_data {
        libcore::playground::authorise(tx, ctx, confirm, "replace it with a seed")?;
    }
    Ok(has_data)
}

fn seeded_and_dependent(tx: &mut Transaction<'_>) -> Result<Vec<String>> {
    let mut tables: Vec<String> = SEEDED_TABLES.iter().map(|t| t.to_string()).collect();
    for t in DEPENDENT_TABLES {
        let exists: bool = tx
            .query_one("SELECT to_regclass($1) IS NOT NULL", &[t])?
            .get(0);
        if exists {
            tables.push(t.to_string());
        }
    }
    Ok(tables)
}

/// Records and drops the keys, indexes and foreign keys of every seeded and dependent table.
pub(crate) fn capture_and_drop(tx: &mut Transaction<'_>) -> Result<libcore::bulk::Schema> {
    let tables = seeded_and_dependent(tx)?;
    libcore::bulk::capture_and_drop(tx, &tables)
}

/// Empties every seeded and dependent table (in this transaction, so COPY can FREEZE).
pub(crate) fn truncate(tx: &mut Transaction<'_>) -> Result<()> {
    let tables = seeded_and_dependent(tx)?;
    // Names come from the constant lists above, never from input.
    tx.batch_execute(&format!("TRUNCATE {}", tables.join(", ")))?;
    Ok(())
}

/// The seeded library's rules and time zone.
pub(crate) fn write_settings(
    tx: &mut Transaction<'_>,
    rules: &[libcore::policy::CirculationRule],
) -> Result<()> {
    libcore::policy::replace_rules_in(tx, rules)?;
    libcore::policy::set_timezone_in(tx, chrono_tz::UTC)
}

/// Rebuilds keys, then indexes, then foreign keys.
pub(crate) fn rebuild(tx: &mut Transaction<'_>, schema: &libcore::bulk::Schema) -> Result<()> {
    libcore::bulk::rebuild(tx, schema)
}

/// The history months a seed of `scenario` as of `as_of` writes into: loans from the first
/// simulated month to the loan cut-off's, audit rows likewise to the audit cut-off's.
pub(crate) fn history_months(
    scenario: &crate::Scenario,
    as_of: chrono::NaiveDate,
) -> Vec<(&'static str, chrono::NaiveDate)> {
    let cuts = crate::phases::Cuts::new(as_of);
    // A month early: the first month's loans may have been borrowed just before it began.
    let first = as_of - chrono::Months::new(scenario.months + 1);
    let mut months = Vec::new();
    for table in ["loan_history", "audit_history"] {
        months.extend(cuts.months(table, first).into_iter().map(|m| (table, m)));
    }
    months
}

/// Makes each history month as a plain table with no index, in the seed's transaction.
pub(crate) fn make_history_partitions(
    tx: &mut Transaction<'_>,
    months: &[(&'static str, chrono::NaiveDate)],
) -> Result<()> {
    for (table, month) in months {
        libcore::archive::make_detached(tx, table, *month)?;
    }
    Ok(())
}

/// Attaches the loaded months to their parents.
pub(crate) fn attach_history_partitions(
    tx: &mut Transaction<'_>,
    months: &[(&'static str, chrono::NaiveDate)],
) -> Result<()> {
    for (table, month) in months {
        libcore::archive::attach(tx, table, *month)?;
    }
    Ok(())
}

/// Analyzes the tables the seed wrote rows into, and the settings; the ones it left empty stay
/// never analyzed (see `libcore::bulk::analyze`).
pub(crate) fn analyze(client: &mut libcore::Client, tables: &[crate::TableRows]) -> Result<()> {
    let filled = tables
        .iter()
        .filter(|t| t.rows > 0)
        .map(|t| t.table.as_str());
    libcore::bulk::analyze(
        client,
        ["library_setting", "circulation_rule"]
            .into_iter()
            .chain(filled),
    )
}
