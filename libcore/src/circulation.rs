//! Borrow, return and renew (SPEC §5).
//!
//! Concurrency: every operation locks the member row first (`SELECT … FOR UPDATE`) and only
//! then touches a book, so two operations can never deadlock on each other and every check
//! made under those locks stays true until COMMIT:
//! - the member lock serialises one member's operations: the loan limit, the duplicate check,
//!   the block check and the state of their loans cannot race; the member's loans and
//!   payments are read in the same round trip, after the lock is granted (`circulation_member`);
//! - a borrow locks the book row next, then the item it takes (the scanned one, or the
//!   title's first available one): exactly as many borrowers win as there are items on the
//!   shelf, and borrowers of one title queue on the book row as they always did;
//! - a return updates its loan, its item and its book in one statement.
//!
//! The schema backs this up: `available_copies` has a CHECK, a UNIQUE partial index forbids
//! two open loans of one book by one member, another forbids two open loans of one item, and
//! the loan's (book, item) key makes its item one of its book's (V20).
//!
//! Borrow, return and renew run on any [`Connection`]: on a plain `Client` each statement goes
//! out typed and unnamed (one round trip, right for a one-shot command); on a
//! [`Session`](crate::session::Session) each is prepared the first time and only executed
//! after that.

use std::sync::{Arc, LazyLock};

use chrono::{DateTime, NaiveDate, Utc};
use postgres::types::{ToSql, Type};
use postgres::{Client, Transaction};
use serde_json::json;
use uuid::Uuid;

use crate::actor::{Capability, Ctx};
use crate::audit::{self, Audited, OkRow, Operation};
use crate::calendar::{parse_timezone, Calendar};
use crate::catalog;
use crate::error::{Error, Refusal, Result};
use crate::fines::{self, FinePolicy};
use crate::hold_queue::{self, Ending, Trapped};
use crate::ids;
use crate::members;
use crate::page::{Cursor, Page};
use crate::ratelimit::{Gate, GatedRead};
use crate::session::{self, Connection, StampedCalendar, Statements};

/// Short-loan books go out for at most this many days, whatever the member's rule says.
pub const SHORT_LOAN_MAX_DAYS: i32 = 3;

/// A loan of one copy of a book to one member.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Loan {
    /// UUID v7.
    pub id: Uuid,
    /// The book.
    pub book_id: Uuid,
    /// The member.
    pub member_id: Uuid,
    /// When it left the desk.
    pub borrowed_at: DateTime<Utc>,
    /// The last second of the due date, library time.
    pub due_at: DateTime<Utc>,
    /// When it came back.
    pub returned_at: Option<DateTime<Utc>>,
    /// Renewals so far.
    pub renewals: i32,
    /// Assessed (open) or frozen (returned) fine.
    pub fine_cents: i64,
    /// The fine policy snapshot taken at borrow time.
    pub fine_cents_per_day: i64,
    /// Snapshot: grace days.
    pub grace_days: i32,
    /// Snapshot: cap.
    pub max_fine_cents: i64,
    /// The item lent; `None` only on loans returned before items existed (V20).
    pub item_id: Option<Uuid>,
    /// Its barcode.
    pub barcode: Option<String>,
    /// On a return: the hold its item was trapped for, so the desk shelves it for pickup.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hold: Option<Trapped>,
    /// How it ended: `returned`, `lost` or `claims_returned`; `None` while open.
    pub end_state: Option<String>,
    /// On a return of an item its loan had ended lost or claimed returned: what finding it
    /// did (the loan itself keeps its end).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub found: Option<crate::lost::Found>,
}

impl Loan {
    /// The fine policy this loan was borrowed under.
    pub fn fine_policy(&self) -> FinePolicy {
        FinePolicy {
            fine_cents_per_day: self.fine_cents_per_day,
            grace_days: self.grace_days,
            max_fine_cents: self.max_fine_cents,
        }
    }
}

/// The columns [`loan_from_row`] reads, for a query over `loan` unaliased.
macro_rules! loan_columns {
    () => {
        "id, book_id, member_id, borrowed_at, due_at, returned_at, renewals, \
         fine_cents, fine_cents_per_day, grace_days, max_fine_cents, item_id, end_state"
    };
}

pub(crate) const LOAN_COLUMNS: &str = loan_columns!();

/// [`LOAN_COLUMNS`] and the item's barcode.
pub(crate) const LOAN_COLUMNS_WITH_BARCODE: &str = concat!(
    loan_columns!(),
    ", (SELECT i.barcode FROM item i WHERE i.id = loan.item_id)"
);

pub(crate) fn loan_from_row(r: &postgres::Row) -> Loan {
    Loan {
        id: r.get(0),
        book_id: r.get(1),
        member_id: r.get(2),
        borrowed_at: r.get(3),
        due_at: r.get(4),
        returned_at: r.get(5),
        renewals: r.get(6),
        fine_cents: r.get(7),
        fine_cents_per_day: r.get(8),
        grace_days: r.get(9),
        max_fine_cents: r.get(10),
        item_id: r.get(11),
        end_state: r.get(12),
        barcode: if r.len() > 13 { r.get(13) } else { None },
        hold: None,
        found: None,
    }
}

pub use crate::loan_ref::LoanRef;

