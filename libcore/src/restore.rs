//! `backup restore`: a backup becomes the target database whole, or the target stays as it was.
//!
//! The restore never works inside the target. It builds the library in a staging database
//! beside it (`<target>__restore`): created fresh, migrated to the backup's schema version, so
//! the keys, indexes and foreign keys it drops for the load and rebuilds afterwards come from a
//! catalog that this run's own migration just wrote — never from one an earlier, killed run
//! stripped. The staging database is marked incomplete until it has passed `db check` (the
//! schema against that fresh catalog, and every data invariant) and every table's row count
//! matches the manifest; the restore's audit row is written there too. Then one transaction on
//! the server renames the target away and the staging database into its place, and the old
//! target is dropped.
//!
//! So a kill at any moment leaves the target as before (the swap has not committed) or as after
//! (it has), and a rerun starts the staging database from nothing and finishes the job; a
//! leftover `<target>__restore` or `<target>__replaced` is dropped by the next restore.
//!
//! Who may restore is decided where it matters: when the target holds a library, the actor
//! must be an admin of that library; when it holds none (it is missing, empty, or what a
//! disaster left), the actor must be an admin in the backup itself.

use std::fs;
use std::io::BufReader;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde::Serialize;

use crate::actor::{Capability, Ctx};
use crate::backup::{read_manifest, verify, TableEntry};
use crate::error::{Error, Refusal, Result};

/// Suffix of the staging database a restore builds.
pub const STAGING_SUFFIX: &str = "__restore";
/// Suffix the replaced target carries between the swap and its drop.
pub const REPLACED_SUFFIX: &str = "__replaced";

/// Options of `backup restore`.
#[derive(Debug, Clone)]
pub struct RestoreOptions {
    /// The target database.
    pub target_url: String,
    /// Worker connections.
    pub jobs: usize,
    /// Replace a non-empty target.
    pub force: bool,
}

/// What a restore did.
#[derive(Debug, Clone, Serialize)]
pub struct Restored {
    /// Source backup.
    pub path: PathBuf,
    /// Rows loaded.
    pub rows: u64,
    /// Seconds, verification included.
    pub seconds: f64,
    /// Seconds of verification.
    pub verify_seconds: f64,
    /// Whose authority allowed it: `target` (an admin of the library replaced) or `backup`
    /// (an admin in the backup, the target holding no library).
    pub authorised_by: &'static str,
}

/// Test-only failure injection: `LIBCTL_RESTORE_PAUSE_AT=STEP` stops at a step, says so on
/// stderr and waits there, so a test can kill the process exactly there, however slow the
/// machine; `LIBCTL_RESTORE_FAIL_AFTER=STEP` fails there instead.
fn step(name: &str) -> Result<()> {
    if std::env::var("LIBCTL_RESTORE_PAUSE_AT").is_ok_and(|s| s == name) {
        eprintln!("libctl: restore paused at {name}");
        std::thread::sleep(std::time::Duration::from_secs(60));
    }
    if std::env::var("LIBCTL_RESTORE_FAIL_AFTER").is_ok_and(|s| s == name) {
        return Err(Error::Internal(format!(
            "injected failure after {name} (LIBCTL_RESTORE_FAIL_AFTER)"
        )));
    }
    tracing::debug!(step = name, "restore");
    Ok(())
}

/// What the target holds before the restore.
enum Target {
    /// No database, no libctl schema, or no member: nobody there to ask.
    NoLibrary,
    /// A library: its data decides `--force`, its admins decide who may replace it.
    Library { has_data: bool },
}

fn inspect_target(url: &str) -> Result<Target> {
    if !crate::db::database_exists(url)? {
        return Ok(Target::NoLibrary);
    }
    let mut client = crate::db::connect(url)?;
    let has_members: bool = client
        .query_one(
            "SELECT to_regclass('member') IS NOT NULL AND to_regclass('refinery_schema_history') IS NOT NULL",
            &[],
        )?
        .get(0);
    if !has_members {
        return Ok(Target::NoLibrary);
    }
    let row = client.query_one(
        "SELECT EXISTS (SELECT 1 FROM member),
                EXISTS (SELECT 1 FROM member) OR EXISTS (SELECT 1 FROM book)
                  OR (to_regclass('loan') IS NOT NULL AND EXISTS (SELECT 1 FROM loan))",
        &[],
    )?;
    if !row.get::<_, bool>(0) {
        return Ok(Target::NoLibrary);
    }
    Ok(Target::Library {
        has_data: row.get(1),
    })
}

/// Resolves `actor` in the database at `url` and requires an admin there.
fn authorise_in(url: &str, actor: Option<&str>) -> Result<Ctx> {
    let mut client = crate::db::connect(url)?;
    let ctx = crate::actor::resolve(&mut client, actor, None)?;
    ctx.require(Capability::Administer)?;
    Ok(ctx)
}

