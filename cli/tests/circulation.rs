//! The desk through the binary: borrow, renew, return, loans, and their exit codes.

use crate::support::*;
use crate::util::*;

#[test]
fn borrow_renew_return_round_trip_with_json_objects() {
    let tdb = TestDb::new();
    let mut c = tdb.client();
    let m = add_member(&mut c, "reader@example.org", "member");
    let b = add_book(&mut c, 7, 1);
    let lib = add_member(&mut c, "desk@example.org", "librarian");
    let loan = Libctl::new(&tdb)
        .actor(&lib)
        .args(["borrow", "--member", &m, "--book", &b, "--format", "json"])
        .run()
        .json();
    let id = loan["id"].as_str().unwrap().to_string();
    assert_eq!(loan["returned_at"], serde_json::Value::Null);
    let again = Libctl::new(&tdb)
        .actor(&lib)
        .args(["borrow", "--member", &m, "--book", &b, "--format", "json"])
        .status(4)
        .run();
    assert_eq!(again.error_json()["error"]["code"], "duplicate_loan");
    let other = add_member(&mut c, "other@example.org", "member");
    let none = Libctl::new(&tdb)
        .actor(&lib)
        .args(["borrow", "--member", &other, "--book", &b])
        .status(4)
        .run();
    assert!(
        none.stderr().starts_with("error[no_copy_available]: "),
        "{}",
        none.stderr()
    );
    let renewed = Libctl::new(&tdb)
        .actor(&m)
        .args(["renew", "--loan", &id, "--format", "json"])
        .run()
        .json();
    assert_eq!(renewed["renewals"], 1);
    let open = Libctl::new(&tdb)
        .actor(&m)
        .args(["loans", "--open", "--format", "json"])
        .run()
        .json();
    assert_eq!(open["items"].as_array().unwrap().len(), 1);
    let returned = Libctl::new(&tdb)
        .actor(&lib)
        .args(["return", "--member", &m, "--book", &b, "--format", "json"])
        .run()
        .json();
    assert_eq!(returned["id"].as_str(), Some(id.as_str()));
    assert!(returned["returned_at"].is_string());
    let twice = Libctl::new(&tdb)
        .actor(&lib)
        .args(["return", "--loan", &id])
        .status(4)
        .run();
    assert!(twice.stderr().contains("error[already_returned]"));
    Libctl::new(&tdb)
        .actor(&lib)
        .args(["return", "--loan", "01900000-0000-7000-8000-000000000000"])
        .status(3)
        .run();
    Libctl::new(&tdb)
        .actor(&lib)
        .args(["borrow", "--member", "ghost@example.org", "--book", &b])
        .status(3)
        .run();
    Libctl::new(&tdb).args(["db", "check"]).run();
}

#[test]
fn permissions_and_backdating_through_the_binary() {
    let tdb = TestDb::new();
    let mut c = tdb.client();
    let m = add_member(&mut c, "reader@example.org", "member");
    let you = add_member(&mut c, "you@example.org", "member");
    let b = add_book(&mut c, 8, 2);
    Libctl::new(&tdb)
        .actor(&m)
        .args(["borrow", "--member", &you, "--book", &b])
        .status(5)
        .run();
    Libctl::new(&tdb)
        .args(["borrow", "--member", &you, "--book", &b])
        .status(5)
        .run();
    let run = Libctl::new(&tdb)
        .actor(&m)
        .args([
            "--at",
            "2024-01-01T10:00:00Z",
            "borrow",
            "--member",
            &m,
            "--book",
            &b,
        ])
        .status(5)
        .run();
    assert!(run.stderr().contains("--at"), "{}", run.stderr());
    // A loan cannot start before its member existed.
    Libctl::new(&tdb)
        .actor(ADMIN)
        .args([
            "--at",
            "2024-01-01T10:00:00Z",
            "borrow",
            "--member",
            &m,
            "--book",
            &b,
        ])
        .status(7)
        .run();
    Libctl::new(&tdb)
        .actor(ADMIN)
        .args(["--at", "not-a-time", "borrow", "--member", &m, "--book", &b])
        .status(2)
        .run();
    let audited: i64 = c
        .query_one("SELECT count(*) FROM audit_log WHERE action = 'loan.borrow' AND outcome IN ('denied', 'refused')", &[])
        .unwrap()
        .get(0);
    assert_eq!(audited, 3);
}
