//! Fines (SPEC §6): one pure function decides every fine; the SQL twin `fine_cents()` /
//! `overdue_days()` in the schema exists only for set-based speed and is held equal to it by
//! a property test.

use chrono::{DateTime, Utc};
use postgres::GenericClient;
use uuid::Uuid;

use crate::calendar::Calendar;
use crate::error::Result;

/// The fine policy copied onto a loan when it is borrowed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct FinePolicy {
    /// Charged per overdue open day.
    pub fine_cents_per_day: i64,
    /// Overdue days at or below this cost nothing.
    pub grace_days: i32,
    /// The most one loan can cost.
    pub max_fine_cents: i64,
}

/// The fine for `overdue_days`: zero within grace, otherwise every overdue day from the due
/// date, capped. Integer arithmetic only; saturating so absurd inputs still hit the cap.
pub fn fine_for_overdue_days(policy: &FinePolicy, overdue_days: i32) -> i64 {
    if overdue_days <= policy.grace_days {
        return 0;
    }
    (i64::from(overdue_days))
        .saturating_mul(policy.fine_cents_per_day)
        .min(policy.max_fine_cents)
}

/// The fine of a loan due at `due_at` and returned (or assessed) at `end`.
pub fn fine_cents(
    policy: &FinePolicy,
    due_at: DateTime<Utc>,
    end: DateTime<Utc>,
    calendar: &Calendar,
) -> i64 {
    fine_for_overdue_days(policy, calendar.overdue_days(due_at, end))
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::NaiveDate;

    const POLICY: FinePolicy = FinePolicy {
        fine_cents_per_day: 100,
        grace_days: 2,
        max_fine_cents: 2000,
    };

    fn d(s: &str) -> NaiveDate {
        s.parse().unwrap()
    }
    fn t(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    #[test]
    fn grace_waives_entirely_then_every_day_counts() {
        assert_eq!(fine_for_overdue_days(&POLICY, 0), 0);
        assert_eq!(fine_for_overdue_days(&POLICY, 2), 0);
        assert_eq!(fine_for_overdue_days(&POLICY, 3), 300);
        assert_eq!(fine_for_overdue_days(&POLICY, 20), 2000);
        assert_eq!(fine_for_overdue_days(&POLICY, 21), 2000);
        assert_eq!(fine_for_overdue_days(&POLICY, i32::MAX), 2000);
    }

    #[test]
    fn returned_within_grace_costs_nothing() {
        let cal = Calendar::new(chrono_tz::UTC, []);
        let due = cal.end_of_day(d("2024-02-01"));
        assert_eq!(fine_cents(&POLICY, due, t("2024-02-03T12:00:00Z"), &cal), 0);
        assert_eq!(
            fine_cents(&POLICY, due, t("2024-02-04T00:00:01Z"), &cal),
            300
        );
    }

    #[test]
    fn closed_days_inside_the_span_are_not_charged() {
        let cal = Calendar::new(chrono_tz::UTC, [d("2024-02-03"), d("2024-02-04")]);
        let due = cal.end_of_day(d("2024-02-01"));
        // 2, 5, 6 Feb are open overdue days: 3 days, beyond grace 2.
        assert_eq!(
            fine_cents(&POLICY, due, t("2024-02-06T10:00:00Z"), &cal),
            300
        );
    }

    #[test]
    fn a_due_date_on_a_closed_day_counts_from_the_next_open_day() {
        // Closed on the due date itself (added after the loan was made) and the day after.
        let cal = Calendar::new(chrono_tz::UTC, [d("2024-02-01"), d("2024-02-02")]);
        let due = cal.end_of_day(d("2024-02-01"));
        assert_eq!(cal.overdue_days(due, t("2024-02-02T10:00:00Z")), 0);
        assert_eq!(cal.overdue_days(due, t("2024-02-05T10:00:00Z")), 3);
    }

    #[test]
    fn dst_change_does_not_add_or_lose_a_day() {
        // Berlin springs forward on 31 March 2024.
        let cal = Calendar::new(chrono_tz::Europe::Berlin, []);
        let due = cal.end_of_day(d("2024-03-30"));
        // 00:30 on 1 April Berlin (22:30 UTC on 31 March) is 2 days late.
        assert_eq!(cal.overdue_days(due, t("2024-03-31T22:30:00Z")), 2);
        let p = FinePolicy {
            grace_days: 0,
            ..POLICY
        };
        assert_eq!(fine_cents(&p, due, t("2024-03-31T22:30:00Z"), &cal), 200);
    }
}

pub use crate::joblock::JOB_LOCK_KEY;

/// Loans one accrual transaction assesses.
const ACCRUAL_BATCH: usize = 5_000;

/// What an accrual did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct Accrual {
    /// The as-of date.
    pub as_of: chrono::NaiveDate,
    /// Open overdue loans whose fine was (re)assessed.
    pub loans_assessed: i64,
    /// Sum of their assessed fines.
    pub fines_cents: i64,
    /// True when nothing was kept.
    pub dry_run: bool,
}

