//! Connections as libpq makes them: TLS with certificates checked, passwords from the
//! environment or the password file, and no password ever printed. Runs its own PostgreSQL
//! (the installed server binaries) with a certificate signed by a CA made for the test, and
//! password authentication on TCP.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::util::Libctl;

const PASSWORD: &str = "s3cret-pw";

fn run(cmd: &mut Command) {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A command run as the `postgres` user when we are root (initdb refuses root).
fn as_postgres(program: &Path) -> Command {
    let root = Command::new("id")
        .arg("-u")
        .output()
        .map(|o| o.stdout == b"0\n")
        .unwrap_or(false);
    if root {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--"]).arg(program);
        c
    } else {
        Command::new(program)
    }
}

fn server_bin() -> PathBuf {
    let mut versions: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .expect("PostgreSQL server binaries under /usr/lib/postgresql")
        .map(|e| e.unwrap().path().join("bin"))
        .filter(|p| p.join("initdb").exists())
        .collect();
    versions.sort();
    versions.pop().expect("an initdb")
}

/// A private PostgreSQL with TLS, stopped when dropped.
struct Server {
    dir: tempfile::TempDir,
    bin: PathBuf,
    port: u16,
}

impl Server {
    fn start() -> Server {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        run(Command::new("chmod").arg("755").arg(d));
        let openssl = |args: &[&str]| run(Command::new("openssl").current_dir(d).args(args));
        for ca in ["ca", "other-ca"] {
            openssl(&[
                "req",
                "-x509",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-days",
                "2",
                "-subj",
                &format!("/CN=libctl test {ca}"),
                "-keyout",
                &format!("{ca}.key"),
                "-out",
                &format!("{ca}.crt"),
            ]);
        }
        openssl(&[
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-subj",
            "/CN=localhost",
            "-keyout",
            "server.key",
            "-out",
            "server.csr",
        ]);
        std::fs::write(d.join("san.cnf"), "subjectAltName=DNS:localhost\n").unwrap();
        openssl(&[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.crt",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-days",
            "2",
            "-extfile",
            "san.cnf",
            "-out",
            "server.crt",
        ]);
        std::fs::write(d.join("pw"), format!("{PASSWORD}\n")).unwrap();
        std::fs::create_dir(d.join("data")).unwrap();
        run(Command::new("chown")
            .arg("-R")
            .arg("postgres:postgres")
            .arg(d)
            .args(["-h"]));
        run(Command::new("chmod").arg("600").arg(d.join("server.key")));
        let bin = server_bin();
        run(as_postgres(&bin.join("initdb"))
            .arg("-D")
            .arg(d.join("data"))
            .args([
                "-U",
                "postgres",
                "--auth-local=trust",
                "--auth-host=scram-sha-256",
                "--no-sync",
            ])
            .arg(format!("--pwfile={}", d.join("pw").display())));
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let options = format!(
            "-p {port} -c listen_addresses=127.0.0.1 -k {dir} -c fsync=off -c ssl=on \
             -c ssl_cert_file={dir}/server.crt -c ssl_key_file={dir}/server.key",
            dir = d.display()
        );
        run(as_postgres(&bin.join("pg_ctl"))
            .arg("-D")
            .arg(d.join("data"))
            .arg("-l")
            .arg(d.join("server.log"))
            .args(["-w", "-o", &options, "start"]));
        Server { dir, bin, port }
    }

    fn file(&self, name: &str) -> String {
        self.dir.path().join(name).display().to_string()
    }

    fn url(&self, host: &str, password: Option<&str>, query: &str) -> String {
        let user = match password {
            Some(p) => format!("postgres:{p}"),
            None => "postgres".into(),
        };
        format!("postgres://{user}@{host}:{}/postgres{query}", self.port)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = as_postgres(&self.bin.join("pg_ctl"))
            .arg("-D")
            .arg(self.dir.path().join("data"))
            .args(["-m", "immediate", "stop"])
            .output();
    }
}

fn status(url: &str) -> Libctl {
    Libctl::with_url(url)
        .env_remove("PGPASSWORD")
        .env_remove("PGPASSFILE")
        .env_remove("PGSSLMODE")
        .env_remove("PGSSLROOTCERT")
        .env("HOME", "/nonexistent")
        .args(["db", "status", "--format", "json"])
}

/// Whether the server sees this connection as TLS.
fn uses_tls(url: &str) -> bool {
    let mut c = libcore::db::connect(url).unwrap();
    c.query_one(
        "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
        &[],
    )
    .unwrap()
    .get(0)
}

#[test]
fn tls_is_checked_as_libpq_checks_it_and_passwords_come_from_the_environment() {
    let server = Server::start();
    let ca = server.file("ca.crt");
    let other_ca = server.file("other-ca.crt");

    // verify-full: the right CA and the certificate's host name.
    let full = server.url(
        "localhost",
        Some(PASSWORD),
        &format!("?sslmode=verify-full&sslrootcert={ca}"),
    );
    status(&full).run();
    assert!(uses_tls(&full));
    // A certificate from another CA, or for another host name, is refused with exit 10.
    status(&server.url(
        "localhost",
        Some(PASSWORD),
        &format!("?sslmode=verify-full&sslrootcert={other_ca}"),
    ))
    .status(10)
    .stderr_contains("\"code\":\"database_unavailable\"")
    .stderr_contains("certificate verify failed")
    .run();
    status(&server.url(
        "127.0.0.1",
        Some(PASSWORD),
        &format!("?sslmode=verify-full&sslrootcert={ca}"),
    ))
    .status(10)
    .stderr_contains("certificate verify failed")
    .run();
    // verify-ca checks the signature but not the name.
    let ca_only = server.url(
        "127.0.0.1",
        Some(PASSWORD),
        &format!("?sslmode=verify-ca&sslrootcert={ca}"),
    );
    status(&ca_only).run();
    assert!(uses_tls(&ca_only));
    // verify-full with no root certificate says what it needs.
    status(&server.url(
        "localhost",
        Some(PASSWORD),
        "?sslmode=verify-full&sslrootcert=/no/such/ca.crt",
    ))
    .status(10)
    .stderr_contains("needs a root certificate")
    .run();
    // disable is plain; the default (prefer) takes TLS when the server offers it.
    assert!(!uses_tls(&server.url(
        "127.0.0.1",
        Some(PASSWORD),
        "?sslmode=disable"
    )));
    assert!(uses_tls(&server.url("127.0.0.1", Some(PASSWORD), "")));

    // Passwords: none in the URL fails; PGPASSWORD or a private password file supplies it.
    let bare = server.url("127.0.0.1", None, "");
    status(&bare).status(10).stderr_contains("password").run();
    status(&bare).env("PGPASSWORD", PASSWORD).run();
    let pgpass = server.dir.path().join("pgpass");
    std::fs::write(
        &pgpass,
        format!(
            "# libctl\nelsewhere:*:*:*:wrong\n127.0.0.1:{}:*:postgres:{PASSWORD}\n",
            server.port
        ),
    )
    .unwrap();
    run(Command::new("chmod").arg("600").arg(&pgpass));
    status(&bare)
        .env("PGPASSFILE", pgpass.to_str().unwrap())
        .run();
    // A password file others can read is ignored, as libpq ignores it.
    run(Command::new("chmod").arg("644").arg(&pgpass));
    status(&bare)
        .env("PGPASSFILE", pgpass.to_str().unwrap())
        .status(10)
        .run();

    // A wrong password is refused, and no password ever reaches the output.
    let wrong = status(&server.url("127.0.0.1", Some("hunter2-wrong"), ""))
        .status(10)
        .stderr_contains("password authentication failed")
        .run();
    assert!(
        !wrong.stderr().contains("hunter2-wrong"),
        "{}",
        wrong.stderr()
    );
    let wrong_json =
        Libctl::with_url(&server.url("127.0.0.1", Some("hunter2-wrong"), "?sslmode=require"))
            .args(["--format", "json", "db", "status"])
            .status(10)
            .run();
    assert!(
        !wrong_json.stderr().contains("hunter2-wrong"),
        "{}",
        wrong_json.stderr()
    );
    assert_eq!(
        wrong_json.error_json()["error"]["code"],
        "database_unavailable"
    );
}
