//! Borrow, return and renew: every rule of SPEC §5, each error code with its exit code, and
//! the audit row each attempt leaves.

use chrono::{DateTime, Duration, Utc};
use libcore::actor::Ctx;
use libcore::circulation::{self, LoanRef};
use libcore::members::NewMember;
use libcore::policy::{self, RuleChange};
use postgres::Client;

use crate::support::*;

fn days_ago(n: i64) -> DateTime<Utc> {
    Utc::now() - Duration::days(n)
}

fn admin_at(client: &mut Client, at: DateTime<Utc>) -> Ctx {
    Ctx {
        at: Some(at),
        ..admin(client)
    }
}

fn borrow_at(
    client: &mut Client,
    at: DateTime<Utc>,
    member: &str,
    book: &str,
) -> libcore::Result<circulation::Loan> {
    let ctx = admin_at(client, at);
    circulation::borrow(client, &ctx, member, book)
}

/// A member created `days` days ago, so loans can be backdated after it.
fn old_member(client: &mut Client, email: &str, days: i64) -> String {
    let ctx = admin_at(client, days_ago(days));
    libcore::members::add_member(
        client,
        &ctx,
        &NewMember {
            name: "Old Member".into(),
            email: email.into(),
            category: Some("public".into()),
            ..Default::default()
        },
    )
    .unwrap();
    email.into()
}

fn audit_outcomes(client: &mut Client, action: &str) -> Vec<String> {
    client
        .query(
            "SELECT outcome FROM audit_log WHERE action = $1 ORDER BY recorded_at",
            &[&action],
        )
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect()
}

fn available(client: &mut Client, isbn: &str) -> i32 {
    client
        .query_one(
            "SELECT available_copies FROM book WHERE isbn = $1",
            &[&isbn],
        )
        .unwrap()
        .get(0)
}

#[test]
fn borrow_takes_a_copy_sets_the_due_date_and_audits() {
    let tdb = TestDb::new();
    let mut c = tdb.client();
    let m = add_member(&mut c, "reader@example.org", "member");
    let b = add_book(&mut c, 1, 2);
    let ctx = admin(&mut c);
    let loan = circulation::borrow(&mut c, &ctx, &m, &b).unwrap();
    assert_eq!(available(&mut c, &b), 1);
    assert_eq!(loan.renewals, 0);
    assert_eq!(
        (
            loan.fine_cents_per_day,
            loan.grace_days,
            loan.max_fine_cents
        ),
        (100, 0, 2000)
    );
    let due_date = loan.due_at.date_naive();
    assert_eq!(
        due_date,
        (loan.borrowed_at + Duration::days(14)).date_naive()
    );
    assert_eq!(loan.due_at.format("%H:%M:%S").to_string(), "23:59:59");
    assert_eq!(audit_outcomes(&mut c, "loan.borrow"), ["ok"]);
    let (entity, actor): (String, String) = c
        .query_one(
            "SELECT entity_id, actor FROM audit_log WHERE action = 'loan.borrow'",
            &[],
        )
        .map(|r| (r.get(0), r.get(1)))
        .unwrap();
    assert_eq!(entity, loan.id.to_string());
    assert_eq!(actor, ADMIN);
    assert_invariants(&mut c);
}

#[test]
fn due_dates_move_past_closed_days() {
    let tdb = TestDb::new();
    let mut c = tdb.client();
    let m = add_member(&mut c, "reader@example.org", "member");
    let b = add_book(&mut c, 1, 1);
    let ctx = admin(&mut c);
    let nominal = (Utc::now() + Duration::days(14)).date_naive();
    libcore::policy::add_closed_day(&mut c, &ctx, nominal, Some("holiday")).unwrap();
    libcore::policy::add_closed_day(&mut c, &ctx, nominal.succ_opt().unwrap(), None).unwrap();
    let loan = circulation::borrow(&mut c, &ctx, &m, &b).unwrap();
    assert_eq!(loan.due_at.date_naive(), nominal + Duration::days(2));
}

