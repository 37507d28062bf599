//! Races on real threads and real connections; afterwards every invariant of SPEC §5 holds.

use std::sync::{Arc, Barrier};

use libcore::circulation::{self, LoanRef};
use libcore::Error;

use crate::support::*;

/// One racer's work, run on its own connection.
pub(crate) type Job<T> = Box<dyn FnOnce(&mut postgres::Client) -> T + Send>;

/// Runs `jobs` at once, each on its own connection, released together by a barrier.
pub(crate) fn race<T: Send + 'static>(tdb: &TestDb, jobs: Vec<Job<T>>) -> Vec<T> {
    let barrier = Arc::new(Barrier::new(jobs.len()));
    let handles: Vec<_> = jobs
        .into_iter()
        .map(|job| {
            let mut client = tdb.client();
            let barrier = barrier.clone();
            std::thread::spawn(move || {
                barrier.wait();
                job(&mut client)
            })
        })
        .collect();
    handles
        .into_iter()
        .map(|h| h.join().expect("thread"))
        .collect()
}

pub(crate) fn codes(results: &[Result<circulation::Loan, Error>]) -> (usize, Vec<&'static str>) {
    let ok = results.iter().filter(|r| r.is_ok()).count();
    let mut errs: Vec<&'static str> = results
        .iter()
        .filter_map(|r| r.as_ref().err().map(Error::code))
        .collect();
    errs.sort();
    (ok, errs)
}

#[test]
fn twelve_members_race_for_three_copies() {
    let tdb = TestDb::new();
    let mut c = tdb.client();
    let book = add_book(&mut c, 1, 3);
    let members: Vec<String> = (0..12)
        .map(|i| add_member(&mut c, &format!("m{i}@example.org"), "member"))
        .collect();
    let ctx = admin(&mut c);
    let jobs = members
        .into_iter()
        .map(|m| {
            let (ctx, book) = (ctx.clone(), book.clone());
            Box::new(move |client: &mut postgres::Client| {
                circulation::borrow(client, &ctx, &m, &book)
            }) as Job<_>
        })
        .collect();
    let results = race(&tdb, jobs);
    let (ok, errs) = codes(&results);
    assert_eq!(ok, 3);
    assert_eq!(errs, vec!["no_copy_available"; 9]);
    let items: std::collections::HashSet<_> = results
        .iter()
        .filter_map(|r| r.as_ref().ok())
        .map(|l| l.item_id.expect("every loan names its item"))
        .collect();
    assert_eq!(items.len(), 3, "each winner took a different item");
    let available: i32 = c
        .query_one(
            "SELECT available_copies FROM book WHERE isbn = $1",
            &[&book],
        )
        .unwrap()
        .get(0);
    assert_eq!(available, 0);
    assert_invariants(&mut c);
}

#[test]
fn a_member_with_four_loans_fires_six_borrows_and_exactly_one_wins() {
    let tdb = TestDb::new();
    let mut c = tdb.client();
    let m = add_member(&mut c, "greedy@example.org", "member");
    let ctx = admin(&mut c);
    for n in 0..4 {
        let b = add_book(&mut c, n, 1);
        circulation::borrow(&mut c, &ctx, &m, &b).unwrap();
    }
    let books: Vec<String> = (10..16).map(|n| add_book(&mut c, n, 1)).collect();
    let jobs = books
        .into_iter()
        .map(|b| {
            let (ctx, m) = (ctx.clone(), m.clone());
            Box::new(move |client: &mut postgres::Client| circulation::borrow(client, &ctx, &m, &b))
                as Job<_>
        })
        .collect();
    let results = race(&tdb, jobs);
    let (ok, errs) = codes(&results);
    assert_eq!(ok, 1);
    assert_eq!(errs, vec!["loan_limit_reached"; 5]);
    let open: i64 = c
        .query_one("SELECT count(*) FROM loan l JOIN member m ON m.id = l.member_id WHERE m.email = $1 AND returned_at IS NULL", &[&m])
        .unwrap()
        .get(0);
    assert_eq!(open, 5);
    assert_invariants(&mut c);
}

#[test]
fn one_member_borrows_the_same_book_five_times_at_once() {
    let tdb = TestDb::new();
    let mut c = tdb.client();
    let m = add_member(&mut c, "twice@example.org", "member");
    let b = add_book(&mut c, 1, 5);
    let ctx = admin(&mut c);
    let jobs = (0..5)
        .map(|_| {
            let (ctx, m, b) = (ctx.clone(), m.clone(), b.clone());
            Box::new(move |client: &mut postgres::Client| circulation::borrow(client, &ctx, &m, &b))
                as Job<_>
        })
        .collect();
    let results = race(&tdb, jobs);
    let (ok, errs) = codes(&results);
    assert_eq!(ok, 1);
    assert_eq!(errs, vec!["duplicate_loan"; 4]);
    assert_invariants(&mut c);
}

