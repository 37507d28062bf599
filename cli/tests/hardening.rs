//! What a hostile tester tried, through the binary: wiping a library with a seed or a
//! benchmark, notices lost to a bad path, dates in the future, values without bounds, `--at`
//! around the rules, passwords in messages, and smaller leaks.

use std::time::Duration;

use crate::support::*;
use crate::util::*;

/// A playground (only a seed wrote it) may be re-seeded by anyone; one audited change makes it
/// a library, which only an admin with --confirm may replace. Both are audited.
#[test]
fn seed_replace_needs_an_admin_and_confirm_once_the_database_is_a_library() {
    let db = seeded_tiny();
    Libctl::new(&db)
        .args(["seed", "--scenario", "tiny", "--seed", "9", "--replace"])
        .run();
    let seeds = count(
        &db,
        "SELECT count(*) FROM audit_log WHERE action = 'seed.run' AND actor = 'system'",
    );
    assert_eq!(seeds, 1, "the seed's own audit row, in the data it wrote");
    // A librarian lends a book: now it is someone's library.
    let mut c = db.client();
    let reader = add_member(&mut c, "reader@example.org", "member");
    let isbn = add_book(&mut c, 1, 1);
    Libctl::new(&db)
        .actor("librarian1@library.test")
        .args(["borrow", "--member", &reader, "--book", &isbn])
        .run();
    let loans = count(&db, "SELECT count(*) FROM loan");
    let run = Libctl::new(&db)
        .args(["seed", "--scenario", "tiny", "--replace"])
        .status(5)
        .run();
    assert!(run.stderr().contains("library"), "{}", run.stderr());
    let run = Libctl::new(&db)
        .actor(ADMIN)
        .args(["seed", "--scenario", "tiny", "--replace"])
        .status(4)
        .run();
    assert!(
        run.stderr().contains("confirmation_required"),
        "{}",
        run.stderr()
    );
    assert_eq!(
        count(&db, "SELECT count(*) FROM loan"),
        loans,
        "nothing changed"
    );
    Libctl::new(&db)
        .actor(ADMIN)
        .args(["seed", "--scenario", "tiny", "--replace", "--confirm"])
        .run();
    assert_eq!(
        count(
            &db,
            "SELECT count(*) FROM audit_log WHERE action = 'seed.run' AND actor = 'admin@library.test'
             AND (details->>'replaced')::boolean"
        ),
        1
    );
    // A database never seeded is a library from the start.
    let fresh = TestDb::new();
    add_book(&mut fresh.client(), 1, 1);
    Libctl::new(&fresh)
        .args(["seed", "--scenario", "tiny", "--replace"])
        .status(5)
        .run();
}

