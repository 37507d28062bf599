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
pub mod rows;

use std::io::Write;
use std::path::Path;
use std::time::Instant;

use chrono::{Datelike, NaiveDate};
use libcore::{Error, Refusal, Result};
use rand::SeedableRng;
use rayon::prelude::*;

use generate::{AuditRow, LoanRow, Month, Plan};

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
        };
        Ok(match name {
            "minimal" => s(5_000, 1_000, 3, 2_300, 12, 12),
            "load_test" => s(10_000, 2_000, 4, 7_500, 12, 12),
            "scaled_demo" => s(50_000, 5_000, 6, 25_000, 24, 24),
            "high_scale" => s(200_000, 60_000, 20, 4_000_000, 120, 16),
            // A tiny library for tests and demos that must run in a second.
            "tiny" => s(300, 120, 2, 600, 6, 6),
            other => {
                return Err(Error::invalid(
                    "invalid_input",
                    format!("unknown scenario {other:?}: minimal, load_test, scaled_demo, high_scale or tiny"),
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

/// Whether rows go out as binary COPY or CSV.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Encoding {
    Binary,
    Csv,
}

/// Encodes a slice of rows into one buffer in the chosen encoding.
pub(crate) fn encode<T>(
    encoding: Encoding,
    rows: &[T],
    binary: impl Fn(&mut Vec<u8>, &T),
    record: impl Fn(&T) -> Vec<String>,
) -> Vec<u8> {
    match encoding {
        Encoding::Binary => {
            let mut buf = Vec::with_capacity(rows.len() * 160);
            for row in rows {
                binary(&mut buf, row);
            }
            buf
        }
        Encoding::Csv => {
            let mut writer = csv::WriterBuilder::new()
                .has_headers(false)
                .from_writer(Vec::new());
            for row in rows {
                writer
                    .write_record(record(row))
                    .expect("writing CSV to memory");
            }
            writer.into_inner().expect("CSV buffer")
        }
    }
}

/// Where one table's rows go: a COPY stream or a CSV file.
pub(crate) trait TableOut {
    /// Writes an encoded chunk.
    fn write_chunk(&mut self, bytes: &[u8]) -> Result<()>;
    /// Ends the table.
    fn finish(self: Box<Self>) -> Result<()>;
}

/// Opens tables for writing.
pub(crate) trait Sink {
    fn encoding(&self) -> Encoding;
    /// Records that the rollup holds every month before `month` (database sinks only).
    fn rollup_complete_before(&mut self, _month: NaiveDate) -> Result<()> {
        Ok(())
    }
    fn open<'a>(
        &'a mut self,
        table: &'static str,
        columns: &[&str],
    ) -> Result<Box<dyn TableOut + 'a>>;
}

/// Counts and reports the rows of one table as they are written.
struct Counter<'o> {
    table: &'static str,
    rows: u64,
    observer: &'o dyn Observer,
}

impl Counter<'_> {
    fn add(&mut self, rows: usize) {
        self.rows += rows as u64;
        self.observer.rows_written(self.table, rows as u64);
    }
}

/// Per-month loan output once encoded: the bytes, the drafts still out, and late fines.
struct EncodedMonth {
    bytes: Vec<u8>,
    rows: usize,
    open: Vec<generate::OpenDraft>,
    fines: Vec<(u32, i64, chrono::DateTime<chrono::Utc>)>,
    /// Members who borrowed (returned loans of this month), sorted and deduplicated.
    borrowers: Vec<u32>,
    /// (month of return, late?) of every returned loan.
    returns: Vec<(NaiveDate, bool)>,
    /// Reviews of the month's returns.
    reviews: Vec<generate::ReviewRow>,
    /// The book of every returned loan, for `times_borrowed`.
    books_borrowed: Vec<u32>,
}

/// The monthly rollup, counted while the loans stream past.
#[derive(Default)]
struct Rollup {
    months: std::collections::BTreeMap<NaiveDate, MonthStats>,
}

#[derive(Default)]
struct MonthStats {
    loans: i64,
    returns: i64,
    late_returns: i64,
    borrowers: Vec<u32>,
}

fn month_of(t: chrono::DateTime<chrono::Utc>) -> NaiveDate {
    use chrono::Datelike;
    t.date_naive().with_day(1).expect("day 1")
}

impl Rollup {
    fn add_month(&mut self, month: &EncodedMonth, first_day: NaiveDate) {
        let stats = self.months.entry(first_day).or_default();
        stats.loans += month.rows as i64;
        stats.borrowers.extend(&month.borrowers);
        for (returned, late) in &month.returns {
            let s = self.months.entry(*returned).or_default();
            s.returns += 1;
            s.late_returns += i64::from(*late);
        }
    }

    fn add_open(&mut self, loans: &[LoanRow]) {
        for l in loans {
            let s = self.months.entry(month_of(l.borrowed_at)).or_default();
            s.loans += 1;
            s.borrowers.push(l.member);
        }
    }

    /// Complete months only: the current one is computed live by the report.
    fn rows(mut self, before: NaiveDate) -> Vec<(NaiveDate, i64, i64, i64, i64)> {
        self.months
            .iter_mut()
            .filter(|(m, _)| **m < before)
            .map(|(m, s)| {
                s.borrowers.sort_unstable();
                s.borrowers.dedup();
                (
                    *m,
                    s.loans,
                    s.returns,
                    s.late_returns,
                    s.borrowers.len() as i64,
                )
            })
            .collect()
    }
}

fn encode_month(plan: &Plan, encoding: Encoding, month: Month) -> EncodedMonth {
    let bytes = encode(
        encoding,
        &month.returned,
        |b, l| rows::encode_loan(b, plan, l),
        |l| rows::loan_record(plan, l),
    );
    let fines = month
        .returned
        .iter()
        .filter(|l| l.fine_cents > 0)
        .map(|l| (l.member, l.fine_cents, l.returned_at.expect("returned")))
        .collect();
    let mut borrowers: Vec<u32> = month.returned.iter().map(|l| l.member).collect();
    borrowers.sort_unstable();
    borrowers.dedup();
    let returns = month
        .returned
        .iter()
        .map(|l| {
            let back = l.returned_at.expect("returned");
            (month_of(back), back > l.due_at)
        })
        .collect();
    let books_borrowed = month.returned.iter().map(|l| l.book).collect();
    EncodedMonth {
        bytes,
        rows: month.returned.len(),
        open: month.open,
        fines,
        borrowers,
        returns,
        reviews: month.reviews,
        books_borrowed,
    }
}

/// Generates the whole dataset into `sink`. Returns rows per table.
fn generate_into(
    sink: &mut dyn Sink,
    options: &SeedOptions,
    observer: &dyn Observer,
    pool: &rayon::ThreadPool,
) -> Result<Vec<TableRows>> {
    let encoding = sink.encoding();
    let mut plan =
        pool.install(|| Plan::new(options.scenario.clone(), options.seed, options.as_of));
    let mut tables = Vec::new();
    let window = (pool.current_num_threads() * 2).max(2);

    // Small tables first.
    let closed = plan.closed_days.clone();
    write_table(
        sink,
        pool,
        "closed_day",
        &["day", "reason"],
        &closed,
        observer,
        &mut tables,
        |b, (day, why)| {
            copy::RowEncoder::new(b, 2).date(*day).text(why);
        },
        |(day, why)| vec![day.to_string(), why.to_string()],
    )?;
    let members = std::mem::take(&mut plan.members);
    write_table(
        sink,
        pool,
        "member",
        rows::MEMBER_COLUMNS,
        &members,
        observer,
        &mut tables,
        rows::encode_member,
        rows::member_record,
    )?;
    plan.members = members;

    // Loans: months generated in parallel windows on a producer thread while this thread
    // streams the previous window; the drafts still out are admitted at the end.
    let mut fines_by_member: Vec<(i64, Option<chrono::DateTime<chrono::Utc>>)> =
        vec![(0, None); plan.members.len()];
    let mut drafts = Vec::new();
    let mut rollup = Rollup::default();
    // One review per member and book: the first in time wins (months arrive in order).
    let mut reviewed: std::collections::HashSet<(u32, u32)> = Default::default();
    let mut reviews: Vec<generate::ReviewRow> = Vec::new();
    let mut times_borrowed = vec![0i64; plan.books.len()];
    let open_loans: Vec<LoanRow>;
    {
        observer.table_started("loan", plan.scenario.loans as u64);
        let mut out = sink.open("loan", rows::LOAN_COLUMNS)?;
        let mut counter = Counter {
            table: "loan",
            rows: 0,
            observer,
        };
        let plan_ref = &plan;
        let months = plan.months.len();
        std::thread::scope(|scope| -> Result<()> {
            let (tx, rx) = std::sync::mpsc::sync_channel::<Vec<EncodedMonth>>(1);
            scope.spawn(move || {
                for first in (0..months).step_by(window) {
                    let batch: Vec<EncodedMonth> = pool.install(|| {
                        (first..(first + window).min(months))
                            .into_par_iter()
                            .map(|m| encode_month(plan_ref, encoding, plan_ref.month(m)))
                            .collect()
                    });
                    if tx.send(batch).is_err() {
                        return;
                    }
                }
            });
            let mut index = 0;
            for batch in rx {
                for month in batch {
                    rollup.add_month(&month, plan_ref.months[index]);
                    index += 1;
                    out.write_chunk(&month.bytes)?;
                    counter.add(month.rows);
                    for (member, cents, at) in month.fines {
                        let entry = &mut fines_by_member[member as usize];
                        entry.0 += cents;
                        entry.1 = entry.1.max(Some(at));
                    }
                    drafts.extend(month.open);
                    for book in month.books_borrowed {
                        times_borrowed[book as usize] += 1;
                    }
                    for review in month.reviews {
                        if reviewed.insert((review.member, review.book)) {
                            reviews.push(review);
                        }
                    }
                }
            }
            Ok(())
        })?;
        let admitted = plan.admit_open_loans(drafts);
        rollup.add_open(&admitted);
        for loan in &admitted {
            times_borrowed[loan.book as usize] += 1;
        }
        let bytes = encode(
            encoding,
            &admitted,
            |b, l| rows::encode_loan(b, &plan, l),
            |l| rows::loan_record(&plan, l),
        );
        out.write_chunk(&bytes)?;
        counter.add(admitted.len());
        fail_point("loan")?;
        out.finish()?;
        observer.table_finished("loan", counter.rows);
        tables.push(TableRows {
            table: "loan".into(),
            rows: counter.rows,
        });
        open_loans = admitted;
    }
    for (book, n) in plan.books.iter_mut().zip(&times_borrowed) {
        book.times_borrowed = *n;
    }
    for review in &reviews {
        let book = &mut plan.books[review.book as usize];
        book.rating_count += 1;
        book.rating_sum += i64::from(review.rating);
    }
    let books = std::mem::take(&mut plan.books);
    write_table(
        sink,
        pool,
        "book",
        rows::BOOK_COLUMNS,
        &books,
        observer,
        &mut tables,
        rows::encode_book,
        rows::book_record,
    )?;
    plan.books = books;
    write_table(
        sink,
        pool,
        "review",
        rows::REVIEW_COLUMNS,
        &reviews,
        observer,
        &mut tables,
        |b, r| rows::encode_review(b, &plan, r),
        |r| rows::review_record(&plan, r),
    )?;
    drop(reviews);

    let complete_before = plan.end.with_day(1).expect("day 1");
    let months = rollup.rows(complete_before);
    write_table(
        sink,
        pool,
        "circulation_month",
        &[
            "month",
            "loans",
            "returns",
            "late_returns",
            "active_members",
        ],
        &months,
        observer,
        &mut tables,
        |b, (m, loans, returns, late, members)| {
            copy::RowEncoder::new(b, 5)
                .date(*m)
                .int8(*loans)
                .int8(*returns)
                .int8(*late)
                .int8(*members);
        },
        |(m, loans, returns, late, members)| {
            vec![
                m.to_string(),
                loans.to_string(),
                returns.to_string(),
                late.to_string(),
                members.to_string(),
            ]
        },
    )?;
    sink.rollup_complete_before(complete_before)?;

    let ledger = plan.ledger(&fines_by_member);
    let requests = plan.requests(&ledger, &fines_by_member);
    write_table(
        sink,
        pool,
        "request",
        rows::REQUEST_COLUMNS,
        &requests,
        observer,
        &mut tables,
        |b, r| rows::encode_request(b, &plan, r),
        |r| rows::request_record(&plan, r),
    )?;
    write_table(
        sink,
        pool,
        "account_entry",
        rows::ACCOUNT_COLUMNS,
        &ledger,
        observer,
        &mut tables,
        |b, a| rows::encode_account(b, &plan, a),
        |a| rows::account_record(&plan, a),
    )?;

    // Audit: the recent months' circulation again (regenerated, not kept in memory), the
    // loans still out, payments, and the injected bursts.
    {
        observer.table_started(
            "audit_log",
            (plan.scenario.loans as u64 * u64::from(plan.scenario.audit_months) * 2)
                / u64::from(plan.scenario.months.max(1)),
        );
        let mut out = sink.open("audit_log", rows::AUDIT_COLUMNS)?;
        let mut counter = Counter {
            table: "audit_log",
            rows: 0,
            observer,
        };
        let from = plan.audit_from_month;
        let months = plan.months.len();
        let plan_ref = &plan;
        let audit_of = |m: usize, loans: &[LoanRow]| -> Vec<AuditRow> {
            let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(plan_ref.seed ^ 0xA0D1);
            rng.set_stream(m as u64);
            loans
                .iter()
                .flat_map(|l| plan_ref.loan_audit(l, &mut rng))
                .flatten()
                .collect()
        };
        for first in (from..months).step_by(window) {
            let batch: Vec<(Vec<u8>, usize)> = pool.install(|| {
                (first..(first + window).min(months))
                    .into_par_iter()
                    .map(|m| {
                        let audit = audit_of(m, &plan_ref.month(m).returned);
                        (
                            encode(encoding, &audit, rows::encode_audit, rows::audit_record),
                            audit.len(),
                        )
                    })
                    .collect()
            });
            for (bytes, n) in batch {
                out.write_chunk(&bytes)?;
                counter.add(n);
            }
        }
        let audit_start = plan
            .months
            .get(from)
            .map(|d| d.and_hms_opt(0, 0, 0).expect("midnight").and_utc());
        let recent_open: Vec<LoanRow> = open_loans
            .into_iter()
            .filter(|l| Some(l.borrowed_at) >= audit_start)
            .collect();
        let mut extra = audit_of(months, &recent_open);
        extra.extend(
            ledger
                .iter()
                .filter(|a| Some(a.created_at) >= audit_start)
                .map(|a| AuditRow {
                    id: libcore::ids::id_from_parts(a.created_at, a.id.as_u128() ^ 1),
                    at: a.created_at,
                    actor: plan.members[plan.desk_staff[0] as usize].email.clone(),
                    actor_role: "librarian",
                    action: if a.kind == "payment" {
                        "fines.pay"
                    } else {
                        "request.approve"
                    },
                    entity_type: "account_entry",
                    entity_id: Some(a.id),
                    outcome: "ok",
                    details: format!("{{\"amount_cents\":{}}}", a.amount_cents),
                }),
        );
        extra.extend(plan.bursts());
        out.write_chunk(&encode(
            encoding,
            &extra,
            rows::encode_audit,
            rows::audit_record,
        ))?;
        counter.add(extra.len());
        fail_point("audit_log")?;
        out.finish()?;
        observer.table_finished("audit_log", counter.rows);
        tables.push(TableRows {
            table: "audit_log".into(),
            rows: counter.rows,
        });
    }
    Ok(tables)
}

#[allow(clippy::too_many_arguments)]
fn write_table<T: Sync>(
    sink: &mut dyn Sink,
    pool: &rayon::ThreadPool,
    table: &'static str,
    columns: &[&str],
    rows: &[T],
    observer: &dyn Observer,
    tables: &mut Vec<TableRows>,
    binary: impl Fn(&mut Vec<u8>, &T) + Sync,
    record: impl Fn(&T) -> Vec<String> + Sync,
) -> Result<()> {
    observer.table_started(table, rows.len() as u64);
    let encoding = sink.encoding();
    let mut out = sink.open(table, columns)?;
    let chunks: Vec<Vec<u8>> = pool.install(|| {
        rows.par_chunks(20_000)
            .map(|c| encode(encoding, c, &binary, &record))
            .collect()
    });
    for (bytes, chunk) in chunks.iter().zip(rows.chunks(20_000)) {
        out.write_chunk(bytes)?;
        observer.rows_written(table, chunk.len() as u64);
    }
    fail_point(table)?;
    out.finish()?;
    observer.table_finished(table, rows.len() as u64);
    tables.push(TableRows {
        table: table.to_string(),
        rows: rows.len() as u64,
    });
    Ok(())
}

/// Test-only failure injection: `LIBCTL_SEED_FAIL_AFTER=<table>` makes the seed fail right after
/// writing that table, to prove a failed seed leaves the database as it was.
fn fail_point(table: &str) -> Result<()> {
    if std::env::var("LIBCTL_SEED_FAIL_AFTER").is_ok_and(|t| t == table) {
        return Err(Error::Internal(format!(
            "injected failure after {table} (LIBCTL_SEED_FAIL_AFTER)"
        )));
    }
    Ok(())
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
    let generate_started = Instant::now();
    let tables = {
        let mut sink = load::CopySink { tx: &mut tx };
        generate_into(&mut sink, options, observer, &pool)?
    };
    let t = generate_started.elapsed().as_secs_f64();
    observer.phase_finished("generate + COPY", t);
    phases.push(Phase::new("generate + COPY", t));
    let keys_started = Instant::now();
    load::rebuild(&mut tx, &schema)?;
    libcore::playground::record_seed(
        &mut tx,
        ctx,
        serde_json::json!({
            "scenario": options.scenario.name, "seed": options.seed, "as_of": options.as_of,
            "replaced": replaced,
        }),
    )?;
    let t = keys_started.elapsed().as_secs_f64();
    observer.phase_finished("keys + indexes", t);
    phases.push(Phase::new("keys + indexes", t));
    fail_point("rebuild")?;
    tx.commit()?;
    let analyze_started = Instant::now();
    client.batch_execute("ANALYZE")?;
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

struct CsvSink<'d> {
    dir: &'d Path,
}

struct CsvTable {
    file: std::io::BufWriter<std::fs::File>,
    path: std::path::PathBuf,
}

impl TableOut for CsvTable {
    fn write_chunk(&mut self, bytes: &[u8]) -> Result<()> {
        self.file
            .write_all(bytes)
            .map_err(|e| Error::io(format!("writing {}", self.path.display()), e))
    }
    fn finish(mut self: Box<Self>) -> Result<()> {
        self.file
            .flush()
            .map_err(|e| Error::io(format!("writing {}", self.path.display()), e))
    }
}

impl Sink for CsvSink<'_> {
    fn encoding(&self) -> Encoding {
        Encoding::Csv
    }
    fn open<'a>(
        &'a mut self,
        table: &'static str,
        columns: &[&str],
    ) -> Result<Box<dyn TableOut + 'a>> {
        let path = self.dir.join(format!("{table}.csv"));
        let file = std::fs::File::create(&path)
            .map_err(|e| Error::io(format!("creating {}", path.display()), e))?;
        let mut file = std::io::BufWriter::new(file);
        writeln!(file, "{}", columns.join(","))
            .map_err(|e| Error::io(format!("writing {}", path.display()), e))?;
        Ok(Box::new(CsvTable { file, path }))
    }
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

