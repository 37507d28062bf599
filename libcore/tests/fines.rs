//! Fines, notices and the nightly job against a real database: the SQL twin agrees with the
//! Rust rule, accrual is idempotent, notices are exactly-once, and the job lock holds.

use std::sync::{Arc, Barrier};

use chrono::{DateTime, Duration, NaiveDate, TimeZone, Utc};
use libcore::actor::Ctx;
use libcore::calendar::Calendar;
use libcore::circulation::{self, LoanRef};
use libcore::fines::{self, FinePolicy};
use libcore::{jobs, notices};
use postgres::Client;
use proptest::prelude::*;

use crate::support::*;

fn d(s: &str) -> NaiveDate {
    s.parse().unwrap()
}

/// A member and a loan borrowed `days_ago` days ago (due 14 days after), as the admin.
fn overdue_loan(c: &mut Client, email: &str, book: u32, days_ago: i64) -> circulation::Loan {
    let created = admin_at(c, Utc::now() - Duration::days(days_ago + 10));
    libcore::members::add_member(
        c,
        &created,
        &libcore::members::NewMember {
            name: "Late Reader".into(),
            email: email.into(),
            ..Default::default()
        },
    )
    .unwrap();
    let b = add_book(c, book, 1);
    let at = admin_at(c, Utc::now() - Duration::days(days_ago));
    circulation::borrow(c, &at, email, &b).unwrap()
}

fn admin_at(c: &mut Client, at: DateTime<Utc>) -> Ctx {
    Ctx {
        at: Some(at),
        ..admin(c)
    }
}

fn stored_fine(c: &mut Client, loan: uuid::Uuid) -> i64 {
    c.query_one("SELECT fine_cents FROM loan WHERE id = $1", &[&loan])
        .unwrap()
        .get(0)
}

const ZONES: &[&str] = &[
    "UTC",
    "Europe/Berlin",
    "America/New_York",
    "Australia/Sydney",
    "Asia/Kolkata",
];

/// The SQL used by accrue and the reports equals the Rust function. The generated cases share
/// one database, each in a rolled-back transaction; the database is the test's own, dropped
/// when it ends (a `static` one outlived the test binary and was never dropped).
#[test]
fn sql_twin_equals_the_rust_fine() {
    let tdb = TestDb::new();
    let mut runner = proptest::test_runner::TestRunner::new(ProptestConfig {
        cases: 48,
        failure_persistence: None,
        ..ProptestConfig::default()
    });
    let cases = (
        1_600_000_000i64..1_800_000_000,
        -48i64..2_000,
        proptest::collection::vec(-5i64..90, 0..12),
        0usize..ZONES.len(),
        0i64..500,
        0i32..10,
        0i64..5_000,
    );
    let result = runner.run(
        &cases,
        |(due_secs, span_hours, closed_offsets, zone, per_day, grace, cap)| {
            let mut c = tdb.client();
            let mut tx = c.transaction().unwrap();
            let tz: chrono_tz::Tz = ZONES[zone].parse().unwrap();
            let due_at = Utc.timestamp_opt(due_secs, 0).unwrap();
            let end = due_at + Duration::hours(span_hours);
            let due_day = due_at.with_timezone(&tz).date_naive();
            let closed: Vec<NaiveDate> = closed_offsets
                .iter()
                .map(|o| due_day + Duration::days(*o))
                .collect();
            tx.execute("DELETE FROM closed_day", &[]).unwrap();
            tx.execute(
                "INSERT INTO closed_day (day) SELECT DISTINCT unnest($1::date[])",
                &[&closed],
            )
            .unwrap();
            let sql: i64 = tx
                .query_one(
                    "SELECT fine_cents($1, $2, $3, overdue_days($4, $5, $6))",
                    &[&per_day, &grace, &cap, &due_at, &end, &ZONES[zone]],
                )
                .unwrap()
                .get(0);
            tx.rollback().unwrap();
            let policy = FinePolicy {
                fine_cents_per_day: per_day,
                grace_days: grace,
                max_fine_cents: cap,
            };
            let rust = fines::fine_cents(&policy, due_at, end, &Calendar::new(tz, closed));
            prop_assert_eq!(sql, rust);
            Ok(())
        },
    );
    if let Err(e) = result {
        panic!("{e}");
    }
}

