//! Audit export and rate limits through the binary, across processes.

use crate::support::*;
use crate::util::*;

#[test]
fn export_round_trips_through_csv() {
    let tdb = TestDb::new();
    let mut c = tdb.client();
    let m = add_member(&mut c, "reader@example.org", "member");
    let b = add_book(&mut c, 1, 1);
    Libctl::new(&tdb)
        .actor(ADMIN)
        .args(["borrow", "--member", &m, "--book", &b])
        .run();
    Libctl::new(&tdb)
        .actor(ADMIN)
        .args(["borrow", "--member", &m, "--book", &b])
        .status(4)
        .run();
    let out = Libctl::new(&tdb)
        .args(["audit", "export", "--format", "csv"])
        .run();
    let text = out.stdout();
    let mut reader = csv::Reader::from_reader(text.as_bytes());
    let exported: Vec<csv::StringRecord> = reader.records().map(|r| r.unwrap()).collect();
    let db_rows = c
        .query(
            "SELECT id::text, actor, action, outcome, details FROM audit_log ORDER BY at, id",
            &[],
        )
        .unwrap();
    assert_eq!(exported.len(), db_rows.len());
    for (record, row) in exported.iter().zip(&db_rows) {
        assert_eq!(&record[0], row.get::<_, &str>(0));
        assert_eq!(&record[3], row.get::<_, &str>(1));
        assert_eq!(&record[5], row.get::<_, &str>(2));
        assert_eq!(&record[8], row.get::<_, &str>(3));
        let details: serde_json::Value = serde_json::from_str(&record[9]).unwrap();
        assert_eq!(details, row.get::<_, serde_json::Value>(4));
    }
    // `--for-actor` filters; `--actor` is who is acting, wherever it is typed.
    let only = Libctl::new(&tdb)
        .args([
            "audit",
            "export",
            "--for-actor",
            ADMIN,
            "--action",
            "loan.borrow",
            "--format",
            "ndjson",
        ])
        .run();
    assert_eq!(only.stdout().lines().count(), 2);
    let all_borrows = Libctl::new(&tdb)
        .args([
            "--actor",
            ADMIN,
            "audit",
            "export",
            "--action",
            "loan.borrow",
            "--format",
            "ndjson",
        ])
        .run();
    let every: i64 = tdb
        .client()
        .query_one(
            "SELECT count(*) FROM audit_log WHERE action = 'loan.borrow'",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(all_borrows.stdout().lines().count() as i64, every);
    Libctl::new(&tdb)
        .actor(&m)
        .args(["audit", "export"])
        .status(5)
        .run();
}

#[test]
fn processes_hammering_one_member_share_one_budget() {
    let tdb = TestDb::new();
    let mut c = tdb.client();
    Libctl::new(&tdb)
        .actor(ADMIN)
        .args([
            "rate-limit",
            "policy",
            "set",
            "--role",
            "member",
            "--action-group",
            "borrow",
            "--limit",
            "4",
            "--window",
            "1h",
            "--burst",
            "4",
        ])
        .run();
    Libctl::new(&tdb)
        .actor(ADMIN)
        .args(["policy", "set", "--category", "public", "--max-loans", "20"])
        .run();
    let m = add_member(&mut c, "eager@example.org", "member");
    let books: Vec<String> = (0..9).map(|n| add_book(&mut c, n, 1)).collect();
    let children: Vec<_> = books
        .iter()
        .map(|b| {
            std::process::Command::new(assert_cmd::cargo::cargo_bin("libctl"))
                .env("DATABASE_URL", &tdb.url)
                .env("LIBCTL_ACTOR", &m)
                .args(["borrow", "--member", &m, "--book", b])
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .spawn()
                .unwrap()
        })
        .collect();
    let codes: Vec<i32> = children
        .into_iter()
        .map(|mut ch| ch.wait().unwrap().code().unwrap())
        .collect();
    assert_eq!(codes.iter().filter(|c| **c == 0).count(), 4, "{codes:?}");
    assert_eq!(codes.iter().filter(|c| **c == 6).count(), 5, "{codes:?}");
    let status = Libctl::new(&tdb)
        .args([
            "rate-limit",
            "status",
            "--for-actor",
            &m,
            "--format",
            "json",
        ])
        .run()
        .json();
    let borrow = status
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["action_group"] == "borrow")
        .unwrap();
    assert_eq!(borrow["remaining"], 0);
    let audit = Libctl::new(&tdb)
        .args(["rate-limit", "audit", "--format", "json"])
        .run()
        .json();
    assert_eq!(audit[0]["actor"], m.as_str());
    assert_eq!(audit[0]["violations"], 5);
    let run = Libctl::new(&tdb)
        .args(["rate-limit", "audit", "--fail-on-violation"])
        .status(4)
        .run();
    assert!(run.stderr().contains("error[rate_limit_violations]"));
    let policies = Libctl::new(&tdb)
        .args(["rate-limit", "policy", "list", "--format", "json"])
        .run()
        .json();
    assert_eq!(policies.as_array().unwrap().len(), 2);
    Libctl::new(&tdb)
        .actor(ADMIN)
        .args([
            "rate-limit",
            "policy",
            "set",
            "--role",
            "member",
            "--action-group",
            "borrow",
            "--limit",
            "4",
            "--window",
            "1 week",
        ])
        .status(7)
        .run();
    Libctl::new(&tdb).args(["db", "check"]).run();
}

