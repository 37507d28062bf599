//! Backup, verify, restore, list and prune (SPEC §11).
//!
//! - **create**: the leader exports a snapshot (`pg_export_snapshot()`); N workers join it with
//!   `SET TRANSACTION SNAPSHOT` under REPEATABLE READ, READ ONLY, and stream each table as binary
//!   `COPY … TO STDOUT` through zstd and blake3 into `NAME.partial/<table>.copy.zst`. The manifest
//!   is written last, everything is fsynced, and only then is the directory renamed to `NAME`: an
//!   interrupted backup never looks complete.
//! - **verify**: re-hashes every file, decompresses it and counts the rows in the COPY stream.
//! - **restore**: see [`crate::restore`].

use std::fs;
use std::io::{BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::actor::{Capability, Ctx};
use crate::error::{Error, Result};

/// Version of the on-disk format. Version 2 adds `manifest.blake3`, the manifest's own
/// checksum; version 1 backups (without it) are still read.
pub const FORMAT_VERSION: u32 = 2;
const MANIFEST: &str = "manifest.json";
const MANIFEST_CHECKSUM: &str = "manifest.blake3";
const VERIFIED: &str = "verified.json";

/// One table in a backup.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TableEntry {
    /// Table name.
    pub table: String,
    /// File name inside the backup directory.
    pub file: String,
    /// Rows in the COPY stream.
    pub rows: u64,
    /// Bytes of the binary COPY stream.
    pub raw_bytes: u64,
    /// Bytes of the compressed file.
    pub bytes: u64,
    /// blake3 of the compressed file.
    pub blake3: String,
}

/// `manifest.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    /// On-disk format version.
    pub format_version: u32,
    /// The migration version of the source database.
    pub schema_version: i32,
    /// The libctl version that wrote it.
    pub tool_version: String,
    /// When the snapshot was taken.
    pub created_at: DateTime<Utc>,
    /// Tables, in load order.
    pub tables: Vec<TableEntry>,
}

impl Manifest {
    /// Total rows.
    pub fn rows(&self) -> u64 {
        self.tables.iter().map(|t| t.rows).sum()
    }
    /// Total compressed bytes.
    pub fn bytes(&self) -> u64 {
        self.tables.iter().map(|t| t.bytes).sum()
    }
}

/// Hashes and counts the bytes written through it.
struct HashingWriter<W: Write> {
    inner: W,
    hasher: blake3::Hasher,
    bytes: u64,
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.bytes += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// Hashes and counts the bytes read through it.
struct HashingReader<R: Read> {
    inner: R,
    hasher: blake3::Hasher,
    bytes: u64,
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        self.bytes += n as u64;
        Ok(n)
    }
}

fn io(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> Error {
    let context = context.into();
    move |e| Error::io(context, e)
}

#[cfg(unix)]
pub(crate) fn private_dir(path: &Path) -> Result<()> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(path)
        .map_err(io(format!("creating {}", path.display())))?;
    fs::set_permissions(path, fs::Permissions::from_mode(0o700))
        .map_err(io(format!("securing {}", path.display())))
}

#[cfg(unix)]
fn private_file(path: &Path) -> Result<fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(io(format!("creating {}", path.display())))
}

pub(crate) fn fsync_dir(path: &Path) -> Result<()> {
    fs::File::open(path)
        .and_then(|d| d.sync_all())
        .map_err(io(format!("syncing {}", path.display())))
}

/// The data tables of the current schema, in load order: each partitioned table stands for
/// its partitions (attached, or made detached by a restore for its load), in month order.
pub(crate) fn data_tables(client: &mut impl postgres::GenericClient) -> Result<Vec<String>> {
    let mut tables = Vec::new();
    for (t, _, _) in crate::db::TABLE_HISTORY {
        let exists: bool = client
            .query_one("SELECT to_regclass($1) IS NOT NULL", &[t])?
            .get(0);
        if !exists {
            continue;
        }
        if crate::db::PARTITIONED.contains(t) {
            let leaves = client.query(
                "SELECT c.relname::text FROM pg_class c
                 WHERE c.relnamespace = current_schema()::regnamespace AND c.relkind = 'r'
                   AND c.relname ~ ('^' || $1 || '_y[0-9]{4}m[0-9]{2}$')
                 ORDER BY c.relname",
                &[t],
            )?;
            tables.extend(leaves.iter().map(|r| r.get::<_, String>(0)));
        } else {
            tables.push(t.to_string());
        }
    }
    Ok(tables)
}

