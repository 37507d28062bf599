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
    let db = seeded_tiny();
    let root = tempfile::tempdir().unwrap();
    create(&db, root.path(), "first");
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
    assert_eq!(manifest["format_version"], libcore::backup::FORMAT_VERSION);
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
        .run();
    let target = scratch_url(&db, "restored");
    let _cleanup = Dropper(target.clone());
    Libctl::new(&db)
        .actor(ADMIN)
        .args(["backup", "restore", "--target-url", &target, "--jobs", "2"])
        .arg_path(&dir)
        .run();
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
        .status(4)
        .run();
    assert!(again.stderr().contains("error[target_not_empty]"));
    Libctl::new(&db)
        .actor(ADMIN)
        .args(["backup", "restore", "--force", "--target-url", &target])
        .arg_path(&dir)
        .run();
    assert_eq!(digest(&target), digest(&db.url));
}

#[test]
fn corruption_is_found_and_restore_refuses() {
    let db = seeded_tiny();
    let root = tempfile::tempdir().unwrap();
    create(&db, root.path(), "b");
    let dir = root.path().join("b");
    let file = dir.join("loan.copy.zst");
    let mut bytes = std::fs::read(&file).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x5A;
    std::fs::write(&file, &bytes).unwrap();
    let run = Libctl::new(&db)
        .args(["backup", "verify"])
        .arg_path(&dir)
        .status(8)
        .run();
    assert!(run.stderr().contains("loan.copy.zst"), "{}", run.stderr());
    let target = scratch_url(&db, "never");
    let _cleanup = Dropper(target.clone());
    Libctl::new(&db)
        .actor(ADMIN)
        .args(["backup", "restore", "--target-url", &target])
        .arg_path(&dir)
        .status(8)
        .run();

    create(&db, root.path(), "c");
    let dir = root.path().join("c");
    let file = dir.join("book.copy.zst");
    let bytes = std::fs::read(&file).unwrap();
    std::fs::write(&file, &bytes[..bytes.len() - 10]).unwrap();
    let run = Libctl::new(&db)
        .args(["backup", "verify"])
        .arg_path(&dir)
        .status(8)
        .run();
    assert!(run.stderr().contains("book.copy.zst"), "{}", run.stderr());

    create(&db, root.path(), "d");
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
        .status(8)
        .run();
}

fn exists(url: &str) -> bool {
    libcore::db::database_exists(url).unwrap()
}

/// The count of every kind of schema object, for a readable failure.
fn schema_is_whole(url: &str) {
    Libctl::with_url(url).args(["db", "check"]).run();
    let mut c = postgres::Client::connect(url, postgres::NoTls).unwrap();
    assert!(libcore::schema::differences(
        &libcore::schema::expected(),
        &libcore::schema::objects(&mut c).unwrap()
    )
    .is_empty());
}

fn restore_cmd(db: &TestDb, dir: &Path, target: &str) -> std::process::Command {
    let mut cmd = std::process::Command::new(assert_cmd::cargo::cargo_bin("libctl"));
    cmd.env("DATABASE_URL", &db.url)
        .env("LIBCTL_ACTOR", ADMIN)
        .args([
            "backup",
            "restore",
            "--force",
            "--jobs",
            "2",
            "--target-url",
            target,
        ])
        .arg(dir)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    cmd
}

