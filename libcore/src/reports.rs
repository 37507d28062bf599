//! Read-only reports (SPEC §8). Large reports stream: rows go to the caller's `emit` as the
//! server sends them (a portal via `query_raw`), so a 500k-row report never sits in memory.
//!
//! Speed at 4M loans without extra 4M-row indexes (every index costs the seeder seconds):
//! - loan ids are UUID v7 made from `borrowed_at`, so a date window is a primary-key range
//!   (`id BETWEEN lo AND hi`), not a table scan;
//! - open loans come from the small partial index `loan_open_due_idx`;
//! - balances come from `loan_fined_member_idx` (fined loans only, with the amount included);
//! - months come from the `circulation_month` rollup that `nightly` refreshes.
//!
//! Fines shown are the SQL twin of [`crate::fines::fine_cents`] as of the report time.

use chrono::{DateTime, Datelike, Months, NaiveDate, Utc};
use postgres::types::ToSql;
use postgres::{Client, GenericClient, Row};
use uuid::Uuid;

use crate::actor::{Capability, Ctx};
use crate::calendar::Calendar;
use crate::error::{Error, Result};
use crate::ids::id_from_parts;

/// Every report kind: the one list the command line, `bench reports` and the tests read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    /// Totals at a glance.
    Summary,
    /// Every overdue loan, by tier.
    Overdue,
    /// Outstanding balance per member.
    Fines,
    /// Unavailable, low stock, never borrowed.
    Inventory,
    /// Books ranked by loans in a window.
    Popular,
    /// Members ranked by loans in a window.
    TopMembers,
    /// Per month: loans, returns, active members, overdue rate.
    Trends,
    /// Per member: overdue rate and risk level.
    Risk,
    /// Titles by waiting holds per copy: the purchase-alert list.
    Holds,
}

impl Kind {
    /// Every kind, in the order reports are listed.
    pub const ALL: [Kind; 9] = [
        Kind::Summary,
        Kind::Overdue,
        Kind::Fines,
        Kind::Inventory,
        Kind::Popular,
        Kind::TopMembers,
        Kind::Trends,
        Kind::Risk,
        Kind::Holds,
    ];

    /// The name on the command line.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Summary => "summary",
            Kind::Overdue => "overdue",
            Kind::Fines => "fines",
            Kind::Inventory => "inventory",
            Kind::Popular => "popular",
            Kind::TopMembers => "top-members",
            Kind::Trends => "trends",
            Kind::Risk => "risk",
            Kind::Holds => "holds",
        }
    }
}

impl std::str::FromStr for Kind {
    type Err = Error;
    fn from_str(name: &str) -> Result<Kind> {
        Kind::ALL
            .into_iter()
            .find(|k| k.as_str() == name)
            .ok_or_else(|| Error::invalid("invalid_input", format!("unknown report {name:?}")))
    }
}

/// Runs one report to completion and counts its rows without keeping them: what
/// `bench reports` times.
pub fn count_rows(
    client: &mut Client,
    ctx: &Ctx,
    kind: Kind,
    options: &ReportOptions,
) -> Result<u64> {
    let mut rows = 0u64;
    let mut count = || -> Result<()> {
        rows += 1;
        Ok(())
    };
    match kind {
        Kind::Summary => {
            summary(client, ctx, options)?;
            count()?;
        }
        Kind::Overdue => {
            overdue(client, ctx, options, &mut |_| count())?;
        }
        Kind::Fines => fines(client, ctx, options, &mut |_| count()).map(|_| ())?,
        Kind::Inventory => inventory(client, ctx, options, &mut |_| count()).map(|_| ())?,
        Kind::Risk => risk(client, ctx, options, &mut |_| count()).map(|_| ())?,
        Kind::Holds => holds(client, ctx, options, &mut |_| count()).map(|_| ())?,
        Kind::Popular => rows = ranked(client, ctx, options, false)?.len() as u64,
        Kind::TopMembers => rows = ranked(client, ctx, options, true)?.len() as u64,
        Kind::Trends => rows = trends(client, ctx, options)?.len() as u64,
    }
    Ok(rows)
}

/// Options shared by every report.
#[derive(Debug, Clone, Default)]
pub struct ReportOptions {
    /// The report's "now"; default the real time.
    pub as_of: Option<DateTime<Utc>>,
    /// First day of the window (inclusive).
    pub from: Option<NaiveDate>,
    /// Last day of the window (inclusive).
    pub to: Option<NaiveDate>,
    /// At most this many rows.
    pub limit: Option<i64>,
    /// `holds`: flag titles with more waiting holds per copy than this [default 3].
    pub ratio: Option<f64>,
}