/// Which copy a borrow takes.
#[derive(Debug, Clone, Copy)]
pub enum Copy<'a> {
    /// Any available item of this book (id or ISBN).
    Title(&'a str),
    /// The item with this barcode, as scanned.
    Item(&'a str),
}

/// The parts of a member's circulation rule (`policy::CirculationRule`) the desk's rules read,
/// as `circulation_member` sends them.
pub(crate) struct MemberRule {
    pub(crate) category: String,
    loan_days: i32,
    max_active_loans: i32,
    max_renewals: i32,
    /// What a new loan snapshots.
    fine_policy: FinePolicy,
    block_fine_cents: i64,
    block_overdue_days: i32,
    pub(crate) max_holds: i32,
}

/// A member row locked for the rest of the transaction, with everything the rules need.
pub(crate) struct LockedMember {
    pub(crate) id: Uuid,
    pub(crate) email: String,
    pub(crate) status: String,
    pub(crate) created_at: DateTime<Utc>,
    pub(crate) expires_at: Option<DateTime<Utc>>,
    pub(crate) rule: MemberRule,
    /// The member's balance as stored (`member_balance_cents`): fines on their loans and the
    /// ledger, before open loans are assessed up to now.
    stored_balance_cents: i64,
    /// The library calendar: read with the member, or kept by the connection (V15).
    calendar: Arc<Calendar>,
    /// Open loans, read after the lock.
    pub(crate) loans: Vec<StandingLoan>,
    /// The book a borrow named, locked right after the member; `None` when none was named
    /// or there is no such book.
    pub(crate) book: Option<LockedBook>,
    /// The member's live holds, counted when a book was named.
    pub(crate) live_holds: Option<i64>,
}

/// A book row locked for a borrow, and the item it would take.
pub(crate) struct LockedBook {
    pub(crate) id: Uuid,
    pub(crate) category: String,
    pub(crate) title: String,
    /// The scanned item; else the item held for the member; else the title's first
    /// available one; `None` when there is none.
    pub(crate) item: Option<LockedItem>,
    /// The member's live hold on the title.
    pub(crate) own_hold: Option<OwnHold>,
}

/// An item row locked for a borrow.
pub(crate) struct LockedItem {
    id: Uuid,
    barcode: String,
    pub(crate) status: String,
    /// When it last came back to the shelf (or otherwise changed status).
    status_changed_at: DateTime<Utc>,
    /// On the hold shelf: whose ready hold holds it.
    held_for: Option<Uuid>,
}

/// A member's live hold on the title a borrow names.
pub(crate) struct OwnHold {
    pub(crate) id: Uuid,
    pub(crate) status: String,
    placed_at: DateTime<Utc>,
}

/// One open loan of a locked member.
pub(crate) struct StandingLoan {
    id: Uuid,
    pub(crate) book_id: Uuid,
    borrowed_at: DateTime<Utc>,
    due_at: DateTime<Utc>,
    stored_fine_cents: i64,
    policy: FinePolicy,
    renewals: i32,
    book_category: String,
    item_id: Option<Uuid>,
    barcode: Option<String>,
}

/// Whose lock [`lock_member`] takes.
#[derive(Clone, Copy)]
pub(crate) enum Whose {
    /// This member.
    Member(Uuid),
    /// The member who borrowed this loan (found in the same round trip).
    LoanOf(Uuid),
}

/// Locks the member (always the first lock), then the `book` a borrow names, and reads in the
/// same round trip the member's rule, the calendar and their standing: payments, stored fines
/// and open loans, read once the locks are held, so nothing committed by the previous holder
/// of the member lock is missed (`circulation_member`, V9, V13, V14, V15).
///
/// Given the mutation's rate-limit [`Gate`], the call passes it first, in the same round
/// trip; without one (the caller's transaction has passed its own), on its own.
pub(crate) fn lock_member(
    tx: &mut Transaction<'_>,
    mut statements: Option<&mut Statements>,
    gate: Option<&mut Gate<'_>>,
    whose: Whose,
    book: Option<Uuid>,
    barcode: Option<&str>,
) -> Result<LockedMember> {
    let (member, loan) = match whose {
        Whose::Member(id) => (Some(id), None),
        Whose::LoanOf(id) => (None, Some(id)),
    };
    let kept = statements.as_ref().and_then(|s| s.calendar.clone());
    let kept_stamp = kept.as_ref().map(|k| k.stamp);
    let params: [(&(dyn ToSql + Sync), Type); 5] = [
        (&member, Type::UUID),
        (&loan, Type::UUID),
        (&book, Type::UUID),
        (&kept_stamp, Type::UUID),
        (&barcode, Type::TEXT),
    ];
    let rows = match gate {
        Some(gate) => gate.pass_with(tx, statements.as_deref_mut(), &MEMBER_GATED, &params)?,
        None => MEMBER_GATED.without_gate(tx, statements.as_deref_mut(), &params)?,
    };
    let row = rows.first().ok_or_else(|| match whose {
        Whose::Member(id) => Error::not_found("member", id.to_string()),
        Whose::LoanOf(id) => Error::not_found("loan", id.to_string()),
    })?;
    let calendar = read_calendar(row, kept, statements)?;
    let loans = rows
        .iter()
        .filter_map(|r| {
            let id: Option<Uuid> = r.get(19);
            Some(StandingLoan {
                id: id?,
                book_id: r.get(20),
                borrowed_at: r.get(21),
                due_at: r.get(22),
                stored_fine_cents: r.get(23),
                policy: FinePolicy {
                    fine_cents_per_day: r.get(24),
                    grace_days: r.get(25),
                    max_fine_cents: r.get(26),
                },
                renewals: r.get(27),
                book_category: r.get(28),
                item_id: r.get(33),
                barcode: r.get(34),
            })
        })
        .collect();
    Ok(LockedMember {
        id: row.get(0),
        email: row.get(1),
        status: row.get(2),
        created_at: row.get(3),
        expires_at: row.get(4),
        rule: MemberRule {
            category: row.get(5),
            loan_days: row.get(6),
            max_active_loans: row.get(7),
            max_renewals: row.get(8),
            fine_policy: FinePolicy {
                fine_cents_per_day: row.get(9),
                grace_days: row.get(10),
                max_fine_cents: row.get(11),
            },
            block_fine_cents: row.get(12),
            block_overdue_days: row.get(13),
            max_holds: row.get(43),
        },
        stored_balance_cents: row.get(14),
        calendar,
        loans,
        book: row.get::<_, Option<String>>(29).map(|category| LockedBook {
            id: row.get(32),
            category,
            title: row.get(31),
            item: row.get::<_, Option<Uuid>>(35).map(|id| LockedItem {
                id,
                barcode: row.get(36),
                status: row.get(37),
                status_changed_at: row.get(38),
                held_for: row.get(42),
            }),
            own_hold: row.get::<_, Option<Uuid>>(39).map(|id| OwnHold {
                id,
                status: row.get(40),
                placed_at: row.get(41),
            }),
        }),
        live_holds: row.get(44),
    })
}

/// The calendar `circulation_member` sent, which the connection then keeps with its stamp; or,
/// when it sent none because the stamp the connection passed is still the database's, the one
/// the connection kept.
fn read_calendar(
    row: &postgres::Row,
    kept: Option<StampedCalendar>,
    statements: Option<&mut Statements>,
) -> Result<Arc<Calendar>> {
    let Some(closed) = row.get::<_, Option<Vec<NaiveDate>>>(17) else {
        return kept.map(|k| k.calendar).ok_or_else(|| {
            Error::Internal(
                "circulation_member sent no calendar to a caller that keeps none".into(),
            )
        });
    };
    let zone: Option<&str> = row.get(16);
    let zone = zone.ok_or_else(|| Error::Internal("the library has no timezone setting".into()))?;
    let calendar = Arc::new(Calendar::new(parse_timezone(zone)?, closed));
    if let (Some(statements), Some(stamp)) = (statements, row.get::<_, Option<Uuid>>(18)) {
        statements.calendar = Some(StampedCalendar {
            stamp,
            calendar: Arc::clone(&calendar),
        });
    }
    Ok(calendar)
}

static MEMBER_GATED: LazyLock<GatedRead> =
    LazyLock::new(|| GatedRead::new("circulation_member", 5));

impl LockedMember {
    /// The member's open loan `id`, as read under the lock; `already_returned` when it is
    /// not open (a loan being looked at belongs to this member, so it exists).
    fn open_loan(&self, id: Uuid) -> Result<&StandingLoan> {
        self.loans.iter().find(|l| l.id == id).ok_or_else(|| {
            Error::refused(
                Refusal::AlreadyReturned,
                format!("loan {id} was already returned"),
            )
        })
    }
}

/// What the member's loans add up to at `now`.
pub(crate) struct MemberLoans {
    open_book_ids: Vec<Uuid>,
    outstanding_cents: i64,
    max_overdue_days: i32,
}

pub(crate) fn member_loans(member: &LockedMember, now: DateTime<Utc>) -> MemberLoans {
    // Returned loans owe what is stored on them; an open loan owes the larger of its stored
    // fine and its fine as of `now` (the nightly job may not have run yet).
    let mut loans = MemberLoans {
        open_book_ids: Vec::new(),
        outstanding_cents: member.stored_balance_cents,
        max_overdue_days: 0,
    };
    for loan in &member.loans {
        loans.open_book_ids.push(loan.book_id);
        let overdue = member.calendar.overdue_days(loan.due_at, now);
        loans.max_overdue_days = loans.max_overdue_days.max(overdue);
        let assessed = fines::fine_for_overdue_days(&loan.policy, overdue);
        loans.outstanding_cents += (assessed - loan.stored_fine_cents).max(0);
    }
    loans
}

/// Refuses a member who is not active or whose membership has expired.
pub(crate) fn require_active(member: &LockedMember, now: DateTime<Utc>) -> Result<()> {
    if member.status != "active" {
        return Err(Error::refused(
            Refusal::MemberNotActive,
            format!("{} is {}, not active", member.email, member.status),
        ));
    }
    if member.expires_at.is_some_and(|e| e <= now) {
        return Err(Error::refused(
            Refusal::MembershipExpired,
            format!("the membership of {} has expired", member.email),
        ));
    }
    Ok(())
}

/// Refuses a blocked member: outstanding fines at or above the threshold, or a loan overdue
/// by more than the allowed days.
pub(crate) fn require_not_blocked(member: &LockedMember, loans: &MemberLoans) -> Result<()> {
    if loans.outstanding_cents >= member.rule.block_fine_cents {
        return Err(Error::refused(
            Refusal::MemberBlocked,
            format!(
                "{} owes {} cents, at or above the block threshold of {}",
                member.email, loans.outstanding_cents, member.rule.block_fine_cents
            ),
        ));
    }
    if loans.max_overdue_days > member.rule.block_overdue_days {
        return Err(Error::refused(
            Refusal::MemberBlocked,
            format!(
                "{} has a loan {} days overdue, more than {}",
                member.email, loans.max_overdue_days, member.rule.block_overdue_days
            ),
        ));
    }
    Ok(())
}

/// How many days a loan of a book of `category` runs under `rule`: short-loan books go out
/// for at most [`SHORT_LOAN_MAX_DAYS`].
fn loan_days(rule: &MemberRule, category: &str) -> i32 {
    if category == "short_loan" {
        rule.loan_days.min(SHORT_LOAN_MAX_DAYS)
    } else {
        rule.loan_days
    }
}

/// Which checks an approved override skips (SPEC §7).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Overrides {
    /// Skip the loan limit.
    pub loan_limit: bool,
    /// Skip the fine/overdue block.
    pub block: bool,
}

