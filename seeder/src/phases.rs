//! The phases of one generation run, in the order their tables can be written:
//!
//! 1. calendar and people: closed days and members;
//! 2. loans: months generated in parallel windows (a month per thread), lent to items in
//!    one pass in borrow order, encoded in parallel, while the previous window streams out,
//!    counting as they pass everything later tables need (fines, borrowers, ratings); the
//!    reviews are encoded as they are drawn and spilled to a temporary file;
//! 3. catalogue: books (with their borrow counts, ratings and copies on the shelf), their
//!    items (a window of titles at a time), the holds on them (which take some copies onto
//!    the hold shelf), and the spilled reviews;
//! 4. ledger: fines, payments and waivers, and the requests that produced them;
//! 5. rollup: the monthly circulation figures of complete months;
//! 6. audit history: the recent months regenerated, a chunk of loans per thread at a time.
//!
//! What stays in memory for the whole run is per entity (a book, a member, an item) and a
//! few bytes to a hundred each; rows of the large tables are in memory a window at a time.

use std::collections::{BTreeMap, HashMap, HashSet};

use chrono::{DateTime, Datelike, NaiveDate, Utc};
use libcore::{Error, Result};
use rand::SeedableRng;
use rayon::prelude::*;

use crate::copy;
use crate::generate::{self, AccountRow, AuditRow, LoanRow, Month, Plan, Shelves};
use crate::rows;
use crate::sinks::{encode, Encoding, Sink, TableOut};
use crate::{Observer, SeedOptions, TableRows};

/// Generates the whole dataset into `sink`. Returns rows per table.
pub(crate) fn generate_into(
    sink: &mut dyn Sink,
    options: &SeedOptions,
    observer: &dyn Observer,
    pool: &rayon::ThreadPool,
) -> Result<Vec<TableRows>> {
    let mut plan =
        pool.install(|| Plan::new(options.scenario.clone(), options.seed, options.as_of));
    let cuts = (options.scenario.history && sink.partitions()).then(|| Cuts::new(options.as_of));
    let mut run = Run {
        cuts,
        encoding: sink.encoding(),
        sink,
        pool,
        observer,
        window: pool.current_num_threads().max(1),
        tables: Vec::new(),
    };
    calendar_and_people(&mut run, &mut plan)?;
    let mut loans = loans(&mut run, &mut plan)?;
    let lost_prices = catalogue(&mut run, &mut plan, &mut loans)?;
    let ledger = ledger(&mut run, &plan, &loans, &lost_prices)?;
    rollup(&mut run, &plan, loans.rollup)?;
    audit_history(&mut run, &plan, loans.open, &loans.lent_items, &ledger)?;
    Ok(run.tables)
}

/// Where history starts, for a seed that writes it into monthly partitions (`--history`):
/// what `archive loans` and `archive audit` with their defaults would move on the as-of day.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Cuts {
    loans: DateTime<Utc>,
    audit: DateTime<Utc>,
}

impl Cuts {
    pub(crate) fn new(as_of: NaiveDate) -> Cuts {
        let midnight = as_of.and_hms_opt(0, 0, 0).expect("midnight").and_utc();
        Cuts {
            loans: libcore::archive::months_ago(midnight, libcore::archive::LOAN_MONTHS),
            audit: libcore::archive::months_ago(midnight, libcore::archive::AUDIT_MONTHS),
        }
    }

    /// The history month of a loan, or `None` when it stays hot.
    fn loan(&self, l: &LoanRow) -> Option<NaiveDate> {
        l.returned_at
            .filter(|r| *r < self.loans)
            .map(libcore::archive::month_of)
    }

    /// The history month of an audit row, or `None` when it stays hot.
    fn audit(&self, at: DateTime<Utc>) -> Option<NaiveDate> {
        (at < self.audit).then(|| libcore::archive::month_of(at))
    }