#[test]
fn a_session_keeps_the_calendar_until_its_stamp_changes() {
    use libcore::policy::{add_closed_day, remove_closed_day};
    use libcore::session::Session;
    let tdb = TestDb::new();
    let mut c = tdb.client();
    let m = add_member(&mut c, "reader@example.org", "member");
    let books: Vec<String> = (0..6).map(|n| add_book(&mut c, n, 1)).collect();
    let ctx = admin(&mut c);
    let mut session = Session::new(tdb.client());
    let nominal = (Utc::now() + Duration::days(14)).date_naive();
    let day_after = nominal.succ_opt().unwrap();
    // Each loan goes back at once, so the member stays below the loan limit.
    let borrow = |session: &mut Session, n: usize| {
        let loan = circulation::borrow(session, &ctx, &m, &books[n]).unwrap();
        circulation::return_loan(session, &ctx, &LoanRef::Id(loan.id)).unwrap();
        (
            loan.due_at.date_naive(),
            loan.due_at.format("%H:%M").to_string(),
        )
    };
    // The first borrow reads the calendar, and the session keeps it.
    assert_eq!(borrow(&mut session, 0), (nominal, "23:59".to_string()));
    // Another connection closes the due date: the stamp changes and the next borrow sees it.
    add_closed_day(&mut c, &ctx, nominal, Some("holiday")).unwrap();
    assert_eq!(borrow(&mut session, 1).0, day_after);
    // A change that does not renew the stamp goes unseen by the session, which shows that it
    // answers from the calendar it kept, while a plain client reads the calendar every time.
    c.batch_execute("ALTER TABLE closed_day DISABLE TRIGGER closed_day_renews_calendar_stamp")
        .unwrap();
    c.execute("INSERT INTO closed_day (day) VALUES ($1)", &[&day_after])
        .unwrap();
    c.batch_execute("ALTER TABLE closed_day ENABLE TRIGGER closed_day_renews_calendar_stamp")
        .unwrap();
    assert_eq!(borrow(&mut session, 2).0, day_after);
    let plain = circulation::borrow(&mut c, &ctx, &m, &books[3]).unwrap();
    assert_eq!(plain.due_at.date_naive(), day_after.succ_opt().unwrap());
    // Reopening the day renews the stamp; so does a new time zone.
    remove_closed_day(&mut c, &ctx, nominal).unwrap();
    assert_eq!(borrow(&mut session, 4).0, nominal);
    policy::set_timezone(&mut c, &ctx, "Pacific/Kiritimati").unwrap();
    // 23:59:59 at UTC+14 is 09:59:59 UTC.
    assert_eq!(borrow(&mut session, 5).1, "09:59");
}

#[test]
fn a_restore_in_place_ends_the_sessions_it_replaces_and_new_ones_see_its_calendar() {
    use libcore::backup::{self, CreateOptions};
    use libcore::policy::{add_closed_day, remove_closed_day};
    use libcore::restore::{self, RestoreOptions};
    use libcore::session::Session;
    let tdb = TestDb::new();
    let mut c = tdb.client();
    let m = add_member(&mut c, "reader@example.org", "member");
    let b = add_book(&mut c, 1, 1);
    let ctx = admin(&mut c);
    let nominal = (Utc::now() + Duration::days(14)).date_naive();
    add_closed_day(&mut c, &ctx, nominal, None).unwrap();
    let root = std::env::temp_dir().join(format!("libctl-stamp-{}", uuid::Uuid::new_v4()));
    let options = CreateOptions {
        root: root.clone(),
        name: None,
        jobs: 1,
    };
    let created = backup::create(&tdb.url, &ctx, &options).unwrap();
    remove_closed_day(&mut c, &ctx, nominal).unwrap();
    let mut session = Session::new(tdb.client());
    let due = |session: &mut Session| -> libcore::Result<chrono::NaiveDate> {
        let loan = circulation::borrow(session, &ctx, &m, &b)?;
        circulation::return_loan(session, &ctx, &LoanRef::Id(loan.id))?;
        Ok(loan.due_at.date_naive())
    };
    assert_eq!(
        due(&mut session).unwrap(),
        nominal,
        "the session keeps an open day"
    );
    let restore = RestoreOptions {
        target_url: tdb.url.clone(),
        jobs: 1,
        force: true,
    };
    restore::restore(&created.path, Some("admin@library.test"), &restore).unwrap();
    // The database the session was connected to is gone: its next operation says the
    // database is unavailable (exit 10), and a new connection sees the restored calendar.
    let err = due(&mut session).unwrap_err();
    assert_eq!(err.exit_code(), 10, "{err}");
    let mut session = Session::new(tdb.client());
    assert_eq!(due(&mut session).unwrap(), nominal.succ_opt().unwrap());
    std::fs::remove_dir_all(root).unwrap();
}

