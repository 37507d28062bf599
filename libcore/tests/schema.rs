//! Migrations, the schema gate, the append-only audit log and `db check`.

use crate::support::*;
use libcore::db;

#[test]
fn migrate_is_idempotent_and_the_gate_passes() {
    let tdb = TestDb::new();
    let mut client = tdb.client();
    assert_eq!(db::migrate(&mut client).unwrap(), Vec::<i32>::new());
    db::require_current_schema(&mut client).unwrap();
    let status = db::status(&mut client).unwrap();
    assert_eq!(status.state, "ok");
    assert_eq!(status.schema_version, Some(db::latest_version()));
}

#[test]
fn the_table_lists_that_status_and_backups_use_name_every_table() {
    let tdb = TestDb::new();
    let mut client = tdb.client();
    let mut in_schema: Vec<String> = client
        .query(
            "SELECT tablename::text FROM pg_tables
             WHERE schemaname = current_schema() AND tablename <> 'refinery_schema_history'",
            &[],
        )
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    in_schema.sort();
    let mut listed: Vec<String> = db::TABLES
        .iter()
        .chain(db::DERIVED_TABLES)
        .map(|t| t.to_string())
        .collect();
    listed.sort();
    assert_eq!(listed, in_schema);
}

#[test]
fn an_uninitialised_or_outdated_database_is_refused_with_exit_10() {
    let tdb = TestDb::new();
    let mut client = tdb.client();
    client
        .batch_execute("DELETE FROM refinery_schema_history WHERE version = (SELECT max(version) FROM refinery_schema_history)")
        .unwrap();
    let err = db::require_current_schema(&mut client).unwrap_err();
    assert_eq!(err.exit_code(), 10);
    assert!(err.to_string().contains("libctl db migrate"), "{err}");

    client
        .batch_execute("DROP TABLE refinery_schema_history")
        .unwrap();
    let err = db::require_current_schema(&mut client).unwrap_err();
    assert_eq!(err.exit_code(), 10);
    assert!(err.to_string().contains("libctl db init"), "{err}");
}

#[test]
fn audit_log_rejects_update_delete_and_truncate_even_for_the_owner() {
    let tdb = TestDb::new();
    let mut client = tdb.client();
    add_member(&mut client, "a@example.org", "member");
    let rows: i64 = client
        .query_one("SELECT count(*) FROM audit_log", &[])
        .unwrap()
        .get(0);
    assert!(rows >= 1);
    for sql in [
        "UPDATE audit_log SET actor = 'x'",
        "DELETE FROM audit_log",
        "TRUNCATE audit_log",
    ] {
        let err = client.batch_execute(sql).unwrap_err();
        assert!(
            err.to_string().contains("append-only") || format!("{err:?}").contains("append-only"),
            "{sql}: {err:?}"
        );
    }
    let after: i64 = client
        .query_one("SELECT count(*) FROM audit_log", &[])
        .unwrap()
        .get(0);
    assert_eq!(rows, after);
}

#[test]
fn db_check_finds_a_broken_invariant() {
    let tdb = TestDb::new();
    let mut client = tdb.client();
    let isbn = add_book(&mut client, 1, 2);
    assert_invariants(&mut client);
    client
        .execute(
            "UPDATE book SET available_copies = 1 WHERE isbn = $1",
            &[&isbn],
        )
        .unwrap();
    let results = db::check(&mut client).unwrap();
    let broken: Vec<_> = results.iter().filter(|r| r.violations > 0).collect();
    assert_eq!(broken.len(), 1);
    assert!(broken[0].invariant.starts_with("book counters"));
    let err = db::fail_on_violations(&results).unwrap_err();
    assert_eq!(err.exit_code(), 8);
    assert_eq!(err.code(), "integrity_check_failed");
}

