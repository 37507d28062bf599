-- Holds (SPEC §16): a queue per title in (placed_at, id) order, trapped inside the transaction
-- that frees a copy, a hold shelf that expires, and a notice when a hold becomes ready.
--
-- Locks: every change to a title's holds or items takes the book row first (after the member
-- row, when it has one), so the queue of one title changes one transaction at a time and
-- readers of it under that lock see it whole.

ALTER TABLE circulation_rule
    ADD COLUMN max_holds integer NOT NULL DEFAULT 5
        CONSTRAINT circulation_rule_max_holds_check CHECK (max_holds BETWEEN 0 AND 1000),
    ADD COLUMN hold_pickup_days integer NOT NULL DEFAULT 7
        CONSTRAINT circulation_rule_hold_pickup_days_check CHECK (hold_pickup_days BETWEEN 1 AND 365);

CREATE TABLE hold (
    id           uuid PRIMARY KEY,
    book_id      uuid NOT NULL REFERENCES book (id),
    member_id    uuid NOT NULL REFERENCES member (id),
    placed_at    timestamptz NOT NULL,
    status       text NOT NULL DEFAULT 'waiting'
        CONSTRAINT hold_status_known CHECK (status IN ('waiting', 'ready', 'fulfilled',
                                                       'cancelled', 'expired')),
    -- The item trapped for it (ready, and kept once expired or cancelled from ready), or the
    -- item its borrow took (fulfilled).
    item_id      uuid,
    ready_at     timestamptz,
    -- The last day to collect it, in library time.
    pickup_by    date,
    cancelled_at timestamptz,
    fulfilled_at timestamptz,
    expired_at   timestamptz,
    CONSTRAINT hold_item_of_book FOREIGN KEY (book_id, item_id) REFERENCES item (book_id, id),
    -- One OR per status (not a CASE, which the catalog prints over several lines).
    CONSTRAINT hold_state CHECK (
        (status = 'waiting' AND item_id IS NULL AND ready_at IS NULL AND pickup_by IS NULL
         AND cancelled_at IS NULL AND fulfilled_at IS NULL AND expired_at IS NULL)
        OR (status = 'ready' AND item_id IS NOT NULL AND ready_at IS NOT NULL
            AND pickup_by IS NOT NULL AND cancelled_at IS NULL AND fulfilled_at IS NULL
            AND expired_at IS NULL)
        OR (status = 'fulfilled' AND item_id IS NOT NULL AND fulfilled_at IS NOT NULL
            AND cancelled_at IS NULL AND expired_at IS NULL)
        OR (status = 'cancelled' AND cancelled_at IS NOT NULL AND fulfilled_at IS NULL
            AND expired_at IS NULL)
        OR (status = 'expired' AND item_id IS NOT NULL AND ready_at IS NOT NULL
            AND pickup_by IS NOT NULL AND expired_at IS NOT NULL AND cancelled_at IS NULL
            AND fulfilled_at IS NULL)),
    CONSTRAINT hold_ready_after_placed CHECK (ready_at >= placed_at),
    CONSTRAINT hold_ended_after_placed CHECK (
        coalesce(cancelled_at, fulfilled_at, expired_at, placed_at) >= placed_at)
);

-- At most one live hold per (member, title); also the index a member's live holds are counted by.
CREATE UNIQUE INDEX hold_one_live_per_member_title ON hold (member_id, book_id)
    WHERE status IN ('waiting', 'ready');
-- One ready hold per item on the hold shelf.
CREATE UNIQUE INDEX hold_one_ready_per_item ON hold (item_id) WHERE status = 'ready';
-- The queue of each title, in order.
CREATE INDEX hold_queue ON hold (book_id, placed_at, id) WHERE status = 'waiting';
-- The hold shelf, by the day each hold must be collected by.
CREATE INDEX hold_shelf ON hold (pickup_by, id) WHERE status = 'ready';
-- A member's holds, live or past.
CREATE INDEX hold_member_history ON hold (member_id, placed_at);

-- Notices gain a kind: the overdue levels of a loan, or a hold ready for pickup (one per hold).
ALTER TABLE notice
    ADD COLUMN kind text NOT NULL DEFAULT 'overdue'
        CONSTRAINT notice_kind_known CHECK (kind IN ('overdue', 'hold_ready')),
    ADD COLUMN hold_id uuid CONSTRAINT notice_hold_id_fkey REFERENCES hold (id),
    ALTER COLUMN loan_id DROP NOT NULL,
    ALTER COLUMN level DROP NOT NULL,
    ALTER COLUMN overdue_days DROP NOT NULL,
    ALTER COLUMN fine_cents DROP NOT NULL;