#[test]
fn refusals_have_their_codes_exit_4_change_nothing_and_are_audited() {
    let tdb = TestDb::new();
    let mut c = tdb.client();
    let m = add_member(&mut c, "reader@example.org", "member");
    let other = add_member(&mut c, "other@example.org", "member");
    let b = add_book(&mut c, 1, 1);
    let ctx = admin(&mut c);
    circulation::borrow(&mut c, &ctx, &m, &b).unwrap();

    let dup = circulation::borrow(&mut c, &ctx, &m, &b).unwrap_err();
    assert_eq!((dup.code(), dup.exit_code()), ("duplicate_loan", 4));
    let none = circulation::borrow(&mut c, &ctx, &other, &b).unwrap_err();
    assert_eq!((none.code(), none.exit_code()), ("no_copy_available", 4));
    assert_eq!(available(&mut c, &b), 0);
    assert_eq!(
        audit_outcomes(&mut c, "loan.borrow"),
        ["ok", "refused", "refused"]
    );

    let missing = circulation::borrow(&mut c, &ctx, "nobody@example.org", &b).unwrap_err();
    assert_eq!((missing.code(), missing.exit_code()), ("not_found", 3));
    // A member id goes straight to the gated read, which finds nobody behind an open gate.
    let no_member = uuid::Uuid::now_v7().to_string();
    let missing = circulation::borrow(&mut c, &ctx, &no_member, &b).unwrap_err();
    assert_eq!((missing.code(), missing.exit_code()), ("not_found", 3));
    assert!(missing.to_string().contains("member"), "{missing}");
    let no_book = uuid::Uuid::now_v7().to_string();
    let missing = circulation::borrow(&mut c, &ctx, &other, &no_book).unwrap_err();
    assert_eq!((missing.code(), missing.exit_code()), ("not_found", 3));
    assert!(missing.to_string().contains("book"), "{missing}");
    let no_loan = LoanRef::Id(uuid::Uuid::now_v7());
    for missing in [
        circulation::return_loan(&mut c, &ctx, &no_loan).unwrap_err(),
        circulation::renew(&mut c, &ctx, &no_loan).unwrap_err(),
    ] {
        assert_eq!((missing.code(), missing.exit_code()), ("not_found", 3));
        assert!(missing.to_string().contains("loan"), "{missing}");
    }

    let reference = {
        let admin = admin(&mut c);
        libcore::catalog::add_book(
            &mut c,
            &admin,
            &libcore::catalog::NewBook {
                isbn: isbn(2),
                title: "Atlas".into(),
                author: "Maps".into(),
                category: Some("reference".into()),
                copies: Some(3),
                ..Default::default()
            },
        )
        .unwrap()
    };
    let err = circulation::borrow(&mut c, &ctx, &other, &reference.isbn).unwrap_err();
    assert_eq!((err.code(), err.exit_code()), ("not_loanable", 4));

    libcore::members::set_status(&mut c, &ctx, &other, "suspended").unwrap();
    let b3 = add_book(&mut c, 3, 1);
    let err = circulation::borrow(&mut c, &ctx, &other, &b3).unwrap_err();
    assert_eq!((err.code(), err.exit_code()), ("member_not_active", 4));
    assert_invariants(&mut c);
}

#[test]
fn the_loan_limit_is_enforced() {
    let tdb = TestDb::new();
    let mut c = tdb.client();
    let m = add_member(&mut c, "reader@example.org", "member");
    let ctx = admin(&mut c);
    for n in 0..5 {
        let b = add_book(&mut c, n, 1);
        circulation::borrow(&mut c, &ctx, &m, &b).unwrap();
    }
    let b = add_book(&mut c, 99, 1);
    let err = circulation::borrow(&mut c, &ctx, &m, &b).unwrap_err();
    assert_eq!((err.code(), err.exit_code()), ("loan_limit_reached", 4));
    assert_invariants(&mut c);
}

