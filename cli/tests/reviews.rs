//! Reviews and recommendations through the binary, on a seeded library.

use crate::support::*;
use crate::util::*;

#[test]
fn seeded_reviews_reports_and_recommendations() {
    let db = TestDb::new();
    Libctl::new(&db)
        .args(["seed", "--scenario", "minimal", "--as-of", "2026-01-15"])
        .run();
    let mut c = db.client();
    let (reviews, returned): (i64, i64) = c
        .query_one("SELECT (SELECT count(*) FROM review), (SELECT count(*) FROM loan WHERE returned_at IS NOT NULL)", &[])
        .map(|r| (r.get(0), r.get(1)))
        .unwrap();
    let share = reviews as f64 / returned as f64;
    assert!(
        (0.07..0.11).contains(&share),
        "about 10 % of returned loans are reviewed: {share}"
    );
    Libctl::new(&db).args(["db", "check"]).run();
    let top = Libctl::new(&db)
        .args([
            "report",
            "top-rated",
            "--min-reviews",
            "2",
            "--format",
            "json",
        ])
        .run()
        .json();
    assert!(!top.as_array().unwrap().is_empty());

    // A member reviews a book they returned, through the binary.
    let (email, isbn): (String, String) = c
        .query_one(
            "SELECT m.email, b.isbn FROM loan l JOIN member m ON m.id = l.member_id JOIN book b ON b.id = l.book_id
             WHERE m.status = 'active' AND (m.expires_at IS NULL OR m.expires_at > now())
               AND NOT EXISTS (SELECT 1 FROM review r WHERE r.member_id = l.member_id AND r.book_id = l.book_id)
             LIMIT 1",
            &[],
        )
        .map(|r| (r.get(0), r.get(1)))
        .unwrap();
    let review = Libctl::new(&db)
        .actor(&email)
        .args([
            "review", "add", "--member", &email, "--book", &isbn, "--rating", "5", "--text",
            "Loved it", "--format", "json",
        ])
        .run()
        .json();
    let id = review["id"].as_str().unwrap().to_string();
    Libctl::new(&db)
        .actor(&email)
        .args([
            "review", "add", "--member", &email, "--book", &isbn, "--rating", "4",
        ])
        .status(4)
        .run();
    Libctl::new(&db)
        .actor(&email)
        .args(["review", "update", &id, "--rating", "9"])
        .status(7)
        .run();
    let listed = Libctl::new(&db)
        .args(["reviews", "--book", &isbn, "--format", "json"])
        .run()
        .json();
    assert!(listed["items"]
        .as_array()
        .unwrap()
        .iter()
        .any(|r| r["id"] == id.as_str()));
    Libctl::new(&db)
        .actor(&email)
        .args(["review", "delete", &id])
        .run();

    let refreshed = Libctl::new(&db)
        .args(["recommend", "refresh", "--format", "json"])
        .run()
        .json();
    assert!(refreshed["recommendations"].as_i64().unwrap() > 0);
    let recs = Libctl::new(&db)
        .actor(&email)
        .args([
            "recommend",
            "--member",
            &email,
            "--limit",
            "5",
            "--format",
            "json",
        ])
        .run()
        .json();
    let recs = recs.as_array().unwrap();
    assert_eq!(recs.len(), 5);
    assert!(recs
        .iter()
        .all(|r| !r["reason"].as_str().unwrap().is_empty()));
    Libctl::new(&db).args(["recommend"]).status(7).run();
    Libctl::new(&db).args(["db", "check"]).run();
}