/// Options of `backup create`.
#[derive(Debug, Clone)]
pub struct CreateOptions {
    /// The backup root.
    pub root: PathBuf,
    /// Directory name; default `libctl-<UTC timestamp>`.
    pub name: Option<String>,
    /// Worker connections.
    pub jobs: usize,
}

/// A finished backup.
#[derive(Debug, Clone, Serialize)]
pub struct Created {
    /// Its directory.
    pub path: PathBuf,
    /// Its manifest.
    pub manifest: Manifest,
    /// Seconds taken.
    pub seconds: f64,
}

/// `backup create`: one consistent snapshot, N parallel workers (admins and `system`).
pub fn create(url: &str, ctx: &Ctx, options: &CreateOptions) -> Result<Created> {
    ctx.require(Capability::Backup)?;
    let started = std::time::Instant::now();
    let mut leader = crate::db::connect_current(url)?;
    let mut tx = leader
        .build_transaction()
        .isolation_level(postgres::IsolationLevel::RepeatableRead)
        .read_only(true)
        .start()?;
    let snapshot: String = tx.query_one("SELECT pg_export_snapshot()", &[])?.get(0);
    if !snapshot.chars().all(|c| c.is_ascii_hexdigit() || c == '-') {
        return Err(Error::Internal(format!(
            "unexpected snapshot id {snapshot:?}"
        )));
    }
    let schema_version: i32 = tx
        .query_one("SELECT max(version) FROM refinery_schema_history", &[])?
        .get(0);
    let tables = data_tables(&mut tx)?;
    // Largest first, so the big tables start at once and the small ones fill in.
    let mut by_size: Vec<(String, i64)> = Vec::new();
    for t in &tables {
        let size: i64 = tx
            .query_one("SELECT pg_total_relation_size($1::text::regclass)", &[t])?
            .get(0);
        by_size.push((t.clone(), size));
    }
    by_size.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    let now = Utc::now();
    let name = options
        .name
        .clone()
        .unwrap_or_else(|| format!("libctl-{}", now.format("%Y%m%dT%H%M%SZ")));
    if name.is_empty() || name.contains('/') || name.starts_with('.') || name.ends_with(".partial")
    {
        return Err(Error::invalid(
            "invalid_input",
            format!("{name:?} is not a usable backup name"),
        ));
    }
    // The root may be shared (a mount, /var/backups): create it if missing, never re-mode it.
    if !options.root.exists() {
        private_dir(&options.root)?;
    }
    let final_dir = options.root.join(&name);
    let partial = options.root.join(format!("{name}.partial"));
    if final_dir.exists() {
        return Err(Error::invalid(
            "invalid_input",
            format!("{} already exists", final_dir.display()),
        ));
    }
    if partial.exists() {
        fs::remove_dir_all(&partial).map_err(io(format!("removing {}", partial.display())))?;
    }
    private_dir(&partial)?;
    // A failed backup leaves nothing behind to fill the disk; a killed one leaves a .partial
    // that the next `prune` removes once it is a day old.
    let written =
        write_backup(url, &snapshot, &partial, options.jobs, by_size).and_then(|entries| {
            tx.commit()?;
            let mut entries = entries;
            entries.sort_by_key(|e| tables.iter().position(|t| *t == e.table));
            let manifest = Manifest {
                format_version: FORMAT_VERSION,
                schema_version,
                tool_version: env!("CARGO_PKG_VERSION").to_string(),
                created_at: now,
                tables: entries,
            };
            write_manifest(&partial, &manifest)?;
            fsync_dir(&partial)?;
            Ok(manifest)
        });
    let manifest = match written {
        Ok(manifest) => manifest,
        Err(e) => {
            let _ = fs::remove_dir_all(&partial);
            return Err(e);
        }
    };
    fs::rename(&partial, &final_dir).map_err(io(format!(
        "renaming {} to {}",
        partial.display(),
        final_dir.display()
    )))?;
    fsync_dir(&options.root)?;
    Ok(Created {
        path: final_dir,
        manifest,
        seconds: started.elapsed().as_secs_f64(),
    })
}

/// The manifest, and its checksum beside it.
pub(crate) fn write_manifest(dir: &Path, manifest: &Manifest) -> Result<()> {
    let text = serde_json::to_vec_pretty(manifest).map_err(|e| Error::Internal(e.to_string()))?;
    for (name, bytes) in [
        (MANIFEST, text.clone()),
        (
            MANIFEST_CHECKSUM,
            format!("{}\n", blake3::hash(&text).to_hex()).into_bytes(),
        ),
    ] {
        let mut file = private_file(&dir.join(name))?;
        file.write_all(&bytes)
            .and_then(|()| file.sync_all())
            .map_err(io(format!("writing {name}")))?;
    }
    Ok(())
}

