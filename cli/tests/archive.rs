//! `libctl archive` through the binary (SPEC §17): counting before moving, who may, a kill
//! mid-run and its rerun, and backups that carry every month of history back through restore.

use std::time::{Duration, Instant};

use crate::support::*;
use crate::util::*;

const CUT: &str = "2025-11-01";

/// The loans that ended before the cut.
fn eligible(db: &TestDb) -> i64 {
    count(
        db,
        &format!("SELECT count(*) FROM loan WHERE returned_at < '{CUT}'"),
    )
}

/// `archive loans --ended-before CUT --confirm` as `system`: its JSON.
fn archive_loans(db: &TestDb) -> serde_json::Value {
    Libctl::new(db)
        .actor("system")
        .args([
            "archive",
            "loans",
            "--ended-before",
            CUT,
            "--confirm",
            "--format",
            "json",
        ])
        .run()
        .json()
}

/// What no move may change: loans and notices (hot plus history), and every member's balance.
fn totals(db: &TestDb) -> (i64, i64, i64) {
    (
        count(db, "SELECT count(*) FROM loan_all"),
        count(
            db,
            "SELECT (SELECT count(*) FROM notice) + (SELECT count(*) FROM notice_history)",
        ),
        count(
            db,
            "SELECT coalesce(sum(member_balance_cents(id)), 0)::bigint FROM member",
        ),
    )
}

#[test]
fn archive_counts_first_and_moves_only_for_admins_and_system() {
    let db = seeded_tiny();
    let eligible = eligible(&db);
    assert!(
        eligible > 50,
        "the tiny seed has history before the cut: {eligible}"
    );
    let dry = Libctl::new(&db)
        .actor("system")
        .args([
            "archive",
            "loans",
            "--ended-before",
            CUT,
            "--format",
            "json",
        ])
        .stderr_contains("add --confirm to move them")
        .run()
        .json();
    assert_eq!(
        (dry["rows"].as_i64(), dry["moved"].as_bool()),
        (Some(eligible), Some(false))
    );
    let denied = Libctl::new(&db)
        .actor("librarian1@library.test")
        .args(["archive", "loans", "--ended-before", CUT, "--confirm"])
        .status(5)
        .run();
    assert!(
        denied.stderr().contains("permission_denied"),
        "{}",
        denied.stderr()
    );
    Libctl::new(&db)
        .actor("system")
        .args([
            "archive",
            "loans",
            "--ended-before",
            "2999-01-01",
            "--confirm",
        ])
        .status(7)
        .stderr_contains("invalid_date")
        .run();
    assert_eq!(count(&db, "SELECT count(*) FROM loan_history"), 0);
    let before = totals(&db);
    let moved = archive_loans(&db);
    assert_eq!(moved["rows"].as_i64(), Some(eligible));
    assert_eq!(totals(&db), before);
    let listed = Libctl::new(&db)
        .actor(ADMIN)
        .args(["archive", "list", "--format", "json"])
        .run()
        .json();
    let in_partitions: i64 = listed
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["table"] == "loan_history")
        .map(|p| p["rows"].as_i64().unwrap())
        .sum();
    assert_eq!(in_partitions, eligible);
    Libctl::new(&db).actor(ADMIN).args(["db", "check"]).run();
}

