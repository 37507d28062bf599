-- A connection that keeps its statements prepared (a Session) keeps the library calendar too,
-- and circulation_member sends the calendar only when it changed since that connection last
-- read it.
--
-- Every borrow, return and renewal needs the calendar (the time zone and every closed day) to
-- compute due dates and overdue days, and circulation_member read and sorted all of it on every
-- call, and the client rebuilt it. The cost grows with every year of holidays a library keeps;
-- the calendar changes a few times a year. Under callgrind, one bench client on load_test with
-- high_scale's 55 closed days: 2.375 M server instructions per operation before, 2.230 M after
-- (-6.1 %; BENCHMARKS.md, ninth session).
--
-- calendar_stamp holds one random id, replaced by any statement that changes closed_day or
-- library_setting (the time zone lives there), so "same stamp" means "same calendar". It is
-- derived state, not data: backups leave it out, and a restore or a seed renews it by writing
-- those tables. The id is random rather than a counter so that no database can show a stamp a
-- connection saw with another calendar. A caller that keeps no calendar passes NULL and always
-- gets it; with no stamp row, every caller gets it.

CREATE TABLE calendar_stamp (
    only_row boolean PRIMARY KEY DEFAULT true CHECK (only_row),
    stamp    uuid NOT NULL DEFAULT gen_random_uuid()
);
INSERT INTO calendar_stamp DEFAULT VALUES;

CREATE FUNCTION calendar_stamp_renew() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO calendar_stamp (only_row, stamp) VALUES (true, gen_random_uuid())
    ON CONFLICT (only_row) DO UPDATE SET stamp = EXCLUDED.stamp;
    RETURN NULL;
END $$;

CREATE TRIGGER closed_day_renews_calendar_stamp
    AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON closed_day
    FOR EACH STATEMENT EXECUTE FUNCTION calendar_stamp_renew();
CREATE TRIGGER library_setting_renews_calendar_stamp
    AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON library_setting
    FOR EACH STATEMENT EXECUTE FUNCTION calendar_stamp_renew();

-- The row gains calendar_stamp after closed_days; timezone and closed_days are NULL when the
-- caller's stamp is current. The closed days are no longer sorted: the caller keeps them in a
-- set.
DROP FUNCTION circulation_member(uuid, uuid, uuid, text, text, text[], timestamptz,
                                 double precision, text[]);
DROP TYPE circulation_member_row;
CREATE TYPE circulation_member_row AS (
               member_id uuid, email text, status text, created_at timestamptz, expires_at timestamptz,
               category text, loan_days integer, max_active_loans integer,
               max_renewals integer, fine_cents_per_day bigint, grace_days integer,
               max_fine_cents_per_loan bigint, block_fine_cents bigint,
               block_overdue_days integer, credits_cents bigint, stored_fines_cents bigint,
               timezone text, closed_days date[], calendar_stamp uuid,
               loan_id uuid, loan_book_id uuid, loan_borrowed_at timestamptz,
               loan_due_at timestamptz, loan_fine_cents bigint,
               loan_fine_cents_per_day bigint, loan_grace_days integer,
               loan_max_fine_cents bigint, loan_renewals integer, loan_book_category text,
               book_category text, book_available_copies integer, book_title text,
               read_row boolean, allowed boolean, stale boolean
);

CREATE FUNCTION circulation_member(
    p_member uuid, p_loan uuid, p_book uuid, p_calendar_stamp uuid,
    p_actor text, p_role text, p_groups text[], p_now timestamptz,
    p_burst_seconds double precision, p_borrow_actions text[])
RETURNS SETOF circulation_member_row
LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    v_book_category text;
    v_book_available integer;
    v_book_title text;
    v_stamp uuid;
    v_timezone text;
    v_closed_days date[];
    v_none circulation_member_row;
    v_gate rate_limit_gate_row;
BEGIN
    IF p_actor IS NOT NULL THEN
        v_gate := rate_limit_gate(p_actor, p_role, p_groups, p_now, p_burst_seconds,
                                  p_borrow_actions);
        IF NOT v_gate.allowed THEN
            v_none.allowed := false;
            v_none.stale := v_gate.stale;
            RETURN NEXT v_none;
            RETURN;
        END IF;
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
    -- The stamp before the calendar: a change committed between the two statements leaves the
    -- caller a newer calendar under the older stamp, which it reads again next time, never an
    -- older calendar under the newer stamp, which it would keep.
    SELECT c.stamp INTO v_stamp FROM calendar_stamp c;
    IF v_stamp IS NULL OR v_stamp IS DISTINCT FROM p_calendar_stamp THEN
        v_timezone := (SELECT s.value FROM library_setting s WHERE s.key = 'timezone');
        v_closed_days := ARRAY(SELECT d.day FROM closed_day d);
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
               v_timezone, v_closed_days, v_stamp,
               l.id, l.book_id, l.borrowed_at, l.due_at, l.fine_cents,
               l.fine_cents_per_day, l.grace_days, l.max_fine_cents, l.renewals, lb.category,
               v_book_category, v_book_available, v_book_title,
               true, true, false
        FROM member m
        JOIN circulation_rule r ON r.category = m.category
        LEFT JOIN loan l ON l.member_id = m.id AND l.returned_at IS NULL
        LEFT JOIN book lb ON lb.id = l.book_id
        WHERE m.id = p_member;
    IF NOT FOUND THEN
        v_none.allowed := true;
        v_none.stale := false;
        RETURN NEXT v_none;
    END IF;
END $$;
