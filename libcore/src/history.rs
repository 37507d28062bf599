//! The audit log's history: sealed day by day into a blake3 chain (tamper evidence, SPEC §9),
//! verified against it, and pruned only through the sanctioned path that keeps the chain
//! verifiable.
//!
//! A day is a day of `recorded_at` in library time (see `sql/V18__audit_seal.sql` for why
//! not `at`). A day's digest covers the previous seal's digest, the day, and every row of the
//! day in `(recorded_at, id)` order, each field length-prefixed, so no row can be changed,
//! removed, added or reordered without changing it. The chain lives in `audit_seal`; the
//! nightly summary and its Prometheus textfile print the newest seal so a copy lives outside
//! the database, and `verify --seals FILE` compares against such a copy.

use std::collections::BTreeMap;

use chrono::{DateTime, Days, NaiveDate, Utc};
use postgres::fallible_iterator::FallibleIterator;
use postgres::{Client, GenericClient};
use serde::{Deserialize, Serialize};
use serde_json::json;
use uuid::Uuid;

use crate::actor::{Capability, Ctx};
use crate::audit::{self, Audited, Operation};
use crate::calendar::Calendar;
use crate::error::{Error, Result};

/// The `previous` of the first seal.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// One sealed day.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Seal {
    /// The day, in library time.
    pub day: NaiveDate,
    /// Rows of the day.
    pub rows: i64,
    /// The digest of the seal before it when this one was made.
    pub previous: String,
    /// blake3 over `previous`, the day and its rows.
    pub digest: String,
    /// Rebuilt by `audit prune` (the sanctioned removal of history).
    #[serde(default)]
    pub resealed: bool,
}

/// What `verify` found.
#[derive(Debug, Clone, Serialize)]
pub struct Verification {
    /// Sealed days recomputed.
    pub days: usize,
    /// Rows recomputed.
    pub rows: i64,
    /// The newest sealed day.
    pub last_day: Option<NaiveDate>,
    /// Days compared with seals kept outside the database.
    pub compared_outside: usize,
}

/// The digest of one day's rows, chained to `previous`.
struct DayHasher {
    hasher: blake3::Hasher,
    rows: i64,
}

impl DayHasher {
    fn new(previous: &str, day: NaiveDate) -> DayHasher {
        let mut hasher = blake3::Hasher::new();
        hasher.update(previous.as_bytes());
        hasher.update(day.to_string().as_bytes());
        DayHasher { hasher, rows: 0 }
    }

    fn field(&mut self, bytes: Option<&[u8]>) {
        match bytes {
            Some(b) => {
                self.hasher.update(&(b.len() as u32).to_le_bytes());
                self.hasher.update(b);
            }
            None => {
                self.hasher.update(&u32::MAX.to_le_bytes());
            }
        }
    }

    fn row(&mut self, row: &postgres::Row) {
        let id: Uuid = row.get("id");
        let at: DateTime<Utc> = row.get("at");
        let recorded_at: DateTime<Utc> = row.get("recorded_at");
        self.field(Some(id.as_bytes()));
        self.field(Some(&at.timestamp_micros().to_le_bytes()));
        self.field(Some(&recorded_at.timestamp_micros().to_le_bytes()));
        // Read every text column as nullable, whatever the schema says today: a hash must
        // never fail on a row it is asked to check.
        for column in [
            "actor",
            "actor_role",
            "action",
            "entity_type",
            "entity_id",
            "outcome",
            "details",
            "db_user",
        ] {
            let text: Option<&str> = row.get(column);
            self.field(text.map(str::as_bytes));
        }
        self.rows += 1;
    }

    fn finish(self) -> String {
        self.hasher.finalize().to_hex().to_string()
    }
}

/// Streams the rows of the days in `(after, upto]` in `(recorded_at, id)` order, calling
/// `day_rows` with each day and its rows as they pass.
fn stream_days(
    client: &mut impl GenericClient,
    tz: &str,
    after: Option<NaiveDate>,
    upto: NaiveDate,
    mut on_row: impl FnMut(NaiveDate, &postgres::Row) -> Result<()>,
) -> Result<()> {
    let params: [&(dyn postgres::types::ToSql + Sync); 3] = [&tz, &after, &upto];
    let mut rows = client.query_raw(
        "SELECT (recorded_at AT TIME ZONE $1)::date AS day, id, at, recorded_at, actor,
                actor_role, action, entity_type, entity_id, outcome, details::text AS details,
                db_user
         FROM audit_all
         WHERE ($2::date IS NULL OR (recorded_at AT TIME ZONE $1)::date > $2)
           AND (recorded_at AT TIME ZONE $1)::date <= $3
         ORDER BY recorded_at, id",
        params,
    )?;
    while let Some(row) = rows.next()? {
        on_row(row.get("day"), &row)?;
    }
    Ok(())
}

