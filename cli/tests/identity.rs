//! Identity from PostgreSQL (SPEC §10): logins bound to members, delegates, read-only
//! logins, and an audit log no login can rewrite. Each test creates its own logins on the
//! real server and drops them when it ends.

use postgres::{Client, NoTls};

use crate::support::{add_book, add_member, server_url, TestDb, ADMIN};
use crate::util::Libctl;

/// Logins created by one test, dropped (cluster-wide) when it ends, with whatever they were
/// granted in the test's database first (a role with privileges cannot be dropped).
struct Logins {
    db_url: String,
    names: Vec<String>,
}

impl Logins {
    fn new(db: &TestDb, names: &[&String]) -> Logins {
        Logins {
            db_url: db.url.clone(),
            names: names.iter().map(|n| n.to_string()).collect(),
        }
    }
}

impl Drop for Logins {
    fn drop(&mut self) {
        if let Ok(mut in_db) = Client::connect(&self.db_url, NoTls) {
            for login in &self.names {
                let _ = in_db.batch_execute(&format!("DROP OWNED BY {login}"));
            }
        }
        let mut admin = Client::connect(&server_url(), NoTls).expect("server");
        for login in &self.names {
            admin
                .batch_execute(&format!("DROP ROLE IF EXISTS {login}"))
                .unwrap_or_else(|e| panic!("the test leaked login {login}: {e}"));
        }
    }
}

/// A login name unique to this test database.
fn login_name(db: &TestDb, what: &str) -> String {
    format!("{what}_{}", &db.name[db.name.len() - 12..])
}

/// The test database's URL, connecting as `login`.
fn url_as(db: &TestDb, login: &str) -> String {
    let (scheme, rest) = db.url.split_once("://").unwrap();
    let (_, host) = rest.split_once('@').unwrap();
    format!("{scheme}://{login}:secret@{host}")
}

fn grant(db: &TestDb, args: &[&str]) {
    Libctl::new(db)
        .actor(ADMIN)
        .args(["staff", "grant-login", "--password-stdin"])
        .args(args)
        .stdin("secret\n")
        .run();
}

fn audit_count(db: &TestDb, sql: &str, params: &[&(dyn postgres::types::ToSql + Sync)]) -> i64 {
    db.client().query_one(sql, params).unwrap().get(0)
}

