//! Rate limits (SPEC §9): the policies and their administration, an actor's standing, and the
//! rate-limit audit. The gate every mutation passes lives below the audit runner, in [`gate`];
//! this module sits above it, with the domain modules.

use chrono::{DateTime, Utc};
use postgres::{Client, GenericClient};
use serde_json::json;

use crate::actor::{Capability, Ctx};
use crate::audit::{self, Audited, Operation};
use crate::error::{Error, Result};

pub mod gate;

use gate::{budget_rows, budgets, Count};
pub use gate::{groups_of, retry_after, Budget, Gate, GatedRead, BORROW_ACTIONS, BURST_SECONDS};

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
    let target = crate::actor::Ctx::new(crate::actor::lookup(client, actor)?);
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
                 FROM audit_all
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
