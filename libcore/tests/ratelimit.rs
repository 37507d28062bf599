//! Rate limits over real connections, the window boundary, the audit of the log, and prune.

use std::sync::{Arc, Barrier};

use chrono::{DateTime, Duration, Utc};
use libcore::actor::Ctx;
use libcore::ratelimit::{self, Policy};
use libcore::session::Session;
use libcore::{circulation, policy};
use postgres::Client;

use crate::support::*;

fn set(c: &mut Client, role: &str, group: &str, limit: i32, window: i32, burst: i32) {
    let admin = admin(c);
    ratelimit::set_policy(
        c,
        &admin,
        &Policy {
            role: role.into(),
            action_group: group.into(),
            limit_count: limit,
            window_seconds: window,
            burst,
        },
    )
    .unwrap();
}

fn outcomes(c: &mut Client, actor: &str) -> Vec<(String, String)> {
    c.query(
        "SELECT action, outcome FROM audit_log WHERE actor = $1 ORDER BY at, recorded_at",
        &[&actor],
    )
    .unwrap()
    .iter()
    .map(|r| (r.get(0), r.get(1)))
    .collect()
}

#[test]
fn many_connections_hammering_one_member_never_exceed_the_limit() {
    let tdb = TestDb::new();
    let mut c = tdb.client();
    set(&mut c, "member", "borrow", 3, 3600, 3);
    let admin = admin(&mut c);
    policy::set_rule(
        &mut c,
        &admin,
        &policy::RuleChange {
            category: "public".into(),
            max_active_loans: Some(20),
            ..Default::default()
        },
    )
    .unwrap();
    let m = add_member(&mut c, "eager@example.org", "member");
    let books: Vec<String> = (0..10).map(|n| add_book(&mut c, n, 1)).collect();
    let me = ctx_of(&mut c, &m);
    let barrier = Arc::new(Barrier::new(books.len()));
    // Half the connections send prepared statements (a Session), half unnamed ones.
    let handles: Vec<_> = books
        .into_iter()
        .enumerate()
        .map(|(i, b)| {
            let (mut client, ctx, m, barrier) =
                (tdb.client(), me.clone(), m.clone(), barrier.clone());
            std::thread::spawn(move || {
                barrier.wait();
                if i % 2 == 0 {
                    circulation::borrow(&mut Session::new(client), &ctx, &m, &b)
                } else {
                    circulation::borrow(&mut client, &ctx, &m, &b)
                }
            })
        })
        .collect();
    let results: Vec<_> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    assert_eq!(results.iter().filter(|r| r.is_ok()).count(), 3);
    for e in results.iter().filter_map(|r| r.as_ref().err()) {
        assert_eq!((e.code(), e.exit_code()), ("rate_limited", 6));
        assert!(e.to_string().contains("retry in"), "{e}");
    }
    let limited = outcomes(&mut c, &m)
        .iter()
        .filter(|(_, o)| o == "rate_limited")
        .count();
    assert_eq!(limited, 7);
    // A librarian borrowing for the member is a different actor with its own budget.
    let b = add_book(&mut c, 77, 1);
    circulation::borrow(&mut c, &admin, &m, &b).unwrap();
    let status = ratelimit::status(&mut c, &admin, &m).unwrap();
    let borrow = status.iter().find(|s| s.action_group == "borrow").unwrap();
    assert_eq!((borrow.used, borrow.remaining), (3, 0));
    assert!(borrow.retry_after_secs > 3500);
    assert_invariants(&mut c);
}

/// Rate limits count in real time: stepping `--at` back on every call spreads the claimed
/// times over hours, but every attempt was made in the last minute, and the fourth of a limit
/// of three is refused.
#[test]
fn backdating_with_at_does_not_escape_the_rate_limit() {
    let tdb = TestDb::new();
    let mut c = tdb.client();
    set(&mut c, "librarian", "mutation", 3, 60, 3);
    let lib = add_member(&mut c, "desk@example.org", "librarian");
    let now = Utc::now();
    let at = |c: &mut Client, minutes_back: i64| -> Ctx {
        Ctx {
            at: Some(now - Duration::minutes(minutes_back)),
            ..ctx_of(c, &lib)
        }
    };
    let add = |c: &mut Client, ctx: &Ctx, n: u32| {
        libcore::catalog::add_book(
            c,
            ctx,
            &libcore::catalog::NewBook {
                isbn: isbn(n),
                title: "T".into(),
                author: "A".into(),
                ..Default::default()
            },
        )
    };
    for i in 0..3u32 {
        let ctx = at(&mut c, 2 * (i64::from(i) + 1));
        add(&mut c, &ctx, i).unwrap();
    }
    let ctx = at(&mut c, 20);
    let err = add(&mut c, &ctx, 10).unwrap_err();
    assert_eq!(err.code(), "rate_limited", "{err}");
    assert!(err.to_string().contains("real time"), "{err}");
    let mut outcomes: Vec<String> = outcomes(&mut c, &lib)
        .into_iter()
        .filter(|(a, _)| a == "book.add")
        .map(|(_, o)| o)
        .collect();
    outcomes.sort();
    assert_eq!(outcomes, ["ok", "ok", "ok", "rate_limited"]);
}