ALTER TABLE notice ADD CONSTRAINT notice_kind_key CHECK (
    (kind = 'overdue' AND loan_id IS NOT NULL AND level IS NOT NULL AND overdue_days IS NOT NULL
     AND fine_cents IS NOT NULL AND hold_id IS NULL)
    OR (kind = 'hold_ready' AND hold_id IS NOT NULL AND loan_id IS NULL AND level IS NULL));
CREATE UNIQUE INDEX notice_one_per_hold ON notice (hold_id) WHERE kind = 'hold_ready';

-- The day `p_days` open days after `p_day`: closed days do not count.
CREATE FUNCTION open_days_after(p_day date, p_days integer) RETURNS date
LANGUAGE sql STABLE AS $$
    SELECT d.day
    FROM (SELECT (p_day + n) AS day FROM generate_series(1, p_days + 3660) AS n) AS d
    WHERE NOT EXISTS (SELECT 1 FROM closed_day c WHERE c.day = d.day)
    ORDER BY d.day OFFSET greatest(p_days, 1) - 1 LIMIT 1
$$;

-- Whether a member may be served a hold at `p_now`: active, membership not expired, and not
-- blocked. The SQL twin of libcore's require_active and require_not_blocked (circulation.rs):
-- outstanding fines (stored fines, less payments and waivers, plus what open loans have
-- accrued beyond their stored fine) under the block threshold, and no loan overdue by more
-- than the allowed days.
CREATE FUNCTION member_in_good_standing(p_member uuid, p_now timestamptz) RETURNS boolean
LANGUAGE sql STABLE AS $$
    SELECT m.status = 'active'
       AND (m.expires_at IS NULL OR m.expires_at > p_now)
       AND open_loans.worst <= r.block_overdue_days
       AND (SELECT coalesce(sum(f.fine_cents), 0) FROM loan f
            WHERE f.member_id = m.id AND f.fine_cents > 0)
         - (SELECT coalesce(sum(a.amount_cents), 0) FROM account_entry a WHERE a.member_id = m.id)
         + open_loans.unassessed < r.block_fine_cents
    FROM member m
    JOIN circulation_rule r ON r.category = m.category
    CROSS JOIN LATERAL (
        SELECT coalesce(max(o.days), 0) AS worst,
               coalesce(sum(greatest(fine_cents(o.per_day, o.grace, o.cap, o.days) - o.stored, 0)), 0)
                   AS unassessed
        FROM (SELECT overdue_days(l.due_at, p_now, library_timezone()) AS days,
                     l.fine_cents_per_day AS per_day, l.grace_days AS grace,
                     l.max_fine_cents AS cap, l.fine_cents AS stored
              FROM loan l WHERE l.member_id = m.id AND l.returned_at IS NULL) AS o
    ) AS open_loans
    WHERE m.id = p_member
$$;

CREATE TYPE hold_trapped AS (hold_id uuid, member_id uuid, ready_at timestamptz, pickup_by date);

-- A copy comes free (returned, passed on from a hold that ended, found, or newly added): it
-- goes to the first waiting hold of its title, in queue order, whose member is in good
-- standing, and onto the hold shelf with a hold_ready notice; with no such hold it goes to
-- the shelf. The book's available counter follows. Locks the book, then the item, then the
-- hold. Audits the trap as `actor`. Returns the hold trapped, or NULL.
CREATE FUNCTION hold_trap(p_item uuid, p_now timestamptz, p_actor text, p_role text)
RETURNS hold_trapped
LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    v_book    uuid;
    v_was     text;
    v_barcode text;
    v_hold    record;
    v_ready   timestamptz;
    v_pickup  date;
    v_tz      text := library_timezone();