#[test]
fn return_restores_the_copy_freezes_the_fine_and_refuses_a_second_return() {
    let tdb = TestDb::new();
    let mut c = tdb.client();
    let m = old_member(&mut c, "late@example.org", 60);
    let b = add_book(&mut c, 1, 1);
    let borrow_ctx = admin_at(&mut c, days_ago(30));
    let loan = circulation::borrow(&mut c, &borrow_ctx, &m, &b).unwrap();
    // Due 14 days after borrowing; returned 30 days after: 16 overdue days, 1600 cents.
    let ctx = admin(&mut c);
    let returned = circulation::return_loan(&mut c, &ctx, &LoanRef::Id(loan.id)).unwrap();
    assert!(returned.returned_at.is_some());
    assert_eq!(returned.fine_cents, 1600);
    assert_eq!(available(&mut c, &b), 1);
    let again = circulation::return_loan(&mut c, &ctx, &LoanRef::Id(loan.id)).unwrap_err();
    assert_eq!((again.code(), again.exit_code()), ("already_returned", 4));
    let by_pair =
        circulation::return_loan(&mut c, &ctx, &LoanRef::MemberBook { member: m, book: b })
            .unwrap_err();
    assert_eq!(by_pair.code(), "already_returned");
    assert_invariants(&mut c);
}

#[test]
fn a_policy_change_after_checkout_does_not_touch_the_loan() {
    let tdb = TestDb::new();
    let mut c = tdb.client();
    let m = old_member(&mut c, "late@example.org", 60);
    let b = add_book(&mut c, 1, 1);
    let loan = borrow_at(&mut c, days_ago(20), &m, &b).unwrap();
    let ctx = admin(&mut c);
    policy::set_rule(
        &mut c,
        &ctx,
        &RuleChange {
            category: "public".into(),
            fine_cents_per_day: Some(500),
            grace_days: Some(10),
            ..Default::default()
        },
    )
    .unwrap();
    let returned = circulation::return_loan(&mut c, &ctx, &LoanRef::Id(loan.id)).unwrap();
    assert_eq!(returned.fine_cents_per_day, 100);
    assert_eq!(
        returned.fine_cents, 600,
        "6 overdue days at the snapshot's 100 cents"
    );
}

#[test]
fn renew_extends_from_the_later_of_now_and_due_and_stops_at_the_limit() {
    let tdb = TestDb::new();
    let mut c = tdb.client();
    let m = add_member(&mut c, "reader@example.org", "member");
    let b = add_book(&mut c, 1, 1);
    let ctx = admin(&mut c);
    let loan = circulation::borrow(&mut c, &ctx, &m, &b).unwrap();
    let r1 = circulation::renew(&mut c, &ctx, &LoanRef::Id(loan.id)).unwrap();
    assert_eq!(
        r1.due_at.date_naive(),
        loan.due_at.date_naive() + Duration::days(14)
    );
    assert_eq!(r1.renewals, 1);
    let r2 = circulation::renew(&mut c, &ctx, &LoanRef::Id(loan.id)).unwrap();
    assert_eq!(r2.renewals, 2);
    let err = circulation::renew(&mut c, &ctx, &LoanRef::Id(loan.id)).unwrap_err();
    assert_eq!((err.code(), err.exit_code()), ("renewal_limit_reached", 4));
    circulation::return_loan(&mut c, &ctx, &LoanRef::Id(loan.id)).unwrap();
    let err = circulation::renew(&mut c, &ctx, &LoanRef::Id(loan.id)).unwrap_err();
    assert_eq!(err.code(), "already_returned");
}

#[test]
fn renewing_an_overdue_loan_counts_from_now() {
    let tdb = TestDb::new();
    let mut c = tdb.client();
    let m = old_member(&mut c, "late@example.org", 60);
    let b = add_book(&mut c, 1, 1);
    let ctx = admin(&mut c);
    policy::set_rule(
        &mut c,
        &ctx,
        &RuleChange {
            category: "public".into(),
            fine_cents_per_day: Some(0),
            ..Default::default()
        },
    )
    .unwrap();
    let loan = borrow_at(&mut c, days_ago(20), &m, &b).unwrap();
    let renewed = circulation::renew(&mut c, &ctx, &LoanRef::Id(loan.id)).unwrap();
    assert_eq!(
        renewed.due_at.date_naive(),
        (Utc::now() + Duration::days(14)).date_naive()
    );
}

