//! Reads on a streaming replica (SPEC §17, issue 26), against a real standby of a private
//! primary (`support::standby`): read-only commands read there when it passes its checks,
//! fall back to the primary with one warning (or exit 10 with `--replica-only`) when it lags
//! or its schema differs, and writes never go there.

use postgres::{Client, NoTls};
use serde_json::Value;

use crate::support::standby;
use crate::support::*;
use crate::util::*;

/// The source line a read-only command writes on stderr in the JSON formats.
fn source_of(run: &Run) -> Value {
    let line = run
        .stderr()
        .lines()
        .find(|l| l.contains("\"source\""))
        .unwrap_or_else(|| panic!("no source line in {:?}", run.stderr()))
        .to_string();
    serde_json::from_str(&line).unwrap()
}

fn books(run: &Run) -> i64 {
    run.json()["books"].as_i64().unwrap()
}

#[test]
fn read_only_commands_read_from_a_replica_that_passes_its_checks() {
    let pair = standby::pair();
    let _only_me = pair.exclusive();
    let db = pair.database();
    let (primary, replica) = (pair.primary_url(&db), pair.standby_url(&db));
    let mut c = Client::connect(&primary, NoTls).unwrap();
    add_book(&mut c, 1, 2);
    pair.caught_up();

    let run = Libctl::with_url(&primary)
        .args([
            "--replica-url",
            &replica,
            "report",
            "summary",
            "--format",
            "json",
        ])
        .stderr_contains("\"source\":\"replica\"")
        .run();
    assert_eq!(books(&run), 1);
    let source = source_of(&run);
    assert_eq!(source["source"], "replica");
    assert!(source["replica_lag_seconds"].as_f64().unwrap() <= 60.0);
    // The same through the environment, in a table, and for the other read-only commands.
    Libctl::with_url(&primary)
        .env("LIBCTL_REPLICA_URL", &replica)
        .args(["report", "inventory"])
        .stderr_contains("read from the replica")
        .run();
    for args in [
        vec!["db", "check", "--format", "json"],
        vec!["holds", "shelf", "--format", "json"],
        vec!["audit", "export", "--format", "json"],
        vec!["rate-limit", "audit", "--format", "json"],
    ] {
        Libctl::with_url(&primary)
            .actor(ADMIN)
            .args(["--replica-url", &replica])
            .args(args)
            .stderr_contains("\"source\":\"replica\"")
            .run();
    }
    let dir = tempfile::tempdir().unwrap();
    let backup = Libctl::with_url(&primary)
        .args([
            "--replica-url",
            &replica,
            "backup",
            "create",
            "--from-replica",
            "--summary-json",
            "--dir",
        ])
        .arg_path(dir.path())
        .stderr_contains("read from the replica")
        .run()
        .json();
    Libctl::with_url(&primary)
        .args(["backup", "verify", backup["path"].as_str().unwrap()])
        .run();
}

