-- Rate-limit counts in one scan per policy, and a decision in one round trip.

-- The window and the burst counts come from one backward scan of the actor's index range
-- (the burst window is never longer than the policy's window). With p_bounded the scan stops
-- after max(limit, burst) rows: enough to decide "full or not" exactly, whatever the actor's
-- history, so a decision costs O(limit) however busy the actor is. `rate-limit status` asks
-- unbounded, for exact counts.
DROP FUNCTION rate_limit_budgets(text, text, text[], timestamptz, double precision, text[]);
CREATE FUNCTION rate_limit_budgets(
    p_actor text, p_role text, p_groups text[], p_now timestamptz,
    p_burst_seconds double precision, p_borrow_actions text[], p_bounded boolean)
RETURNS TABLE (role text, action_group text, limit_count integer, window_seconds integer,
               burst integer, used bigint, burst_used bigint)
LANGUAGE plpgsql STABLE AS $$
BEGIN
    RETURN QUERY
        SELECT p.role, p.action_group, p.limit_count, p.window_seconds, p.burst, c.used, c.burst_used
        FROM rate_limit_policy p
        CROSS JOIN LATERAL (
            SELECT count(*) AS used,
                   count(*) FILTER (WHERE r.at > p_now - make_interval(secs => least(p_burst_seconds, p.window_seconds))) AS burst_used
            FROM (SELECT a.at FROM audit_log a
                  WHERE a.actor = p_actor AND a.outcome <> 'rate_limited'
                    AND a.at > p_now - make_interval(secs => p.window_seconds) AND a.at <= p_now
                    AND (p.action_group = 'mutation' OR a.action = ANY(p_borrow_actions))
                  ORDER BY a.at DESC
                  LIMIT CASE WHEN p_bounded THEN greatest(p.limit_count, p.burst) END) r
        ) c
        WHERE p.role IN (p_role, 'any') AND p.action_group = ANY(p_groups)
        ORDER BY p.action_group, p.role;
END $$;

-- The decision: take the actor's advisory lock, then count.
--
-- The caller read its clock ("now") before sending this statement. If another attempt by the
-- same actor committed while we waited for the lock, its audit row is stamped after our "now"
-- and our window would miss it. So, once the lock is held, an audit row of this actor later than
-- "now" means the reading is stale: the function returns one row with `stale` set and no
-- counts, and the caller reads its clock again and asks `rate_limit_budgets` (the lock is still
-- held, to COMMIT). Backdated commands (`--at`) take that slower path too, and stay exact.
--
-- VOLATILE on purpose: each statement inside gets a fresh snapshot, so the counts see every
-- attempt committed before the lock was granted.
CREATE FUNCTION rate_limit_decision(
    p_actor text, p_role text, p_groups text[], p_now timestamptz,
    p_burst_seconds double precision, p_borrow_actions text[])
RETURNS TABLE (role text, action_group text, limit_count integer, window_seconds integer,
               burst integer, used bigint, burst_used bigint, stale boolean)
LANGUAGE plpgsql VOLATILE AS $$
BEGIN
    PERFORM pg_advisory_xact_lock(21068, hashtext(p_actor));
    IF EXISTS (SELECT 1 FROM audit_log a WHERE a.actor = p_actor AND a.at > p_now) THEN
        RETURN QUERY SELECT NULL::text, NULL::text, NULL::integer, NULL::integer,
                            NULL::integer, NULL::bigint, NULL::bigint, true;
        RETURN;
    END IF;
    RETURN QUERY
        SELECT b.role, b.action_group, b.limit_count, b.window_seconds, b.burst,
               b.used, b.burst_used, false
        FROM rate_limit_budgets(p_actor, p_role, p_groups, p_now, p_burst_seconds,
                                p_borrow_actions, true) b;
END $$;