/// Recomputes (never increments) the fine of every open overdue loan as of the end of `as_of`,
/// [`ACCRUAL_BATCH`] loans per transaction, so the desk's returns of those loans never wait
/// long. A loan already assessed for a later date is left alone, so running an older date
/// after a newer one never lowers a fine, and a loan returned meanwhile is skipped (its
/// return froze its fine). Idempotent: a re-run computes the same fines.
pub(crate) fn accrue_batched<C: crate::joblock::Batches>(
    c: &mut C,
    as_of: chrono::NaiveDate,
) -> Result<Accrual> {
    let calendar = Calendar::load(c)?;
    let end = calendar.end_of_day(as_of);
    let overdue: Vec<Uuid> = c
        .query(
            "SELECT id FROM loan WHERE returned_at IS NULL AND due_at < $1 ORDER BY id",
            &[&end],
        )?
        .iter()
        .map(|r| r.get(0))
        .collect();
    let mut accrual = Accrual {
        as_of,
        loans_assessed: 0,
        fines_cents: 0,
        dry_run: false,
    };
    for batch in overdue.chunks(ACCRUAL_BATCH) {
        let mut tx = c.batch()?;
        let row = tx.query_one(
            "WITH assessed AS (
                 UPDATE loan SET
                     fine_cents = fine_cents(fine_cents_per_day, grace_days, max_fine_cents,
                                             overdue_days(due_at, $1, library_timezone())),
                     fine_assessed_on = $2
                 WHERE id = ANY($3) AND returned_at IS NULL
                   AND (fine_assessed_on IS NULL OR fine_assessed_on <= $2)
                 RETURNING fine_cents)
             SELECT count(*), coalesce(sum(fine_cents), 0)::bigint FROM assessed",
            &[&end, &as_of, &batch],
        )?;
        tx.commit()?;
        accrual.loans_assessed += row.get::<_, i64>(0);
        accrual.fines_cents += row.get::<_, i64>(1);
    }
    Ok(accrual)
}

/// `libctl fines accrue --as-of DATE [--dry-run]`: the nightly's assessment step on its own,
/// under the job lock. With `dry_run` it runs in one transaction that is rolled back.
pub fn accrue(
    client: &mut postgres::Client,
    ctx: &crate::actor::Ctx,
    as_of: chrono::NaiveDate,
    dry_run: bool,
) -> Result<Accrual> {
    ctx.require(crate::actor::Capability::Jobs)?;
    Calendar::load(client)?.require_not_future(as_of)?;
    crate::joblock::with_job_lock(client, "fines accrue", |client| {
        if dry_run {
            let mut tx = client.transaction()?;
            let accrual = accrue_batched(&mut tx, as_of);
            tx.rollback()?;
            return accrual.map(|a| Accrual { dry_run: true, ..a });
        }
        let accrual = accrue_batched(client, as_of)?;
        crate::joblock::record_step(client, ctx, "fines.accrue", as_of, &accrual)?;
        Ok(accrual)
    })
}