/// Streams every table through `jobs` workers that share the leader's snapshot.
fn write_backup(
    url: &str,
    snapshot: &str,
    partial: &Path,
    jobs: usize,
    by_size: Vec<(String, i64)>,
) -> Result<Vec<TableEntry>> {
    let queue = Mutex::new(
        by_size
            .into_iter()
            .map(|(t, _)| t)
            .collect::<Vec<_>>()
            .into_iter(),
    );
    let entries = Mutex::new(Vec::new());
    std::thread::scope(|scope| -> Result<()> {
        let workers: Vec<_> = (0..jobs.max(1))
            .map(|_| {
                scope.spawn(|| -> Result<()> {
                    let mut client = crate::db::connect(url)?;
                    let mut wtx = client
                        .build_transaction()
                        .isolation_level(postgres::IsolationLevel::RepeatableRead)
                        .read_only(true)
                        .start()?;
                    // The id is the server's own (checked above), not input.
                    wtx.batch_execute(&format!("SET TRANSACTION SNAPSHOT '{snapshot}'"))?;
                    loop {
                        let next = queue.lock().expect("queue").next();
                        let Some(table) = next else { break };
                        let entry = dump_table(&mut wtx, &table, partial)?;
                        entries.lock().expect("entries").push(entry);
                    }
                    wtx.commit()?;
                    Ok(())
                })
            })
            .collect();
        for w in workers {
            w.join()
                .map_err(|_| Error::Internal("a backup worker panicked".into()))??;
        }
        Ok(())
    })?;
    Ok(entries.into_inner().expect("entries"))
}

pub(crate) fn dump_table(
    tx: &mut postgres::Transaction<'_>,
    table: &str,
    dir: &Path,
) -> Result<TableEntry> {
    let file_name = format!("{table}.copy.zst");
    let path = dir.join(&file_name);
    let file = private_file(&path)?;
    // Test-only failure injection: a backup that fails part-way must leave nothing behind.
    if std::env::var("LIBCTL_BACKUP_FAIL_AT").is_ok_and(|t| t == table) {
        return Err(Error::Internal(format!(
            "injected failure at {table} (LIBCTL_BACKUP_FAIL_AT)"
        )));
    }
    let hashing = HashingWriter {
        inner: std::io::BufWriter::with_capacity(1 << 20, file),
        hasher: blake3::Hasher::new(),
        bytes: 0,
    };
    let mut encoder = zstd::Encoder::new(hashing, 1).map_err(io("starting zstd"))?;
    // Table names come from db::TABLE_HISTORY and the partitions the catalog lists of it.
    let mut reader = tx.copy_out(&format!("COPY {table} TO STDOUT (FORMAT binary)"))?;
    let mut counter = crate::binary_copy::CopyCounter::new();
    let mut raw_bytes = 0u64;
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = reader
            .read(&mut buf)
            .map_err(io(format!("reading {table}")))?;
        if n == 0 {
            break;
        }
        counter.feed(&buf[..n])?;
        raw_bytes += n as u64;
        encoder
            .write_all(&buf[..n])
            .map_err(io(format!("writing {}", path.display())))?;
    }
    drop(reader);
    let mut hashing = encoder
        .finish()
        .map_err(io(format!("finishing {}", path.display())))?;
    hashing
        .flush()
        .map_err(io(format!("writing {}", path.display())))?;
    let (bytes, hash) = (
        hashing.bytes,
        hashing.hasher.finalize().to_hex().to_string(),
    );
    let file = hashing
        .inner
        .into_inner()
        .map_err(|e| Error::io(format!("writing {}", path.display()), e.into_error()))?;
    file.sync_all()
        .map_err(io(format!("syncing {}", path.display())))?;
    if !counter.complete() {
        return Err(Error::Internal(format!(
            "the COPY stream of {table} ended early"
        )));
    }
    Ok(TableEntry {
        table: table.to_string(),
        file: file_name,
        rows: counter.rows(),
        raw_bytes,
        bytes,
        blake3: hash,
    })
}

