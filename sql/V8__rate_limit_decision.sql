-- A rate-limit decision in one round trip: take the actor's advisory lock, then count.
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
        FROM rate_limit_budgets(p_actor, p_role, p_groups, p_now, p_burst_seconds, p_borrow_actions) b;
END $$;
