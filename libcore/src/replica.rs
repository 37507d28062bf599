//! Reads on a streaming replica (SPEC §17): read-only commands may run on a hot standby, so
//! the reports and audits of a busy library stop competing with the desk. Writes never go
//! there: only the callers of [`connect`] read from it, and a standby refuses writes anyway.
//!
//! A replica is used only when it passes three checks on connecting: it is in recovery (a
//! standby, not a promoted or unrelated primary), its schema is this binary's, and its replay
//! lag is within the caller's limit. Otherwise the caller reads from the primary.

use postgres::Client;

use crate::error::{Error, Result};

/// Where a read-only command read from, for its output.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
#[serde(tag = "source", rename_all = "snake_case")]
pub enum Source {
    /// The primary.
    Primary,
    /// A streaming replica, this many seconds behind when the command connected.
    Replica {
        /// Replay lag in seconds: 0 when everything received has been replayed.
        replica_lag_seconds: f64,
    },
}

/// The replay lag of the standby `client` is connected to: 0 when everything it received has
/// been replayed, otherwise the age of the last transaction it replayed (`None`: it has
/// replayed none since it started, so the lag is unknown).
pub fn replay_lag_seconds(client: &mut Client) -> Result<Option<f64>> {
    Ok(client
        .query_one(
            "SELECT CASE
                 WHEN pg_last_wal_receive_lsn() IS NULL
                   OR pg_last_wal_receive_lsn() <= pg_last_wal_replay_lsn() THEN 0::float8
                 ELSE extract(epoch FROM now() - pg_last_xact_replay_timestamp())::float8
             END",
            &[],
        )?
        .get(0))
}

/// Connects to the replica at `url` and checks it: in recovery, this binary's schema, replay
/// lag at most `max_lag_seconds`. Every failed check is `Error::Unavailable` with the reason
/// (exit 10), which the caller turns into a fall-back to the primary, or its own exit 10 with
/// `--replica-only`.
pub fn connect(url: &str, max_lag_seconds: f64) -> Result<(Client, Source)> {
    let mut client = crate::db::connect(url)?;
    let in_recovery: bool = client.query_one("SELECT pg_is_in_recovery()", &[])?.get(0);
    if !in_recovery {
        return Err(Error::Unavailable(format!(
            "{} is not in recovery: not a standby",
            crate::db::redact_url(url)
        )));
    }
    crate::db::require_current_schema(&mut client).map_err(|e| {
        Error::Unavailable(format!(
            "the replica's schema does not match this binary: {e}"
        ))
    })?;
    let lag = replay_lag_seconds(&mut client)?;
    match lag {
        Some(lag) if lag <= max_lag_seconds => Ok((
            client,
            Source::Replica {
                replica_lag_seconds: lag,
            },
        )),
        Some(lag) => Err(Error::Unavailable(format!(
            "the replica is {lag:.1} s behind, more than --max-replica-lag {max_lag_seconds} s"
        ))),
        None => Err(Error::Unavailable(
            "the replica has WAL to replay and has replayed no transaction yet: its lag is unknown"
                .into(),
        )),
    }
}

/// Why a read on the replica is worth making again on the primary.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReadLost {
    /// The standby cancelled the query: replaying the primary's changes needed what it read.
    RecoveryConflict,
    /// The session ended under the read: a standby resolves a conflict with a reader that
    /// is blocked writing to its client by ending the session, and a restart or a promotion
    /// ends it too.
    ConnectionLost,
}

/// Whether the replica read that failed with `error` should be made again on the primary.
pub fn read_lost(error: &Error) -> Option<ReadLost> {
    if is_recovery_conflict(error) {
        Some(ReadLost::RecoveryConflict)
    } else if matches!(error, Error::Database(e) if crate::error::is_unavailable(e)) {
        Some(ReadLost::ConnectionLost)
    } else {
        None
    }
}

/// Whether `error` is a query a standby cancelled because replaying the primary's changes
/// needed what the query was reading (SQLSTATE 40001 on a standby, "conflict with recovery").
fn is_recovery_conflict(error: &Error) -> bool {
    match error {
        Error::Database(e) => {
            e.code() == Some(&postgres::error::SqlState::T_R_SERIALIZATION_FAILURE)
                && e.as_db_error()
                    .is_some_and(|d| d.message().contains("conflict with recovery"))
        }
        _ => false,
    }
}