BEGIN
    SELECT i.book_id INTO v_book FROM item i WHERE i.id = p_item;
    PERFORM 1 FROM book b WHERE b.id = v_book FOR UPDATE;
    SELECT i.status, i.barcode INTO v_was, v_barcode FROM item i WHERE i.id = p_item FOR UPDATE;
    SELECT h.id, h.member_id, h.placed_at, r.hold_pickup_days INTO v_hold
    FROM hold h
    JOIN member m ON m.id = h.member_id
    JOIN circulation_rule r ON r.category = m.category
    WHERE h.book_id = v_book AND h.status = 'waiting'
      AND member_in_good_standing(h.member_id, p_now)
    ORDER BY h.placed_at, h.id
    LIMIT 1
    FOR UPDATE OF h;
    IF NOT FOUND THEN
        IF v_was <> 'available' THEN
            UPDATE item SET status = 'available', status_changed_at = p_now WHERE id = p_item;
            UPDATE book SET available_copies = available_copies + 1 WHERE id = v_book;
        END IF;
        RETURN NULL;
    END IF;
    -- A hold placed after the copy came free (a catch-up replaying a missed night) is served
    -- from when it was placed.
    v_ready := greatest(p_now, v_hold.placed_at);
    v_pickup := open_days_after((v_ready AT TIME ZONE v_tz)::date, v_hold.hold_pickup_days);
    UPDATE hold SET status = 'ready', item_id = p_item, ready_at = v_ready, pickup_by = v_pickup
    WHERE id = v_hold.id;
    UPDATE item SET status = 'on_hold_shelf', status_changed_at = v_ready WHERE id = p_item;
    IF v_was = 'available' THEN
        UPDATE book SET available_copies = available_copies - 1 WHERE id = v_book;
    END IF;
    INSERT INTO notice (id, kind, hold_id, member_id, issued_on, created_at)
    VALUES (uuid_v7(v_ready), 'hold_ready', v_hold.id, v_hold.member_id,
            (v_ready AT TIME ZONE v_tz)::date, v_ready);
    INSERT INTO audit_log (id, at, actor, actor_role, action, entity_type, entity_id, outcome, details)
    VALUES (uuid_v7(v_ready), v_ready, p_actor, p_role, 'hold.trap', 'hold', v_hold.id::text, 'ok',
            jsonb_build_object('item', v_barcode, 'member', v_hold.member_id,
                               'before', jsonb_build_object('status', 'waiting'),
                               'after', jsonb_build_object('status', 'ready', 'pickup_by', v_pickup)));
    RETURN ROW(v_hold.id, v_hold.member_id, v_ready, v_pickup)::hold_trapped;
END $$;

-- A return's writes: the loan closes with its fine, and its item goes to the title's queue
-- (hold_trap). Then the returner's own waiting holds get any copy on the shelf: the return
-- may have lifted their block.
CREATE FUNCTION loan_return(p_loan uuid, p_now timestamptz, p_fine bigint, p_assessed_on date,
                            p_actor text, p_role text)
RETURNS hold_trapped
LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    v_item    uuid;
    v_member  uuid;
    v_trapped hold_trapped;
BEGIN
    UPDATE loan SET returned_at = p_now, fine_cents = p_fine, fine_assessed_on = p_assessed_on
    WHERE id = p_loan
    RETURNING item_id, member_id INTO v_item, v_member;
    v_trapped := hold_trap(v_item, p_now, p_actor, p_role);
    IF EXISTS (SELECT 1 FROM hold h WHERE h.member_id = v_member AND h.status = 'waiting') THEN
        PERFORM holds_retarget(NULL, v_member, p_now, p_actor, p_role);
    END IF;
    RETURN v_trapped;
END $$;

-- Gives copies on the shelf to waiting holds in good standing: of one title (p_book), of one
-- member's waiting holds (p_member), or everywhere. Titles are locked in id order. Returns
-- how many holds became ready.
CREATE FUNCTION holds_retarget(p_book uuid, p_member uuid, p_now timestamptz, p_actor text,
                               p_role text)
RETURNS integer
LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    v_book  uuid;
    v_item  uuid;
    v_count integer := 0;
BEGIN
    FOR v_book IN
        SELECT DISTINCT h.book_id FROM hold h
        WHERE h.status = 'waiting'
          AND (p_book IS NULL OR h.book_id = p_book)
          AND (p_member IS NULL OR h.member_id = p_member)
          AND EXISTS (SELECT 1 FROM item i WHERE i.book_id = h.book_id AND i.status = 'available')
        ORDER BY 1
    LOOP
        -- Under the book's lock no borrow takes these items while they are trapped.
        PERFORM 1 FROM book b WHERE b.id = v_book FOR UPDATE;
        FOR v_item IN
            SELECT i.id FROM item i WHERE i.book_id = v_book AND i.status = 'available' ORDER BY i.id
        LOOP
            EXIT WHEN (hold_trap(v_item, p_now, p_actor, p_role)).hold_id IS NULL;
            v_count := v_count + 1;
        END LOOP;
    END LOOP;
    RETURN v_count;
