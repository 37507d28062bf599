//! What a reader of libctl's output sees: `| head` and friends stop reading early, and that
//! is not an error.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

use crate::support::TestDb;
use crate::util::Libctl;

/// Runs libctl with stdout piped, reads one line, closes the pipe, and returns the exit code
/// and stderr.
fn read_one_line_and_close(db: &TestDb, args: &[&str]) -> (i32, String, String) {
    let mut child = Command::new(assert_cmd::cargo::cargo_bin("libctl"))
        .env("DATABASE_URL", &db.url)
        .env_remove("LIBCTL_ACTOR")
        .env("NO_COLOR", "1")
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn libctl");
    let mut first = String::new();
    BufReader::new(child.stdout.take().expect("stdout"))
        .read_line(&mut first)
        .expect("first line");
    // The reader (and the pipe) are dropped here: libctl's next write meets a closed pipe.
    let out = child.wait_with_output().expect("wait");
    (
        out.status.code().expect("exit code, not a signal"),
        String::from_utf8_lossy(&out.stderr).into_owned(),
        first,
    )
}

#[test]
fn a_reader_that_stops_early_is_not_an_error() {
    let db = TestDb::new();
    Libctl::new(&db)
        .args(["seed", "--scenario", "minimal", "--as-of", "2026-01-15"])
        .run();
    let commands: [&[&str]; 3] = [
        &["book", "list", "--limit", "5000"],
        &["report", "inventory", "--quiet"],
        &["audit", "export"],
    ];
    for command in commands {
        // The whole output is far larger than a pipe's buffer, so closing early must break
        // the pipe under libctl's feet.
        let full = Libctl::new(&db)
            .args(["--format", "csv"])
            .args(command)
            .run()
            .stdout();
        assert!(full.len() > 256 * 1024, "{command:?}: {} bytes", full.len());
        for format in ["csv", "ndjson", "json", "table"] {
            let mut args = vec!["--format", format];
            args.extend_from_slice(command);
            let (code, stderr, first) = read_one_line_and_close(&db, &args);
            assert!(!first.is_empty(), "{args:?} printed nothing");
            assert_eq!(code, 0, "{args:?}: {stderr}");
            assert!(
                !stderr.contains("error") && !stderr.contains("panicked"),
                "{args:?}: {stderr}"
            );
        }
    }
}
