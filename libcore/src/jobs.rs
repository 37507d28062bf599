//! The nightly pipeline (SPEC §6, §16). `libctl nightly --as-of D` runs, in this order and
//! under one advisory lock held by its session:
//!
//! 1. `expire_requests`: membership applications pending over 30 days;
//! 2. `auto_renew`: loans falling due whose category renews them;
//! 3. `accrue_fines`: the fine of every open overdue loan;
//! 4. `lost`: loans overdue past their category's `lost_after_days`;
//! 5. `expire_holds`: ready holds past their pickup day;
//! 6. `notices`: overdue, courtesy and membership notices, handed over with those the steps
//!    before wrote (auto-renewal, lost bills) and left pending;
//! 7. `rollup`: the monthly rollup, the audit seal, the fold of the running totals
//!    (`tally`), and the history partitions (V25) of this month and the next three.
//!
//! Not one transaction: the steps that touch loans (2–4) commit in batches, each under the
//! member locks the desk takes, so a night over millions of loans never holds the desk for
//! long. Every step is idempotent, so a run killed anywhere is finished by a re-run; a step
//! that fails stops the pipeline and the steps before it stay done. A night that finished
//! is recorded in `nightly_run`; the next run first catches up every night after the last
//! finished one, in date order, each exactly as that night's run would have done it.

use std::time::Instant;

use chrono::NaiveDate;
use postgres::{Client, GenericClient};
use serde_json::json;

use crate::actor::{Capability, Ctx};
use crate::audit::{self, Operation};
use crate::calendar::Calendar;
use crate::error::{Error, Result};
use crate::notices::{self, Notice};

/// Membership applications pending longer than this many days expire in the nightly run.
pub const MEMBERSHIP_REQUEST_DAYS: i64 = 30;

/// The steps, in the order they run.
pub const STEPS: [Step; 7] = [
    Step::ExpireRequests,
    Step::AutoRenew,
    Step::AccrueFines,
    Step::Lost,
    Step::ExpireHolds,
    Step::Notices,
    Step::Rollup,
];

/// One step of the pipeline.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Step {
    /// Expire pending membership applications.
    ExpireRequests,
    /// Renew loans falling due.
    AutoRenew,
    /// Assess fines.
    AccrueFines,
    /// Declare long-overdue loans lost.
    Lost,
    /// Expire ready holds past pickup.
    ExpireHolds,
    /// Issue notices.
    Notices,
    /// Refresh the rollup, seal the audit log and fold the running totals.
    Rollup,
}

impl Step {
    /// The step's name in summaries and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Step::ExpireRequests => "expire_requests",
            Step::AutoRenew => "auto_renew",
            Step::AccrueFines => "accrue_fines",
            Step::Lost => "lost",
            Step::ExpireHolds => "expire_holds",
            Step::Notices => "notices",
            Step::Rollup => "rollup",
        }
    }

    /// The step named `name` (`nightly --step`).
    pub fn parse(name: &str) -> Result<Step> {
        STEPS
            .into_iter()
            .find(|s| s.as_str() == name.replace('-', "_"))
            .ok_or_else(|| {
                Error::invalid(
                    "invalid_input",
                    format!(
                        "unknown step {name:?}; the steps are {}",
                        STEPS.map(|s| s.as_str()).join(", ")
                    ),
                )
            })
    }
}

pub use crate::joblock::JOB_LOCK_KEY;
use crate::joblock::{record_step, with_job_lock, Batches};

/// Options of a nightly run.
#[derive(Debug, Clone, Copy)]
pub struct NightlyOptions {
    /// Run everything in one transaction and roll it back.
    pub dry_run: bool,
    /// The lost step refuses (`too_many_items`) to mark more than this many items in a night.
    pub max_lost_items: i64,
    /// Run only this step (for the one night of `as_of`, no catch-up).
    pub only: Option<Step>,
}

impl Default for NightlyOptions {
    fn default() -> Self {
        NightlyOptions {
            dry_run: false,
            max_lost_items: crate::lost::DEFAULT_MAX_ITEMS,
            only: None,
        }
    }
}

/// One step's run on one night.
#[derive(Debug, Clone, serde::Serialize)]
pub struct StepRun {
    /// The step.
    pub step: Step,
    /// The night.
    pub day: NaiveDate,
    /// Rows it changed (its main count; see [`Nightly`] for the rest).
    pub count: i64,
    /// Seconds it took.
    pub seconds: f64,
}