/// Assesses one member's open loans up to `now` (same rule as the nightly run), so what they
/// owe is stored before a payment is checked against it.
fn assess_member(
    tx: &mut impl GenericClient,
    member_id: Uuid,
    now: DateTime<Utc>,
    calendar: &Calendar,
) -> Result<()> {
    let today = calendar.local_date(now);
    tx.execute(
        "UPDATE loan SET
             fine_cents = greatest(fine_cents, fine_cents(fine_cents_per_day, grace_days, max_fine_cents,
                                   overdue_days(due_at, $2, library_timezone()))),
             fine_assessed_on = $3
         WHERE member_id = $1 AND returned_at IS NULL AND due_at < $2",
        &[&member_id, &now, &today],
    )?;
    Ok(())
}

/// A member's fines: what they were charged, paid and had waived.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Account {
    /// The member.
    pub member: crate::members::Member,
    /// Loans with a fine.
    pub loans: Vec<FinedLoan>,
    /// Sum of payments.
    pub payments_cents: i64,
    /// Sum of waivers.
    pub waivers_cents: i64,
    /// Every ledger entry, oldest first: fines (by due date), charges and credits.
    pub entries: Vec<crate::ledger::Entry>,
    /// The entries summed by kind; every kind is present.
    pub by_kind: std::collections::BTreeMap<String, i64>,
    /// What the member owes (negative: what the library owes them), by the one rule.
    pub balance_cents: i64,
}

/// One loan with its fine.
#[derive(Debug, Clone, serde::Serialize)]
pub struct FinedLoan {
    /// Loan id.
    pub loan_id: Uuid,
    /// Book title.
    pub title: String,
    /// Due.
    pub due_at: DateTime<Utc>,
    /// Returned (frozen fine) or open (assessed as of `fine_assessed_on`).
    pub returned_at: Option<DateTime<Utc>>,
    /// The fine.
    pub fine_cents: i64,
    /// The date of the assessment.
    pub fine_assessed_on: Option<chrono::NaiveDate>,
}

/// Reads a member's account (`fines show`).
pub fn account(
    client: &mut impl GenericClient,
    member: &crate::members::Member,
) -> Result<Account> {
    let loans = client
        .query(
            "SELECT l.id, b.title, l.due_at, l.returned_at, l.fine_cents, l.fine_assessed_on
             FROM loan l JOIN book b ON b.id = l.book_id
             WHERE l.member_id = $1 AND l.fine_cents > 0
             ORDER BY l.due_at",
            &[&member.id],
        )?
        .iter()
        .map(|r| FinedLoan {
            loan_id: r.get(0),
            title: r.get(1),
            due_at: r.get(2),
            returned_at: r.get(3),
            fine_cents: r.get(4),
            fine_assessed_on: r.get(5),
        })
        .collect::<Vec<_>>();
    let entries = crate::ledger::entries(client, member.id)?;
    let mut by_kind: std::collections::BTreeMap<String, i64> = crate::ledger::CHARGES
        .iter()
        .chain(crate::ledger::CREDITS)
        .map(|k| (k.to_string(), 0))
        .collect();
    for e in &entries {
        *by_kind.entry(e.kind.clone()).or_default() += e.amount_cents;
    }
    Ok(Account {
        member: member.clone(),
        loans,
        payments_cents: by_kind["payment"],
        waivers_cents: by_kind["waiver"],
        balance_cents: crate::ledger::balance(client, member.id)?,
        entries,
        by_kind,
    })
}