END $$;

-- Ends a live hold: `cancelled` (by its member, a librarian, or the member's closing) or
-- `fulfilled` (by the borrow of `p_item`). A ready hold's item, unless the borrow took it,
-- passes to the next hold. Locks the book, then the hold. Audits the change as `actor`.
-- Returns the status the hold had, or NULL when it was not live.
CREATE FUNCTION hold_end(p_hold uuid, p_status text, p_item uuid, p_now timestamptz,
                         p_reason text, p_actor text, p_role text)
RETURNS text
LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    v_book uuid;
    v_was  text;
    v_held uuid;
BEGIN
    IF p_status NOT IN ('cancelled', 'fulfilled') THEN
        RAISE EXCEPTION 'hold_end ends a hold as cancelled or fulfilled, not %', p_status
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    SELECT h.book_id INTO v_book FROM hold h WHERE h.id = p_hold;
    PERFORM 1 FROM book b WHERE b.id = v_book FOR UPDATE;
    SELECT h.status, h.item_id INTO v_was, v_held FROM hold h WHERE h.id = p_hold FOR UPDATE;
    IF v_was IS NULL OR v_was NOT IN ('waiting', 'ready') THEN
        RETURN v_was;
    END IF;
    UPDATE hold SET status = p_status,
                    cancelled_at = CASE WHEN p_status = 'cancelled' THEN p_now END,
                    fulfilled_at = CASE WHEN p_status = 'fulfilled' THEN p_now END,
                    item_id = coalesce(p_item, item_id)
    WHERE id = p_hold;
    INSERT INTO audit_log (id, at, actor, actor_role, action, entity_type, entity_id, outcome, details)
    VALUES (uuid_v7(p_now), p_now, p_actor, p_role,
            CASE p_status WHEN 'cancelled' THEN 'hold.cancel' ELSE 'hold.fulfil' END,
            'hold', p_hold::text, 'ok',
            jsonb_build_object('reason', p_reason, 'item', p_item,
                               'before', jsonb_build_object('status', v_was),
                               'after', jsonb_build_object('status', p_status)));
    IF v_was = 'ready' AND v_held IS DISTINCT FROM p_item THEN
        PERFORM hold_trap(v_held, p_now, p_actor, p_role);
    END IF;
    RETURN v_was;
END $$;

-- Expires every ready hold whose last pickup day is before `p_as_of`, in the order they came
-- due, each at the first instant after its last day: its item passes along the queue as if
-- each night had run, and a hold it becomes ready for that also came due expires in turn.
CREATE FUNCTION holds_expire(p_as_of date, p_actor text, p_role text,
                             OUT expired integer, OUT passed_on integer)
LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    v_hold record;
    v_at   timestamptz;
    v_tz   text := library_timezone();
BEGIN
    expired := 0;
    passed_on := 0;
    LOOP
        SELECT h.id, h.book_id, h.item_id, h.pickup_by INTO v_hold
        FROM hold h WHERE h.status = 'ready' AND h.pickup_by < p_as_of
        ORDER BY h.pickup_by, h.id LIMIT 1;
        EXIT WHEN NOT FOUND;
        PERFORM 1 FROM book b WHERE b.id = v_hold.book_id FOR UPDATE;
        -- Collected or cancelled while this run waited for the book: nothing to expire.
        PERFORM 1 FROM hold h WHERE h.id = v_hold.id AND h.status = 'ready' FOR UPDATE;
        CONTINUE WHEN NOT FOUND;
        v_at := ((v_hold.pickup_by + 1)::timestamp AT TIME ZONE v_tz);
        UPDATE hold SET status = 'expired', expired_at = v_at WHERE id = v_hold.id;
        INSERT INTO audit_log (id, at, actor, actor_role, action, entity_type, entity_id, outcome, details)
        VALUES (uuid_v7(v_at), v_at, p_actor, p_role, 'hold.expire', 'hold', v_hold.id::text, 'ok',
                jsonb_build_object('pickup_by', v_hold.pickup_by,
                                   'before', jsonb_build_object('status', 'ready'),
                                   'after', jsonb_build_object('status', 'expired')));
        expired := expired + 1;
        IF (hold_trap(v_hold.item_id, v_at, p_actor, p_role)).hold_id IS NOT NULL THEN
            passed_on := passed_on + 1;
        END IF;
    END LOOP;
END $$;

-- circulation_member also reads, under the book's lock (which every change to a title's holds
-- takes first), the member's live hold on the title and, for a scanned item, the member its
-- ready hold is for. A borrow by title takes the member's held item when they have one. It
-- counts the member's live holds for a hold placement.
DROP FUNCTION circulation_member(uuid, uuid, uuid, uuid, text, text, text, text[], timestamptz,
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
               book_id uuid, loan_item_id uuid, loan_item_barcode text,
               item_id uuid, item_barcode text, item_status text, item_status_changed_at timestamptz,
               hold_id uuid, hold_status text, hold_placed_at timestamptz, item_held_for uuid,
               max_holds integer, live_holds bigint,
               read_row boolean, allowed boolean, stale boolean
);

