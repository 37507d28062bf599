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

/// A member's standing: what blocks a borrow or a renewal.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct Standing {
    /// Fines (frozen, assessed, and accruing on open loans up to now) minus payments and waivers.
    pub outstanding_cents: i64,
    /// The most overdue days of any open loan, as of now.
    pub max_overdue_days: i32,
}

/// Computes a member's standing as of `now`. Open loans count with their fine as of now, so
/// a block does not wait for the nightly accrual.
pub fn standing(
    client: &mut impl GenericClient,
    member_id: Uuid,
    now: DateTime<Utc>,
    calendar: &Calendar,
) -> Result<Standing> {
    let mut fines = 0i64;
    let mut max_overdue_days = 0i32;
    for row in client.query(
        "SELECT due_at, returned_at, fine_cents, fine_cents_per_day, grace_days, max_fine_cents
         FROM loan WHERE member_id = $1 AND (returned_at IS NULL OR fine_cents > 0)",
        &[&member_id],
    )? {
        let returned_at: Option<DateTime<Utc>> = row.get(1);
        let stored: i64 = row.get(2);
        match returned_at {
            Some(_) => fines += stored,
            None => {
                let due_at: DateTime<Utc> = row.get(0);
                let policy = FinePolicy {
                    fine_cents_per_day: row.get(3),
                    grace_days: row.get(4),
                    max_fine_cents: row.get(5),
                };
                let overdue = calendar.overdue_days(due_at, now);
                max_overdue_days = max_overdue_days.max(overdue);
                fines += fine_for_overdue_days(&policy, overdue).max(stored);
            }
        }
    }
    let credits: i64 = client
        .query_one(
            "SELECT coalesce(sum(amount_cents), 0)::bigint FROM account_entry WHERE member_id = $1",
            &[&member_id],
        )?
        .get(0);
    Ok(Standing {
        outstanding_cents: fines - credits,
        max_overdue_days,
    })
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
