//! The full nightly through the binary (issue 25): `lost`, `lost auto`, `claim-returned`, the
//! ledger in `fines show`, the new `policy set` flags, one step on its own, and a pipeline
//! killed with SIGKILL in the middle of its lost step that a re-run finishes.

use chrono::{Duration, Utc};
use libcore::actor::Ctx;
use libcore::circulation;
use postgres::Client;

use crate::support::*;
use crate::util::*;

/// A public member who joined 200 days ago and borrowed book `n` `days` ago.
fn borrowed(c: &mut Client, email: &str, n: u32, days: i64) -> circulation::Loan {
    let admin = admin(c);
    let joined = Ctx {
        at: Some(Utc::now() - Duration::days(200)),
        ..admin.clone()
    };
    libcore::members::add_member(
        c,
        &joined,
        &libcore::members::NewMember {
            name: email.into(),
            email: email.into(),
            phone: None,
            role: Some("member".into()),
            category: Some("public".into()),
        },
    )
    .unwrap();
    let book = add_book(c, n, 1);
    let at = Ctx {
        at: Some(Utc::now() - Duration::days(days)),
        ..admin
    };
    circulation::borrow(c, &at, email, &book).unwrap()
}

fn today() -> String {
    Utc::now().date_naive().to_string()
}

#[test]
fn lost_claims_and_the_ledger_through_the_binary() {
    let tdb = TestDb::new();
    let mut c = tdb.client();
    let desk = add_member(&mut c, "desk@example.org", "librarian");
    let loan = borrowed(&mut c, "r@example.org", 1, 80);
    let barcode = loan.barcode.clone().unwrap();

    let rule = Libctl::new(&tdb)
        .actor(ADMIN)
        .args([
            "policy",
            "set",
            "--category",
            "public",
            "--processing-fee-cents",
            "700",
            "--lost-after-days",
            "45",
            "--lost-refund-on-return",
            "true",
            "--max-claims-returned",
            "1",
            "--auto-renew",
            "false",
            "--format",
            "json",
        ])
        .run()
        .json();
    assert_eq!(
        (
            rule["processing_fee_cents"].clone(),
            rule["lost_after_days"].clone(),
            rule["max_claims_returned"].clone()
        ),
        (700.into(), 45.into(), 1.into())
    );
    Libctl::new(&tdb)
        .actor(ADMIN)
        .args(["policy", "set", "--default-replacement-cents", "2200"])
        .run();
    Libctl::new(&tdb)
        .args(["policy", "show"])
        .stdout_contains("default replacement price: 2200 cents")
        .run();
    Libctl::new(&tdb)
        .actor(ADMIN)
        .args([
            "policy",
            "set",
            "--category",
            "public",
            "--lost-after-days=-1",
        ])
        .status(7)
        .run();

    let lost = Libctl::new(&tdb)
        .actor(&desk)
        .args(["lost", "--item", &barcode, "--format", "json"])
        .run()
        .json();
    assert_eq!(
        (
            lost["fine_cents"].clone(),
            lost["replacement_cents"].clone(),
            lost["processing_fee_cents"].clone()
        ),
        (2000.into(), 2200.into(), 700.into())
    );
    let account = Libctl::new(&tdb)
        .actor(&desk)
        .args([
            "fines",
            "show",
            "--member",
            "r@example.org",
            "--format",
            "json",
        ])
        .run()
        .json();
    assert_eq!(account["balance_cents"], 4900);
    assert_eq!(account["by_kind"]["lost_item"], 2200);
    assert_eq!(account["by_kind"]["processing_fee"], 700);
    assert_eq!(account["by_kind"]["overdue_fine"], 2000);
    assert_eq!(account["entries"].as_array().unwrap().len(), 3);
    // The table lists the entries by kind.
    Libctl::new(&tdb)
        .actor(&desk)
        .args(["fines", "show", "--member", "r@example.org"])
        .stdout_contains("processing_fee")
        .run();
    // Scanned back in: found, refunded.
    let back = Libctl::new(&tdb)
        .actor(&desk)
        .args(["return", "--item", &barcode, "--format", "json"])
        .run()
        .json();
    assert_eq!(back["end_state"], "lost");
    assert_eq!(back["found"]["refund_cents"], 2200);

    // Claims: one allowed, the second refused (exit 4) until an override is approved.
    let first = borrowed(&mut c, "s@example.org", 2, 3);
    let (admin, third) = (admin(&mut c), add_book(&mut c, 3, 1));
    let second = circulation::borrow(&mut c, &admin, "s@example.org", &third).unwrap();
    Libctl::new(&tdb)
        .actor(&desk)
        .args(["claim-returned", "--loan", &first.id.to_string()])
        .run();
    Libctl::new(&tdb)
        .actor(&desk)
        .args([
            "claim-returned",
            "--item",
            second.barcode.as_deref().unwrap(),
        ])
        .status(4)
        .stderr_contains("error[claims_limit_reached]")
        .run();
    let request = Libctl::new(&tdb)
        .actor(&desk)
        .args([
            "request",
            "override",
            "--member",
            "s@example.org",
            "--loan",
            &second.id.to_string(),
            "--reason",
            "found on the trolley",
            "--format",
            "json",
        ])
        .run()
        .json();
    Libctl::new(&tdb)
        .actor(ADMIN)
        .args(["approve", request["id"].as_str().unwrap()])
        .run();
    let status: String = c
        .query_one(
            "SELECT i.status FROM item i WHERE i.barcode = $1",
            &[&second.barcode.as_deref().unwrap()],
        )
        .unwrap()
        .get(0);
    assert_eq!(status, "missing");
    Libctl::new(&tdb).args(["db", "check"]).run();
}

