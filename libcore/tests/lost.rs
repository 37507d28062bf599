//! Lost items, claims returned and the ledger (SPEC §16, issue 25): hand-computed money for
//! every charge and refund, the balance equal to the sum of the entries after each scenario,
//! the claims limit and its override, and `lost auto`'s guard.
//!
//! Every scenario starts from one loan borrowed 80 days ago under the template's `public`
//! rule (14 days, 100 cents a day, capped at 2000, no grace), so its fine is the cap: 2000.
//! The item's replacement price is set to 3000; the processing fee is the default 500.

use chrono::{Duration, NaiveDate, Utc};
use libcore::actor::Ctx;
use libcore::approvals::{self, NewRequest};
use libcore::circulation::{self, Loan, LoanRef};
use libcore::{fines, items, lost};
use postgres::Client;

use crate::support::*;

const FINE: i64 = 2000;
const PRICE: i64 = 3000;
const FEE: i64 = 500;

struct Scenario {
    /// Kept for the scenario's life: dropping it drops the database.
    _tdb: TestDb,
    c: Client,
    desk: Ctx,
    member: String,
    loan: Loan,
}

impl Scenario {
    fn item(&self) -> LoanRef {
        LoanRef::Item {
            item: self.loan.barcode.clone().expect("lent items have barcodes"),
        }
    }

    fn balance(&mut self) -> i64 {
        let account = fines::show(&mut self.c, &self.desk, &self.member).unwrap();
        let summed: i64 = account.entries.iter().map(|e| e.signed_cents()).sum();
        assert_eq!(
            account.balance_cents, summed,
            "the balance is the sum of the ledger's entries: {:?}",
            account.entries
        );
        account.balance_cents
    }

    fn kinds(&mut self) -> Vec<(String, i64)> {
        fines::show(&mut self.c, &self.desk, &self.member)
            .unwrap()
            .entries
            .into_iter()
            .map(|e| (e.kind, e.amount_cents))
            .collect()
    }

    fn item_status(&mut self) -> String {
        items::find(&mut self.c, self.loan.barcode.as_deref().unwrap())
            .unwrap()
            .status
    }

    fn found(&mut self) -> lost::Found {
        let item = self.item();
        let back = circulation::return_loan(&mut self.c, &self.desk, &item).unwrap();
        assert_eq!(back.id, self.loan.id);
        back.found.expect("the return found the lost item")
    }

    fn waive(&mut self, cents: i64) {
        let filer = add_member(&mut self.c, "clerk@example.org", "librarian");
        let as_filer = ctx_of(&mut self.c, &filer);
        let request = approvals::file(
            &mut self.c,
            &as_filer,
            &NewRequest::Waiver {
                member: self.member.clone(),
                amount_cents: cents,
                reason: "hardship".into(),
            },
        )
        .unwrap();
        approvals::approve(&mut self.c, &self.desk, request.id, None).unwrap();
    }
}

fn scenario() -> Scenario {
    let tdb = TestDb::new();
    let mut c = tdb.client();
    let desk = admin(&mut c);
    let member = add_member(&mut c, "reader@example.org", "member");
    c.execute(
        "UPDATE member SET created_at = now() - interval '1 year' WHERE email = $1",
        &[&member],
    )
    .unwrap();
    let book = add_book(&mut c, 1, 1);
    c.execute("UPDATE item SET price_cents = $1", &[&PRICE])
        .unwrap();
    let at = Ctx {
        at: Some(Utc::now() - Duration::days(80)),
        ..desk.clone()
    };
    let loan = circulation::borrow(&mut c, &at, &member, &book).unwrap();
    Scenario {
        _tdb: tdb,
        c,
        desk,
        member,
        loan,
    }
}

