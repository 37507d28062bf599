//! # seeder: realistic libctl datasets, fast, deterministic and atomic
//!
//! [`seed`] loads a scenario into a database in one transaction: it drops the keys, indexes
//! and foreign keys of the seeded tables, truncates them, streams every table in with binary
//! `COPY … FREEZE` while rayon generates the next chunks, rebuilds the keys and indexes, and
//! commits. A failure or a `kill -9` anywhere before COMMIT leaves the database as it was.
//! [`write_csv`] writes the same rows as one CSV file per table instead.
//!
//! Rows are a pure function of (scenario, seed, as-of date): see [`generate`].
#![warn(missing_docs)]

pub use libcore::binary_copy as copy;
pub mod generate;
mod load;
pub mod model;
mod phases;
pub mod rows;
mod sinks;

use std::io::Write;
use std::path::Path;
use std::time::Instant;

use chrono::NaiveDate;
use libcore::{Error, Refusal, Result};

use phases::{fail_point, generate_into};
use sinks::{CsvSink, MemorySink};

/// The size and shape of a generated library (SPEC §12).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Scenario {
    /// Its name.
    pub name: String,
    /// Books.
    pub books: usize,
    /// Members (besides staff).
    pub members: usize,
    /// Desk librarians (besides the admin).
    pub librarians: usize,
    /// Target number of loans.
    pub loans: usize,
    /// Months of history.
    pub months: u32,
    /// The most recent months whose circulation is in the audit log.
    pub audit_months: u32,
    /// Loans that ended over `libcore::archive::LOAN_MONTHS` ago, and audit rows older than
    /// `AUDIT_MONTHS`, go straight into their monthly history partitions, as `archive` would
    /// have moved them (database seeds only).
    pub history: bool,
}

impl Scenario {
    /// The named scenarios.
    pub fn named(name: &str) -> Result<Scenario> {
        let s = |books, members, librarians, loans, months, audit_months| Scenario {
            name: name.to_string(),
            books,
            members,
            librarians,
            loans,
            months,
            audit_months,
            history: false,
        };
        Ok(match name {
            "minimal" => s(5_000, 1_000, 3, 2_300, 12, 12),
            "load_test" => s(10_000, 2_000, 4, 7_500, 12, 12),
            "scaled_demo" => s(50_000, 5_000, 6, 25_000, 24, 24),
            "high_scale" => s(200_000, 60_000, 20, 4_000_000, 120, 16),
            // Ten high_scale libraries in one database, their history already partitioned.
            "consortium" => Scenario {
                history: true,
                ..s(2_000_000, 600_000, 200, 40_000_000, 120, 16)
            },
            // A tiny library for tests and demos that must run in a second.
            "tiny" => s(300, 120, 2, 600, 6, 6),
            // The consortium's shape in miniature: three years, the first in history.
            "tiny_consortium" => Scenario {
                history: true,
                ..s(600, 240, 2, 3_000, 36, 16)
            },
            other => {
                return Err(Error::invalid(
                    "invalid_input",
                    format!("unknown scenario {other:?}: minimal, load_test, scaled_demo, high_scale, consortium, tiny or tiny_consortium"),
                ))
            }
        })
    }
}

/// How to seed.
#[derive(Debug, Clone)]
pub struct SeedOptions {
    /// Scenario.
    pub scenario: Scenario,
    /// Seed of every random stream.
    pub seed: u64,
    /// The history ends at the start of this day.
    pub as_of: NaiveDate,
    /// Worker threads for generation.
    pub jobs: usize,
    /// Replace a non-empty database.
    pub replace: bool,
    /// Replace it even when it holds a library rather than a playground (admins only); see
    /// `libcore::playground`.
    pub confirm: bool,
}

/// Progress callbacks, so the binary can draw bars on a terminal and stay quiet in cron.
pub trait Observer: Sync {
    /// A table starts loading; `expected` rows is an estimate.
    fn table_started(&self, _table: &str, _expected: u64) {}
    /// `rows` more rows of `table` were written.
    fn rows_written(&self, _table: &str, _rows: u64) {}
    /// A table is complete.
    fn table_finished(&self, _table: &str, _rows: u64) {}
    /// A phase (generate and copy, keys and indexes, analyze) finished after `seconds`.
    fn phase_finished(&self, _phase: &str, _seconds: f64) {}
}

/// An observer that reports nothing.
pub struct Silent;
impl Observer for Silent {}

/// What a seed did.
#[derive(Debug, Clone, serde::Serialize)]
pub struct SeedSummary {
    /// Scenario name.
    pub scenario: String,
    /// Seed.
    pub seed: u64,
    /// End of the history.
    pub as_of: NaiveDate,
    /// Rows per table.
    pub tables: Vec<TableRows>,
    /// Total rows.
    pub rows: u64,
    /// Seconds per phase.
    pub phases: Vec<Phase>,
    /// Wall-clock seconds end to end.
    pub seconds: f64,
    /// Rows per second end to end.
    pub rows_per_sec: f64,
    /// Peak resident memory of the process, MiB.
    pub peak_rss_mib: f64,
}