#[test]
fn accrue_recomputes_never_increments_and_never_goes_back() {
    let tdb = TestDb::new();
    let mut c = tdb.client();
    let loan = overdue_loan(&mut c, "late@example.org", 1, 20);
    let due = loan.due_at.date_naive();
    let sys = system();
    let first = fines::accrue(&mut c, &sys, due + Duration::days(5), false).unwrap();
    assert_eq!((first.loans_assessed, first.fines_cents), (1, 500));
    assert_eq!(stored_fine(&mut c, loan.id), 500);
    fines::accrue(&mut c, &sys, due + Duration::days(5), false).unwrap();
    assert_eq!(
        stored_fine(&mut c, loan.id),
        500,
        "twice gives the same state"
    );
    fines::accrue(&mut c, &sys, due + Duration::days(6), false).unwrap();
    assert_eq!(stored_fine(&mut c, loan.id), 600);
    let back = fines::accrue(&mut c, &sys, due + Duration::days(2), false).unwrap();
    assert_eq!(
        back.loans_assessed, 0,
        "an older date leaves a newer assessment alone"
    );
    assert_eq!(stored_fine(&mut c, loan.id), 600);
    // The return freezes the fine as of the return; accrual no longer touches it.
    let ctx = admin(&mut c);
    let returned = circulation::return_loan(&mut c, &ctx, &LoanRef::Id(loan.id)).unwrap();
    fines::accrue(&mut c, &sys, Utc::now().date_naive(), false).unwrap();
    assert_eq!(stored_fine(&mut c, loan.id), returned.fine_cents);
    // An as-of after today is refused before anything is locked or written.
    let tomorrow = Utc::now().date_naive() + Duration::days(2);
    let err = fines::accrue(&mut c, &sys, tomorrow, false).unwrap_err();
    assert_eq!((err.code(), err.exit_code()), ("future_as_of", 7));
    assert_invariants(&mut c);
    let member = ctx_of(&mut c, "late@example.org");
    let members_cannot = fines::accrue(&mut c, &member, due, false).unwrap_err();
    assert_eq!(members_cannot.exit_code(), 5);
}

#[test]
fn notices_are_issued_once_per_level_and_catch_up_after_missed_nights() {
    let tdb = TestDb::new();
    let mut c = tdb.client();
    let loan = overdue_loan(&mut c, "late@example.org", 1, 40);
    let due = loan.due_at.date_naive();
    let sys = system();
    assert!(notices::generate(&mut c, &sys, due, &mut |_| Ok(()))
        .unwrap()
        .is_empty());
    let day1 = notices::generate(&mut c, &sys, due + Duration::days(1), &mut |_| Ok(())).unwrap();
    assert_eq!(day1.iter().map(|n| n.level).collect::<Vec<_>>(), [Some(1)]);
    assert!(
        notices::generate(&mut c, &sys, due + Duration::days(2), &mut |_| Ok(()))
            .unwrap()
            .is_empty()
    );
    // Nights 3 to 15 were missed: the next run issues levels 2 and 3, once each.
    let caught_up =
        notices::generate(&mut c, &sys, due + Duration::days(16), &mut |_| Ok(())).unwrap();
    assert_eq!(
        caught_up.iter().map(|n| n.level).collect::<Vec<_>>(),
        [Some(2), Some(3)]
    );
    assert_eq!(caught_up[1].overdue_days, Some(16));
    assert!(
        notices::generate(&mut c, &sys, due + Duration::days(17), &mut |_| Ok(()))
            .unwrap()
            .is_empty()
    );
    let total: i64 = c
        .query_one("SELECT count(*) FROM notice", &[])
        .unwrap()
        .get(0);
    assert_eq!(total, 3);
    let letters = notices::group_by_member(&caught_up);
    assert_eq!(letters.len(), 1);
    assert_eq!(letters[0].notices.len(), 2);
}

