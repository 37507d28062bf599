//! Approvals: the four-eyes rule, thresholds, side effects in one transaction, races.

use std::sync::{Arc, Barrier};

use chrono::{Duration, Utc};
use libcore::actor::{Actor, Ctx};
use libcore::approvals::{self, NewRequest};
use libcore::circulation::{self, LoanRef};
use libcore::members::NewMember;
use postgres::Client;

use crate::support::*;

fn admin_at(c: &mut Client, days_ago: i64) -> Ctx {
    Ctx {
        at: Some(Utc::now() - Duration::days(days_ago)),
        ..admin(c)
    }
}

/// A member owing `loans` × 2000 cents (capped fines of loans returned 46 days late).
fn debtor(c: &mut Client, email: &str, loans: u32) -> String {
    let old = admin_at(c, 90);
    libcore::members::add_member(
        c,
        &old,
        &NewMember {
            name: "Debtor".into(),
            email: email.into(),
            ..Default::default()
        },
    )
    .unwrap();
    let ctx = admin(c);
    let at = admin_at(c, 60);
    let out: Vec<_> = (0..loans)
        .map(|n| {
            let b = add_book(c, 900 + n, 1);
            circulation::borrow(c, &at, email, &b).unwrap()
        })
        .collect();
    for loan in out {
        circulation::return_loan(c, &ctx, &LoanRef::Id(loan.id)).unwrap();
    }
    email.to_string()
}

fn waiver(c: &mut Client, filer: &Ctx, member: &str, cents: i64) -> approvals::Request {
    approvals::file(
        c,
        filer,
        &NewRequest::Waiver {
            member: member.into(),
            amount_cents: cents,
            reason: "hardship".into(),
        },
    )
    .unwrap()
}

fn status_of(c: &mut Client, id: uuid::Uuid) -> String {
    c.query_one("SELECT status FROM request WHERE id = $1", &[&id])
        .unwrap()
        .get(0)
}

#[test]
fn membership_application_to_active_member() {
    let tdb = TestDb::new();
    let mut c = tdb.client();
    let anonymous = Ctx::new(Actor::anonymous());
    let applicant = NewMember {
        name: "New Reader".into(),
        email: "new@example.org".into(),
        category: Some("student".into()),
        ..Default::default()
    };
    let request =
        approvals::file(&mut c, &anonymous, &NewRequest::Membership { applicant }).unwrap();
    assert_eq!(
        (
            request.kind.as_str(),
            request.status.as_str(),
            request.filed_by.as_str()
        ),
        ("membership", "pending", "anonymous")
    );
    let b = add_book(&mut c, 1, 1);
    let lib = add_member(&mut c, "desk@example.org", "librarian");
    let desk = ctx_of(&mut c, &lib);
    let err = circulation::borrow(&mut c, &desk, "new@example.org", &b).unwrap_err();
    assert_eq!(err.code(), "member_not_active");
    let err = libcore::actor::resolve(&mut c, Some("new@example.org"), None).unwrap_err();
    assert_eq!(err.exit_code(), 5, "a pending member cannot act");
    let approved = approvals::approve(&mut c, &desk, request.id, Some("ID checked")).unwrap();
    assert_eq!(approved.status, "approved");
    assert_eq!(approved.decided_by.as_deref(), Some("desk@example.org"));
    let member = libcore::members::find_member(&mut c, "new@example.org").unwrap();
    assert_eq!(member.status, "active");
    let year = member.expires_at.unwrap() - approved.decided_at.unwrap();
    assert!((364..=366).contains(&year.num_days()));
    circulation::borrow(&mut c, &desk, "new@example.org", &b).unwrap();
    let again = approvals::approve(&mut c, &desk, request.id, None).unwrap_err();
    assert_eq!(
        (again.code(), again.exit_code()),
        ("request_not_pending", 4)
    );
}

#[test]
fn only_other_staff_decide() {
    let tdb = TestDb::new();
    let mut c = tdb.client();
    let admin_ctx = admin(&mut c);
    let m = debtor(&mut c, "owes@example.org", 1);
    let lib = add_member(&mut c, "desk@example.org", "librarian");
    let desk = ctx_of(&mut c, &lib);
    let request = waiver(&mut c, &desk, &m, 500);
    let err = approvals::approve(&mut c, &desk, request.id, None).unwrap_err();
    assert_eq!((err.code(), err.exit_code()), ("self_approval", 5));
    let member = ctx_of(&mut c, &m);
    let err = approvals::approve(&mut c, &member, request.id, None).unwrap_err();
    assert_eq!(err.exit_code(), 5);
    let err = approvals::approve(&mut c, &system(), request.id, None).unwrap_err();
    assert_eq!(err.exit_code(), 5, "system never approves");
    // A librarian cannot decide a request about themselves either.
    let own = waiver(&mut c, &admin_ctx, &lib, 100);
    assert_eq!(
        approvals::approve(&mut c, &desk, own.id, None)
            .unwrap_err()
            .code(),
        "self_approval"
    );
    assert_eq!(status_of(&mut c, request.id), "pending");
    let denied: i64 = c
        .query_one("SELECT count(*) FROM audit_log WHERE action = 'request.approve' AND outcome = 'denied'", &[])
        .unwrap()
        .get(0);
    assert_eq!(denied, 4);
    let approved = approvals::approve(&mut c, &admin_ctx, request.id, None).unwrap();
    assert_eq!(approved.status, "approved");
    let account = libcore::fines::show(&mut c, &admin_ctx, &m).unwrap();
    assert_eq!((account.waivers_cents, account.balance_cents), (500, 1500));
}

