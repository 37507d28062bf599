//! Rate limits (SPEC §9), enforced inside each mutation's own transaction.
//!
//! The state is the audit log: a policy allows an attempt when the actor's attempts in the
//! sliding window `(now − window, now]` number fewer than the limit, and those in the last 10
//! seconds (or the window, if shorter) fewer than the burst. A per-actor advisory lock (held to COMMIT) serialises one
//! actor's decisions, so the count and the new audit row can never race — across any number of
//! `libctl` processes. Rate-limited attempts are logged but do not count against the budget.

use chrono::{DateTime, Utc};
use postgres::types::Type;
use postgres::{Client, GenericClient};
use serde_json::json;

use crate::actor::{Capability, Ctx, Role};
use crate::audit::{self, Audited, Operation};
use crate::error::{Error, Result};
use crate::session::{self, Params, Statements};

/// Actions in the `borrow` group.
pub const BORROW_ACTIONS: &[&str] = &["loan.borrow", "loan.renew"];
/// The burst window.
pub const BURST_SECONDS: i64 = 10;

/// A policy row.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Policy {
    /// `member`, `librarian`, `admin`, or `any`.
    pub role: String,
    /// `borrow` or `mutation`.
    pub action_group: String,
    /// Attempts allowed per window.
    pub limit_count: i32,
    /// Window length.
    pub window_seconds: i32,
    /// Attempts allowed within 10 seconds.
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
    /// Limit per window.
    pub limit_count: i32,
    /// Window length.
    pub window_seconds: i32,
    /// Attempts in the current window.
    pub used: i64,
    /// What is left.
    pub remaining: i64,
    /// Burst size.
    pub burst: i32,
    /// Attempts in the last 10 seconds.
    pub burst_used: i64,
    /// Seconds until the next attempt can succeed (0 when it can now).
    pub retry_after_secs: i64,
}

/// How [`budget_rows`] counts.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Count {
    /// Count just enough to decide, under the actor's lock (held since the gate).
    Recount,
    /// Count exactly, for `rate-limit status`.
    Exact,
}

/// The policy rows behind a refusal or a status, from `rate_limit_budgets` (V8, V12, V13).
fn budget_rows(
    client: &mut impl GenericClient,
    statements: Option<&mut Statements>,
    count: Count,
    actor: &str,
    role: Role,
    groups: &[&str],
    now: DateTime<Utc>,
) -> Result<Vec<postgres::Row>> {
    let bounded = count == Count::Recount;
    session::query(
        client,
        statements,
        "SELECT role, action_group, limit_count, window_seconds, burst, used, burst_used
         FROM rate_limit_budgets($1, $2, $3, $4, $5, $6, $7)
         ORDER BY action_group, role",
        &[
            (&actor, Type::TEXT),
            (&role.as_str(), Type::TEXT),
            (&groups, Type::TEXT_ARRAY),
            (&now, Type::TIMESTAMPTZ),
            (&(BURST_SECONDS as f64), Type::FLOAT8),
            (&BORROW_ACTIONS, Type::TEXT_ARRAY),
            (&bounded, Type::BOOL),
        ],
    )
}