#[test]
fn fines_block_at_the_threshold_inclusive() {
    let tdb = TestDb::new();
    let mut c = tdb.client();
    let ctx = admin(&mut c);
    for (email, late_days, blocked) in [
        ("nine@example.org", 9, false),
        ("ten@example.org", 10, true),
    ] {
        let m = old_member(&mut c, email, 60);
        let b = add_book(&mut c, late_days, 1);
        let loan = borrow_at(&mut c, days_ago(40), &m, &b).unwrap();
        // Due 14 days after borrowing, returned `late_days` after that: 100 cents a day.
        let back = admin_at(
            &mut c,
            loan.due_at + Duration::days(late_days as i64) - Duration::hours(1),
        );
        let returned = circulation::return_loan(&mut c, &back, &LoanRef::Id(loan.id)).unwrap();
        assert_eq!(returned.fine_cents, late_days as i64 * 100);
        let next = add_book(&mut c, 100 + late_days, 1);
        let result = circulation::borrow(&mut c, &ctx, &m, &next);
        if blocked {
            let err = result.unwrap_err();
            assert_eq!(
                (err.code(), err.exit_code()),
                ("member_blocked", 4),
                "{email}"
            );
        } else {
            result.unwrap();
        }
    }
}

#[test]
fn a_loan_overdue_more_than_30_days_blocks_but_30_does_not() {
    let tdb = TestDb::new();
    let mut c = tdb.client();
    let ctx = admin(&mut c);
    // No fines, so only the overdue rule can block.
    policy::set_rule(
        &mut c,
        &ctx,
        &RuleChange {
            category: "public".into(),
            fine_cents_per_day: Some(0),
            ..Default::default()
        },
    )
    .unwrap();
    for (email, overdue, blocked) in [
        ("thirty@example.org", 30, false),
        ("thirtyone@example.org", 31, true),
    ] {
        let m = old_member(&mut c, email, 90);
        let b = add_book(&mut c, overdue, 1);
        // Borrowed so that the due date lies exactly `overdue` calendar days before today.
        let borrowed = Utc::now() - Duration::days(14 + overdue as i64);
        borrow_at(&mut c, borrowed, &m, &b).unwrap();
        let next = add_book(&mut c, 200 + overdue, 1);
        let result = circulation::borrow(&mut c, &ctx, &m, &next);
        assert_eq!(result.is_err(), blocked, "{email}: {result:?}");
        if blocked {
            assert_eq!(result.unwrap_err().code(), "member_blocked");
        }
    }
}

#[test]
fn members_act_only_on_their_own_loans_and_denials_are_audited() {
    let tdb = TestDb::new();
    let mut c = tdb.client();
    let me = add_member(&mut c, "me@example.org", "member");
    let you = add_member(&mut c, "you@example.org", "member");
    let b = add_book(&mut c, 1, 2);
    let my_ctx = ctx_of(&mut c, &me);
    let loan = circulation::borrow(&mut c, &my_ctx, &me, &b).unwrap();
    let err = circulation::borrow(&mut c, &my_ctx, &you, &b).unwrap_err();
    assert_eq!((err.code(), err.exit_code()), ("permission_denied", 5));
    let your_ctx = ctx_of(&mut c, &you);
    let err = circulation::return_loan(&mut c, &your_ctx, &LoanRef::Id(loan.id)).unwrap_err();
    assert_eq!(err.exit_code(), 5);
    let err = circulation::borrow(&mut c, &system(), &you, &b).unwrap_err();
    assert_eq!(err.exit_code(), 5, "the system actor does not run the desk");
    assert_eq!(
        audit_outcomes(&mut c, "loan.borrow"),
        ["ok", "denied", "denied"]
    );
    assert_eq!(audit_outcomes(&mut c, "loan.return"), ["denied"]);
    assert_eq!(available(&mut c, &b), 1);
}