#[test]
fn every_outcome_is_audited_and_system_is_exempt() {
    let tdb = TestDb::new();
    let mut c = tdb.client();
    // Every attempt but a rate-limited one counts against the budget: denied ones too.
    set(&mut c, "member", "borrow", 2, 3600, 2);
    let m = add_member(&mut c, "one@example.org", "member");
    let other = add_member(&mut c, "two@example.org", "member");
    let b1 = add_book(&mut c, 1, 1);
    let b2 = add_book(&mut c, 2, 0);
    let me = ctx_of(&mut c, &m);
    assert_eq!(
        circulation::borrow(&mut c, &me, &other, &b2)
            .unwrap_err()
            .exit_code(),
        5
    );
    circulation::borrow(&mut c, &me, &m, &b1).unwrap();
    assert_eq!(
        circulation::borrow(&mut c, &me, &m, &b2)
            .unwrap_err()
            .exit_code(),
        6
    );
    let two = ctx_of(&mut c, &other);
    assert_eq!(
        circulation::borrow(&mut c, &two, &other, &b2)
            .unwrap_err()
            .code(),
        "no_copy_available"
    );
    let seen: std::collections::BTreeSet<String> = c
        .query(
            "SELECT DISTINCT outcome FROM audit_log WHERE action = 'loan.borrow'",
            &[],
        )
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(
        seen.into_iter().collect::<Vec<_>>(),
        ["denied", "ok", "rate_limited", "refused"]
    );
    // 150 job runs in a row as system: no limit applies.
    for _ in 0..150 {
        libcore::fines::accrue(&mut c, &system(), Utc::now().date_naive(), false).unwrap();
    }
}

fn insert_row(
    c: &mut Client,
    actor: &str,
    role: &str,
    at: DateTime<Utc>,
    action: &str,
    outcome: &str,
) {
    c.execute(
        "INSERT INTO audit_log (id, at, actor, actor_role, action, outcome) VALUES ($1, $2, $3, $4, $5, $6)",
        &[&libcore::ids::new_id(at), &at, &actor, &role, &action, &outcome],
    )
    .unwrap();
}

#[test]
fn the_audit_finds_injected_bursts_and_violations_and_nothing_in_a_clean_log() {
    let tdb = TestDb::new();
    let mut c = tdb.client();
    let t0 = Utc::now() - Duration::hours(5);
    add_member(&mut c, "calm@example.org", "member");
    add_member(&mut c, "burst@example.org", "member");
    // A clean member: six borrows an hour apart.
    for h in 0..6 {
        insert_row(
            &mut c,
            "calm@example.org",
            "member",
            t0 + Duration::hours(h),
            "loan.borrow",
            "ok",
        );
    }
    let admin = admin(&mut c);
    let from = t0 - Duration::hours(1);
    let to = Utc::now();
    let rows = ratelimit::audit_report(&tdb.url, &admin, from, to, 2).unwrap();
    let calm = rows.iter().find(|r| r.actor == "calm@example.org").unwrap();
    assert_eq!(
        (
            calm.violations,
            calm.bursts,
            calm.near_misses,
            calm.peak_borrow_window
        ),
        (0, 0, 0, 1)
    );

    // An injected burst: 12 borrow attempts within 5 seconds, the last 4 rate limited.
    for k in 0..12 {
        let outcome = if k < 8 { "ok" } else { "rate_limited" };
        insert_row(
            &mut c,
            "burst@example.org",
            "member",
            t0 + Duration::milliseconds(400 * k),
            "loan.borrow",
            outcome,
        );
    }
    let rows = ratelimit::audit_report(&tdb.url, &admin, from, to, 2).unwrap();
    assert_eq!(rows[0].actor, "burst@example.org", "worst first");
    let burst = &rows[0];
    assert_eq!(burst.violations, 4);
    assert_eq!(burst.requests, 12);
    assert_eq!(
        burst.peak_borrow_window, 8,
        "rate-limited attempts do not count"
    );
    assert!(burst.bursts >= 1);
    assert!(burst.near_misses >= 1, "8 of 10 is 80 %");
    let calm = rows.iter().find(|r| r.actor == "calm@example.org").unwrap();
    assert_eq!((calm.violations, calm.bursts), (0, 0));
}

