//! Lost items and claims returned (SPEC §16).
//!
//! - Declared lost (`libctl lost`, or the nightly's long-overdue step): the loan ends as
//!   `lost`, its fine stops at that moment, the item becomes `lost`, and the replacement price
//!   (the item's, else the library's default) and the category's processing fee are charged,
//!   each once per loan, with a `lost_billed` notice.
//! - Claimed returned (`libctl claim-returned`): the loan ends as `claims_returned`, its fine
//!   stops, the item becomes `missing`. A member's claims beyond `max_claims_returned` need an
//!   approved override.
//! - Found: the item of a lost or claimed loan scanned back in is trapped for a hold or goes
//!   back on the shelf; a lost one refunds its replacement charge when the category says so,
//!   less what was waived of it (never the processing fee).
//!
//! Locks: the member row first, then the loan, the book and the item: the order of a return.

use chrono::{DateTime, NaiveDate, Utc};
use postgres::{Client, GenericClient};
use serde_json::json;
use uuid::Uuid;

use crate::actor::{Capability, Ctx};
use crate::audit::{self, Audited, Entry, Operation};
use crate::calendar::Calendar;
use crate::error::{Error, Refusal, Result};
use crate::fines::{self, FinePolicy};
use crate::hold_queue::Trapped;
use crate::joblock::Batches;
use crate::ledger;
use crate::loan_ref::LoanRef;

/// `lost auto` refuses to mark more items than this unless raised.
pub const DEFAULT_MAX_ITEMS: i64 = 1000;

/// Loans a long-overdue run declares lost per transaction.
const BATCH: usize = 200;

/// A loan declared lost and what it was billed.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct LostLoan {
    /// The loan.
    pub loan_id: Uuid,
    /// Its member.
    pub member_id: Uuid,
    /// The item's barcode.
    pub barcode: String,
    /// The title.
    pub title: String,
    /// When it was due.
    pub due_at: DateTime<Utc>,
    /// When it was declared lost: the loan's end.
    pub lost_at: DateTime<Utc>,
    /// The overdue fine, frozen at that moment.
    pub fine_cents: i64,
    /// The replacement charge.
    pub replacement_cents: i64,
    /// The processing fee.
    pub processing_fee_cents: i64,
}

/// A loan closed as claimed returned.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Claim {
    /// The loan.
    pub loan_id: Uuid,
    /// Its member.
    pub member_id: Uuid,
    /// The item's barcode; the item is now `missing`.
    pub barcode: String,
    /// When the claim was recorded: the loan's end.
    pub claimed_at: DateTime<Utc>,
    /// The fine, frozen at that moment.
    pub fine_cents: i64,
    /// The member's claims, this one included.
    pub claims: i64,
    /// Whether an approved override let it past `max_claims_returned`.
    pub overridden: bool,
}

/// The item of a lost or claimed loan, back at the desk.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Found {
    /// The loan it was lost (or claimed returned) on.
    pub loan_id: Uuid,
    /// `lost` or `claims_returned`.
    pub end_state: String,
    /// The barcode.
    pub barcode: String,
    /// The refund written for its replacement charge (0: none).
    pub refund_cents: i64,
    /// The hold it was trapped for, if any; otherwise it is back on the shelf.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hold: Option<Trapped>,
}

/// A loan and its item, as this module reads them.
struct LoanItem {
    id: Uuid,
    member_id: Uuid,
    item_id: Uuid,
    book_id: Uuid,
    barcode: String,
    title: String,
    borrowed_at: DateTime<Utc>,
    due_at: DateTime<Utc>,
    returned_at: Option<DateTime<Utc>>,
    end_state: Option<String>,
    stored_fine_cents: i64,
    policy: FinePolicy,
    price_cents: Option<i64>,
}