/// A resolved window: [start, end] instants with the primary-key range that covers it.
#[derive(Debug, Clone, Copy)]
struct Window {
    start: DateTime<Utc>,
    end: DateTime<Utc>,
    id_lo: Uuid,
    id_hi: Uuid,
}

impl Window {
    fn new(calendar: &Calendar, from: NaiveDate, to: NaiveDate) -> Result<Window> {
        if from > to {
            return Err(Error::invalid(
                "invalid_input",
                format!("--from {from} is after --to {to}"),
            ));
        }
        let start =
            calendar.end_of_day(from.pred_opt().unwrap_or(from)) + chrono::Duration::seconds(1);
        let end = calendar.end_of_day(to);
        Ok(Window {
            start,
            end,
            id_lo: id_from_parts(start - chrono::Duration::milliseconds(1), 0),
            id_hi: id_from_parts(end + chrono::Duration::milliseconds(1), u128::MAX),
        })
    }
}

/// The context every report computes in.
struct Frame {
    calendar: Calendar,
    as_of: DateTime<Utc>,
    today: NaiveDate,
}

fn frame(client: &mut impl GenericClient, ctx: &Ctx, options: &ReportOptions) -> Result<Frame> {
    ctx.require(Capability::Reports)?;
    let calendar = Calendar::load(client)?;
    let as_of = options.as_of.unwrap_or_else(|| ctx.now());
    let today = calendar.local_date(as_of);
    calendar.require_not_future(today)?;
    Ok(Frame {
        calendar,
        as_of,
        today,
    })
}

impl Frame {
    fn window(&self, options: &ReportOptions, default_days: u64) -> Result<Window> {
        let to = options.to.unwrap_or(self.today);
        let from = options
            .from
            .unwrap_or(to - chrono::Days::new(default_days - 1));
        Window::new(&self.calendar, from, to)
    }
}

/// `--limit`, between 1 and 10,000,000 when given; `default` otherwise.
fn limit(options: &ReportOptions, default: i64) -> Result<i64> {
    match options.limit {
        Some(given) => crate::validate::limit(given, 10_000_000),
        None => Ok(default),
    }
}

/// Streams the rows of `sql` through `convert` into `emit`.
fn stream<T>(
    client: &mut impl GenericClient,
    sql: &str,
    params: &[&(dyn ToSql + Sync)],
    convert: impl Fn(&Row) -> T,
    emit: &mut dyn FnMut(T) -> Result<()>,
) -> Result<u64> {
    use postgres::fallible_iterator::FallibleIterator;
    let mut rows = client.query_raw(sql, params.iter().copied())?;
    let mut n = 0;
    while let Some(row) = rows.next()? {
        emit(convert(&row))?;
        n += 1;
    }
    Ok(n)
}

/// `summary`: the library at a glance.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Summary {
    /// Report time.
    pub as_of: DateTime<Utc>,
    /// Titles.
    pub books: i64,
    /// Copies owned.
    pub copies: i64,
    /// Copies on the shelf.
    pub available_copies: i64,
    /// Active members.
    pub active_members: i64,
    /// Loans out.
    pub open_loans: i64,
    /// Loans out past their due date.
    pub overdue_loans: i64,
    /// Open loans as a share of copies, percent.
    pub utilisation_pct: f64,
    /// Fines owed (assessed and accruing) minus payments and waivers.
    pub outstanding_fines_cents: i64,
}

/// Computes the summary: the running totals of `library_tally` (V26), and the loans overdue at
/// the report time, which no counter can keep because the time moves. Those are read through
/// the open loans' due-date index, with each loan's overdue days counted once per due day
/// rather than once per loan.
pub fn summary(client: &mut Client, ctx: &Ctx, options: &ReportOptions) -> Result<Summary> {
    let f = frame(client, ctx, options)?;
    // One snapshot for the tally and the overdue loans, so a return between them cannot show.
    let mut tx = client
        .build_transaction()
        .read_only(true)
        .isolation_level(postgres::IsolationLevel::RepeatableRead)
        .start()?;
    tx.batch_execute("SET LOCAL jit = off")?;
    let totals = crate::tally::totals(&mut tx)?;
    let overdue = tx.query_one(
        "WITH overdue AS MATERIALIZED (
             SELECT (due_at AT TIME ZONE $2)::date AS due_day, due_at, fine_cents_per_day,
                    grace_days, max_fine_cents, fine_cents
             FROM loan WHERE returned_at IS NULL AND due_at < $1),
         days AS (
             SELECT due_day, overdue_days(min(due_at), $1, $2) AS days
             FROM overdue GROUP BY due_day)
         SELECT count(*),
                coalesce(sum(greatest(fine_cents(o.fine_cents_per_day, o.grace_days, o.max_fine_cents, d.days),
                                      o.fine_cents) - o.fine_cents), 0)::bigint
         FROM overdue o JOIN days d USING (due_day)",
        &[&f.as_of, &f.calendar.tz.name()],
    )?;
    tx.commit()?;
    let overdue_loans: i64 = overdue.get(0);
    let accruing_cents: i64 = overdue.get(1);
    Ok(Summary {
        as_of: f.as_of,
        books: totals.titles,
        copies: totals.copies,
        available_copies: totals.available_copies,
        active_members: totals.active_members,
        open_loans: totals.open_loans,
        overdue_loans,
        utilisation_pct: if totals.copies > 0 {
            (totals.open_loans as f64 * 10_000.0 / totals.copies as f64).round() / 100.0
        } else {
            0.0
        },
        outstanding_fines_cents: totals.loan_fine_cents
            + totals.archived_fine_cents
            + totals.ledger_cents
            + accruing_cents,
    })
}