#[test]
fn prune_is_admin_only_needs_confirmation_and_is_audited() {
    let tdb = TestDb::new();
    let mut c = tdb.client();
    let old = Utc::now() - Duration::days(400);
    for d in 0..5 {
        insert_row(
            &mut c,
            "old@example.org",
            "member",
            old + Duration::days(d),
            "loan.borrow",
            "ok",
        );
    }
    let cutoff = Utc::now() - Duration::days(365);
    let lib = add_member(&mut c, "desk@example.org", "librarian");
    let desk = ctx_of(&mut c, &lib);
    assert_eq!(
        libcore::history::prune(&mut c, &desk, cutoff, true)
            .unwrap_err()
            .exit_code(),
        5
    );
    let admin = admin(&mut c);
    let dry = libcore::history::prune(&mut c, &admin, cutoff, false).unwrap();
    assert_eq!((dry.rows, dry.deleted), (5, false));
    let done = libcore::history::prune(&mut c, &admin, cutoff, true).unwrap();
    assert_eq!((done.rows, done.deleted), (5, true));
    let left: i64 = c
        .query_one("SELECT count(*) FROM audit_log WHERE at < $1", &[&cutoff])
        .unwrap()
        .get(0);
    assert_eq!(left, 0);
    let recorded: i64 = c
        .query_one(
            "SELECT count(*) FROM audit_log WHERE action = 'audit.prune' AND outcome = 'ok'",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(recorded, 1);
    assert!(
        c.batch_execute("DELETE FROM audit_log").is_err(),
        "plain SQL still cannot delete"
    );
}

#[test]
fn the_audit_split_over_actor_ranges_gives_the_single_pass_answer() {
    let tdb = TestDb::new();
    let mut c = tdb.client();
    let t0 = Utc::now() - Duration::hours(3);
    // A desk account holding most of the log, as on a real desk, and 40 light actors.
    for k in 0..400 {
        let at = t0 + Duration::seconds(7 * k);
        insert_row(
            &mut c,
            "desk@example.org",
            "librarian",
            at,
            "loan.borrow",
            "ok",
        );
    }
    for a in 0..40 {
        let actor = format!("reader{a:02}@example.org");
        for k in 0..(1 + a % 13) {
            let outcome = if k > 9 { "rate_limited" } else { "ok" };
            let at = t0 + Duration::seconds(60 * i64::from(a) + 2 * i64::from(k));
            insert_row(&mut c, &actor, "member", at, "loan.borrow", outcome);
        }
    }
    c.batch_execute("ANALYZE audit_log").unwrap();
    // The statistics the split is cut from: the desk account is a most common value.
    let common: Vec<String> = c
        .query_one(
            "SELECT most_common_vals::text::text[] FROM pg_stats
             WHERE tablename = 'audit_log' AND attname = 'actor'",
            &[],
        )
        .unwrap()
        .get(0);
    assert!(common.contains(&"desk@example.org".to_string()));
    let admin = admin(&mut c);
    let (from, to) = (t0 - Duration::hours(1), Utc::now());
    let report = |parts| {
        serde_json::to_value(ratelimit::audit_report(&tdb.url, &admin, from, to, parts).unwrap())
            .unwrap()
    };
    let single = report(1);
    assert_eq!(single.as_array().unwrap().len(), 41);
    for parts in [2, 3, 7] {
        assert_eq!(report(parts), single, "{parts} parts");
    }
}

#[test]
fn a_refused_attempt_never_reaches_the_member_and_the_limit_is_told_first() {
    let tdb = TestDb::new();
    let mut c = tdb.client();
    set(&mut c, "member", "borrow", 1, 3600, 1);
    let m = add_member(&mut c, "keen@example.org", "member");
    let books: Vec<String> = (0..2).map(|n| add_book(&mut c, n, 1)).collect();
    let me = ctx_of(&mut c, &m);
    circulation::borrow(&mut c, &me, &m, &books[0]).unwrap();
    // Another desk holds the member's row. The gate runs before the member's read in the same
    // statement, so a refused attempt never waits for that lock; were the read to run first,
    // this connection would time out on it instead.
    let mut desk = tdb.client();
    let mut held = desk.transaction().unwrap();
    held.execute("SELECT 1 FROM member WHERE email = $1 FOR UPDATE", &[&m])
        .unwrap();
    let mut session = Session::new(tdb.client());
    session.batch_execute("SET lock_timeout = '2s'").unwrap();
    let err = circulation::borrow(&mut session, &me, &m, &books[1]).unwrap_err();
    assert_eq!((err.code(), err.exit_code()), ("rate_limited", 6));
    // What fails before the gate is reached (an unknown book) is still told the limit first.
    let err = circulation::borrow(&mut session, &me, &m, "no such book").unwrap_err();
    assert_eq!(err.code(), "rate_limited");
    let err = circulation::return_loan(
        &mut session,
        &me,
        &circulation::LoanRef::Id(uuid::Uuid::nil()),
    )
    .unwrap_err();
    assert_eq!(
        err.code(),
        "not_found",
        "a return is a mutation, not a borrow: under the mutation limit it goes ahead"
    );
    held.rollback().unwrap();
    assert_eq!(
        outcomes(&mut c, &m),
        [
            ("loan.borrow".to_string(), "ok".to_string()),
            ("loan.borrow".into(), "rate_limited".into()),
            ("loan.borrow".into(), "rate_limited".into()),
            ("loan.return".into(), "refused".into()),
        ]
    );
}