    /// The months whose partitions a seed from `first` (the first simulated day) needs.
    pub(crate) fn months(&self, table: &str, first: NaiveDate) -> Vec<NaiveDate> {
        let last = libcore::archive::month_of(if table == "audit_history" {
            self.audit
        } else {
            self.loans
        });
        let mut month =
            libcore::archive::month_of(first.and_hms_opt(0, 0, 0).expect("midnight").and_utc());
        let mut out = Vec::new();
        while month <= last {
            out.push(month);
            month = month + chrono::Months::new(1);
        }
        out
    }
}

/// Rows of one table, or of its history month, encoded.
struct Part {
    /// `None` for the hot table, else the history month.
    leaf: Option<NaiveDate>,
    bytes: Vec<u8>,
    rows: usize,
}

/// Splits rows between the hot table and their history months, encoding each group.
fn parts<T>(
    encoding: Encoding,
    rows: &[T],
    leaf: impl Fn(&T) -> Option<NaiveDate>,
    binary: impl Fn(&mut Vec<u8>, &T),
    record: impl Fn(&T) -> Vec<String>,
) -> Vec<Part> {
    let mut groups: BTreeMap<Option<NaiveDate>, Vec<&T>> = BTreeMap::new();
    for row in rows {
        groups.entry(leaf(row)).or_default().push(row);
    }
    groups
        .into_iter()
        .map(|(leaf, group)| Part {
            leaf,
            bytes: encode(encoding, &group, |b, r| binary(b, r), |r| record(r)),
            rows: group.len(),
        })
        .collect()
}

/// A table's output: one COPY for the whole table, or, with history partitions, one COPY per
/// part into the hot table or the part's month.
enum Out<'a> {
    One(Box<dyn TableOut + 'a>),
    Routed {
        sink: &'a mut dyn Sink,
        hot: &'static str,
        history: &'static str,
        columns: &'static [&'static str],
    },
}

impl<'a> Out<'a> {
    fn open(
        sink: &'a mut dyn Sink,
        routed: bool,
        hot: &'static str,
        history: &'static str,
        columns: &'static [&'static str],
    ) -> Result<Out<'a>> {
        Ok(if routed {
            Out::Routed {
                sink,
                hot,
                history,
                columns,
            }
        } else {
            Out::One(sink.open(hot, columns)?)
        })
    }

    fn write(&mut self, part: &Part) -> Result<()> {
        match self {
            Out::One(out) => out.write_chunk(&part.bytes),
            Out::Routed {
                sink,
                hot,
                history,
                columns,
            } => {
                if part.rows == 0 {
                    return Ok(());
                }
                let table = match part.leaf {
                    None => hot.to_string(),
                    Some(month) => libcore::db::partition_name(history, month),
                };
                let mut out = sink.open(&table, columns)?;
                out.write_chunk(&part.bytes)?;
                out.finish()
            }
        }
    }

    fn finish(self) -> Result<()> {
        match self {
            Out::One(out) => out.finish(),
            Out::Routed { .. } => Ok(()),
        }
    }
}

/// Where one run writes, who watches it, and the tables written so far.
struct Run<'r> {
    /// Set when history goes into monthly partitions.
    cuts: Option<Cuts>,
    sink: &'r mut dyn Sink,
    pool: &'r rayon::ThreadPool,
    observer: &'r dyn Observer,
    encoding: Encoding,
    /// Months generated per parallel batch: one per thread, since a month of the largest
    /// scenario is a third of a million loans.
    window: usize,
    tables: Vec<TableRows>,
}