fn read_loan(tx: &mut impl GenericClient, loan_id: Uuid) -> Result<LoanItem> {
    let r = tx
        .query_opt(
            "SELECT l.id, l.member_id, l.item_id, i.book_id, i.barcode, b.title, l.borrowed_at,
                    l.due_at, l.returned_at, l.end_state, l.fine_cents, l.fine_cents_per_day,
                    l.grace_days, l.max_fine_cents, i.price_cents
             FROM loan l JOIN item i ON i.id = l.item_id JOIN book b ON b.id = l.book_id
             WHERE l.id = $1",
            &[&loan_id],
        )?
        .ok_or_else(|| Error::not_found("loan", loan_id.to_string()))?;
    Ok(LoanItem {
        id: r.get(0),
        member_id: r.get(1),
        item_id: r.get(2),
        book_id: r.get(3),
        barcode: r.get(4),
        title: r.get(5),
        borrowed_at: r.get(6),
        due_at: r.get(7),
        returned_at: r.get(8),
        end_state: r.get(9),
        stored_fine_cents: r.get(10),
        policy: FinePolicy {
            fine_cents_per_day: r.get(11),
            grace_days: r.get(12),
            max_fine_cents: r.get(13),
        },
        price_cents: r.get(14),
    })
}

/// The member's rule columns this module needs, read under the member's row lock.
struct MemberRule {
    processing_fee_cents: i64,
    max_claims_returned: i32,
    lost_refund_on_return: bool,
}

fn lock_member(tx: &mut impl GenericClient, member_id: Uuid) -> Result<MemberRule> {
    let r = tx.query_one(
        "SELECT r.processing_fee_cents, r.max_claims_returned, r.lost_refund_on_return
         FROM member m JOIN circulation_rule r ON r.category = m.category
         WHERE m.id = $1 FOR UPDATE OF m",
        &[&member_id],
    )?;
    Ok(MemberRule {
        processing_fee_cents: r.get(0),
        max_claims_returned: r.get(1),
        lost_refund_on_return: r.get(2),
    })
}

/// The loan a reference names: the open loan of an item (or of a member's title), else its
/// latest.
fn resolve(tx: &mut impl GenericClient, loan: &LoanRef) -> Result<Uuid> {
    match loan {
        LoanRef::Id(id) => tx
            .query_opt("SELECT id FROM loan WHERE id = $1", &[id])?
            .map(|r| r.get(0))
            .ok_or_else(|| Error::not_found("loan", id.to_string())),
        LoanRef::Item { item } => Ok(crate::loan_ref::find_item_loan(tx, item)?.1),
        LoanRef::MemberBook { member, book } => Ok(crate::loan_ref::find_loan(tx, member, book)?.1),
    }
}

/// The loan, locked under its member, still open.
fn lock_open_loan(tx: &mut impl GenericClient, loan_id: Uuid) -> Result<(LoanItem, MemberRule)> {
    let member_id = read_loan(tx, loan_id)?.member_id;
    let rule = lock_member(tx, member_id)?;
    let loan = read_loan(tx, loan_id)?;
    if loan.returned_at.is_some() {
        return Err(Error::refused(
            Refusal::AlreadyReturned,
            format!(
                "loan {} already ended ({})",
                loan.id,
                loan.end_state.as_deref().unwrap_or("returned")
            ),
        ));
    }
    Ok((loan, rule))
}

/// Ends `loan` at `at` as `end_state`, with its fine frozen at that moment; the item takes
/// `item_status` and the book's counters follow.
fn end_loan(
    tx: &mut impl GenericClient,
    loan: &LoanItem,
    at: DateTime<Utc>,
    end_state: &str,
    item_status: &str,
    calendar: &Calendar,
) -> Result<i64> {
    if at < loan.borrowed_at {
        return Err(Error::invalid(
            "invalid_input",
            format!(
                "cannot end loan {} at {at}, before it began at {}",
                loan.id, loan.borrowed_at
            ),
        ));
    }
    let fine =
        fines::fine_cents(&loan.policy, loan.due_at, at, calendar).max(loan.stored_fine_cents);
    tx.execute(
        "UPDATE loan SET returned_at = $2, end_state = $3, fine_cents = $4, fine_assessed_on = $5
         WHERE id = $1",
        &[&loan.id, &at, &end_state, &fine, &calendar.local_date(at)],
    )?;
    // A lost item leaves the book's copies; a missing one still counts. Neither is available.
    let owned_delta: i32 = if item_status == "lost" { -1 } else { 0 };
    tx.execute(
        "WITH counted AS (UPDATE book SET total_copies = total_copies + $3 WHERE id = $4)
         UPDATE item SET status = $2, status_changed_at = $5 WHERE id = $1",
        &[
            &loan.item_id,
            &item_status,
            &owned_delta,
            &loan.book_id,
            &at,
        ],
    )?;
    Ok(fine)
}