/// Borrows one copy of a book for a member: any available item of the title.
pub fn borrow(
    connection: &mut impl Connection,
    ctx: &Ctx,
    member: &str,
    book: &str,
) -> Result<Loan> {
    borrow_copy(connection, ctx, member, Copy::Title(book))
}

/// Borrows the copy `copy` names for a member.
pub fn borrow_copy(
    connection: &mut impl Connection,
    ctx: &Ctx,
    member: &str,
    copy: Copy<'_>,
) -> Result<Loan> {
    let details = match copy {
        Copy::Title(book) => json!({ "member": member, "book": book }),
        Copy::Item(barcode) => json!({ "member": member, "item": barcode }),
    };
    let op = Operation::new("loan.borrow", "loan", details);
    audit::run_on(connection, ctx, &op, |tx, mut statements, gate| {
        // An id needs no lookup: the lock below reads the row (and says not_found) anyway.
        let member_id = match Uuid::parse_str(member.trim()) {
            Ok(id) => id,
            Err(_) => members::find_member(tx, member)?.id,
        };
        ctx.require_self_or(member_id, Capability::CirculateForOthers)?;
        let wanted = match copy {
            Copy::Title(book) => Wanted::Title(match Uuid::parse_str(book.trim()) {
                Ok(id) => id,
                Err(_) => catalog::book_id(tx, book)?,
            }),
            Copy::Item(barcode) => Wanted::Item(barcode.trim()),
        };
        let planned = plan_borrow(
            tx,
            statements.as_deref_mut(),
            Some(gate),
            ctx,
            member_id,
            wanted,
            Overrides::default(),
        )?;
        let loan = &planned.loan;
        let mut details = json!({ "after": loan });
        if let Some(hold) = planned.fulfils {
            details["fulfils"] = json!(hold);
        }
        let row = OkRow::new(ctx, &op, loan.borrowed_at, loan.id, details);
        let taken = i32::from(planned.from_open_shelf);
        let params = row.params(&insert_loan_params(loan, &taken));
        session::execute(tx, statements, &BORROW_AUDITED, &params)?;
        fulfil(tx, ctx, &planned)?;
        Ok(Audited::written(planned.loan))
    })
}