fn declare_lost(s: &mut Scenario) -> lost::LostLoan {
    let item = s.item();
    let lost = lost::declare(&mut s.c, &s.desk, &item).unwrap();
    assert_eq!(
        (
            lost.fine_cents,
            lost.replacement_cents,
            lost.processing_fee_cents
        ),
        (FINE, PRICE, FEE)
    );
    assert_eq!(s.item_status(), "lost");
    assert_eq!(s.balance(), FINE + PRICE + FEE);
    lost
}

#[test]
fn lost_then_returned_then_paid() {
    let mut s = scenario();
    let lost = declare_lost(&mut s);
    // Declaring it again charges nothing twice.
    let again = lost::declare(&mut s.c, &s.desk, &LoanRef::Id(lost.loan_id)).unwrap_err();
    assert_eq!(again.code(), "already_returned");
    assert_eq!(s.balance(), 5500);
    let found = s.found();
    assert_eq!(
        (found.end_state.as_str(), found.refund_cents),
        ("lost", 3000)
    );
    assert_eq!(s.item_status(), "available");
    assert_eq!(s.balance(), 2500, "the fine and the fee stay");
    fines::pay(&mut s.c, &s.desk, &s.member.clone(), 2500).unwrap();
    assert_eq!(s.balance(), 0);
    assert_eq!(
        s.kinds(),
        [
            ("overdue_fine".into(), 2000),
            ("lost_item".into(), 3000),
            ("processing_fee".into(), 500),
            ("refund".into(), 3000),
            ("payment".into(), 2500),
        ]
    );
    // Scanning it in again is an ordinary already-returned loan: no second refund.
    let item = s.item();
    let twice = circulation::return_loan(&mut s.c, &s.desk, &item).unwrap_err();
    assert_eq!(twice.code(), "already_returned");
    assert_eq!(s.balance(), 0);
    assert_invariants(&mut s.c);
}

#[test]
fn paid_then_found_leaves_the_library_owing_the_replacement() {
    let mut s = scenario();
    declare_lost(&mut s);
    fines::pay(&mut s.c, &s.desk, &s.member.clone(), 5500).unwrap();
    assert_eq!(s.balance(), 0);
    assert_eq!(s.found().refund_cents, 3000);
    assert_eq!(
        s.balance(),
        -3000,
        "everything paid for the replacement comes back"
    );
    // Nothing is owed, so nothing can be paid.
    let over = fines::pay(&mut s.c, &s.desk, &s.member.clone(), 1).unwrap_err();
    assert_eq!(over.code(), "payment_exceeds_balance");
    assert_invariants(&mut s.c);
}

#[test]
fn waived_then_found_refunds_nothing() {
    let mut s = scenario();
    declare_lost(&mut s);
    s.waive(5500);
    assert_eq!(s.balance(), 0);
    assert_eq!(
        s.found().refund_cents,
        0,
        "a waived charge is not paid back"
    );
    assert_eq!(s.balance(), 0);
    assert_invariants(&mut s.c);
}

#[test]
fn partly_paid_partly_waived_then_found_refunds_only_the_paid_part() {
    let mut s = scenario();
    declare_lost(&mut s);
    // 1000 paid settles half the fine; the 1500 waived settles the rest of the fine (1000)
    // and 500 of the replacement, which is therefore not refunded.
    fines::pay(&mut s.c, &s.desk, &s.member.clone(), 1000).unwrap();
    s.waive(1500);
    assert_eq!(s.balance(), 3000);
    assert_eq!(s.found().refund_cents, 2500);
    assert_eq!(s.balance(), 500, "the processing fee is still owed");
    assert_invariants(&mut s.c);
}

#[test]
fn no_refund_when_the_category_keeps_the_replacement_charge() {
    let mut s = scenario();
    s.c.execute(
        "UPDATE circulation_rule SET lost_refund_on_return = false WHERE category = 'public'",
        &[],
    )
    .unwrap();
    declare_lost(&mut s);
    assert_eq!(s.found().refund_cents, 0);
    assert_eq!(s.balance(), 5500);
    assert_invariants(&mut s.c);
}