/// Declares an open loan lost at `at`; the caller holds the member lock.
fn declare_in(
    tx: &mut impl GenericClient,
    ctx: &Ctx,
    loan: &LoanItem,
    rule: &MemberRule,
    at: DateTime<Utc>,
    calendar: &Calendar,
    automatic: bool,
) -> Result<LostLoan> {
    let fine = end_loan(tx, loan, at, "lost", "lost", calendar)?;
    let replacement = match loan.price_cents {
        Some(price) => price,
        None => crate::policy::default_replacement_cents(tx)?,
    };
    ledger::write_keyed(tx, loan.member_id, loan.id, "lost_item", replacement, at)?;
    ledger::write_keyed(
        tx,
        loan.member_id,
        loan.id,
        "processing_fee",
        rule.processing_fee_cents,
        at,
    )?;
    tx.execute(
        "INSERT INTO notice (id, kind, loan_id, member_id, issued_on, fine_cents, created_at,
                             pending_handover)
         VALUES ($1, 'lost_billed', $2, $3, $4, $5, $6, true)
         ON CONFLICT (loan_id) WHERE kind = 'lost_billed' DO NOTHING",
        &[
            &crate::ids::new_id(at),
            &loan.id,
            &loan.member_id,
            &calendar.local_date(at),
            &(replacement + rule.processing_fee_cents),
            &at,
        ],
    )?;
    let lost = LostLoan {
        loan_id: loan.id,
        member_id: loan.member_id,
        barcode: loan.barcode.clone(),
        title: loan.title.clone(),
        due_at: loan.due_at,
        lost_at: at,
        fine_cents: fine,
        replacement_cents: replacement,
        processing_fee_cents: rule.processing_fee_cents,
    };
    if automatic {
        audit::record(
            tx,
            ctx,
            &Entry {
                action: "loan.lost",
                entity_type: "loan",
                entity_id: Some(loan.id.to_string()),
                outcome: "ok",
                details: json!({ "automatic": true, "after": lost }),
            },
        )?;
    }
    Ok(lost)
}

/// `libctl lost --item BARCODE | --loan LOAN` (librarian): declares an open loan lost now.
pub fn declare(client: &mut Client, ctx: &Ctx, loan: &LoanRef) -> Result<LostLoan> {
    let op = Operation::new("loan.lost", "loan", json!({ "loan": loan }));
    audit::run(client, ctx, &op, |tx| {
        ctx.require(Capability::CirculateForOthers)?;
        let loan_id = resolve(tx, loan)?;
        let (loan, rule) = lock_open_loan(tx, loan_id)?;
        let calendar = Calendar::load(tx)?;
        let lost = declare_in(tx, ctx, &loan, &rule, ctx.now(), &calendar, false)?;
        Ok(Audited::new(
            lost.clone(),
            lost.loan_id,
            json!({ "after": lost }),
        ))
    })
}

/// Closes an open loan as claimed returned; `overridden` lets it past `max_claims_returned`
/// (an approved override request).
pub(crate) fn claim_returned_in(
    tx: &mut impl GenericClient,
    loan_id: Uuid,
    at: DateTime<Utc>,
    overridden: bool,
) -> Result<Claim> {
    let (loan, rule) = lock_open_loan(tx, loan_id)?;
    let claims: i64 = tx
        .query_one(
            "SELECT count(*) FROM loan_all WHERE member_id = $1 AND end_state = 'claims_returned'",
            &[&loan.member_id],
        )?
        .get(0);
    if claims >= i64::from(rule.max_claims_returned) && !overridden {
        return Err(Error::refused(
            Refusal::ClaimsLimitReached,
            format!(
                "the member has made {claims} claim(s) of a return, the limit of {}; \
                 file an override request for loan {}",
                rule.max_claims_returned, loan.id
            ),
        ));
    }
    let calendar = Calendar::load(tx)?;
    let fine = end_loan(tx, &loan, at, "claims_returned", "missing", &calendar)?;
    Ok(Claim {
        loan_id: loan.id,
        member_id: loan.member_id,
        barcode: loan.barcode,
        claimed_at: at,
        fine_cents: fine,
        claims: claims + 1,
        overridden,
    })
}

