//! The rate-limit gate every mutation passes (SPEC §9), inside its own transaction and before
//! its work: the lowest layer above the connection, below the audit runner that hands it out.
//!
//! The state is the audit log: a policy allows an attempt when the actor's attempts in the
//! sliding window `(now − window, now]` number fewer than the limit, and those in the last 10
//! seconds (or the window, if shorter) fewer than the burst. A per-actor advisory lock (held to
//! COMMIT) serialises one actor's decisions, so the count and the new audit row can never race —
//! across any number of `libctl` processes. Rate-limited attempts are logged but do not count
//! against the budget.

use chrono::{DateTime, Utc};
use postgres::types::Type;
use postgres::GenericClient;

use crate::actor::{Ctx, Role};
use crate::error::{Error, Result};
use crate::session::{self, Params, Statements};

/// Actions in the `borrow` group.
pub const BORROW_ACTIONS: &[&str] = &["loan.borrow", "loan.renew"];
/// The burst window.
pub const BURST_SECONDS: i64 = 10;

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
pub(crate) enum Count {
    /// Count just enough to decide, under the actor's lock (held since the gate).
    Recount,
    /// Count exactly, for `rate-limit status`.
    Exact,
}

/// The policy rows behind a refusal or a status, from `rate_limit_budgets` (V8, V12, V13).
pub(crate) fn budget_rows(
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
pub(crate) fn budgets(
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
/// `audit::run_on` hands one to the body, which passes it once: alone ([`Gate::pass`]) or
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