/// Reads a backup's manifest and checks it before anything trusts it: its checksum, its
/// format, and that it lists exactly the tables of its schema version, each in a file of its
/// own plain name inside the backup. A directory without a manifest is not a backup.
pub fn read_manifest(dir: &Path) -> Result<Manifest> {
    let manifest = read_manifest_unchecked(dir)?;
    let problems = manifest_problems(&manifest);
    if problems.is_empty() {
        Ok(manifest)
    } else {
        let path = dir.join(MANIFEST);
        Err(Error::Integrity {
            violations: problems
                .into_iter()
                .map(|p| format!("{}: {p}", path.display()))
                .collect(),
        })
    }
}

/// Reads a manifest and checks it against its checksum, but not its list of tables: an
/// `archive export` holds one month of history, not a whole schema.
pub(crate) fn read_manifest_unchecked(dir: &Path) -> Result<Manifest> {
    let path = dir.join(MANIFEST);
    let bad = |why: String| Error::Integrity {
        violations: vec![format!("{}: {why}", path.display())],
    };
    let bytes = fs::read(&path).map_err(|_| Error::Integrity {
        violations: vec![format!(
            "{}: no manifest.json, so not a complete backup",
            dir.display()
        )],
    })?;
    let manifest: Manifest = serde_json::from_slice(&bytes).map_err(|e| bad(e.to_string()))?;
    match manifest.format_version {
        1 => {}
        FORMAT_VERSION => {
            let recorded = fs::read_to_string(dir.join(MANIFEST_CHECKSUM))
                .map_err(|_| bad(format!("no {MANIFEST_CHECKSUM}, the manifest's checksum")))?;
            if recorded.trim() != blake3::hash(&bytes).to_hex().as_str() {
                return Err(bad(format!(
                    "the manifest does not match its checksum in {MANIFEST_CHECKSUM}"
                )));
            }
        }
        other => return Err(bad(format!("unknown backup format {other}"))),
    }
    Ok(manifest)
}

/// What is wrong with a manifest's list of tables. Pure.
pub fn manifest_problems(manifest: &Manifest) -> Vec<String> {
    let mut problems = Vec::new();
    if manifest.schema_version < 1 || manifest.schema_version > crate::db::latest_version() {
        problems.push(format!(
            "schema version {} is not one this binary knows (1 to {})",
            manifest.schema_version,
            crate::db::latest_version()
        ));
        return problems;
    }
    let expected = crate::db::tables_at(manifest.schema_version);
    let listed: Vec<&str> = manifest.tables.iter().map(|t| t.table.as_str()).collect();
    for table in &expected {
        if !listed.contains(table) && !crate::db::PARTITIONED.contains(table) {
            problems.push(format!(
                "table {table} of schema version {} is missing",
                manifest.schema_version
            ));
        }
    }
    for (i, entry) in manifest.tables.iter().enumerate() {
        let known = match crate::db::partition_of(&entry.table) {
            Some((parent, _)) => expected.contains(&parent),
            None => {
                expected.contains(&entry.table.as_str())
                    && !crate::db::PARTITIONED.contains(&entry.table.as_str())
            }
        };
        if !known {
            problems.push(format!(
                "table {:?} is not part of schema version {}",
                entry.table, manifest.schema_version
            ));
        } else if listed[..i].contains(&entry.table.as_str()) {
            problems.push(format!("table {} is listed twice", entry.table));
        }
        if entry.file != format!("{}.copy.zst", entry.table) {
            problems.push(format!(
                "table {} names the file {:?}, not {}.copy.zst",
                entry.table, entry.file, entry.table
            ));
        }
    }
    problems
}

/// What `verify` found.
#[derive(Debug, Clone, Serialize)]
pub struct Verified {
    /// The backup.
    pub path: PathBuf,
    /// Tables checked.
    pub tables: usize,
    /// Rows counted.
    pub rows: u64,
    /// When.
    pub verified_at: DateTime<Utc>,
}