impl Run<'_> {
    /// Writes a table held in memory, encoding its chunks in parallel a few per thread at a
    /// time, so the encoded bytes in memory stay a few megabytes whatever the table's size.
    fn table<T: Sync>(
        &mut self,
        table: &'static str,
        columns: &[&str],
        rows: &[T],
        binary: impl Fn(&mut Vec<u8>, &T) + Sync,
        record: impl Fn(&T) -> Vec<String> + Sync,
    ) -> Result<()> {
        self.observer.table_started(table, rows.len() as u64);
        let mut out = self.sink.open(table, columns)?;
        let writer = RowWriter {
            table,
            pool: self.pool,
            encoding: self.encoding,
            observer: self.observer,
        };
        writer.write(&mut *out, rows, &binary, &record)?;
        fail_point(table)?;
        out.finish()?;
        self.finished(table, rows.len() as u64);
        Ok(())
    }

    fn finished(&mut self, table: &'static str, rows: u64) {
        self.observer.table_finished(table, rows);
        self.tables.push(TableRows {
            table: table.to_string(),
            rows,
        });
    }
}

/// Encodes rows in parallel chunks, a few per thread at a time, and writes them in order.
struct RowWriter<'r> {
    table: &'static str,
    pool: &'r rayon::ThreadPool,
    encoding: Encoding,
    observer: &'r dyn Observer,
}

impl RowWriter<'_> {
    fn write<T: Sync>(
        &self,
        out: &mut dyn TableOut,
        rows: &[T],
        binary: &(impl Fn(&mut Vec<u8>, &T) + Sync),
        record: &(impl Fn(&T) -> Vec<String> + Sync),
    ) -> Result<()> {
        const CHUNK: usize = 20_000;
        let encoding = self.encoding;
        let batch = CHUNK * 2 * self.pool.current_num_threads().max(1);
        for group in rows.chunks(batch) {
            let chunks: Vec<Vec<u8>> = self.pool.install(|| {
                group
                    .par_chunks(CHUNK)
                    .map(|c| encode(encoding, c, binary, record))
                    .collect()
            });
            for (bytes, chunk) in chunks.iter().zip(group.chunks(CHUNK)) {
                out.write_chunk(bytes)?;
                self.observer.rows_written(self.table, chunk.len() as u64);
            }
        }
        Ok(())
    }
}

/// Encoded rows of a table that cannot be written yet (another table's COPY is open, or its
/// rows must follow a table not yet written), kept in an anonymous temporary file rather
/// than in memory, a segment per push.
struct Spill {
    file: std::io::BufWriter<std::fs::File>,
    /// (bytes, rows) of each segment, in order.
    segments: Vec<(usize, u64)>,
}

impl Spill {
    fn new() -> Result<Spill> {
        let file = tempfile::tempfile()
            .map_err(|e| Error::io("creating the seed's spill file".to_string(), e))?;
        Ok(Spill {
            file: std::io::BufWriter::with_capacity(1 << 20, file),
            segments: Vec::new(),
        })
    }

    fn push(&mut self, bytes: &[u8], rows: usize) -> Result<()> {
        use std::io::Write;
        self.file
            .write_all(bytes)
            .map_err(|e| Error::io("writing the seed's spill file".to_string(), e))?;
        self.segments.push((bytes.len(), rows as u64));
        Ok(())
    }

    fn rows(&self) -> u64 {
        self.segments.iter().map(|(_, rows)| rows).sum()
    }

    /// Copies the segments into `table`, one at a time.
    fn write_into(self, run: &mut Run<'_>, table: &'static str, columns: &[&str]) -> Result<()> {
        use std::io::{Read, Seek};
        let failed = |e| Error::io("reading the seed's spill file".to_string(), e);
        let rows = self.rows();
        let mut file = self.file.into_inner().map_err(|e| failed(e.into_error()))?;
        file.rewind().map_err(failed)?;
        run.observer.table_started(table, rows);
        let mut out = run.sink.open(table, columns)?;
        let mut buf = Vec::new();
        for (bytes, segment_rows) in self.segments {
            buf.resize(bytes, 0);
            file.read_exact(&mut buf).map_err(failed)?;
            out.write_chunk(&buf)?;
            run.observer.rows_written(table, segment_rows);
        }
        fail_point(table)?;
        out.finish()?;
        run.finished(table, rows);
        Ok(())
    }
}

