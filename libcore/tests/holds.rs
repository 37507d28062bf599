//! Holds (SPEC §16): the queue of a title, trapping at return, the hold shelf and its expiry,
//! the races of issue 24, and the hold invariants of `db check`.

use chrono::{DateTime, Days, Duration, NaiveDate, Utc};
use libcore::actor::Ctx;
use libcore::circulation::{self, Copy, LoanRef};
use libcore::holds::{self, Hold, HoldFilter};
use libcore::items::{self, NewItem};
use libcore::members;
use postgres::Client;
use uuid::Uuid;

use crate::concurrency::{race, Job};
use crate::support::*;

fn item_status(c: &mut Client, barcode: &str) -> String {
    items::find(c, barcode).unwrap().status
}

fn hold(c: &mut Client, id: Uuid) -> Hold {
    holds::get(c, id).unwrap()
}

fn at(ctx: &Ctx, t: DateTime<Utc>) -> Ctx {
    Ctx {
        at: Some(t),
        ..ctx.clone()
    }
}

fn days_ago(n: i64) -> DateTime<Utc> {
    Utc::now() - Duration::days(n)
}

/// Adds an active member who joined `joined` (so backdated loans and holds are theirs).
fn member_since(c: &mut Client, email: &str, joined: DateTime<Utc>) -> String {
    let admin = at(&admin(c), joined);
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

fn audited(c: &mut Client, action: &str, outcome: &str) -> i64 {
    c.query_one(
        "SELECT count(*) FROM audit_log WHERE action = $1 AND outcome = $2",
        &[&action, &outcome],
    )
    .unwrap()
    .get(0)
}

fn today(c: &mut Client) -> NaiveDate {
    libcore::calendar::Calendar::load(c)
        .unwrap()
        .local_date(Utc::now())
}

#[test]
fn a_returned_copy_goes_to_the_first_hold_in_line_and_only_its_member_takes_it() {
    let tdb = TestDb::new();
    let mut c = tdb.client();
    let ctx = admin(&mut c);
    let book = add_book(&mut c, 1, 1);
    let [m0, m1, m2] =
        ["m0@x.org", "m1@x.org", "m2@x.org"].map(|e| add_member(&mut c, e, "member"));
    let loan = circulation::borrow(&mut c, &ctx, &m0, &book).unwrap();
    let first = holds::place(&mut c, &ctx, &m1, &book).unwrap();
    let as_m2 = ctx_of(&mut c, &m2);
    let second = holds::place(&mut c, &as_m2, &m2, &book).unwrap();
    assert_eq!(
        (first.status.as_str(), first.queue_position),
        ("waiting", Some(1))
    );
    assert_eq!(second.queue_position, Some(2));

    let returned = circulation::return_loan(&mut c, &ctx, &LoanRef::Id(loan.id)).unwrap();
    let trapped = returned
        .hold
        .expect("the return names the hold it trapped for");
    assert_eq!(trapped.id, first.id);
    let first = hold(&mut c, first.id);
    assert_eq!(first.status, "ready");
    assert_eq!(first.barcode, loan.barcode);
    let day = today(&mut c);
    let pickup_by: NaiveDate = c
        .query_one("SELECT open_days_after($1, 7)", &[&day])
        .unwrap()
        .get(0);
    assert_eq!(first.pickup_by, Some(pickup_by));
    assert_eq!(hold(&mut c, second.id).queue_position, Some(1));
    let barcode = loan.barcode.clone().unwrap();
    assert_eq!(item_status(&mut c, &barcode), "on_hold_shelf");
    let notices: i64 = c
        .query_one(
            "SELECT count(*) FROM notice WHERE kind = 'hold_ready' AND hold_id = $1",
            &[&first.id],
        )
        .unwrap()
        .get(0);
    assert_eq!(notices, 1);
    assert_eq!(audited(&mut c, "hold.trap", "ok"), 1);
    assert_invariants(&mut c);

    // Nobody else takes it: not by title, not by scanning it.
    let err = circulation::borrow(&mut c, &ctx, &m2, &book).unwrap_err();
    assert_eq!(err.code(), "no_copy_available");
    let err = circulation::borrow_copy(&mut c, &ctx, &m2, Copy::Item(&barcode)).unwrap_err();
    assert_eq!(err.code(), "item_on_hold");
    assert_eq!(err.exit_code(), 4);

    // Its member borrows the title and gets the held copy; the hold is fulfilled.
    let taken = circulation::borrow(&mut c, &ctx, &m1, &book).unwrap();
    assert_eq!(taken.barcode.as_deref(), Some(barcode.as_str()));
    let first = hold(&mut c, first.id);
    assert_eq!(first.status, "fulfilled");
    assert_eq!(first.fulfilled_at, Some(taken.borrowed_at));
    assert_eq!(audited(&mut c, "hold.fulfil", "ok"), 1);
    assert_invariants(&mut c);
}

#[test]
fn placing_a_hold_is_refused_for_every_reason_the_issue_names_and_each_refusal_is_audited() {
    let tdb = TestDb::new();
    let mut c = tdb.client();
    let ctx = admin(&mut c);
    let on_shelf = add_book(&mut c, 1, 1);
    let out = add_book(&mut c, 2, 1);
    let other = add_book(&mut c, 3, 1);
    let [m0, m1, m2] =
        ["m0@x.org", "m1@x.org", "m2@x.org"].map(|e| add_member(&mut c, e, "member"));
    circulation::borrow(&mut c, &ctx, &m0, &out).unwrap();
    circulation::borrow(&mut c, &ctx, &m0, &other).unwrap();
    let code = |c: &mut Client, member: &str, book: &str| {
        holds::place(c, &ctx, member, book).unwrap_err().code()
    };
    assert_eq!(code(&mut c, &m1, &on_shelf), "copy_available");
    assert_eq!(code(&mut c, &m0, &out), "already_on_loan");
    holds::place(&mut c, &ctx, &m1, &out).unwrap();
    assert_eq!(code(&mut c, &m1, &out), "duplicate_hold");
    libcore::policy::set_rule(
        &mut c,
        &ctx,
        &libcore::policy::RuleChange {
            category: "public".into(),
            max_holds: Some(1),
            ..Default::default()
        },
    )
    .unwrap();
    assert_eq!(code(&mut c, &m1, &other), "hold_limit_reached");
    members::set_status(&mut c, &ctx, &m2, "suspended").unwrap();
    assert_eq!(code(&mut c, &m2, &other), "member_not_active");
    c.execute(
        "UPDATE book SET category = 'reference' WHERE isbn = $1",
        &[&other],
    )
    .unwrap();
    members::set_status(&mut c, &ctx, &m2, "active").unwrap();
    assert_eq!(code(&mut c, &m2, &other), "not_loanable");
    // A member places holds for themselves only.
    let as_m2 = ctx_of(&mut c, &m2);
    let err = holds::place(&mut c, &as_m2, &m1, &out).unwrap_err();
    assert_eq!(err.code(), "permission_denied");
    assert_eq!(audited(&mut c, "hold.place", "refused"), 6);
    assert_eq!(audited(&mut c, "hold.place", "denied"), 1);
    assert_eq!(audited(&mut c, "hold.place", "ok"), 1);
    for status in ["waiting", "ready"] {
        assert_eq!(
            holds::list(
                &mut c,
                &ctx,
                &HoldFilter {
                    status: Some(status.into()),
                    ..Default::default()
                },
                100,
                None
            )
            .unwrap()
            .items
            .len(),
            usize::from(status == "waiting")
        );
    }
}

#[test]
fn a_blocked_member_is_refused_a_hold() {
    let tdb = TestDb::new();
    let mut c = tdb.client();
    let ctx = admin(&mut c);
    let book = add_book(&mut c, 1, 1);
    let late = add_book(&mut c, 2, 1);
    let m0 = member_since(&mut c, "m0@x.org", days_ago(90));
    let m1 = add_member(&mut c, "m1@x.org", "member");
    // 60 days overdue: more than the 30 the rule allows.
    circulation::borrow(&mut c, &at(&ctx, days_ago(75)), &m0, &late).unwrap();
    circulation::borrow(&mut c, &ctx, &m1, &book).unwrap();
    let err = holds::place(&mut c, &ctx, &m0, &book).unwrap_err();
    assert_eq!(err.code(), "member_blocked");
}

#[test]
fn a_renewal_is_refused_while_holds_wait_for_the_title() {
    let tdb = TestDb::new();
    let mut c = tdb.client();
    let ctx = admin(&mut c);
    let book = add_book(&mut c, 1, 1);
    let [m0, m1] = ["m0@x.org", "m1@x.org"].map(|e| add_member(&mut c, e, "member"));
    let loan = circulation::borrow(&mut c, &ctx, &m0, &book).unwrap();
    circulation::renew(&mut c, &ctx, &LoanRef::Id(loan.id)).unwrap();
    let placed = holds::place(&mut c, &ctx, &m1, &book).unwrap();
    let err = circulation::renew(&mut c, &ctx, &LoanRef::Id(loan.id)).unwrap_err();
    assert_eq!(err.code(), "renewal_blocked_by_hold");
    assert_eq!(err.exit_code(), 4);
    let as_m1 = ctx_of(&mut c, &m1);
    holds::cancel(&mut c, &as_m1, placed.id).unwrap();
    circulation::renew(&mut c, &ctx, &LoanRef::Id(loan.id)).unwrap();
}

#[test]
fn cancelling_a_ready_hold_passes_its_copy_to_the_next_in_line() {
    let tdb = TestDb::new();
    let mut c = tdb.client();
    let ctx = admin(&mut c);
    let book = add_book(&mut c, 1, 1);
    let [m0, m1, m2] =
        ["m0@x.org", "m1@x.org", "m2@x.org"].map(|e| add_member(&mut c, e, "member"));
    let loan = circulation::borrow(&mut c, &ctx, &m0, &book).unwrap();
    let first = holds::place(&mut c, &ctx, &m1, &book).unwrap();
    let second = holds::place(&mut c, &ctx, &m2, &book).unwrap();
    circulation::return_loan(&mut c, &ctx, &LoanRef::Id(loan.id)).unwrap();
    // Only the member or a librarian cancels it.
    let as_m2 = ctx_of(&mut c, &m2);
    let err = holds::cancel(&mut c, &as_m2, first.id).unwrap_err();
    assert_eq!(err.code(), "permission_denied");
    let as_m1 = ctx_of(&mut c, &m1);
    let cancelled = holds::cancel(&mut c, &as_m1, first.id).unwrap();
    assert_eq!(cancelled.status, "cancelled");
    let second = hold(&mut c, second.id);
    assert_eq!(second.status, "ready");
    assert_eq!(second.barcode, loan.barcode);
    let err = holds::cancel(&mut c, &ctx, first.id).unwrap_err();
    assert_eq!(err.code(), "hold_not_live");
    holds::cancel(&mut c, &ctx, second.id).unwrap();
    assert_eq!(
        item_status(&mut c, loan.barcode.as_deref().unwrap()),
        "available"
    );
    assert_eq!(audited(&mut c, "hold.cancel", "ok"), 2);
    assert_invariants(&mut c);
}

#[test]
fn a_suspended_member_is_skipped_at_trapping_and_served_when_reinstated_and_closing_cancels() {
    let tdb = TestDb::new();
    let mut c = tdb.client();
    let ctx = admin(&mut c);
    let book = add_book(&mut c, 1, 2);
    let [m0, m1, m2, m3] =
        ["m0@x.org", "m1@x.org", "m2@x.org", "m3@x.org"].map(|e| add_member(&mut c, e, "member"));
    let a = circulation::borrow(&mut c, &ctx, &m0, &book).unwrap();
    let b = circulation::borrow(&mut c, &ctx, &m3, &book).unwrap();
    let h1 = holds::place(&mut c, &ctx, &m1, &book).unwrap();
    let h2 = holds::place(&mut c, &ctx, &m2, &book).unwrap();
    members::set_status(&mut c, &ctx, &m1, "suspended").unwrap();
    let returned = circulation::return_loan(&mut c, &ctx, &LoanRef::Id(a.id)).unwrap();
    assert_eq!(returned.hold.map(|h| h.id), Some(h2.id), "m1 is skipped");
    assert_eq!(hold(&mut c, h1.id).status, "waiting");
    // With only a suspended member waiting, the next copy goes to the shelf.
    circulation::return_loan(&mut c, &ctx, &LoanRef::Id(b.id)).unwrap();
    assert_eq!(
        item_status(&mut c, b.barcode.as_deref().unwrap()),
        "available"
    );
    assert_invariants(&mut c);
    // Reinstated, m1 is served the copy on the shelf at once.
    members::set_status(&mut c, &ctx, &m1, "active").unwrap();
    let h1 = hold(&mut c, h1.id);
    assert_eq!(
        (h1.status.as_str(), h1.barcode),
        ("ready", b.barcode.clone())
    );
    assert_invariants(&mut c);
    // Closing m1 cancels the ready hold; its copy goes to the shelf (nobody else waits).
    members::set_status(&mut c, &ctx, &m1, "closed").unwrap();
    assert_eq!(hold(&mut c, h1.id).status, "cancelled");
    assert_eq!(
        item_status(&mut c, b.barcode.as_deref().unwrap()),
        "available"
    );
    assert_invariants(&mut c);
}

#[test]
fn a_new_copy_of_a_title_members_wait_for_goes_to_the_first_of_them() {
    let tdb = TestDb::new();
    let mut c = tdb.client();
    let ctx = admin(&mut c);
    let book = add_book(&mut c, 1, 1);
    let [m0, m1] = ["m0@x.org", "m1@x.org"].map(|e| add_member(&mut c, e, "member"));
    circulation::borrow(&mut c, &ctx, &m0, &book).unwrap();
    let h = holds::place(&mut c, &ctx, &m1, &book).unwrap();
    let item = items::add(
        &mut c,
        &ctx,
        &NewItem {
            book: book.clone(),
            ..NewItem::default()
        },
    )
    .unwrap();
    assert_eq!(item.status, "on_hold_shelf");
    assert_eq!(hold(&mut c, h.id).item_id, Some(item.id));
    assert_invariants(&mut c);
    // Imported copies of two titles members wait for: each goes to its title's first hold.
    let other = add_book(&mut c, 2, 1);
    circulation::borrow(&mut c, &ctx, &m0, &other).unwrap();
    let h2 = holds::place(&mut c, &ctx, &m1, &other).unwrap();
    let m2 = add_member(&mut c, "m2@x.org", "member");
    let h3 = holds::place(&mut c, &ctx, &m2, &book).unwrap();
    let csv = format!("isbn,barcode\n{book},IMPORT-1\n{other},IMPORT-2\n");
    items::import(&mut c, &ctx, csv.as_bytes()).unwrap();
    assert_eq!(hold(&mut c, h3.id).barcode.as_deref(), Some("IMPORT-1"));
    assert_eq!(hold(&mut c, h2.id).barcode.as_deref(), Some("IMPORT-2"));
    assert_invariants(&mut c);
}

#[test]
fn scanning_another_copy_fulfils_the_hold_and_passes_the_held_copy_on() {
    let tdb = TestDb::new();
    let mut c = tdb.client();
    let ctx = admin(&mut c);
    let book = add_book(&mut c, 1, 2);
    let [m0, m1, m3] =
        ["m0@x.org", "m1@x.org", "m3@x.org"].map(|e| add_member(&mut c, e, "member"));
    let a = circulation::borrow(&mut c, &ctx, &m0, &book).unwrap();
    let b = circulation::borrow(&mut c, &ctx, &m3, &book).unwrap();
    let h = holds::place(&mut c, &ctx, &m1, &book).unwrap();
    circulation::return_loan(&mut c, &ctx, &LoanRef::Id(a.id)).unwrap();
    circulation::return_loan(&mut c, &ctx, &LoanRef::Id(b.id)).unwrap();
    let other = b.barcode.clone().unwrap();
    assert_eq!(item_status(&mut c, &other), "available");
    let loan = circulation::borrow_copy(&mut c, &ctx, &m1, Copy::Item(&other)).unwrap();
    assert_eq!(loan.barcode.as_deref(), Some(other.as_str()));
    let h = hold(&mut c, h.id);
    assert_eq!((h.status.as_str(), h.item_id), ("fulfilled", loan.item_id));
    assert_eq!(
        item_status(&mut c, a.barcode.as_deref().unwrap()),
        "available"
    );
    assert_invariants(&mut c);
}

#[test]
fn expiry_catches_up_missed_nights_in_date_order_and_a_rerun_changes_nothing() {
    let tdb = TestDb::new();
    let mut c = tdb.client();
    let ctx = admin(&mut c);
    let book = add_book(&mut c, 1, 1);
    let joined = days_ago(60);
    let [m0, m1, m2, m3] =
        ["m0@x.org", "m1@x.org", "m2@x.org", "m3@x.org"].map(|e| member_since(&mut c, e, joined));
    libcore::policy::set_rule(
        &mut c,
        &ctx,
        &libcore::policy::RuleChange {
            category: "public".into(),
            hold_pickup_days: Some(2),
            ..Default::default()
        },
    )
    .unwrap();
    let loan = circulation::borrow(&mut c, &at(&ctx, days_ago(30)), &m0, &book).unwrap();
    let h1 = holds::place(&mut c, &at(&ctx, days_ago(29)), &m1, &book).unwrap();
    let h2 = holds::place(&mut c, &at(&ctx, days_ago(28)), &m2, &book).unwrap();
    let h3 = holds::place(&mut c, &at(&ctx, days_ago(27)), &m3, &book).unwrap();
    circulation::return_loan(&mut c, &at(&ctx, days_ago(20)), &LoanRef::Id(loan.id)).unwrap();
    let h1_ready = hold(&mut c, h1.id);
    assert_eq!(h1_ready.status, "ready");
    let cal = libcore::calendar::Calendar::load(&mut c).unwrap();
    let as_of = today(&mut c);
    let preview = holds::expire(&mut c, &system(), as_of, true).unwrap();
    assert_eq!(
        (preview.expired, preview.made_ready, preview.dry_run),
        (3, 2, true)
    );
    assert_eq!(
        hold(&mut c, h1.id).status,
        "ready",
        "a dry run keeps nothing"
    );
    assert_eq!(audited(&mut c, "hold.expire", "ok"), 0);
    let done = holds::expire(&mut c, &system(), as_of, false).unwrap();
    // h1 expires after its last day, h2 becomes ready then and expires two days later, h3
    // likewise, and the copy ends on the shelf: every night replayed in order.
    assert_eq!((done.expired, done.made_ready), (3, 2));
    let [h1, h2, h3] = [h1.id, h2.id, h3.id].map(|id| hold(&mut c, id));
    for h in [&h1, &h2, &h3] {
        assert_eq!(h.status, "expired");
        let pickup_by = h.pickup_by.unwrap();
        assert_eq!(
            cal.local_date(h.expired_at.unwrap()),
            pickup_by + Days::new(1)
        );
    }
    assert_eq!(h2.ready_at, h1.expired_at);
    assert_eq!(h3.ready_at, h2.expired_at);
    assert!(h3.pickup_by.unwrap() < as_of);
    assert_eq!(
        item_status(&mut c, loan.barcode.as_deref().unwrap()),
        "available"
    );
    assert_invariants(&mut c);
    let again = holds::expire(&mut c, &system(), as_of, false).unwrap();
    assert_eq!((again.expired, again.made_ready), (0, 0));
    assert_eq!(audited(&mut c, "hold.expire", "ok"), 3);
}

#[test]
fn a_hold_that_is_not_yet_due_stays_on_the_shelf_and_closed_days_extend_its_pickup() {
    let tdb = TestDb::new();
    let mut c = tdb.client();
    let ctx = admin(&mut c);
    let book = add_book(&mut c, 1, 1);
    let [m0, m1] = ["m0@x.org", "m1@x.org"].map(|e| add_member(&mut c, e, "member"));
    let tomorrow = today(&mut c) + Days::new(1);
    libcore::policy::add_closed_day(&mut c, &ctx, tomorrow, Some("holiday")).unwrap();
    let loan = circulation::borrow(&mut c, &ctx, &m0, &book).unwrap();
    let h = holds::place(&mut c, &ctx, &m1, &book).unwrap();
    circulation::return_loan(&mut c, &ctx, &LoanRef::Id(loan.id)).unwrap();
    let h = hold(&mut c, h.id);
    // Seven open days after today, skipping tomorrow.
    assert_eq!(h.pickup_by, Some(today(&mut c) + Days::new(8)));
    let day = today(&mut c);
    let done = holds::expire(&mut c, &system(), day, false).unwrap();
    assert_eq!(done.expired, 0);
    assert_eq!(hold(&mut c, h.id).status, "ready");
    let shelf = holds::shelf(&mut c, &ctx, day).unwrap();
    assert_eq!(shelf.len(), 1);
    assert_eq!(shelf[0].action, "shelve");
    assert_eq!(Some(&shelf[0].barcode), loan.barcode.as_ref());
}

#[test]
fn the_hold_invariants_of_db_check_catch_a_broken_shelf() {
    let tdb = TestDb::new();
    let mut c = tdb.client();
    let ctx = admin(&mut c);
    let book = add_book(&mut c, 1, 2);
    let [m0, m1] = ["m0@x.org", "m1@x.org"].map(|e| add_member(&mut c, e, "member"));
    let loan = circulation::borrow(&mut c, &ctx, &m0, &book).unwrap();
    circulation::borrow(&mut c, &ctx, &m1, &book).unwrap();
    let m2 = add_member(&mut c, "m2@x.org", "member");
    holds::place(&mut c, &ctx, &m2, &book).unwrap();
    circulation::return_loan(&mut c, &ctx, &LoanRef::Id(loan.id)).unwrap();
    assert_invariants(&mut c);
    let failing = |c: &mut Client| -> Vec<String> {
        libcore::db::check(c)
            .unwrap()
            .into_iter()
            .filter(|r| r.violations > 0)
            .map(|r| r.invariant)
            .collect()
    };
    let held = "UPDATE item SET status = 'on_hold_shelf' WHERE id = (SELECT item_id FROM hold);
                UPDATE book SET available_copies = available_copies - 1;";
    let shelved = "UPDATE item SET status = 'available' WHERE status = 'on_hold_shelf';
                   UPDATE book SET available_copies = available_copies + 1;";
    // A ready hold whose item is not on the hold shelf.
    c.batch_execute(shelved).unwrap();
    let broken = failing(&mut c);
    assert!(
        broken
            .iter()
            .any(|i| i.starts_with("an item is on_hold_shelf exactly when")),
        "{broken:?}"
    );
    c.batch_execute(held).unwrap();
    assert_invariants(&mut c);
    // A waiting hold beside a copy on the shelf.
    c.batch_execute(
        "UPDATE hold SET status = 'waiting', item_id = NULL, ready_at = NULL, pickup_by = NULL",
    )
    .unwrap();
    c.batch_execute(shelved).unwrap();
    assert_eq!(
        failing(&mut c),
        ["no title has a waiting hold of a member in good standing while a copy is on the shelf"]
    );
    // The same hold of a suspended member is skipped, so it may wait there.
    c.execute(
        "UPDATE member SET status = 'suspended' WHERE email = 'm2@x.org'",
        &[],
    )
    .unwrap();
    assert_invariants(&mut c);
}

// ---- races (issue 24) ----

#[test]
fn two_copies_returned_at_once_with_one_waiting_hold_trap_exactly_one() {
    let tdb = TestDb::new();
    let mut c = tdb.client();
    let ctx = admin(&mut c);
    let book = add_book(&mut c, 1, 2);
    let [m0, m1, m2] =
        ["m0@x.org", "m1@x.org", "m2@x.org"].map(|e| add_member(&mut c, e, "member"));
    let a = circulation::borrow(&mut c, &ctx, &m0, &book).unwrap();
    let b = circulation::borrow(&mut c, &ctx, &m1, &book).unwrap();
    let h = holds::place(&mut c, &ctx, &m2, &book).unwrap();
    let jobs = [a.id, b.id]
        .into_iter()
        .map(|id| {
            let ctx = ctx.clone();
            Box::new(move |client: &mut Client| {
                circulation::return_loan(client, &ctx, &LoanRef::Id(id))
            }) as Job<_>
        })
        .collect();
    let results: Vec<circulation::Loan> =
        race(&tdb, jobs).into_iter().map(Result::unwrap).collect();
    let trapped: Vec<_> = results.iter().filter(|l| l.hold.is_some()).collect();
    assert_eq!(trapped.len(), 1);
    let h = hold(&mut c, h.id);
    assert_eq!(h.status, "ready");
    assert_eq!(h.item_id, trapped[0].item_id);
    let shelved = results.iter().find(|l| l.hold.is_none()).unwrap();
    assert_eq!(
        item_status(&mut c, shelved.barcode.as_deref().unwrap()),
        "available"
    );
    assert_invariants(&mut c);
}

#[test]
fn a_copy_returned_while_two_members_place_holds_goes_to_the_earlier_hold() {
    for _ in 0..3 {
        let tdb = TestDb::new();
        let mut c = tdb.client();
        let ctx = admin(&mut c);
        let book = add_book(&mut c, 1, 1);
        let [m0, m1, m2] =
            ["m0@x.org", "m1@x.org", "m2@x.org"].map(|e| add_member(&mut c, e, "member"));
        let loan = circulation::borrow(&mut c, &ctx, &m0, &book).unwrap();
        enum Done {
            Returned(libcore::Result<circulation::Loan>),
            Placed(libcore::Result<Hold>),
        }
        let mut jobs: Vec<Job<Done>> = vec![{
            let ctx = ctx.clone();
            Box::new(move |client: &mut Client| {
                Done::Returned(circulation::return_loan(
                    client,
                    &ctx,
                    &LoanRef::Id(loan.id),
                ))
            })
        }];
        for m in [m1, m2] {
            let (ctx, book) = (ctx.clone(), book.clone());
            jobs.push(Box::new(move |client: &mut Client| {
                Done::Placed(holds::place(client, &ctx, &m, &book))
            }));
        }
        let mut refused = 0;
        for done in race(&tdb, jobs) {
            match done {
                Done::Returned(r) => {
                    r.unwrap();
                }
                Done::Placed(Ok(_)) => {}
                Done::Placed(Err(e)) => {
                    assert_eq!(e.code(), "copy_available");
                    refused += 1;
                }
            }
        }
        let all = holds::list(&mut c, &ctx, &HoldFilter::default(), 100, None)
            .unwrap()
            .items;
        assert_eq!(all.len() + refused, 2);
        let mut placed: Vec<&Hold> = all.iter().collect();
        placed.sort_by_key(|h| (h.placed_at, h.id));
        // The copy is held for the earliest hold placed, if any was placed before it came back;
        // the rest wait in order with positions 1, 2, … and no gaps.
        let ready: Vec<&&Hold> = placed.iter().filter(|h| h.status == "ready").collect();
        assert!(ready.len() <= 1);
        if let Some(r) = ready.first() {
            assert_eq!(r.id, placed[0].id);
        }
        let positions: Vec<i64> = placed.iter().filter_map(|h| h.queue_position).collect();
        assert_eq!(positions, (1..=positions.len() as i64).collect::<Vec<_>>());
        assert_invariants(&mut c);
    }
}

#[test]
fn a_member_scanning_the_copy_as_it_is_trapped_either_borrows_it_first_or_is_refused() {
    for _ in 0..4 {
        let tdb = TestDb::new();
        let mut c = tdb.client();
        let ctx = admin(&mut c);
        let book = add_book(&mut c, 1, 1);
        let [m0, m1, m2] =
            ["m0@x.org", "m1@x.org", "m2@x.org"].map(|e| add_member(&mut c, e, "member"));
        let loan = circulation::borrow(&mut c, &ctx, &m0, &book).unwrap();
        let h = holds::place(&mut c, &ctx, &m1, &book).unwrap();
        // m1 is suspended, so the returned copy goes to the shelf beside m1's waiting hold.
        members::set_status(&mut c, &ctx, &m1, "suspended").unwrap();
        circulation::return_loan(&mut c, &ctx, &LoanRef::Id(loan.id)).unwrap();
        let barcode = loan.barcode.clone().unwrap();
        enum Done {
            Reinstated(libcore::Result<members::Member>),
            Scanned(libcore::Result<circulation::Loan>),
        }
        let jobs: Vec<Job<Done>> = vec![
            {
                let (ctx, m1) = (ctx.clone(), m1.clone());
                Box::new(move |client: &mut Client| {
                    Done::Reinstated(members::set_status(client, &ctx, &m1, "active"))
                })
            },
            {
                let (ctx, m2, barcode) = (ctx.clone(), m2.clone(), barcode.clone());
                Box::new(move |client: &mut Client| {
                    Done::Scanned(circulation::borrow_copy(
                        client,
                        &ctx,
                        &m2,
                        Copy::Item(&barcode),
                    ))
                })
            },
        ];
        let mut scanned = None;
        for done in race(&tdb, jobs) {
            match done {
                Done::Reinstated(r) => {
                    r.unwrap();
                }
                Done::Scanned(r) => scanned = Some(r),
            }
        }
        let h = hold(&mut c, h.id);
        match scanned.unwrap() {
            Ok(borrowed) => {
                assert_eq!(borrowed.barcode.as_deref(), Some(barcode.as_str()));
                assert_eq!(
                    h.status, "waiting",
                    "borrowed before the trap: the hold waits"
                );
            }
            Err(e) => {
                assert_eq!(e.code(), "item_on_hold");
                assert_eq!(h.status, "ready");
                assert_eq!(h.barcode.as_deref(), Some(barcode.as_str()));
            }
        }
        assert_invariants(&mut c);
    }
}

#[test]
fn twenty_members_place_holds_at_once_and_get_twenty_distinct_positions_in_order() {
    let tdb = TestDb::new();
    let mut c = tdb.client();
    let ctx = admin(&mut c);
    let book = add_book(&mut c, 1, 1);
    let m0 = add_member(&mut c, "m0@x.org", "member");
    circulation::borrow(&mut c, &ctx, &m0, &book).unwrap();
    let jobs = (0..20)
        .map(|i| {
            let member = add_member(&mut c, &format!("h{i}@x.org"), "member");
            let ctx = ctx_of(&mut c, &member);
            let book = book.clone();
            Box::new(move |client: &mut Client| holds::place(client, &ctx, &member, &book))
                as Job<_>
        })
        .collect();
    let placed: Vec<Hold> = race(&tdb, jobs).into_iter().map(Result::unwrap).collect();
    let mut positions: Vec<i64> = placed.iter().map(|h| h.queue_position.unwrap()).collect();
    positions.sort_unstable();
    assert_eq!(positions, (1..=20).collect::<Vec<_>>());
    let mut listed = holds::list(
        &mut c,
        &ctx,
        &HoldFilter {
            book: Some(book.clone()),
            ..Default::default()
        },
        100,
        None,
    )
    .unwrap()
    .items;
    listed.sort_by_key(|h| h.queue_position);
    let order: Vec<(DateTime<Utc>, Uuid)> = listed.iter().map(|h| (h.placed_at, h.id)).collect();
    let mut sorted = order.clone();
    sorted.sort();
    assert_eq!(order, sorted, "positions follow (placed_at, id)");
    assert_eq!(
        listed
            .iter()
            .map(|h| h.queue_position.unwrap())
            .collect::<Vec<_>>(),
        (1..=20).collect::<Vec<_>>()
    );
    assert_invariants(&mut c);
}

#[test]
fn open_days_after_agrees_with_its_sql_twin_across_closed_days() {
    let tdb = TestDb::new();
    let mut c = tdb.client();
    let ctx = admin(&mut c);
    let start = NaiveDate::from_ymd_opt(2030, 12, 20).unwrap();
    for offset in [1, 2, 5, 6, 12] {
        libcore::policy::add_closed_day(&mut c, &ctx, start + Days::new(offset), None).unwrap();
    }
    let cal = libcore::calendar::Calendar::load(&mut c).unwrap();
    for from in 0..10 {
        for days in [1, 3, 7, 14] {
            let day = start + Days::new(from);
            let sql: NaiveDate = c
                .query_one("SELECT open_days_after($1, $2)", &[&day, &days])
                .unwrap()
                .get(0);
            assert_eq!(cal.open_days_after(day, days), sql, "{day} + {days}");
        }
    }
}

#[test]
fn a_held_copy_cannot_be_borrowed_backdated_to_before_it_reached_the_hold_shelf() {
    let tdb = TestDb::new();
    let mut c = tdb.client();
    let ctx = admin(&mut c);
    let book = add_book(&mut c, 1, 2);
    let [m0, m1, m2] =
        ["m0@x.org", "m1@x.org", "m2@x.org"].map(|e| member_since(&mut c, e, days_ago(60)));
    circulation::borrow(&mut c, &at(&ctx, days_ago(30)), &m0, &book).unwrap();
    let b = circulation::borrow(&mut c, &at(&ctx, days_ago(30)), &m2, &book).unwrap();
    holds::place(&mut c, &at(&ctx, days_ago(20)), &m1, &book).unwrap();
    circulation::return_loan(&mut c, &at(&ctx, days_ago(10)), &LoanRef::Id(b.id)).unwrap();
    // Backdated to before the copy came back it would overlap m2's loan of it.
    let err = circulation::borrow(&mut c, &at(&ctx, days_ago(15)), &m1, &book).unwrap_err();
    assert_eq!(err.code(), "invalid_input");
    let loan = circulation::borrow(&mut c, &at(&ctx, days_ago(8)), &m1, &book).unwrap();
    assert_eq!(loan.item_id, b.item_id);
    assert_invariants(&mut c);
}

#[test]
fn renewing_an_expired_membership_serves_the_copy_the_member_waits_for() {
    let tdb = TestDb::new();
    let mut c = tdb.client();
    let ctx = admin(&mut c);
    let book = add_book(&mut c, 1, 1);
    let [m0, m1] = ["m0@x.org", "m1@x.org"].map(|e| add_member(&mut c, e, "member"));
    let loan = circulation::borrow(&mut c, &ctx, &m0, &book).unwrap();
    let h = holds::place(&mut c, &ctx, &m1, &book).unwrap();
    c.execute(
        "UPDATE member SET expires_at = now() - interval '1 day' WHERE email = $1",
        &[&m1],
    )
    .unwrap();
    circulation::return_loan(&mut c, &ctx, &LoanRef::Id(loan.id)).unwrap();
    assert_eq!(
        hold(&mut c, h.id).status,
        "waiting",
        "an expired member is skipped"
    );
    let renewed = members::renew(&mut c, &ctx, &m1, None).unwrap();
    let expires = renewed.expires_at.unwrap();
    assert!(
        expires > Utc::now() + Duration::days(360) && expires < Utc::now() + Duration::days(370)
    );
    assert_eq!(hold(&mut c, h.id).status, "ready");
    // From the later of now and the current expiry; --until must extend it.
    let again = members::renew(&mut c, &ctx, &m1, None).unwrap();
    assert!(again.expires_at.unwrap() > expires + Duration::days(360));
    let day = today(&mut c);
    let err = members::renew(&mut c, &ctx, &m1, Some(day)).unwrap_err();
    assert_eq!(err.code(), "invalid_input");
    members::set_status(&mut c, &ctx, &m0, "closed").unwrap();
    assert_eq!(
        members::renew(&mut c, &ctx, &m0, None).unwrap_err().code(),
        "member_not_active"
    );
    let as_m1 = ctx_of(&mut c, &m1);
    assert_eq!(
        members::renew(&mut c, &as_m1, &m1, None)
            .unwrap_err()
            .code(),
        "permission_denied"
    );
    assert_eq!(audited(&mut c, "member.renew", "ok"), 2);
    assert_invariants(&mut c);
}

#[test]
fn the_morning_list_clears_holds_past_their_pickup_day_and_says_where_each_copy_goes() {
    let tdb = TestDb::new();
    let mut c = tdb.client();
    let ctx = admin(&mut c);
    let [one, two] = [add_book(&mut c, 1, 1), add_book(&mut c, 2, 1)];
    let [m0, m1, m2, m3] = ["m0@x.org", "m1@x.org", "m2@x.org", "m3@x.org"]
        .map(|e| member_since(&mut c, e, days_ago(60)));
    libcore::policy::set_rule(
        &mut c,
        &ctx,
        &libcore::policy::RuleChange {
            category: "public".into(),
            hold_pickup_days: Some(1),
            ..Default::default()
        },
    )
    .unwrap();
    // Title one: m1's copy waits past its last day, and nobody is next. Title two: m2's does,
    // and m3 is next in line.
    let a = circulation::borrow(&mut c, &at(&ctx, days_ago(10)), &m0, &one).unwrap();
    let b = circulation::borrow(&mut c, &at(&ctx, days_ago(10)), &m0, &two).unwrap();
    holds::place(&mut c, &at(&ctx, days_ago(9)), &m1, &one).unwrap();
    holds::place(&mut c, &at(&ctx, days_ago(9)), &m2, &two).unwrap();
    holds::place(&mut c, &at(&ctx, days_ago(8)), &m3, &two).unwrap();
    for loan in [&a, &b] {
        circulation::return_loan(&mut c, &at(&ctx, days_ago(3)), &LoanRef::Id(loan.id)).unwrap();
    }
    let day = today(&mut c);
    let lines = |c: &mut Client| -> Vec<(&'static str, String, Option<String>)> {
        let mut l: Vec<_> = holds::shelf(c, &ctx, day)
            .unwrap()
            .into_iter()
            .map(|l| (l.action, l.member_email, l.next))
            .collect();
        l.sort();
        l
    };
    // Before the nightly: both still ready, past their last day.
    assert_eq!(
        lines(&mut c),
        [
            ("clear", m1.clone(), Some("expire".to_string())),
            ("clear", m2.clone(), Some("expire".to_string())),
        ]
    );
    let done = holds::expire(&mut c, &system(), day, false).unwrap();
    assert_eq!((done.expired, done.made_ready), (2, 1));
    // After it (the holds expired at the start of yesterday): title one's copy goes back to
    // the stacks; title two's stays on the hold shelf, now shelved for m3.
    assert_eq!(
        lines(&mut c),
        [
            ("clear", m1.clone(), Some("stacks".to_string())),
            ("clear", m2.clone(), Some("hold shelf".to_string())),
            ("shelve", m3.clone(), None),
        ]
    );
    assert_invariants(&mut c);
}

#[test]
fn a_ready_hold_naming_another_titles_copy_is_caught_by_db_check() {
    let tdb = TestDb::new();
    let mut c = tdb.client();
    let ctx = admin(&mut c);
    let [one, two] = [add_book(&mut c, 1, 1), add_book(&mut c, 2, 1)];
    let [m0, m1] = ["m0@x.org", "m1@x.org"].map(|e| add_member(&mut c, e, "member"));
    let loan = circulation::borrow(&mut c, &ctx, &m0, &one).unwrap();
    let h = holds::place(&mut c, &ctx, &m1, &one).unwrap();
    circulation::return_loan(&mut c, &ctx, &LoanRef::Id(loan.id)).unwrap();
    assert_invariants(&mut c);
    // The key that forbids it is dropped first: db check is the second line of defence.
    c.batch_execute("ALTER TABLE hold DROP CONSTRAINT hold_item_of_book")
        .unwrap();
    let other = items::list(
        &mut c,
        &items::ItemFilter {
            book: Some(two.clone()),
            ..Default::default()
        },
        10,
        None,
    )
    .unwrap()
    .items
    .remove(0);
    c.execute(
        "UPDATE item SET status = 'available' WHERE id = (SELECT item_id FROM hold WHERE id = $1)",
        &[&h.id],
    )
    .unwrap();
    c.execute(
        "UPDATE item SET status = 'on_hold_shelf' WHERE id = $1",
        &[&other.id],
    )
    .unwrap();
    c.execute(
        "UPDATE hold SET item_id = $2 WHERE id = $1",
        &[&h.id, &other.id],
    )
    .unwrap();
    c.batch_execute(
        "UPDATE book b SET available_copies = (SELECT count(*) FROM item i
                                               WHERE i.book_id = b.id AND i.status = 'available')",
    )
    .unwrap();
    let failing: Vec<String> = libcore::db::check(&mut c)
        .unwrap()
        .into_iter()
        .filter(|r| r.violations > 0)
        .map(|r| r.invariant)
        .collect();
    assert!(
        failing.contains(&"a ready hold's item belongs to its title".to_string()),
        "{failing:?}"
    );
}