#[test]
fn waivers_above_5000_need_an_admin_and_never_exceed_the_balance() {
    let tdb = TestDb::new();
    let mut c = tdb.client();
    let admin_ctx = admin(&mut c);
    let m = debtor(&mut c, "owes@example.org", 3); // owes 6000
    let lib = add_member(&mut c, "desk@example.org", "librarian");
    let filer = add_member(&mut c, "clerk@example.org", "librarian");
    let desk = ctx_of(&mut c, &lib);
    let clerk = ctx_of(&mut c, &filer);
    let at_limit = waiver(&mut c, &clerk, &m, 5000);
    let above = waiver(&mut c, &clerk, &m, 5001);
    let err = approvals::approve(&mut c, &desk, above.id, None).unwrap_err();
    assert_eq!(err.exit_code(), 5, "a librarian may not approve 5001 cents");
    approvals::approve(&mut c, &desk, at_limit.id, None).unwrap();
    // 1000 left: an admin still cannot waive 5001.
    let err = approvals::approve(&mut c, &admin_ctx, above.id, None).unwrap_err();
    assert_eq!((err.code(), err.exit_code()), ("waiver_exceeds_balance", 4));
    assert_eq!(
        status_of(&mut c, above.id),
        "pending",
        "a failed side effect leaves the request pending"
    );
    let rejected = approvals::reject(&mut c, &admin_ctx, above.id, "exceeds the balance").unwrap();
    assert_eq!(rejected.status, "rejected");
    assert_invariants(&mut c);
}

#[test]
fn an_override_borrows_past_the_limit_but_not_past_the_shelf() {
    let tdb = TestDb::new();
    let mut c = tdb.client();
    let m = add_member(&mut c, "busy@example.org", "member");
    let ctx = admin(&mut c);
    for n in 0..5 {
        let b = add_book(&mut c, n, 1);
        circulation::borrow(&mut c, &ctx, &m, &b).unwrap();
    }
    let wanted = add_book(&mut c, 50, 1);
    assert_eq!(
        circulation::borrow(&mut c, &ctx, &m, &wanted)
            .unwrap_err()
            .code(),
        "loan_limit_reached"
    );
    let member = ctx_of(&mut c, &m);
    let request = approvals::file(
        &mut c,
        &member,
        &NewRequest::Override {
            member: m.clone(),
            book: Some(wanted.clone()),
            loan: None,
            reason: "thesis".into(),
        },
    )
    .unwrap();
    // Someone else takes the last copy first: the approval fails and the request stays pending.
    let other = add_member(&mut c, "other@example.org", "member");
    let taken = circulation::borrow(&mut c, &ctx, &other, &wanted).unwrap();
    let lib = add_member(&mut c, "desk@example.org", "librarian");
    let desk = ctx_of(&mut c, &lib);
    let err = approvals::approve(&mut c, &desk, request.id, None).unwrap_err();
    assert_eq!((err.code(), err.exit_code()), ("no_copy_available", 4));
    assert_eq!(status_of(&mut c, request.id), "pending");
    circulation::return_loan(&mut c, &ctx, &LoanRef::Id(taken.id)).unwrap();
    let approved = approvals::approve(&mut c, &desk, request.id, None).unwrap();
    assert!(approved.result.unwrap()["loan"]["id"].is_string());
    let open: i64 = c
        .query_one("SELECT count(*) FROM loan l JOIN member m ON m.id = l.member_id WHERE m.email = $1 AND returned_at IS NULL", &[&m])
        .unwrap()
        .get(0);
    assert_eq!(open, 6, "the override went past the limit of 5");
}