/// One overdue loan.
#[derive(Debug, Clone, serde::Serialize)]
pub struct OverdueRow {
    /// Loan.
    pub loan_id: Uuid,
    /// Member.
    pub member_id: Uuid,
    /// Name.
    pub name: String,
    /// Email.
    pub email: String,
    /// Phone.
    pub phone: Option<String>,
    /// Title.
    pub title: String,
    /// Due.
    pub due_at: DateTime<Utc>,
    /// Overdue days (library calendar).
    pub days_overdue: i32,
    /// `1-3`, `4-7` or `8+`.
    pub tier: String,
    /// Fine accrued as of the report.
    pub fine_cents: i64,
}

/// Overdue counts per tier.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct OverdueTiers {
    /// 1–3 days.
    pub tier_1_3: i64,
    /// 4–7 days.
    pub tier_4_7: i64,
    /// 8 days and more.
    pub tier_8_plus: i64,
}

/// The tier of a number of overdue days.
pub fn overdue_tier(days: i32) -> &'static str {
    match days {
        ..=3 => "1-3",
        4..=7 => "4-7",
        _ => "8+",
    }
}

/// Streams every overdue loan, most overdue first, and returns the tier counts.
pub fn overdue(
    client: &mut Client,
    ctx: &Ctx,
    options: &ReportOptions,
    emit: &mut dyn FnMut(OverdueRow) -> Result<()>,
) -> Result<OverdueTiers> {
    let f = frame(client, ctx, options)?;
    let mut tiers = OverdueTiers::default();
    let limit = limit(options, i64::MAX / 2)?;
    stream(
        client,
        "SELECT * FROM (
             SELECT l.id, m.id, m.name, m.email, m.phone, b.title, l.due_at,
                    overdue_days(l.due_at, $1, library_timezone()) AS od,
                    fine_cents(l.fine_cents_per_day, l.grace_days, l.max_fine_cents,
                               overdue_days(l.due_at, $1, library_timezone()))
             FROM loan l JOIN member m ON m.id = l.member_id JOIN book b ON b.id = l.book_id
             WHERE l.returned_at IS NULL AND l.due_at < $1) o
         WHERE od > 0
         ORDER BY od DESC, 1 LIMIT $2",
        &[&f.as_of, &limit],
        |r| {
            let days: i32 = r.get(7);
            OverdueRow {
                loan_id: r.get(0),
                member_id: r.get(1),
                name: r.get(2),
                email: r.get(3),
                phone: r.get(4),
                title: r.get(5),
                due_at: r.get(6),
                days_overdue: days,
                tier: overdue_tier(days).to_string(),
                fine_cents: r.get(8),
            }
        },
        &mut |row: OverdueRow| {
            match row.tier.as_str() {
                "1-3" => tiers.tier_1_3 += 1,
                "4-7" => tiers.tier_4_7 += 1,
                _ => tiers.tier_8_plus += 1,
            }
            emit(row)
        },
    )?;
    Ok(tiers)
}

/// One member's outstanding balance.
#[derive(Debug, Clone, serde::Serialize)]
pub struct FinesRow {
    /// Member.
    pub member_id: Uuid,
    /// Name.
    pub name: String,
    /// Email.
    pub email: String,
    /// Everything charged: fines (frozen, assessed, and accrued to the report time),
    /// replacement charges and processing fees.
    pub fines_cents: i64,
    /// Payments, waivers and refunds.
    pub credits_cents: i64,
    /// What they owe.
    pub balance_cents: i64,
    /// At or above the block threshold of their category.
    pub above_threshold: bool,
}