pub(crate) fn verify_table(dir: &Path, entry: &TableEntry) -> Vec<String> {
    let path = dir.join(&entry.file);
    let file = match fs::File::open(&path) {
        Ok(f) => f,
        Err(e) => return vec![format!("{}: {e}", path.display())],
    };
    let hashing = HashingReader {
        inner: BufReader::with_capacity(1 << 20, file),
        hasher: blake3::Hasher::new(),
        bytes: 0,
    };
    let mut problems = Vec::new();
    let mut counter = crate::binary_copy::CopyCounter::new();
    let mut raw_bytes = 0u64;
    let mut decoder = match zstd::Decoder::new(hashing) {
        Ok(d) => d,
        Err(e) => return vec![format!("{}: {e}", path.display())],
    };
    let mut buf = vec![0u8; 1 << 16];
    loop {
        match decoder.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                raw_bytes += n as u64;
                if let Err(e) = counter.feed(&buf[..n]) {
                    problems.push(format!("{}: {e}", path.display()));
                    break;
                }
            }
            Err(e) => {
                problems.push(format!("{}: cannot decompress: {e}", path.display()));
                break;
            }
        }
    }
    // Hash whatever the decoder did not need to read.
    let mut hashing = decoder.finish().into_inner();
    let _ = std::io::copy(&mut hashing, &mut std::io::sink());
    let hash = hashing.hasher.finalize().to_hex().to_string();
    if hashing.bytes != entry.bytes {
        problems.push(format!(
            "{}: {} bytes, manifest says {}",
            path.display(),
            hashing.bytes,
            entry.bytes
        ));
    }
    if hash != entry.blake3 {
        problems.push(format!(
            "{}: blake3 differs from the manifest",
            path.display()
        ));
    }
    if problems.is_empty() {
        if !counter.complete() {
            problems.push(format!("{}: the COPY stream is truncated", path.display()));
        }
        if raw_bytes != entry.raw_bytes {
            problems.push(format!(
                "{}: {raw_bytes} raw bytes, manifest says {}",
                path.display(),
                entry.raw_bytes
            ));
        }
        if counter.rows() != entry.rows {
            problems.push(format!(
                "{}: {} rows, manifest says {}",
                path.display(),
                counter.rows(),
                entry.rows
            ));
        }
    }
    problems
}

/// `backup verify DIR`: every file re-hashed, decompressed and counted; exit 8 on any difference.
pub fn verify(dir: &Path, jobs: usize) -> Result<Verified> {
    let manifest = read_manifest(dir)?;
    let queue = Mutex::new(manifest.tables.iter());
    let problems = Mutex::new(Vec::new());
    std::thread::scope(|scope| {
        for _ in 0..jobs.max(1) {
            scope.spawn(|| loop {
                let next = queue.lock().expect("queue").next();
                let Some(entry) = next else { break };
                let found = verify_table(dir, entry);
                problems.lock().expect("problems").extend(found);
            });
        }
    });
    let mut problems = problems.into_inner().expect("problems");
    if !problems.is_empty() {
        problems.sort();
        return Err(Error::Integrity {
            violations: problems,
        });
    }
    let verified = Verified {
        path: dir.to_path_buf(),
        tables: manifest.tables.len(),
        rows: manifest.rows(),
        verified_at: Utc::now(),
    };
    // A stamp for `backup list`; failing to write it does not fail the verification.
    if let Ok(text) = serde_json::to_string(&verified) {
        let _ = fs::remove_file(dir.join(VERIFIED));
        if let Ok(mut file) = private_file(&dir.join(VERIFIED)) {
            let _ = file.write_all(text.as_bytes());
        }
    }
    Ok(verified)
}

/// One backup in a root.
#[derive(Debug, Clone, Serialize)]
pub struct Listed {
    /// Directory name.
    pub name: String,
    /// Snapshot time.
    pub created_at: DateTime<Utc>,
    /// Compressed bytes.
    pub bytes: u64,
    /// Rows.
    pub rows: u64,
    /// Schema version.
    pub schema_version: i32,
    /// Last successful `verify`, if any.
    pub verified_at: Option<DateTime<Utc>>,
}

/// `backup list ROOT`: complete backups (a directory with a manifest), newest first.
pub fn list(root: &Path) -> Result<Vec<Listed>> {
    let mut found = Vec::new();
    let entries = fs::read_dir(root).map_err(io(format!("reading {}", root.display())))?;
    for entry in entries.flatten() {
        let path = entry.path();
        let name = entry.file_name().to_string_lossy().to_string();
        if !path.is_dir() || name.ends_with(".partial") {
            continue;
        }
        let Ok(manifest) = read_manifest(&path) else {
            continue;
        };
        let verified_at = fs::read_to_string(path.join(VERIFIED))
            .ok()
            .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
            .and_then(|v| v["verified_at"].as_str().and_then(|s| s.parse().ok()));
        found.push(Listed {
            name,
            created_at: manifest.created_at,
            bytes: manifest.bytes(),
            rows: manifest.rows(),
            schema_version: manifest.schema_version,
            verified_at,
        });
    }
    found.sort_by(|a, b| b.created_at.cmp(&a.created_at).then(b.name.cmp(&a.name)));
    Ok(found)
}