/// kill -9 at every step of a restore, and at random moments, then rerun: the target is the
/// library it was or the backup, never anything between, its schema is whole, and the rerun
/// finishes the job. The restore builds beside the target and swaps in one transaction.
#[test]
fn a_restore_killed_at_any_point_leaves_the_target_before_or_after_and_a_rerun_finishes() {
    let db = seeded_tiny();
    let root = tempfile::tempdir().unwrap();
    create(&db, root.path(), "good");
    let dir = root.path().join("good");
    let target = scratch_url(&db, "killed");
    let _cleanup = Dropper(target.clone());
    let staging = format!("{target}{}", libcore::restore::STAGING_SUFFIX);
    let replaced = format!("{target}{}", libcore::restore::REPLACED_SUFFIX);
    let _staging = Dropper(staging.clone());
    let _replaced = Dropper(replaced.clone());
    // The target starts as another library.
    Libctl::with_url(&target)
        .args([
            "seed",
            "--scenario",
            "tiny",
            "--seed",
            "7",
            "--as-of",
            "2026-01-10",
        ])
        .run();
    let after = digest(&db.url);
    assert_ne!(digest(&target), after);
    let mut points: Vec<Option<&str>> = [
        "authorised",
        "migrated",
        "prepared",
        "load",
        "rebuilt",
        "checked",
        "swapped",
    ]
    .into_iter()
    .map(Some)
    .collect();
    points.extend([None, None, None]);
    let mut seen_before = 0;
    let mut seen_after = 0;
    for (i, point) in points.into_iter().enumerate() {
        let before = digest(&target);
        let mut cmd = restore_cmd(&db, &dir, &target);
        let mut child = match point {
            // The restore stops at its step and says so; the kill lands there, once
            // everything before the step is done.
            Some(step) => {
                cmd.env("LIBCTL_RESTORE_PAUSE_AT", step)
                    .stderr(std::process::Stdio::piped());
                let mut child = cmd.spawn().unwrap();
                let stderr = std::io::BufReader::new(child.stderr.take().unwrap());
                let reached = std::io::BufRead::lines(stderr)
                    .map_while(Result::ok)
                    .any(|line| line.contains(&format!("restore paused at {step}")));
                assert!(reached, "the restore never reached {step}");
                child
            }
            // Random moments, spread over a restore's length.
            None => {
                let child = cmd.spawn().unwrap();
                std::thread::sleep(std::time::Duration::from_millis(150 + 370 * (i as u64 % 7)));
                child
            }
        };
        let _ = child.kill();
        child.wait().unwrap();
        let now = digest(&target);
        assert!(
            now == before || now == after,
            "killed at {point:?}: the target is neither the library it was nor the backup"
        );
        if now == before {
            seen_before += 1;
        } else {
            seen_after += 1;
        }
        schema_is_whole(&target);
        let status = Libctl::with_url(&target)
            .args(["db", "status", "--format", "json"])
            .run()
            .json();
        assert_eq!(status["state"], "ok", "killed at {point:?}: {status}");
        // The rerun finishes the job and leaves nothing beside the target.
        let rerun = restore_cmd(&db, &dir, &target).status().unwrap();
        assert!(rerun.success(), "rerun after a kill at {point:?}");
        assert_eq!(digest(&target), after, "rerun after a kill at {point:?}");
        schema_is_whole(&target);
        assert!(!exists(&staging) && !exists(&replaced));
        // Back to the other library for the next round.
        Libctl::with_url(&target)
            .actor(ADMIN)
            .args([
                "seed",
                "--scenario",
                "tiny",
                "--seed",
                "7",
                "--as-of",
                "2026-01-10",
                "--replace",
                "--confirm",
            ])
            .run();
    }
    assert!(
        seen_before > 0 && seen_after > 0,
        "{seen_before} before, {seen_after} after"
    );
}

/// Who may restore is decided by the target when it holds a library, else by the backup;
/// DATABASE_URL plays no part, so the runbook's disaster (it names the lost database) works.
#[test]
fn restore_is_authorised_by_the_target_or_else_by_the_backup() {
    let db = seeded_tiny();
    let root = tempfile::tempdir().unwrap();
    create(&db, root.path(), "b");
    let dir = root.path().join("b");
    // Mallory initialises a database of her own, where she is the admin.
    let other = scratch_url(&db, "mallory");
    let _other = Dropper(other.clone());
    Libctl::with_url(&other)
        .args([
            "db",
            "init",
            "--admin-email",
            "mallory@evil.test",
            "--admin-name",
            "M",
        ])
        .run();
    // The victim is a library where Mallory is nobody.
    let victim = scratch_url(&db, "victim");
    let _victim = Dropper(victim.clone());
    Libctl::with_url(&victim)
        .args([
            "seed",
            "--scenario",
            "tiny",
            "--seed",
            "3",
            "--as-of",
            "2026-01-12",
        ])
        .run();
    let victim_before = digest(&victim);
    let run = Libctl::with_url(&other)
        .actor("mallory@evil.test")
        .args(["backup", "restore", "--force", "--target-url", &victim])
        .arg_path(&dir)
        .status(5)
        .run();
    assert!(run.stderr().contains("unknown_actor"), "{}", run.stderr());
    assert_eq!(digest(&victim), victim_before);
    // An empty target: the actor must be an admin in the backup. Mallory is not.
    let fresh = scratch_url(&db, "fresh");
    let _fresh = Dropper(fresh.clone());
    Libctl::with_url(&other)
        .actor("mallory@evil.test")
        .args(["backup", "restore", "--target-url", &fresh])
        .arg_path(&dir)
        .status(5)
        .run();
    assert!(!exists(&format!(
        "{fresh}{}",
        libcore::restore::STAGING_SUFFIX
    )));
    let librarian = Libctl::with_url(&other)
        .actor("librarian1@library.test")
        .args(["backup", "restore", "--target-url", &fresh])
        .arg_path(&dir)
        .status(5)
        .run();
    assert!(
        librarian.stderr().contains("permission_denied"),
        "{}",
        librarian.stderr()
    );
    // The disaster: DATABASE_URL names the lost database, and the backup's admin restores.
    let lost = scratch_url(&db, "lost");
    let run = Libctl::with_url(&lost)
        .actor(ADMIN)
        .args([
            "backup",
            "restore",
            "--target-url",
            &fresh,
            "--format",
            "json",
        ])
        .arg_path(&dir)
        .run()
        .json();
    assert_eq!(run["authorised_by"], "backup");
    assert_eq!(digest(&fresh), digest(&db.url));
    assert!(!exists(&lost));
}