/// Rows of one table.
#[derive(Debug, Clone, serde::Serialize)]
pub struct TableRows {
    /// Table.
    pub table: String,
    /// Rows.
    pub rows: u64,
}

/// Duration of one phase.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Phase {
    /// Name.
    pub phase: String,
    /// Seconds.
    pub seconds: f64,
}

impl Phase {
    /// A phase and its duration, to the millisecond.
    pub fn new(phase: &str, seconds: f64) -> Phase {
        Phase {
            phase: phase.to_string(),
            seconds: (seconds * 1000.0).round() / 1000.0,
        }
    }
}

/// Peak resident set size of this process in MiB (Linux `VmHWM`), 0 where unknown.
pub fn peak_rss_mib() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<f64>().ok())
        })
        .map_or(0.0, |kb| kb / 1024.0)
}

fn thread_pool(jobs: usize) -> Result<rayon::ThreadPool> {
    rayon::ThreadPoolBuilder::new()
        .num_threads(jobs.max(1))
        .build()
        .map_err(|e| Error::Internal(format!("cannot start {jobs} worker threads: {e}")))
}

/// Seeds a migrated database atomically. Refuses a non-empty one unless `replace`.
pub fn seed(
    client: &mut libcore::Client,
    ctx: &libcore::actor::Ctx,
    options: &SeedOptions,
    observer: &dyn Observer,
) -> Result<SeedSummary> {
    let started = Instant::now();
    let today = chrono::Utc::now().date_naive();
    if options.as_of > today {
        return Err(Error::invalid(
            "future_as_of",
            format!(
                "--as-of {} is after today ({today}, UTC): a seed writes history, and the future has none",
                options.as_of
            ),
        ));
    }
    let pool = thread_pool(options.jobs)?;
    let mut phases = Vec::new();
    let mut tx = client.transaction()?;
    let replaced = load::prepare(&mut tx, ctx, options.replace, options.confirm)?;
    let schema = load::capture_and_drop(&mut tx)?;
    load::truncate(&mut tx)?;
    load::write_settings(&mut tx, &generate::scenario_rules())?;
    // History goes into months made detached in this transaction (so COPY can FREEZE into
    // them), attached once loaded: ATTACH builds each month's indexes from its parent's.
    let history = options
        .scenario
        .history
        .then(|| load::history_months(&options.scenario, options.as_of));
    if let Some(months) = &history {
        load::make_history_partitions(&mut tx, months)?;
    }
    let generate_started = Instant::now();
    let tables = {
        let mut sink = sinks::CopySink { tx: &mut tx };
        generate_into(&mut sink, options, observer, &pool)?
    };
    let t = generate_started.elapsed().as_secs_f64();
    observer.phase_finished("generate + COPY", t);
    phases.push(Phase::new("generate + COPY", t));
    let keys_started = Instant::now();
    load::rebuild(&mut tx, &schema)?;
    if let Some(months) = &history {
        load::attach_history_partitions(&mut tx, months)?;
    }
    libcore::items::catch_up_barcodes(&mut tx)?;
    libcore::playground::record_seed(
        &mut tx,
        ctx,
        serde_json::json!({
            "scenario": options.scenario.name, "seed": options.seed, "as_of": options.as_of,
            "replaced": replaced,
        }),
    )?;
    libcore::tally::reset_in(&mut tx)?;
    let t = keys_started.elapsed().as_secs_f64();
    observer.phase_finished("keys + indexes", t);
    phases.push(Phase::new("keys + indexes", t));
    fail_point("rebuild")?;
    tx.commit()?;
    let analyze_started = Instant::now();
    load::analyze(client, &tables)?;
    let t = analyze_started.elapsed().as_secs_f64();
    observer.phase_finished("analyze", t);
    phases.push(Phase::new("analyze", t));
    Ok(summary(options, tables, phases, started))
}

fn summary(
    options: &SeedOptions,
    tables: Vec<TableRows>,
    phases: Vec<Phase>,
    started: Instant,
) -> SeedSummary {
    let rows: u64 = tables.iter().map(|t| t.rows).sum();
    let seconds = started.elapsed().as_secs_f64();
    SeedSummary {
        scenario: options.scenario.name.clone(),
        seed: options.seed,
        as_of: options.as_of,
        tables,
        rows,
        phases,
        seconds,
        rows_per_sec: rows as f64 / seconds.max(1e-9),
        peak_rss_mib: peak_rss_mib(),
    }
}