/// The borrow itself, inside a caller's transaction that writes its own audit row: approvals
/// reuse it for overrides.
pub(crate) fn borrow_in(
    tx: &mut Transaction<'_>,
    mut statements: Option<&mut Statements>,
    ctx: &Ctx,
    member_id: Uuid,
    book_id: Uuid,
    overrides: Overrides,
) -> Result<Loan> {
    let planned = plan_borrow(
        tx,
        statements.as_deref_mut(),
        None,
        ctx,
        member_id,
        Wanted::Title(book_id),
        overrides,
    )?;
    let taken = i32::from(planned.from_open_shelf);
    session::execute(
        tx,
        statements,
        &BORROW_PLAIN,
        &insert_loan_params(&planned.loan, &taken),
    )?;
    fulfil(tx, ctx, &planned)?;
    Ok(planned.loan)
}

/// Fulfils the hold a borrow serves, in the borrow's transaction (after its writes).
fn fulfil(tx: &mut Transaction<'_>, ctx: &Ctx, planned: &PlannedBorrow) -> Result<()> {
    if let (Some(hold), Some(item)) = (planned.fulfils, planned.loan.item_id) {
        hold_queue::end(
            tx,
            ctx,
            hold,
            Ending::Fulfilled(item),
            planned.loan.borrowed_at,
        )?;
    }
    Ok(())
}

/// A borrow's writes: the item leaves the shelf, its book's counter follows (an item from the
/// hold shelf was not counted available), and the loan is inserted.
const BORROW_TAKEN: &str = "taken AS (UPDATE book SET available_copies = available_copies - $10, \
     times_borrowed = times_borrowed + 1 WHERE id = $2), \
     lent AS (UPDATE item SET status = 'on_loan', status_changed_at = $4 WHERE id = $9)";
const BORROW_INSERT: &str =
    "INSERT INTO loan (id, book_id, member_id, borrowed_at, due_at, fine_cents_per_day, grace_days, max_fine_cents, item_id) \
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)";
static BORROW_AUDITED: LazyLock<String> =
    LazyLock::new(|| OkRow::sql(10, BORROW_TAKEN, BORROW_INSERT));
/// The same writes without the audit row, for a caller that writes its own.
static BORROW_PLAIN: LazyLock<String> =
    LazyLock::new(|| format!("WITH {BORROW_TAKEN} {BORROW_INSERT}"));