/// Budgets from [`budget_rows`], with the wait when a window is full.
fn budgets(
    client: &mut impl GenericClient,
    actor: &str,
    rows: Vec<postgres::Row>,
    now: DateTime<Utc>,
) -> Result<Vec<Budget>> {
    let mut budgets = Vec::with_capacity(rows.len());
    for r in rows {
        let limit: i32 = r.get(2);
        let window: i32 = r.get(3);
        let burst: i32 = r.get(4);
        let used: i64 = r.get(5);
        let burst_used: i64 = r.get(6);
        let group: String = r.get(1);
        // When the window is full, the wait depends on its oldest counted attempt: a second
        // query, on the refusing path only.
        let oldest = if used >= i64::from(limit) {
            client
                .query_one(
                    "SELECT min(at) FROM (SELECT at FROM audit_log
                                          WHERE actor = $1 AND outcome <> 'rate_limited'
                                            AND at > $2::timestamptz - make_interval(secs => $3) AND at <= $2::timestamptz
                                            AND ($4 = 'mutation' OR action = ANY($5))
                                          ORDER BY at DESC LIMIT $6) recent",
                    &[&actor, &now, &f64::from(window), &group, &BORROW_ACTIONS, &i64::from(limit)],
                )?
                .get(0)
        } else {
            None
        };
        budgets.push(Budget {
            role: r.get(0),
            action_group: group,
            limit_count: limit,
            window_seconds: window,
            used,
            remaining: (i64::from(limit) - used).max(0),
            burst,
            burst_used,
            retry_after_secs: retry_after(used, burst_used, limit, burst, window, oldest, now),
        });
    }
    Ok(budgets)
}

/// The sliding-window decision, pure: 0 when an attempt at `now` is allowed, otherwise the
/// seconds until it would be (when the oldest counted attempt leaves the window, or the burst
/// window passes).
pub fn retry_after(
    used: i64,
    burst_used: i64,
    limit: i32,
    burst: i32,
    window_seconds: i32,
    oldest_in_window: Option<DateTime<Utc>>,
    now: DateTime<Utc>,
) -> i64 {
    if used >= i64::from(limit) {
        oldest_in_window.map_or(1, |o| {
            (o + chrono::Duration::seconds(i64::from(window_seconds)) - now)
                .num_seconds()
                .max(1)
        })
    } else if burst_used >= i64::from(burst) {
        BURST_SECONDS
    } else {
        0
    }
}

/// The rate-limit check of one mutation, inside its transaction and before its work.
/// [`audit::run_on`] hands one to the body, which passes it once: alone ([`Gate::pass`]) or
/// with its first read in the same round trip ([`Gate::pass_with`]). Passing refuses with
/// `rate_limited` when a policy of the actor's role is exhausted; `system` is exempt.
///
/// The gate (`rate_limit_gate`, V12, V14) takes the actor's advisory lock, held to COMMIT, and reads
/// "now" before it: when an attempt by the same actor committed while it waited for the lock,
/// that reading is stale (the attempt falls after the window's end), and the gate says so; the
/// policies are then counted again at a fresh reading. A refusal is counted again too, for the
/// figures its message gives: both are rare paths, under the lock the gate already holds.
pub struct Gate<'a> {
    ctx: &'a Ctx,
    action: &'static str,
    /// The actor's role, as the gate's parameter.
    role: &'static str,
    passed: bool,
}

