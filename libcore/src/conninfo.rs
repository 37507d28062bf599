//! Reaching PostgreSQL the way libpq does, so a crontab never needs a password in it and a
//! connection across a network can be encrypted and checked.
//!
//! - `sslmode` (`disable`, `prefer` — the default, as in libpq —, `require`, `verify-ca`,
//!   `verify-full`) and `sslrootcert`, from the URL or `PGSSLMODE` / `PGSSLROOTCERT`. The
//!   `postgres` crate knows only the first three modes, so this module takes both settings out
//!   of the URL before the crate parses it, and checks certificates with OpenSSL itself.
//! - A URL without a password takes `PGPASSWORD`, else the password file (`PGPASSFILE`, or
//!   `~/.pgpass`), with libpq's format and its rule that a file others can read is ignored.

use std::path::{Path, PathBuf};

use openssl::ssl::{SslConnector, SslMethod, SslVerifyMode};
use postgres::config::{Host, SslMode as CrateSslMode};
use postgres::{Client, Config, NoTls};
use postgres_openssl::MakeTlsConnector;

use crate::error::{Error, Result};

/// libpq's `sslmode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SslMode {
    /// Never TLS.
    Disable,
    /// TLS when the server offers it, certificate unchecked (libpq's default).
    Prefer,
    /// TLS or nothing; the certificate is checked against `sslrootcert` only when one exists.
    Require,
    /// TLS, and a certificate signed by `sslrootcert`'s CA.
    VerifyCa,
    /// TLS, a certificate signed by the CA, and issued for the host connected to.
    VerifyFull,
}

impl SslMode {
    fn parse(value: &str) -> Result<SslMode> {
        Ok(match value {
            "disable" | "allow" => SslMode::Disable,
            "prefer" => SslMode::Prefer,
            "require" => SslMode::Require,
            "verify-ca" => SslMode::VerifyCa,
            "verify-full" => SslMode::VerifyFull,
            other => {
                return Err(Error::invalid(
                    "invalid_database_url",
                    format!(
                        "sslmode {other:?} is not one of disable, allow, prefer, require, verify-ca, verify-full"
                    ),
                ))
            }
        })
    }
}

/// A parsed connection target.
pub struct Conninfo {
    /// What the `postgres` crate understood, password filled in from the environment.
    pub config: Config,
    /// The TLS mode.
    pub ssl: SslMode,
    /// The CA file for `verify-ca` / `verify-full` (and `require`, when it exists).
    pub root_cert: Option<PathBuf>,
}

/// Takes `sslmode` and `sslrootcert` out of a URL or key/value string.
fn take_ssl_settings(url: &str) -> (String, Option<String>, Option<String>) {
    let (mut mode, mut root) = (None, None);
    let mut take = |key: &str, value: &str| match key {
        "sslmode" => {
            mode = Some(value.to_string());
            true
        }
        "sslrootcert" => {
            root = Some(value.to_string());
            true
        }
        _ => false,
    };
    let rest = if url.contains("://") {
        match url.split_once('?') {
            Some((base, query)) => {
                let kept: Vec<&str> = query
                    .split('&')
                    .filter(|pair| {
                        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
                        !take(k, &percent_decode(v))
                    })
                    .collect();
                if kept.is_empty() {
                    base.to_string()
                } else {
                    format!("{base}?{}", kept.join("&"))
                }
            }
            None => url.to_string(),
        }
    } else {
        url.split_whitespace()
            .filter(|pair| {
                let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
                !take(k.trim(), v.trim().trim_matches('\''))
            })
            .collect::<Vec<_>>()
            .join(" ")
    };
    (rest, mode, root)
}