/// `libctl claim-returned --item BARCODE | --loan LOAN` (librarian).
pub fn claim_returned(client: &mut Client, ctx: &Ctx, loan: &LoanRef) -> Result<Claim> {
    let op = Operation::new("loan.claim_returned", "loan", json!({ "loan": loan }));
    audit::run(client, ctx, &op, |tx| {
        ctx.require(Capability::CirculateForOthers)?;
        let loan_id = resolve(tx, loan)?;
        let claim = claim_returned_in(tx, loan_id, ctx.now(), false)?;
        Ok(Audited::new(
            claim.clone(),
            claim.loan_id,
            json!({ "after": claim }),
        ))
    })
}

/// The item of `loan_id` back at the desk, when that loan ended lost or claimed returned and
/// the item has not come back since; `None` for any other loan. The caller holds the member
/// lock.
pub(crate) fn found_in(
    tx: &mut impl GenericClient,
    ctx: &Ctx,
    loan_id: Uuid,
    at: DateTime<Utc>,
) -> Result<Option<Found>> {
    let loan = read_loan(tx, loan_id)?;
    let end_state = match loan.end_state.as_deref() {
        Some(state @ ("lost" | "claims_returned")) => state.to_string(),
        _ => return Ok(None),
    };
    let expected = if end_state == "lost" {
        "lost"
    } else {
        "missing"
    };
    // The book first, then the item, as a return takes them.
    tx.execute(
        "SELECT 1 FROM book WHERE id = $1 FOR UPDATE",
        &[&loan.book_id],
    )?;
    let status: String = tx
        .query_one(
            "SELECT status FROM item WHERE id = $1 FOR UPDATE",
            &[&loan.item_id],
        )?
        .get(0);
    let newer: bool = tx
        .query_one(
            "SELECT EXISTS (SELECT 1 FROM loan WHERE item_id = $1 AND borrowed_at > $2)",
            &[&loan.item_id, &loan.borrowed_at],
        )?
        .get(0);
    if status != expected || newer {
        return Ok(None);
    }
    let rule = lock_member(tx, loan.member_id)?;
    if status == "lost" {
        tx.execute(
            "UPDATE book SET total_copies = total_copies + 1 WHERE id = $1",
            &[&loan.book_id],
        )?;
    }
    let actor_role = ctx.actor.role.as_str();
    let trapped = tx.query_one(
        "SELECT t.hold_id, t.member_id, t.ready_at, t.pickup_by FROM hold_trap($1, $2, $3, $4) t",
        &[&loan.item_id, &at, &ctx.actor.name, &actor_role],
    )?;
    let hold = Trapped::from_row(&trapped, 0);
    let refund_cents = if end_state == "lost" && rule.lost_refund_on_return {
        let entries = ledger::entries(tx, loan.member_id)?;
        let charged: i64 = entries
            .iter()
            .filter(|e| e.kind == "lost_item" && e.loan_id == Some(loan.id))
            .map(|e| e.amount_cents)
            .sum();
        let refund = charged - ledger::waived_part(&entries, loan.id, "lost_item");
        if ledger::write_keyed(tx, loan.member_id, loan.id, "refund", refund, at)? {
            refund
        } else {
            0
        }
    } else {
        0
    };
    crate::hold_queue::retarget(tx, ctx, crate::hold_queue::Scope::Member(loan.member_id))?;
    Ok(Some(Found {
        loan_id: loan.id,
        end_state,
        barcode: loan.barcode,
        refund_cents,
        hold,
    }))
}

/// What a long-overdue run did (or, with `--dry-run`, would do).
#[derive(Debug, Clone, serde::Serialize)]
pub struct LostRun {
    /// The as-of date.
    pub as_of: NaiveDate,
    /// True when nothing was kept.
    pub dry_run: bool,
    /// Loans declared lost.
    pub declared: usize,
    /// Their replacement charges.
    pub replacement_cents: i64,
    /// Their processing fees.
    pub processing_fee_cents: i64,
    /// Each loan and its charges.
    pub loans: Vec<LostLoan>,
}

