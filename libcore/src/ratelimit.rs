//! Rate limits (SPEC §9), enforced inside each mutation's own transaction.
//!
//! A GCRA (generic cell rate algorithm) per actor and policy: a policy's `limit_count` per
//! `window_seconds` is a sustained rate of one attempt per emission interval
//! (`window / limit`), and up to `burst` attempts may come back to back. The state is one
//! row per actor and policy in `rate_limit_state` (V15) holding the theoretical arrival time
//! (`tat`), the moment the actor's budget is full again, so a decision costs one upsert
//! whatever the limit or the actor's pace. The upsert's row lock, held to COMMIT, serialises
//! one actor's decisions across any number of `libctl` processes.
//!
//! Every attempt counts but a rate-limited one: a refused attempt's charge rolls back with
//! its transaction, and [`audit`] charges refused and denied attempts again when it records
//! them. `rate-limit audit` measures sliding windows over the audit log, separately.

use chrono::{DateTime, SubsecRound, Utc};
use postgres::types::Type;
use postgres::{Client, GenericClient};
use serde_json::json;

use crate::actor::{Capability, Ctx, Role};
use crate::audit::{self, Audited, Operation};
use crate::error::{Error, Result};
use crate::session::{self, Params, Statements};

/// Actions in the `borrow` group.
pub const BORROW_ACTIONS: &[&str] = &["loan.borrow", "loan.renew"];
/// The window in which `rate-limit audit` looks for bursts: more attempts than a policy's
/// burst within it.
pub const BURST_SECONDS: i64 = 10;

/// A policy row.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Policy {
    /// `member`, `librarian`, `admin`, or `any`.
    pub role: String,
    /// `borrow` or `mutation`.
    pub action_group: String,
    /// Attempts per window: the sustained rate.
    pub limit_count: i32,
    /// Window length.
    pub window_seconds: i32,
    /// Attempts allowed back to back.
    pub burst: i32,
}

/// The groups an action belongs to.
pub fn groups_of(action: &str) -> Vec<&'static str> {
    if BORROW_ACTIONS.contains(&action) {
        vec!["borrow", "mutation"]
    } else {
        vec!["mutation"]
    }
}

/// An actor's standing against one policy.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Budget {
    /// The policy.
    pub role: String,
    /// Its group.
    pub action_group: String,
    /// Attempts per window.
    pub limit_count: i32,
    /// Window length.
    pub window_seconds: i32,
    /// Attempts allowed back to back.
    pub burst: i32,
    /// Of the burst, what recent attempts still hold: `burst − remaining`.
    pub used: i64,
    /// Attempts allowed now, back to back.
    pub remaining: i64,
    /// Seconds until the next attempt can succeed (0 when it can now).
    pub retry_after_secs: i64,
}

/// A policy's GCRA figures in microseconds, computed as `rate_limit_charge` (V15) computes
/// them: `make_interval` rounds seconds to the microsecond.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cell {
    /// One attempt's share of the budget: `window / limit`.
    pub emission_us: i64,
    /// How far ahead of now the arrival time may run: `burst × window / limit`.
    pub tolerance_us: i64,
}

impl Cell {
    /// The cell of a policy's figures.
    pub fn of(limit_count: i32, window_seconds: i32, burst: i32) -> Cell {
        let per_attempt = f64::from(window_seconds) / f64::from(limit_count);
        Cell {
            emission_us: (per_attempt * 1e6).round() as i64,
            tolerance_us: (f64::from(burst) * per_attempt * 1e6).round() as i64,
        }
    }

    /// The decision, pure: an attempt at `now` against arrival time `tat` (`None`: never
    /// charged). Returns whether it is within the policy and the arrival time it leaves.
    pub fn charge(&self, tat: Option<DateTime<Utc>>, now: DateTime<Utc>) -> (bool, DateTime<Utc>) {
        let next =
            tat.map_or(now, |t| t.max(now)) + chrono::Duration::microseconds(self.emission_us);
        (
            (next - now).num_microseconds().unwrap_or(i64::MAX) <= self.tolerance_us,
            next,
        )
    }

