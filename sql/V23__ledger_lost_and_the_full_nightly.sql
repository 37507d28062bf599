-- The full nightly (SPEC §16): one typed ledger, lost items, claims returned, auto-renewal,
-- and the notices that go with them.
--
-- The ledger: a member's balance is the fines stored on their loans (reported as
-- `overdue_fine` entries) plus their account entries, each signed by its kind
-- (`ledger_signed_cents`): `lost_item` and `processing_fee` charge, `payment`, `waiver` and
-- `refund` credit. `member_balance_cents` is that rule, and every balance reads it.

ALTER TABLE circulation_rule
    ADD COLUMN lost_after_days integer NOT NULL DEFAULT 60
        CONSTRAINT circulation_rule_lost_after_days_check CHECK (lost_after_days BETWEEN 0 AND 3650),
    ADD COLUMN processing_fee_cents bigint NOT NULL DEFAULT 500
        CONSTRAINT circulation_rule_processing_fee_cents_check
            CHECK (processing_fee_cents BETWEEN 0 AND 10000000),
    ADD COLUMN lost_refund_on_return boolean NOT NULL DEFAULT true,
    ADD COLUMN max_claims_returned integer NOT NULL DEFAULT 3
        CONSTRAINT circulation_rule_max_claims_returned_check CHECK (max_claims_returned BETWEEN 0 AND 100),
    ADD COLUMN auto_renew boolean NOT NULL DEFAULT false;

-- The replacement price charged for a lost item that has none of its own.
INSERT INTO library_setting (key, value) VALUES ('default_replacement_cents', '2500')
ON CONFLICT (key) DO NOTHING;

-- How a loan ended. `returned_at` is when it ended, whichever way.
ALTER TABLE loan ADD COLUMN end_state text;
UPDATE loan SET end_state = 'returned' WHERE returned_at IS NOT NULL;
ALTER TABLE loan ADD CONSTRAINT loan_end_state_known
    CHECK (end_state IN ('returned', 'lost', 'claims_returned'));
ALTER TABLE loan ADD CONSTRAINT loan_end_state_when_ended
    CHECK ((returned_at IS NULL) = (end_state IS NULL));
-- A member's claims, counted against max_claims_returned.
CREATE INDEX loan_claims_returned ON loan (member_id) WHERE end_state = 'claims_returned';

-- Charges keyed by (loan, kind): a re-run can never charge a loan twice, nor refund it twice.
ALTER TABLE account_entry ADD COLUMN loan_id uuid REFERENCES loan (id);
ALTER TABLE account_entry DROP CONSTRAINT account_entry_kind_check;
ALTER TABLE account_entry ADD CONSTRAINT account_entry_kind_check
    CHECK (kind IN ('payment', 'waiver', 'lost_item', 'processing_fee', 'refund'));
ALTER TABLE account_entry ADD CONSTRAINT account_entry_loan_charges_have_a_loan
    CHECK (kind IN ('payment', 'waiver') OR loan_id IS NOT NULL);
CREATE UNIQUE INDEX account_entry_one_per_loan_kind ON account_entry (loan_id, kind)
    WHERE loan_id IS NOT NULL;

CREATE FUNCTION ledger_signed_cents(p_kind text, p_amount bigint) RETURNS bigint
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT CASE WHEN p_kind IN ('lost_item', 'processing_fee') THEN p_amount ELSE -p_amount END
$$;

CREATE FUNCTION member_balance_cents(p_member uuid) RETURNS bigint
LANGUAGE sql STABLE AS $$
    SELECT ((SELECT coalesce(sum(f.fine_cents), 0) FROM loan f
             WHERE f.member_id = p_member AND f.fine_cents > 0)
          + (SELECT coalesce(sum(ledger_signed_cents(a.kind, a.amount_cents)), 0)
             FROM account_entry a WHERE a.member_id = p_member))::bigint
$$;

-- Notices of the nightly's new steps, each once per its key:
-- auto_renewed and auto_renew_failed once per (loan, due date), lost_billed once per loan.
-- The step that writes one commits it with its change; it waits, pending, for the next
-- notices run to hand it over (and clear the flag in the same transaction), so a pipeline
-- stopped between the two hands it over on its re-run, exactly once.
ALTER TABLE notice ADD COLUMN reason text,
                   ADD COLUMN pending_handover boolean NOT NULL DEFAULT false;
CREATE INDEX notice_pending_handover ON notice (issued_on) WHERE pending_handover;
ALTER TABLE notice DROP CONSTRAINT notice_kind_known;
ALTER TABLE notice ADD CONSTRAINT notice_kind_known
    CHECK (kind IN ('overdue', 'hold_ready', 'courtesy', 'membership_expiring', 'auto_renewed',
                    'auto_renew_failed', 'lost_billed'));