/// A member may not load-test a library; a killed bench leaves no lifted limit behind, and
/// its loans are given back by the next run on a playground.
#[test]
fn bench_borrow_is_authorised_and_a_kill_leaves_no_lifted_limit_and_no_stray_loan() {
    let db = seeded_tiny();
    // On a playground anyone may run it, and its own work keeps it a playground.
    Libctl::new(&db)
        .args(["bench", "borrow", "--clients", "2", "--duration", "1"])
        .run();
    Libctl::new(&db)
        .args(["bench", "borrow", "--clients", "0", "--duration", "1"])
        .status(7)
        .run();
    let policies = || {
        count(
            &db,
            "SELECT sum(limit_count + window_seconds + burst)::bigint FROM rate_limit_policy",
        )
    };
    let real = policies();
    let open = || count(&db, "SELECT count(*) FROM loan WHERE returned_at IS NULL");
    let open_before = open();
    let mut child = std::process::Command::new(assert_cmd::cargo::cargo_bin("libctl"))
        .env("DATABASE_URL", &db.url)
        .env_remove("LIBCTL_ACTOR")
        .args(["bench", "borrow", "--clients", "2", "--duration", "20"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(2500));
    child.kill().unwrap();
    child.wait().unwrap();
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(policies(), real, "the shared policies were never lifted");
    let strays = open() - open_before;
    assert!(strays > 0, "the killed run left loans open");
    // The next run (on the playground) gives them back before it starts.
    let run = Libctl::new(&db)
        .args([
            "bench",
            "borrow",
            "--clients",
            "1",
            "--duration",
            "1",
            "--format",
            "json",
        ])
        .run()
        .json();
    assert_eq!(run["invariants_ok"], true);
    assert_eq!(open(), open_before);
    let closed: i64 = db
        .client()
        .query_one(
            "SELECT (details->>'loans_given_back')::bigint FROM audit_log
             WHERE action = 'bench.finished' AND (details->>'killed')::boolean",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(
        closed, strays,
        "the killed run is closed, its loans given back"
    );
    // The limits hold for everyone else: a member allowed one borrow an hour gets one.
    let mut c = db.client();
    c.batch_execute("UPDATE rate_limit_policy SET limit_count = 1, burst = 1 WHERE role = 'member' AND action_group = 'borrow'")
        .unwrap();
    let reader = add_member(&mut c, "reader@example.org", "member");
    let books = [add_book(&mut c, 1, 1), add_book(&mut c, 2, 1)];
    for (book, code) in books.iter().zip([0, 6]) {
        Libctl::new(&db)
            .actor(&reader)
            .args(["borrow", "--member", &reader, "--book", book])
            .status(code)
            .run();
    }
    // That borrow made it a library: a member may not bench it, an admin must confirm.
    Libctl::new(&db)
        .actor(&reader)
        .args(["bench", "borrow", "--clients", "1", "--duration", "1"])
        .status(5)
        .run();
    Libctl::new(&db)
        .actor(ADMIN)
        .args(["bench", "borrow", "--clients", "1", "--duration", "1"])
        .status(4)
        .run();
    Libctl::new(&db)
        .actor(ADMIN)
        .args([
            "bench",
            "borrow",
            "--clients",
            "1",
            "--duration",
            "1",
            "--confirm",
        ])
        .run();
}

/// Notices are handed over before they are committed: a file that cannot be written fails the
/// command and issues nothing, and `notices export` writes a day's notices again.
#[test]
fn notices_that_cannot_be_written_are_not_issued_and_can_be_exported_again() {
    let db = seeded_tiny();
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("no/such/dir/notices.json");
    let today = chrono::Utc::now().date_naive().to_string();
    let before = count(&db, "SELECT count(*) FROM notice");
    Libctl::new(&db)
        .args([
            "notices", "generate", "--as-of", &today, "--format", "json", "--out",
        ])
        .arg_path(&missing)
        .status(1)
        .run();
    assert_eq!(count(&db, "SELECT count(*) FROM notice"), before);
    let metrics = dir.path().join("libctl.prom");
    Libctl::new(&db)
        .args([
            "nightly",
            "--as-of",
            &today,
            "--format",
            "json",
            "--metrics-file",
        ])
        .arg_path(&metrics)
        .args(["--notices-out"])
        .arg_path(&missing)
        .status(1)
        .run();
    // The steps before the notices stay done: their notices (auto-renewals, lost bills) wait,
    // pending, for a notices run to hand them over. Nothing was handed over.
    assert_eq!(
        count(
            &db,
            "SELECT count(*) FROM notice WHERE NOT pending_handover"
        ),
        before
    );
    let text = std::fs::read_to_string(&metrics).unwrap();
    assert!(text.contains("libctl_nightly_success 0"), "{text}");
    let out = dir.path().join("notices.json");
    Libctl::new(&db)
        .args([
            "notices", "generate", "--as-of", &today, "--format", "json", "--out",
        ])
        .arg_path(&out)
        .stderr_contains("notice(s) written to")
        .run();
    let issued = count(&db, "SELECT count(*) FROM notice") - before;
    assert!(issued > 0, "the seeded library has overdue loans");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&out).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
    }
    let written: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&out).unwrap()).unwrap();
    let again = Libctl::new(&db)
        .args(["notices", "export", "--as-of", &today, "--format", "json"])
        .run()
        .json();
    assert_eq!(again, written);
    assert_eq!(
        count(&db, "SELECT count(*) FROM notice") - before,
        issued,
        "export issues nothing"
    );
}

/// `--as-of` after today is exit 7 everywhere, and changes nothing.
#[test]
fn a_future_as_of_is_refused_by_every_job_and_report() {
    let db = seeded_tiny();
    let fines = count(&db, "SELECT coalesce(sum(fine_cents), 0)::bigint FROM loan");
    for args in [
        vec!["nightly", "--as-of", "2062-11-23"],
        vec!["nightly", "--as-of", "9999-12-31", "--dry-run"],
        vec!["fines", "accrue", "--as-of", "2062-11-23"],
        vec!["notices", "generate", "--as-of", "2062-11-23"],
        vec!["notices", "export", "--as-of", "2062-11-23"],
        vec!["report", "summary", "--as-of", "2062-11-23"],
        vec!["report", "overdue", "--as-of", "2062-11-23T10:00:00Z"],
        vec![
            "seed",
            "--scenario",
            "tiny",
            "--replace",
            "--as-of",
            "2062-11-23",
        ],
    ] {
        let run = Libctl::new(&db).args(&args).status(7).run();
        assert!(
            run.stderr().contains("future_as_of"),
            "{args:?}: {}",
            run.stderr()
        );
    }
    assert_eq!(
        count(&db, "SELECT coalesce(sum(fine_cents), 0)::bigint FROM loan"),
        fines
    );
    assert_eq!(count(&db, "SELECT count(*) FROM notice"), 0);
}

