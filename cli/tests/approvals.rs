//! The approval workflow end to end through the binary.

use crate::support::*;
use crate::util::*;

#[test]
fn apply_approve_borrow_and_the_other_decisions() {
    let tdb = TestDb::new();
    let mut c = tdb.client();
    let lib = add_member(&mut c, "desk@example.org", "librarian");
    let book = add_book(&mut c, 3, 1);
    // Self-registration: no actor at all.
    let request = Libctl::new(&tdb)
        .args([
            "request",
            "membership",
            "--name",
            "Grace Hopper",
            "--email",
            "grace@example.org",
            "--category",
            "staff",
            "--format",
            "json",
        ])
        .run()
        .json();
    let id = request["id"].as_str().unwrap().to_string();
    assert_eq!(request["status"], "pending");
    let pending = Libctl::new(&tdb)
        .actor(&lib)
        .args(["requests", "--status", "pending", "--format", "json"])
        .run()
        .json();
    assert_eq!(pending.as_array().unwrap().len(), 1);
    Libctl::new(&tdb)
        .actor(&lib)
        .args(["borrow", "--member", "grace@example.org", "--book", &book])
        .status(4)
        .run();
    Libctl::new(&tdb).args(["approve", &id]).status(5).run();
    let approved = Libctl::new(&tdb)
        .actor(&lib)
        .args(["approve", &id, "--note", "ID seen", "--format", "json"])
        .run()
        .json();
    assert_eq!(approved["status"], "approved");
    Libctl::new(&tdb)
        .actor(ADMIN)
        .args(["approve", &id])
        .status(4)
        .run();
    Libctl::new(&tdb)
        .actor(&lib)
        .args(["borrow", "--member", "grace@example.org", "--book", &book])
        .run();

    let correction = Libctl::new(&tdb)
        .actor("grace@example.org")
        .args([
            "request",
            "correction",
            "--member",
            "grace@example.org",
            "--field",
            "phone",
            "--value",
            "+1 555 010 0199",
            "--reason",
            "new number",
            "--format",
            "json",
        ])
        .run()
        .json();
    let cid = correction["id"].as_str().unwrap().to_string();
    let rejected = Libctl::new(&tdb)
        .actor(&lib)
        .args([
            "reject",
            &cid,
            "--reason",
            "call the desk",
            "--format",
            "json",
        ])
        .run()
        .json();
    assert_eq!(rejected["status"], "rejected");
    Libctl::new(&tdb)
        .actor(&lib)
        .args(["reject", &cid])
        .status(2)
        .run();
    let batch = Libctl::new(&tdb)
        .actor(&lib)
        .args([
            "approve",
            "--kind",
            "membership",
            "--all-pending",
            "--dry-run",
            "--format",
            "json",
        ])
        .run()
        .json();
    assert_eq!(batch.as_array().unwrap().len(), 0);
    Libctl::new(&tdb)
        .args([
            "requests",
            "expire",
            "--older-than",
            "30d",
            "--format",
            "json",
        ])
        .stdout_json(serde_json::json!({ "expired": 0 }))
        .run();
    Libctl::new(&tdb).args(["db", "check"]).run();
}