fn percent_decode(value: &str) -> String {
    let bytes = value.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            if let Ok(b) = u8::from_str_radix(&value[i + 1..i + 3], 16) {
                out.push(b);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn home() -> Option<PathBuf> {
    std::env::var_os("HOME").map(PathBuf::from)
}

/// Parses `url` (a `postgres://` URL or libpq key/value string) the way libpq would.
pub fn parse(url: &str) -> Result<Conninfo> {
    let (rest, mode, root) = take_ssl_settings(url);
    let mut config = rest.parse::<Config>().map_err(|e| {
        Error::invalid(
            "invalid_database_url",
            format!("cannot parse database URL {}: {e}", redact_url(url)),
        )
    })?;
    let ssl = match mode.or_else(|| std::env::var("PGSSLMODE").ok()) {
        Some(m) => SslMode::parse(&m)?,
        None => SslMode::Prefer,
    };
    let root_cert = root
        .or_else(|| std::env::var("PGSSLROOTCERT").ok())
        .map(PathBuf::from)
        .or_else(|| home().map(|h| h.join(".postgresql/root.crt")));
    if config.get_password().is_none() {
        if let Some(password) = password_from_environment(&config) {
            config.password(password);
        }
    }
    Ok(Conninfo {
        config,
        ssl,
        root_cert,
    })
}

/// `PGPASSWORD`, else the first matching line of the password file.
fn password_from_environment(config: &Config) -> Option<String> {
    if let Ok(p) = std::env::var("PGPASSWORD") {
        return Some(p);
    }
    let file = std::env::var_os("PGPASSFILE")
        .map(PathBuf::from)
        .or_else(|| home().map(|h| h.join(".pgpass")))?;
    let host = match config.get_hosts().first() {
        Some(Host::Tcp(name)) => name.clone(),
        // libpq matches a socket connection as "localhost".
        _ => "localhost".to_string(),
    };
    let port = config
        .get_ports()
        .first()
        .copied()
        .unwrap_or(5432)
        .to_string();
    let user = config
        .get_user()
        .map(str::to_string)
        .or_else(|| std::env::var("USER").ok())
        .unwrap_or_default();
    let dbname = config.get_dbname().unwrap_or(&user).to_string();
    lookup_password_file(&file, &host, &port, &dbname, &user)
}

/// libpq's password file: `host:port:database:user:password`, `*` matches anything, `\:` and
/// `\\` escape. Ignored (with a warning, as libpq does) when group or others may read it.
pub fn lookup_password_file(
    file: &Path,
    host: &str,
    port: &str,
    dbname: &str,
    user: &str,
) -> Option<String> {
    let meta = std::fs::metadata(file).ok()?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        if meta.permissions().mode() & 0o077 != 0 {
            tracing::warn!(
                "password file {} has group or world access; permissions should be u=rw (0600) or less",
                file.display()
            );
            return None;
        }
    }
    let text = std::fs::read_to_string(file).ok()?;
    for line in text.lines() {
        if line.trim_start().starts_with('#') || line.trim().is_empty() {
            continue;
        }
        let fields = split_pgpass_line(line);
        if fields.len() < 5 {
            continue;
        }
        let wanted = [host, port, dbname, user];
        if fields[..4]
            .iter()
            .zip(wanted)
            .all(|(field, want)| field == "*" || field == want)
        {
            return Some(fields[4..].join(":"));
        }
    }
    None
}

fn split_pgpass_line(line: &str) -> Vec<String> {
    let mut fields = vec![String::new()];
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => {
                if let Some(next) = chars.next() {
                    fields.last_mut().expect("one field").push(next);
                }
            }
            ':' if fields.len() < 5 => fields.push(String::new()),
            other => fields.last_mut().expect("one field").push(other),
        }
    }
    fields
}

/// Why a connection could not be made.
#[derive(Debug)]
pub enum ConnectFailure {
    /// TLS could not be set up (an unreadable or missing CA file).
    Tls(String),
    /// The server refused, was unreachable, or its certificate did not check out.
    Postgres(postgres::Error),
}

impl Conninfo {
    /// Connects with the TLS the mode asks for.
    pub fn connect(&self) -> std::result::Result<Client, ConnectFailure> {
        let mut config = self.config.clone();
        if self.ssl == SslMode::Disable {
            config.ssl_mode(CrateSslMode::Disable);
            return config.connect(NoTls).map_err(ConnectFailure::Postgres);
        }
        config.ssl_mode(match self.ssl {
            SslMode::Prefer => CrateSslMode::Prefer,
            _ => CrateSslMode::Require,
        });
        let tls = self.tls().map_err(ConnectFailure::Tls)?;
        config.connect(tls).map_err(ConnectFailure::Postgres)
    }

