//! A real SMTP server for the notice tests: `smtp_server.py` (Debian's python3-aiosmtpd) on a
//! free port, one per test, killed when dropped. It logs every message it accepts.

use std::io::BufRead;
use std::process::{Child, Command, Stdio};

use serde_json::Value;

/// A running server.
pub struct SmtpServer {
    child: Child,
    pub port: u16,
    log: tempfile::NamedTempFile,
}

impl SmtpServer {
    /// Starts it, or `None` (with the reason printed) where python3-aiosmtpd is missing.
    pub fn start() -> Option<SmtpServer> {
        // Debian's interpreter first: python3-aiosmtpd installs there, whatever PATH prefers.
        let Some(python) = ["/usr/bin/python3", "python3"].into_iter().find(|p| {
            Command::new(p)
                .args(["-c", "import aiosmtpd"])
                .output()
                .is_ok_and(|o| o.status.success())
        }) else {
            eprintln!(
                "skipping: python3-aiosmtpd is not installed (apt-get install python3-aiosmtpd)"
            );
            return None;
        };
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let log = tempfile::NamedTempFile::new().unwrap();
        let script = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../libcore/tests/support/smtp_server.py"
        );
        let mut child = Command::new(python)
            .arg(script)
            .arg(port.to_string())
            .arg(log.path())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut line = String::new();
        std::io::BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        assert_eq!(line.trim(), "ready", "the SMTP server did not start");
        Some(SmtpServer { child, port, log })
    }

    /// `smtp://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("smtp://127.0.0.1:{}", self.port)
    }

    /// The messages it accepted, in order.
    pub fn received(&self) -> Vec<Value> {
        std::fs::read_to_string(self.log.path())
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }
}

impl Drop for SmtpServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