/// Every numeric input has a documented range, checked in libcore: exit 7, nothing written.
#[test]
fn numbers_outside_their_ranges_are_refused_with_exit_7() {
    let db = seeded_tiny();
    let reader = add_member(&mut db.client(), "reader@example.org", "member");
    let policy = count(
        &db,
        "SELECT sum(fine_cents_per_day + loan_days)::bigint FROM circulation_rule",
    );
    for args in [
        vec![
            "policy",
            "set",
            "--category",
            "student",
            "--fine-cents-per-day",
            "9223372036854775807",
        ],
        vec![
            "policy",
            "set",
            "--category",
            "student",
            "--loan-days",
            "2147483647",
        ],
        vec![
            "policy",
            "set",
            "--category",
            "student",
            "--max-fine-cents",
            "10000001",
        ],
        vec![
            "rate-limit",
            "policy",
            "set",
            "--role",
            "member",
            "--action-group",
            "borrow",
            "--limit",
            "1000000000",
            "--window",
            "1h",
            "--burst",
            "5",
        ],
        vec!["book", "list", "--limit", "0"],
        vec!["book", "list", "--limit", "1000000000"],
        vec!["report", "overdue", "--limit", "0"],
        vec![
            "fines",
            "pay",
            "--member",
            "reader@example.org",
            "--amount-cents",
            "9223372036854775807",
        ],
    ] {
        Libctl::new(&db)
            .actor(ADMIN)
            .args(&args)
            .status(7)
            .stderr_contains("error[out_of_range]")
            .stderr_contains("must be between")
            .run();
    }
    assert_eq!(
        count(
            &db,
            "SELECT sum(fine_cents_per_day + loan_days)::bigint FROM circulation_rule"
        ),
        policy
    );
    let run = Libctl::new(&db)
        .actor(&reader)
        .args([
            "request",
            "waiver",
            "--member",
            &reader,
            "--amount-cents",
            "9223372036854775807",
            "--reason",
            "x",
        ])
        .status(7)
        .run();
    assert!(run.stderr().contains("must be between"), "{}", run.stderr());
    assert_eq!(count(&db, "SELECT count(*) FROM request WHERE kind = 'waiver' AND status = 'pending' AND amount_cents > 100000000"), 0);
}

/// A librarian's return backdated to before the fine accrued is a one-person waiver: refused.
/// An admin may; a return at the real time always may.
#[test]
fn a_backdated_return_that_lowers_a_fine_needs_an_admin() {
    let db = seeded_tiny();
    let mut c = db.client();
    let reader = add_member(&mut c, "late@example.org", "member");
    c.execute(
        "UPDATE member SET created_at = now() - interval '60 days' WHERE email = $1",
        &[&reader],
    )
    .unwrap();
    let book = add_book(&mut c, 1, 2);
    let borrowed = chrono::Utc::now() - chrono::Duration::days(30);
    let at = borrowed.to_rfc3339();
    let desk = "librarian1@library.test";
    let loan = Libctl::new(&db)
        .actor(desk)
        .args([
            "--at", &at, "borrow", "--member", &reader, "--book", &book, "--format", "json",
        ])
        .run()
        .json();
    let id = loan["id"].as_str().unwrap().to_string();
    let hour_later = (borrowed + chrono::Duration::hours(1)).to_rfc3339();
    let run = Libctl::new(&db)
        .actor(desk)
        .args(["--at", &hour_later, "return", "--loan", &id])
        .status(5)
        .run();
    assert!(run.stderr().contains("waiver"), "{}", run.stderr());
    let open = count(
        &db,
        "SELECT count(*) FROM loan WHERE returned_at IS NULL AND member_id = (SELECT id FROM member WHERE email = 'late@example.org')",
    );
    assert_eq!(open, 1);
    let returned = Libctl::new(&db)
        .actor(ADMIN)
        .args([
            "--at",
            &hour_later,
            "return",
            "--loan",
            &id,
            "--format",
            "json",
        ])
        .run()
        .json();
    assert_eq!(returned["fine_cents"], 0);
}

