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

/// Advisory-lock key of the nightly jobs (accrue, notices, nightly): one at a time.
pub const JOB_LOCK_KEY: i64 = 0x4C49_4243_544C; // "LIBCTL"

/// Takes the job lock for the rest of the transaction, or refuses with `job_already_running`.
pub(crate) fn lock_jobs(tx: &mut impl GenericClient, job: &str) -> Result<()> {
    let got: bool = tx
        .query_one("SELECT pg_try_advisory_xact_lock($1)", &[&JOB_LOCK_KEY])?
        .get(0);
    if got {
        Ok(())
    } else {
        Err(crate::Error::refused(
            crate::Refusal::JobAlreadyRunning,
            format!("another fines/notices/nightly run holds the job lock; {job} did nothing"),
        ))
    }
}

/// What an accrual did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct Accrual {
    /// The as-of date.
    pub as_of: chrono::NaiveDate,
    /// Open overdue loans whose fine was (re)assessed.
    pub loans_assessed: i64,
    /// Sum of their assessed fines.
    pub fines_cents: i64,
}

/// Recomputes (never increments) the fine of every open overdue loan as of the end of `as_of`,
/// set-based. A loan already assessed for a later date is left alone, so running an older date
/// after a newer one never lowers a fine, and returned loans are frozen.
pub(crate) fn accrue_in(tx: &mut impl GenericClient, as_of: chrono::NaiveDate) -> Result<Accrual> {
    let calendar = Calendar::load(tx)?;
    let end = calendar.end_of_day(as_of);
    let row = tx.query_one(
        "WITH assessed AS (
             UPDATE loan SET
                 fine_cents = fine_cents(fine_cents_per_day, grace_days, max_fine_cents,
                                         overdue_days(due_at, $1, library_timezone())),
                 fine_assessed_on = $2
             WHERE returned_at IS NULL AND due_at < $1
               AND (fine_assessed_on IS NULL OR fine_assessed_on <= $2)
             RETURNING fine_cents)
         SELECT count(*), coalesce(sum(fine_cents), 0)::bigint FROM assessed",
        &[&end, &as_of],
    )?;
    Ok(Accrual {
        as_of,
        loans_assessed: row.get(0),
        fines_cents: row.get(1),
    })
}

/// `libctl fines accrue --as-of DATE`: the nightly assessment, under the job lock.
pub fn accrue(
    client: &mut postgres::Client,
    ctx: &crate::actor::Ctx,
    as_of: chrono::NaiveDate,
) -> Result<Accrual> {
    use crate::audit::{self, Audited, Operation};
    let op = Operation::new(
        "fines.accrue",
        "loan",
        serde_json::json!({ "as_of": as_of }),
    );
    Calendar::load(client)?.require_not_future(as_of)?;
    audit::run(client, ctx, &op, |tx| {
        ctx.require(crate::actor::Capability::Jobs)?;
        lock_jobs(tx, "fines accrue")?;
        let accrual = accrue_in(tx, as_of)?;
        Ok(Audited::new(accrual, as_of, serde_json::json!(accrual)))
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
    /// Fines minus payments minus waivers.
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
    let credits = client.query_one(
        "SELECT coalesce(sum(amount_cents) FILTER (WHERE kind = 'payment'), 0)::bigint,
                coalesce(sum(amount_cents) FILTER (WHERE kind = 'waiver'), 0)::bigint
         FROM account_entry WHERE member_id = $1",
        &[&member.id],
    )?;
    let payments_cents: i64 = credits.get(0);
    let waivers_cents: i64 = credits.get(1);
    let fines: i64 = loans.iter().map(|l| l.fine_cents).sum();
    Ok(Account {
        member: member.clone(),
        loans,
        payments_cents,
        waivers_cents,
        balance_cents: fines - payments_cents - waivers_cents,
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

/// Writes a payment or waiver for at most the member's outstanding balance, assessing their
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
    let balance: i64 = tx
        .query_one(
            "SELECT ((SELECT coalesce(sum(fine_cents), 0) FROM loan WHERE member_id = $1 AND fine_cents > 0)
                  - (SELECT coalesce(sum(amount_cents), 0) FROM account_entry WHERE member_id = $1))::bigint",
            &[&member_id],
        )?
        .get::<_, Option<i64>>(0)
        .unwrap_or(0);
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
