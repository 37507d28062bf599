-- The counts behind a rate-limit decision as one server-side function, so PL/pgSQL keeps the
-- plans instead of every decision parsing and planning them again. The caller takes the actor's
-- advisory lock in a statement of its own first and reads "now" after it, so an attempt
-- committed while it waited cannot fall after the end of its window.
CREATE FUNCTION rate_limit_budgets(
    p_actor text, p_role text, p_groups text[], p_now timestamptz,
    p_burst_seconds double precision, p_borrow_actions text[])
RETURNS TABLE (role text, action_group text, limit_count integer, window_seconds integer,
               burst integer, used bigint, burst_used bigint)
LANGUAGE plpgsql STABLE AS $$
BEGIN
    RETURN QUERY
        SELECT p.role, p.action_group, p.limit_count, p.window_seconds, p.burst,
               (SELECT count(*) FROM audit_log a
                WHERE a.actor = p_actor AND a.outcome <> 'rate_limited'
                  AND a.at > p_now - make_interval(secs => p.window_seconds) AND a.at <= p_now
                  AND (p.action_group = 'mutation' OR a.action = ANY(p_borrow_actions))),
               (SELECT count(*) FROM audit_log a
                WHERE a.actor = p_actor AND a.outcome <> 'rate_limited'
                  AND a.at > p_now - make_interval(secs => least(p_burst_seconds, p.window_seconds)) AND a.at <= p_now
                  AND (p.action_group = 'mutation' OR a.action = ANY(p_borrow_actions)))
        FROM rate_limit_policy p
        WHERE p.role IN (p_role, 'any') AND p.action_group = ANY(p_groups)
        ORDER BY p.action_group, p.role;
END $$;
