//! A small builder around the real binary: `Libctl::new(&db).actor(..).args([..]).run()`.

use std::path::PathBuf;
use std::process::Output;

use serde_json::Value;

use crate::support::TestDb;

/// What a run must print on stderr.
enum Stderr {
    /// Nothing: the default for a run expected to succeed.
    Empty,
    /// Something: the default for a run expected to fail, which must say why.
    Any,
    /// Text that must appear.
    Contains(Vec<String>),
}

/// One run of the real binary and what it must produce. Nothing runs until [`Libctl::run`],
/// and `run` asserts: exit 0 and an empty stderr unless the test expects otherwise, and the
/// expected stdout or JSON when the test names one.
#[must_use = "a Libctl does nothing until .run()"]
pub struct Libctl {
    cmd: assert_cmd::Command,
    status: i32,
    stderr: Option<Stderr>,
    stdout: Option<String>,
    stdout_contains: Vec<String>,
    json: Option<Value>,
}

impl Libctl {
    /// The binary pointed at a test database, with no inherited actor.
    pub fn new(db: &TestDb) -> Libctl {
        Libctl::with_url(&db.url)
    }

    pub fn with_url(url: &str) -> Libctl {
        let mut cmd = assert_cmd::Command::cargo_bin("libctl").expect("libctl binary");
        cmd.env("DATABASE_URL", url)
            .env_remove("LIBCTL_ACTOR")
            .env_remove("LIBCTL_LOG_FORMAT")
            .env("NO_COLOR", "1");
        Libctl {
            cmd,
            status: 0,
            stderr: None,
            stdout: None,
            stdout_contains: Vec::new(),
            json: None,
        }
    }

    pub fn actor(mut self, actor: &str) -> Libctl {
        self.cmd.env("LIBCTL_ACTOR", actor);
        self
    }

    pub fn args<I, S>(mut self, args: I) -> Libctl
    where
        I: IntoIterator<Item = S>,
        S: AsRef<std::ffi::OsStr>,
    {
        self.cmd.args(args);
        self
    }

    pub fn env(mut self, key: &str, value: &str) -> Libctl {
        self.cmd.env(key, value);
        self
    }

    pub fn env_remove(mut self, key: &str) -> Libctl {
        self.cmd.env_remove(key);
        self
    }

    pub fn arg_path(mut self, path: &std::path::Path) -> Libctl {
        self.cmd.arg(path);
        self
    }

    /// Bytes for stdin.
    pub fn stdin(mut self, input: impl Into<Vec<u8>>) -> Libctl {
        self.cmd.write_stdin(input);
        self
    }

    /// The exit code the run must end with (default 0).
    pub fn status(mut self, code: i32) -> Libctl {
        self.status = code;
        self
    }

    /// Stderr must contain `text` (may be given more than once).
    pub fn stderr_contains(mut self, text: &str) -> Libctl {
        match &mut self.stderr {
            Some(Stderr::Contains(all)) => all.push(text.to_string()),
            _ => self.stderr = Some(Stderr::Contains(vec![text.to_string()])),
        }
        self
    }

    /// Stdout must be exactly `text`.
    pub fn stdout(mut self, text: &str) -> Libctl {
        self.stdout = Some(text.to_string());
        self
    }

    /// Stdout must contain `text` (may be given more than once).
    pub fn stdout_contains(mut self, text: &str) -> Libctl {
        self.stdout_contains.push(text.to_string());
        self
    }

    /// Stdout must parse as JSON equal to `value`.
    pub fn stdout_json(mut self, value: Value) -> Libctl {
        self.json = Some(value);
        self
    }