/// What a nightly run did (or, with `--dry-run`, would do), summed over the nights it ran.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct Nightly {
    /// The as-of date.
    pub as_of: NaiveDate,
    /// True when nothing was kept.
    pub dry_run: bool,
    /// The nights run, oldest first: the missed ones, then `as_of`.
    pub days: Vec<NaiveDate>,
    /// Membership applications expired after 30 days pending.
    pub requests_expired: u64,
    /// Loans renewed automatically.
    pub loans_renewed: i64,
    /// Loans that could not be, with a notice saying why.
    pub auto_renew_failed: i64,
    /// Open overdue loans assessed.
    pub loans_assessed: i64,
    /// Their fines.
    pub fines_cents: i64,
    /// Loans declared lost.
    pub loans_lost: i64,
    /// Their replacement charges and processing fees.
    pub lost_charges_cents: i64,
    /// Ready holds past their pickup day that expired.
    pub holds_expired: i32,
    /// Holds that became ready for the items those holds passed on (or found on the shelf).
    pub holds_made_ready: i32,
    /// Notices issued.
    pub notices_issued: usize,
    /// Months of the rollup refreshed.
    pub months_refreshed: usize,
    /// Days of the audit log sealed by this run.
    pub days_sealed: usize,
    /// History partitions made ahead of the coming months.
    pub partitions_made: Vec<String>,
    /// The newest seal after the run: a copy to keep outside the database.
    pub last_seal: Option<crate::history::Seal>,
    /// Each step on each night.
    pub steps: Vec<StepRun>,
    /// Seconds the run took.
    pub duration_seconds: f64,
    /// The notices, for the mail merge.
    #[serde(skip)]
    pub notices: Vec<Notice>,
}

/// The nights a run as of `as_of` covers: every night after the last finished one, up to
/// `as_of`; just `as_of` when none has finished yet or `as_of` is not after it.
fn nights(client: &mut impl GenericClient, as_of: NaiveDate) -> Result<Vec<NaiveDate>> {
    let last: Option<NaiveDate> = client
        .query_one("SELECT max(day) FROM nightly_run", &[])?
        .get(0);
    Ok(match last {
        Some(last) if last < as_of => last
            .iter_days()
            .skip(1)
            .take_while(|d| *d <= as_of)
            .collect(),
        _ => vec![as_of],
    })
}

/// Runs one step of one night on `c` and adds what it did to `run`.
fn run_step<C: Batches>(
    c: &mut C,
    ctx: &Ctx,
    step: Step,
    day: NaiveDate,
    options: &NightlyOptions,
    deliver: &mut dyn FnMut(&[Notice]) -> Result<()>,
    run: &mut Nightly,
) -> Result<()> {
    let started = Instant::now();
    let end_of_day = Calendar::load(c)?.end_of_day(day);
    let count = match step {
        Step::ExpireRequests => {
            let mut tx = c.batch()?;
            let n = crate::approvals::expire_in(
                &mut tx,
                end_of_day,
                MEMBERSHIP_REQUEST_DAYS,
                &ctx.actor.name,
            )?;
            tx.commit()?;
            run.requests_expired += n;
            n as i64
        }
        Step::AutoRenew => {
            let done = crate::circulation::auto_renew_in(c, ctx, day)?;
            run.loans_renewed += done.renewed;
            run.auto_renew_failed += done.failed;
            done.renewed
        }
        Step::AccrueFines => {
            let done = crate::fines::accrue_batched(c, day)?;
            run.loans_assessed += done.loans_assessed;
            run.fines_cents += done.fines_cents;
            done.loans_assessed
        }
        Step::Lost => {
            let done = crate::lost::auto_in(c, ctx, day, options.max_lost_items)?;
            run.loans_lost += done.declared as i64;
            run.lost_charges_cents += done.replacement_cents + done.processing_fee_cents;
            done.declared as i64
        }
        Step::ExpireHolds => {
            let mut tx = c.batch()?;
            let done = crate::holds::expire_in(&mut tx, ctx, day)?;
            tx.commit()?;
            run.holds_expired += done.expired;
            run.holds_made_ready += done.made_ready;
            i64::from(done.expired)
        }
        Step::Notices => {
            let mut tx = c.batch()?;
            let issued = notices::generate_in(&mut tx, day, ctx.now())?;
            run.notices.extend(issued.iter().cloned());
            // Handed over before the commit: a notice that cannot be delivered is not issued.
            deliver(&run.notices)?;
            tx.commit()?;
            run.notices_issued += issued.len();
            issued.len() as i64
        }
        Step::Rollup => {
            let mut tx = c.batch()?;
            let made = crate::archive::ensure_upcoming(&mut tx, ctx.now().max(end_of_day))?;
            tx.commit()?;
            run.partitions_made.extend(made);
            let mut tx = c.batch()?;
            let months = crate::reports::refresh_rollup_in(&mut tx, day, None)?;
            let sealed = crate::history::seal_in(&mut tx, day)?.len();
            crate::tally::fold_in(&mut tx)?;
            run.last_seal = crate::history::newest(&mut tx)?;
            tx.commit()?;
            run.months_refreshed = run.months_refreshed.max(months);
            run.days_sealed += sealed;
            months as i64
        }
    };
    run.steps.push(StepRun {
        step,
        day,
        count,
        seconds: started.elapsed().as_secs_f64(),
    });
    Ok(())
}