    /// Attempts allowed at `now` back to back (at most `burst`), and the seconds until the
    /// next one is when none is.
    pub fn standing(
        &self,
        burst: i32,
        tat: Option<DateTime<Utc>>,
        now: DateTime<Utc>,
    ) -> (i64, i64) {
        let backlog = tat.map_or(0, |t| {
            (t - now).num_microseconds().unwrap_or(i64::MAX).max(0)
        });
        let room = self.tolerance_us.saturating_sub(backlog);
        let remaining = if room < 0 {
            0
        } else if self.emission_us == 0 {
            i64::from(burst)
        } else {
            (room / self.emission_us).min(i64::from(burst))
        };
        let retry_after_secs = if remaining > 0 {
            0
        } else {
            // Room for one more once the backlog has shrunk by what one attempt lacks.
            let wait_us = backlog.saturating_add(self.emission_us) - self.tolerance_us;
            ((wait_us + 999_999) / 1_000_000).max(1)
        };
        (remaining, retry_after_secs)
    }
}

/// The policies of `role` (its own and `any`) in `groups`, each with the actor's arrival time,
/// in the order `rate_limit_charge` locks them.
fn standing_rows(
    client: &mut impl GenericClient,
    statements: Option<&mut Statements>,
    actor: &str,
    role: Role,
    groups: &[&str],
) -> Result<Vec<postgres::Row>> {
    session::query(
        client,
        statements,
        "SELECT p.role, p.action_group, p.limit_count, p.window_seconds, p.burst, s.tat
         FROM rate_limit_policy p
         LEFT JOIN rate_limit_state s
                ON s.actor = $1 AND s.role = p.role AND s.action_group = p.action_group
         WHERE p.role IN ($2, 'any') AND p.action_group = ANY ($3)
         ORDER BY p.action_group, p.role",
        &[
            (&actor, Type::TEXT),
            (&role.as_str(), Type::TEXT),
            (&groups, Type::TEXT_ARRAY),
        ],
    )
}

/// Budgets from [`standing_rows`] at `now`. `charged`: the rows hold this transaction's own
/// charge of the attempt being judged, which is taken back out, so the figures are those the
/// attempt met.
fn budgets(rows: &[postgres::Row], now: DateTime<Utc>, charged: bool) -> Vec<Budget> {
    rows.iter()
        .map(|r| {
            let (limit, window, burst) = (r.get(2), r.get(3), r.get(4));
            let cell = Cell::of(limit, window, burst);
            let tat: Option<DateTime<Utc>> = r.get(5);
            // A charge set tat to greatest(tat, now) + T; minus T, that is the backlog the
            // attempt met (now when there was none).
            let tat = tat.map(|t| {
                if charged {
                    t - chrono::Duration::microseconds(cell.emission_us)
                } else {
                    t
                }
            });
            let (remaining, retry_after_secs) = cell.standing(burst, tat, now);
            Budget {
                role: r.get(0),
                action_group: r.get(1),
                limit_count: limit,
                window_seconds: window,
                burst,
                used: i64::from(burst) - remaining,
                remaining,
                retry_after_secs,
            }
        })
        .collect()
}

/// The rate-limit check of one mutation, inside its transaction and before its work.
/// [`audit::run_on`] hands one to the body, which passes it once: alone ([`Gate::pass`]) or
/// with its first read in the same round trip ([`Gate::pass_with`]). Passing charges the
/// attempt to every policy of the actor's role (`rate_limit_charge`, V15) and refuses with
/// `rate_limited` when one has no room; `system` is exempt.
pub struct Gate<'a> {
    ctx: &'a Ctx,
    action: &'static str,
    passed: bool,
}

/// A set-returning function a body reads first, which passes the gate itself: its arguments
/// are its own followed by `rate_limit_charge`'s four, and when the first of those (the actor)
/// is not NULL it charges the attempt as its first statement, so the state row's lock comes
/// before any of its own, and returns one row with `allowed` false (and nothing read) when
/// refused. Its columns end with `read_row` (true on a row it read) and `allowed`: one row
/// with `read_row` NULL when it read nothing. `circulation_member` (V15) is one.
///
/// One function rather than the gate joined to the read in one statement: such a join carried
/// the read's wide row through four plan nodes and two materialisations per call
/// (BENCHMARKS.md, V13).
pub struct GatedRead {
    gated: String,
    ungated: String,
}

/// `rate_limit_charge`'s arguments after the actor: role, groups, clock reading.
const GATE_ARGS: usize = 4;