#[test]
fn a_lagging_replica_is_skipped_with_a_warning_or_exit_10_with_replica_only() {
    let pair = standby::pair();
    let _only_me = pair.exclusive();
    let db = pair.database();
    let (primary, replica) = (pair.primary_url(&db), pair.standby_url(&db));
    let mut c = Client::connect(&primary, NoTls).unwrap();
    let mut s = Client::connect(&pair.standby_url("postgres"), NoTls).unwrap();
    s.execute("SELECT pg_wal_replay_pause()", &[]).unwrap();
    add_book(&mut c, 1, 1);
    // The standby has received the new book's WAL but not replayed it.
    let target: String = c
        .query_one("SELECT pg_current_wal_lsn()::text", &[])
        .unwrap()
        .get(0);
    for _ in 0..500 {
        let received: bool = s
            .query_one(
                "SELECT pg_last_wal_receive_lsn() >= $1::text::pg_lsn",
                &[&target],
            )
            .unwrap()
            .get(0);
        if received {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    std::thread::sleep(std::time::Duration::from_millis(300));
    let run = Libctl::with_url(&primary)
        .args([
            "--replica-url",
            &replica,
            "--max-replica-lag",
            "0.1",
            "report",
            "summary",
            "--format",
            "json",
        ])
        .stderr_contains("not reading from the replica")
        .stderr_contains("behind")
        .run();
    assert_eq!(source_of(&run)["source"], "primary");
    assert_eq!(
        books(&run),
        1,
        "the primary has the book the standby has not replayed"
    );
    Libctl::with_url(&primary)
        .args([
            "--replica-url",
            &replica,
            "--max-replica-lag",
            "0.1",
            "--replica-only",
            "report",
            "summary",
        ])
        .status(10)
        .stderr_contains("error[database_unavailable]")
        .run();
    // Within the default limit it is still used, and reads what it has replayed.
    let stale = Libctl::with_url(&primary)
        .args([
            "--replica-url",
            &replica,
            "report",
            "summary",
            "--format",
            "json",
        ])
        .stderr_contains("\"source\":\"replica\"")
        .run();
    assert_eq!(books(&stale), 0);
    s.execute("SELECT pg_wal_replay_resume()", &[]).unwrap();
    pair.caught_up();
}

#[test]
fn a_replica_with_another_schema_is_not_used() {
    let pair = standby::pair();
    let _only_me = pair.exclusive();
    let current = pair.database();
    let old = format!("libctl_r_{}", uuid::Uuid::new_v4().simple());
    let mut admin = Client::connect(&pair.primary_url("postgres"), NoTls).unwrap();
    admin
        .batch_execute(&format!("CREATE DATABASE {old}"))
        .unwrap();
    let mut c = Client::connect(&pair.primary_url(&old), NoTls).unwrap();
    libcore::db::migrate_to(&mut c, 22).unwrap();
    pair.caught_up();
    let run = Libctl::with_url(&pair.primary_url(&current))
        .args([
            "--replica-url",
            &pair.standby_url(&old),
            "report",
            "summary",
            "--format",
            "json",
        ])
        .stderr_contains("schema")
        .run();
    assert_eq!(source_of(&run)["source"], "primary");
    // Nor a primary given as a replica.
    Libctl::with_url(&pair.primary_url(&current))
        .args([
            "--replica-url",
            &pair.primary_url(&current),
            "--replica-only",
            "report",
            "summary",
        ])
        .status(10)
        .stderr_contains("not in recovery")
        .run();
}

#[test]
fn writes_never_go_to_the_replica() {
    let pair = standby::pair();
    let _only_me = pair.exclusive();
    let db = pair.database();
    let (primary, replica) = (pair.primary_url(&db), pair.standby_url(&db));
    let mut c = Client::connect(&primary, NoTls).unwrap();
    let book = add_book(&mut c, 1, 1);
    let member = add_member(&mut c, "r@example.org", "member");
    // A configured replica, even required, changes nothing for a write: it goes to the
    // primary (a standby would refuse it) and says nothing about sources.
    let loan = Libctl::with_url(&primary)
        .env("LIBCTL_REPLICA_URL", &replica)
        .actor(ADMIN)
        .args([
            "--replica-only",
            "borrow",
            "--member",
            &member,
            "--book",
            &book,
            "--format",
            "json",
        ])
        .run()
        .json();
    let on_primary: i64 = c
        .query_one(
            "SELECT count(*) FROM loan WHERE id = $1::text::uuid",
            &[&loan["id"].as_str().unwrap()],
        )
        .unwrap()
        .get(0);
    assert_eq!(on_primary, 1);
    Libctl::with_url(&primary)
        .env("LIBCTL_REPLICA_URL", &replica)
        .args(["nightly", "--summary-json"])
        .run();
    pair.caught_up();
    let mut s = Client::connect(&replica, NoTls).unwrap();
    let replayed: i64 = s
        .query_one("SELECT count(*) FROM nightly_run", &[])
        .unwrap()
        .get(0);
    assert_eq!(
        replayed, 1,
        "the night ran on the primary and reached the standby"
    );
}