/// Killed between batches (or inside one), a run leaves every loan whole, in one place or the
/// other; the rerun moves exactly what is left.
#[test]
fn a_killed_archive_leaves_every_loan_whole_and_the_rerun_finishes() {
    let db = seeded_tiny();
    let eligible = eligible(&db);
    let before = totals(&db);
    let mut child = spawn(
        &db,
        &[
            "--actor",
            "system",
            "archive",
            "loans",
            "--ended-before",
            CUT,
            "--confirm",
            "--batch",
            "1",
        ],
    );
    let started = Instant::now();
    let at_kill = loop {
        let moved = count(&db, "SELECT count(*) FROM loan_history");
        if moved > 0 {
            child.kill().unwrap();
            break moved;
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "the archive never started"
        );
        std::thread::sleep(Duration::from_millis(5));
    };
    child.wait().unwrap();
    let mut c = db.client();
    // Its backend ends without committing the batch it was in.
    for _ in 0..200 {
        let others = count(
            &db,
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()
               AND pid <> pg_backend_pid() AND query LIKE '%libctl_archive_loans%' AND state <> 'idle'",
        );
        if others == 0 {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let moved = count(&db, "SELECT count(*) FROM loan_history");
    assert!(
        moved >= at_kill && moved < eligible,
        "killed mid-run: {moved} of {eligible} moved"
    );
    assert_eq!(totals(&db), before, "nothing half-moved");
    assert_invariants(&mut c);
    let rerun = archive_loans(&db);
    assert_eq!(rerun["rows"].as_i64(), Some(eligible - moved));
    assert_eq!(count(&db, "SELECT count(*) FROM loan_history"), eligible);
    assert_eq!(totals(&db), before);
    assert_invariants(&mut c);
}

#[test]
fn backups_carry_each_month_of_history_and_restore_attaches_it_with_its_indexes() {
    let db = seeded_tiny();
    for (what, flag) in [("loans", "--ended-before"), ("audit", "--before")] {
        Libctl::new(&db)
            .actor("system")
            .args(["archive", what, flag, CUT, "--confirm"])
            .run();
    }
    let root = tempfile::tempdir().unwrap();
    Libctl::new(&db)
        .args(["backup", "create", "--jobs", "2", "--name", "b", "--dir"])
        .arg_path(root.path())
        .run();
    let dir = root.path().join("b");
    let manifest: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("manifest.json")).unwrap()).unwrap();
    let tables: Vec<&str> = manifest["tables"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["table"].as_str().unwrap())
        .collect();
    for parent in libcore::db::PARTITIONED {
        assert!(
            !tables.contains(parent),
            "{parent} is carried by its partitions"
        );
    }
    let leaves = tables
        .iter()
        .filter(|t| libcore::db::partition_of(t).is_some())
        .count();
    assert!(leaves >= 6, "{tables:?}");
    let target = format!("{}_restored", db.url);
    struct Dropper(String);
    impl Drop for Dropper {
        fn drop(&mut self) {
            let _ = libcore::db::drop_database_if_exists(&self.0);
        }
    }
    let _cleanup = Dropper(target.clone());
    Libctl::new(&db)
        .actor(ADMIN)
        .args(["backup", "restore", "--target-url", &target, "--jobs", "2"])
        .arg_path(&dir)
        .run();
    let mut restored = postgres::Client::connect(&target, postgres::NoTls).unwrap();
    let mut source = db.client();
    for sql in [
        "SELECT count(*) FROM loan_history",
        "SELECT count(*) FROM audit_history",
        "SELECT count(*) FROM notice_history",
        "SELECT count(*) FROM pg_inherits WHERE inhparent = 'loan_history'::regclass",
        "SELECT count(*) FROM pg_inherits WHERE inhparent = 'audit_history'::regclass",
        // Every partition has each of its parent's indexes, all valid.
        "SELECT count(*) FROM pg_inherits i JOIN pg_index x ON x.indrelid = i.inhrelid
         WHERE i.inhparent IN ('loan_history'::regclass, 'audit_history'::regclass) AND x.indisvalid",
        "SELECT count(*) FROM pg_index WHERE NOT indisvalid",
        "SELECT coalesce(sum(member_balance_cents(id)), 0)::bigint FROM member",
    ] {
        let a: i64 = source.query_one(sql, &[]).unwrap().get(0);
        let b: i64 = restored.query_one(sql, &[]).unwrap().get(0);
        assert_eq!(a, b, "{sql}");
    }
    let unattached: i64 = restored
        .query_one(
            "SELECT count(*) FROM pg_class c WHERE c.relname ~ '_history_y[0-9]{4}m[0-9]{2}$'
               AND c.relkind = 'r' AND NOT c.relispartition",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(unattached, 0, "every month is attached again");
    Libctl::with_url(&target)
        .actor(ADMIN)
        .args(["db", "check"])
        .run();
    Libctl::with_url(&target)
        .actor(ADMIN)
        .args(["audit", "verify"])
        .run();
}

/// A seed with history writes each old loan and audit row straight into its month, and the
/// library it makes is the one the same seed writes whole: the same loans, the same fines.
#[test]
fn a_seed_with_history_fills_the_months_and_matches_the_whole_seed() {
    let db = TestDb::new();
    let seeded = Libctl::new(&db)
        .args([
            "seed",
            "--scenario",
            "tiny_consortium",
            "--as-of",
            "2026-01-15",
            "--format",
            "json",
        ])
        .run()
        .json();
    let rows_of = |table: &str| {
        seeded["tables"]
            .as_array()
            .unwrap()
            .iter()
            .find(|t| t["table"] == table)
            .and_then(|t| t["rows"].as_i64())
            .unwrap_or(0)
    };
    assert!(
        rows_of("loan_history") > 500 && rows_of("audit_history") > 100,
        "{seeded}"
    );
    assert_eq!(
        count(&db, "SELECT count(*) FROM loan_history"),
        rows_of("loan_history")
    );
    assert_eq!(
        count(
            &db,
            "SELECT count(*) FROM loan_history WHERE returned_at >= '2024-01-15'"
        ),
        0,
        "only loans ended 24 months before the as-of day"
    );
    assert_eq!(
        count(
            &db,
            "SELECT count(*) FROM loan WHERE returned_at < '2024-01-15'"
        ),
        0,
        "and every one of them"
    );
    assert_eq!(
        count(&db, "SELECT count(*) FROM pg_index WHERE NOT indisvalid"),
        0
    );
    Libctl::new(&db).actor(ADMIN).args(["db", "check"]).run();
    // The same seed as CSV files holds every table whole.
    let dir = tempfile::tempdir().unwrap();
    Libctl::new(&db)
        .args([
            "seed",
            "--scenario",
            "tiny_consortium",
            "--as-of",
            "2026-01-15",
            "--csv",
        ])
        .arg_path(dir.path())
        .run();
    let mut loans = csv::Reader::from_path(dir.path().join("loan.csv")).unwrap();
    let headers = loans.headers().unwrap().clone();
    let fine = headers.iter().position(|h| h == "fine_cents").unwrap();
    let (mut n, mut fines) = (0i64, 0i64);
    for record in loans.records() {
        let record = record.unwrap();
        n += 1;
        fines += record[fine].parse::<i64>().unwrap();
    }
    assert_eq!(n, count(&db, "SELECT count(*) FROM loan_all"));
    assert_eq!(
        fines,
        count(&db, "SELECT sum(fine_cents)::bigint FROM loan_all")
    );
    assert_eq!(
        count(&db, "SELECT sum(fine_cents)::bigint FROM loan_history"),
        count(
            &db,
            "SELECT sum(fine_cents)::bigint FROM member_archived_fines"
        ),
        "the archived fines are the history's"
    );
}