fn insert_loan_params<'a>(
    loan: &'a Loan,
    from_open_shelf: &'a i32,
) -> [(&'a (dyn ToSql + Sync), Type); 10] {
    [
        (&loan.id, Type::UUID),
        (&loan.book_id, Type::UUID),
        (&loan.member_id, Type::UUID),
        (&loan.borrowed_at, Type::TIMESTAMPTZ),
        (&loan.due_at, Type::TIMESTAMPTZ),
        (&loan.fine_cents_per_day, Type::INT8),
        (&loan.grace_days, Type::INT4),
        (&loan.max_fine_cents, Type::INT8),
        (&loan.item_id, Type::UUID),
        (from_open_shelf, Type::INT4),
    ]
}

/// What a borrow asks for, resolved as far as it can be without a lock.
#[derive(Clone, Copy)]
enum Wanted<'a> {
    /// Any available item of this book.
    Title(Uuid),
    /// The item with this barcode.
    Item(&'a str),
}

/// A borrow decided under its locks, before anything is written.
struct PlannedBorrow {
    loan: Loan,
    /// The item came off the open shelf (not the hold shelf): the title's available counter
    /// goes down.
    from_open_shelf: bool,
    /// The member's live hold on the title, which this borrow fulfils.
    fulfils: Option<Uuid>,
}

/// Locks the member and the book and applies every rule of a borrow; the loan it would insert.
/// Nothing is written.
fn plan_borrow(
    tx: &mut Transaction<'_>,
    statements: Option<&mut Statements>,
    gate: Option<&mut Gate<'_>>,
    ctx: &Ctx,
    member_id: Uuid,
    wanted: Wanted<'_>,
    overrides: Overrides,
) -> Result<PlannedBorrow> {
    let (book, barcode) = match wanted {
        Wanted::Title(id) => (Some(id), None),
        Wanted::Item(barcode) => (None, Some(barcode)),
    };
    let member = lock_member(
        tx,
        statements,
        gate,
        Whose::Member(member_id),
        book,
        barcode,
    )?;
    // The time is read once the locks are held, so it is never before the return that put
    // the item back (committed while this borrow waited): no two loans of an item overlap.
    let now = ctx.now();
    if now < member.created_at {
        return Err(Error::invalid(
            "invalid_input",
            format!("{} did not exist yet at {now}", member.email),
        ));
    }
    let loans = member_loans(&member, now);
    require_active(&member, now)?;
    if !overrides.block {
        require_not_blocked(&member, &loans)?;
    }
    if !overrides.loan_limit
        && loans.open_book_ids.len() as i64 >= i64::from(member.rule.max_active_loans)
    {
        return Err(Error::refused(
            Refusal::LoanLimitReached,
            format!(
                "{} already has {} open loans, the limit of the {} category",
                member.email,
                loans.open_book_ids.len(),
                member.rule.category
            ),
        ));
    }
    let Some(LockedBook {
        id: book_id,
        category,
        title,
        item,
        own_hold,
    }) = member.book.as_ref()
    else {
        return Err(match wanted {
            Wanted::Title(id) => Error::not_found("book", id.to_string()),
            Wanted::Item(barcode) => Error::not_found("item", barcode),
        });
    };
    let book_id = *book_id;
    if loans.open_book_ids.contains(&book_id) {
        return Err(Error::refused(
            Refusal::DuplicateLoan,
            format!("{} already has this book", member.email),
        ));
    }
    if category == "reference" {
        return Err(Error::refused(
            Refusal::NotLoanable,
            format!("{title:?} is a reference book"),
        ));
    }
    // On the open shelf, or on the hold shelf for this member: theirs to take.
    let takeable = |item: &LockedItem| {
        item.status == "available"
            || (item.status == "on_hold_shelf" && item.held_for == Some(member_id))
    };
    let item = match item {
        Some(item) if takeable(item) && now < item.status_changed_at => {
            if ctx.at.is_some() {
                return Err(backdated_before_shelf(item, now));
            }
            item
        }
        Some(item) if takeable(item) => item,
        Some(item) if item.status == "on_hold_shelf" => {
            return Err(Error::refused(
                Refusal::ItemOnHold,
                format!(
                    "item {} of {title:?} is on the hold shelf for another member",
                    item.barcode
                ),
            ))
        }
        Some(item) => {
            return Err(Error::refused(
                Refusal::ItemNotAvailable,
                format!(
                    "item {} of {title:?} is {}, not on the shelf",
                    item.barcode, item.status
                ),
            ))
        }
        None => {
            return Err(Error::refused(
                Refusal::NoCopyAvailable,
                format!("no copy of {title:?} is available"),
            ))
        }
    };
    // Live, another client whose clock runs ahead may have shelved the item "after" this
    // host's now: the loan starts when the item was back, so the two never overlap.
    let now = now.max(item.status_changed_at);
    let due_at = member
        .calendar
        .due_at(now, loan_days(&member.rule, category));
    let policy = member.rule.fine_policy;
    let loan = Loan {
        id: ids::new_id(now),
        book_id,
        member_id,
        borrowed_at: now,
        due_at,
        returned_at: None,
        renewals: 0,
        fine_cents: 0,
        fine_cents_per_day: policy.fine_cents_per_day,
        grace_days: policy.grace_days,
        max_fine_cents: policy.max_fine_cents,
        item_id: Some(item.id),
        barcode: Some(item.barcode.clone()),
        hold: None,
        end_state: None,
        found: None,
    };
    // Whatever copy the member takes, their hold on the title is served by it (a ready hold's
    // other item then passes on); a borrow backdated to before the hold was placed cannot be.
    if let Some(hold) = own_hold.as_ref().filter(|h| now < h.placed_at) {
        return Err(Error::invalid(
            "invalid_input",
            format!(
                "a borrow at {now} is before the member's hold on this title was placed \
                 ({}); cancel the hold first",
                hold.placed_at
            ),
        ));
    }
    let fulfils = own_hold.as_ref().map(|h| h.id);
    Ok(PlannedBorrow {
        loan,
        from_open_shelf: item.status == "available",
        fulfils,
    })
}

/// A borrow backdated (`--at`) to before its item came back to the shelf: it was out then.
fn backdated_before_shelf(item: &LockedItem, now: DateTime<Utc>) -> Error {
    Error::invalid(
        "invalid_input",
        format!(
            "item {} was not on the shelf at {now}: it came back at {}",
            item.barcode, item.status_changed_at
        ),
    )
}

/// Locks the member whose loan a reference names (one round trip for a loan id) and checks
/// that the actor may act on it; returns the member and the loan's id.
fn lock_member_of(
    tx: &mut Transaction<'_>,
    statements: Option<&mut Statements>,
    gate: &mut Gate<'_>,
    ctx: &Ctx,
    loan: &LoanRef,
) -> Result<(LockedMember, Uuid)> {
    let (whose, loan_id) = match loan {
        LoanRef::Id(id) => (Whose::LoanOf(*id), *id),
        LoanRef::MemberBook { member, book } => {
            let (member_id, loan_id) = crate::loan_ref::find_loan(tx, member, book)?;
            (Whose::Member(member_id), loan_id)
        }
        LoanRef::Item { item } => {
            let (member_id, loan_id) = crate::loan_ref::find_item_loan(tx, item)?;
            (Whose::Member(member_id), loan_id)
        }
    };
    let member = lock_member(tx, statements, Some(gate), whose, None, None)?;
    ctx.require_self_or(member.id, Capability::CirculateForOthers)?;
    Ok((member, loan_id))
}

/// A return backdated with `--at` that leaves the member owing less than a return now would
/// (or than was already assessed) is a waiver in disguise: one person could wipe a fine. It
/// needs the authority a waiver needs from one person, an admin's; a librarian returns the
/// item at the real time and files a waiver request for a second person to decide.
fn require_waiver_authority_for_backdating(
    ctx: &Ctx,
    current: &StandingLoan,
    member: &LockedMember,
    fine: i64,
) -> Result<()> {
    if ctx.at.is_none() || ctx.actor.role == crate::actor::Role::Admin {
        return Ok(());
    }
    let owed_now = fines::fine_cents(
        &current.policy,
        current.due_at,
        Utc::now(),
        &member.calendar,
    )
    .max(current.stored_fine_cents);
    if fine < owed_now {
        return Err(Error::denied(format!(
            "a return backdated to {} would lower the fine from {owed_now} to {fine} cents; \
             that needs an admin, or a return now and a waiver request",
            ctx.now()
        )));
    }
    Ok(())
}

/// Returns a loan: restores the copy and freezes the fine, atomically.
pub fn return_loan(connection: &mut impl Connection, ctx: &Ctx, loan: &LoanRef) -> Result<Loan> {
    let op = Operation::new("loan.return", "loan", json!({ "loan": loan }));
    audit::run_on(connection, ctx, &op, |tx, mut statements, gate| {
        let (member, loan_id) = lock_member_of(tx, statements.as_deref_mut(), gate, ctx, loan)?;
        if member.open_loan(loan_id).is_err() {
            // The item of a loan that ended lost or claimed returned, back at the desk.
            if let Some(found) = crate::lost::found_in(tx, ctx, loan_id, ctx.now())? {
                let row = tx.query_one(
                    &format!("SELECT {LOAN_COLUMNS_WITH_BARCODE} FROM loan WHERE id = $1"),
                    &[&loan_id],
                )?;
                let loan = Loan {
                    found: Some(found.clone()),
                    ..loan_from_row(&row)
                };
                return Ok(Audited::new(
                    loan,
                    loan_id,
                    json!({ "item": found.barcode, "found": found }),
                ));
            }
        }
        let current = member.open_loan(loan_id)?;
        let now = ctx.now();
        // Live, a loan that another client's clock started "after" this host's now ends no
        // earlier than it began.
        let now = if ctx.at.is_none() {
            now.max(current.borrowed_at)
        } else {
            now
        };
        if now < current.borrowed_at {
            return Err(Error::invalid(
                "invalid_input",
                format!(
                    "cannot return at {now}, before the loan began at {}",
                    current.borrowed_at
                ),
            ));
        }
        let fine = fines::fine_cents(&current.policy, current.due_at, now, &member.calendar);
        require_waiver_authority_for_backdating(ctx, current, &member, fine)?;
        let row = OkRow::new(
            ctx,
            &op,
            now,
            current.id,
            json!({ "item": current.barcode,
                    "before": { "returned_at": null, "fine_cents": current.stored_fine_cents },
                    "after": { "returned_at": now, "fine_cents": fine } }),
        );
        let actor_role = ctx.actor.role.as_str();
        let own: [(&(dyn ToSql + Sync), Type); 6] = [
            (&current.id, Type::UUID),
            (&now, Type::TIMESTAMPTZ),
            (&fine, Type::INT8),
            (&member.calendar.local_date(now), Type::DATE),
            (&ctx.actor.name, Type::TEXT),
            (&actor_role, Type::TEXT),
        ];
        let rows = session::query(tx, statements, &RETURN_AUDITED, &row.params(&own))?;
        Ok(Audited::written(Loan {
            id: current.id,
            book_id: current.book_id,
            member_id: member.id,
            borrowed_at: current.borrowed_at,
            due_at: current.due_at,
            returned_at: Some(now),
            renewals: current.renewals,
            fine_cents: fine,
            fine_cents_per_day: current.policy.fine_cents_per_day,
            grace_days: current.policy.grace_days,
            max_fine_cents: current.policy.max_fine_cents,
            item_id: current.item_id,
            barcode: current.barcode.clone(),
            hold: Trapped::from_row(&rows[0], 0),
            end_state: Some("returned".to_string()),
            found: None,
        }))
    })
}

/// A return's writes (`loan_return`, V21): the loan closes, and its item goes to the first
/// waiting hold in good standing or back to the shelf. Locks the loan, then the book, the
/// title's holds and the item. No cycle can form: the member lock keeps every other
/// circulation command off this loan and its item (which is on loan, so no status change
/// touches it), and everything else that locks a title's holds or items takes its book first.
static RETURN_AUDITED: LazyLock<String> = LazyLock::new(|| {
    OkRow::sql(
        6,
        "",
        "SELECT t.hold_id, t.member_id, t.ready_at, t.pickup_by \
         FROM loan_return($1, $2, $3, $4, $5, $6) t",
    )
});

/// Renews a loan by `loan_days` from the later of now and its current due date.
pub fn renew(connection: &mut impl Connection, ctx: &Ctx, loan: &LoanRef) -> Result<Loan> {
    let op = Operation::new("loan.renew", "loan", json!({ "loan": loan }));
    audit::run_on(connection, ctx, &op, |tx, mut statements, gate| {
        let (member, loan_id) = lock_member_of(tx, statements.as_deref_mut(), gate, ctx, loan)?;
        let current = member.open_loan(loan_id)?;
        let now = ctx.now();
        require_renewable(tx, statements.as_deref_mut(), &member, current, now)?;
        let loan_days = loan_days(&member.rule, &current.book_category);
        let due_at = member.calendar.due_at(now.max(current.due_at), loan_days);
        let row = OkRow::new(
            ctx,
            &op,
            now,
            current.id,
            json!({ "item": current.barcode,
                    "before": { "due_at": current.due_at, "renewals": current.renewals },
                    "after": { "due_at": due_at, "renewals": current.renewals + 1 } }),
        );
        let own: [(&(dyn ToSql + Sync), Type); 2] =
            [(&current.id, Type::UUID), (&due_at, Type::TIMESTAMPTZ)];
        let rows = session::query(tx, statements, &RENEW_AUDITED, &row.params(&own))?;
        Ok(Audited::written(Loan {
            barcode: current.barcode.clone(),
            ..loan_from_row(&rows[0])
        }))
    })
}

/// What the nightly's auto-renewal step did.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct AutoRenewals {
    /// Loans renewed.
    pub renewed: i64,
    /// Loans that could not be (each member told why).
    pub failed: i64,
}