#[test]
fn the_sql_fine_twin_matches_a_hand_computed_case() {
    let tdb = TestDb::new();
    let mut client = tdb.client();
    client
        .batch_execute("INSERT INTO closed_day (day) VALUES ('2024-02-03'), ('2024-02-04')")
        .unwrap();
    let overdue: i32 = client
        .query_one(
            "SELECT overdue_days('2024-02-01T23:59:59Z', '2024-02-06T10:00:00Z', 'UTC')",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(overdue, 3);
    let fine: i64 = client
        .query_one("SELECT fine_cents(100, 2, 2000, 3)", &[])
        .unwrap()
        .get(0);
    assert_eq!(fine, 300);
}

/// `sql/current/` is what a fresh migration creates. Rewrite it with the command in
/// `libcore::schema::REWRITE_COMMAND` after adding a migration.
#[test]
fn schema_snapshot_matches_the_migrations() {
    let tdb = TestDb::new();
    let mut client = tdb.client();
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../sql/current");
    let write = std::env::var("LIBCTL_WRITE_SCHEMA_SNAPSHOT").is_ok_and(|v| v == "1");
    let mut stale = Vec::new();
    for (name, text) in libcore::schema::snapshot(&mut client).unwrap() {
        let path = dir.join(name);
        if write {
            std::fs::write(&path, &text).unwrap();
        } else if std::fs::read_to_string(&path).ok().as_deref() != Some(text.as_str()) {
            stale.push(name);
        }
    }
    assert!(
        stale.is_empty(),
        "sql/current/{stale:?} no longer match the migrations; rewrite them with `{}`",
        libcore::schema::REWRITE_COMMAND
    );
}

#[test]
fn db_check_finds_a_missing_key_index_or_trigger() {
    let tdb = TestDb::new();
    let mut client = tdb.client();
    let clean = db::check(&mut client).unwrap();
    assert!(clean.iter().all(|r| r.violations == 0), "{clean:?}");
    client
        .batch_execute(
            "ALTER TABLE member DROP CONSTRAINT member_pkey CASCADE;
             DROP INDEX loan_open_due_idx;
             DROP TRIGGER audit_log_no_truncate ON audit_log",
        )
        .unwrap();
    let results = db::check(&mut client).unwrap();
    let schema = results
        .iter()
        .find(|r| r.invariant.starts_with("the schema"))
        .expect("a schema invariant");
    assert!(schema.violations > 0, "{results:?}");
    let text = schema.examples.join("\n");
    assert!(text.contains("member_pkey"), "{text}");
    assert!(
        text.contains("FOREIGN KEY"),
        "a dropped key takes its foreign keys: {text}"
    );
    assert!(text.contains("loan_open_due_idx"), "{text}");
    assert!(text.contains("audit_log_no_truncate"), "{text}");
    assert_eq!(db::fail_on_violations(&results).unwrap_err().exit_code(), 8);
}

/// A database whose settings were emptied (what an old restore, killed part-way, left) gets a
/// status and a clear refusal, never a panic.
#[test]
fn status_of_a_database_without_its_settings_does_not_panic() {
    let tdb = TestDb::new();
    let mut client = tdb.client();
    client.batch_execute("DELETE FROM library_setting").unwrap();
    let err = libcore::calendar::library_timezone(&mut client).unwrap_err();
    assert_eq!(err.exit_code(), 10, "{err}");
    assert_eq!(db::status(&mut client).unwrap().state, "ok");
    assert_eq!(
        libcore::policy::show(&mut client).unwrap_err().exit_code(),
        10
    );
    client
        .batch_execute("INSERT INTO library_setting (key, value) VALUES ('incomplete', 'restore')")
        .unwrap();
    let status = db::status(&mut client).unwrap();
    assert_eq!(status.state, "incomplete (restore interrupted)");
}

/// The staleness check can fail: a function changed by a migration no longer matches.
#[test]
fn a_changed_function_makes_the_snapshot_stale() {
    let tdb = TestDb::new();
    let mut client = tdb.client();
    client
        .batch_execute(
            "CREATE OR REPLACE FUNCTION library_timezone() RETURNS text
             LANGUAGE sql STABLE AS $$ SELECT 'UTC'::text $$",
        )
        .unwrap();
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../sql/current");
    let snapshot = libcore::schema::snapshot(&mut client).unwrap();
    let (_, functions) = snapshot
        .iter()
        .find(|(name, _)| *name == "functions.sql")
        .unwrap();
    assert_ne!(
        functions,
        &std::fs::read_to_string(dir.join("functions.sql")).unwrap()
    );
}