#[test]
fn report_holds_gives_the_mean_time_from_placing_to_ready() {
    let tdb = TestDb::new();
    let mut c = tdb.client();
    let ctx = admin(&mut c);
    let book = add_book(&mut c, 1, 1);
    let [m0, m1] = ["m0@x.org", "m1@x.org"].map(|e| member_since(&mut c, e, days_ago(60)));
    let placed = Utc::now() - Duration::hours(50);
    let ready = placed + Duration::hours(30);
    let loan = circulation::borrow(&mut c, &at(&ctx, days_ago(5)), &m0, &book).unwrap();
    holds::place(&mut c, &at(&ctx, placed), &m1, &book).unwrap();
    circulation::return_loan(&mut c, &at(&ctx, ready), &LoanRef::Id(loan.id)).unwrap();
    let mut rows = Vec::new();
    let waits = libcore::reports::holds(
        &mut c,
        &ctx,
        &libcore::reports::ReportOptions::default(),
        &mut |r| {
            rows.push(r);
            Ok(())
        },
    )
    .unwrap();
    assert!(rows.is_empty(), "nobody waits any more: {rows:?}");
    assert_eq!(waits.holds_ready, 1);
    let hours = waits.mean_hours_to_ready.unwrap();
    assert!((hours - 30.0).abs() < 1e-6, "{hours}");
}