#[test]
fn nightly_seals_the_log_and_verify_finds_a_changed_day_with_exit_8() {
    let tdb = TestDb::new();
    let dir = tempfile::tempdir().unwrap();
    // Yesterday's work, recorded yesterday.
    let yesterday = chrono::Utc::now() - chrono::Duration::days(1);
    tdb.client()
        .execute(
            "INSERT INTO audit_log (id, at, recorded_at, actor, actor_role, action, entity_type, outcome)
             VALUES ($1, $2, $2, 'desk@example.org', 'librarian', 'loan.borrow', 'loan', 'ok')",
            &[&libcore::ids::new_id(yesterday), &yesterday],
        )
        .unwrap();
    let metrics = dir.path().join("libctl.prom");
    let today = chrono::Utc::now().date_naive().to_string();
    let run = Libctl::new(&tdb)
        .args([
            "nightly",
            "--as-of",
            &today,
            "--summary-json",
            "--metrics-file",
        ])
        .arg_path(&metrics)
        .run()
        .json();
    let digest = run["last_seal"]["digest"].as_str().unwrap().to_string();
    assert!(run["days_sealed"].as_u64().unwrap() >= 1, "{run}");
    let text = std::fs::read_to_string(&metrics).unwrap();
    assert!(text.contains(&format!("digest=\"{digest}\"}} 1")), "{text}");
    // The seals, kept outside the database, and a verify against them.
    let kept = dir.path().join("seals.csv");
    let csv = Libctl::new(&tdb)
        .args(["audit", "seals", "--format", "csv"])
        .run()
        .stdout();
    std::fs::write(&kept, csv).unwrap();
    Libctl::new(&tdb)
        .args(["audit", "verify", "--seals"])
        .arg_path(&kept)
        .stdout_contains("compared_outside")
        .run();
    // A superuser rewrites yesterday's row: verify names the day and exits 8.
    tdb.client()
        .batch_execute(
            "ALTER TABLE audit_log DISABLE TRIGGER audit_log_no_update_delete;
             UPDATE audit_log SET actor = 'else@example.org' WHERE actor = 'desk@example.org';
             ALTER TABLE audit_log ENABLE TRIGGER audit_log_no_update_delete;",
        )
        .unwrap();
    let day = run["last_seal"]["day"].as_str().unwrap().to_string();
    Libctl::new(&tdb)
        .args(["audit", "verify", "--seals"])
        .arg_path(&kept)
        .status(8)
        .stderr_contains("error[integrity_check_failed]")
        .stderr_contains(&format!("first day that no longer matches: {day}"))
        .run();
}