/// A set-returning function a body reads first, which passes the gate itself: its arguments
/// are its own followed by `rate_limit_gate`'s six, and when the first of those (the actor)
/// is not NULL it calls the gate as its first statement, so the gate's lock comes before any
/// of its own, and returns one row with `allowed` false (and nothing read) when refused. Its
/// columns end with `read_row` (true on a row it read), `allowed` and `stale`: one row with
/// `read_row` NULL when it read nothing. `circulation_member` (V13) is one.
///
/// One function rather than the gate joined to the read in one statement: such a join carried
/// the read's wide row through four plan nodes and two materialisations per call
/// (BENCHMARKS.md, V13).
pub struct GatedRead {
    gated: String,
    ungated: String,
}

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
                placeholders(own + 1..=own + 6)
            ),
            ungated: format!(
                "SELECT * FROM {function}({own_args}, NULL, NULL, NULL, NULL, NULL, NULL)"
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
            role: ctx.actor.role.as_str(),
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
        let now = self.ctx.now();
        let groups = groups_of(self.action);
        let rows = session::query(
            tx,
            statements.as_deref_mut(),
            "SELECT allowed, stale FROM rate_limit_gate($1, $2, $3, $4, $5, $6)",
            &self.gate_params(&groups, &now),
        )?;
        let (allowed, stale) = (rows[0].get(0), rows[0].get(1));
        if allowed {
            return self.check_backdated(tx);
        }
        self.recount(tx, statements, stale, now)?;
        self.check_backdated(tx)
    }

    /// A backdated command (`--at`) is counted in real time as well: every attempt the actor
    /// made in each policy's window up to the real clock, by when it was written
    /// (`recorded_at`), whatever time it claimed. Otherwise stepping `--at` back on each call
    /// would put every attempt outside the window the gate counts. Runs under the lock the
    /// gate took; only backdated commands (staff backfills) pay for it.
    fn check_backdated(&self, tx: &mut impl GenericClient) -> Result<()> {
        if self.ctx.at.is_none() {
            return Ok(());
        }
        let groups = groups_of(self.action);
        let exhausted = tx.query(
            "SELECT p.action_group, p.limit_count, p.window_seconds, count(a.id)
             FROM rate_limit_policy p
             LEFT JOIN audit_log a
               ON a.actor = $1 AND a.outcome <> 'rate_limited'
              AND a.recorded_at > clock_timestamp() - make_interval(secs => p.window_seconds)
              AND (p.action_group = 'mutation' OR a.action = ANY($4))
             WHERE p.role IN ($2, 'any') AND p.action_group = ANY($3)
             GROUP BY p.role, p.action_group, p.limit_count, p.window_seconds
             HAVING count(a.id) >= p.limit_count
             ORDER BY p.window_seconds DESC
             LIMIT 1",
            &[&self.ctx.actor.name, &self.role, &groups, &BORROW_ACTIONS],
        )?;
        match exhausted.first() {
            None => Ok(()),
            Some(row) => {
                let (group, limit, window, used): (String, i32, i32, i64) =
                    (row.get(0), row.get(1), row.get(2), row.get(3));
                Err(Error::RateLimited {
                    message: format!(
                        "{} made {used} {group} attempts in the last {window} s of real time (limit {limit}), backdated ones included",
                        self.ctx.actor.name
                    ),
                    retry_after_secs: 1.max(u64::try_from(window).unwrap_or(1) / 10),
                })
            }
        }
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
        if !self.exempt() {
            let now = self.ctx.now();
            let groups = groups_of(self.action);
            let mut all = params.to_vec();
            all.extend(self.gate_params(&groups, &now));
            let rows = session::query(tx, statements.as_deref_mut(), &read.gated, &all)?;
            let columns = rows[0].len();
            let (allowed, stale) = (rows[0].get(columns - 2), rows[0].get(columns - 1));
            if allowed {
                self.check_backdated(tx)?;
                return Ok(read_rows(rows));
            }
            self.recount(tx, statements.as_deref_mut(), stale, now)?;
            self.check_backdated(tx)?;
        }
        read.without_gate(tx, statements, params)
    }

    fn gate_params<'p>(
        &'p self,
        groups: &'p Vec<&'static str>,
        now: &'p DateTime<Utc>,
    ) -> [(&'p (dyn postgres::types::ToSql + Sync), Type); 6] {
        [
            (&self.ctx.actor.name, Type::TEXT),
            (&self.role, Type::TEXT),
            (groups, Type::TEXT_ARRAY),
            (now, Type::TIMESTAMPTZ),
            (&(BURST_SECONDS as f64), Type::FLOAT8),
            (&BORROW_ACTIONS, Type::TEXT_ARRAY),
        ]
    }

    /// The gate said no: counts again under the lock it holds (at a fresh clock reading when it
    /// found the old one stale) and refuses with the exhausted policy's figures, or lets the
    /// attempt go ahead when the fresh reading leaves room.
    fn recount(
        &self,
        tx: &mut impl GenericClient,
        statements: Option<&mut Statements>,
        stale: bool,
        now: DateTime<Utc>,
    ) -> Result<()> {
        let now = if stale { self.ctx.now() } else { now };
        let (actor, role) = (&self.ctx.actor.name, self.ctx.actor.role);
        let groups = groups_of(self.action);
        let rows = budget_rows(tx, statements, Count::Recount, actor, role, &groups, now)?;
        for b in budgets(tx, actor, rows, now)? {
            if b.retry_after_secs > 0 {
                return Err(Error::RateLimited {
                    message: format!(
                        "{} made {} {} attempts in {} s (limit {}) and {} in {} s (burst {})",
                        actor,
                        b.used,
                        b.action_group,
                        b.window_seconds,
                        b.limit_count,
                        b.burst_used,
                        BURST_SECONDS,
                        b.burst
                    ),
                    retry_after_secs: b.retry_after_secs.max(1) as u64,
                });
            }
        }
        Ok(())
    }
}