#[test]
fn a_desk_login_acts_as_its_member_and_never_as_an_admin() {
    let db = TestDb::new();
    let desk = login_name(&db, "desk");
    let _logins = Logins::new(&db, &[&desk]);
    let mut c = db.client();
    add_member(&mut c, "desk@library.test", "librarian");
    add_member(&mut c, "reader@library.test", "member");
    add_book(&mut c, 1, 2);
    grant(&db, &["desk@library.test", "--login", &desk]);
    let listed = Libctl::new(&db)
        .actor(ADMIN)
        .args(["staff", "logins", "--format", "json"])
        .json();
    assert!(
        listed
            .as_array()
            .unwrap()
            .iter()
            .any(|l| l["login"] == desk.as_str()
                && l["email"] == "desk@library.test"
                && l["group"] == "libctl_staff"),
        "{listed}"
    );

    let as_desk = url_as(&db, &desk);
    Libctl::with_url(&as_desk)
        .args(["db", "status", "--format", "json"])
        .stdout_contains("is bound to one member and acts only as them")
        .run();
    Libctl::new(&db)
        .args(["db", "status", "--format", "json"])
        .stdout_contains("single-login setup")
        .run();
    // Without --actor the login is its member: a librarian may lend to a reader.
    let loan = Libctl::with_url(&as_desk)
        .args(["borrow", "--member", "reader@library.test", "--book"])
        .args([crate::support::isbn(1), "--format".into(), "json".into()])
        .json();
    let reader_id: uuid::Uuid = db
        .client()
        .query_one(
            "SELECT id FROM member WHERE email = 'reader@library.test'",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(loan["member_id"], reader_id.to_string(), "{loan}");
    // Naming the admin is refused and audited, under the desk member and the login.
    Libctl::with_url(&as_desk)
        .actor(ADMIN)
        .args(["policy", "set", "--category", "public", "--loan-days", "90"])
        .status(5)
        .stderr_contains("error[actor_mismatch]")
        .run();
    Libctl::with_url(&as_desk)
        .args(["--actor", ADMIN, "closed-day", "add", "2030-01-01"])
        .status(5)
        .stderr_contains("error[actor_mismatch]")
        .run();
    assert_eq!(
        audit_count(
            &db,
            "SELECT count(*) FROM audit_log WHERE action = 'actor.assume' AND outcome = 'denied'
               AND actor = 'desk@library.test' AND db_user = $1 AND details->>'requested' = $2",
            &[&desk, &ADMIN],
        ),
        2
    );
    // Its own work carries the login too.
    assert_eq!(
        audit_count(
            &db,
            "SELECT count(*) FROM audit_log WHERE action = 'loan.borrow' AND outcome = 'ok'
               AND actor = 'desk@library.test' AND db_user = $1",
            &[&desk],
        ),
        1
    );
    // Nothing the admin alone may do happened.
    assert_eq!(
        audit_count(
            &db,
            "SELECT count(*) FROM closed_day WHERE day = '2030-01-01'",
            &[]
        ),
        0
    );
    // The password reached PostgreSQL and nothing else.
    assert_eq!(
        audit_count(
            &db,
            "SELECT count(*) FROM audit_log WHERE details::text LIKE '%secret%' OR action = 'login.grant' AND details::text LIKE '%password%'",
            &[],
        ),
        0
    );
    assert_eq!(
        audit_count(
            &db,
            "SELECT count(*) FROM audit_log WHERE action = 'login.grant' AND entity_id = $1",
            &[&desk],
        ),
        1
    );
    // Revoked, the login is gone from the server.
    Libctl::new(&db)
        .actor(ADMIN)
        .args(["staff", "revoke-login", "desk@library.test"])
        .run();
    assert_eq!(
        audit_count(
            &db,
            "SELECT count(*) FROM pg_roles WHERE rolname = $1",
            &[&desk]
        ),
        0
    );
}

#[test]
fn no_login_can_delete_or_update_the_audit_log_even_with_the_maintenance_setting() {
    let db = TestDb::new();
    let desk = login_name(&db, "desk");
    let _logins = Logins::new(&db, &[&desk]);
    let mut c = db.client();
    add_member(&mut c, "desk@library.test", "librarian");
    grant(&db, &["desk@library.test", "--login", &desk]);
    let before = audit_count(&db, "SELECT count(*) FROM audit_log", &[]);
    assert!(before > 0);
    let mut as_desk = Client::connect(&url_as(&db, &desk), NoTls).unwrap();
    for statement in [
        "SET LOCAL libctl.audit_maintenance = 'on'; DELETE FROM audit_log",
        "SET LOCAL libctl.audit_maintenance = 'on'; UPDATE audit_log SET outcome = 'ok'",
        "SET LOCAL libctl.audit_maintenance = 'on'; TRUNCATE audit_log",
    ] {
        let mut tx = as_desk.transaction().unwrap();
        let err = tx.batch_execute(statement).expect_err(statement);
        assert_eq!(
            err.code(),
            Some(&postgres::error::SqlState::INSUFFICIENT_PRIVILEGE),
            "{statement}: {err}"
        );
    }
    // Even a login that owns nothing but was given DELETE by mistake meets the trigger.
    c.batch_execute(&format!("GRANT DELETE, UPDATE ON audit_log TO {desk}"))
        .unwrap();
    let mut tx = as_desk.transaction().unwrap();
    let err = tx
        .batch_execute("SET LOCAL libctl.audit_maintenance = 'on'; DELETE FROM audit_log")
        .expect_err("the trigger refuses a non-owner");
    assert!(
        err.to_string().contains("append-only") || format!("{err:?}").contains("append-only"),
        "{err:?}"
    );
    drop(tx);
    assert_eq!(
        audit_count(&db, "SELECT count(*) FROM audit_log", &[]),
        before
    );
}

#[test]
fn a_delegate_acts_for_members_but_never_for_staff() {
    let db = TestDb::new();
    let kiosk = login_name(&db, "kiosk");
    let _logins = Logins::new(&db, &[&kiosk]);
    let mut c = db.client();
    add_member(&mut c, "desk@library.test", "librarian");
    add_member(&mut c, "reader@library.test", "member");
    add_book(&mut c, 1, 2);
    grant(&db, &["--delegate", "--login", &kiosk]);
    let as_kiosk = url_as(&db, &kiosk);
    let isbn = crate::support::isbn(1);
    Libctl::with_url(&as_kiosk)
        .actor("reader@library.test")
        .args(["borrow", "--member", "reader@library.test", "--book", &isbn])
        .run();
    Libctl::with_url(&as_kiosk)
        .actor("desk@library.test")
        .args(["borrow", "--member", "reader@library.test", "--book", &isbn])
        .status(5)
        .stderr_contains("error[actor_mismatch]")
        .run();
    Libctl::with_url(&as_kiosk)
        .args(["borrow", "--member", "reader@library.test", "--book", &isbn])
        .status(5)
        .stderr_contains("error[actor_mismatch]")
        .run();
    // The member's loan records both: the member as actor, the kiosk as login.
    assert_eq!(
        audit_count(
            &db,
            "SELECT count(*) FROM audit_log WHERE action = 'loan.borrow' AND outcome = 'ok'
               AND actor = 'reader@library.test' AND db_user = $1",
            &[&kiosk],
        ),
        1
    );
    assert_eq!(audit_count(&db, "SELECT count(*) FROM loan", &[]), 1);
}

#[test]
fn crons_login_acts_as_system_and_nobody_else() {
    let db = TestDb::new();
    let cron = login_name(&db, "cron");
    let _logins = Logins::new(&db, &[&cron]);
    grant(&db, &["--job", "--login", &cron]);
    let as_cron = url_as(&db, &cron);
    let sealed = Libctl::with_url(&as_cron)
        .args(["audit", "seal", "--format", "json"])
        .json();
    assert!(sealed["sealed"].is_array(), "{sealed}");
    Libctl::with_url(&as_cron)
        .actor(ADMIN)
        .args(["audit", "seal"])
        .status(5)
        .stderr_contains("error[actor_mismatch]")
        .run();
    let listed = Libctl::new(&db)
        .actor(ADMIN)
        .args(["staff", "logins", "--format", "json"])
        .json();
    assert!(
        listed
            .as_array()
            .unwrap()
            .iter()
            .any(|l| l["login"] == cron.as_str() && l["group"] == "libctl_job"),
        "{listed}"
    );
}

#[test]
fn a_reader_login_reads_but_cannot_write_and_an_unbound_login_cannot_act() {
    let db = TestDb::new();
    let reader = login_name(&db, "reports");
    let stray = login_name(&db, "stray");
    let _logins = Logins::new(&db, &[&reader, &stray]);
    let mut c = db.client();
    add_member(&mut c, "analyst@library.test", "librarian");
    add_member(&mut c, "reader@library.test", "member");
    add_book(&mut c, 1, 2);
    grant(
        &db,
        &["analyst@library.test", "--login", &reader, "--read-only"],
    );
    let as_reader = url_as(&db, &reader);
    Libctl::with_url(&as_reader)
        .args(["report", "inventory", "--format", "json", "--quiet"])
        .run();
    Libctl::with_url(&as_reader)
        .args([
            "borrow",
            "--member",
            "reader@library.test",
            "--book",
            &crate::support::isbn(1),
        ])
        .status(5)
        .stderr_contains("error[insufficient_privilege]")
        .run();
    assert_eq!(audit_count(&db, "SELECT count(*) FROM loan", &[]), 0);
    // A login in a libctl group that no admin bound to a member may not act at all.
    c.batch_execute(&format!("CREATE ROLE {stray} LOGIN IN ROLE libctl_staff"))
        .unwrap();
    Libctl::with_url(&url_as(&db, &stray))
        .args(["loans"])
        .status(5)
        .stderr_contains("error[unbound_login]")
        .run();
}

#[test]
fn an_existing_single_login_database_keeps_working_after_the_upgrade() {
    // A library that ran as one non-superuser login owning everything, migrated to V17 by
    // a superuser: the old login keeps its powers, the audit maintenance path included.
    let server = server_url();
    let mut admin = Client::connect(&server, NoTls).unwrap();
    let probe = TestDb::new();
    let legacy = login_name(&probe, "legacy");
    let name = format!("{}_legacy", probe.name);
    let _logins = Logins::new(&probe, &[&legacy]);
    admin
        .batch_execute(&format!("CREATE ROLE {legacy} LOGIN"))
        .unwrap();
    admin
        .batch_execute(&format!("CREATE DATABASE {name} OWNER {legacy}"))
        .unwrap();
    struct DropDb(String);
    impl Drop for DropDb {
        fn drop(&mut self) {
            if let Ok(mut a) = Client::connect(&server_url(), NoTls) {
                let _ =
                    a.batch_execute(&format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.0));
            }
        }
    }
    let _db = DropDb(name.clone());
    let (scheme, rest) = server.split_once("://").unwrap();
    let (_, host_db) = rest.split_once('@').unwrap();
    let (host, _) = host_db.rsplit_once('/').unwrap();
    let legacy_url = format!("{scheme}://{legacy}@{host}/{name}");
    let super_url = format!("{}/{name}", server.rsplit_once('/').unwrap().0);
    {
        let mut c = Client::connect(&legacy_url, NoTls).unwrap();
        libcore::db::migrate_to(&mut c, 16).unwrap();
        libcore::members::bootstrap_admin(&mut c, ADMIN, "Admin").unwrap();
    }
    {
        let mut c = Client::connect(&super_url, NoTls).unwrap();
        libcore::db::migrate(&mut c).unwrap();
        let owner: String = c
            .query_one(
                "SELECT pg_get_userbyid(relowner) FROM pg_class WHERE oid = 'audit_log'::regclass",
                &[],
            )
            .unwrap()
            .get(0);
        assert_eq!(owner, "libctl_owner");
    }
    Libctl::with_url(&legacy_url).args(["db", "check"]).run();
    Libctl::with_url(&legacy_url)
        .actor(ADMIN)
        .args(["member", "add", "--name", "R", "--email", "r@library.test"])
        .run();
    Libctl::with_url(&legacy_url)
        .actor(ADMIN)
        .args(["audit", "prune", "--before", "2000-01-01", "--confirm"])
        .run();
    Libctl::with_url(&legacy_url)
        .args(["db", "status", "--format", "json"])
        .stdout_contains("\"identity\"")
        .run();
}