#[test]
fn nightly_twice_gives_the_same_notices_and_dry_run_keeps_nothing() {
    let tdb = TestDb::new();
    let mut c = tdb.client();
    overdue_loan(&mut c, "a@example.org", 1, 25);
    overdue_loan(&mut c, "b@example.org", 2, 16);
    let as_of = Utc::now().date_naive();
    let sys = system();
    let dry = jobs::nightly(&mut c, &sys, as_of, true, &mut |_| Ok(())).unwrap();
    assert!(dry.dry_run && dry.notices_issued > 0);
    let kept: i64 = c
        .query_one("SELECT count(*) FROM notice", &[])
        .unwrap()
        .get(0);
    assert_eq!(kept, 0, "a dry run keeps nothing");
    let first = jobs::nightly(&mut c, &sys, as_of, false, &mut |_| Ok(())).unwrap();
    assert_eq!(first.notices_issued, dry.notices_issued);
    assert_eq!(first.loans_assessed, 2);
    let second = jobs::nightly(&mut c, &sys, as_of, false, &mut |_| Ok(())).unwrap();
    assert_eq!(second.notices_issued, 0);
    assert_eq!(second.fines_cents, first.fines_cents);
    assert_invariants(&mut c);
}

#[test]
fn a_held_job_lock_makes_a_second_run_exit_4_and_racing_runs_do_the_work_once() {
    let tdb = TestDb::new();
    let mut c = tdb.client();
    for i in 0..6 {
        overdue_loan(&mut c, &format!("r{i}@example.org"), i, 30 + i as i64);
    }
    let as_of = Utc::now().date_naive();
    let mut holder = tdb.client();
    let mut held = holder.transaction().unwrap();
    held.execute("SELECT pg_advisory_xact_lock($1)", &[&fines::JOB_LOCK_KEY])
        .unwrap();
    let err = jobs::nightly(&mut c, &system(), as_of, false, &mut |_| Ok(())).unwrap_err();
    assert_eq!((err.code(), err.exit_code()), ("job_already_running", 4));
    held.rollback().unwrap();

    let barrier = Arc::new(Barrier::new(4));
    let handles: Vec<_> = (0..4)
        .map(|_| {
            let mut client = tdb.client();
            let barrier = barrier.clone();
            std::thread::spawn(move || {
                barrier.wait();
                jobs::nightly(&mut client, &system(), as_of, false, &mut |_| Ok(()))
            })
        })
        .collect();
    let results: Vec<_> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    let issued: usize = results
        .iter()
        .filter_map(|r| r.as_ref().ok())
        .map(|r| r.notices_issued)
        .sum();
    for r in &results {
        if let Err(e) = r {
            assert_eq!(e.code(), "job_already_running");
        }
    }
    assert!(results.iter().any(|r| r.is_ok()));
    let total: i64 = c
        .query_one("SELECT count(*) FROM notice", &[])
        .unwrap()
        .get(0);
    assert_eq!(
        issued as i64, total,
        "every notice issued exactly once across the racing runs"
    );
    assert_eq!(
        total,
        6 * 3,
        "each loan is past 14 days overdue: levels 1, 2 and 3"
    );
}

#[test]
fn payments_are_capped_by_the_balance_and_shown_in_the_account() {
    let tdb = TestDb::new();
    let mut c = tdb.client();
    let loan = overdue_loan(&mut c, "owes@example.org", 1, 20);
    let ctx = admin(&mut c);
    circulation::return_loan(&mut c, &ctx, &LoanRef::Id(loan.id)).unwrap();
    let owed = stored_fine(&mut c, loan.id);
    assert_eq!(owed, 600);
    let err = fines::pay(&mut c, &ctx, "owes@example.org", owed + 1).unwrap_err();
    assert_eq!(
        (err.code(), err.exit_code()),
        ("payment_exceeds_balance", 4)
    );
    let err = fines::pay(&mut c, &ctx, "owes@example.org", 0).unwrap_err();
    assert_eq!(err.exit_code(), 7);
    let paid = fines::pay(&mut c, &ctx, "owes@example.org", 250).unwrap();
    assert_eq!(paid.balance_cents, 350);
    let account = fines::show(&mut c, &ctx, "owes@example.org").unwrap();
    assert_eq!(
        (
            account.payments_cents,
            account.waivers_cents,
            account.balance_cents
        ),
        (250, 0, 350)
    );
    assert_eq!(account.loans.len(), 1);
    assert_eq!(account.loans[0].fine_cents, 600);
    let member_ctx = ctx_of(&mut c, "owes@example.org");
    fines::show(&mut c, &member_ctx, "owes@example.org").unwrap();
    let err = fines::pay(&mut c, &member_ctx, "owes@example.org", 10).unwrap_err();
    assert_eq!(err.exit_code(), 5);
    assert_invariants(&mut c);
}