/// Phase 1: closed days and members, which every later phase refers to.
fn calendar_and_people(run: &mut Run<'_>, plan: &mut Plan) -> Result<()> {
    run.table(
        "closed_day",
        &["day", "reason"],
        &plan.closed_days,
        |b, (day, why)| {
            copy::RowEncoder::new(b, 2).date(*day).text(why);
        },
        |(day, why)| vec![day.to_string(), why.to_string()],
    )?;
    let plan: &Plan = plan;
    run.table(
        "member",
        rows::MEMBER_COLUMNS,
        &plan.members,
        |b, m| rows::encode_member(b, m, &plan.member_text(m)),
        |m| rows::member_record(m, plan.member_text(m)),
    )
}

/// What the loan phase learns while the loans stream past.
struct LoanOutcome {
    /// Per member: fines charged and the time of the latest.
    fines_by_member: Vec<(i64, Option<DateTime<Utc>>)>,
    rollup: Rollup,
    /// One review per member and book (the first in time), encoded as they were drawn.
    reviews: Spill,
    /// Per book: the number and sum of its reviews' ratings.
    ratings: Vec<(i32, i64)>,
    times_borrowed: Vec<i64>,
    /// The loans still out at the as-of date.
    open: Vec<LoanRow>,
    /// Where every item stands at the end.
    shelves: Shelves,
    /// The items of the returned loans of the months that get audit rows, as lent.
    lent_items: BTreeMap<usize, Vec<u32>>,
    /// The loans declared lost (and found again).
    lost: Vec<generate::LostRecord>,
    /// Per member: fines of the loans written into history.
    archived_fines: Vec<i64>,
}

