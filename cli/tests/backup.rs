//! Backup, verify, restore, list and prune through the binary.

use std::path::Path;

use crate::support::*;
use crate::util::*;

/// An order-independent digest of every table (the restore's own audit row left out).
fn digest(url: &str) -> Vec<(String, i64, String)> {
    let mut c = postgres::Client::connect(url, postgres::NoTls).unwrap();
    let mut out: Vec<(String, i64, String)> = libcore::db::TABLES
        .iter()
        .filter(|t| **t != "audit_log")
        .map(|t| {
            let r = c
                .query_one(&format!("SELECT count(*), md5(coalesce(string_agg(t::text, '|' ORDER BY t::text), '')) FROM {t} t"), &[])
                .unwrap();
            (t.to_string(), r.get(0), r.get(1))
        })
        .collect();
    let r = c
        .query_one(
            "SELECT count(*), md5(coalesce(string_agg(t::text, '|' ORDER BY t::text), '')) FROM audit_log t WHERE action <> 'backup.restore'",
            &[],
        )
        .unwrap();
    out.push(("audit_log".into(), r.get(0), r.get(1)));
    out
}

fn seeded() -> TestDb {
    let db = TestDb::new();
    Libctl::new(&db)
        .args(["seed", "--scenario", "tiny", "--as-of", "2026-01-15"])
        .run()
        .expect(0);
    db
}

fn scratch_url(db: &TestDb, suffix: &str) -> String {
    format!("{}_{suffix}", db.url)
}

struct Dropper(String);
impl Drop for Dropper {
    fn drop(&mut self) {
        let _ = libcore::db::drop_database_if_exists(&self.0);
    }
}

fn create(db: &TestDb, root: &Path, name: &str) -> Run {
    Libctl::new(db)
        .args(["backup", "create", "--jobs", "2", "--name", name, "--dir"])
        .arg_path(root)
        .run()
}

#[test]
fn round_trip_create_verify_restore_gives_identical_tables() {
    let db = seeded();
    let root = tempfile::tempdir().unwrap();
    create(&db, root.path(), "first").expect(0);
    let dir = root.path().join("first");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            std::fs::metadata(&dir).unwrap().permissions().mode() & 0o777,
            0o700
        );
        assert_eq!(
            std::fs::metadata(dir.join("loan.copy.zst"))
                .unwrap()
                .permissions()
                .mode()
                & 0o777,
            0o600
        );
    }
    let manifest: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("manifest.json")).unwrap()).unwrap();
    assert_eq!(manifest["format_version"], 1);
    assert_eq!(manifest["schema_version"], libcore::db::latest_version());
    let loan = manifest["tables"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["table"] == "loan")
        .unwrap();
    assert!(loan["rows"].as_u64().unwrap() > 0 && loan["blake3"].as_str().unwrap().len() == 64);
    Libctl::new(&db)
        .args(["backup", "verify"])
        .arg_path(&dir)
        .run()
        .expect(0);
    let target = scratch_url(&db, "restored");
    let _cleanup = Dropper(target.clone());
    Libctl::new(&db)
        .actor(ADMIN)
        .args(["backup", "restore", "--target-url", &target, "--jobs", "2"])
        .arg_path(&dir)
        .run()
        .expect(0);
    assert_eq!(digest(&target), digest(&db.url));
    let status = Libctl::with_url(&target)
        .args(["db", "status", "--format", "json"])
        .run()
        .json();
    assert_eq!(status["state"], "ok");
    // A second restore into the now non-empty target needs --force.
    let again = Libctl::new(&db)
        .actor(ADMIN)
        .args(["backup", "restore", "--target-url", &target])
        .arg_path(&dir)
        .run()
        .expect(4);
    assert!(again.stderr().contains("error[target_not_empty]"));
    Libctl::new(&db)
        .actor(ADMIN)
        .args(["backup", "restore", "--force", "--target-url", &target])
        .arg_path(&dir)
        .run()
        .expect(0);
    assert_eq!(digest(&target), digest(&db.url));
}