#[test]
fn backdating_is_for_staff_and_cannot_predate_the_member() {
    let tdb = TestDb::new();
    let mut c = tdb.client();
    let m = add_member(&mut c, "new@example.org", "member");
    let b = add_book(&mut c, 1, 1);
    let err = libcore::actor::resolve(&mut c, Some(&m), Some(days_ago(1))).unwrap_err();
    assert_eq!(err.exit_code(), 5);
    let err = borrow_at(&mut c, days_ago(3), &m, &b).unwrap_err();
    assert_eq!((err.code(), err.exit_code()), ("invalid_input", 7));
    let err = libcore::actor::resolve(&mut c, Some(ADMIN), Some(Utc::now() + Duration::days(2)))
        .unwrap_err();
    assert_eq!(err.exit_code(), 7);
    let err = libcore::actor::resolve(&mut c, Some("ghost@example.org"), None).unwrap_err();
    assert_eq!((err.code(), err.exit_code()), ("unknown_actor", 5));
    assert_invariants(&mut c);
}

#[test]
fn expired_closed_and_inactive_members() {
    let tdb = TestDb::new();
    let mut c = tdb.client();
    let m = add_member(&mut c, "lapsed@example.org", "member");
    let b = add_book(&mut c, 1, 2);
    let ctx = admin(&mut c);
    circulation::borrow(&mut c, &ctx, &m, &b).unwrap();
    let err = libcore::members::set_status(&mut c, &ctx, &m, "closed").unwrap_err();
    assert_eq!((err.code(), err.exit_code()), ("member_has_loans", 4));
    c.execute(
        "UPDATE member SET expires_at = now() - interval '1 day' WHERE email = $1",
        &[&m],
    )
    .unwrap();
    let b2 = add_book(&mut c, 2, 1);
    let err = circulation::borrow(&mut c, &ctx, &m, &b2).unwrap_err();
    assert_eq!((err.code(), err.exit_code()), ("membership_expired", 4));
    let err = libcore::actor::resolve(&mut c, Some(&m), None).unwrap_err();
    assert_eq!((err.code(), err.exit_code()), ("inactive_actor", 5));
    let hits = libcore::catalog::list_books(&mut c, Some(&b[8..12]), 10, None).unwrap();
    assert_eq!(hits.items.len(), 1, "part of an ISBN finds the book");
}

#[test]
fn short_loan_books_go_out_for_three_days_and_renew_by_three() {
    let tdb = TestDb::new();
    let mut c = tdb.client();
    let ctx = admin(&mut c);
    let m = add_member(&mut c, "quick@example.org", "member");
    let book = libcore::catalog::add_book(
        &mut c,
        &ctx,
        &libcore::catalog::NewBook {
            isbn: isbn(42),
            title: "Course Reader".into(),
            author: "Faculty".into(),
            category: Some("short_loan".into()),
            copies: Some(1),
            ..Default::default()
        },
    )
    .unwrap();
    let today = Utc::now().date_naive();
    let loan = circulation::borrow(&mut c, &ctx, &m, &book.id.to_string()).unwrap();
    assert_eq!(loan.due_at.date_naive(), today + Duration::days(3));
    // Renewed today: three more days from the current due date, not the member's fourteen.
    let renewed = circulation::renew(&mut c, &ctx, &LoanRef::Id(loan.id)).unwrap();
    assert_eq!(renewed.due_at.date_naive(), today + Duration::days(6));
}