#[test]
fn an_admin_login_prunes_through_the_owner_function_and_nobody_else_can_call_it() {
    let db = TestDb::new();
    let head = login_name(&db, "head");
    let desk = login_name(&db, "desk");
    let _logins = Logins::new(&db, &[&head, &desk]);
    let mut c = db.client();
    add_member(&mut c, "head@library.test", "admin");
    add_member(&mut c, "desk@library.test", "librarian");
    grant(&db, &["head@library.test", "--login", &head]);
    grant(&db, &["desk@library.test", "--login", &desk]);
    let old = chrono::Utc::now() - chrono::Duration::days(400);
    c.execute(
        "INSERT INTO audit_log (id, at, recorded_at, actor, actor_role, action, outcome)
         VALUES ($1, $2, $2, 'old@example.org', 'member', 'loan.borrow', 'ok')",
        &[&libcore::ids::new_id(old), &old],
    )
    .unwrap();
    // A desk login calling the function directly is refused by the function itself.
    let mut as_desk = Client::connect(&url_as(&db, &desk), NoTls).unwrap();
    let err = as_desk
        .execute(
            "SELECT libctl_audit_prune(now(), gen_random_uuid(), 'admin@library.test', 'admin')",
            &[],
        )
        .expect_err("not an admin");
    assert_eq!(
        err.code(),
        Some(&postgres::error::SqlState::INSUFFICIENT_PRIVILEGE),
        "{err}"
    );
    // The admin's own login prunes, without any DELETE privilege of its own.
    let cutoff = (chrono::Utc::now() - chrono::Duration::days(300)).to_rfc3339();
    let pruned = Libctl::with_url(&url_as(&db, &head))
        .args([
            "audit",
            "prune",
            "--before",
            &cutoff,
            "--confirm",
            "--format",
            "json",
        ])
        .json();
    assert_eq!(pruned["rows"], 1, "{pruned}");
    assert_eq!(
        audit_count(
            &db,
            "SELECT count(*) FROM audit_log WHERE action = 'audit.prune' AND actor = 'head@library.test'
               AND db_user = $1",
            &[&head],
        ),
        1
    );
    Libctl::with_url(&url_as(&db, &head))
        .args(["audit", "verify"])
        .run();
}
