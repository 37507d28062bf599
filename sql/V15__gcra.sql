-- Rate limits become a GCRA (generic cell rate algorithm, SPEC §9 names it) over one small
-- state row per actor and policy, in place of the sliding window counted from the audit log.
--
-- Why. The sliding window read the actor's attempts in the window on every mutation, one heap
-- fetch per attempt (rows this fresh are never all-visible): its cost grew with the policy's
-- limit and the actor's pace, and at the desk it was the largest cost of a borrow that bare SQL
-- does not pay (BENCHMARKS.md, seventh and eighth sessions). A GCRA keeps one timestamp per
-- actor and policy, the theoretical arrival time (tat): the time at which the actor's budget
-- would be full again. A decision is one upsert of that row, whatever the limit or the pace.
--
-- The policy's figures read as a rate and a burst: limit_count per window_seconds is the
-- sustained rate, one attempt per emission interval T = window / limit, and up to `burst`
-- attempts may come back to back. An attempt at `now` is within a policy when
--
--     greatest(tat, now) + T - now <= burst * T        (the tolerance)
--
-- and, within or not, the row then holds tat = greatest(tat, now) + T. A refused attempt's
-- transaction rolls back, and its charge with it: a rate-limited attempt costs nothing.
-- Attempts refused or denied for any other reason still count, as they did: libcore charges
-- them again when it audits them after their rollback.
--
-- The row lock the upsert takes is held to COMMIT and serialises one actor's mutations, as the
-- advisory lock did. No stale-clock path is needed any more: an attempt whose clock reading is
-- older than the last one's meets tat as it stands, and cannot find room that was used.
-- `rate-limit audit` still measures sliding windows over the audit log, as SPEC §9 asks.

CREATE TABLE rate_limit_state (
    actor        text NOT NULL,
    role         text NOT NULL,
    action_group text NOT NULL,
    -- The theoretical arrival time: the actor's budget under this policy is full again then.
    tat          timestamptz NOT NULL,
    -- burst * T of the policy as it was at the last charge. The upsert's RETURNING sees only
    -- this row, so the row carries the figure its decision compares against.
    tolerance    interval NOT NULL,
    PRIMARY KEY (actor, role, action_group)
);

-- Charges one attempt by p_actor to every policy of its role (and `any`) in p_groups, in a
-- fixed order, so two transactions of one actor lock its rows in the same order. True when
-- every policy had room for it. PL/pgSQL keeps the statement's plan for the session.
CREATE FUNCTION rate_limit_charge(p_actor text, p_role text, p_groups text[], p_now timestamptz)
RETURNS boolean
LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    v_within boolean;
BEGIN
    WITH charged AS (
        INSERT INTO rate_limit_state AS s (actor, role, action_group, tat, tolerance)
        SELECT p_actor, p.role, p.action_group,
               p_now + make_interval(secs => p.window_seconds::float8 / p.limit_count),
               make_interval(secs => p.burst::float8 * p.window_seconds / p.limit_count)
        FROM rate_limit_policy p
        WHERE p.role IN (p_role, 'any') AND p.action_group = ANY (p_groups)
        ORDER BY p.action_group, p.role
        ON CONFLICT (actor, role, action_group) DO UPDATE
        SET tat = greatest(s.tat, p_now) + (excluded.tat - p_now),
            tolerance = excluded.tolerance
        RETURNING s.tat - p_now <= s.tolerance AS within)
    SELECT coalesce(bool_and(within), true) INTO v_within FROM charged;
    RETURN v_within;
END $$;

DROP FUNCTION circulation_member(uuid, uuid, uuid, text, text, text[], timestamptz,
                                 double precision, text[]);
DROP FUNCTION rate_limit_gate(text, text, text[], timestamptz, double precision, text[]);
DROP FUNCTION rate_limit_budgets(text, text, text[], timestamptz, double precision, text[],
                                 boolean);
DROP TYPE rate_limit_gate_row;
ALTER TYPE circulation_member_row DROP ATTRIBUTE stale;

-- V14's circulation_member, gated by the charge: its arguments after its own three are the
-- actor, its role, the action's groups and the clock reading; a NULL actor reads ungated.
CREATE FUNCTION circulation_member(
    p_member uuid, p_loan uuid, p_book uuid,
    p_actor text, p_role text, p_groups text[], p_now timestamptz)
RETURNS SETOF circulation_member_row
LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    v_book_category text;
    v_book_available integer;
    v_book_title text;
    v_none circulation_member_row;
BEGIN
    IF p_actor IS NOT NULL AND NOT rate_limit_charge(p_actor, p_role, p_groups, p_now) THEN
        v_none.allowed := false;
        RETURN NEXT v_none;
        RETURN;
    END IF;
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
               v_book_category, v_book_available, v_book_title,
               true, true
        FROM member m
        JOIN circulation_rule r ON r.category = m.category
        LEFT JOIN loan l ON l.member_id = m.id AND l.returned_at IS NULL
        LEFT JOIN book lb ON lb.id = l.book_id
        WHERE m.id = p_member;
    IF NOT FOUND THEN
        v_none.allowed := true;
        RETURN NEXT v_none;
    END IF;
END $$;
