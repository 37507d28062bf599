//! The full nightly (SPEC §16, issue 25): auto-renewal once per loan and due date and never
//! past a hold, and a missed week caught up by one run equal, row for row, to seven runs.

use chrono::{DateTime, Duration, NaiveDate, Utc};
use libcore::actor::Ctx;
use libcore::circulation::{self, LoanRef};
use libcore::jobs::{self, NightlyOptions, Step};
use libcore::{holds, members};
use postgres::Client;

use crate::support::*;

fn today(c: &mut Client) -> NaiveDate {
    libcore::calendar::Calendar::load(c)
        .unwrap()
        .local_date(Utc::now())
}

fn at(ctx: &Ctx, t: DateTime<Utc>) -> Ctx {
    Ctx {
        at: Some(t),
        ..ctx.clone()
    }
}

/// An active public member who joined 200 days ago.
fn member(c: &mut Client, email: &str) -> String {
    let admin = at(&admin(c), Utc::now() - Duration::days(200));
    members::add_member(
        c,
        &admin,
        &members::NewMember {
            name: format!("Test {email}"),
            email: email.into(),
            phone: None,
            role: Some("member".into()),
            category: Some("public".into()),
        },
    )
    .unwrap();
    email.to_string()
}

/// Runs one step of the pipeline (or all, `None`) as of `day`.
fn run(c: &mut Client, ctx: &Ctx, day: NaiveDate, only: Option<Step>) -> jobs::Nightly {
    let options = NightlyOptions {
        only,
        ..NightlyOptions::default()
    };
    jobs::nightly_with(c, ctx, day, &options, &mut |_| Ok(())).unwrap()
}

fn notices_of(c: &mut Client, kind: &str) -> Vec<(uuid::Uuid, NaiveDate, Option<String>)> {
    c.query(
        "SELECT loan_id, key_date, reason FROM notice WHERE kind = $1 ORDER BY loan_id, key_date",
        &[&kind],
    )
    .unwrap()
    .iter()
    .map(|r| (r.get(0), r.get(1), r.get(2)))
    .collect()
}

#[test]
fn auto_renewal_renews_once_per_due_date_and_a_waiting_hold_blocks_it() {
    let tdb = TestDb::new();
    let mut c = tdb.client();
    let desk = admin(&mut c);
    c.execute(
        "UPDATE circulation_rule SET auto_renew = true WHERE category = 'public'",
        &[],
    )
    .unwrap();
    let t = today(&mut c);
    let [a, b, waiter] = ["a@x.org", "b@x.org", "w@x.org"].map(|e| member(&mut c, e));
    let (one, two) = (add_book(&mut c, 1, 1), add_book(&mut c, 2, 1));
    // Both due tomorrow (borrowed 13 days ago for 14 days).
    let borrowed = Utc::now() - Duration::days(13);
    let renewable = circulation::borrow(&mut c, &at(&desk, borrowed), &a, &one).unwrap();
    let held = circulation::borrow(&mut c, &at(&desk, borrowed), &b, &two).unwrap();
    holds::place(&mut c, &desk, &waiter, &two).unwrap();
    let sys = system();

    let first = run(&mut c, &sys, t, Some(Step::AutoRenew));
    assert_eq!((first.loans_renewed, first.auto_renew_failed), (1, 1));
    let second = run(&mut c, &sys, t, Some(Step::AutoRenew));
    assert_eq!(
        (second.loans_renewed, second.auto_renew_failed),
        (0, 0),
        "a re-run renews nothing again and tells nobody twice"
    );
    let renewals: i32 = c
        .query_one("SELECT renewals FROM loan WHERE id = $1", &[&renewable.id])
        .unwrap()
        .get(0);
    assert_eq!(renewals, 1);
    let due_on = renewable.due_at.date_naive();
    assert_eq!(
        notices_of(&mut c, "auto_renewed"),
        [(renewable.id, due_on, None)]
    );
    assert_eq!(
        notices_of(&mut c, "auto_renew_failed"),
        [(
            held.id,
            held.due_at.date_naive(),
            Some("renewal_blocked_by_hold".to_string())
        )]
    );
    // A desk renewal of the held loan is refused for the same reason.
    let desk_renewal = circulation::renew(&mut c, &desk, &LoanRef::Id(held.id)).unwrap_err();
    assert_eq!(desk_renewal.code(), "renewal_blocked_by_hold");
    assert_invariants(&mut c);
}

/// The rows every step writes, without the ids and times of audit rows.
fn state(c: &mut Client) -> Vec<String> {
    let queries = [
        "SELECT format('loan %s %s %s %s %s %s %s', id, due_at, returned_at, end_state, fine_cents, fine_assessed_on, renewals) FROM loan",
        "SELECT format('notice %s %s %s %s %s %s %s %s %s %s %s', kind, loan_id, hold_id, member_id, level, issued_on, key_date, overdue_days, fine_cents, reason, created_at) FROM notice",
        "SELECT format('entry %s %s %s %s %s', member_id, kind, loan_id, amount_cents, created_at) FROM account_entry",
        "SELECT format('hold %s %s %s %s %s %s', id, status, item_id, ready_at, pickup_by, expired_at) FROM hold",
        "SELECT format('item %s %s %s', id, status, status_changed_at) FROM item",
        "SELECT format('book %s %s %s', id, total_copies, available_copies) FROM book",
        "SELECT format('night %s', day) FROM nightly_run",
        "SELECT format('month %s %s %s %s', month, loans, returns, late_returns) FROM circulation_month",
        "SELECT format('member %s %s %s', id, status, expires_at) FROM member",
    ];
    let mut rows: Vec<String> = queries
        .iter()
        .flat_map(|q| {
            c.query(*q, &[])
                .unwrap()
                .iter()
                .map(|r| r.get::<_, String>(0))
                .collect::<Vec<_>>()
        })
        .collect();
    rows.sort();
    rows
}