/// Loans one auto-renewal transaction handles.
const AUTO_RENEW_BATCH: usize = 200;

/// Refuses a renewal of `current` at `at` that the rules forbid, in the order the desk checks
/// them: the renewal limit, the member's standing, waiting holds that need the copy. The
/// desk's `renew` and the nightly's auto-renewal both ask here.
fn require_renewable(
    tx: &mut Transaction<'_>,
    statements: Option<&mut Statements>,
    member: &LockedMember,
    current: &StandingLoan,
    at: DateTime<Utc>,
) -> Result<()> {
    if current.renewals >= member.rule.max_renewals {
        return Err(Error::refused(
            Refusal::RenewalLimitReached,
            format!(
                "loan {} has been renewed {} times, the limit",
                current.id, current.renewals
            ),
        ));
    }
    let loans = member_loans(member, at);
    require_active(member, at)?;
    require_not_blocked(member, &loans)?;
    let book: [(&(dyn ToSql + Sync), Type); 1] = [(&current.book_id, Type::UUID)];
    let unserved: i64 = session::query(tx, statements, &UNSERVED_HOLDS, &book)?[0].get(0);
    if unserved > 0 {
        return Err(Error::refused(
            Refusal::RenewalBlockedByHold,
            format!(
                "{unserved} waiting hold(s) on this title need a copy: loan {} cannot be renewed",
                current.id
            ),
        ));
    }
    Ok(())
}

