//! The nightly job (SPEC §6, §16): fines accrue → holds expire → notices generate → rollup
//! refresh, in one
//! transaction under the job advisory lock, so two overlapping runs cannot both work
//! (the second exits 4, `job_already_running`) and a failed run changes nothing.

use std::time::Instant;

use chrono::NaiveDate;
use postgres::Client;
use serde_json::json;

use crate::actor::{Capability, Ctx};
use crate::audit::{self, Audited, Operation};
use crate::error::Result;
use crate::fines::{self, Accrual};
use crate::notices::{self, Notice};

/// Membership applications pending longer than this many days expire in the nightly run.
pub const MEMBERSHIP_REQUEST_DAYS: i64 = 30;

/// What a nightly run did (or, with `--dry-run`, would do).
#[derive(Debug, Clone, serde::Serialize)]
pub struct Nightly {
    /// The as-of date.
    pub as_of: NaiveDate,
    /// True when nothing was kept.
    pub dry_run: bool,
    /// Open overdue loans assessed.
    pub loans_assessed: i64,
    /// Their fines.
    pub fines_cents: i64,
    /// Ready holds past their pickup day that expired.
    pub holds_expired: i32,
    /// Holds that became ready for the items those holds passed on (or found on the shelf).
    pub holds_made_ready: i32,
    /// Notices issued.
    pub notices_issued: usize,
    /// Months of the rollup refreshed.
    pub months_refreshed: usize,
    /// Membership applications expired after 30 days pending.
    pub requests_expired: u64,
    /// Days of the audit log sealed by this run.
    pub days_sealed: usize,
    /// The newest seal after the run: a copy to keep outside the database.
    pub last_seal: Option<crate::history::Seal>,
    /// Seconds the run took.
    pub duration_seconds: f64,
    /// The notices, for the mail merge.
    #[serde(skip)]
    pub notices: Vec<Notice>,
}

fn run_steps(
    tx: &mut postgres::Transaction<'_>,
    ctx: &Ctx,
    as_of: NaiveDate,
    dry_run: bool,
    started: Instant,
) -> Result<Nightly> {
    ctx.require(Capability::Jobs)?;
    fines::lock_jobs(tx, "nightly")?;
    let Accrual {
        loans_assessed,
        fines_cents,
        ..
    } = fines::accrue_in(tx, as_of)?;
    let holds = crate::holds::expire_in(tx, ctx, as_of)?;
    let notices = notices::generate_in(tx, as_of, ctx.now())?;
    let months_refreshed = crate::reports::refresh_rollup_in(tx, as_of, None)?;
    let end_of_day = crate::calendar::Calendar::load(tx)?.end_of_day(as_of);
    let requests_expired =
        crate::approvals::expire_in(tx, end_of_day, MEMBERSHIP_REQUEST_DAYS, &ctx.actor.name)?;
    let days_sealed = crate::history::seal_in(tx, as_of)?.len();
    let last_seal = crate::history::newest(tx)?;
    Ok(Nightly {
        as_of,
        dry_run,
        loans_assessed,
        fines_cents,
        holds_expired: holds.expired,
        holds_made_ready: holds.made_ready,
        notices_issued: notices.len(),
        months_refreshed,
        requests_expired,
        days_sealed,
        last_seal,
        duration_seconds: started.elapsed().as_secs_f64(),
        notices,
    })
}

/// Runs the nightly job as of `as_of`. With `dry_run` everything runs and is rolled back.
///
/// `deliver` receives the notices issued, inside the run's transaction and before its commit:
/// when it fails (the notices file cannot be written), the whole run rolls back and nothing is
/// issued, so no notice is ever committed without having been handed over.
pub fn nightly(
    client: &mut Client,
    ctx: &Ctx,
    as_of: NaiveDate,
    dry_run: bool,
    deliver: &mut dyn FnMut(&[notices::Notice]) -> Result<()>,
) -> Result<Nightly> {
    let started = Instant::now();
    crate::calendar::Calendar::load(client)?.require_not_future(as_of)?;
    if dry_run {
        let mut tx = client.transaction()?;
        let result = run_steps(&mut tx, ctx, as_of, true, started);
        tx.rollback()?;
        return result;
    }
    let op = Operation::new("nightly.run", "job", json!({ "as_of": as_of }));
    audit::run(client, ctx, &op, |tx| {
        let done = run_steps(tx, ctx, as_of, false, started)?;
        deliver(&done.notices)?;
        let details = json!({
            "loans_assessed": done.loans_assessed,
            "fines_cents": done.fines_cents,
            "holds_expired": done.holds_expired,
            "holds_made_ready": done.holds_made_ready,
            "notices_issued": done.notices_issued,
            "months_refreshed": done.months_refreshed,
            "requests_expired": done.requests_expired,
            "days_sealed": done.days_sealed,
            "last_seal": done.last_seal.as_ref().map(|s| json!({ "day": s.day, "digest": s.digest })),
        });
        Ok(Audited::new(done, as_of, details))
    })
}