#[test]
fn a_missed_week_caught_up_equals_seven_nightly_runs() {
    let a = TestDb::new();
    let mut c = a.client();
    let desk = admin(&mut c);
    c.execute(
        "UPDATE circulation_rule SET auto_renew = true WHERE category = 'public'",
        &[],
    )
    .unwrap();
    let t = today(&mut c);
    let ago = |days: i64| Utc::now() - Duration::days(days);
    let day = |back: u64| t - chrono::Days::new(back);
    let people: Vec<String> = (1..=8)
        .map(|n| member(&mut c, &format!("m{n}@x.org")))
        .collect();
    let books: Vec<String> = (1..=5).map(|n| add_book(&mut c, n, 1)).collect();
    // m1: due 66 days back, lost during the week (over lost_after_days 60).
    circulation::borrow(&mut c, &at(&desk, ago(80)), &people[0], &books[0]).unwrap();
    // m2: overdue 5 days at the first night, its second-level notice comes mid-week.
    circulation::borrow(&mut c, &at(&desk, ago(27)), &people[1], &books[1]).unwrap();
    // m3: due 3 days back, auto-renewed mid-week, after a courtesy notice.
    circulation::borrow(&mut c, &at(&desk, ago(17)), &people[2], &books[2]).unwrap();
    // m4: due 4 days back with m5 waiting: its auto-renewal fails.
    circulation::borrow(&mut c, &at(&desk, ago(18)), &people[3], &books[3]).unwrap();
    holds::place(&mut c, &at(&desk, ago(17)), &people[4], &books[3]).unwrap();
    // m6 returned book 5 ten days back to m7's hold, which expires mid-week.
    let lent = circulation::borrow(&mut c, &at(&desk, ago(30)), &people[5], &books[4]).unwrap();
    holds::place(&mut c, &at(&desk, ago(29)), &people[6], &books[4]).unwrap();
    circulation::return_loan(&mut c, &at(&desk, ago(10)), &LoanRef::Id(lent.id)).unwrap();
    // m8's membership lapses in 26 days: its notice (30 days ahead) comes mid-week.
    c.execute(
        "UPDATE member SET expires_at = now() + interval '26 days' WHERE email = $1",
        &[&people[7]],
    )
    .unwrap();
    // Every run acts at the same moment, as a cron catching up would.
    let sys = at(&system(), Utc::now());
    run(&mut c, &sys, day(8), None);
    drop(c);
    let b = a.copy();

    let mut c = a.client();
    let mut nightly = jobs::Nightly::default();
    for back in (1..=7).rev() {
        let one = run(&mut c, &sys, day(back), None);
        assert_eq!(one.days, [day(back)]);
        nightly.loans_lost += one.loans_lost;
        nightly.loans_renewed += one.loans_renewed;
        nightly.auto_renew_failed += one.auto_renew_failed;
        nightly.holds_expired += one.holds_expired;
        nightly.notices_issued += one.notices_issued;
    }
    let mut caught_up_client = b.client();
    let caught_up = run(&mut caught_up_client, &sys, day(1), None);
    assert_eq!(caught_up.days, (1..=7).rev().map(day).collect::<Vec<_>>());

    // Something happened on those nights, and the same things.
    assert_eq!(
        (
            nightly.loans_lost,
            nightly.loans_renewed,
            nightly.auto_renew_failed,
            nightly.holds_expired
        ),
        (1, 1, 1, 1)
    );
    assert!(nightly.notices_issued >= 5, "{}", nightly.notices_issued);
    assert_eq!(
        (
            caught_up.loans_lost,
            caught_up.loans_renewed,
            caught_up.auto_renew_failed,
            caught_up.holds_expired,
            caught_up.notices_issued
        ),
        (
            nightly.loans_lost,
            nightly.loans_renewed,
            nightly.auto_renew_failed,
            nightly.holds_expired,
            nightly.notices_issued
        )
    );
    let (seven, one) = (state(&mut c), state(&mut caught_up_client));
    assert_eq!(seven.len(), one.len());
    for (x, y) in seven.iter().zip(&one) {
        assert_eq!(x, y);
    }
    // A re-run of the last night changes nothing.
    run(&mut caught_up_client, &sys, day(1), None);
    assert_eq!(state(&mut caught_up_client), one);
    assert_invariants(&mut c);
    assert_invariants(&mut caught_up_client);
}

#[test]
fn the_rollup_folds_the_running_totals_into_one_row_and_keeps_them() {
    let tdb = TestDb::new();
    let mut c = tdb.client();
    let desk = admin(&mut c);
    for n in 0..3 {
        let book = add_book(&mut c, n, 2);
        let m = member(&mut c, &format!("fold{n}@example.org"));
        circulation::borrow(&mut c, &desk, &m, &book).unwrap();
    }
    let rows = |c: &mut Client| -> i64 {
        c.query_one("SELECT count(*) FROM library_tally", &[])
            .unwrap()
            .get(0)
    };
    assert!(
        rows(&mut c) > 3,
        "each book, member and loan appended a row"
    );
    let before = libcore::tally::totals(&mut c).unwrap();
    assert_eq!(before.open_loans, 3);
    assert_eq!(before.titles, 3);
    let day = today(&mut c);
    let night = run(&mut c, &system(), day, Some(Step::Rollup));
    assert_eq!(night.steps.len(), 1);
    assert_eq!(rows(&mut c), 1);
    assert_eq!(libcore::tally::totals(&mut c).unwrap(), before);
    assert_eq!(libcore::tally::recount(&mut c).unwrap(), before);
    assert_invariants(&mut c);
}