#[test]
fn a_session_prepares_its_statements_once_and_keeps_them_through_refusals_and_rollbacks() {
    let tdb = TestDb::new();
    let mut c = tdb.client();
    let ctx = admin(&mut c);
    let m = add_member(&mut c, "regular@example.org", "member");
    let books: Vec<String> = (0..3).map(|n| add_book(&mut c, n, 1)).collect();
    let mut session = libcore::session::Session::new(tdb.client());
    let prepared = |s: &mut libcore::session::Session| -> i64 {
        s.query_one(
            // Not counting this query's own statement.
            "SELECT count(*) FROM pg_prepared_statements
             WHERE NOT from_sql AND statement NOT LIKE '%pg_prepared_statements%'",
            &[],
        )
        .unwrap()
        .get(0)
    };
    assert_eq!(prepared(&mut session), 0);
    let first = circulation::borrow(&mut session, &ctx, &m, &books[0]).unwrap();
    let after_one = prepared(&mut session);
    // The member's call behind the rate-limit gate, and the writes that carry the audit row.
    assert_eq!(after_one, 2, "statements prepared by one borrow");
    // A refusal rolls its transaction back; the statements prepared on the connection stay.
    let dup = circulation::borrow(&mut session, &ctx, &m, &books[0]).unwrap_err();
    assert_eq!(dup.code(), "duplicate_loan");
    circulation::borrow(&mut session, &ctx, &m, &books[1]).unwrap();
    circulation::renew(&mut session, &ctx, &LoanRef::Id(first.id)).unwrap();
    circulation::return_loan(&mut session, &ctx, &LoanRef::Id(first.id)).unwrap();
    let again = circulation::return_loan(&mut session, &ctx, &LoanRef::Id(first.id)).unwrap_err();
    assert_eq!(again.code(), "already_returned");
    circulation::borrow(&mut session, &ctx, &m, &books[0]).unwrap();
    // Each statement was prepared once: a second round of the same operations adds none.
    let settled = prepared(&mut session);
    circulation::borrow(&mut session, &ctx, &m, &books[2]).unwrap();
    let loan = circulation::renew(
        &mut session,
        &ctx,
        &LoanRef::MemberBook {
            member: m.clone(),
            book: books[2].clone(),
        },
    )
    .unwrap();
    circulation::return_loan(&mut session, &ctx, &LoanRef::Id(loan.id)).unwrap();
    assert_eq!(prepared(&mut session), settled);
    assert_eq!(
        audit_outcomes(&mut c, "loan.borrow"),
        ["ok", "refused", "ok", "ok", "ok"]
    );
    assert_invariants(&mut c);
}

#[test]
fn borrow_return_and_renew_audit_what_they_stored_in_the_same_statement() {
    let tdb = TestDb::new();
    let mut c = tdb.client();
    let ctx = admin(&mut c);
    let m = add_member(&mut c, "reader@example.org", "member");
    let b = add_book(&mut c, 1, 1);
    let stored = |c: &mut Client, id: uuid::Uuid| -> circulation::Loan {
        let loans =
            circulation::list_loans(c, &ctx, &circulation::LoanFilter::default(), 10_000, None)
                .unwrap();
        loans.items.into_iter().find(|l| l.id == id).unwrap()
    };
    let details = |c: &mut Client, action: &str| -> serde_json::Value {
        c.query_one(
            "SELECT details FROM audit_log WHERE action = $1 AND outcome = 'ok'",
            &[&action],
        )
        .unwrap()
        .get(0)
    };
    // On a Session (the hot path, where the audit row rides on the write) and on a plain Client.
    let mut session = libcore::session::Session::new(tdb.client());
    let loan = circulation::borrow(&mut session, &ctx, &m, &b).unwrap();
    assert_eq!(
        loan,
        stored(&mut c, loan.id),
        "the loan returned is the loan stored"
    );
    assert_eq!(
        details(&mut c, "loan.borrow"),
        serde_json::json!({ "after": loan })
    );
    let renewed = circulation::renew(&mut c, &ctx, &LoanRef::Id(loan.id)).unwrap();
    assert_eq!(renewed, stored(&mut c, loan.id));
    assert_eq!(
        details(&mut c, "loan.renew"),
        serde_json::json!({ "item": loan.barcode,
                            "before": { "due_at": loan.due_at, "renewals": 0 },
                            "after": { "due_at": renewed.due_at, "renewals": 1 } })
    );
    let returned = circulation::return_loan(&mut session, &ctx, &LoanRef::Id(loan.id)).unwrap();
    assert_eq!(returned, stored(&mut c, loan.id));
    assert_eq!(
        details(&mut c, "loan.return"),
        serde_json::json!({ "item": loan.barcode,
                            "before": { "returned_at": null, "fine_cents": 0 },
                            "after": { "returned_at": returned.returned_at, "fine_cents": 0 } })
    );
    // One row per operation, each stamped when its loan was written.
    let rows: Vec<(String, DateTime<Utc>, String)> = c
        .query(
            "SELECT action, at, entity_id FROM audit_log WHERE action LIKE 'loan.%' ORDER BY at",
            &[],
        )
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect();
    assert_eq!(
        rows.iter().map(|r| r.0.as_str()).collect::<Vec<_>>(),
        ["loan.borrow", "loan.renew", "loan.return"]
    );
    assert!(rows.iter().all(|r| r.2 == loan.id.to_string()));
    assert_eq!(rows[0].1, loan.borrowed_at);
    assert_eq!(Some(rows[2].1), returned.returned_at);
    assert_invariants(&mut c);
}