/// Phase 2: every loan. Months are generated in parallel windows on a producer thread, lent
/// to items in borrow order there, and encoded in parallel, while this thread streams the
/// previous window; the loans still out are written at the end.
fn loans(run: &mut Run<'_>, plan: &mut Plan) -> Result<LoanOutcome> {
    let mut outcome = LoanOutcome {
        fines_by_member: vec![(0, None); plan.members.len()],
        rollup: Rollup::default(),
        reviews: Spill::new()?,
        ratings: vec![(0, 0); plan.books.len()],
        times_borrowed: vec![0; plan.books.len()],
        open: Vec::new(),
        shelves: Shelves::new(plan),
        lent_items: BTreeMap::new(),
        lost: Vec::new(),
        archived_fines: vec![0; plan.members.len()],
    };
    let mut reviewed: HashSet<(u32, u32)> = HashSet::new();
    let mut admitted = Vec::new();
    run.observer
        .table_started("loan", plan.scenario.loans as u64);
    let (pool, encoding, window, cuts) = (run.pool, run.encoding, run.window, run.cuts);
    let mut out = Out::open(
        &mut *run.sink,
        cuts.is_some(),
        "loan",
        "loan_history",
        rows::LOAN_COLUMNS,
    )?;
    let mut counter = Counter {
        table: "loan",
        rows: 0,
        observer: run.observer,
    };
    let mut archived = 0usize;
    let months = plan.months.len();
    let reading: &Plan = plan;
    let (shelves, lent_items) = (&mut outcome.shelves, &mut outcome.lent_items);
    std::thread::scope(|scope| -> Result<()> {
        let plan = reading;
        // A rendezvous: one window is generated while the one before it is written, and no
        // third waits between them.
        let (tx, rx) = std::sync::mpsc::sync_channel::<Vec<EncodedMonth>>(0);
        scope.spawn(move || {
            for first in (0..months).step_by(window) {
                let generated: Vec<Month> = pool.install(|| {
                    (first..(first + window).min(months))
                        .into_par_iter()
                        .map(|m| plan.month(m))
                        .collect()
                });
                let lent: Vec<Month> = generated
                    .into_iter()
                    .zip(first..)
                    .map(|(month, m)| {
                        let month = plan.lend(shelves, month);
                        if m >= plan.audit_from_month {
                            lent_items.insert(m, month.items.clone());
                        }
                        month
                    })
                    .collect();
                let batch: Vec<EncodedMonth> = pool.install(|| {
                    lent.into_par_iter()
                        .map(|month| encode_month(plan, encoding, cuts.as_ref(), month))
                        .collect()
                });
                if tx.send(batch).is_err() {
                    return;
                }
            }
        });
        for (index, month) in rx.into_iter().flatten().enumerate() {
            outcome.rollup.add_month(&month, plan.months[index]);
            for part in &month.parts {
                out.write(part)?;
                if part.leaf.is_some() {
                    archived += part.rows;
                } else {
                    counter.add(part.rows);
                }
            }
            for (member, cents) in &month.archived_fines {
                outcome.archived_fines[*member as usize] += cents;
            }
            for (member, cents, at) in month.fines {
                let entry = &mut outcome.fines_by_member[member as usize];
                entry.0 += cents;
                entry.1 = entry.1.max(Some(at));
            }
            admitted.extend(month.open);
            outcome.lost.extend(month.lost);
            for book in month.books_borrowed {
                outcome.times_borrowed[book as usize] += 1;
            }
            let first: Vec<generate::ReviewRow> = month
                .reviews
                .into_iter()
                .filter(|r| reviewed.insert((r.member, r.book)))
                .collect();
            for review in &first {
                let rating = &mut outcome.ratings[review.book as usize];
                rating.0 += 1;
                rating.1 += i64::from(review.rating);
            }
            let bytes = encode(
                encoding,
                &first,
                |b, r| rows::encode_review(b, plan, r),
                |r| rows::review_record(plan, r),
            );
            outcome.reviews.push(&bytes, first.len())?;
        }
        Ok(())
    })?;
    plan.count_shelves(&outcome.shelves);
    outcome.rollup.add_open(&admitted);
    for loan in &admitted {
        outcome.times_borrowed[loan.book as usize] += 1;
    }
    out.write(&Part {
        leaf: None,
        bytes: encode(
            encoding,
            &admitted,
            |b, l| rows::encode_loan(b, &*plan, l),
            |l| rows::loan_record(&*plan, l),
        ),
        rows: admitted.len(),
    })?;
    counter.add(admitted.len());
    fail_point("loan")?;
    out.finish()?;
    let written = counter.rows;
    run.finished("loan", written);
    if cuts.is_some() {
        run.finished("loan_history", archived as u64);
        let fines: Vec<(uuid::Uuid, i64)> = outcome
            .archived_fines
            .iter()
            .enumerate()
            .filter(|(_, cents)| **cents > 0)
            .map(|(m, cents)| (plan.members[m].id, *cents))
            .collect();
        run.table(
            "member_archived_fines",
            &["member_id", "fine_cents"],
            &fines,
            |b, (id, cents)| {
                copy::RowEncoder::new(b, 2).uuid(*id).int8(*cents);
            },
            |(id, cents)| vec![id.to_string(), cents.to_string()],
        )?;
    }
    outcome.open = admitted;
    Ok(outcome)
}