/// The nightly's auto-renewal as of `as_of`: every open loan whose category has `auto_renew`,
/// due on `as_of` or the day after, is renewed from its due date when a desk renewal would be
/// allowed at the end of `as_of`; otherwise the member gets an `auto_renew_failed` notice with
/// the refusal code, once per loan and due date. An `auto_renewed` notice, unique per loan
/// and due date, is written in the renewal's transaction, so no run renews a loan twice for
/// one due date. Each loan is handled under its member's lock, [`AUTO_RENEW_BATCH`] per
/// transaction.
pub(crate) fn auto_renew_in<C: crate::joblock::Batches>(
    c: &mut C,
    ctx: &Ctx,
    as_of: NaiveDate,
) -> Result<AutoRenewals> {
    let calendar = Calendar::load(c)?;
    let from = calendar.end_of_day(as_of.pred_opt().unwrap_or(as_of));
    let until = calendar.end_of_day(as_of.succ_opt().unwrap_or(as_of));
    let at = calendar.end_of_day(as_of).min(ctx.now());
    let due: Vec<(Uuid, Uuid)> = c
        .query(
            "SELECT l.id, l.member_id FROM loan l
             JOIN member m ON m.id = l.member_id
             JOIN circulation_rule r ON r.category = m.category
             WHERE l.returned_at IS NULL AND r.auto_renew AND l.due_at > $1 AND l.due_at <= $2
             ORDER BY l.id",
            &[&from, &until],
        )?
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    let mut done = AutoRenewals::default();
    for batch in due.chunks(AUTO_RENEW_BATCH) {
        let mut tx = c.batch()?;
        for &(loan_id, member_id) in batch {
            let member = lock_member(&mut tx, None, None, Whose::Member(member_id), None, None)?;
            let Ok(current) = member.open_loan(loan_id) else {
                continue; // returned meanwhile
            };
            if current.due_at <= from || current.due_at > until {
                continue; // renewed meanwhile
            }
            let due_on = calendar.local_date(current.due_at);
            let refusal = match require_renewable(&mut tx, None, &member, current, at) {
                Ok(()) => None,
                Err(Error::Refused { reason, .. }) => Some(reason.as_str()),
                Err(e) => return Err(e),
            };
            if let Some(reason) = refusal {
                let notice = tx.execute(
                    "INSERT INTO notice (id, kind, loan_id, member_id, issued_on, key_date, reason, created_at,
                                         pending_handover)
                     VALUES ($1, 'auto_renew_failed', $2, $3, $4, $5, $6, $7, true)
                     ON CONFLICT (loan_id, key_date) WHERE kind = 'auto_renew_failed' DO NOTHING",
                    &[&ids::new_id(at), &loan_id, &member_id, &as_of, &due_on, &reason, &at],
                )?;
                if notice == 1 {
                    done.failed += 1;
                }
                continue;
            }
            let renewing = tx.execute(
                "INSERT INTO notice (id, kind, loan_id, member_id, issued_on, key_date, created_at,
                                     pending_handover)
                 VALUES ($1, 'auto_renewed', $2, $3, $4, $5, $6, true)
                 ON CONFLICT (loan_id, key_date) WHERE kind = 'auto_renewed' DO NOTHING",
                &[&ids::new_id(at), &loan_id, &member_id, &as_of, &due_on, &at],
            )?;
            if renewing == 0 {
                continue; // renewed for this due date already
            }
            let due_at = calendar.due_at(
                current.due_at,
                loan_days(&member.rule, &current.book_category),
            );
            tx.execute(
                "UPDATE loan SET due_at = $2, renewals = renewals + 1 WHERE id = $1",
                &[&loan_id, &due_at],
            )?;
            audit::record(
                &mut tx,
                ctx,
                &audit::Entry {
                    action: "loan.auto_renew",
                    entity_type: "loan",
                    entity_id: Some(loan_id.to_string()),
                    outcome: "ok",
                    details: json!({ "item": current.barcode,
                                     "before": { "due_at": current.due_at, "renewals": current.renewals },
                                     "after": { "due_at": due_at, "renewals": current.renewals + 1 } }),
                },
            )?;
            done.renewed += 1;
        }
        tx.commit()?;
    }
    Ok(done)
}

