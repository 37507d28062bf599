//! Reviews, the exact aggregate under concurrency, and recommendations on a hand-built library.

use std::sync::{Arc, Barrier};

use libcore::catalog::NewBook;
use libcore::{circulation, reviews};
use postgres::Client;

use crate::support::*;

fn book_with_genre(c: &mut Client, n: u32, genre: &str) -> String {
    let admin = admin(c);
    libcore::catalog::add_book(
        c,
        &admin,
        &NewBook {
            isbn: isbn(n),
            title: format!("Book {n}"),
            author: "A".into(),
            genre: Some(genre.into()),
            copies: Some(10),
            ..Default::default()
        },
    )
    .unwrap()
    .isbn
}

fn aggregate(c: &mut Client, isbn: &str) -> (i32, i64) {
    let r = c
        .query_one(
            "SELECT rating_count, rating_sum FROM book WHERE isbn = $1",
            &[&isbn],
        )
        .unwrap();
    (r.get(0), r.get(1))
}

#[test]
fn the_rules_of_reviewing() {
    let tdb = TestDb::new();
    let mut c = tdb.client();
    let m = add_member(&mut c, "reader@example.org", "member");
    let other = add_member(&mut c, "other@example.org", "member");
    let b = add_book(&mut c, 1, 2);
    let me = ctx_of(&mut c, &m);
    let err = reviews::add(&mut c, &me, &m, &b, 4, None).unwrap_err();
    assert_eq!((err.code(), err.exit_code()), ("not_borrowed", 4));
    circulation::borrow(&mut c, &me, &m, &b).unwrap();
    for bad in [0, 6] {
        assert_eq!(
            reviews::add(&mut c, &me, &m, &b, bad, None)
                .unwrap_err()
                .exit_code(),
            7
        );
    }
    assert_eq!(
        reviews::add(&mut c, &me, &m, &b, 4, Some("bad\u{7}bell"))
            .unwrap_err()
            .code(),
        "invalid_input"
    );
    assert_eq!(
        reviews::add(&mut c, &me, &m, &b, 4, Some(&"x".repeat(2001)))
            .unwrap_err()
            .exit_code(),
        7
    );
    let review = reviews::add(
        &mut c,
        &me,
        &m,
        &b,
        4,
        Some("  A fine read.\nRecommended.  "),
    )
    .unwrap();
    assert_eq!(review.text.as_deref(), Some("A fine read.\nRecommended."));
    let err = reviews::add(&mut c, &me, &m, &b, 5, None).unwrap_err();
    assert_eq!((err.code(), err.exit_code()), ("duplicate_review", 4));
    assert_eq!(aggregate(&mut c, &b), (1, 4));
    let updated = reviews::update(&mut c, &me, review.id, Some(2), None).unwrap();
    assert_eq!(
        (updated.rating, updated.text.as_deref()),
        (2, Some("A fine read.\nRecommended."))
    );
    assert_eq!(aggregate(&mut c, &b), (1, 2));
    let you = ctx_of(&mut c, &other);
    assert_eq!(
        reviews::update(&mut c, &you, review.id, Some(5), None)
            .unwrap_err()
            .exit_code(),
        5
    );
    assert_eq!(
        reviews::delete(&mut c, &you, review.id)
            .unwrap_err()
            .exit_code(),
        5
    );
    let lib = add_member(&mut c, "desk@example.org", "librarian");
    let desk = ctx_of(&mut c, &lib);
    reviews::delete(&mut c, &desk, review.id).unwrap();
    assert_eq!(aggregate(&mut c, &b), (0, 0));
    let audited: serde_json::Value = c
        .query_one(
            "SELECT details FROM audit_log WHERE action = 'review.delete' AND outcome = 'ok'",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(audited["before"]["rating"], 2);
    assert_invariants(&mut c);
    c.execute("UPDATE book SET rating_sum = 99 WHERE isbn = $1", &[&b])
        .unwrap();
    let broken = libcore::db::check(&mut c).unwrap();
    assert!(broken
        .iter()
        .any(|r| r.invariant.contains("rating") && r.violations == 1));
}

#[test]
fn concurrent_reviews_of_one_book_keep_the_aggregate_exact() {
    let tdb = TestDb::new();
    let mut c = tdb.client();
    let b = add_book(&mut c, 1, 20);
    let admin = admin(&mut c);
    let readers: Vec<String> = (0..10)
        .map(|i| {
            let m = add_member(&mut c, &format!("r{i}@example.org"), "member");
            circulation::borrow(&mut c, &admin, &m, &b).unwrap();
            m
        })
        .collect();
    let barrier = Arc::new(Barrier::new(readers.len()));
    let handles: Vec<_> = readers
        .iter()
        .enumerate()
        .map(|(i, m)| {
            let (mut client, barrier, m, b) = (tdb.client(), barrier.clone(), m.clone(), b.clone());
            std::thread::spawn(move || {
                let ctx = ctx_of(&mut client, &m);
                barrier.wait();
                // Everyone also tries a second review at once: exactly one per member lands.
                let first = reviews::add(&mut client, &ctx, &m, &b, (i % 5 + 1) as i64, None);
                let second = reviews::add(&mut client, &ctx, &m, &b, 1, None);
                (first.is_ok(), second.map_err(|e| e.code()))
            })
        })
        .collect();
    for h in handles {
        let (first, second) = h.join().unwrap();
        assert!(first);
        assert_eq!(second.unwrap_err(), "duplicate_review");
    }
    let expected: i64 = (0..10).map(|i| (i % 5 + 1) as i64).sum();
    assert_eq!(aggregate(&mut c, &b), (10, expected));
    assert_invariants(&mut c);
}

#[test]
fn recommendations_on_a_hand_built_library_and_refresh_is_idempotent() {
    let tdb = TestDb::new();
    let mut c = tdb.client();
    let books: Vec<String> = (1..=5)
        .map(|n| book_with_genre(&mut c, n, if n <= 3 { "Mystery" } else { "Poetry" }))
        .collect();
    let admin = admin(&mut c);
    let who = |c: &mut Client, name: &str, borrowed: &[usize]| -> String {
        let m = add_member(c, &format!("{name}@example.org"), "member");
        for &k in borrowed {
            circulation::borrow(c, &admin, &m, &books[k - 1]).unwrap();
        }
        m
    };
    let a = who(&mut c, "a", &[1]);
    who(&mut c, "b", &[1, 2]);
    who(&mut c, "c", &[1, 2, 3]);
    let d = who(&mut c, "d", &[4]);
    let n = reviews::refresh(&mut c, &system()).unwrap();
    let ctx = admin.clone();
    let for_a = reviews::recommend(&mut c, &ctx, &a, 2).unwrap();
    assert_eq!(
        for_a.iter().map(|r| r.title.as_str()).collect::<Vec<_>>(),
        ["Book 2", "Book 3"]
    );
    assert_eq!(for_a[0].reason, "borrowed by 2 readers of Book 1");
    assert_eq!(for_a[1].reason, "borrowed by 1 readers of Book 1");
    // d's only book has no co-borrowers: the genre fallback, never a book d already had.
    let for_d = reviews::recommend(&mut c, &ctx, &d, 1).unwrap();
    assert_eq!(for_d[0].title, "Book 5");
    assert_eq!(
        for_d[0].reason,
        "popular in Poetry, the genre you read most"
    );
    // Idempotent: the same rows again.
    let snapshot = |c: &mut Client| -> Vec<(uuid::Uuid, i32, uuid::Uuid, i64, String)> {
        c.query(
            "SELECT member_id, rank, book_id, score, reason FROM recommendation ORDER BY 1, 2",
            &[],
        )
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3), r.get(4)))
        .collect()
    };
    let before = snapshot(&mut c);
    assert_eq!(reviews::refresh(&mut c, &system()).unwrap(), n);
    assert_eq!(snapshot(&mut c), before);
    let member = ctx_of(&mut c, &a);
    assert_eq!(
        reviews::recommend(&mut c, &member, &d, 1)
            .unwrap_err()
            .exit_code(),
        5,
        "members see only their own"
    );
}

#[test]
fn top_rated_needs_enough_reviews() {
    let tdb = TestDb::new();
    let mut c = tdb.client();
    let good = add_book(&mut c, 1, 10);
    let once = add_book(&mut c, 2, 10);
    let admin = admin(&mut c);
    for i in 0..3 {
        let m = add_member(&mut c, &format!("t{i}@example.org"), "member");
        circulation::borrow(&mut c, &admin, &m, &good).unwrap();
        let ctx = ctx_of(&mut c, &m);
        reviews::add(&mut c, &ctx, &m, &good, 5 - i, None).unwrap();
        if i == 0 {
            circulation::borrow(&mut c, &admin, &m, &once).unwrap();
            reviews::add(&mut c, &ctx, &m, &once, 5, None).unwrap();
        }
    }
    let top = reviews::top_rated(&mut c, &admin, 3, 10).unwrap();
    assert_eq!(top.len(), 1);
    assert_eq!((top[0].reviews, top[0].average), (3, 4.0));
    assert_eq!(
        reviews::top_rated(&mut c, &admin, 1, 10).unwrap()[0].title,
        "Book 2"
    );
}
