-- Trims to the borrow hot path, each measured in BENCHMARKS.md.

-- rate_limit_budgets becomes a LANGUAGE sql function. PostgreSQL inlines such a function into
-- the query that calls it, so rate_limit_gate's RETURN QUERY (planned once per session) holds
-- the counting query itself; the PL/pgSQL version cost every decision a nested function call
-- and a second materialisation of its rows. Same arguments, same rows.
CREATE OR REPLACE FUNCTION rate_limit_budgets(
    p_actor text, p_role text, p_groups text[], p_now timestamptz,
    p_burst_seconds double precision, p_borrow_actions text[], p_bounded boolean)
RETURNS TABLE (role text, action_group text, limit_count integer, window_seconds integer,
               burst integer, used bigint, burst_used bigint)
LANGUAGE sql STABLE AS $$
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
    ORDER BY p.action_group, p.role
$$;

-- The limiter's gate, replacing rate_limit_decision (V8): take the actor's advisory lock, then
-- say in one row whether the attempt may go ahead. Same lock, same stale-clock check, same
-- bounded counts; it answers with one row so that a mutation can put its own first read
-- behind it in the same statement:
--
--     SELECT f.*, g.allowed, g.stale FROM rate_limit_gate(...) g
--     LEFT JOIN LATERAL (SELECT * FROM first_read(...) WHERE g.allowed OFFSET 0) f ON true
--
-- The lateral reference makes g the outer side, so the gate runs (and its lock is held)
-- before the read, and `g.allowed` becomes a one-time filter: a refused or stale attempt never
-- runs the read. The caller recounts with rate_limit_budgets under the held lock when the
-- answer is no, for the refusal's figures or, after a stale clock, for the decision itself.
DROP FUNCTION rate_limit_decision(text, text, text[], timestamptz, double precision, text[]);
CREATE FUNCTION rate_limit_gate(
    p_actor text, p_role text, p_groups text[], p_now timestamptz,
    p_burst_seconds double precision, p_borrow_actions text[])
RETURNS TABLE (allowed boolean, stale boolean)
LANGUAGE plpgsql VOLATILE AS $$
BEGIN
    PERFORM pg_advisory_xact_lock(21068, hashtext(p_actor));
    IF EXISTS (SELECT 1 FROM audit_log a WHERE a.actor = p_actor AND a.at > p_now) THEN
        RETURN QUERY SELECT false, true;
        RETURN;
    END IF;
    RETURN QUERY
        SELECT coalesce(bool_and(b.used < b.limit_count AND b.burst_used < b.burst), true), false
        FROM rate_limit_budgets(p_actor, p_role, p_groups, p_now, p_burst_seconds,
                                p_borrow_actions, true) b;
END $$;

-- circulation_member reads the time zone setting itself. library_timezone() cannot be inlined
-- (its body reads a table), so PostgreSQL parsed and planned that body again on every call.
CREATE OR REPLACE FUNCTION circulation_member(p_member uuid, p_loan uuid, p_book uuid)
RETURNS TABLE (member_id uuid, email text, status text, created_at timestamptz, expires_at timestamptz,
               category text, loan_days integer, max_active_loans integer,
               max_renewals integer, fine_cents_per_day bigint, grace_days integer,
               max_fine_cents_per_loan bigint, block_fine_cents bigint,
               block_overdue_days integer, credits_cents bigint, stored_fines_cents bigint,
               timezone text, closed_days date[],
               loan_id uuid, loan_book_id uuid, loan_borrowed_at timestamptz,
               loan_due_at timestamptz, loan_fine_cents bigint,
               loan_fine_cents_per_day bigint, loan_grace_days integer,
               loan_max_fine_cents bigint, loan_renewals integer, loan_book_category text,
               book_category text, book_available_copies integer, book_title text)
LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    v_book_category text;
    v_book_available integer;
    v_book_title text;
BEGIN
    IF p_member IS NULL THEN
        SELECT l.member_id INTO p_member FROM loan l WHERE l.id = p_loan;
    END IF;
    PERFORM 1 FROM member m WHERE m.id = p_member FOR UPDATE;
    IF FOUND AND p_book IS NOT NULL THEN
        SELECT b.category, b.available_copies, b.title
        INTO v_book_category, v_book_available, v_book_title
        FROM book b WHERE b.id = p_book FOR UPDATE;
    END IF;
    RETURN QUERY
        SELECT m.id, m.email, m.status, m.created_at, m.expires_at,
               r.category, r.loan_days, r.max_active_loans, r.max_renewals,
               r.fine_cents_per_day, r.grace_days, r.max_fine_cents_per_loan,
               r.block_fine_cents, r.block_overdue_days,
               (SELECT coalesce(sum(a.amount_cents), 0)::bigint
                FROM account_entry a WHERE a.member_id = p_member),
               (SELECT coalesce(sum(f.fine_cents), 0)::bigint
                FROM loan f WHERE f.member_id = p_member AND f.fine_cents > 0),
               (SELECT s.value FROM library_setting s WHERE s.key = 'timezone'),
               ARRAY(SELECT d.day FROM closed_day d ORDER BY d.day),
               l.id, l.book_id, l.borrowed_at, l.due_at, l.fine_cents,
               l.fine_cents_per_day, l.grace_days, l.max_fine_cents, l.renewals, lb.category,
               v_book_category, v_book_available, v_book_title
        FROM member m
        JOIN circulation_rule r ON r.category = m.category
        LEFT JOIN loan l ON l.member_id = m.id AND l.returned_at IS NULL
        LEFT JOIN book lb ON lb.id = l.book_id
        WHERE m.id = p_member;
END $$;

-- The audit row is written by a plain INSERT now (prepared once on a Session, and on the hot
-- path carried by the mutation's own last statement, see audit.rs), so the wrapper that kept
-- its plan is no longer called.
DROP FUNCTION audit_append(uuid, timestamptz, text, text, text, text, text, text, jsonb);