#[test]
fn the_closed_day_and_timezone_settings_feed_due_dates() {
    let tdb = TestDb::new();
    let mut c = tdb.client();
    let ctx = admin(&mut c);
    libcore::policy::set_timezone(&mut c, &ctx, "Pacific/Auckland").unwrap();
    let err = libcore::policy::set_timezone(&mut c, &ctx, "Mars/Olympus").unwrap_err();
    assert_eq!(err.exit_code(), 7);
    let m = add_member(&mut c, "kiwi@example.org", "member");
    let b = add_book(&mut c, 1, 1);
    let loan = circulation::borrow(&mut c, &ctx, &m, &b).unwrap();
    let tz: chrono_tz::Tz = "Pacific/Auckland".parse().unwrap();
    let local_due = loan.due_at.with_timezone(&tz);
    assert_eq!(local_due.format("%H:%M:%S").to_string(), "23:59:59");
    assert_eq!(libcore::calendar::closed_days(&mut c).unwrap().len(), 0);
    libcore::policy::add_closed_day(&mut c, &ctx, d("2030-12-25"), Some("Christmas")).unwrap();
    libcore::policy::remove_closed_day(&mut c, &ctx, d("2030-12-25")).unwrap();
    let err = libcore::policy::remove_closed_day(&mut c, &ctx, d("2030-12-25")).unwrap_err();
    assert_eq!(err.exit_code(), 3);
}

#[test]
fn the_borrow_block_counts_each_fine_once_and_credits_payments() {
    let tdb = TestDb::new();
    let mut c = tdb.client();
    let ctx = admin(&mut c);
    // A returned loan fined 600 and an open loan 3 days late whose fine the nightly job stored
    // at 2 days (200): the block sees 600 + max(300 assessed now, 200 stored) = 900 < 1000.
    let returned = overdue_loan(&mut c, "both@example.org", 1, 20);
    circulation::return_loan(&mut c, &ctx, &LoanRef::Id(returned.id)).unwrap();
    assert_eq!(stored_fine(&mut c, returned.id), 600);
    let books: Vec<String> = (2..=5).map(|n| add_book(&mut c, n, 1)).collect();
    let back_then = admin_at(&mut c, Utc::now() - Duration::days(17));
    let open = circulation::borrow(&mut c, &back_then, "both@example.org", &books[0]).unwrap();
    let sys = Ctx::system();
    let yesterday = (Utc::now() - Duration::days(1)).date_naive();
    fines::accrue(&mut c, &sys, yesterday, false).unwrap();
    assert_eq!(stored_fine(&mut c, open.id), 200);
    circulation::borrow(&mut c, &ctx, "both@example.org", &books[1]).unwrap();
    // A fourth day late (as of tomorrow): 600 + 400 = 1000, at the threshold.
    let tomorrow = admin_at(&mut c, Utc::now() + Duration::days(1));
    let err = circulation::borrow(&mut c, &tomorrow, "both@example.org", &books[2]).unwrap_err();
    assert_eq!(err.code(), "member_blocked", "{err}");
    // A payment of 1 cent brings it under again.
    fines::pay(&mut c, &ctx, "both@example.org", 1).unwrap();
    circulation::borrow(&mut c, &tomorrow, "both@example.org", &books[3]).unwrap();
    assert_invariants(&mut c);
}