impl GatedRead {
    /// `function`, such as `circulation_member`, takes `own` arguments of its own.
    pub fn new(function: &str, own: usize) -> GatedRead {
        let placeholders = |numbers: std::ops::RangeInclusive<usize>| {
            numbers
                .map(|n| format!("${n}"))
                .collect::<Vec<_>>()
                .join(", ")
        };
        let own_args = placeholders(1..=own);
        GatedRead {
            gated: format!(
                "SELECT * FROM {function}({own_args}, {})",
                placeholders(own + 1..=own + GATE_ARGS)
            ),
            ungated: format!(
                "SELECT * FROM {function}({own_args}{})",
                ", NULL".repeat(GATE_ARGS)
            ),
        }
    }

    /// Runs the read alone, for a caller whose transaction passed its gate already (or whose
    /// actor is exempt): the same rows as behind the gate.
    pub fn without_gate(
        &self,
        tx: &mut impl GenericClient,
        statements: Option<&mut Statements>,
        params: &Params<'_>,
    ) -> Result<Vec<postgres::Row>> {
        session::query(tx, statements, &self.ungated, params).map(read_rows)
    }
}

impl<'a> Gate<'a> {
    /// The check `action` by the context's actor must pass.
    pub fn new(ctx: &'a Ctx, action: &'static str) -> Gate<'a> {
        Gate {
            ctx,
            action,
            passed: false,
        }
    }

    /// Whether the body has passed the gate.
    pub fn passed(&self) -> bool {
        self.passed
    }

    fn exempt(&self) -> bool {
        self.ctx.actor.role == Role::System
    }

    fn start(&mut self) -> Result<()> {
        if self.passed {
            return Err(Error::Internal(format!(
                "{} passed the rate-limit gate twice",
                self.action
            )));
        }
        self.passed = true;
        Ok(())
    }

    /// Passes the gate on its own.
    pub fn pass(
        &mut self,
        tx: &mut impl GenericClient,
        mut statements: Option<&mut Statements>,
    ) -> Result<()> {
        self.start()?;
        if self.exempt() {
            return Ok(());
        }
        let charge = Charge::new(self.ctx, self.action);
        let within: bool = session::query(
            tx,
            statements.as_deref_mut(),
            "SELECT rate_limit_charge($1, $2, $3, $4)",
            &charge.params(),
        )?[0]
            .get(0);
        if within {
            return Ok(());
        }
        Err(self.refusal(tx, statements, &charge)?)
    }

    /// Passes the gate and runs `read` behind it, in one round trip: the read's rows. Its
    /// parameters come first, numbered as in [`GatedRead::new`].
    pub fn pass_with(
        &mut self,
        tx: &mut impl GenericClient,
        mut statements: Option<&mut Statements>,
        read: &GatedRead,
        params: &Params<'_>,
    ) -> Result<Vec<postgres::Row>> {
        self.start()?;
        if self.exempt() {
            return read.without_gate(tx, statements, params);
        }
        let charge = Charge::new(self.ctx, self.action);
        let mut all = params.to_vec();
        all.extend(charge.params());
        let rows = session::query(tx, statements.as_deref_mut(), &read.gated, &all)?;
        if rows[0].get(rows[0].len() - 1) {
            return Ok(read_rows(rows));
        }
        Err(self.refusal(tx, statements, &charge)?)
    }

    /// A policy had no room: the `rate_limited` error with its figures, read under the lock
    /// the charge holds.
    fn refusal(
        &self,
        tx: &mut impl GenericClient,
        statements: Option<&mut Statements>,
        charge: &Charge,
    ) -> Result<Error> {
        let (actor, role) = (&self.ctx.actor.name, self.ctx.actor.role);
        let rows = standing_rows(tx, statements, actor, role, &charge.groups)?;
        let budgets = budgets(&rows, charge.now, true);
        let Some(b) = budgets.iter().find(|b| b.retry_after_secs > 0) else {
            return Err(Error::Internal(format!(
                "rate_limit_charge refused {actor}, but every policy has room"
            )));
        };
        Ok(Error::RateLimited {
            message: format!(
                "{actor} has no {} attempts left: {} per {} s, at most {} back to back",
                b.action_group, b.limit_count, b.window_seconds, b.burst
            ),
            retry_after_secs: b.retry_after_secs.max(1) as u64,
        })
    }
}

/// The limiter's clock is the real one, whatever `--at` says: a backdated entry is an attempt
/// made now, and counts against the actor's pace now.
fn limiter_now() -> DateTime<Utc> {
    Utc::now().trunc_subsecs(6)
}

