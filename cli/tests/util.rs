//! A small builder around the real binary: `Libctl::new(&db).actor(..).args([..]).run()`.

use std::path::PathBuf;
use std::process::Output;

use serde_json::Value;

use crate::support::TestDb;

#[must_use]
pub struct Libctl {
    cmd: assert_cmd::Command,
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
        Libctl { cmd }
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

    pub fn arg_path(mut self, path: &std::path::Path) -> Libctl {
        self.cmd.arg(path);
        self
    }

    pub fn run(mut self) -> Run {
        Run(self.cmd.output().expect("run libctl"))
    }
}

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
    /// Asserts the exit code, showing both streams when it differs.
    #[track_caller]
    pub fn expect(self, code: i32) -> Run {
        assert_eq!(
            self.code(),
            code,
            "stdout:\n{}\nstderr:\n{}",
            self.stdout(),
            self.stderr()
        );
        self
    }
    /// Asserts success and parses stdout as JSON.
    #[track_caller]
    pub fn json(self) -> Value {
        let run = self.expect(0);
        serde_json::from_str(&run.stdout())
            .unwrap_or_else(|e| panic!("not JSON ({e}):\n{}", run.stdout()))
    }
    /// The `{"error": {...}}` object printed on stderr with --format json.
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