/// Streams every member who owes something, largest balance first.
pub fn fines(
    client: &mut Client,
    ctx: &Ctx,
    options: &ReportOptions,
    emit: &mut dyn FnMut(FinesRow) -> Result<()>,
) -> Result<u64> {
    let f = frame(client, ctx, options)?;
    let limit = limit(options, i64::MAX / 2)?;
    stream(
        client,
        "WITH charged AS (
             SELECT member_id, sum(cents) AS cents
             FROM (SELECT member_id, fine_cents AS cents FROM loan WHERE fine_cents > 0
                   UNION ALL
                   SELECT member_id, fine_cents FROM member_archived_fines
                   UNION ALL
                   SELECT member_id, amount_cents FROM account_entry
                   WHERE ledger_signed_cents(kind, amount_cents) > 0) c
             GROUP BY member_id
         ), accruing AS (
             SELECT member_id,
                    sum(greatest(fine_cents(fine_cents_per_day, grace_days, max_fine_cents,
                                            overdue_days(due_at, $1, library_timezone())), fine_cents) - fine_cents) AS cents
             FROM loan WHERE returned_at IS NULL AND due_at < $1 GROUP BY member_id
         ), credited AS (
             SELECT member_id, sum(amount_cents) AS cents FROM account_entry
             WHERE ledger_signed_cents(kind, amount_cents) < 0 GROUP BY member_id
         ), owed AS (
             SELECT coalesce(c.member_id, a.member_id) AS member_id,
                    coalesce(c.cents, 0) + coalesce(a.cents, 0) AS fines
             FROM charged c FULL JOIN accruing a ON a.member_id = c.member_id
         )
         SELECT m.id, m.name, m.email, o.fines::bigint, coalesce(cr.cents, 0)::bigint,
                (o.fines - coalesce(cr.cents, 0))::bigint AS balance,
                (o.fines - coalesce(cr.cents, 0)) >= r.block_fine_cents
         FROM owed o JOIN member m ON m.id = o.member_id
              JOIN circulation_rule r ON r.category = m.category
              LEFT JOIN credited cr ON cr.member_id = o.member_id
         WHERE o.fines - coalesce(cr.cents, 0) > 0
         ORDER BY balance DESC, m.id LIMIT $2",
        &[&f.as_of, &limit],
        |r| FinesRow {
            member_id: r.get(0),
            name: r.get(1),
            email: r.get(2),
            fines_cents: r.get(3),
            credits_cents: r.get(4),
            balance_cents: r.get(5),
            above_threshold: r.get(6),
        },
        emit,
    )
}

/// One title needing attention.
#[derive(Debug, Clone, serde::Serialize)]
pub struct InventoryRow {
    /// Book.
    pub book_id: Uuid,
    /// ISBN.
    pub isbn: String,
    /// Title.
    pub title: String,
    /// `unavailable`, `low_stock`, `never_borrowed` or `items_missing` (some of its items
    /// are missing, damaged or lost).
    pub status: String,
    /// Copies.
    pub total_copies: i32,
    /// On the shelf.
    pub available_copies: i32,
    /// Share of copies out, percent.
    pub utilisation_pct: f64,
    /// Items marked missing.
    pub missing_items: i64,
    /// Items marked damaged.
    pub damaged_items: i64,
    /// Items lost.
    pub lost_items: i64,
    /// Items withdrawn.
    pub withdrawn_items: i64,
    /// Items never lent (withdrawn ones left out).
    pub never_borrowed_items: i64,
}