/// Waiting holds on a title beyond the copies on its shelf: a renewal would keep one of
/// them waiting.
static UNSERVED_HOLDS: LazyLock<String> = LazyLock::new(|| {
    "SELECT (SELECT count(*) FROM hold WHERE book_id = $1 AND status = 'waiting') \
          - (SELECT count(*) FROM item WHERE book_id = $1 AND status = 'available')"
        .to_string()
});

static RENEW_AUDITED: LazyLock<String> = LazyLock::new(|| {
    OkRow::sql(
        2,
        "",
        &format!("UPDATE loan SET due_at = $2, renewals = renewals + 1 WHERE id = $1 RETURNING {LOAN_COLUMNS}"),
    )
});

/// Filters for [`list_loans`].
#[derive(Debug, Clone, Default)]
pub struct LoanFilter {
    /// Member id or email.
    pub member: Option<String>,
    /// Book id or ISBN.
    pub book: Option<String>,
    /// Only loans not yet returned.
    pub open_only: bool,
}

/// Lists loans, history included. Members see only their own; staff see anyone's.
pub fn list_loans(
    client: &mut Client,
    ctx: &Ctx,
    filter: &LoanFilter,
    limit: i64,
    cursor: Option<&str>,
) -> Result<Page<Loan>> {
    let member_id = members::listing_scope(client, ctx, filter.member.as_deref())?;
    match member_id {
        Some(id) => ctx.require_self_or(id, Capability::ManageMembers)?,
        None => ctx.require(Capability::Reports)?,
    }
    let book_id = filter
        .book
        .as_deref()
        .map(|b| catalog::book_id(client, b))
        .transpose()?;
    let after = cursor.map(Cursor::decode).transpose()?.map(|c| c.0);
    let limit = crate::validate::limit(limit, 10_000)?;
    let rows = client.query(
        &format!(
            "SELECT {LOAN_COLUMNS_WITH_BARCODE} FROM loan_all loan
             WHERE ($1::uuid IS NULL OR member_id = $1)
               AND ($2::uuid IS NULL OR book_id = $2)
               AND (NOT $3 OR returned_at IS NULL)
               AND ($4::uuid IS NULL OR id > $4)
             ORDER BY id LIMIT $5"
        ),
        &[
            &member_id,
            &book_id,
            &filter.open_only,
            &after,
            &(limit + 1),
        ],
    )?;
    Ok(Page::from_rows(
        rows.iter().map(loan_from_row).collect(),
        limit,
        |l| l.id,
    ))
}