    /// The OpenSSL connector for the mode: which certificates are trusted, and whether the
    /// host name must match.
    fn tls(&self) -> std::result::Result<MakeTlsConnector, String> {
        let mut builder =
            SslConnector::builder(SslMethod::tls_client()).map_err(|e| e.to_string())?;
        let root = self.root_cert.as_ref().filter(|p| p.exists());
        let verify = match self.ssl {
            SslMode::VerifyCa | SslMode::VerifyFull => {
                let Some(root) = root else {
                    return Err(format!(
                        "sslmode={} needs a root certificate: set sslrootcert in the URL, PGSSLROOTCERT, or ~/.postgresql/root.crt ({} does not exist)",
                        if self.ssl == SslMode::VerifyCa { "verify-ca" } else { "verify-full" },
                        self.root_cert.as_deref().map_or("none".into(), |p| p.display().to_string())
                    ));
                };
                Some(root)
            }
            // libpq: `require` with a root certificate present checks it like verify-ca.
            SslMode::Require => root,
            _ => None,
        };
        match verify {
            Some(root) => {
                builder
                    .set_ca_file(root)
                    .map_err(|e| format!("cannot read root certificate {}: {e}", root.display()))?;
                builder.set_verify(SslVerifyMode::PEER);
            }
            None => builder.set_verify(SslVerifyMode::NONE),
        }
        let mut connector = MakeTlsConnector::new(builder.build());
        let check_host = self.ssl == SslMode::VerifyFull;
        connector.set_callback(move |connect, _| {
            connect.set_verify_hostname(check_host);
            Ok(())
        });
        Ok(connector)
    }
}

/// Hides every password in a connection string, for logs and messages: the user-info part of
/// a URL (`postgres://u:secret@h`), a `password=` query parameter, and a `password=` pair of
/// the key/value form (`host=h password='se cret'`).
pub fn redact_url(url: &str) -> String {
    let mut text = url.to_string();
    if let Some((scheme, rest)) = text.split_once("://") {
        let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
        if let Some((userinfo, host)) = rest[..authority_end].rsplit_once('@') {
            if let Some((user, _password)) = userinfo.split_once(':') {
                text = format!("{scheme}://{user}:***@{host}{}", &rest[authority_end..]);
            }
        }
    }
    redact_password_pairs(&text)
}

/// Replaces the value of every `password=` pair (URL query or key/value form) with `***`.
fn redact_password_pairs(text: &str) -> String {
    let lower = text.to_ascii_lowercase();
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    while let Some(found) = lower[i..].find("password") {
        let key_start = i + found;
        let mut j = key_start + "password".len();
        let before_ok =
            key_start == 0 || matches!(text.as_bytes()[key_start - 1], b' ' | b'?' | b'&' | b'\t');
        while j < text.len() && text.as_bytes()[j] == b' ' {
            j += 1;
        }
        if !before_ok || j >= text.len() || text.as_bytes()[j] != b'=' {
            out.push_str(&text[i..key_start + 1]);
            i = key_start + 1;
            continue;
        }
        j += 1;
        while j < text.len() && text.as_bytes()[j] == b' ' {
            j += 1;
        }
        out.push_str(&text[i..j]);
        out.push_str("***");
        // The value: a quoted string (with \' escapes), or up to a space or '&'.
        if j < text.len() && text.as_bytes()[j] == b'\'' {
            j += 1;
            while j < text.len() && text.as_bytes()[j] != b'\'' {
                j += if text.as_bytes()[j] == b'\\' { 2 } else { 1 };
            }
            j = (j + 1).min(text.len());
        } else {
            while j < text.len() && !matches!(text.as_bytes()[j], b' ' | b'&' | b'\t') {
                j += 1;
            }
        }
        i = j;
    }
    out.push_str(&text[i..]);
    out
}