/// One attempt's charge to the actor's rate limits: `rate_limit_charge`'s four arguments.
pub(crate) struct Charge<'a> {
    actor: &'a str,
    role: &'static str,
    groups: Vec<&'static str>,
    now: DateTime<Utc>,
}

impl<'a> Charge<'a> {
    /// `action` by the context's actor, now.
    pub(crate) fn new(ctx: &'a Ctx, action: &str) -> Charge<'a> {
        Charge {
            actor: &ctx.actor.name,
            role: ctx.actor.role.as_str(),
            groups: groups_of(action),
            now: limiter_now(),
        }
    }

    /// The charge of an attempt audited after its transaction rolled back, `None` when it
    /// does not count: rate-limited attempts cost nothing, and `system` is exempt.
    pub(crate) fn again(ctx: &'a Ctx, action: &str, outcome: &str) -> Option<Charge<'a>> {
        (outcome != "rate_limited" && ctx.actor.role != Role::System)
            .then(|| Charge::new(ctx, action))
    }

    /// `statement`, a data-modifying one that touches one row, with this charge made in the
    /// same statement, its arguments numbered from `$first`.
    pub(crate) fn sql_with(statement: &str, first: usize) -> String {
        format!(
            "WITH done AS ({statement} RETURNING 1) \
             SELECT rate_limit_charge(${first}, ${}, ${}, ${}) FROM done",
            first + 1,
            first + 2,
            first + 3
        )
    }

    pub(crate) fn params(&self) -> [(&(dyn postgres::types::ToSql + Sync), Type); GATE_ARGS] {
        [
            (&self.actor, Type::TEXT),
            (&self.role, Type::TEXT),
            (&self.groups, Type::TEXT_ARRAY),
            (&self.now, Type::TIMESTAMPTZ),
        ]
    }
}

/// The rows the read returned: a gated statement that ran no read (or a read that found
/// nothing) still returns the gate's one row, with NULL read columns.
fn read_rows(rows: Vec<postgres::Row>) -> Vec<postgres::Row> {
    rows.into_iter()
        .filter(|r| r.get::<_, Option<bool>>(r.len() - 2) == Some(true))
        .collect()
}

/// Every policy.
pub fn policies(client: &mut impl GenericClient) -> Result<Vec<Policy>> {
    Ok(client
        .query("SELECT role, action_group, limit_count, window_seconds, burst FROM rate_limit_policy ORDER BY role, action_group", &[])?
        .iter()
        .map(policy_from_row)
        .collect())
}

fn policy_from_row(r: &postgres::Row) -> Policy {
    Policy {
        role: r.get(0),
        action_group: r.get(1),
        limit_count: r.get(2),
        window_seconds: r.get(3),
        burst: r.get(4),
    }
}

/// Creates or changes a policy (admin).
pub fn set_policy(client: &mut Client, ctx: &Ctx, policy: &Policy) -> Result<Policy> {
    set_policies(client, ctx, std::slice::from_ref(policy)).map(|mut v| v.remove(0))
}

/// Creates or changes several policies in one transaction (admin).
pub fn set_policies(client: &mut Client, ctx: &Ctx, changes: &[Policy]) -> Result<Vec<Policy>> {
    let op = Operation::new("rate_limit.policy_set", "rate_limit_policy", json!(changes));
    audit::run(client, ctx, &op, |tx| {
        ctx.require(Capability::Administer)?;
        let before = policies(tx)?;
        for policy in changes {
            if !["member", "librarian", "admin", "any"].contains(&policy.role.as_str())
                || !["borrow", "mutation"].contains(&policy.action_group.as_str())
                || policy.limit_count < 1
                || policy.window_seconds < 1
                || policy.burst < 1
            {
                return Err(Error::invalid(
                    "invalid_input",
                    "role is member|librarian|admin|any, group borrow|mutation, and limit, window and burst are positive",
                ));
            }
            tx.execute(
                "INSERT INTO rate_limit_policy (role, action_group, limit_count, window_seconds, burst) VALUES ($1, $2, $3, $4, $5)
                 ON CONFLICT (role, action_group) DO UPDATE SET limit_count = excluded.limit_count,
                     window_seconds = excluded.window_seconds, burst = excluded.burst",
                &[&policy.role, &policy.action_group, &policy.limit_count, &policy.window_seconds, &policy.burst],
            )?;
        }
        let keys: Vec<String> = changes
            .iter()
            .map(|p| format!("{}/{}", p.role, p.action_group))
            .collect();
        Ok(Audited::new(
            changes.to_vec(),
            keys.join(","),
            json!({ "before": before, "after": changes }),
        ))
    })
}

/// An actor's current budget per policy (`rate-limit status`).
pub fn status(client: &mut Client, ctx: &Ctx, actor: &str) -> Result<Vec<Budget>> {
    let target = crate::actor::resolve(client, Some(actor), None)?;
    if target.actor.name != ctx.actor.name {
        ctx.require(Capability::Reports)?;
    }
    let rows = standing_rows(
        client,
        None,
        &target.actor.name,
        target.actor.role,
        &["borrow", "mutation"],
    )?;
    Ok(budgets(&rows, limiter_now(), false))
}

/// Parses a window such as `90s`, `15m`, `1h`, `1d` into seconds.
pub fn parse_window(text: &str) -> Result<i32> {
    let bad = || {
        Error::invalid(
            "invalid_input",
            format!("{text:?} is not a window such as 60s, 15m, 1h or 1d"),
        )
    };
    let (number, unit) = text.split_at(
        text.find(|c: char| !c.is_ascii_digit())
            .unwrap_or(text.len()),
    );
    let n: i32 = number.parse().map_err(|_| bad())?;
    let factor = match unit {
        "" | "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => return Err(bad()),
    };
    n.checked_mul(factor).filter(|s| *s > 0).ok_or_else(bad)
}

/// One actor in the rate-limit audit.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ActorAudit {
    /// Actor.
    pub actor: String,
    /// Role.
    pub actor_role: String,
    /// Audit rows in the period.
    pub requests: i64,
    /// Most borrow-group attempts in any sliding window of the borrow policy's size.
    pub peak_borrow_window: i64,
    /// Most attempts in any sliding window of the mutation policy's size.
    pub peak_mutation_window: i64,
    /// `rate_limited` outcomes.
    pub violations: i64,
    /// Attempts at which a window reached at least 80 % of its limit.
    pub near_misses: i64,
    /// Times more than the burst size fell within 10 seconds.
    pub bursts: i64,
    /// First row.
    pub first_seen: DateTime<Utc>,
    /// Last row.
    pub last_seen: DateTime<Utc>,
}

/// The roles the audit knows limits for, in the order of the per-role arrays its SQL
/// indexes (1 to 4). Actors who are not members are `anonymous`.
const AUDIT_ROLES: [&str; 4] = ["member", "librarian", "admin", "anonymous"];

/// One range of actors (`lower <= actor < upper`, unbounded where `None`) of the rate-limit
/// audit.
fn audit_part(
    client: &mut Client,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    lower: Option<&str>,
    upper: Option<&str>,
) -> Result<Vec<ActorAudit>> {
    let all = policies(client)?;
    let window_of = |group: &str, default: i32| {
        all.iter()
            .filter(|p| p.action_group == group)
            .map(|p| p.window_seconds)
            .max()
            .unwrap_or(default)
    };
    let borrow_window = f64::from(window_of("borrow", 3600));
    let mutation_window = f64::from(window_of("mutation", 60));
    // Limits per role, from the policies that apply to it (its own and `any`).
    let limit_for = |role: &str, group: Option<&str>, pick: fn(&Policy) -> i32| -> Option<i32> {
        all.iter()
            .filter(|p| {
                (p.role == role || p.role == "any") && group.is_none_or(|g| p.action_group == g)
            })
            .map(pick)
            .min()
    };
    let per_role = |group: Option<&str>, pick: fn(&Policy) -> i32| -> Vec<Option<i32>> {
        AUDIT_ROLES
            .iter()
            .map(|r| limit_for(r, group, pick))
            .collect()
    };
    let borrow_limits = per_role(Some("borrow"), |p| p.limit_count);
    let mutation_limits = per_role(Some("mutation"), |p| p.limit_count);
    let bursts = per_role(None, |p| p.burst);
    let roles: Vec<&str> = AUDIT_ROLES.to_vec();
    let params: [&(dyn postgres::types::ToSql + Sync); 12] = [
        &from,
        &to,
        &borrow_window,
        &mutation_window,
        &BORROW_ACTIONS,
        &(BURST_SECONDS as f64),
        &roles,
        &borrow_limits,
        &mutation_limits,
        &bursts,
        &lower,
        &upper,
    ];
    // One ordered pass: an index-only scan of audit_log_actor_at_idx (its actor range only)
    // feeds three sliding-window counts, then a streaming per-actor aggregate. The role is
    // joined after that, to 43k actor rows rather than a million audit rows, so near misses
    // and bursts are counted under each role's limits (AUDIT_ROLES) and the actor's own role
    // picks its column.
    let rows = client.query(
        "SELECT a.actor, coalesce(m.role, 'anonymous'), a.requests, a.peak_borrow, a.peak_mutation,
                a.violations, coalesce(a.near[r.i], 0), coalesce(a.bursts[r.i], 0), a.first_seen, a.last_seen
         FROM (
             SELECT w.actor, count(*) AS requests, max(w.borrow_n) AS peak_borrow,
                    max(w.mutation_n) AS peak_mutation,
                    count(*) FILTER (WHERE w.outcome = 'rate_limited') AS violations,
                    ARRAY[count(*) FILTER (WHERE w.borrow_n * 5 >= ($8::int[])[1] * 4 OR w.mutation_n * 5 >= ($9::int[])[1] * 4),
                          count(*) FILTER (WHERE w.borrow_n * 5 >= ($8::int[])[2] * 4 OR w.mutation_n * 5 >= ($9::int[])[2] * 4),
                          count(*) FILTER (WHERE w.borrow_n * 5 >= ($8::int[])[3] * 4 OR w.mutation_n * 5 >= ($9::int[])[3] * 4),
                          count(*) FILTER (WHERE w.borrow_n * 5 >= ($8::int[])[4] * 4 OR w.mutation_n * 5 >= ($9::int[])[4] * 4)] AS near,
                    ARRAY[count(*) FILTER (WHERE w.burst_n = ($10::int[])[1] + 1),
                          count(*) FILTER (WHERE w.burst_n = ($10::int[])[2] + 1),
                          count(*) FILTER (WHERE w.burst_n = ($10::int[])[3] + 1),
                          count(*) FILTER (WHERE w.burst_n = ($10::int[])[4] + 1)] AS bursts,
                    min(w.at) AS first_seen, max(w.at) AS last_seen
             FROM (
                 SELECT actor, at, outcome,
                        count(*) FILTER (WHERE action = ANY($5) AND outcome <> 'rate_limited')
                            OVER (PARTITION BY actor ORDER BY at RANGE BETWEEN make_interval(secs => $3) - interval '1 microsecond' PRECEDING AND CURRENT ROW) AS borrow_n,
                        count(*) FILTER (WHERE outcome <> 'rate_limited')
                            OVER (PARTITION BY actor ORDER BY at RANGE BETWEEN make_interval(secs => $4) - interval '1 microsecond' PRECEDING AND CURRENT ROW) AS mutation_n,
                        count(*) OVER (PARTITION BY actor ORDER BY at RANGE BETWEEN make_interval(secs => $6) - interval '1 microsecond' PRECEDING AND CURRENT ROW) AS burst_n
                 FROM audit_log
                 WHERE at BETWEEN $1 AND $2 AND actor <> 'system'
                   AND ($11::text IS NULL OR actor >= $11) AND ($12::text IS NULL OR actor < $12)
             ) w
             GROUP BY w.actor
         ) a
         LEFT JOIN member m ON m.email = a.actor
         CROSS JOIN LATERAL (SELECT array_position($7::text[], coalesce(m.role, 'anonymous')) AS i) r",
        &params,
    )?;
    Ok(rows
        .iter()
        .map(|r| ActorAudit {
            actor: r.get(0),
            actor_role: r.get(1),
            requests: r.get(2),
            peak_borrow_window: r.get(3),
            peak_mutation_window: r.get(4),
            violations: r.get(5),
            near_misses: r.get(6),
            bursts: r.get(7),
            first_seen: r.get(8),
            last_seen: r.get(9),
        })
        .collect())
}

/// The rate-limit audit over `[from, to]`: sliding windows `(t − window, t]` of each policy's
/// length over the audit log, whatever the limiter enforced (a GCRA admits up to `limit +
/// burst − 1` in one window after a quiet spell).
/// One set-based pass of window functions over the `(actor, at)` index, split into ranges of
/// actors across `parts` connections (window functions do not run in parallel inside
/// PostgreSQL, but each actor's windows are independent), merged worst first.
pub fn audit_report(
    url: &str,
    ctx: &Ctx,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    parts: usize,
) -> Result<Vec<ActorAudit>> {
    ctx.require(Capability::Reports)?;
    let bounds = actor_bounds(&mut crate::db::connect(url)?, parts.clamp(1, 16))?;
    let mut all = std::thread::scope(|scope| -> Result<Vec<ActorAudit>> {
        let workers: Vec<_> = (0..=bounds.len())
            .map(|part| {
                let lower = part.checked_sub(1).map(|i| bounds[i].as_str());
                let upper = bounds.get(part).map(String::as_str);
                scope.spawn(move || -> Result<Vec<ActorAudit>> {
                    let mut client = crate::db::connect(url)?;
                    audit_part(&mut client, from, to, lower, upper)
                })
            })
            .collect();
        let mut rows = Vec::new();
        for w in workers {
            rows.extend(
                w.join()
                    .map_err(|_| Error::Internal("a rate-limit audit worker panicked".into()))??,
            );
        }
        Ok(rows)
    })?;
    all.sort_by(|a, b| {
        (
            b.violations,
            b.bursts,
            b.near_misses,
            b.peak_mutation_window,
        )
            .cmp(&(
                a.violations,
                a.bursts,
                a.near_misses,
                a.peak_mutation_window,
            ))
            .then_with(|| a.actor.cmp(&b.actor))
    });
    Ok(all)
}

/// Actor names that cut the audit log into `parts` ranges of about as many rows, so each
/// connection scans only its own index range. The planner's statistics of `audit_log.actor`
/// (kept by ANALYZE) say where the rows are: the most common actors with their shares (desk
/// staff can hold most of the log) and a histogram of the rest. Each cut is the actor before
/// which that share of rows lies; an actor is never split. No statistics: no cuts.
fn actor_bounds(client: &mut Client, parts: usize) -> Result<Vec<String>> {
    if parts < 2 {
        return Ok(Vec::new());
    }
    let points: Vec<(String, f64)> = client
        .query(
            "WITH s AS (
                 SELECT coalesce(most_common_vals::text::text[], '{}') AS mcv,
                        coalesce(most_common_freqs, '{}') AS mcf,
                        coalesce(histogram_bounds::text::text[], '{}') AS hb
                 FROM pg_stats
                 WHERE schemaname = current_schema() AND tablename = 'audit_log' AND attname = 'actor'),
             points AS (
                 SELECT u.v, u.f::float8 AS f FROM s, unnest(s.mcv, s.mcf) AS u(v, f)
                 UNION ALL
                 SELECT h.v, (1 - (SELECT coalesce(sum(x), 0) FROM unnest(s.mcf) x))::float8
                             / greatest(cardinality(s.hb), 1)
                 FROM s, unnest(s.hb) AS h(v))
             SELECT v, coalesce(sum(f) OVER (ORDER BY v ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING)
                                / nullif(sum(f) OVER (), 0), 0)
             FROM points ORDER BY v",
            &[],
        )?
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    let mut cuts: Vec<String> = (1..parts)
        .filter_map(|k| {
            let target = k as f64 / parts as f64;
            points
                .iter()
                .filter(|(_, before)| *before > 0.0)
                .min_by(|a, b| (a.1 - target).abs().total_cmp(&(b.1 - target).abs()))
                .map(|(v, _)| v.clone())
        })
        .collect();
    cuts.dedup();
    Ok(cuts)
}