/// `backup restore DIR --target-url URL`: see the module documentation.
pub fn restore(dir: &Path, actor: Option<&str>, options: &RestoreOptions) -> Result<Restored> {
    let started = std::time::Instant::now();
    let manifest = read_manifest(dir)?;
    verify(dir, options.jobs)?;
    let verify_seconds = started.elapsed().as_secs_f64();
    if manifest.schema_version > crate::db::latest_version() {
        return Err(Error::Schema(format!(
            "the backup's schema version {} is newer than this binary's {}; restore with a newer libctl",
            manifest.schema_version,
            crate::db::latest_version()
        )));
    }
    let target_url = &options.target_url;
    let target_name = crate::db::database_name(target_url)?;
    let staging_url = sibling(target_url, &target_name, STAGING_SUFFIX)?;
    let replaced_url = sibling(target_url, &target_name, REPLACED_SUFFIX)?;

    // Who may do this, and may the target be replaced?
    let (target_ctx, authorised_by) = match inspect_target(target_url)? {
        Target::Library { has_data } => {
            let ctx = authorise_in(target_url, actor)?;
            if has_data && !options.force {
                return Err(Error::refused(
                    Refusal::TargetNotEmpty,
                    "the target database holds a library; pass --force to replace it",
                ));
            }
            (Some(ctx), "target")
        }
        Target::NoLibrary => (None, "backup"),
    };
    step("authorised")?;

    // The staging database, from nothing, at the backup's version.
    crate::db::drop_database_if_exists(&staging_url)?;
    crate::db::drop_database_if_exists(&replaced_url)?;
    crate::db::create_database_if_missing(&staging_url)?;
    let mut client = crate::db::connect(&staging_url)?;
    crate::db::migrate_to(&mut client, manifest.schema_version)?;
    let fresh_catalog = crate::schema::objects(&mut client)?;
    step("migrated")?;
    // Each month of history arrives as a plain table of its parent's columns and checks,
    // without indexes; once loaded, ATTACH builds its indexes from the parent's. The parent's
    // own index definitions are never replayed, so no index is left `ON ONLY` a parent.
    let leaves: Vec<(&str, chrono::NaiveDate)> = manifest
        .tables
        .iter()
        .filter_map(|t| crate::db::partition_of(&t.table))
        .collect();
    for (parent, month) in &leaves {
        crate::archive::make_detached(&mut client, parent, *month)?;
    }
    let tables = crate::backup::data_tables(&mut client)?;
    let listed: Vec<&String> = manifest.tables.iter().map(|t| &t.table).collect();
    if tables.iter().any(|t| !listed.contains(&t)) || listed.iter().any(|t| !tables.contains(t)) {
        return Err(Error::Integrity {
            violations: vec![format!(
                "the manifest lists {listed:?}, but schema version {} has {tables:?}",
                manifest.schema_version
            )],
        });
    }
    let schema = {
        let mut tx = client.transaction()?;
        tx.batch_execute("SET LOCAL libctl.audit_maintenance = 'on'")?;
        let schema = crate::bulk::capture_and_drop(&mut tx, &tables)?;
        tx.batch_execute(&format!("TRUNCATE {}", tables.join(", ")))?;
        tx.execute(
            "INSERT INTO library_setting (key, value) VALUES ('incomplete', 'restore')",
            &[],
        )?;
        tx.commit()?;
        schema
    };
    step("prepared")?;
    load_parallel(&staging_url, dir, &manifest.tables, options.jobs)?;
    for (parent, month) in &leaves {
        crate::archive::attach(&mut client, parent, *month)?;
    }
    step("load")?;

    // With no library to replace, the backup's own admins decide.
    let ctx = match target_ctx {
        Some(ctx) => ctx,
        None => match authorise_in(&staging_url, actor) {
            Ok(ctx) => ctx,
            Err(e) => {
                drop(client);
                let _ = crate::db::drop_database_if_exists(&staging_url);
                return Err(e);
            }
        },
    };

    crate::bulk::rebuild_parallel(&staging_url, &schema, options.jobs)?;
    if tables.iter().any(|t| t == "item") {
        // Generated barcodes continue after the restored ones.
        crate::items::catch_up_barcodes(&mut client)?;
    }
    // Loaded without their triggers (bulk::capture_and_drop), the running totals are recounted.
    crate::tally::reset_in(&mut client)?;
    step("rebuilt")?;
    crate::bulk::analyze(
        &mut client,
        manifest
            .tables
            .iter()
            .filter(|t| t.rows > 0)
            .map(|t| t.table.as_str()),
    )?;
    let results = crate::db::check_against(&mut client, &fresh_catalog)?;
    crate::db::fail_on_violations(&results)?;
    compare_counts(&mut client, &manifest.tables)?;
    let restored = Restored {
        path: dir.to_path_buf(),
        rows: manifest.rows(),
        seconds: 0.0,
        verify_seconds,
        authorised_by,
    };
    {
        let mut tx = client.transaction()?;
        tx.execute("DELETE FROM library_setting WHERE key = 'incomplete'", &[])?;
        crate::audit::record(
            &mut tx,
            &ctx,
            &crate::audit::Entry {
                action: "backup.restore",
                entity_type: "database",
                entity_id: None,
                outcome: "ok",
                details: serde_json::json!({
                    "backup": dir, "rows": restored.rows, "created_at": manifest.created_at,
                    "target": target_name, "authorised_by": authorised_by,
                }),
            },
        )?;
        tx.commit()?;
    }
    drop(client);
    step("checked")?;
    crate::db::swap_databases(target_url, &staging_url, &replaced_url)?;
    step("swapped")?;
    crate::db::drop_database_if_exists(&replaced_url)?;
    Ok(Restored {
        seconds: started.elapsed().as_secs_f64(),
        ..restored
    })
}