/// Writes the dataset as `<table>.csv` files (with headers) into `dir` instead of loading it.
pub fn write_csv(
    dir: &Path,
    options: &SeedOptions,
    observer: &dyn Observer,
) -> Result<SeedSummary> {
    let started = Instant::now();
    std::fs::create_dir_all(dir)
        .map_err(|e| Error::io(format!("creating {}", dir.display()), e))?;
    let pool = thread_pool(options.jobs)?;
    let mut sink = CsvSink { dir };
    let tables = generate_into(&mut sink, options, observer, &pool)?;
    let rules = generate::scenario_rules();
    let mut w = csv::Writer::from_path(dir.join("circulation_rule.csv"))
        .map_err(|e| Error::Internal(format!("writing circulation_rule.csv: {e}")))?;
    let header = [
        "category",
        "loan_days",
        "max_active_loans",
        "max_renewals",
        "fine_cents_per_day",
        "grace_days",
        "max_fine_cents_per_loan",
        "block_fine_cents",
        "block_overdue_days",
        "max_holds",
        "hold_pickup_days",
        "courtesy_days",
        "expiry_notice_days",
        "lost_after_days",
        "processing_fee_cents",
        "lost_refund_on_return",
        "max_claims_returned",
        "auto_renew",
    ];
    let mut records = vec![header.iter().map(|s| s.to_string()).collect::<Vec<_>>()];
    records.extend(rules.iter().map(|r| {
        vec![
            r.category.clone(),
            r.loan_days.to_string(),
            r.max_active_loans.to_string(),
            r.max_renewals.to_string(),
            r.fine_cents_per_day.to_string(),
            r.grace_days.to_string(),
            r.max_fine_cents_per_loan.to_string(),
            r.block_fine_cents.to_string(),
            r.block_overdue_days.to_string(),
            r.max_holds.to_string(),
            r.hold_pickup_days.to_string(),
            r.courtesy_days.to_string(),
            r.expiry_notice_days.to_string(),
            r.lost_after_days.to_string(),
            r.processing_fee_cents.to_string(),
            r.lost_refund_on_return.to_string(),
            r.max_claims_returned.to_string(),
            r.auto_renew.to_string(),
        ]
    }));
    for record in records {
        w.write_record(record)
            .map_err(|e| Error::Internal(format!("writing circulation_rule.csv: {e}")))?;
    }
    w.flush()
        .map_err(|e| Error::io("writing circulation_rule.csv", e))?;
    Ok(summary(options, tables, Vec::new(), started))
}

/// Refuses a database that already holds circulation data.
pub(crate) fn not_empty() -> Error {
    Error::refused(
        Refusal::DatabaseNotEmpty,
        "the database already holds books, loans or members; pass --replace to replace them atomically",
    )
}

/// The load limit of SPEC §14: the same rows, generated beforehand (not timed), loaded by raw
/// binary COPY into the same bare tables, then the same keys and indexes built.
#[derive(Debug, Clone, serde::Serialize)]
pub struct LoadLimit {
    /// Rows loaded.
    pub rows: u64,
    /// Seconds of COPY.
    pub copy_seconds: f64,
    /// Seconds of key and index builds.
    pub index_seconds: f64,
    /// Total seconds.
    pub seconds: f64,
    /// Rows per second.
    pub rows_per_sec: f64,
}

/// Measures the load limit on a migrated, empty scratch database.
pub fn measure_load_limit(
    client: &mut libcore::Client,
    options: &SeedOptions,
) -> Result<LoadLimit> {
    let pool = thread_pool(options.jobs)?;
    let mut sink = MemorySink { tables: Vec::new() };
    let tables = generate_into(&mut sink, options, &Silent, &pool)?;
    let rows = tables.iter().map(|t| t.rows).sum();
    let mut tx = client.transaction()?;
    load::prepare(&mut tx, &libcore::actor::Ctx::system(), true, false)?;
    let schema = load::capture_and_drop(&mut tx)?;
    load::truncate(&mut tx)?;
    load::write_settings(&mut tx, &generate::scenario_rules())?;
    let started = Instant::now();
    for (table, columns, chunks) in &sink.tables {
        let sql = format!(
            "COPY {table} ({}) FROM STDIN (FORMAT binary, FREEZE)",
            columns.join(", ")
        );
        let mut writer = tx.copy_in(&sql)?;
        let parts = std::iter::once(copy::HEADER)
            .chain(chunks.iter().map(Vec::as_slice))
            .chain(std::iter::once(copy::TRAILER));
        for part in parts {
            writer
                .write_all(part)
                .map_err(|e| Error::io(format!("COPY into {table}"), e))?;
        }
        writer.finish()?;
    }
    let copy_seconds = started.elapsed().as_secs_f64();
    let index_started = Instant::now();
    load::rebuild(&mut tx, &schema)?;
    let index_seconds = index_started.elapsed().as_secs_f64();
    tx.commit()?;
    let seconds = started.elapsed().as_secs_f64();
    Ok(LoadLimit {
        rows,
        copy_seconds,
        index_seconds,
        seconds,
        rows_per_sec: rows as f64 / seconds.max(1e-9),
    })
}