#[test]
fn corruption_is_found_and_restore_refuses() {
    let db = seeded();
    let root = tempfile::tempdir().unwrap();
    create(&db, root.path(), "b").expect(0);
    let dir = root.path().join("b");
    let file = dir.join("loan.copy.zst");
    let mut bytes = std::fs::read(&file).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x5A;
    std::fs::write(&file, &bytes).unwrap();
    let run = Libctl::new(&db)
        .args(["backup", "verify"])
        .arg_path(&dir)
        .run()
        .expect(8);
    assert!(run.stderr().contains("loan.copy.zst"), "{}", run.stderr());
    let target = scratch_url(&db, "never");
    let _cleanup = Dropper(target.clone());
    Libctl::new(&db)
        .actor(ADMIN)
        .args(["backup", "restore", "--target-url", &target])
        .arg_path(&dir)
        .run()
        .expect(8);

    create(&db, root.path(), "c").expect(0);
    let dir = root.path().join("c");
    let file = dir.join("book.copy.zst");
    let bytes = std::fs::read(&file).unwrap();
    std::fs::write(&file, &bytes[..bytes.len() - 10]).unwrap();
    let run = Libctl::new(&db)
        .args(["backup", "verify"])
        .arg_path(&dir)
        .run()
        .expect(8);
    assert!(run.stderr().contains("book.copy.zst"), "{}", run.stderr());

    create(&db, root.path(), "d").expect(0);
    std::fs::remove_file(root.path().join("d").join("manifest.json")).unwrap();
    let listed = Libctl::new(&db)
        .args(["backup", "list", "--format", "json"])
        .arg_path(root.path())
        .run()
        .json();
    let names: Vec<&str> = listed
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["name"].as_str().unwrap())
        .collect();
    assert!(
        !names.contains(&"d"),
        "a directory without a manifest is not a backup: {names:?}"
    );
    Libctl::new(&db)
        .args(["backup", "verify"])
        .arg_path(&root.path().join("d"))
        .run()
        .expect(8);
}

#[test]
fn an_interrupted_restore_is_reported_incomplete_and_a_killed_create_leaves_nothing_complete() {
    let db = seeded();
    let root = tempfile::tempdir().unwrap();
    create(&db, root.path(), "good").expect(0);
    let target = scratch_url(&db, "half");
    let _cleanup = Dropper(target.clone());
    Libctl::new(&db)
        .actor(ADMIN)
        .env("LIBCTL_RESTORE_FAIL_AFTER", "load")
        .args(["backup", "restore", "--target-url", &target])
        .arg_path(&root.path().join("good"))
        .run()
        .expect(1);
    let status = Libctl::with_url(&target)
        .args(["db", "status", "--format", "json"])
        .run()
        .json();
    assert!(
        status["state"].as_str().unwrap().starts_with("incomplete"),
        "{status}"
    );
    let refused = Libctl::with_url(&target)
        .args(["book", "list"])
        .run()
        .expect(10);
    assert!(
        refused.stderr().contains("incomplete"),
        "{}",
        refused.stderr()
    );
    Libctl::new(&db)
        .actor(ADMIN)
        .args(["backup", "restore", "--force", "--target-url", &target])
        .arg_path(&root.path().join("good"))
        .run()
        .expect(0);
    assert_eq!(
        Libctl::with_url(&target)
            .args(["db", "status", "--format", "json"])
            .run()
            .json()["state"],
        "ok"
    );

    // Kill a create part-way: whatever is left, nothing incomplete looks like a backup.
    let mut child = std::process::Command::new(assert_cmd::cargo::cargo_bin("libctl"))
        .env("DATABASE_URL", &db.url)
        .args(["backup", "create", "--name", "killed", "--dir"])
        .arg(root.path())
        .spawn()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(30));
    child.kill().unwrap();
    child.wait().unwrap();
    let listed = Libctl::new(&db)
        .args(["backup", "list", "--format", "json"])
        .arg_path(root.path())
        .run()
        .json();
    for backup in listed.as_array().unwrap() {
        let dir = root.path().join(backup["name"].as_str().unwrap());
        Libctl::new(&db)
            .args(["backup", "verify"])
            .arg_path(&dir)
            .run()
            .expect(0);
    }
}