/// Passwords never reach a message, whatever form the connection string takes, and a failed
/// connection says why.
#[test]
fn connection_errors_hide_passwords_and_say_why() {
    for url in [
        "postgres://postgres:hunter2secret@127.0.0.1:1/library",
        "postgres://postgres@127.0.0.1:1/library?password=hunter2secret",
        "host=127.0.0.1 port=1 user=postgres password=hunter2secret dbname=library",
        "host=127.0.0.1 port=1 user=postgres password='hunter2 secret' dbname=library",
    ] {
        for format in ["table", "json"] {
            let run = Libctl::with_url(url)
                .args(["--format", format, "book", "list"])
                .status(10)
                .run();
            let stderr = run.stderr();
            assert!(!stderr.contains("hunter2"), "{url}: {stderr}");
            assert!(stderr.contains("refused"), "the cause: {stderr}");
        }
    }
    // Every other path that prints a URL: one that does not parse, a bad sslmode, a TLS setup
    // that cannot start, a restore target, the maintenance connection of db init, and the
    // debug log.
    let cases: [(&str, &[&str], i32); 6] = [
        ("postgres://postgres:hunter2secret@127.0.0.1:notaport/library", &["book", "list"], 7),
        ("postgres://postgres:hunter2secret@127.0.0.1:1/library?sslmode=bogus", &["book", "list"], 7),
        (
            "postgres://postgres:hunter2secret@127.0.0.1:1/library?sslmode=verify-full&sslrootcert=/no/ca.crt",
            &["book", "list"],
            10,
        ),
        ("postgres://postgres:hunter2secret@127.0.0.1:1/library", &["db", "init"], 10),
        ("postgres://postgres:hunter2secret@127.0.0.1:1/library", &["-v", "db", "status"], 10),
        (
            "postgres://postgres@127.0.0.1:1/library",
            &[
                "backup",
                "restore",
                "/nonexistent",
                "--force",
                "--target-url",
                "postgres://postgres:hunter2secret@127.0.0.1:1/other",
            ],
            8,
        ),
    ];
    for (url, args, code) in cases {
        for format in ["table", "json"] {
            let run = Libctl::with_url(url)
                .env("LIBCTL_LOG", "debug")
                .args(["--format", format])
                .args(args)
                .status(code)
                .run();
            let stderr = run.stderr();
            assert!(
                !stderr.contains("hunter2") && !run.stdout().contains("hunter2"),
                "{url} {args:?}: {stderr}"
            );
        }
    }
}

/// A server restart under a command is "database unavailable" (exit 10), not an internal error.
#[test]
fn a_server_that_goes_away_mid_command_is_exit_10() {
    let db = seeded_tiny();
    let name = db.name.clone();
    let url = db.url.clone();
    let killer = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(700));
        let mut admin =
            postgres::Client::connect(&url.replace(&name, "postgres"), postgres::NoTls).unwrap();
        admin
            .execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1 AND pid <> pg_backend_pid()",
                &[&name],
            )
            .unwrap();
    });
    let run = Libctl::new(&db)
        .args(["bench", "borrow", "--clients", "1", "--duration", "5"])
        .status(10)
        .stderr_contains("error[database_unavailable]")
        .run();
    killer.join().unwrap();
    assert!(run.stdout().is_empty(), "{}", run.stdout());
}

#[test]
fn smaller_leaks_are_closed() {
    let db = seeded_tiny();
    let mut c = db.client();
    // A correction to a staff account is for admins to approve, not two librarians.
    add_member(&mut c, "desk2@library.test", "librarian");
    add_member(&mut c, "desk3@library.test", "librarian");
    let filed = Libctl::new(&db)
        .actor("desk2@library.test")
        .args([
            "request",
            "correction",
            "--member",
            "librarian1@library.test",
            "--field",
            "email",
            "--value",
            "taken@evil.test",
            "--reason",
            "x",
            "--format",
            "json",
        ])
        .run()
        .json();
    let id = filed["id"].as_str().unwrap().to_string();
    let run = Libctl::new(&db)
        .actor("desk3@library.test")
        .args(["approve", &id])
        .status(5)
        .run();
    assert!(run.stderr().contains("only an admin"), "{}", run.stderr());
    assert_eq!(
        count(
            &db,
            "SELECT count(*) FROM member WHERE email = 'librarian1@library.test'"
        ),
        1
    );
    // Nobody anonymous reads what a member has read.
    let reader: String = c
        .query_one(
            "SELECT m.email FROM review r JOIN member m ON m.id = r.member_id
             WHERE m.status = 'active' AND (m.expires_at IS NULL OR m.expires_at > now()) LIMIT 1",
            &[],
        )
        .map(|r| r.get(0))
        .unwrap_or_else(|_| add_member(&mut c, "r@example.org", "member"));
    Libctl::new(&db)
        .args(["reviews", "--member", &reader])
        .status(5)
        .run();
    Libctl::new(&db)
        .actor(&reader)
        .args(["reviews", "--member", &reader])
        .run();
    // A CSV with a column twice is refused, naming it.
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("books.csv");
    std::fs::write(&file, "isbn,title,author,title\n9780306406157,A,B,C\n").unwrap();
    let run = Libctl::new(&db)
        .actor(ADMIN)
        .args(["book", "import"])
        .arg_path(&file)
        .status(7)
        .run();
    assert!(
        run.stderr().contains("line 1") && run.stderr().contains("title"),
        "{}",
        run.stderr()
    );
}