/// The session advisory lock one `bench borrow` holds while it runs with lifted limits.
pub const BENCH_LOCK_KEY: i64 = 0x4C49_4243_424E; // "LIBCBN"

/// Runs `f` with every policy's limit and burst raised out of reach and its window shortened
/// to one second, restoring them after (even when `f` fails). For `bench borrow`, which
/// measures circulation, not the limiter: the limiter still charges every attempt, it just
/// never refuses (a GCRA's decision costs the same whatever the limit).
///
/// The real policies are kept in `rate_limit_policy_saved` until they are back (V11), and a
/// session lock admits one such run at a time: a second bench would otherwise save the
/// lifted limits as the real ones, and a killed bench would leave them lifted. A run that
/// finds saved policies restores them first.
pub fn with_limits_lifted<T>(
    client: &mut Client,
    admin: &Ctx,
    f: impl FnOnce() -> Result<T>,
) -> Result<T> {
    admin.require(Capability::Administer)?;
    let locked: bool = client
        .query_one("SELECT pg_try_advisory_lock($1)", &[&BENCH_LOCK_KEY])?
        .get(0);
    if !locked {
        return Err(Error::refused(
            crate::Refusal::JobAlreadyRunning,
            "another bench borrow is running on this database with the rate limits lifted",
        ));
    }
    let result = lift_and_run(client, admin, f);
    let unlocked = client.execute("SELECT pg_advisory_unlock($1)", &[&BENCH_LOCK_KEY]);
    let value = result?;
    unlocked?;
    Ok(value)
}