CREATE FUNCTION circulation_member(
    p_member uuid, p_loan uuid, p_book uuid, p_calendar_stamp uuid, p_barcode text,
    p_actor text, p_role text, p_groups text[], p_now timestamptz,
    p_burst_seconds double precision, p_borrow_actions text[])
RETURNS SETOF circulation_member_row
LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    v_book_category text;
    v_book_available integer;
    v_book_title text;
    v_item_id uuid;
    v_item_barcode text;
    v_item_status text;
    v_item_changed timestamptz;
    v_hold_id uuid;
    v_hold_status text;
    v_hold_item uuid;
    v_hold_placed timestamptz;
    v_held_for uuid;
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
    -- An item never changes book, so its book can be read before any lock.
    IF p_barcode IS NOT NULL THEN
        SELECT i.book_id INTO p_book FROM item i WHERE i.barcode = p_barcode;
    END IF;
    PERFORM 1 FROM member m WHERE m.id = p_member FOR UPDATE;
    IF FOUND AND p_book IS NOT NULL THEN
        SELECT b.category, b.available_copies, b.title
        INTO v_book_category, v_book_available, v_book_title
        FROM book b WHERE b.id = p_book FOR UPDATE;
        -- Under the book's lock the title's holds and items hold still.
        SELECT h.id, h.status, h.item_id, h.placed_at
        INTO v_hold_id, v_hold_status, v_hold_item, v_hold_placed
        FROM hold h
        WHERE h.member_id = p_member AND h.book_id = p_book AND h.status IN ('waiting', 'ready');
        IF p_barcode IS NOT NULL THEN
            SELECT i.id, i.barcode, i.status, i.status_changed_at
            INTO v_item_id, v_item_barcode, v_item_status, v_item_changed
            FROM item i WHERE i.barcode = p_barcode FOR UPDATE;
        ELSIF v_hold_status = 'ready' THEN
            SELECT i.id, i.barcode, i.status, i.status_changed_at
            INTO v_item_id, v_item_barcode, v_item_status, v_item_changed
            FROM item i WHERE i.id = v_hold_item FOR UPDATE;
        ELSE
            SELECT i.id, i.barcode, i.status, i.status_changed_at
            INTO v_item_id, v_item_barcode, v_item_status, v_item_changed
            FROM item i WHERE i.book_id = p_book AND i.status = 'available'
            ORDER BY i.id LIMIT 1 FOR UPDATE;
        END IF;
        IF v_item_status = 'on_hold_shelf' THEN
            SELECT h.member_id INTO v_held_for FROM hold h
            WHERE h.item_id = v_item_id AND h.status = 'ready';
        END IF;
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
               p_book, l.item_id, li.barcode,
               v_item_id, v_item_barcode, v_item_status, v_item_changed,
               v_hold_id, v_hold_status, v_hold_placed, v_held_for,
               r.max_holds,
               CASE WHEN p_book IS NULL THEN NULL ELSE
                   (SELECT count(*) FROM hold h
                    WHERE h.member_id = p_member AND h.status IN ('waiting', 'ready')) END,
               true, true, false
        FROM member m
        JOIN circulation_rule r ON r.category = m.category
        LEFT JOIN loan l ON l.member_id = m.id AND l.returned_at IS NULL
        LEFT JOIN book lb ON lb.id = l.book_id
        LEFT JOIN item li ON li.id = l.item_id
        WHERE m.id = p_member;
    IF NOT FOUND THEN
        v_none.allowed := true;
        v_none.stale := false;
        RETURN NEXT v_none;
    END IF;
END $$;
