//! Holds through the binary: place, the return that traps, the queue, the morning shelf list,
//! expiry, cancel, the refusals' exit codes, `policy set --max-holds` and `report holds`.

use crate::support::*;
use crate::util::*;

#[test]
fn a_hold_is_placed_trapped_at_return_listed_on_the_shelf_and_collected() {
    let tdb = TestDb::new();
    let mut c = tdb.client();
    let book = add_book(&mut c, 1, 1);
    let m0 = add_member(&mut c, "m0@example.org", "member");
    let m1 = add_member(&mut c, "m1@example.org", "member");
    let m2 = add_member(&mut c, "m2@example.org", "member");
    let desk = add_member(&mut c, "desk@example.org", "librarian");
    let loan = Libctl::new(&tdb)
        .actor(&desk)
        .args([
            "borrow", "--member", &m0, "--book", &book, "--format", "json",
        ])
        .run()
        .json();
    let barcode = loan["barcode"].as_str().unwrap().to_string();
    // A copy on the shelf: borrow it instead (exit 4).
    let other = add_book(&mut c, 2, 1);
    Libctl::new(&tdb)
        .actor(&m1)
        .args(["hold", "place", "--member", &m1, "--book", &other])
        .status(4)
        .stderr_contains("error[copy_available]")
        .run();
    let first = Libctl::new(&tdb)
        .actor(&m1)
        .args([
            "hold", "place", "--member", &m1, "--book", &book, "--format", "json",
        ])
        .run()
        .json();
    assert_eq!(first["status"], "waiting");
    assert_eq!(first["queue_position"], 1);
    // A member places holds for themselves only.
    Libctl::new(&tdb)
        .actor(&m1)
        .args(["hold", "place", "--member", &m2, "--book", &book])
        .status(5)
        .run();
    let second = Libctl::new(&tdb)
        .actor(&desk)
        .args([
            "hold", "place", "--member", &m2, "--book", &book, "--format", "json",
        ])
        .run()
        .json();
    assert_eq!(second["queue_position"], 2);
    Libctl::new(&tdb)
        .actor(&desk)
        .args(["hold", "place", "--member", &m2, "--book", &book])
        .status(4)
        .stderr_contains("error[duplicate_hold]")
        .run();
    Libctl::new(&tdb)
        .actor(&desk)
        .args(["renew", "--item", &barcode])
        .status(4)
        .stderr_contains("error[renewal_blocked_by_hold]")
        .run();
    let returned = Libctl::new(&tdb)
        .actor(&desk)
        .args(["return", "--item", &barcode, "--format", "json"])
        .run()
        .json();
    assert_eq!(returned["hold"]["id"], first["id"]);
    assert!(returned["hold"]["pickup_by"].is_string());
    let queue = Libctl::new(&tdb)
        .actor(&desk)
        .args(["holds", "--book", &book, "--format", "json"])
        .run()
        .json();
    let items = queue["items"].as_array().unwrap();
    assert_eq!(items.len(), 2);
    let waiting: Vec<_> = items.iter().filter(|h| h["status"] == "waiting").collect();
    assert_eq!(waiting[0]["queue_position"], 1);
    let shelf = Libctl::new(&tdb)
        .actor(&desk)
        .args(["holds", "shelf", "--format", "json"])
        .run()
        .json();
    let shelf = shelf.as_array().unwrap();
    assert_eq!(shelf.len(), 1);
    assert_eq!(shelf[0]["action"], "shelve");
    assert_eq!(shelf[0]["barcode"], barcode.as_str());
    assert_eq!(shelf[0]["member_email"], m1.as_str());
    Libctl::new(&tdb)
        .actor(&desk)
        .args(["borrow", "--member", &m2, "--item", &barcode])
        .status(4)
        .stderr_contains("error[item_on_hold]")
        .run();
    let collected = Libctl::new(&tdb)
        .actor(&desk)
        .args([
            "borrow", "--member", &m1, "--book", &book, "--format", "json",
        ])
        .run()
        .json();
    assert_eq!(collected["barcode"], barcode.as_str());
    let mine = Libctl::new(&tdb)
        .actor(&m1)
        .args(["holds", "--format", "json"])
        .run()
        .json();
    assert_eq!(mine["items"][0]["status"], "fulfilled");
    // The member's own cancel; a second cancel is refused.
    let id = second["id"].as_str().unwrap();
    Libctl::new(&tdb)
        .actor(&m2)
        .args(["hold", "cancel", id])
        .stdout_contains("cancelled")
        .run();
    Libctl::new(&tdb)
        .actor(&m2)
        .args(["hold", "cancel", id])
        .status(4)
        .stderr_contains("error[hold_not_live]")
        .run();
    Libctl::new(&tdb).args(["db", "check"]).run();
}