#[test]
fn prune_keeps_what_the_policy_says_and_old_partials_go() {
    let db = seeded();
    let root = tempfile::tempdir().unwrap();
    for name in ["n1", "n2", "n3"] {
        create(&db, root.path(), name).expect(0);
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    std::fs::create_dir(root.path().join("stale.partial")).unwrap();
    std::fs::create_dir(root.path().join("running.partial")).unwrap();
    let status = std::process::Command::new("touch")
        .args(["-d", "2 days ago"])
        .arg(root.path().join("stale.partial"))
        .status()
        .unwrap();
    assert!(status.success());
    let dry = Libctl::new(&db)
        .args([
            "backup",
            "prune",
            "--keep-last",
            "2",
            "--dry-run",
            "--format",
            "json",
        ])
        .arg_path(root.path())
        .run()
        .json();
    assert_eq!(dry["removed"], serde_json::json!(["n1"]));
    assert!(root.path().join("n1").exists(), "a dry run removes nothing");
    let done = Libctl::new(&db)
        .args(["backup", "prune", "--keep-last", "2", "--format", "json"])
        .arg_path(root.path())
        .run()
        .json();
    assert_eq!(done["kept"], serde_json::json!(["n3", "n2"]));
    assert_eq!(
        done["removed_partial"],
        serde_json::json!(["stale.partial"])
    );
    assert!(!root.path().join("n1").exists() && !root.path().join("stale.partial").exists());
    assert!(
        root.path().join("running.partial").exists(),
        "a young .partial may be a backup in progress"
    );
    Libctl::new(&db)
        .args(["backup", "prune"])
        .arg_path(root.path())
        .run()
        .expect(7);
}

#[test]
fn only_admins_and_system_back_up_and_only_admins_restore() {
    let db = seeded();
    let mut c = db.client();
    let lib = add_member(&mut c, "desk@example.org", "librarian");
    let root = tempfile::tempdir().unwrap();
    Libctl::new(&db)
        .actor(&lib)
        .args(["backup", "create", "--dir"])
        .arg_path(root.path())
        .run()
        .expect(5);
    create(&db, root.path(), "sys").expect(0);
    let target = scratch_url(&db, "denied");
    let _cleanup = Dropper(target.clone());
    Libctl::new(&db)
        .args(["backup", "restore", "--target-url", &target])
        .arg_path(&root.path().join("sys"))
        .run()
        .expect(5);
    Libctl::new(&db)
        .actor(&lib)
        .args(["backup", "restore", "--target-url", &target])
        .arg_path(&root.path().join("sys"))
        .run()
        .expect(5);
}

#[test]
fn a_backup_taken_under_concurrent_writes_restores_to_one_consistent_point() {
    let db = seeded();
    let root = tempfile::tempdir().unwrap();
    let url = db.url.clone();
    let load = std::thread::spawn(move || {
        Libctl::with_url(&url)
            .args([
                "bench",
                "borrow",
                "--clients",
                "3",
                "--duration",
                "3",
                "--format",
                "json",
            ])
            .run()
            .json()
    });
    std::thread::sleep(std::time::Duration::from_millis(800));
    for i in 0..4 {
        create(&db, root.path(), &format!("live{i}")).expect(0);
    }
    assert_eq!(load.join().unwrap()["invariants_ok"], true);
    for i in 0..4 {
        let target = scratch_url(&db, &format!("live{i}"));
        let _cleanup = Dropper(target.clone());
        // restore runs db check itself: a loan without its copy decrement would exit 8.
        Libctl::new(&db)
            .actor(ADMIN)
            .args(["backup", "restore", "--target-url", &target])
            .arg_path(&root.path().join(format!("live{i}")))
            .run()
            .expect(0);
    }
}
