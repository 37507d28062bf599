//! The job lock and the batches of the nightly's steps: what every job (`nightly`, `fines
//! accrue`, `notices generate`, `holds expire`, `lost auto`) shares, below the domain modules
//! that run the steps and the pipeline (`jobs`) that runs them in order.

use postgres::{Client, GenericClient, Transaction};
use serde_json::json;

use chrono::NaiveDate;

use crate::actor::Ctx;
use crate::audit::{self, Entry};
use crate::error::{Error, Result};

/// Advisory-lock key of the nightly jobs: one at a time.
pub const JOB_LOCK_KEY: i64 = 0x4C49_4243_544C; // "LIBCTL"

fn already_running(job: &str) -> Error {
    Error::refused(
        crate::Refusal::JobAlreadyRunning,
        format!("another fines/notices/lost/nightly run holds the job lock; {job} did nothing"),
    )
}

/// Takes the job lock for the rest of the transaction, or refuses with `job_already_running`.
/// Inside a pipeline that holds it for its session, it is granted at once.
pub(crate) fn lock_jobs(tx: &mut impl GenericClient, job: &str) -> Result<()> {
    let got: bool = tx
        .query_one("SELECT pg_try_advisory_xact_lock($1)", &[&JOB_LOCK_KEY])?
        .get(0);
    if got {
        Ok(())
    } else {
        Err(already_running(job))
    }
}

/// Runs `body` holding the job lock for the session: across the many transactions of a
/// batched job, and released when it ends (or when its connection dies, as under `kill -9`).
pub(crate) fn with_job_lock<T>(
    client: &mut Client,
    job: &str,
    body: impl FnOnce(&mut Client) -> Result<T>,
) -> Result<T> {
    let got: bool = client
        .query_one("SELECT pg_try_advisory_lock($1)", &[&JOB_LOCK_KEY])?
        .get(0);
    if !got {
        return Err(already_running(job));
    }
    let result = body(client);
    // A broken connection has released it already.
    let _ = client.execute("SELECT pg_advisory_unlock($1)", &[&JOB_LOCK_KEY]);
    result
}

/// Where a batched step opens its batches: a [`Client`] commits each one; a [`Transaction`]
/// (a dry run) makes each a savepoint of the transaction it will roll back.
pub(crate) trait Batches: GenericClient {
    /// A transaction (or savepoint) for one batch.
    fn batch(&mut self) -> Result<Transaction<'_>>;
}

impl Batches for Client {
    fn batch(&mut self) -> Result<Transaction<'_>> {
        Ok(self.transaction()?)
    }
}

impl Batches for Transaction<'_> {
    fn batch(&mut self) -> Result<Transaction<'_>> {
        Ok(self.transaction()?)
    }
}

/// Writes the audit row of a standalone step run (`lost auto`, …).
pub(crate) fn record_step(
    client: &mut impl GenericClient,
    ctx: &Ctx,
    action: &'static str,
    as_of: NaiveDate,
    done: &impl serde::Serialize,
) -> Result<()> {
    audit::record(
        client,
        ctx,
        &Entry {
            action,
            entity_type: "job",
            entity_id: Some(as_of.to_string()),
            outcome: "ok",
            details: json!(done),
        },
    )
}
