//! Test harness shared by libcore's and the CLI's integration tests: every test gets its own
//! database, cloned from a migrated template, so tests run in parallel against a real
//! PostgreSQL and leave nothing behind.
#![allow(dead_code)]

use std::sync::OnceLock;

pub mod smtp;
pub mod standby;

use libcore::actor::{Actor, Ctx, Role};
use postgres::{Client, NoTls};

/// The server tests run against: `LIBCTL_TEST_URL`, else the local default. Its database
/// part is ignored; tests create their own.
pub fn server_url() -> String {
    std::env::var("LIBCTL_TEST_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

fn url_for(db: &str) -> String {
    let base = server_url();
    let (prefix, _) = base.rsplit_once('/').expect("URL with a database part");
    format!("{prefix}/{db}")
}

fn admin_client() -> Client {
    Client::connect(&url_for("postgres"), NoTls).expect("connect to the test server")
}

/// The template's name changes with the migrations, so a schema change gets a fresh one.
fn template_name() -> &'static str {
    static NAME: OnceLock<String> = OnceLock::new();
    NAME.get_or_init(|| {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../sql");
        let mut files: Vec<_> = std::fs::read_dir(&dir)
            .expect("sql/ directory")
            .map(|e| e.expect("dir entry").path())
            .filter(|p| p.is_file())
            .collect();
        files.sort();
        let mut hasher = blake3::Hasher::new();
        // Names and contents: refinery records both, so a renamed migration needs a new
        // template too.
        for f in files {
            hasher.update(f.file_name().expect("file name").as_encoded_bytes());
            hasher.update(&std::fs::read(f).expect("read migration"));
        }
        let hash = hasher.finalize().to_hex();
        let name = format!("libctl_tpl_{}", &hash[..16]);
        ensure_template(&name);
        name
    })
}

/// Builds the template once across all test processes (an advisory lock serialises them),
/// under a temporary name renamed into place only when complete.
fn ensure_template(name: &str) {
    let mut admin = admin_client();
    admin
        .execute("SELECT pg_advisory_lock(7243001)", &[])
        .unwrap();
    let exists = admin
        .query_opt("SELECT 1 FROM pg_database WHERE datname = $1", &[&name])
        .unwrap()
        .is_some();
    if !exists {
        let building = format!("{name}_building");
        admin
            .batch_execute(&format!("DROP DATABASE IF EXISTS {building} WITH (FORCE)"))
            .unwrap();
        admin
            .batch_execute(&format!("CREATE DATABASE {building}"))
            .unwrap();
        {
            let mut client = Client::connect(&url_for(&building), NoTls).unwrap();
            libcore::db::migrate(&mut client).expect("migrate template");
            libcore::members::bootstrap_admin(&mut client, "admin@library.test", "Test Admin")
                .unwrap();
        }
        admin
            .batch_execute(&format!("ALTER DATABASE {building} RENAME TO {name}"))
            .unwrap();
    }
    admin
        .execute("SELECT pg_advisory_unlock(7243001)", &[])
        .unwrap();
}

/// A private database for one test, dropped when the test ends.
pub struct TestDb {
    pub name: String,
    pub url: String,
}

impl TestDb {
    pub fn new() -> TestDb {
        let template = template_name();
        let name = format!("libctl_t_{}", uuid::Uuid::new_v4().simple());
        let mut admin = admin_client();
        // Concurrent clones of one template are fine as long as nobody is connected to it.
        let mut tries = 0;
        loop {
            match admin.batch_execute(&format!("CREATE DATABASE {name} TEMPLATE {template}")) {
                Ok(()) => break,
                Err(e) if tries < 50 => {
                    tries += 1;
                    let _ = e;
                    std::thread::sleep(std::time::Duration::from_millis(100));
                }
                Err(e) => panic!("cannot clone the template: {e}"),
            }
        }
        TestDb {
            url: url_for(&name),
            name,
        }
    }

    /// A private database with no schema at all, for tests of the migrations themselves.
    pub fn empty() -> TestDb {
        let name = format!("libctl_t_{}", uuid::Uuid::new_v4().simple());
        admin_client()
            .batch_execute(&format!("CREATE DATABASE {name}"))
            .expect("create an empty database");
        TestDb {
            url: url_for(&name),
            name,
        }
    }

    /// A private copy of this database (nobody may be connected to it meanwhile).
    pub fn copy(&self) -> TestDb {
        let name = format!("libctl_t_{}", uuid::Uuid::new_v4().simple());
        admin_client()
            .batch_execute(&format!("CREATE DATABASE {name} TEMPLATE {}", self.name))
            .expect("copy a test database");
        TestDb {
            url: url_for(&name),
            name,
        }
    }

    pub fn client(&self) -> Client {
        Client::connect(&self.url, NoTls).expect("connect to the test database")
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        if let Ok(mut admin) = Client::connect(&url_for("postgres"), NoTls) {
            let _ = admin.batch_execute(&format!(
                "DROP DATABASE IF EXISTS {} WITH (FORCE)",
                self.name
            ));
        }
    }
}

/// The admin every template has.
pub const ADMIN: &str = "admin@library.test";

pub fn ctx_of(client: &mut Client, email: &str) -> Ctx {
    libcore::actor::resolve(client, Some(email), None).expect("resolve actor")
}

pub fn admin(client: &mut Client) -> Ctx {
    ctx_of(client, ADMIN)
}

pub fn system() -> Ctx {
    Ctx::new(Actor {
        member_id: None,
        name: "system".into(),
        role: Role::System,
    })
}

/// Adds a member with the given role and returns their email.
pub fn add_member(client: &mut Client, email: &str, role: &str) -> String {
    let admin = admin(client);
    libcore::members::add_member(
        client,
        &admin,
        &libcore::members::NewMember {
            name: format!("Test {email}"),
            email: email.into(),
            phone: None,
            role: Some(role.into()),
            category: Some("public".into()),
        },
    )
    .expect("add member");
    email.to_string()
}

/// A valid ISBN-13 derived from `n`.
pub fn isbn(n: u32) -> String {
    let body = format!("978{:09}", n);
    format!("{body}{}", libcore::validate::isbn13_check_digit(&body))
}

/// How long ago [`add_book`] catalogues its books: their items have been on the shelf since,
/// so tests may backdate borrows (a borrow before an item was on the shelf is refused).
pub const CATALOGUED_DAYS_AGO: i64 = 3650;

/// Adds a standard book with `copies` copies, catalogued [`CATALOGUED_DAYS_AGO`] days ago,
/// and returns its ISBN.
pub fn add_book(client: &mut Client, n: u32, copies: i64) -> String {
    let admin = Ctx {
        at: Some(chrono::Utc::now() - chrono::Duration::days(CATALOGUED_DAYS_AGO)),
        ..admin(client)
    };
    let isbn = isbn(n);
    libcore::catalog::add_book(
        client,
        &admin,
        &libcore::catalog::NewBook {
            isbn: isbn.clone(),
            title: format!("Book {n}"),
            author: "Author".into(),
            genre: None,
            category: None,
            copies: Some(copies),
        },
    )
    .expect("add book");
    isbn
}

/// Asserts that `db check` finds nothing.
pub fn assert_invariants(client: &mut Client) {
    let results = libcore::db::check(client).expect("db check runs");
    for r in &results {
        assert_eq!(r.violations, 0, "{}: {:?}", r.invariant, r.examples);
    }
}