ALTER TABLE notice DROP CONSTRAINT notice_kind_key;
ALTER TABLE notice ADD CONSTRAINT notice_kind_key CHECK (
    (kind = 'overdue' AND loan_id IS NOT NULL AND level IS NOT NULL AND overdue_days IS NOT NULL
     AND fine_cents IS NOT NULL AND hold_id IS NULL)
    OR (kind = 'hold_ready' AND hold_id IS NOT NULL AND loan_id IS NULL AND level IS NULL)
    OR (kind = 'courtesy' AND loan_id IS NOT NULL AND key_date IS NOT NULL AND level IS NULL
        AND hold_id IS NULL)
    OR (kind = 'membership_expiring' AND key_date IS NOT NULL AND loan_id IS NULL
        AND level IS NULL AND hold_id IS NULL)
    OR (kind = 'auto_renewed' AND loan_id IS NOT NULL AND key_date IS NOT NULL AND level IS NULL
        AND hold_id IS NULL)
    OR (kind = 'auto_renew_failed' AND loan_id IS NOT NULL AND key_date IS NOT NULL
        AND reason IS NOT NULL AND level IS NULL AND hold_id IS NULL)
    OR (kind = 'lost_billed' AND loan_id IS NOT NULL AND fine_cents IS NOT NULL AND level IS NULL
        AND hold_id IS NULL));
CREATE UNIQUE INDEX notice_one_auto_renewal ON notice (loan_id, key_date) WHERE kind = 'auto_renewed';
CREATE UNIQUE INDEX notice_one_auto_renew_failure ON notice (loan_id, key_date)
    WHERE kind = 'auto_renew_failed';
CREATE UNIQUE INDEX notice_one_lost_bill ON notice (loan_id) WHERE kind = 'lost_billed';

-- An override request names a book (borrow past a limit or a block) or a loan (a claim of a
-- return past max_claims_returned).
ALTER TABLE request ADD COLUMN loan_id uuid REFERENCES loan (id);
ALTER TABLE request DROP CONSTRAINT request_shape;
ALTER TABLE request ADD CONSTRAINT request_shape CHECK (
    (kind = 'override' AND (book_id IS NOT NULL OR loan_id IS NOT NULL))
    OR (kind = 'waiver' AND amount_cents IS NOT NULL)
    OR (kind = 'correction' AND field IS NOT NULL AND value IS NOT NULL)
    OR kind = 'membership');

-- The nights the pipeline finished, so the next run knows which ones it missed.
CREATE TABLE nightly_run (
    day         date PRIMARY KEY,
    finished_at timestamptz NOT NULL,
    summary     jsonb NOT NULL
);

-- A return ends the loan as `returned`.
CREATE OR REPLACE FUNCTION loan_return(p_loan uuid, p_now timestamptz, p_fine bigint,
                                       p_assessed_on date, p_actor text, p_role text)
RETURNS hold_trapped LANGUAGE plpgsql AS $$
DECLARE
    v_item    uuid;
    v_member  uuid;
    v_trapped hold_trapped;
BEGIN
    UPDATE loan SET returned_at = p_now, end_state = 'returned', fine_cents = p_fine,
                    fine_assessed_on = p_assessed_on
    WHERE id = p_loan
    RETURNING item_id, member_id INTO v_item, v_member;
    v_trapped := hold_trap(v_item, p_now, p_actor, p_role);
    IF EXISTS (SELECT 1 FROM hold h WHERE h.member_id = v_member AND h.status = 'waiting') THEN
        PERFORM holds_retarget(NULL, v_member, p_now, p_actor, p_role);
    END IF;
    RETURN v_trapped;
END $$;

-- The block threshold counts the whole balance.
CREATE OR REPLACE FUNCTION member_in_good_standing(p_member uuid, p_now timestamptz)
RETURNS boolean LANGUAGE sql STABLE AS $$
    SELECT m.status = 'active'
       AND (m.expires_at IS NULL OR m.expires_at > p_now)
       AND open_loans.worst <= r.block_overdue_days
       AND member_balance_cents(m.id) + open_loans.unassessed < r.block_fine_cents
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

-- The desk reads the member's whole balance (stored fines and ledger) in its one round trip.
ALTER TYPE circulation_member_row RENAME ATTRIBUTE credits_cents TO balance_cents;
CREATE OR REPLACE FUNCTION circulation_member(p_member uuid, p_loan uuid, p_book uuid, p_calendar_stamp uuid, p_barcode text, p_actor text, p_role text, p_groups text[], p_now timestamp with time zone, p_burst_seconds double precision, p_borrow_actions text[])
 RETURNS SETOF circulation_member_row
 LANGUAGE plpgsql
AS $function$
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
               member_balance_cents(p_member),
               -- stored_fines_cents: unused since V23, the balance above includes them.
               NULL::bigint,
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
END $function$
;