//! A private primary and streaming standby for the replica tests, started once per test
//! process on two free ports and stopped (their directory removed) when the process ends:
//! `initdb` with `wal_level=replica` and a `host replication` trust line, `pg_basebackup -R -X
//! stream -C -S` from it, `pg_ctl start`. Both run as `postgres` when the tests run as root
//! (initdb refuses root). Tests that pause replay hold [`Pair::exclusive`].

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

use postgres::{Client, NoTls};

/// The running pair.
pub struct Pair {
    pub primary_port: u16,
    pub standby_port: u16,
    lock: Mutex<()>,
}

impl Pair {
    /// The URL of database `db` on the primary.
    pub fn primary_url(&self, db: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{db}", self.primary_port)
    }

    /// The URL of database `db` on the standby.
    pub fn standby_url(&self, db: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{db}", self.standby_port)
    }

    /// Serialises the tests that change the standby's replay.
    pub fn exclusive(&self) -> MutexGuard<'_, ()> {
        self.lock.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A fresh database on the primary, migrated, with the test admin, and replayed on the
    /// standby before this returns.
    pub fn database(&self) -> String {
        let name = format!("libctl_r_{}", uuid::Uuid::new_v4().simple());
        let mut admin = Client::connect(&self.primary_url("postgres"), NoTls).unwrap();
        admin
            .batch_execute(&format!("CREATE DATABASE {name}"))
            .unwrap();
        let mut client = Client::connect(&self.primary_url(&name), NoTls).unwrap();
        libcore::db::migrate(&mut client).unwrap();
        libcore::members::bootstrap_admin(&mut client, super::ADMIN, "Test Admin").unwrap();
        self.caught_up();
        name
    }

    /// Waits until the standby has replayed everything the primary has written.
    pub fn caught_up(&self) {
        let mut primary = Client::connect(&self.primary_url("postgres"), NoTls).unwrap();
        let target: String = primary
            .query_one("SELECT pg_current_wal_lsn()::text", &[])
            .unwrap()
            .get(0);
        let mut standby = Client::connect(&self.standby_url("postgres"), NoTls).unwrap();
        let started = Instant::now();
        loop {
            let done: bool = standby
                .query_one(
                    "SELECT pg_last_wal_replay_lsn() >= $1::text::pg_lsn",
                    &[&target],
                )
                .unwrap()
                .get(0);
            if done {
                return;
            }
            assert!(
                started.elapsed() < Duration::from_secs(60),
                "the standby did not catch up"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// The pair, started on first use.
pub fn pair() -> &'static Pair {
    static PAIR: OnceLock<Pair> = OnceLock::new();
    PAIR.get_or_init(start)
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn as_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

/// Runs a server tool, as `postgres` when root; panics with its output when it fails.
fn tool(bin: &Path, name: &str, args: &[&str]) {
    let mut cmd = if as_root() {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--"]).arg(bin.join(name));
        c
    } else {
        Command::new(bin.join(name))
    };
    let out = cmd.args(args).output().unwrap();
    assert!(
        out.status.success(),
        "{name} {args:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn start() -> Pair {
    // The directory the real binaries live in (PATH may hold symlinks to some of them only).
    let initdb = libcore::cluster::server_bin_dir()
        .expect("PostgreSQL's server binaries")
        .join("initdb");
    let bin = std::fs::canonicalize(initdb)
        .unwrap()
        .parent()
        .unwrap()
        .to_path_buf();
    let dir = PathBuf::from(format!(
        "/tmp/libctl-standby-{}-{}",
        std::process::id(),
        uuid::Uuid::new_v4().simple()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    if as_root() {
        let ok = Command::new("chown")
            .args(["postgres:postgres", dir.to_str().unwrap()])
            .status()
            .unwrap();
        assert!(ok.success());
    }
    let (primary_port, standby_port) = (free_port(), free_port());
    let primary = dir.join("primary");
    let standby = dir.join("standby");
    let p = primary.to_str().unwrap();
    let s = standby.to_str().unwrap();
    let d = dir.to_str().unwrap();
    // Stops both and removes their directory once this test process is gone.
    let pg_ctl = bin.join("pg_ctl");
    let stop = format!(
        "while [ -d /proc/{pid} ]; do sleep 1; done; \
         {pg} -D {s} -m immediate stop; {pg} -D {p} -m immediate stop; rm -rf {d}",
        pid = std::process::id(),
        pg = pg_ctl.display(),
    );
    let mut watchdog = if as_root() {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--", "sh", "-c", &stop]);
        c
    } else {
        let mut c = Command::new("sh");
        c.args(["-c", &stop]);
        c
    };
    // Deliberately not waited on: it outlives this process to clean up after it.
    #[allow(clippy::zombie_processes)]
    watchdog
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    tool(
        &bin,
        "initdb",
        &[
            "-D",
            p,
            "-U",
            "postgres",
            "-A",
            "trust",
            "-E",
            "UTF8",
            "--no-sync",
        ],
    );
    let conf = format!(
        "wal_level = replica\nmax_wal_senders = 4\nmax_replication_slots = 4\nfsync = off\n\
         listen_addresses = '127.0.0.1'\nunix_socket_directories = '{d}'\nmax_connections = 60\n"
    );
    append(&primary.join("postgresql.conf"), &conf);
    append(
        &primary.join("pg_hba.conf"),
        "host replication all 127.0.0.1/32 trust\n",
    );
    let port = primary_port.to_string();
    let log = dir.join("primary.log");
    tool(
        &bin,
        "pg_ctl",
        &[
            "-D",
            p,
            "-l",
            log.to_str().unwrap(),
            "-w",
            "-o",
            &format!("-p {port}"),
            "start",
        ],
    );
    tool(
        &bin,
        "pg_basebackup",
        &[
            "-h",
            "127.0.0.1",
            "-p",
            &port,
            "-U",
            "postgres",
            "-D",
            s,
            "-R",
            "-X",
            "stream",
            "-C",
            "-S",
            "libctl_test_standby",
        ],
    );
    let log = dir.join("standby.log");
    tool(
        &bin,
        "pg_ctl",
        &[
            "-D",
            s,
            "-l",
            log.to_str().unwrap(),
            "-w",
            "-o",
            // A reader in the way of replay is cancelled after a second, not the default 30 s,
            // so the recovery-conflict test sees its cancel quickly.
            &format!(
                "-p {standby_port} -c hot_standby_feedback=on -c max_standby_streaming_delay=1s"
            ),
            "start",
        ],
    );
    Pair {
        primary_port,
        standby_port,
        lock: Mutex::new(()),
    }
}

fn append(path: &Path, text: &str) {
    use std::io::Write;
    let mut f = std::fs::OpenOptions::new().append(true).open(path).unwrap();
    f.write_all(text.as_bytes()).unwrap();
}