/// Streams titles that are unavailable, low on stock (1 of ≥ 2 left), never borrowed, or
/// with items missing, damaged or lost, with the counts of their items by status.
pub fn inventory(
    client: &mut Client,
    ctx: &Ctx,
    options: &ReportOptions,
    emit: &mut dyn FnMut(InventoryRow) -> Result<()>,
) -> Result<u64> {
    frame(client, ctx, options)?;
    let limit = limit(options, i64::MAX / 2)?;
    // The per-title counts make the plan look dear enough for JIT compilation, which then
    // costs twice the query itself (BENCHMARKS.md): off for this statement's transaction.
    let mut tx = client.build_transaction().read_only(true).start()?;
    tx.batch_execute("SET LOCAL jit = off")?;
    let rows = stream(
        &mut tx,
        // Titles are flagged from the book row (and the few items off the shelf for good)
        // first; only their items are counted, and only items of titles ever borrowed whose
        // status has changed since they were added are looked up in the loan history (every
        // path that adds an item stamps both times alike and a loan moves the second, so an
        // item whose two times are equal was never lent; the lookup probes every history
        // month of an item never lent, which grew faster than the history did).
        "SELECT t.id, t.isbn, t.title, t.status, t.total_copies, t.available_copies,
                CASE WHEN t.total_copies > 0
                     THEN round(100.0 * (t.total_copies - t.available_copies) / t.total_copies, 2)::float8
                     ELSE 0 END,
                it.missing, it.damaged, it.lost, it.withdrawn, it.never_lent
         FROM (SELECT b.id, b.isbn, b.title, b.total_copies, b.available_copies, b.times_borrowed,
                      CASE WHEN b.total_copies > 0 AND b.available_copies = 0 THEN 'unavailable'
                           WHEN b.total_copies >= 2 AND b.available_copies = 1 THEN 'low_stock'
                           WHEN b.times_borrowed = 0 THEN 'never_borrowed'
                           WHEN b.id IN (SELECT i.book_id FROM item i
                                         WHERE i.status IN ('missing', 'damaged', 'lost'))
                           THEN 'items_missing'
                      END AS status
               FROM book b) t
         CROSS JOIN LATERAL (
             SELECT count(*) FILTER (WHERE i.status = 'missing') AS missing,
                    count(*) FILTER (WHERE i.status = 'damaged') AS damaged,
                    count(*) FILTER (WHERE i.status = 'lost') AS lost,
                    count(*) FILTER (WHERE i.status = 'withdrawn') AS withdrawn,
                    count(*) FILTER (WHERE i.status <> 'withdrawn'
                                       AND (t.times_borrowed = 0
                                            OR i.status_changed_at = i.created_at
                                            OR NOT EXISTS (SELECT 1 FROM loan_all l WHERE l.item_id = i.id))) AS never_lent
             FROM item i WHERE i.book_id = t.id) it
         WHERE t.status IS NOT NULL
         ORDER BY status DESC, id LIMIT $1",
        &[&limit],
        |r| InventoryRow {
            book_id: r.get(0),
            isbn: r.get(1),
            title: r.get(2),
            status: r.get(3),
            total_copies: r.get(4),
            available_copies: r.get(5),
            utilisation_pct: r.get(6),
            missing_items: r.get(7),
            damaged_items: r.get(8),
            lost_items: r.get(9),
            withdrawn_items: r.get(10),
            never_borrowed_items: r.get(11),
        },
        emit,
    )?;
    tx.commit()?;
    Ok(rows)
}

/// A ranked book or member.
#[derive(Debug, Clone, serde::Serialize)]
pub struct RankedRow {
    /// 1-based rank.
    pub rank: i64,
    /// Book or member id.
    pub id: Uuid,
    /// Title, or member name.
    pub name: String,
    /// Author, or member email.
    pub detail: String,
    /// Loans in the window.
    pub loans: i64,
}

/// `popular` (books) or `top-members`: ranked by loans in the window (default the last 30
/// days), ties broken by id.
pub fn ranked(
    client: &mut Client,
    ctx: &Ctx,
    options: &ReportOptions,
    members: bool,
) -> Result<Vec<RankedRow>> {
    let f = frame(client, ctx, options)?;
    let w = f.window(options, 30)?;
    let limit = limit(options, 20)?;
    // Ranked and cut before the join: books and members are never deleted and every loan
    // names one (a foreign key on `loan`, kept on the way into history), so the join loses no
    // row, and it reads `limit` rows rather than every title or member borrowed in a year.
    let sql = if members {
        "SELECT row_number() OVER (ORDER BY c.n DESC, c.id), m.id, m.name, m.email, c.n
         FROM (SELECT member_id AS id, count(*) AS n FROM loan_all
               WHERE id BETWEEN $1 AND $2 AND borrowed_at BETWEEN $3 AND $4
               GROUP BY member_id ORDER BY n DESC, member_id LIMIT $5) c
         JOIN member m ON m.id = c.id ORDER BY c.n DESC, c.id"
    } else {
        "SELECT row_number() OVER (ORDER BY c.n DESC, c.id), b.id, b.title, b.author, c.n
         FROM (SELECT book_id AS id, count(*) AS n FROM loan_all
               WHERE id BETWEEN $1 AND $2 AND borrowed_at BETWEEN $3 AND $4
               GROUP BY book_id ORDER BY n DESC, book_id LIMIT $5) c
         JOIN book b ON b.id = c.id ORDER BY c.n DESC, c.id"
    };
    Ok(client
        .query(sql, &[&w.id_lo, &w.id_hi, &w.start, &w.end, &limit])?
        .iter()
        .map(|r| RankedRow {
            rank: r.get(0),
            id: r.get(1),
            name: r.get(2),
            detail: r.get(3),
            loans: r.get(4),
        })
        .collect())
}