#[test]
fn expiry_runs_alone_and_in_nightly_and_the_report_flags_titles_to_buy() {
    let tdb = TestDb::new();
    let mut c = tdb.client();
    let book = add_book(&mut c, 1, 1);
    let m0 = add_member(&mut c, "m0@example.org", "member");
    let desk = add_member(&mut c, "desk@example.org", "librarian");
    Libctl::new(&tdb)
        .actor(ADMIN)
        .args([
            "policy",
            "set",
            "--category",
            "public",
            "--max-holds",
            "2",
            "--hold-pickup-days",
            "3",
        ])
        .run();
    let policy = Libctl::new(&tdb)
        .args(["policy", "show", "--format", "json"])
        .run()
        .json();
    let public = policy["rules"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["category"] == "public")
        .unwrap()
        .clone();
    assert_eq!(
        (
            public["max_holds"].clone(),
            public["hold_pickup_days"].clone()
        ),
        (2.into(), 3.into())
    );
    Libctl::new(&tdb)
        .actor(ADMIN)
        .args([
            "policy",
            "set",
            "--category",
            "public",
            "--max-holds",
            "1001",
        ])
        .status(7)
        .run();
    Libctl::new(&tdb)
        .actor(&desk)
        .args(["borrow", "--member", &m0, "--book", &book])
        .run();
    for i in 1..=4 {
        let m = add_member(&mut c, &format!("h{i}@example.org"), "member");
        Libctl::new(&tdb)
            .actor(&desk)
            .args(["hold", "place", "--member", &m, "--book", &book])
            .run();
    }
    let report = Libctl::new(&tdb)
        .args(["report", "holds", "--format", "json"])
        .stderr_contains("holds ready ")
        .run()
        .json();
    let rows = report.as_array().unwrap();
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0]["waiting_holds"], 4);
    assert_eq!(rows[0]["buy_more"], true, "4 holds on 1 copy is above 3");
    let report = Libctl::new(&tdb)
        .args([
            "report", "holds", "--ratio", "5", "--format", "json", "--quiet",
        ])
        .run()
        .json();
    assert_eq!(report[0]["buy_more"], false);
    let today = chrono::Utc::now().date_naive().to_string();
    let expired = Libctl::new(&tdb)
        .args(["holds", "expire", "--as-of", &today, "--format", "json"])
        .run()
        .json();
    assert_eq!(expired["expired"], 0);
    let nightly = Libctl::new(&tdb)
        .args(["nightly", "--as-of", &today, "--format", "json"])
        .run()
        .json();
    assert_eq!(nightly["holds_expired"], 0);
    Libctl::new(&tdb).args(["db", "check"]).run();
}

/// `holds expire` killed while it waits for a title's lock leaves every hold as it was; the
/// rerun expires them.
#[test]
fn a_killed_expiry_changes_nothing_and_the_rerun_finishes_it() {
    use libcore::circulation::{self, LoanRef};
    use libcore::holds;
    let tdb = TestDb::new();
    let mut c = tdb.client();
    let admin = admin(&mut c);
    let past = |days: i64| libcore::actor::Ctx {
        at: Some(chrono::Utc::now() - chrono::Duration::days(days)),
        ..admin.clone()
    };
    let book = add_book(&mut c, 1, 1);
    for email in ["m0@example.org", "m1@example.org"] {
        libcore::members::add_member(
            &mut c,
            &past(60),
            &libcore::members::NewMember {
                name: email.into(),
                email: email.into(),
                phone: None,
                role: Some("member".into()),
                category: Some("public".into()),
            },
        )
        .unwrap();
    }
    let loan = circulation::borrow(&mut c, &past(30), "m0@example.org", &book).unwrap();
    let hold = holds::place(&mut c, &past(29), "m1@example.org", &book).unwrap();
    circulation::return_loan(&mut c, &past(20), &LoanRef::Id(loan.id)).unwrap();
    let status = |c: &mut postgres::Client| -> String {
        c.query_one("SELECT status FROM hold WHERE id = $1", &[&hold.id])
            .unwrap()
            .get(0)
    };
    assert_eq!(status(&mut c), "ready");
    // Another transaction holds the title's row: the expiry waits on it.
    let mut blocker = tdb.client();
    let mut tx = blocker.transaction().unwrap();
    tx.execute("SELECT 1 FROM book WHERE isbn = $1 FOR UPDATE", &[&book])
        .unwrap();
    let today = chrono::Utc::now().date_naive().to_string();
    let mut child = spawn(&tdb, &["holds", "expire", "--as-of", &today]);
    let pid = blocked_backend(&mut c, "holds_expire");
    child.kill().unwrap();
    child.wait().unwrap();
    tx.rollback().unwrap();
    // The orphaned server session ends without a commit.
    until_gone(&mut c, pid);
    assert_eq!(status(&mut c), "ready", "a killed expiry changed nothing");
    let expired: i64 = c
        .query_one(
            "SELECT count(*) FROM audit_log WHERE action = 'hold.expire'",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(expired, 0);
    let preview = Libctl::new(&tdb)
        .args([
            "holds",
            "expire",
            "--as-of",
            &today,
            "--dry-run",
            "--format",
            "json",
        ])
        .run()
        .json();
    assert_eq!(
        (preview["expired"].clone(), preview["dry_run"].clone()),
        (1.into(), true.into())
    );
    assert_eq!(status(&mut c), "ready", "a dry run keeps nothing");
    let rerun = Libctl::new(&tdb)
        .args(["holds", "expire", "--as-of", &today, "--format", "json"])
        .run()
        .json();
    assert_eq!(rerun["expired"], 1);
    assert_eq!(status(&mut c), "expired");
    Libctl::new(&tdb).args(["db", "check"]).run();
}