#[test]
fn an_item_without_a_price_is_charged_the_library_default() {
    let mut s = scenario();
    s.c.execute("UPDATE item SET price_cents = NULL", &[])
        .unwrap();
    libcore::policy::set_default_replacement_cents(&mut s.c, &s.desk, 1800).unwrap();
    let item = s.item();
    let lost = lost::declare(&mut s.c, &s.desk, &item).unwrap();
    assert_eq!(lost.replacement_cents, 1800);
    assert_eq!(s.balance(), FINE + 1800 + FEE);
}

#[test]
fn claims_returned_then_found_stops_the_fine_and_charges_nothing() {
    let mut s = scenario();
    let item = s.item();
    let claim = lost::claim_returned(&mut s.c, &s.desk, &item).unwrap();
    assert_eq!((claim.fine_cents, claim.claims), (FINE, 1));
    assert_eq!(s.item_status(), "missing");
    assert_eq!(s.balance(), FINE);
    // The nightly assesses no more on it.
    let today = Utc::now().date_naive();
    let sys = system();
    libcore::jobs::nightly(&mut s.c, &sys, today, false, &mut |_| Ok(())).unwrap();
    assert_eq!(s.balance(), FINE);
    let found = s.found();
    assert_eq!(
        (found.end_state.as_str(), found.refund_cents),
        ("claims_returned", 0)
    );
    assert_eq!(s.item_status(), "available");
    assert_eq!(s.balance(), FINE);
    assert_invariants(&mut s.c);
}

#[test]
fn a_fourth_claim_needs_an_approved_override() {
    let mut s = scenario();
    let desk = s.desk.clone();
    s.member = add_member(&mut s.c, "claimer@example.org", "member");
    let books: Vec<String> = (2..=5).map(|n| add_book(&mut s.c, n, 1)).collect();
    let mut loans = Vec::new();
    for b in &books {
        loans.push(circulation::borrow(&mut s.c, &desk, &s.member.clone(), b).unwrap());
    }
    for loan in &loans[..3] {
        lost::claim_returned(&mut s.c, &desk, &LoanRef::Id(loan.id)).unwrap();
    }
    let refused = lost::claim_returned(&mut s.c, &desk, &LoanRef::Id(loans[3].id)).unwrap_err();
    assert_eq!(
        (refused.code(), refused.exit_code()),
        ("claims_limit_reached", 4)
    );
    let filer = add_member(&mut s.c, "clerk@example.org", "librarian");
    let as_filer = ctx_of(&mut s.c, &filer);
    let request = approvals::file(
        &mut s.c,
        &as_filer,
        &NewRequest::Override {
            member: s.member.clone(),
            book: None,
            loan: Some(loans[3].id),
            reason: "seen it on the returns trolley".into(),
        },
    )
    .unwrap();
    let approved = approvals::approve(&mut s.c, &desk, request.id, None).unwrap();
    let claim = &approved.result.expect("the approval's result")["claim"];
    assert_eq!(claim["claims"], 4);
    assert_eq!(claim["overridden"], true);
    let ended: String =
        s.c.query_one("SELECT end_state FROM loan WHERE id = $1", &[&loans[3].id])
            .unwrap()
            .get(0);
    assert_eq!(ended, "claims_returned");
    assert_invariants(&mut s.c);
}

/// Three loans 76 days overdue (over the default lost_after_days of 60) and one 10 days.
fn long_overdue_library() -> (TestDb, Client) {
    let tdb = TestDb::new();
    let mut c = tdb.client();
    let desk = admin(&mut c);
    for n in 0..4 {
        let member = add_member(&mut c, &format!("r{n}@example.org"), "member");
        c.execute(
            "UPDATE member SET created_at = now() - interval '1 year' WHERE email = $1",
            &[&member],
        )
        .unwrap();
        let book = add_book(&mut c, n + 1, 1);
        let days = if n < 3 { 90 } else { 24 };
        let at = Ctx {
            at: Some(Utc::now() - Duration::days(days)),
            ..desk.clone()
        };
        circulation::borrow(&mut c, &at, &member, &book).unwrap();
    }
    (tdb, c)
}