/// One month of circulation.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct TrendRow {
    /// First day of the month.
    pub month: NaiveDate,
    /// Loans borrowed.
    pub loans: i64,
    /// Loans returned (not those that ended lost or claimed returned).
    pub returns: i64,
    /// Distinct borrowers.
    pub active_members: i64,
    /// Returns that came back after their due date.
    pub late_returns: i64,
    /// Returns that came back late, percent of returns.
    pub overdue_rate_pct: f64,
}

fn month_start(d: NaiveDate) -> NaiveDate {
    d.with_day(1).expect("day 1")
}

/// Loans borrowed more than this long before a month are not looked at for its returns: a
/// loan out for two years is written off, not returned.
const RETURN_LOOKBACK_MONTHS: u32 = 24;

/// Computes the months in [from, to) from the loans themselves (set-based, PK ranges).
fn compute_months(
    client: &mut impl GenericClient,
    calendar: &Calendar,
    from: NaiveDate,
    to: NaiveDate,
) -> Result<Vec<TrendRow>> {
    if from >= to {
        return Ok(Vec::new());
    }
    let start = Window::new(calendar, from, from)?.start;
    let end = Window::new(calendar, to, to)?.start;
    let borrowed_lo = id_from_parts(start - chrono::Duration::milliseconds(1), 0);
    let lookback_lo = id_from_parts(start - Months::new(RETURN_LOOKBACK_MONTHS), 0);
    let hi = id_from_parts(end, u128::MAX);
    let rows = client.query(
        "WITH months AS (
             SELECT generate_series($1::date, ($2::date - 1), interval '1 month')::date AS month
         ), borrowed AS (
             SELECT date_trunc('month', borrowed_at AT TIME ZONE library_timezone())::date AS month,
                    count(*) AS loans, count(DISTINCT member_id) AS members
             FROM loan_all WHERE id BETWEEN $3 AND $5 AND borrowed_at >= $6 AND borrowed_at < $7
             GROUP BY 1
         ), returned AS (
             SELECT date_trunc('month', returned_at AT TIME ZONE library_timezone())::date AS month,
                    count(*) AS returns, count(*) FILTER (WHERE returned_at > due_at) AS late
             FROM loan_all WHERE id BETWEEN $4 AND $5 AND returned_at >= $6 AND returned_at < $7
               AND end_state = 'returned'
             GROUP BY 1
         )
         SELECT m.month, coalesce(b.loans, 0), coalesce(r.returns, 0), coalesce(b.members, 0), coalesce(r.late, 0)
         FROM months m LEFT JOIN borrowed b ON b.month = m.month LEFT JOIN returned r ON r.month = m.month
         ORDER BY m.month",
        &[&from, &to, &borrowed_lo, &lookback_lo, &hi, &start, &end],
    )?;
    Ok(rows
        .iter()
        .map(|r| trend_row(r.get(0), r.get(1), r.get(2), r.get(3), r.get(4)))
        .collect())
}

fn trend_row(
    month: NaiveDate,
    loans: i64,
    returns: i64,
    active_members: i64,
    late: i64,
) -> TrendRow {
    TrendRow {
        month,
        loans,
        returns,
        active_members,
        late_returns: late,
        overdue_rate_pct: if returns > 0 {
            (late as f64 * 10_000.0 / returns as f64).round() / 100.0
        } else {
            0.0
        },
    }
}

/// Refreshes the monthly rollup for every complete month from `from` up to the month of
/// `as_of` (exclusive), and records how far it is complete.
pub(crate) fn refresh_rollup_in(
    tx: &mut impl GenericClient,
    as_of: NaiveDate,
    from: Option<NaiveDate>,
) -> Result<usize> {
    let calendar = Calendar::load(tx)?;
    let complete_before: NaiveDate = tx
        .query_one(
            "SELECT value::date FROM library_setting WHERE key = 'rollup_complete_before'",
            &[],
        )?
        .get(0);
    let first_loan: Option<DateTime<Utc>> = tx
        .query_one("SELECT min(borrowed_at) FROM loan_all", &[])?
        .get(0);
    let Some(first_loan) = first_loan else {
        return Ok(0);
    };
    // Re-do the last complete month too: returns keep arriving for it for a while.
    let from = from.unwrap_or_else(|| {
        (complete_before - Months::new(1)).max(month_start(calendar.local_date(first_loan)))
    });
    let to = month_start(as_of);
    let months = compute_months(tx, &calendar, month_start(from), to)?;
    for m in &months {
        tx.execute(
            "INSERT INTO circulation_month (month, loans, returns, late_returns, active_members) VALUES ($1, $2, $3, $4, $5)
             ON CONFLICT (month) DO UPDATE SET loans = excluded.loans, returns = excluded.returns,
                 late_returns = excluded.late_returns, active_members = excluded.active_members",
            &[&m.month, &m.loans, &m.returns, &m.late_returns, &m.active_members],
        )?;
    }
    tx.execute(
        "UPDATE library_setting SET value = greatest(value::date, $1)::text WHERE key = 'rollup_complete_before'",
        &[&to],
    )?;
    Ok(months.len())
}