/// The rows the read returned: a gated statement that ran no read (or a read that found
/// nothing) still returns the gate's one row, with NULL read columns.
fn read_rows(rows: Vec<postgres::Row>) -> Vec<postgres::Row> {
    rows.into_iter()
        .filter(|r| r.get::<_, Option<bool>>(r.len() - 3) == Some(true))
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
            {
                return Err(Error::invalid(
                    "invalid_input",
                    "role is member|librarian|admin|any, and group borrow|mutation",
                ));
            }
            crate::validate::in_range("--limit", policy.limit_count, 1, 1_000_000)?;
            crate::validate::in_range("--window (seconds)", policy.window_seconds, 1, 2_592_000)?;
            crate::validate::in_range("--burst", policy.burst, 1, 1_000_000)?;
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
    let now = ctx.now();
    let (actor, groups) = (&target.actor.name, ["borrow", "mutation"]);
    let rows = budget_rows(
        client,
        None,
        Count::Exact,
        actor,
        target.actor.role,
        &groups,
        now,
    )?;
    budgets(client, actor, rows, now)
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

/// The rate-limit audit over `[from, to]`: windows are `(t − window, t]`, exactly as enforced.
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

/// The session advisory lock one `bench borrow` holds while it runs: a session lock, so a
/// killed bench releases it with its connection.
pub const BENCH_LOCK_KEY: i64 = 0x4C49_4243_424E; // "LIBCBN"

/// Lifts every rate limit for this connection alone, for `bench borrow`, which measures
/// circulation, not the limiter: the limiter still runs every decision, it just never refuses,
/// and counts about as many rows as a busy desk would under the real policy.
///
/// A temporary `rate_limit_policy` (every policy's limit and burst out of reach, its window one
/// second) shadows the real table on this connection: PostgreSQL looks in the session's
/// temporary schema first. It vanishes with the connection, so nothing lifted can outlive the
/// process or reach another session, and the real policies are never touched.
pub fn lift_for_this_connection(client: &mut impl GenericClient) -> Result<()> {
    client.batch_execute(
        "CREATE TEMPORARY TABLE rate_limit_policy (LIKE public.rate_limit_policy);
         INSERT INTO pg_temp.rate_limit_policy (role, action_group, limit_count, window_seconds, burst)
         SELECT role, action_group, 536870911, 1, 536870911 FROM public.rate_limit_policy;",
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_decision_at_its_boundaries() {
        let now = Utc::now();
        assert_eq!(retry_after(9, 4, 10, 5, 3600, Some(now), now), 0);
        assert_eq!(
            retry_after(
                10,
                0,
                10,
                5,
                3600,
                Some(now - chrono::Duration::seconds(600)),
                now
            ),
            3000
        );
        assert_eq!(
            retry_after(
                10,
                0,
                10,
                5,
                3600,
                Some(now - chrono::Duration::seconds(3600)),
                now
            ),
            1
        );
        assert_eq!(retry_after(3, 5, 10, 5, 3600, None, now), BURST_SECONDS);
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