/// The URL of the database named `<target><suffix>` on the same server.
fn sibling(target_url: &str, target_name: &str, suffix: &str) -> Result<String> {
    let name = format!("{target_name}{suffix}");
    if name.len() > 63 {
        return Err(Error::invalid(
            "invalid_input",
            format!(
                "the target's name is too long for a staging database beside it ({name:?} is over 63 bytes)"
            ),
        ));
    }
    Ok(crate::db::url_with_database(target_url, &name))
}

fn load_parallel(url: &str, dir: &Path, entries: &[TableEntry], jobs: usize) -> Result<()> {
    let queue = Mutex::new(entries.iter());
    std::thread::scope(|scope| -> Result<()> {
        let workers: Vec<_> = (0..jobs.max(1))
            .map(|_| {
                scope.spawn(|| -> Result<()> {
                    let mut worker = crate::db::connect(url)?;
                    loop {
                        let next = queue.lock().expect("queue").next();
                        let Some(entry) = next else { return Ok(()) };
                        load_table(&mut worker, dir, entry)?;
                    }
                })
            })
            .collect();
        for w in workers {
            w.join()
                .map_err(|_| Error::Internal("a restore worker panicked".into()))??;
        }
        Ok(())
    })
}

fn load_table(client: &mut postgres::Client, dir: &Path, entry: &TableEntry) -> Result<()> {
    let path = dir.join(&entry.file);
    let file =
        fs::File::open(&path).map_err(|e| Error::io(format!("opening {}", path.display()), e))?;
    let mut decoder = zstd::Decoder::new(BufReader::with_capacity(1 << 20, file))
        .map_err(|e| Error::io(format!("reading {}", path.display()), e))?;
    let mut tx = client.transaction()?;
    tx.batch_execute(
        "SET LOCAL synchronous_commit = off; SET LOCAL libctl.audit_maintenance = 'on'",
    )?;
    // Table names come from the manifest, checked against the schema's own table list.
    // Emptied again in this transaction (it is empty already), a table may take COPY FREEZE:
    // its rows arrive frozen and all-visible, so the checks that follow read indexes without
    // visiting the heap (db check's overlap test) and write no hint bits. library_setting
    // holds the staging database's `incomplete` mark, so it is loaded as it is.
    let freeze = entry.table != "library_setting";
    if freeze {
        tx.batch_execute(&format!("TRUNCATE {}", entry.table))?;
    }
    let mut writer = tx.copy_in(&format!(
        "COPY {} FROM STDIN (FORMAT binary{})",
        entry.table,
        if freeze { ", FREEZE" } else { "" }
    ))?;
    std::io::copy(&mut decoder, &mut writer)
        .map_err(|e| Error::io(format!("loading {}", entry.table), e))?;
    writer.finish()?;
    tx.commit()?;
    Ok(())
}

fn compare_counts(client: &mut postgres::Client, entries: &[TableEntry]) -> Result<()> {
    let mut mismatches = Vec::new();
    for entry in entries {
        // Table names come from the manifest, checked against the schema's own list.
        let n: i64 = client
            .query_one(&format!("SELECT count(*) FROM {}", entry.table), &[])?
            .get(0);
        // library_setting still holds the 'incomplete' mark at this point.
        let marker = u64::from(entry.table == "library_setting");
        if n as u64 != entry.rows + marker {
            mismatches.push(format!(
                "{}: {} rows restored, manifest says {}",
                entry.table, n, entry.rows
            ));
        }
    }
    if mismatches.is_empty() {
        Ok(())
    } else {
        Err(Error::Integrity {
            violations: mismatches,
        })
    }
}