struct MemorySink {
    tables: Vec<(&'static str, Vec<String>, Vec<u8>)>,
}

struct MemoryTable<'a> {
    bytes: &'a mut Vec<u8>,
}

impl TableOut for MemoryTable<'_> {
    fn write_chunk(&mut self, bytes: &[u8]) -> Result<()> {
        self.bytes.extend_from_slice(bytes);
        Ok(())
    }
    fn finish(self: Box<Self>) -> Result<()> {
        Ok(())
    }
}

impl Sink for MemorySink {
    fn encoding(&self) -> Encoding {
        Encoding::Binary
    }
    fn open<'a>(
        &'a mut self,
        table: &'static str,
        columns: &[&str],
    ) -> Result<Box<dyn TableOut + 'a>> {
        self.tables.push((
            table,
            columns.iter().map(|c| c.to_string()).collect(),
            Vec::new(),
        ));
        let bytes = &mut self.tables.last_mut().expect("just pushed").2;
        Ok(Box::new(MemoryTable { bytes }))
    }
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
    for (table, columns, bytes) in &sink.tables {
        let sql = format!(
            "COPY {table} ({}) FROM STDIN (FORMAT binary, FREEZE)",
            columns.join(", ")
        );
        let mut writer = tx.copy_in(&sql)?;
        for part in [copy::HEADER, bytes.as_slice(), copy::TRAILER] {
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