    /// Runs the binary and asserts every expectation, showing both streams on a mismatch.
    #[track_caller]
    pub fn run(mut self) -> Run {
        let run = Run(self.cmd.output().expect("run libctl"));
        let shown = || format!("stdout:\n{}\nstderr:\n{}", run.stdout(), run.stderr());
        assert_eq!(run.code(), self.status, "exit code\n{}", shown());
        let stderr = self.stderr.unwrap_or(if self.status == 0 {
            Stderr::Empty
        } else {
            Stderr::Any
        });
        match stderr {
            Stderr::Empty => assert!(run.stderr().is_empty(), "stderr not empty\n{}", shown()),
            Stderr::Any if self.status != 0 => assert!(
                !run.stderr().trim().is_empty(),
                "a failure must say why on stderr\n{}",
                shown()
            ),
            Stderr::Any => {}
            Stderr::Contains(all) => {
                for text in all {
                    assert!(
                        run.stderr().contains(&text),
                        "stderr lacks {text:?}\n{}",
                        shown()
                    );
                }
            }
        }
        if let Some(expected) = &self.stdout {
            assert_eq!(&run.stdout(), expected, "stdout\n{}", shown());
        }
        for text in &self.stdout_contains {
            assert!(
                run.stdout().contains(text),
                "stdout lacks {text:?}\n{}",
                shown()
            );
        }
        if let Some(expected) = &self.json {
            assert_eq!(&run.json(), expected, "stdout JSON\n{}", shown());
        }
        run
    }

    /// Runs (asserting as [`Libctl::run`] does) and parses stdout as JSON.
    #[track_caller]
    pub fn json(self) -> Value {
        self.run().json()
    }
}

/// A finished run, already checked against its expectations.
pub struct Run(pub Output);

impl Run {
    pub fn code(&self) -> i32 {
        self.0.status.code().expect("exit code")
    }
    pub fn stdout(&self) -> String {
        String::from_utf8_lossy(&self.0.stdout).into_owned()
    }
    pub fn stderr(&self) -> String {
        String::from_utf8_lossy(&self.0.stderr).into_owned()
    }
    /// Stdout parsed as JSON.
    #[track_caller]
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.stdout())
            .unwrap_or_else(|e| panic!("not JSON ({e}):\n{}", self.stdout()))
    }
    /// The `{"error": {...}}` object printed on stderr with --format json.
    #[track_caller]
    pub fn error_json(&self) -> Value {
        serde_json::from_str(self.stderr().trim())
            .unwrap_or_else(|e| panic!("not JSON ({e}):\n{}", self.stderr()))
    }
}

pub fn fixture(name: &str) -> String {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../fixtures")
        .join(name)
        .to_string_lossy()
        .into_owned()
}

/// Starts the binary on `db` (no actor, output discarded), for a test that kills it mid-run.
pub fn spawn(db: &TestDb, args: &[&str]) -> std::process::Child {
    std::process::Command::new(assert_cmd::cargo::cargo_bin("libctl"))
        .env("DATABASE_URL", &db.url)
        .env_remove("LIBCTL_ACTOR")
        .args(args)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("start libctl")
}

/// Waits (up to 20 s) for a backend of `c`'s database that is blocked on a lock while
/// running a statement containing `text`; returns its pid.
pub fn blocked_backend(c: &mut postgres::Client, text: &str) -> i32 {
    for _ in 0..400 {
        let pid = c
            .query_opt(
                "SELECT pid FROM pg_stat_activity
                 WHERE datname = current_database() AND wait_event_type = 'Lock'
                   AND position($1 in query) > 0 AND pid <> pg_backend_pid()",
                &[&text],
            )
            .unwrap()
            .map(|r| r.get(0));
        if let Some(pid) = pid {
            return pid;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    panic!("no backend blocked while running {text:?}");
}

/// Waits (up to 10 s) until backend `pid` has ended: a killed client's session ends without
/// a commit once the server notices.
pub fn until_gone(c: &mut postgres::Client, pid: i32) {
    for _ in 0..200 {
        let alive: bool = c
            .query_one(
                "SELECT EXISTS (SELECT 1 FROM pg_stat_activity WHERE pid = $1)",
                &[&pid],
            )
            .unwrap()
            .get(0);
        if !alive {
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    panic!("backend {pid} did not end");
}

/// A fresh database with the `tiny` scenario seeded as of 2026-01-15.
pub fn seeded_tiny() -> TestDb {
    let db = TestDb::new();
    Libctl::new(&db)
        .args(["seed", "--scenario", "tiny", "--as-of", "2026-01-15"])
        .run();
    db
}

/// The one integer `sql` returns on `db`.
pub fn count(db: &TestDb, sql: &str) -> i64 {
    db.client().query_one(sql, &[]).unwrap().get(0)
}