/// The open loans overdue by more than their category's `lost_after_days` at the end of
/// `as_of`, oldest due first. A loan due `n` calendar days back is at most `n` open days
/// overdue, so the due-date bound only narrows the scan.
fn long_overdue(tx: &mut impl GenericClient, end: DateTime<Utc>) -> Result<Vec<Uuid>> {
    Ok(tx
        .query(
            "SELECT l.id FROM loan l
             JOIN member m ON m.id = l.member_id
             JOIN circulation_rule r ON r.category = m.category
             WHERE l.returned_at IS NULL AND r.lost_after_days > 0
               AND l.due_at < $1::timestamptz - make_interval(days => r.lost_after_days)
               AND overdue_days(l.due_at, $1, library_timezone()) > r.lost_after_days
             ORDER BY l.due_at, l.id",
            &[&end],
        )?
        .iter()
        .map(|r| r.get(0))
        .collect())
}

/// The long-overdue step as of `as_of`: declares lost every open loan overdue by more than
/// its category's `lost_after_days`, [`BATCH`] loans per transaction, each loan under its
/// member's lock and re-checked there. Refuses (`too_many_items`) before touching anything
/// when more than `max_items` would be marked. Idempotent: a loan declared lost is no longer
/// open, and its charges are keyed.
pub(crate) fn auto_in<C: Batches>(
    client: &mut C,
    ctx: &Ctx,
    as_of: NaiveDate,
    max_items: i64,
) -> Result<LostRun> {
    crate::validate::in_range("--max-items", max_items, 0, i64::MAX)?;
    let calendar = Calendar::load(client)?;
    let end = calendar.end_of_day(as_of);
    let at = end.min(ctx.now());
    let candidates = long_overdue(client, end)?;
    if candidates.len() as i64 > max_items {
        return Err(Error::refused(
            Refusal::TooManyItems,
            format!(
                "{} loans are overdue past their category's lost_after_days as of {as_of}, \
                 more than --max-items {max_items}; check the rules (policy show) or raise \
                 --max-items. Nothing was marked.",
                candidates.len()
            ),
        ));
    }
    let mut run = LostRun {
        as_of,
        dry_run: false,
        declared: 0,
        replacement_cents: 0,
        processing_fee_cents: 0,
        loans: Vec::new(),
    };
    for batch in candidates.chunks(BATCH) {
        let mut tx = client.batch()?;
        for &loan_id in batch {
            let member_id = read_loan(&mut tx, loan_id)?.member_id;
            let rule = lock_member(&mut tx, member_id)?;
            let loan = read_loan(&mut tx, loan_id)?;
            if loan.returned_at.is_some() {
                continue; // returned at the desk meanwhile
            }
            let lost = declare_in(&mut tx, ctx, &loan, &rule, at, &calendar, true)?;
            run.declared += 1;
            run.replacement_cents += lost.replacement_cents;
            run.processing_fee_cents += lost.processing_fee_cents;
            run.loans.push(lost);
        }
        tx.commit()?;
    }
    Ok(run)
}

/// `libctl lost auto --as-of DATE [--dry-run] [--max-items N]`, under the job lock.
pub fn auto(
    client: &mut Client,
    ctx: &Ctx,
    as_of: NaiveDate,
    dry_run: bool,
    max_items: i64,
) -> Result<LostRun> {
    ctx.require(Capability::Jobs)?;
    Calendar::load(client)?.require_not_future(as_of)?;
    crate::joblock::with_job_lock(client, "lost auto", |client| {
        if dry_run {
            let mut tx = client.transaction()?;
            let run = auto_in(&mut tx, ctx, as_of, max_items);
            tx.rollback()?;
            return run.map(|r| LostRun { dry_run: true, ..r });
        }
        let run = auto_in(client, ctx, as_of, max_items)?;
        crate::joblock::record_step(client, ctx, "lost.auto", as_of, &run)?;
        Ok(run)
    })
}