/// Phase 3: books, now that their borrow counts and ratings are known, and the reviews.
fn catalogue(
    run: &mut Run<'_>,
    plan: &mut Plan,
    loans: &mut LoanOutcome,
) -> Result<HashMap<u32, i64>> {
    for ((book, n), (count, sum)) in plan
        .books
        .iter_mut()
        .zip(&loans.times_borrowed)
        .zip(&loans.ratings)
    {
        book.times_borrowed = *n;
        book.rating_count = *count;
        book.rating_sum = *sum;
    }
    let holds = plan.holds(&loans.shelves, &loans.open);
    for &item in &holds.on_hold_shelf {
        let b = plan.book_of_item(item) as usize;
        plan.books[b].available_copies -= 1;
    }
    let plan: &Plan = plan;
    let books: Vec<u32> = (0..plan.books.len() as u32).collect();
    run.table(
        "book",
        rows::BOOK_COLUMNS,
        &books,
        |buf, &b| rows::encode_book(buf, &plan.books[b as usize], &plan.book_text(b)),
        |&b| rows::book_record(&plan.books[b as usize], plan.book_text(b)),
    )?;
    let lost_prices = items(run, plan, loans, &holds.on_hold_shelf)?;
    run.table(
        "hold",
        rows::HOLD_COLUMNS,
        &holds.rows,
        |b, h| rows::encode_hold(b, plan, h),
        |h| rows::hold_record(plan, h),
    )?;
    std::mem::replace(&mut loans.reviews, Spill::new()?).write_into(
        run,
        "review",
        rows::REVIEW_COLUMNS,
    )?;
    Ok(lost_prices)
}

/// The items, generated and written a window of titles at a time so that only a window's
/// rows are ever in memory. Returns the replacement price of every item lost.
fn items(
    run: &mut Run<'_>,
    plan: &Plan,
    loans: &LoanOutcome,
    on_hold_shelf: &HashSet<u32>,
) -> Result<HashMap<u32, i64>> {
    const TITLES: usize = 50_000;
    let total = u64::from(*plan.item_start.last().unwrap_or(&0));
    let lost: HashSet<u32> = loans.lost.iter().map(|l| l.item).collect();
    let mut prices = HashMap::new();
    run.observer.table_started("item", total);
    let mut out = run.sink.open("item", rows::ITEM_COLUMNS)?;
    let writer = RowWriter {
        table: "item",
        pool: run.pool,
        encoding: run.encoding,
        observer: run.observer,
    };
    for first in (0..plan.books.len()).step_by(TITLES) {
        let window = first..(first + TITLES).min(plan.books.len());
        let items = run
            .pool
            .install(|| plan.items(window.clone(), &loans.shelves, on_hold_shelf));
        let first_item = plan.item_start[window.start];
        debug_assert_eq!(
            items.len(),
            (plan.item_start[window.end] - first_item) as usize
        );
        for (n, item) in items.iter().enumerate() {
            let index = first_item + n as u32;
            if lost.contains(&index) {
                prices.insert(index, item.price_cents);
            }
        }
        writer.write(
            &mut *out,
            &items,
            &|b: &mut Vec<u8>, i: &generate::ItemRow| rows::encode_item(b, plan, i),
            &|i: &generate::ItemRow| rows::item_record(plan, i),
        )?;
    }
    fail_point("item")?;
    out.finish()?;
    run.finished("item", total);
    Ok(prices)
}