/// Prometheus text-format metrics of a run for node_exporter's textfile collector. A failed
/// run keeps the previous `last_success` so "no success for a day" alerts still work.
pub fn prometheus_metrics(
    run: Option<&Nightly>,
    previous_last_success: Option<f64>,
    now_unix: f64,
) -> String {
    let mut out = String::new();
    let mut metric = |name: &str, help: &str, kind: &str, value: f64| {
        out.push_str(&format!("# HELP libctl_nightly_{name} {help}\n# TYPE libctl_nightly_{name} {kind}\nlibctl_nightly_{name} {value}\n"));
    };
    metric(
        "success",
        "1 if the last nightly run succeeded, 0 if it failed.",
        "gauge",
        if run.is_some() { 1.0 } else { 0.0 },
    );
    if let Some(r) = run {
        metric(
            "loans_assessed",
            "Open overdue loans whose fine was assessed by the last run.",
            "gauge",
            r.loans_assessed as f64,
        );
        metric(
            "fines_total_cents",
            "Sum of the fines assessed by the last run, in cents.",
            "gauge",
            r.fines_cents as f64,
        );
        metric(
            "holds_expired",
            "Ready holds past their pickup day expired by the last run.",
            "gauge",
            f64::from(r.holds_expired),
        );
        metric(
            "notices_issued",
            "Overdue notices issued by the last run.",
            "gauge",
            r.notices_issued as f64,
        );
        metric(
            "duration_seconds",
            "Duration of the last run.",
            "gauge",
            r.duration_seconds,
        );
    }
    let last = if run.is_some() {
        Some(now_unix)
    } else {
        previous_last_success
    };
    if let Some(last) = last {
        metric(
            "last_success_timestamp_seconds",
            "Unix time of the last successful run.",
            "gauge",
            last,
        );
    }
    if let Some(seal) = run.and_then(|r| r.last_seal.as_ref()) {
        // The newest seal, so a copy of the chain's head lives outside the database.
        out.push_str(&format!(
            "# HELP libctl_audit_seal_info The newest audit seal after the last run.\n# TYPE libctl_audit_seal_info gauge\nlibctl_audit_seal_info{{day=\"{}\",digest=\"{}\"}} 1\n",
            seal.day, seal.digest
        ));
    }
    out
}

/// Reads `libctl_nightly_last_success_timestamp_seconds` from an existing metrics file.
pub fn previous_last_success(text: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix("libctl_nightly_last_success_timestamp_seconds "))
        .and_then(|v| v.trim().parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metrics_keep_the_last_success_across_a_failure() {
        let ok = prometheus_metrics(
            Some(&Nightly {
                as_of: NaiveDate::from_ymd_opt(2026, 1, 1).unwrap(),
                dry_run: false,
                loans_assessed: 3,
                fines_cents: 700,
                holds_expired: 1,
                holds_made_ready: 1,
                notices_issued: 2,
                months_refreshed: 1,
                requests_expired: 0,
                days_sealed: 1,
                last_seal: Some(crate::history::Seal {
                    day: NaiveDate::from_ymd_opt(2025, 12, 31).unwrap(),
                    rows: 4,
                    previous: crate::history::GENESIS.to_string(),
                    digest: "ab".repeat(32),
                    resealed: false,
                }),
                duration_seconds: 0.5,
                notices: Vec::new(),
            }),
            None,
            1_700_000_000.0,
        );
        assert!(ok.contains("libctl_nightly_success 1\n"));
        assert!(ok.contains("libctl_nightly_fines_total_cents 700\n"));
        assert!(ok.contains(&format!(
            "libctl_audit_seal_info{{day=\"2025-12-31\",digest=\"{}\"}} 1\n",
            "ab".repeat(32)
        )));
        assert_eq!(previous_last_success(&ok), Some(1_700_000_000.0));
        let failed = prometheus_metrics(None, previous_last_success(&ok), 1_800_000_000.0);
        assert!(failed.contains("libctl_nightly_success 0\n"));
        assert_eq!(previous_last_success(&failed), Some(1_700_000_000.0));
    }
}