/// Shows a member's account: their own, or anyone's for staff. Open loans are assessed up to
/// now first (in a transaction that is rolled back: showing changes nothing).
pub fn show(
    client: &mut postgres::Client,
    ctx: &crate::actor::Ctx,
    member_key: &str,
) -> Result<Account> {
    let member = crate::members::find_member(client, member_key)?;
    ctx.require_self_or(member.id, crate::actor::Capability::ManageMembers)?;
    let mut tx = client.transaction()?;
    let calendar = Calendar::load(&mut tx)?;
    assess_member(&mut tx, member.id, ctx.now(), &calendar)?;
    let account = account(&mut tx, &member)?;
    tx.rollback()?;
    Ok(account)
}

/// A ledger entry written by a payment or an approved waiver.
#[derive(Debug, Clone, serde::Serialize)]
pub struct LedgerEntry {
    /// Entry id.
    pub id: Uuid,
    /// Member.
    pub member_id: Uuid,
    /// `payment` or `waiver`.
    pub kind: String,
    /// Amount.
    pub amount_cents: i64,
    /// When.
    pub created_at: DateTime<Utc>,
    /// Balance after it.
    pub balance_cents: i64,
}

/// Writes a payment or waiver for at most the member's outstanding balance (by the one rule,
/// [`crate::ledger::balance`]), assessing their
/// open loans to now first. Callers hold the member lock. A member the credit brings back
/// under the block threshold is served any copy on the shelf they wait for.
pub(crate) fn credit_in(
    tx: &mut impl GenericClient,
    ctx: &crate::actor::Ctx,
    member_id: Uuid,
    kind: &str,
    amount_cents: i64,
    note: Option<&str>,
    now: DateTime<Utc>,
) -> Result<LedgerEntry> {
    crate::validate::amount_cents("--amount-cents", amount_cents)?;
    let calendar = Calendar::load(tx)?;
    assess_member(tx, member_id, now, &calendar)?;
    let balance = crate::ledger::balance(tx, member_id)?;
    if amount_cents > balance {
        let reason = if kind == "payment" {
            crate::Refusal::PaymentExceedsBalance
        } else {
            crate::Refusal::WaiverExceedsBalance
        };
        return Err(crate::Error::refused(
            reason,
            format!(
                "{kind} of {amount_cents} cents exceeds the outstanding balance of {balance} cents"
            ),
        ));
    }
    let id = crate::ids::new_id(now);
    tx.execute(
        "INSERT INTO account_entry (id, member_id, kind, amount_cents, created_at, note) VALUES ($1, $2, $3, $4, $5, $6)",
        &[&id, &member_id, &kind, &amount_cents, &now, &note],
    )?;
    crate::hold_queue::retarget(tx, ctx, crate::hold_queue::Scope::Member(member_id))?;
    Ok(LedgerEntry {
        id,
        member_id,
        kind: kind.to_string(),
        amount_cents,
        created_at: now,
        balance_cents: balance - amount_cents,
    })
}

/// `libctl fines pay`: staff record a payment of at most the outstanding balance.
pub fn pay(
    client: &mut postgres::Client,
    ctx: &crate::actor::Ctx,
    member_key: &str,
    amount_cents: i64,
) -> Result<LedgerEntry> {
    use crate::audit::{self, Audited, Operation};
    let op = Operation::new(
        "fines.pay",
        "account_entry",
        serde_json::json!({ "member": member_key, "amount_cents": amount_cents }),
    );
    audit::run(client, ctx, &op, |tx| {
        ctx.require(crate::actor::Capability::CirculateForOthers)?;
        let member = crate::members::find_member(tx, member_key)?;
        tx.execute(
            "SELECT 1 FROM member WHERE id = $1 FOR UPDATE",
            &[&member.id],
        )?;
        let entry = credit_in(tx, ctx, member.id, "payment", amount_cents, None, ctx.now())?;
        Ok(Audited::new(
            entry.clone(),
            entry.id,
            serde_json::json!({ "after": entry }),
        ))
    })
}