fn lost_rows(c: &mut Client) -> (i64, i64, i64) {
    let r = c
        .query_one(
            "SELECT (SELECT count(*) FROM loan WHERE end_state = 'lost'),
                    (SELECT count(*) FROM account_entry),
                    (SELECT count(*) FROM notice WHERE kind = 'lost_billed')",
            &[],
        )
        .unwrap();
    (r.get(0), r.get(1), r.get(2))
}

#[test]
fn lost_auto_lists_in_a_dry_run_refuses_above_max_items_and_runs_once() {
    let (_tdb, mut c) = long_overdue_library();
    let sys = system();
    let today: NaiveDate = libcore::calendar::Calendar::load(&mut c)
        .unwrap()
        .local_date(Utc::now());
    let dry = lost::auto(&mut c, &sys, today, true, 1000).unwrap();
    assert!(dry.dry_run);
    assert_eq!(dry.declared, 3);
    assert_eq!(dry.loans.len(), 3);
    assert_eq!(dry.replacement_cents, 3 * 2500);
    assert_eq!(dry.processing_fee_cents, 3 * 500);
    assert_eq!(lost_rows(&mut c), (0, 0, 0), "a dry run writes nothing");

    let refused = lost::auto(&mut c, &sys, today, false, 2).unwrap_err();
    assert_eq!((refused.code(), refused.exit_code()), ("too_many_items", 4));
    assert_eq!(lost_rows(&mut c), (0, 0, 0), "a refused run marks nothing");

    let run = lost::auto(&mut c, &sys, today, false, 1000).unwrap();
    assert_eq!(run.declared, 3);
    assert_eq!(lost_rows(&mut c), (3, 6, 3));
    let again = lost::auto(&mut c, &sys, today, false, 1000).unwrap();
    assert_eq!(again.declared, 0, "a re-run changes nothing");
    assert_eq!(lost_rows(&mut c), (3, 6, 3));
    let counters: (i64, i64) = c
        .query_one(
            "SELECT sum(total_copies)::bigint, sum(available_copies)::bigint FROM book",
            &[],
        )
        .map(|r| (r.get(0), r.get(1)))
        .unwrap();
    assert_eq!(counters, (1, 0), "lost copies leave the books' counts");
    assert_invariants(&mut c);
}

#[test]
fn lost_after_days_zero_turns_automatic_loss_off() {
    let (_tdb, mut c) = long_overdue_library();
    c.execute("UPDATE circulation_rule SET lost_after_days = 0", &[])
        .unwrap();
    let today = Utc::now().date_naive();
    let run = lost::auto(&mut c, &system(), today, false, 1000).unwrap();
    assert_eq!(run.declared, 0);
}

#[test]
fn a_found_item_goes_to_the_first_waiting_hold() {
    let mut s = scenario();
    declare_lost(&mut s);
    let waiter = add_member(&mut s.c, "waiter@example.org", "member");
    let book = isbn(1);
    let hold = libcore::holds::place(&mut s.c, &s.desk, &waiter, &book).unwrap();
    let found = s.found();
    let trapped = found.hold.expect("trapped for the waiting hold");
    assert_eq!(trapped.id, hold.id);
    assert_eq!(s.item_status(), "on_hold_shelf");
    let counters: (i32, i32) =
        s.c.query_one("SELECT total_copies, available_copies FROM book", &[])
            .map(|r| (r.get(0), r.get(1)))
            .unwrap();
    assert_eq!(
        counters,
        (1, 0),
        "back among the copies, held, not available"
    );
    assert_invariants(&mut s.c);
}