/// What prune keeps.
#[derive(Debug, Clone, Copy, Default)]
pub struct Retention {
    /// The newest N.
    pub keep_last: usize,
    /// The newest of each of the last D days that have one.
    pub keep_daily: usize,
    /// The newest of each of the last W ISO weeks that have one.
    pub keep_weekly: usize,
}

/// What prune did (or would do).
#[derive(Debug, Clone, Serialize)]
pub struct Pruned {
    /// Backups kept.
    pub kept: Vec<String>,
    /// Backups removed (or to remove).
    pub removed: Vec<String>,
    /// Abandoned `.partial` directories older than a day, removed (or to remove).
    pub removed_partial: Vec<String>,
    /// True for `--dry-run`.
    pub dry_run: bool,
}

/// Decides which of `backups` (newest first) to keep. Pure.
pub fn retained(backups: &[Listed], policy: Retention) -> Vec<String> {
    use chrono::Datelike;
    let mut keep: Vec<String> = backups
        .iter()
        .take(policy.keep_last)
        .map(|b| b.name.clone())
        .collect();
    let mut days = Vec::new();
    let mut weeks = Vec::new();
    for b in backups {
        let day = b.created_at.date_naive();
        if days.len() < policy.keep_daily && !days.contains(&day) {
            days.push(day);
            keep.push(b.name.clone());
        }
        let week = (day.iso_week().year(), day.iso_week().week());
        if weeks.len() < policy.keep_weekly && !weeks.contains(&week) {
            weeks.push(week);
            keep.push(b.name.clone());
        }
    }
    keep.sort();
    keep.dedup();
    keep
}

/// `backup prune ROOT`: removes backups the policy does not keep, and `.partial` directories
/// older than a day (younger ones may belong to a backup still running).
pub fn prune(root: &Path, policy: Retention, dry_run: bool, now: DateTime<Utc>) -> Result<Pruned> {
    if policy.keep_last == 0 && policy.keep_daily == 0 && policy.keep_weekly == 0 {
        return Err(Error::invalid(
            "invalid_input",
            "a policy that keeps nothing: give --keep-last, --keep-daily or --keep-weekly",
        ));
    }
    let backups = list(root)?;
    let keep = retained(&backups, policy);
    let removed: Vec<String> = backups
        .iter()
        .map(|b| b.name.clone())
        .filter(|n| !keep.contains(n))
        .collect();
    let mut removed_partial = Vec::new();
    for entry in fs::read_dir(root)
        .map_err(io(format!("reading {}", root.display())))?
        .flatten()
    {
        let name = entry.file_name().to_string_lossy().to_string();
        let modified: Option<DateTime<Utc>> = entry
            .metadata()
            .ok()
            .and_then(|m| m.modified().ok())
            .map(Into::into);
        if name.ends_with(".partial")
            && modified.is_some_and(|m| now - m > chrono::Duration::days(1))
        {
            removed_partial.push(name);
        }
    }
    if !dry_run {
        for name in removed.iter().chain(&removed_partial) {
            let path = root.join(name);
            fs::remove_dir_all(&path).map_err(io(format!("removing {}", path.display())))?;
        }
    }
    let mut kept = keep;
    kept.sort_by(|a, b| b.cmp(a));
    Ok(Pruned {
        kept,
        removed,
        removed_partial,
        dry_run,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retention_keeps_last_daily_and_weekly() {
        let at = |s: &str| DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc);
        let backups: Vec<Listed> = [
            ("f", "2026-03-20T02:00:00Z"),
            ("e", "2026-03-19T14:00:00Z"),
            ("d", "2026-03-19T02:00:00Z"),
            ("c", "2026-03-18T02:00:00Z"),
            ("b", "2026-03-10T02:00:00Z"),
            ("a", "2026-03-01T02:00:00Z"),
        ]
        .iter()
        .map(|(n, t)| Listed {
            name: n.to_string(),
            created_at: at(t),
            bytes: 0,
            rows: 0,
            schema_version: 1,
            verified_at: None,
        })
        .collect();
        assert_eq!(
            retained(
                &backups,
                Retention {
                    keep_last: 2,
                    ..Default::default()
                }
            ),
            ["e", "f"]
        );
        assert_eq!(
            retained(
                &backups,
                Retention {
                    keep_daily: 3,
                    ..Default::default()
                }
            ),
            ["c", "e", "f"]
        );
        assert_eq!(
            retained(
                &backups,
                Retention {
                    keep_weekly: 3,
                    ..Default::default()
                }
            ),
            ["a", "b", "f"]
        );
    }
}