/// The newest seal, if any: the head of the chain.
pub fn newest(client: &mut impl GenericClient) -> Result<Option<Seal>> {
    Ok(client
        .query_opt(
            "SELECT day, rows, previous, digest, resealed FROM audit_seal ORDER BY day DESC LIMIT 1",
            &[],
        )?
        .map(|r| Seal {
            day: r.get(0),
            rows: r.get(1),
            previous: r.get(2),
            digest: r.get(3),
            resealed: r.get(4),
        }))
}

/// Every seal, oldest first, for someone who may read library-wide reports.
pub fn list(client: &mut Client, ctx: &Ctx) -> Result<Vec<Seal>> {
    ctx.require(Capability::Reports)?;
    seals(client)
}

/// Every seal, oldest first.
pub fn seals(client: &mut impl GenericClient) -> Result<Vec<Seal>> {
    Ok(client
        .query(
            "SELECT day, rows, previous, digest, resealed FROM audit_seal ORDER BY day",
            &[],
        )?
        .iter()
        .map(|r| Seal {
            day: r.get(0),
            rows: r.get(1),
            previous: r.get(2),
            digest: r.get(3),
            resealed: r.get(4),
        })
        .collect())
}

fn insert(client: &mut impl GenericClient, seal: &Seal) -> Result<()> {
    client.execute(
        "INSERT INTO audit_seal (day, rows, previous, digest, resealed) VALUES ($1, $2, $3, $4, $5)",
        &[&seal.day, &seal.rows, &seal.previous, &seal.digest, &seal.resealed],
    )?;
    Ok(())
}

/// Seals every unsealed day up to `as_of` and before today (a day still being written is
/// never sealed), inside the caller's transaction. Returns the new seals.
pub fn seal_in(client: &mut impl GenericClient, as_of: NaiveDate) -> Result<Vec<Seal>> {
    // One sealer at a time: two would chain from the same previous seal.
    client.execute("SELECT pg_advisory_xact_lock(7243100)", &[])?;
    let calendar = Calendar::load(client)?;
    let yesterday = calendar.local_date(Utc::now()) - Days::new(1);
    let upto = as_of.min(yesterday);
    let last = newest(client)?.map(|s| (s.day, s.digest));
    if last.as_ref().is_some_and(|(day, _)| *day >= upto) {
        return Ok(Vec::new());
    }
    let mut previous = last
        .as_ref()
        .map_or_else(|| GENESIS.to_string(), |(_, d)| d.clone());
    let mut done: Vec<(NaiveDate, i64, String, String)> = Vec::new();
    let mut current: Option<(NaiveDate, DayHasher)> = None;
    let tz = calendar.tz.name().to_string();
    stream_days(client, &tz, last.map(|(d, _)| d), upto, |day, row| {
        if current.as_ref().is_none_or(|(d, _)| *d != day) {
            if let Some((d, hasher)) = current.take() {
                let rows = hasher.rows;
                let digest = hasher.finish();
                done.push((d, rows, previous.clone(), digest.clone()));
                previous = digest;
            }
            current = Some((day, DayHasher::new(&previous, day)));
        }
        current.as_mut().expect("set above").1.row(row);
        Ok(())
    })?;
    if let Some((d, hasher)) = current.take() {
        let rows = hasher.rows;
        done.push((d, rows, previous.clone(), hasher.finish()));
    }
    let mut sealed = Vec::with_capacity(done.len());
    for (day, rows, previous, digest) in done {
        let seal = Seal {
            day,
            rows,
            previous,
            digest,
            resealed: false,
        };
        insert(client, &seal)?;
        sealed.push(seal);
    }
    Ok(sealed)
}

/// The result of `audit seal`.
#[derive(Debug, Clone, Serialize)]
pub struct SealRun {
    /// Days sealed by this run.
    pub sealed: Vec<Seal>,
    /// The newest seal after it (the one to keep outside the database).
    pub last: Option<Seal>,
}

/// `audit seal [--as-of D]`: seals every complete day up to D (default: yesterday), audited
/// as `audit.seal`. Jobs and admins.
pub fn seal(client: &mut Client, ctx: &Ctx, as_of: Option<NaiveDate>) -> Result<SealRun> {
    let calendar = Calendar::load(client)?;
    let as_of = as_of.unwrap_or_else(|| calendar.local_date(Utc::now()));
    calendar.require_not_future(as_of)?;
    let op = Operation::new("audit.seal", "audit_seal", json!({ "as_of": as_of }));
    audit::run(client, ctx, &op, |tx| {
        ctx.require(Capability::Jobs)?;
        let sealed = seal_in(tx, as_of)?;
        let last = newest(tx)?;
        let details = json!({
            "days": sealed.len(),
            "last_day": last.as_ref().map(|s| s.day),
            "last_digest": last.as_ref().map(|s| s.digest.clone()),
        });
        Ok(Audited::without_entity(SealRun { sealed, last }, details))
    })
}