#[test]
fn lost_auto_and_the_lost_step_guard_the_catalogue() {
    let tdb = TestDb::new();
    let mut c = tdb.client();
    for n in 0..3 {
        borrowed(&mut c, &format!("r{n}@example.org"), n + 1, 90);
    }
    let today = today();
    let dry = Libctl::new(&tdb)
        .args([
            "lost",
            "auto",
            "--as-of",
            &today,
            "--dry-run",
            "--format",
            "json",
        ])
        .run()
        .json();
    assert_eq!(
        (dry["declared"].clone(), dry["dry_run"].clone()),
        (3.into(), true.into())
    );
    assert_eq!(dry["loans"].as_array().unwrap().len(), 3);
    Libctl::new(&tdb)
        .args(["lost", "auto", "--as-of", &today, "--max-items", "2"])
        .status(4)
        .stderr_contains("error[too_many_items]")
        .run();
    // The same guard in the pipeline: the step fails, the steps before it stay done.
    let metrics = tempfile::tempdir().unwrap();
    let prom = metrics.path().join("libctl.prom");
    Libctl::new(&tdb)
        .args([
            "nightly",
            "--as-of",
            &today,
            "--max-lost-items",
            "2",
            "--metrics-file",
        ])
        .arg_path(&prom)
        .status(4)
        .stderr_contains("error[too_many_items]")
        .run();
    let lost: i64 = c
        .query_one("SELECT count(*) FROM loan WHERE end_state = 'lost'", &[])
        .unwrap()
        .get(0);
    assert_eq!(lost, 0);
    let assessed: i64 = c
        .query_one(
            "SELECT count(*) FROM loan WHERE fine_assessed_on = $1::date",
            &[&Utc::now().date_naive()],
        )
        .unwrap()
        .get(0);
    assert_eq!(assessed, 3, "the accrual before the lost step stayed done");
    assert!(std::fs::read_to_string(&prom)
        .unwrap()
        .contains("libctl_nightly_success 0"));
    // One step on its own, as a dry run, then the pipeline with the default limit.
    let step = Libctl::new(&tdb)
        .args([
            "nightly",
            "lost",
            "--as-of",
            &today,
            "--dry-run",
            "--format",
            "json",
        ])
        .run()
        .json();
    assert_eq!(step["loans_lost"], 3);
    assert_eq!(step["steps"].as_array().unwrap().len(), 1);
    let run = Libctl::new(&tdb)
        .args([
            "nightly",
            "--as-of",
            &today,
            "--summary-json",
            "--metrics-file",
        ])
        .arg_path(&prom)
        .run()
        .json();
    assert_eq!(run["loans_lost"], 3);
    let text = std::fs::read_to_string(&prom).unwrap();
    assert!(
        text.contains("libctl_nightly_step_rows{step=\"lost\"} 3"),
        "{text}"
    );
    Libctl::new(&tdb)
        .args(["nightly", "frobnicate", "--as-of", &today])
        .status(7)
        .run();
    Libctl::new(&tdb).args(["db", "check"]).run();
}

/// SIGKILL while the lost step waits for a member's row: the steps before it stay done, no
/// loan is half declared, and the re-run finishes the night.
#[test]
fn a_nightly_killed_in_its_lost_step_is_finished_by_the_rerun() {
    let tdb = TestDb::new();
    let mut c = tdb.client();
    for n in 0..3 {
        borrowed(&mut c, &format!("r{n}@example.org"), n + 1, 90);
    }
    let mut blocker = tdb.client();
    let mut tx = blocker.transaction().unwrap();
    tx.execute(
        "SELECT 1 FROM member WHERE email = 'r1@example.org' FOR UPDATE",
        &[],
    )
    .unwrap();
    let today = today();
    let mut child = spawn(&tdb, &["nightly", "--as-of", &today]);
    let pid = blocked_backend(&mut c, "FOR UPDATE OF m");
    child.kill().unwrap();
    child.wait().unwrap();
    tx.rollback().unwrap();
    until_gone(&mut c, pid);
    let counts = |c: &mut Client| -> (i64, i64, i64, i64) {
        let r = c
            .query_one(
                "SELECT (SELECT count(*) FROM loan WHERE end_state = 'lost'),
                        (SELECT count(*) FROM account_entry),
                        (SELECT count(*) FROM loan WHERE fine_assessed_on = $1::date),
                        (SELECT count(*) FROM nightly_run)",
                &[&Utc::now().date_naive()],
            )
            .unwrap();
        (r.get(0), r.get(1), r.get(2), r.get(3))
    };
    // r0's loan (first in the batch) was declared in the batch that never committed.
    assert_eq!(
        counts(&mut c),
        (0, 0, 3, 0),
        "accrual done, nothing lost, night not finished"
    );
    Libctl::new(&tdb).args(["db", "check"]).run();
    let rerun = Libctl::new(&tdb)
        .args(["nightly", "--as-of", &today, "--summary-json"])
        .run()
        .json();
    assert_eq!(rerun["loans_lost"], 3);
    assert_eq!(counts(&mut c), (3, 6, 3, 1));
    let handed: i64 = c
        .query_one(
            "SELECT count(*) FROM notice WHERE kind = 'lost_billed' AND NOT pending_handover",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(handed, 3, "the re-run handed the lost bills over");
    Libctl::new(&tdb).args(["db", "check"]).run();
}