#[test]
fn two_returns_of_one_loan_at_once() {
    let tdb = TestDb::new();
    let mut c = tdb.client();
    let m = add_member(&mut c, "back@example.org", "member");
    let b = add_book(&mut c, 1, 1);
    let ctx = admin(&mut c);
    let loan = circulation::borrow(&mut c, &ctx, &m, &b).unwrap();
    let jobs = (0..2)
        .map(|_| {
            let ctx = ctx.clone();
            Box::new(move |client: &mut postgres::Client| {
                circulation::return_loan(client, &ctx, &LoanRef::Id(loan.id))
            }) as Job<_>
        })
        .collect();
    let results = race(&tdb, jobs);
    let (ok, errs) = codes(&results);
    assert_eq!(ok, 1);
    assert_eq!(errs, vec!["already_returned"]);
    let available: i32 = c
        .query_one("SELECT available_copies FROM book WHERE isbn = $1", &[&b])
        .unwrap()
        .get(0);
    assert_eq!(available, 1);
    assert_invariants(&mut c);
}

/// Desk `i`'s return, on odd rounds, of what it borrowed the round before (a race may have
/// left nothing to return).
fn return_every_other_round(
    client: &mut postgres::Client,
    ctx: &libcore::actor::Ctx,
    member: &str,
    books: &[String],
    i: usize,
    round: usize,
) {
    if round % 2 == 1 {
        let back = LoanRef::MemberBook {
            member: member.to_string(),
            book: books[(i + round - 1) % books.len()].clone(),
        };
        if let Err(e) = circulation::return_loan(client, ctx, &back) {
            assert!(matches!(e.code(), "already_returned" | "not_found"), "{e}");
        }
    }
}

#[test]
fn mixed_borrow_return_renew_storm_keeps_every_invariant() {
    let tdb = TestDb::new();
    let mut c = tdb.client();
    let members: Vec<String> = (0..8)
        .map(|i| add_member(&mut c, &format!("s{i}@example.org"), "member"))
        .collect();
    let books: Vec<String> = (0..4).map(|n| add_book(&mut c, n, 2)).collect();
    // One desk per member, so no single actor runs into the 120-mutations-a-minute limit.
    let desks: Vec<_> = (0..8)
        .map(|i| {
            let desk = add_member(&mut c, &format!("desk{i}@example.org"), "librarian");
            ctx_of(&mut c, &desk)
        })
        .collect();
    let jobs = members
        .into_iter()
        .enumerate()
        .map(|(i, m)| {
            let (ctx, books) = (desks[i].clone(), books.clone());
            Box::new(move |client: &mut postgres::Client| {
                for round in 0..15 {
                    let b = &books[(i + round) % books.len()];
                    match circulation::borrow(client, &ctx, &m, b) {
                        Ok(loan) if round % 3 == 0 => {
                            circulation::renew(client, &ctx, &LoanRef::Id(loan.id)).unwrap();
                        }
                        Ok(_) => {}
                        Err(e) => assert_eq!(e.exit_code(), 4, "{e}"),
                    }
                    return_every_other_round(client, &ctx, &m, &books, i, round);
                }
            }) as Job<()>
        })
        .collect();
    race(&tdb, jobs);
    assert_invariants(&mut c);
}

#[test]
fn the_running_totals_stay_exact_while_borrows_and_returns_race_their_fold() {
    let tdb = TestDb::new();
    let mut c = tdb.client();
    let books: Vec<String> = (0..3).map(|n| add_book(&mut c, n, 2)).collect();
    let mut jobs: Vec<Job<()>> = (0..6)
        .map(|i| {
            let m = add_member(&mut c, &format!("t{i}@example.org"), "member");
            let desk = add_member(&mut c, &format!("tdesk{i}@example.org"), "librarian");
            let (ctx, books) = (ctx_of(&mut c, &desk), books.clone());
            Box::new(move |client: &mut postgres::Client| {
                for round in 0..12 {
                    let b = &books[(i + round) % books.len()];
                    if let Err(e) = circulation::borrow(client, &ctx, &m, b) {
                        assert_eq!(e.exit_code(), 4, "{e}");
                    }
                    return_every_other_round(client, &ctx, &m, &books, i, round);
                }
            }) as Job<()>
        })
        .collect();
    // The nightly's fold, over and over, beside the desks.
    jobs.push(Box::new(|client: &mut postgres::Client| {
        for _ in 0..40 {
            let mut tx = client.transaction().unwrap();
            libcore::tally::fold_in(&mut tx).unwrap();
            tx.commit().unwrap();
        }
    }));
    race(&tdb, jobs);
    let kept = libcore::tally::totals(&mut c).unwrap();
    assert_eq!(kept, libcore::tally::recount(&mut c).unwrap());
    assert!(kept.open_loans > 0, "the race left loans out: {kept:?}");
    assert_invariants(&mut c);
}
