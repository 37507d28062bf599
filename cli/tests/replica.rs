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

/// Waits (up to 20 s) until `sql`, run on `c`, returns a row.
fn until_row(c: &mut Client, sql: &str, what: &str) {
    for _ in 0..400 {
        if c.query_opt(sql, &[]).unwrap().is_some() {
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    panic!("never saw {what}");
}

#[test]
fn a_read_the_standby_cancels_for_a_recovery_conflict_is_read_again_on_the_primary() {
    const TITLES: usize = 60_000;
    let pair = standby::pair();
    let _only_me = pair.exclusive();
    let db = pair.database();
    let (primary, replica) = (pair.primary_url(&db), pair.standby_url(&db));
    let mut c = Client::connect(&primary, NoTls).unwrap();
    // Never-borrowed titles with long names: `inventory` lists them all, tens of megabytes,
    // more than the pipe and the sockets hold, so the standby's backend is left writing to
    // the client with the statement's locks held.
    c.execute(
        "INSERT INTO book (id, isbn, title, author, total_copies, available_copies, created_at)
         SELECT gen_random_uuid(), '978' || lpad(n::text, 10, '0'),
                'Title ' || n || ' ' || repeat('x', 400), 'Author', 0, 0, now()
         FROM generate_series(1, $1::int) n",
        &[&(TITLES as i32)],
    )
    .unwrap();
    pair.caught_up();
    let child = std::process::Command::new(assert_cmd::cargo::cargo_bin("libctl"))
        .env("DATABASE_URL", &primary)
        .env_remove("LIBCTL_ACTOR")
        .env("NO_COLOR", "1")
        .args([
            "--replica-url",
            &replica,
            "report",
            "inventory",
            "--format",
            "ndjson",
        ])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut s = Client::connect(&replica, NoTls).unwrap();
    until_row(
        &mut s,
        "SELECT 1 FROM pg_stat_activity WHERE datname = current_database()
           AND wait_event = 'ClientWrite' AND position('never_lent' in query) > 0",
        "the inventory waiting on its client on the standby",
    );
    // An ACCESS EXCLUSIVE lock on the primary is replayed on the standby, where the reader's
    // lock stands in its way: after max_standby_streaming_delay the standby cancels it.
    c.batch_execute("BEGIN; LOCK TABLE book IN ACCESS EXCLUSIVE MODE; COMMIT;")
        .unwrap();
    let mut monitor = Client::connect(&pair.standby_url("postgres"), NoTls).unwrap();
    until_row(
        &mut monitor,
        "SELECT 1 FROM pg_stat_activity WHERE backend_type = 'startup' AND wait_event_type = 'Lock'",
        "the standby's replay waiting for the reader's lock",
    );
    std::thread::sleep(std::time::Duration::from_millis(1500));
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    // The standby cancels the statement, or, when the reader is still blocked writing to
    // its client, ends the session: either way the read is made again on the primary.
    assert!(
        stderr.contains(
            "the replica cancelled the read (conflict with recovery); reading from the primary"
        ) || stderr
            .contains("the replica ended the session during the read; reading from the primary"),
        "{stderr}"
    );
    let stdout = String::from_utf8(out.stdout).unwrap();
    let lines: Vec<&str> = stdout.lines().collect();
    assert!(
        lines.len() > TITLES,
        "the replica's rows came before the cancel"
    );
    // The read again on the primary is whole: every title once in the last rows.
    let ids: std::collections::HashSet<String> = lines[lines.len() - TITLES..]
        .iter()
        .map(|l| {
            serde_json::from_str::<Value>(l).unwrap()["book_id"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    assert_eq!(ids.len(), TITLES);
    let conflicts: i64 = s
        .query_one(
            "SELECT confl_lock FROM pg_stat_database_conflicts WHERE datname = current_database()",
            &[],
        )
        .unwrap()
        .get(0);
    assert!(
        conflicts >= 1,
        "the standby counted the cancel as a lock conflict"
    );
}