#[test]
fn a_killed_or_failed_create_leaves_nothing_that_looks_complete_nor_any_partial() {
    let db = seeded_tiny();
    let root = tempfile::tempdir().unwrap();
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
            .run();
    }
    // A create that fails removes its .partial at once.
    Libctl::new(&db)
        .env("LIBCTL_BACKUP_FAIL_AT", "loan")
        .args(["backup", "create", "--name", "failed", "--dir"])
        .arg_path(root.path())
        .status(1)
        .run();
    assert!(!root.path().join("failed.partial").exists());
    assert!(!root.path().join("failed").exists());
}

#[cfg(unix)]
#[test]
fn a_shared_root_keeps_its_mode_and_every_file_is_private() {
    use std::os::unix::fs::PermissionsExt;
    let db = seeded_tiny();
    let shared = tempfile::tempdir().unwrap();
    std::fs::set_permissions(shared.path(), std::fs::Permissions::from_mode(0o1777)).unwrap();
    create(&db, shared.path(), "b");
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o7777;
    assert_eq!(
        mode(shared.path()),
        0o1777,
        "the root is not ours to re-mode"
    );
    let dir = shared.path().join("b");
    assert_eq!(mode(&dir), 0o700);
    Libctl::new(&db)
        .args(["backup", "verify"])
        .arg_path(&dir)
        .run();
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        assert_eq!(mode(&path), 0o600, "{}", path.display());
    }
    assert!(dir.join("verified.json").exists());
}

/// The manifest is checked before it is trusted: its checksum, every table of its schema
/// version, and plain file names inside the backup.
#[test]
fn a_tampered_manifest_is_refused() {
    let db = seeded_tiny();
    let root = tempfile::tempdir().unwrap();
    create(&db, root.path(), "b");
    let dir = root.path().join("b");
    let manifest_path = dir.join("manifest.json");
    let original = std::fs::read_to_string(&manifest_path).unwrap();
    let rewrite = |edit: &dyn Fn(&mut serde_json::Value), reseal: bool| {
        let mut m: serde_json::Value = serde_json::from_str(&original).unwrap();
        edit(&mut m);
        let text = serde_json::to_string_pretty(&m).unwrap();
        std::fs::write(&manifest_path, &text).unwrap();
        if reseal {
            std::fs::write(
                dir.join("manifest.blake3"),
                format!("{}\n", blake3::hash(text.as_bytes()).to_hex()),
            )
            .unwrap();
        }
    };
    let drop_audit = |m: &mut serde_json::Value| {
        m["tables"]
            .as_array_mut()
            .unwrap()
            .retain(|t| t["table"] != "audit_log");
    };
    let escape = |m: &mut serde_json::Value| {
        m["tables"][0]["file"] = "../../etc/passwd".into();
    };
    for (edit, reseal, expect) in [
        (
            &drop_audit as &dyn Fn(&mut serde_json::Value),
            false,
            "checksum",
        ),
        (&drop_audit, true, "audit_log"),
        (&escape, true, "etc/passwd"),
    ] {
        rewrite(edit, reseal);
        let run = Libctl::new(&db)
            .args(["backup", "verify"])
            .arg_path(&dir)
            .status(8)
            .run();
        assert!(run.stderr().contains(expect), "{}", run.stderr());
        let target = scratch_url(&db, "tampered");
        let _cleanup = Dropper(target.clone());
        Libctl::new(&db)
            .actor(ADMIN)
            .args(["backup", "restore", "--target-url", &target])
            .arg_path(&dir)
            .status(8)
            .run();
        assert!(!exists(&target));
    }
}

#[test]
fn prune_keeps_what_the_policy_says_and_old_partials_go() {
    let db = seeded_tiny();
    let root = tempfile::tempdir().unwrap();
    for name in ["n1", "n2", "n3"] {
        create(&db, root.path(), name);
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
        .status(7)
        .run();
}

#[test]
fn only_admins_and_system_back_up_and_only_admins_restore() {
    let db = seeded_tiny();
    let mut c = db.client();
    let lib = add_member(&mut c, "desk@example.org", "librarian");
    let root = tempfile::tempdir().unwrap();
    Libctl::new(&db)
        .actor(&lib)
        .args(["backup", "create", "--dir"])
        .arg_path(root.path())
        .status(5)
        .run();
    create(&db, root.path(), "sys");
    let target = scratch_url(&db, "denied");
    let _cleanup = Dropper(target.clone());
    Libctl::new(&db)
        .args(["backup", "restore", "--target-url", &target])
        .arg_path(&root.path().join("sys"))
        .status(5)
        .run();
    Libctl::new(&db)
        .actor(&lib)
        .args(["backup", "restore", "--target-url", &target])
        .arg_path(&root.path().join("sys"))
        .status(5)
        .run();
}

#[test]
fn a_backup_taken_under_concurrent_writes_restores_to_one_consistent_point() {
    let db = seeded_tiny();
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
        create(&db, root.path(), &format!("live{i}"));
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
            .run();
    }
}