/// Phase 4: the monthly rollup of complete months; the current month is computed live.
fn rollup(run: &mut Run<'_>, plan: &Plan, rollup: Rollup) -> Result<()> {
    let complete_before = plan.end.with_day(1).expect("day 1");
    let months = rollup.rows(complete_before);
    run.table(
        "circulation_month",
        &[
            "month",
            "loans",
            "returns",
            "late_returns",
            "active_members",
        ],
        &months,
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
    run.sink.rollup_complete_before(complete_before)
}

/// Phase 5: the ledger (fines, payments, waivers) and the requests behind it.
fn ledger(
    run: &mut Run<'_>,
    plan: &Plan,
    loans: &LoanOutcome,
    lost_prices: &HashMap<u32, i64>,
) -> Result<Vec<AccountRow>> {
    let fines_by_member = &loans.fines_by_member;
    let mut ledger = plan.ledger(fines_by_member);
    let requests = plan.requests(&ledger, fines_by_member);
    ledger.extend(plan.lost_ledger(&loans.lost, |item| lost_prices[&item]));
    run.table(
        "request",
        rows::REQUEST_COLUMNS,
        &requests,
        |b, r| rows::encode_request(b, plan, r),
        |r| rows::request_record(plan, r),
    )?;
    run.table(
        "account_entry",
        rows::ACCOUNT_COLUMNS,
        &ledger,
        |b, a| rows::encode_account(b, plan, a),
        |a| rows::account_record(plan, a),
    )?;
    Ok(ledger)
}

/// Phase 6: the audit log of the recent months: their circulation again (regenerated, not
/// kept in memory), the loans still out, payments and approvals, and the injected bursts.
fn audit_history(
    run: &mut Run<'_>,
    plan: &Plan,
    open_loans: Vec<LoanRow>,
    lent_items: &BTreeMap<usize, Vec<u32>>,
    ledger: &[AccountRow],
) -> Result<()> {
    run.observer.table_started(
        "audit_log",
        (plan.scenario.loans as u64 * u64::from(plan.scenario.audit_months) * 2)
            / u64::from(plan.scenario.months.max(1)),
    );
    let (pool, encoding, cuts) = (run.pool, run.encoding, run.cuts);
    let mut out = Out::open(
        &mut *run.sink,
        cuts.is_some(),
        "audit_log",
        "audit_history",
        rows::AUDIT_COLUMNS,
    )?;
    let mut counter = Counter {
        table: "audit_log",
        rows: 0,
        observer: run.observer,
    };
    let mut archived = 0usize;
    let leaf = |a: &AuditRow| cuts.and_then(|c| c.audit(a.at));
    let from = plan.audit_from_month;
    let months = plan.months.len();
    // Each chunk of a month's loans draws from its own stream, so a month's audit rows are
    // generated and encoded a few chunks per thread at a time, never the month whole.
    let audit_of = |m: usize, chunk: usize, loans: &[LoanRow]| -> Vec<AuditRow> {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(plan.seed ^ 0xA0D1);
        rng.set_stream(((m as u64) << 24) | chunk as u64);
        loans
            .iter()
            .flat_map(|l| plan.loan_audit(l, &mut rng))
            .flatten()
            .collect()
    };
    const LOANS_PER_CHUNK: usize = 10_000;
    let threads = pool.current_num_threads().max(1);
    for first in (from..months).step_by(threads) {
        let lent: Vec<(usize, Vec<LoanRow>)> = pool.install(|| {
            (first..(first + threads).min(months))
                .into_par_iter()
                .map(|m| (m, plan.lent_returns(m, &lent_items[&m])))
                .collect()
        });
        for (m, loans) in &lent {
            let chunks: Vec<(usize, &[LoanRow])> =
                loans.chunks(LOANS_PER_CHUNK).enumerate().collect();
            for group in chunks.chunks(threads * 2) {
                let batch: Vec<Vec<Part>> = pool.install(|| {
                    group
                        .par_iter()
                        .map(|(chunk, loans)| {
                            let audit = audit_of(*m, *chunk, loans);
                            parts(
                                encoding,
                                &audit,
                                leaf,
                                rows::encode_audit,
                                rows::audit_record,
                            )
                        })
                        .collect()
                });
                for part in batch.iter().flatten() {
                    out.write(part)?;
                    if part.leaf.is_some() {
                        archived += part.rows;
                    } else {
                        counter.add(part.rows);
                    }
                }
            }
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
    let mut extra = audit_of(months, 0, &recent_open);
    extra.extend(
        ledger
            .iter()
            .filter(|a| Some(a.created_at) >= audit_start && a.loan.is_none())
            .map(|a| AuditRow {
                id: libcore::ids::id_from_parts(a.created_at, a.id.as_u128() ^ 1),
                at: a.created_at,
                actor: plan.member_email(plan.desk_staff[0]),
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
    for part in parts(
        encoding,
        &extra,
        leaf,
        rows::encode_audit,
        rows::audit_record,
    ) {
        out.write(&part)?;
        if part.leaf.is_some() {
            archived += part.rows;
        } else {
            counter.add(part.rows);
        }
    }
    fail_point("audit_log")?;
    out.finish()?;
    let written = counter.rows;
    run.finished("audit_log", written);
    if cuts.is_some() {
        run.finished("audit_history", archived as u64);
    }
    Ok(())
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
    /// The month's returned loans: one part, or with history partitions one per destination.
    parts: Vec<Part>,
    /// Loans of the month returned at all (hot or history).
    rows: usize,
    /// Fines of the loans that went into history, per member.
    archived_fines: Vec<(u32, i64)>,
    /// The loans of the month still out at the end.
    open: Vec<LoanRow>,
    fines: Vec<(u32, i64, DateTime<Utc>)>,
    /// Members who borrowed (returned loans of this month), sorted and deduplicated.
    borrowers: Vec<u32>,
    /// (month of return, late?) of every returned loan.
    returns: Vec<(NaiveDate, bool)>,
    /// Reviews of the month's returns.
    reviews: Vec<generate::ReviewRow>,
    /// The book of every returned loan, for `times_borrowed`.
    books_borrowed: Vec<u32>,
    /// The loans declared lost.
    lost: Vec<generate::LostRecord>,
}

/// The monthly rollup, counted while the loans stream past.
#[derive(Default)]
struct Rollup {
    months: BTreeMap<NaiveDate, MonthStats>,
}

#[derive(Default)]
struct MonthStats {
    loans: i64,
    returns: i64,
    late_returns: i64,
    borrowers: Vec<u32>,
}

fn month_of(t: DateTime<Utc>) -> NaiveDate {
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

fn encode_month(
    plan: &Plan,
    encoding: Encoding,
    cuts: Option<&Cuts>,
    month: Month,
) -> EncodedMonth {
    let parts = parts(
        encoding,
        &month.returned,
        |l| cuts.and_then(|c| c.loan(l)),
        |b, l| rows::encode_loan(b, plan, l),
        |l| rows::loan_record(plan, l),
    );
    let archived_fines = match cuts {
        Some(c) => month
            .returned
            .iter()
            .filter(|l| l.fine_cents > 0 && c.loan(l).is_some())
            .map(|l| (l.member, l.fine_cents))
            .collect(),
        None => Vec::new(),
    };
    let fines = month
        .returned
        .iter()
        .filter(|l| l.fine_cents > 0)
        .map(|l| (l.member, l.fine_cents, l.returned_at.expect("returned")))
        .collect();
    let mut borrowers: Vec<u32> = month.returned.iter().map(|l| l.member).collect();
    borrowers.sort_unstable();
    borrowers.dedup();
    let lost = month
        .returned
        .iter()
        .filter(|l| l.end_state == "lost")
        .map(|l| generate::LostRecord {
            member: l.member,
            loan: l.id,
            item: l.item,
            lost_at: l.returned_at.expect("declared lost"),
            found_at: l.found_at.expect("found"),
        })
        .collect();
    let returns = month
        .returned
        .iter()
        .filter(|l| l.end_state == "returned")
        .map(|l| {
            let back = l.returned_at.expect("returned");
            (month_of(back), back > l.due_at)
        })
        .collect();
    let books_borrowed = month.returned.iter().map(|l| l.book).collect();
    EncodedMonth {
        parts,
        rows: month.returned.len(),
        archived_fines,
        open: month.open,
        fines,
        borrowers,
        returns,
        reviews: month.reviews,
        books_borrowed,
        lost,
    }
}

/// Test-only failure injection: `LIBCTL_SEED_FAIL_AFTER=<table>` makes the seed fail right after
/// writing that table, to prove a failed seed leaves the database as it was.
pub(crate) fn fail_point(table: &str) -> Result<()> {
    if std::env::var("LIBCTL_SEED_FAIL_AFTER").is_ok_and(|t| t == table) {
        return Err(Error::Internal(format!(
            "injected failure after {table} (LIBCTL_SEED_FAIL_AFTER)"
        )));
    }
    Ok(())
}