/// Records that the rollup holds every month before `month` (a bulk load that wrote it whole).
pub fn set_rollup_complete_before(tx: &mut impl GenericClient, month: NaiveDate) -> Result<()> {
    tx.execute(
        "UPDATE library_setting SET value = $1::date::text WHERE key = 'rollup_complete_before'",
        &[&month],
    )?;
    Ok(())
}

/// `trends`: per month in the window (default the last 12 months): complete months from the
/// rollup, the rest computed from the loans.
pub fn trends(client: &mut Client, ctx: &Ctx, options: &ReportOptions) -> Result<Vec<TrendRow>> {
    let f = frame(client, ctx, options)?;
    let to = options.to.unwrap_or(f.today);
    let from = month_start(options.from.unwrap_or(month_start(to) - Months::new(11)));
    let end = month_start(to) + Months::new(1);
    let complete_before: NaiveDate = client
        .query_one(
            "SELECT value::date FROM library_setting WHERE key = 'rollup_complete_before'",
            &[],
        )?
        .get(0);
    let split = complete_before.clamp(from, end);
    let mut rows: Vec<TrendRow> = client
        .query(
            "SELECT month, loans, returns, active_members, late_returns FROM circulation_month
             WHERE month >= $1 AND month < $2 ORDER BY month",
            &[&from, &split],
        )?
        .iter()
        .map(|r| trend_row(r.get(0), r.get(1), r.get(2), r.get(3), r.get(4)))
        .collect();
    // Months the rollup lacks inside the complete range, then the live tail.
    let have: std::collections::HashSet<NaiveDate> = rows.iter().map(|r| r.month).collect();
    let mut m = from;
    while m < split {
        if !have.contains(&m) {
            rows.extend(compute_months(client, &f.calendar, m, m + Months::new(1))?);
        }
        m = m + Months::new(1);
    }
    rows.extend(compute_months(client, &f.calendar, split, end)?);
    rows.sort_by_key(|r| r.month);
    Ok(rows)
}

/// One member's risk.
#[derive(Debug, Clone, serde::Serialize)]
pub struct RiskRow {
    /// Member.
    pub member_id: Uuid,
    /// Name.
    pub name: String,
    /// Email.
    pub email: String,
    /// Loans in the window.
    pub loans: i64,
    /// Of those, returned late or still out past due.
    pub overdue_loans: i64,
    /// Percent.
    pub overdue_rate_pct: f64,
    /// `LOW` (≤ 10 %), `MEDIUM` (≤ 30 %), `HIGH`, or `NEW` (fewer than 5 loans).
    pub risk: String,
}

/// The risk level of a member with `loans` loans of which `overdue` went overdue.
pub fn risk_level(loans: i64, overdue: i64) -> &'static str {
    if loans < 5 {
        "NEW"
    } else if overdue * 100 <= loans * 10 {
        "LOW"
    } else if overdue * 100 <= loans * 30 {
        "MEDIUM"
    } else {
        "HIGH"
    }
}