#[test]
fn courtesy_and_membership_expiry_notices_go_out_once_per_due_date_and_expiry_date() {
    let tdb = TestDb::new();
    let mut c = tdb.client();
    let sys = system();
    // Borrowed 13 days ago for 14: due tomorrow, within the public category's 2 courtesy days.
    let loan = overdue_loan(&mut c, "soon@example.org", 1, 13);
    let cal = libcore::calendar::Calendar::load(&mut c).unwrap();
    let due = cal.local_date(loan.due_at);
    let today = cal.local_date(Utc::now());
    assert_eq!(due, today + Duration::days(1));
    let kinds = |n: &[notices::Notice]| -> Vec<(String, Option<uuid::Uuid>)> {
        let mut k: Vec<_> = n.iter().map(|n| (n.kind.clone(), n.loan_id)).collect();
        k.sort();
        k
    };
    let early = notices::generate(&mut c, &sys, due - Duration::days(3), &mut |_| Ok(())).unwrap();
    assert!(early.is_empty(), "{early:?}");
    let first = notices::generate(&mut c, &sys, due - Duration::days(2), &mut |_| Ok(())).unwrap();
    assert_eq!(kinds(&first), [("courtesy".to_string(), Some(loan.id))]);
    assert_eq!(first[0].due_at, Some(loan.due_at));
    // Once per due date, whatever the runs; a membership lapsing within 30 days, once too.
    c.execute(
        "UPDATE member SET expires_at = $2 WHERE email = $1",
        &[
            &"soon@example.org",
            &cal.end_of_day(today + Duration::days(10)),
        ],
    )
    .unwrap();
    let second = notices::generate(&mut c, &sys, today, &mut |_| Ok(())).unwrap();
    assert_eq!(kinds(&second), [("membership_expiring".to_string(), None)]);
    assert_eq!(second[0].expires_on, Some(today + Duration::days(10)));
    assert!(notices::generate(&mut c, &sys, today, &mut |_| Ok(()))
        .unwrap()
        .is_empty());
    // A new due date (a renewal) earns a new courtesy notice when it comes near.
    c.execute(
        "UPDATE loan SET due_at = due_at + interval '1 day' WHERE id = $1",
        &[&loan.id],
    )
    .unwrap();
    let third = notices::generate(&mut c, &sys, today, &mut |_| Ok(())).unwrap();
    assert_eq!(kinds(&third), [("courtesy".to_string(), Some(loan.id))]);
    // The day's notices are handed over again by export, every kind.
    assert_eq!(notices::export(&mut c, &sys, today).unwrap().len(), 2);
    // The lead follows the category's rule, and 0 turns a kind off.
    let admin = admin(&mut c);
    let set = |c: &mut Client, courtesy: i32, expiry: i32| {
        libcore::policy::set_rule(
            c,
            &admin,
            &libcore::policy::RuleChange {
                category: "public".into(),
                courtesy_days: Some(courtesy),
                expiry_notice_days: Some(expiry),
                ..Default::default()
            },
        )
        .unwrap();
    };
    let shift_due = |c: &mut Client| {
        c.execute(
            "UPDATE loan SET due_at = due_at + interval '1 day' WHERE id = $1",
            &[&loan.id],
        )
        .unwrap();
    };
    set(&mut c, 5, 30);
    shift_due(&mut c); // due in 3 days: inside 5
    let wider = notices::generate(&mut c, &sys, today, &mut |_| Ok(())).unwrap();
    assert_eq!(kinds(&wider), [("courtesy".to_string(), Some(loan.id))]);
    set(&mut c, 0, 0);
    shift_due(&mut c); // due in 4 days: inside 5, but courtesy is off
    c.execute(
        "UPDATE member SET expires_at = expires_at + interval '1 day' WHERE email = $1",
        &[&"soon@example.org"],
    )
    .unwrap();
    assert!(notices::generate(&mut c, &sys, today, &mut |_| Ok(()))
        .unwrap()
        .is_empty());
}