/// Runs the nights of a pipeline on `c`: a client (each batch commits) or the transaction of
/// a dry run.
fn run_nights<C: Batches>(
    c: &mut C,
    ctx: &Ctx,
    as_of: NaiveDate,
    options: &NightlyOptions,
    deliver: &mut dyn FnMut(&[Notice]) -> Result<()>,
    run: &mut Nightly,
) -> Result<()> {
    let steps: Vec<Step> = match options.only {
        Some(step) => vec![step],
        None => STEPS.to_vec(),
    };
    run.days = match options.only {
        Some(_) => vec![as_of],
        None => nights(c, as_of)?,
    };
    for day in run.days.clone() {
        for &step in &steps {
            run_step(c, ctx, step, day, options, deliver, run)?;
        }
        if options.only.is_none() {
            let summary = json!(run
                .steps
                .iter()
                .filter(|s| s.day == day)
                .collect::<Vec<_>>());
            c.execute(
                "INSERT INTO nightly_run (day, finished_at, summary) VALUES ($1, clock_timestamp(), $2)
                 ON CONFLICT (day) DO UPDATE SET finished_at = excluded.finished_at,
                                                 summary = excluded.summary",
                &[&day, &summary],
            )?;
        }
    }
    Ok(())
}

/// Runs the nightly pipeline as of `as_of` (see the module's doc), catching up missed nights.
///
/// `deliver` receives all the notices issued so far by the run, inside each night's notices
/// transaction and before its commit: when it fails (the notices file cannot be written), that
/// step fails and its notices are not issued.
pub fn nightly_with(
    client: &mut Client,
    ctx: &Ctx,
    as_of: NaiveDate,
    options: &NightlyOptions,
    deliver: &mut dyn FnMut(&[Notice]) -> Result<()>,
) -> Result<Nightly> {
    let started = Instant::now();
    ctx.require(Capability::Jobs)?;
    Calendar::load(client)?.require_not_future(as_of)?;
    let mut run = Nightly {
        as_of,
        dry_run: options.dry_run,
        ..Nightly::default()
    };
    let op = Operation::new("nightly.run", "job", json!({ "as_of": as_of }));
    let outcome = with_job_lock(client, "nightly", |client| {
        if options.dry_run {
            let mut tx = client.transaction()?;
            let done = run_nights(&mut tx, ctx, as_of, options, deliver, &mut run);
            tx.rollback()?;
            return done;
        }
        run_nights(client, ctx, as_of, options, deliver, &mut run)
    });
    run.duration_seconds = started.elapsed().as_secs_f64();
    match outcome {
        Ok(()) => {
            if !options.dry_run {
                record_step(client, ctx, "nightly.run", as_of, &summary(&run))?;
            }
            Ok(run)
        }
        Err(error) => {
            audit::record_failure(client, ctx, &op, &error);
            Err(error)
        }
    }
}

/// Runs the whole nightly pipeline as of `as_of`; with `dry_run` everything runs in one
/// transaction that is rolled back.
pub fn nightly(
    client: &mut Client,
    ctx: &Ctx,
    as_of: NaiveDate,
    dry_run: bool,
    deliver: &mut dyn FnMut(&[Notice]) -> Result<()>,
) -> Result<Nightly> {
    nightly_with(
        client,
        ctx,
        as_of,
        &NightlyOptions {
            dry_run,
            ..NightlyOptions::default()
        },
        deliver,
    )
}

/// The audit row's details of a run.
fn summary(run: &Nightly) -> serde_json::Value {
    json!({
        "days": run.days,
        "requests_expired": run.requests_expired,
        "loans_renewed": run.loans_renewed,
        "auto_renew_failed": run.auto_renew_failed,
        "loans_assessed": run.loans_assessed,
        "fines_cents": run.fines_cents,
        "loans_lost": run.loans_lost,
        "lost_charges_cents": run.lost_charges_cents,
        "holds_expired": run.holds_expired,
        "holds_made_ready": run.holds_made_ready,
        "notices_issued": run.notices_issued,
        "months_refreshed": run.months_refreshed,
        "days_sealed": run.days_sealed,
        "last_seal": run.last_seal.as_ref().map(|s| json!({ "day": s.day, "digest": s.digest })),
    })
}

