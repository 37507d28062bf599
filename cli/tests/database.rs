//! `db init | migrate | status | check`, the schema gate, completions and the man page.

use crate::support::*;
use crate::util::*;

#[test]
fn db_init_creates_a_missing_database_migrates_and_makes_an_admin() {
    let name = format!("libctl_cli_init_{}", uuid::Uuid::new_v4().simple());
    let url = format!("{}/{name}", server_url().rsplit_once('/').unwrap().0);
    let report = Libctl::with_url(&url)
        .args([
            "db",
            "init",
            "--admin-email",
            "boss@example.org",
            "--format",
            "json",
        ])
        .run()
        .json();
    assert_eq!(report["database_created"], true);
    assert_eq!(report["admin_created"], "boss@example.org");
    let again = Libctl::with_url(&url)
        .args(["db", "init", "--format", "json"])
        .run()
        .json();
    assert_eq!(again["database_created"], false);
    assert_eq!(again["migrations_applied"], serde_json::json!([]));
    assert_eq!(again["admin_created"], serde_json::Value::Null);
    let status = Libctl::with_url(&url)
        .args(["db", "status", "--format", "json"])
        .run()
        .json();
    assert_eq!(status["state"], "ok");
    assert_eq!(status["policy"]["timezone"], "UTC");
    Libctl::with_url(&url).args(["db", "migrate"]).run();
    libcore::db::drop_database_if_exists(&url).unwrap();
}

#[test]
fn commands_refuse_a_database_without_the_schema_with_exit_10() {
    let tdb = TestDb::new();
    tdb.client()
        .batch_execute("DROP TABLE refinery_schema_history")
        .unwrap();
    let run = Libctl::new(&tdb).args(["book", "list"]).status(10).run();
    assert!(
        run.stderr().contains("error[schema_outdated]"),
        "{}",
        run.stderr()
    );
    assert!(run.stderr().contains("libctl db init"), "{}", run.stderr());
    let missing = Libctl::with_url(&format!(
        "{}/libctl_no_such_db",
        server_url().rsplit_once('/').unwrap().0
    ))
    .args(["book", "list"])
    .status(10)
    .run();
    assert!(
        missing.stderr().contains("libctl db init"),
        "{}",
        missing.stderr()
    );
}

#[test]
fn passwords_never_appear_in_errors() {
    let run = Libctl::with_url("postgres://someone:sup3rsecret@127.0.0.1:1/library")
        .args(["db", "status"])
        .status(10)
        .run();
    assert!(!run.stderr().contains("sup3rsecret"), "{}", run.stderr());
    assert!(run.stderr().contains("***"), "{}", run.stderr());
}

#[test]
fn db_check_passes_then_exits_8_and_lists_a_violation() {
    let tdb = TestDb::new();
    let mut c = tdb.client();
    let isbn = add_book(&mut c, 1, 3);
    Libctl::new(&tdb).args(["db", "check"]).run();
    c.execute(
        "UPDATE book SET available_copies = 2 WHERE isbn = $1",
        &[&isbn],
    )
    .unwrap();
    Libctl::new(&tdb)
        .args(["db", "check"])
        .status(8)
        .stderr_contains("error[integrity_check_failed]")
        .stdout_contains("available_copies")
        .run();
}

#[test]
fn usage_errors_exit_2() {
    let tdb = TestDb::new();
    Libctl::new(&tdb)
        .args(["borrow", "--member", "x"])
        .status(2)
        .run();
    Libctl::new(&tdb).args(["return"]).status(2).run();
    Libctl::new(&tdb).args(["no-such-command"]).status(2).run();
    // Rounds are rounds of the comparison: without it they would be ignored.
    Libctl::new(&tdb)
        .args(["bench", "borrow", "--duration", "1", "--rounds", "2"])
        .status(2)
        .run();
}

#[test]
fn completions_and_man_page_are_generated() {
    let tdb = TestDb::new();
    Libctl::new(&tdb)
        .args(["completions", "bash"])
        .stdout_contains("_libctl()")
        .run();
    Libctl::new(&tdb)
        .args(["man"])
        .stdout_contains(".TH libctl")
        .run();
    Libctl::new(&tdb)
        .args(["--version"])
        .stdout(&format!("libctl {}\n", env!("CARGO_PKG_VERSION")))
        .run();
}

#[test]
fn db_up_starts_a_private_cluster_and_db_down_stops_it() {
    let home = tempfile::tempdir().unwrap();
    // As root the server runs as `postgres`, which must be able to reach the data directory.
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(home.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    let up = Libctl::with_url("postgres://unused@127.0.0.1:1/unused")
        .env("LIBCTL_HOME", home.path().to_str().unwrap())
        .args(["db", "up", "--format", "json"])
        .run()
        .json();
    assert_eq!(up["started"], true, "{up}");
    let server = libcore::cluster::embedded_server_url();
    let mut client =
        postgres::Client::connect(&server, postgres::NoTls).expect("the embedded cluster answers");
    let one: i32 = client.query_one("SELECT 1", &[]).unwrap().get(0);
    assert_eq!(one, 1);
    drop(client);
    let down = Libctl::with_url("postgres://unused@127.0.0.1:1/unused")
        .env("LIBCTL_HOME", home.path().to_str().unwrap())
        .args(["db", "down", "--format", "json"])
        .run()
        .json();
    assert_eq!(down["stopped"], true);
    assert!(
        postgres::Client::connect(&server, postgres::NoTls).is_err(),
        "stopped"
    );
}