/// Recomputes the chain from `from` (or the first seal) and, with `outside`, compares it with
/// seals kept outside the database. Any difference is an integrity failure (exit 8) naming
/// the first day that no longer matches.
pub fn verify(
    client: &mut Client,
    ctx: &Ctx,
    from: Option<NaiveDate>,
    outside: Option<&[Seal]>,
) -> Result<Verification> {
    ctx.require(Capability::Reports)?;
    let mut tx = client
        .build_transaction()
        .isolation_level(postgres::IsolationLevel::RepeatableRead)
        .read_only(true)
        .start()?;
    let all = seals(&mut tx)?;
    let calendar = Calendar::load(&mut tx)?;
    let tz = calendar.tz.name().to_string();
    let mut problems: Vec<(NaiveDate, String)> = Vec::new();
    let mut verified = Verification {
        days: 0,
        rows: 0,
        last_day: all.last().map(|s| s.day),
        compared_outside: 0,
    };
    let start = from.unwrap_or(NaiveDate::MIN);
    let by_day: BTreeMap<NaiveDate, &Seal> = all.iter().map(|s| (s.day, s)).collect();
    // The chain's links: each seal's `previous` is the digest of the seal before it, unless
    // that one was rebuilt by a prune. The first seal starts from GENESIS, unless a prune
    // removed the days before it.
    let pruned: bool = tx
        .query_one(
            "SELECT EXISTS (SELECT 1 FROM audit_all WHERE action = 'audit.prune' AND outcome = 'ok')",
            &[],
        )?
        .get(0);
    for (i, seal) in all.iter().enumerate().filter(|(_, s)| s.day >= start) {
        match i.checked_sub(1).map(|p| &all[p]) {
            Some(before) if !before.resealed && seal.previous != before.digest => problems.push((
                seal.day,
                format!(
                    "the seal of {} does not chain to the seal of {}",
                    seal.day, before.day
                ),
            )),
            None if seal.previous != GENESIS && !pruned => problems.push((
                seal.day,
                format!(
                    "the first seal ({}) does not start the chain, and no prune removed the days before it",
                    seal.day
                ),
            )),
            _ => {}
        }
    }
    if let Some(last) = all.last() {
        let after = start.pred_opt().filter(|_| from.is_some());
        let mut current: Option<(NaiveDate, DayHasher)> = None;
        let mut seen_rows: std::collections::HashSet<NaiveDate> = Default::default();
        let mut finish = |day: NaiveDate, hasher: DayHasher, problems: &mut Vec<_>| {
            let rows = hasher.rows;
            verified.rows += rows;
            seen_rows.insert(day);
            match by_day.get(&day) {
                Some(seal) => {
                    verified.days += 1;
                    if hasher.finish() != seal.digest {
                        problems.push((
                            day,
                            format!(
                                "the audit rows of {day} no longer match its seal ({rows} rows now, {} sealed)",
                                seal.rows
                            ),
                        ));
                    }
                }
                None => problems.push((
                    day,
                    format!("{day} has {rows} audit row(s) but no seal, inside the sealed history"),
                )),
            }
        };
        stream_days(&mut tx, &tz, after, last.day, |day, row| {
            if current.as_ref().is_none_or(|(d, _)| *d != day) {
                if let Some((d, hasher)) = current.take() {
                    finish(d, hasher, &mut problems);
                }
                let previous = by_day.get(&day).map_or(GENESIS, |s| s.previous.as_str());
                current = Some((day, DayHasher::new(previous, day)));
            }
            current.as_mut().expect("set above").1.row(row);
            Ok(())
        })?;
        if let Some((d, hasher)) = current.take() {
            finish(d, hasher, &mut problems);
        }
        // A sealed day whose rows are all gone never reached `finish`.
        for seal in all.iter().filter(|s| s.day >= start) {
            if !seen_rows.contains(&seal.day) {
                problems.push((
                    seal.day,
                    format!(
                        "every audit row of {} is gone ({} sealed)",
                        seal.day, seal.rows
                    ),
                ));
            }
        }
    }
    if let Some(outside) = outside {
        let first = all.first().map(|s| s.day);
        for kept in outside.iter().filter(|s| s.day >= start) {
            match by_day.get(&kept.day) {
                Some(seal) => {
                    verified.compared_outside += 1;
                    if seal.digest != kept.digest && !seal.resealed {
                        problems.push((
                            kept.day,
                            format!(
                                "the seal of {} differs from the copy kept outside the database",
                                kept.day
                            ),
                        ));
                    }
                }
                None if pruned && first.is_some_and(|f| kept.day < f) => {}
                None => problems.push((
                    kept.day,
                    format!("the seal of {} is missing from the database", kept.day),
                )),
            }
        }
    }
    tx.commit()?;
    if problems.is_empty() {
        return Ok(verified);
    }
    problems.sort();
    let first = problems[0].0;
    let mut violations = vec![format!("first day that no longer matches: {first}")];
    violations.extend(problems.into_iter().map(|(_, p)| p));
    Err(Error::Integrity { violations })
}