fn lift_and_run<T>(client: &mut Client, admin: &Ctx, f: impl FnOnce() -> Result<T>) -> Result<T> {
    restore_saved_policies(client, admin)?;
    let saved = policies(client)?;
    client.execute(
        "INSERT INTO rate_limit_policy_saved SELECT * FROM rate_limit_policy",
        &[],
    )?;
    let lifted: Vec<Policy> = saved
        .iter()
        .map(|p| Policy {
            limit_count: i32::MAX / 2,
            burst: i32::MAX / 2,
            window_seconds: 1,
            ..p.clone()
        })
        .collect();
    set_policies(client, admin, &lifted)?;
    let result = f();
    restore_saved_policies(client, admin)?;
    result
}

/// Puts back policies a lifted run saved, if any, and forgets the copy.
fn restore_saved_policies(client: &mut Client, admin: &Ctx) -> Result<()> {
    let saved: Vec<Policy> = client
        .query(
            "SELECT role, action_group, limit_count, window_seconds, burst FROM rate_limit_policy_saved",
            &[],
        )?
        .iter()
        .map(policy_from_row)
        .collect();
    if saved.is_empty() {
        return Ok(());
    }
    set_policies(client, admin, &saved)?;
    client.execute("DELETE FROM rate_limit_policy_saved", &[])?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cell_at_its_boundaries() {
        // 10 per hour, 5 back to back: one attempt per 360 s, a tolerance of 1,800 s.
        let cell = Cell::of(10, 3600, 5);
        assert_eq!(
            cell,
            Cell {
                emission_us: 360_000_000,
                tolerance_us: 1_800_000_000
            }
        );
        let now = Utc::now();
        let mut tat = None;
        for n in 1..=5 {
            let (within, next) = cell.charge(tat, now);
            assert!(within, "attempt {n} of the burst");
            tat = Some(next);
        }
        assert_eq!(cell.standing(5, tat, now), (0, 360));
        assert!(!cell.charge(tat, now).0, "a sixth at once has no room");
        let later = |secs| now + chrono::Duration::seconds(secs);
        assert!(!cell.charge(tat, later(359)).0);
        assert!(
            cell.charge(tat, later(360)).0,
            "exactly one interval later: room for one"
        );
        assert_eq!(cell.standing(5, tat, later(360)), (1, 0));
        assert_eq!(
            cell.standing(5, tat, later(1800)),
            (5, 0),
            "full again at tat"
        );
        // An arrival time in the past leaves a full budget, not more.
        assert_eq!(cell.standing(5, Some(later(-9000)), now), (5, 0));
        assert_eq!(cell.standing(5, None, now), (5, 0));
        // A clock reading behind the last attempt's meets tat as it stands.
        let (_, after) = cell.charge(tat, later(400));
        assert!(!cell.charge(Some(after), now).0);
    }

    #[test]
    fn lifted_limits_never_refuse_and_their_interval_rounds_to_nothing() {
        let cell = Cell::of(i32::MAX / 2, 1, i32::MAX / 2);
        assert_eq!(
            cell,
            Cell {
                emission_us: 0,
                tolerance_us: 1_000_000
            }
        );
        let now = Utc::now();
        let (within, tat) = cell.charge(Some(now), now);
        assert!(within && tat == now);
        assert_eq!(
            cell.standing(i32::MAX / 2, Some(tat), now),
            (i64::from(i32::MAX / 2), 0)
        );
    }

    #[test]
    fn windows_parse() {
        assert_eq!(parse_window("1h").unwrap(), 3600);
        assert_eq!(parse_window("90s").unwrap(), 90);
        assert_eq!(parse_window("15m").unwrap(), 900);
        assert_eq!(parse_window("2d").unwrap(), 172_800);
        assert_eq!(parse_window("45").unwrap(), 45);
        for bad in ["", "h", "0s", "1w", "-5m", "99999999d"] {
            assert!(parse_window(bad).is_err(), "{bad}");
        }
        assert_eq!(groups_of("loan.renew"), ["borrow", "mutation"]);
        assert_eq!(groups_of("book.add"), ["mutation"]);
    }
}