#[test]
fn a_correction_changes_the_field_and_audits_before_and_after() {
    let tdb = TestDb::new();
    let mut c = tdb.client();
    let admin_ctx = admin(&mut c);
    let m = add_member(&mut c, "old@example.org", "member");
    let member = ctx_of(&mut c, &m);
    let request = approvals::file(
        &mut c,
        &member,
        &NewRequest::Correction {
            member: m.clone(),
            field: "email".into(),
            value: "New@Example.org".into(),
            reason: "moved".into(),
        },
    )
    .unwrap();
    let bad = approvals::file(
        &mut c,
        &member,
        &NewRequest::Correction {
            member: m.clone(),
            field: "phone".into(),
            value: "call me".into(),
            reason: "x".into(),
        },
    )
    .unwrap_err();
    assert_eq!(bad.exit_code(), 7);
    approvals::approve(&mut c, &admin_ctx, request.id, None).unwrap();
    let found = libcore::members::find_member(&mut c, "new@example.org").unwrap();
    assert_eq!(found.email, "New@Example.org");
    let details: serde_json::Value = c
        .query_one(
            "SELECT details FROM audit_log WHERE action = 'request.approve' AND outcome = 'ok'",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(details["result"]["before"], "old@example.org");
    assert_eq!(details["result"]["after"], "New@Example.org");
}

#[test]
fn two_concurrent_approvals_exactly_one_wins() {
    let tdb = TestDb::new();
    let mut c = tdb.client();
    let anonymous = Ctx::new(Actor::anonymous());
    let applicant = NewMember {
        name: "Racer".into(),
        email: "race@example.org".into(),
        ..Default::default()
    };
    let request =
        approvals::file(&mut c, &anonymous, &NewRequest::Membership { applicant }).unwrap();
    let a = add_member(&mut c, "a@example.org", "librarian");
    let b = add_member(&mut c, "b@example.org", "librarian");
    let deciders = [ctx_of(&mut c, &a), ctx_of(&mut c, &b), admin(&mut c)];
    let barrier = Arc::new(Barrier::new(deciders.len()));
    let handles: Vec<_> = deciders
        .into_iter()
        .map(|ctx| {
            let mut client = tdb.client();
            let barrier = barrier.clone();
            std::thread::spawn(move || {
                barrier.wait();
                approvals::approve(&mut client, &ctx, request.id, None)
            })
        })
        .collect();
    let results: Vec<_> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    assert_eq!(results.iter().filter(|r| r.is_ok()).count(), 1);
    for r in results.iter().filter_map(|r| r.as_ref().err()) {
        assert_eq!(r.code(), "request_not_pending");
    }
    let ok_rows: i64 = c
        .query_one(
            "SELECT count(*) FROM audit_log WHERE action = 'request.approve' AND outcome = 'ok'",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(ok_rows, 1);
}

#[test]
fn batch_approval_reports_each_and_one_failure_undoes_nothing_else() {
    let tdb = TestDb::new();
    let mut c = tdb.client();
    let m = debtor(&mut c, "owes@example.org", 1); // owes 2000
    let filer = add_member(&mut c, "clerk@example.org", "librarian");
    let clerk = ctx_of(&mut c, &filer);
    let first = waiver(&mut c, &clerk, &m, 1500);
    let second = waiver(&mut c, &clerk, &m, 1000); // exceeds what is left after the first
    let third = waiver(&mut c, &clerk, &m, 500);
    let admin = admin(&mut c);
    let dry = approvals::approve_all_pending(&mut c, &admin, "waiver", true).unwrap();
    assert_eq!(
        dry.iter().map(|o| o.outcome.as_str()).collect::<Vec<_>>(),
        ["would_approve"; 3]
    );
    assert_eq!(
        status_of(&mut c, first.id),
        "pending",
        "a dry run decides nothing"
    );
    let done = approvals::approve_all_pending(&mut c, &admin, "waiver", false).unwrap();
    assert_eq!(
        done.iter().map(|o| o.outcome.as_str()).collect::<Vec<_>>(),
        ["approved", "waiver_exceeds_balance", "approved"]
    );
    assert_eq!(status_of(&mut c, second.id), "pending");
    assert_eq!(status_of(&mut c, third.id), "approved");
    assert_invariants(&mut c);
}

#[test]
fn stale_membership_applications_expire() {
    let tdb = TestDb::new();
    let mut c = tdb.client();
    let old = admin_at(&mut c, 40);
    let applicant = NewMember {
        name: "Slow".into(),
        email: "slow@example.org".into(),
        ..Default::default()
    };
    let stale = approvals::file(&mut c, &old, &NewRequest::Membership { applicant }).unwrap();
    let fresh = approvals::file(
        &mut c,
        &Ctx::new(Actor::anonymous()),
        &NewRequest::Membership {
            applicant: NewMember {
                name: "Quick".into(),
                email: "quick@example.org".into(),
                ..Default::default()
            },
        },
    )
    .unwrap();
    assert_eq!(approvals::expire(&mut c, &system(), 30).unwrap(), 1);
    assert_eq!(status_of(&mut c, stale.id), "expired");
    assert_eq!(status_of(&mut c, fresh.id), "pending");
    assert_eq!(
        libcore::members::find_member(&mut c, "slow@example.org")
            .unwrap()
            .status,
        "closed"
    );
}
