//! The embedded default (SPEC §3): when no database URL is given and nothing listens at the
//! default address, libctl runs a private PostgreSQL cluster in `.libctl/pg` (or
//! `$LIBCTL_HOME/pg`) on its own port.
//!
//! initdb refuses to run as root, so as root the server runs as the `postgres` system user
//! (through `runuser`), and the data directory is owned by it.

use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::db::DEFAULT_URL;
use crate::error::{Error, Result};

/// The port the embedded cluster listens on (chosen to stay clear of a system server).
pub const EMBEDDED_PORT: u16 = 54329;

/// Where a database URL came from, so the binary can say so.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UrlSource {
    /// `--database-url` or `DATABASE_URL`.
    Given,
    /// The default address, where a server answers.
    Default,
    /// The embedded cluster, started now or already running.
    Embedded {
        /// Its data directory.
        data_dir: PathBuf,
        /// True when this call started it.
        started: bool,
    },
}

/// The libctl home: `$LIBCTL_HOME`, else `./.libctl`.
pub fn home() -> PathBuf {
    std::env::var_os("LIBCTL_HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(".libctl"))
}

fn data_dir() -> PathBuf {
    home().join("pg")
}

/// The URL of the embedded cluster's maintenance database (for tools that create databases).
pub fn embedded_server_url() -> String {
    format!("postgres://postgres@127.0.0.1:{EMBEDDED_PORT}/postgres")
}

/// True when something accepts connections at 127.0.0.1:`port`.
pub fn is_listening(port: u16) -> bool {
    listening(port)
}

/// The URL of the embedded cluster's `library` database.
pub fn embedded_url() -> String {
    format!("postgres://postgres@127.0.0.1:{EMBEDDED_PORT}/library")
}

fn listening(port: u16) -> bool {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    TcpStream::connect_timeout(&addr, Duration::from_millis(300)).is_ok()
}

/// Picks the database URL: the given one, else the default if a server answers there, else
/// the embedded cluster (started on demand) if PostgreSQL's server binaries are installed.
pub fn resolve_url(given: Option<&str>) -> Result<(String, UrlSource)> {
    if let Some(url) = given.filter(|u| !u.trim().is_empty()) {
        return Ok((url.to_string(), UrlSource::Given));
    }
    if listening(5432) {
        return Ok((DEFAULT_URL.to_string(), UrlSource::Default));
    }
    if server_bin_dir().is_none() {
        // Nothing to start: let the connection attempt report the default address.
        return Ok((DEFAULT_URL.to_string(), UrlSource::Default));
    }
    let started = up()?;
    Ok((
        embedded_url(),
        UrlSource::Embedded {
            data_dir: data_dir(),
            started,
        },
    ))
}

/// Finds the directory holding `initdb` and `pg_ctl`: PATH first, then the newest
/// `/usr/lib/postgresql/*/bin`.
pub fn server_bin_dir() -> Option<PathBuf> {
    if let Some(path) = std::env::var_os("PATH") {
        for dir in std::env::split_paths(&path) {
            if dir.join("initdb").is_file() && dir.join("pg_ctl").is_file() {
                return Some(dir);
            }
        }
    }
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .flatten()
        .filter_map(|e| {
            let version = e.file_name().to_str()?.parse::<u32>().ok()?;
            let bin = e.path().join("bin");
            bin.join("initdb").is_file().then_some((version, bin))
        })
        .collect();
    versions.sort();
    versions.pop().map(|(_, bin)| bin)
}

fn running_as_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

/// Runs a server binary as the invoking user, or as `postgres` when root.
fn run_server_tool(tool: &Path, args: &[&str]) -> Result<()> {
    let mut cmd = if running_as_root() {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--"]).arg(tool);
        c
    } else {
        Command::new(tool)
    };
    cmd.args(args);
    let output = cmd
        .output()
        .map_err(|e| Error::io(format!("running {}", tool.display()), e))?;
    if output.status.success() {
        Ok(())
    } else {
        Err(Error::Unavailable(format!(
            "{} failed: {}",
            tool.display(),
            String::from_utf8_lossy(&output.stderr).trim()
        )))
    }
}

/// Starts the embedded cluster, creating it first if needed. Returns true if it started it.
pub fn up() -> Result<bool> {
    if listening(EMBEDDED_PORT) {
        return Ok(false);
    }
    let bin = server_bin_dir().ok_or_else(|| {
        Error::Unavailable("PostgreSQL server binaries (initdb, pg_ctl) are not installed".into())
    })?;
    let data = data_dir();
    std::fs::create_dir_all(home())
        .map_err(|e| Error::io(format!("creating {}", home().display()), e))?;
    let data =
        std::path::absolute(&data).map_err(|e| Error::io("resolving the data directory", e))?;
    let data_str = data.to_string_lossy().to_string();
    if !data.join("PG_VERSION").is_file() {
        std::fs::create_dir_all(&data).map_err(|e| Error::io(format!("creating {data_str}"), e))?;
        if running_as_root() {
            let status = Command::new("chown")
                .args(["-R", "postgres:postgres", &data_str])
                .status()
                .map_err(|e| Error::io("chown of the data directory", e))?;
            if !status.success() {
                return Err(Error::Unavailable(format!(
                    "cannot hand {data_str} to the postgres user"
                )));
            }
        }
        run_server_tool(
            &bin.join("initdb"),
            &[
                "-D",
                &data_str,
                "-U",
                "postgres",
                "-A",
                "trust",
                "-E",
                "UTF8",
                "--no-sync",
            ],
        )?;
    }
    let options = format!("-p {EMBEDDED_PORT} -c listen_addresses=127.0.0.1 -k {data_str}");
    let log = format!("{data_str}/server.log");
    run_server_tool(
        &bin.join("pg_ctl"),
        &[
            "-D", &data_str, "-l", &log, "-o", &options, "-w", "-t", "60", "start",
        ],
    )?;
    Ok(true)
}

/// Stops the embedded cluster. Returns false if it was not running.
pub fn down() -> Result<bool> {
    let data = data_dir();
    if !data.join("postmaster.pid").is_file() {
        return Ok(false);
    }
    let bin = server_bin_dir()
        .ok_or_else(|| Error::Unavailable("PostgreSQL server binaries are not installed".into()))?;
    let data =
        std::path::absolute(&data).map_err(|e| Error::io("resolving the data directory", e))?;
    run_server_tool(
        &bin.join("pg_ctl"),
        &["-D", &data.to_string_lossy(), "-m", "fast", "-w", "stop"],
    )?;
    Ok(true)
}