/// After [`prune`] removed rows (inside its transaction): drops the seals of days left empty and rebuilds those of days left partial, each still
/// chained from its own `previous`, marked `resealed`. The prune's own audit row says what
/// was removed.
pub(crate) fn reseal_after_prune(client: &mut impl GenericClient, ctx: &Ctx) -> Result<usize> {
    let all = seals(client)?;
    if all.is_empty() {
        return Ok(0);
    }
    let calendar = Calendar::load(client)?;
    let tz = calendar.tz.name().to_string();
    let counts: BTreeMap<NaiveDate, i64> = client
        .query(
            "SELECT (recorded_at AT TIME ZONE $1)::date, count(*) FROM audit_all
             WHERE (recorded_at AT TIME ZONE $1)::date <= $2 GROUP BY 1",
            &[&tz, &all.last().expect("not empty").day],
        )?
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    let mut changed = 0;
    for seal in &all {
        let now = counts.get(&seal.day).copied().unwrap_or(0);
        if now == seal.rows {
            continue;
        }
        client.execute(
            "SELECT libctl_audit_seal_drop($1, $2, $3)",
            &[&seal.day, &ctx.actor.name, &ctx.actor.role.as_str()],
        )?;
        changed += 1;
        if now == 0 {
            continue;
        }
        let mut hasher = DayHasher::new(&seal.previous, seal.day);
        stream_days(client, &tz, seal.day.pred_opt(), seal.day, |_, row| {
            hasher.row(row);
            Ok(())
        })?;
        insert(
            client,
            &Seal {
                day: seal.day,
                rows: hasher.rows,
                previous: seal.previous.clone(),
                digest: hasher.finish(),
                resealed: true,
            },
        )?;
    }
    Ok(changed)
}

/// Reads seals kept outside the database: the CSV `audit seals --format csv` writes.
pub fn read_seals_csv(path: &std::path::Path) -> Result<Vec<Seal>> {
    let mut reader = csv::Reader::from_path(path)
        .map_err(|e| Error::invalid("invalid_input", format!("{}: {e}", path.display())))?;
    let mut out = Vec::new();
    for (i, record) in reader.deserialize::<Seal>().enumerate() {
        out.push(record.map_err(|e| {
            Error::invalid(
                "invalid_input",
                format!("{} line {}: {e}", path.display(), i + 2),
            )
        })?);
    }
    Ok(out)
}

/// What a prune removed (or, unconfirmed, would remove).
#[derive(Debug, Clone, serde::Serialize)]
pub struct Prune {
    /// Rows older than this.
    pub before: DateTime<Utc>,
    /// How many.
    pub rows: i64,
    /// False for the dry run without `--confirm`.
    pub deleted: bool,
}

/// `audit prune --before DATE --confirm`: the only way to remove history. Admin only, and
/// audited itself. It seals every complete day first, then rebuilds the seals of the days it
/// emptied or thinned (see [`reseal_after_prune`]). Without `confirm` it only counts.
pub fn prune(
    client: &mut Client,
    ctx: &Ctx,
    before: DateTime<Utc>,
    confirm: bool,
) -> Result<Prune> {
    if !confirm {
        ctx.require(Capability::Administer)?;
        let rows: i64 = client
            .query_one("SELECT count(*) FROM audit_all WHERE at < $1", &[&before])?
            .get(0);
        return Ok(Prune {
            before,
            rows,
            deleted: false,
        });
    }
    let op = Operation::new("audit.prune", "audit_log", json!({ "before": before }));
    audit::run(client, ctx, &op, |tx| {
        ctx.require(Capability::Administer)?;
        // Seal first, so what is removed was sealed and the chain records it.
        let today = Calendar::load(tx)?.local_date(Utc::now());
        seal_in(tx, today)?;
        // The removal itself runs as the schema's owner (V19), checks its caller, and writes
        // the prune's `ok` row, so a direct call outside libctl is audited too.
        let rows: i64 = tx
            .query_one(
                "SELECT libctl_audit_prune($1, $2, $3, $4)",
                &[
                    &before,
                    &crate::ids::new_id(ctx.now()),
                    &ctx.actor.name,
                    &ctx.actor.role.as_str(),
                ],
            )?
            .get(0);
        reseal_after_prune(tx, ctx)?;
        Ok(Audited::written(Prune {
            before,
            rows,
            deleted: true,
        }))
    })
}