/// Streams every member who borrowed in the window (default the last 12 months), riskiest first.
pub fn risk(
    client: &mut Client,
    ctx: &Ctx,
    options: &ReportOptions,
    emit: &mut dyn FnMut(RiskRow) -> Result<()>,
) -> Result<u64> {
    let f = frame(client, ctx, options)?;
    let w = f.window(options, 365)?;
    let limit = limit(options, i64::MAX / 2)?;
    stream(
        client,
        "SELECT m.id, m.name, m.email, s.loans, s.overdue
         FROM (SELECT member_id, count(*) AS loans,
                      count(*) FILTER (WHERE coalesce(returned_at, $5) > due_at) AS overdue
               FROM loan_all WHERE id BETWEEN $1 AND $2 AND borrowed_at BETWEEN $3 AND $4
               GROUP BY member_id) s
         JOIN member m ON m.id = s.member_id
         ORDER BY CASE WHEN s.loans < 5 THEN -1 ELSE s.overdue::float8 / s.loans END DESC, s.loans DESC, m.id
         LIMIT $6",
        &[&w.id_lo, &w.id_hi, &w.start, &w.end, &f.as_of, &limit],
        |r| {
            let loans: i64 = r.get(3);
            let overdue: i64 = r.get(4);
            RiskRow {
                member_id: r.get(0),
                name: r.get(1),
                email: r.get(2),
                loans,
                overdue_loans: overdue,
                overdue_rate_pct: if loans > 0 { (overdue as f64 * 10_000.0 / loans as f64).round() / 100.0 } else { 0.0 },
                risk: risk_level(loans, overdue).to_string(),
            }
        },
        emit,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tiers_and_risk_levels_at_their_boundaries() {
        assert_eq!(overdue_tier(1), "1-3");
        assert_eq!(overdue_tier(3), "1-3");
        assert_eq!(overdue_tier(4), "4-7");
        assert_eq!(overdue_tier(7), "4-7");
        assert_eq!(overdue_tier(8), "8+");
        assert_eq!(risk_level(4, 4), "NEW");
        assert_eq!(risk_level(10, 1), "LOW");
        assert_eq!(risk_level(10, 2), "MEDIUM");
        assert_eq!(risk_level(10, 3), "MEDIUM");
        assert_eq!(risk_level(10, 4), "HIGH");
    }
}

/// The default of `report holds --ratio`: more waiting holds per copy than this flags a title.
pub const DEFAULT_HOLD_RATIO: f64 = 3.0;

/// A title members wait for.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct HoldsRow {
    /// Book.
    pub book_id: Uuid,
    /// ISBN.
    pub isbn: String,
    /// Title.
    pub title: String,
    /// Holds waiting.
    pub waiting_holds: i64,
    /// Copies owned.
    pub copies: i32,
    /// Waiting holds per copy (per one copy when it has none).
    pub holds_per_copy: f64,
    /// Above the ratio: a candidate to buy more copies of.
    pub buy_more: bool,
}

/// How long holds waited to become ready, over the window.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct HoldWaits {
    /// First day of the window.
    pub from: NaiveDate,
    /// Last day.
    pub to: NaiveDate,
    /// Holds that became ready in it.
    pub holds_ready: i64,
    /// Their mean time from placing to ready, in hours.
    pub mean_hours_to_ready: Option<f64>,
}

/// `holds`: every title with waiting holds, most holds per copy first, flagged above `ratio`
/// (the purchase alert); returns the mean time from placing to ready of holds that became
/// ready in the window (default the last 90 days).
pub fn holds(
    client: &mut Client,
    ctx: &Ctx,
    options: &ReportOptions,
    emit: &mut dyn FnMut(HoldsRow) -> Result<()>,
) -> Result<HoldWaits> {
    let f = frame(client, ctx, options)?;
    let w = f.window(options, 90)?;
    let limit = limit(options, i64::MAX / 2)?;
    let ratio = options.ratio.unwrap_or(DEFAULT_HOLD_RATIO);
    if !ratio.is_finite() || ratio < 0.0 {
        return Err(Error::invalid(
            "invalid_input",
            format!("--ratio {ratio} must be a number of holds per copy, 0 or more"),
        ));
    }
    stream(
        client,
        "SELECT b.id, b.isbn, b.title, q.n, b.total_copies, r.per_copy, r.per_copy > $1
         FROM (SELECT book_id, count(*) AS n FROM hold WHERE status = 'waiting'
               GROUP BY book_id) q
         JOIN book b ON b.id = q.book_id
         CROSS JOIN LATERAL (SELECT q.n::float8 / greatest(b.total_copies, 1) AS per_copy) r
         ORDER BY r.per_copy DESC, q.n DESC, b.id LIMIT $2",
        &[&ratio, &limit],
        |r| HoldsRow {
            book_id: r.get(0),
            isbn: r.get(1),
            title: r.get(2),
            waiting_holds: r.get(3),
            copies: r.get(4),
            holds_per_copy: r.get(5),
            buy_more: r.get(6),
        },
        emit,
    )?;
    let row = client.query_one(
        "SELECT count(*), (avg(extract(epoch FROM ready_at - placed_at)) / 3600)::float8
         FROM hold WHERE ready_at BETWEEN $1 AND $2",
        &[&w.start, &w.end],
    )?;
    let from = f.calendar.local_date(w.start);
    Ok(HoldWaits {
        from,
        to: f.calendar.local_date(w.end),
        holds_ready: row.get(0),
        mean_hours_to_ready: row.get(1),
    })
}