/// Appends one gauge in Prometheus text format.
fn gauge(out: &mut String, name: &str, help: &str, value: f64) {
    out.push_str(&format!(
        "# HELP libctl_nightly_{name} {help}\n# TYPE libctl_nightly_{name} gauge\nlibctl_nightly_{name} {value}\n"
    ));
}

/// Prometheus text-format metrics of a run for node_exporter's textfile collector. A failed
/// run keeps the previous `last_success` so "no success for a day" alerts still work.
pub fn prometheus_metrics(
    run: Option<&Nightly>,
    previous_last_success: Option<f64>,
    now_unix: f64,
) -> String {
    let mut out = String::new();
    gauge(
        &mut out,
        "success",
        "1 if the last nightly run succeeded, 0 if it failed.",
        if run.is_some() { 1.0 } else { 0.0 },
    );
    if let Some(r) = run {
        gauge(
            &mut out,
            "loans_assessed",
            "Open overdue loans whose fine was assessed by the last run.",
            r.loans_assessed as f64,
        );
        gauge(
            &mut out,
            "fines_total_cents",
            "Sum of the fines assessed by the last run, in cents.",
            r.fines_cents as f64,
        );
        gauge(
            &mut out,
            "holds_expired",
            "Ready holds past their pickup day expired by the last run.",
            f64::from(r.holds_expired),
        );
        gauge(
            &mut out,
            "notices_issued",
            "Notices issued by the last run.",
            r.notices_issued as f64,
        );
        gauge(
            &mut out,
            "duration_seconds",
            "Duration of the last run.",
            r.duration_seconds,
        );
    }
    if let Some(r) = run {
        // One series per step, summed over the nights the run covered.
        out.push_str("# HELP libctl_nightly_step_rows Rows each step of the last run changed.\n# TYPE libctl_nightly_step_rows gauge\n");
        for step in STEPS {
            let rows: i64 = r
                .steps
                .iter()
                .filter(|s| s.step == step)
                .map(|s| s.count)
                .sum();
            out.push_str(&format!(
                "libctl_nightly_step_rows{{step=\"{}\"}} {rows}\n",
                step.as_str()
            ));
        }
        out.push_str("# HELP libctl_nightly_step_seconds Seconds each step of the last run took.\n# TYPE libctl_nightly_step_seconds gauge\n");
        for step in STEPS {
            let seconds: f64 = r
                .steps
                .iter()
                .filter(|s| s.step == step)
                .map(|s| s.seconds)
                .sum();
            out.push_str(&format!(
                "libctl_nightly_step_seconds{{step=\"{}\"}} {seconds}\n",
                step.as_str()
            ));
        }
        gauge(
            &mut out,
            "nights",
            "Nights the last run covered (more than 1 after missed nights).",
            r.days.len() as f64,
        );
    }
    let last = if run.is_some() {
        Some(now_unix)
    } else {
        previous_last_success
    };
    if let Some(last) = last {
        gauge(
            &mut out,
            "last_success_timestamp_seconds",
            "Unix time of the last successful run.",
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
                days_sealed: 1,
                steps: vec![StepRun {
                    step: Step::Lost,
                    day: NaiveDate::from_ymd_opt(2026, 1, 1).unwrap(),
                    count: 4,
                    seconds: 0.25,
                }],
                last_seal: Some(crate::history::Seal {
                    day: NaiveDate::from_ymd_opt(2025, 12, 31).unwrap(),
                    rows: 4,
                    previous: crate::history::GENESIS.to_string(),
                    digest: "ab".repeat(32),
                    resealed: false,
                }),
                duration_seconds: 0.5,
                ..Nightly::default()
            }),
            None,
            1_700_000_000.0,
        );
        assert!(ok.contains("libctl_nightly_success 1\n"));
        assert!(ok.contains("libctl_nightly_fines_total_cents 700\n"));
        assert!(ok.contains("libctl_nightly_step_rows{step=\"lost\"} 4\n"));
        assert!(ok.contains("libctl_nightly_step_rows{step=\"auto_renew\"} 0\n"));
        assert!(ok.contains("libctl_nightly_step_seconds{step=\"lost\"} 0.25\n"));
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
