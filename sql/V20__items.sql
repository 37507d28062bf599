-- Items (SPEC §16): one row per physical copy, with a barcode, a status and a shelving place.
-- Circulation moves items; book.total_copies and book.available_copies stay as counters of
-- a book's items, kept by the transaction that changes an item, because ops and reports
-- read them directly.

-- Generated barcodes: the prefix setting, a running number and a Luhn mod-10 check digit,
-- 14 digits in all (libcore::barcode::generate is the same rule for the seeder).
INSERT INTO library_setting (key, value) VALUES ('item_barcode_prefix', '3')
ON CONFLICT (key) DO NOTHING;
CREATE SEQUENCE item_barcode_seq;

CREATE FUNCTION item_barcode(prefix text, n bigint) RETURNS text
LANGUAGE plpgsql IMMUTABLE STRICT AS $$
DECLARE
    body  text;
    total integer := 0;
    d     integer;
BEGIN
    IF prefix !~ '^[0-9]{1,12}$' THEN
        RAISE EXCEPTION 'barcode prefix % must be 1-12 digits', prefix
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF n < 0 OR length(n::text) > 13 - length(prefix) THEN
        RAISE EXCEPTION 'running number % does not fit in a barcode with prefix %', n, prefix
            USING ERRCODE = 'numeric_value_out_of_range';
    END IF;
    body := prefix || lpad(n::text, 13 - length(prefix), '0');
    FOR i IN 0..12 LOOP
        d := substr(body, 13 - i, 1)::integer;
        IF i % 2 = 0 THEN
            d := d * 2;
            IF d > 9 THEN
                d := d - 9;
            END IF;
        END IF;
        total := total + d;
    END LOOP;
    RETURN body || ((10 - total % 10) % 10)::text;
END $$;

-- The library's barcode prefix.
CREATE FUNCTION item_barcode_prefix() RETURNS text
LANGUAGE sql STABLE AS $$
    SELECT coalesce((SELECT value FROM library_setting WHERE key = 'item_barcode_prefix'), '3')
$$;

-- The next generated barcode under the library's prefix, skipping any a label already uses.
CREATE FUNCTION next_item_barcode() RETURNS text
LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    prefix    text := item_barcode_prefix();
    candidate text;
BEGIN
    LOOP
        candidate := item_barcode(prefix, nextval('item_barcode_seq'));
        EXIT WHEN NOT EXISTS (SELECT 1 FROM item WHERE barcode = candidate);
    END LOOP;
    RETURN candidate;
END $$;

-- Statuses are a named CHECK, so a later migration widens the list by replacing it.
CREATE TABLE item (
    id                uuid PRIMARY KEY,
    book_id           uuid NOT NULL REFERENCES book (id),
    barcode           text NOT NULL CONSTRAINT item_barcode_key UNIQUE
        CONSTRAINT item_barcode_form CHECK (barcode ~ '^[A-Za-z0-9-]{1,32}$'),
    status            text NOT NULL DEFAULT 'available'
        CONSTRAINT item_status_known CHECK (status IN ('available', 'on_loan', 'on_hold_shelf',
                                                       'missing', 'damaged', 'lost', 'withdrawn')),
    location          text,
    call_number       text,
    price_cents       bigint CONSTRAINT item_price_cents_check CHECK (price_cents >= 0),
    created_at        timestamptz NOT NULL,
    status_changed_at timestamptz NOT NULL,
    -- The target of the loan's (book_id, item_id) key, and the index a borrow by title picks from.
    CONSTRAINT item_book_id_id_key UNIQUE (book_id, id)
);

-- Every loan made since items exist names its item, an item of the loan's book; returned
-- loans from before items keep item_id NULL.
ALTER TABLE loan ADD COLUMN item_id uuid;

-- One item per copy each book owns today, with generated barcodes.
INSERT INTO item (id, book_id, barcode, status, created_at, status_changed_at)
SELECT uuid_v7(b.created_at), b.id, next_item_barcode(), 'available', b.created_at, b.created_at
FROM book b CROSS JOIN LATERAL generate_series(1, b.total_copies) AS copy;

-- Each open loan takes its own item of its book, in borrow order.
WITH open_loan AS (
    SELECT id, book_id, row_number() OVER (PARTITION BY book_id ORDER BY borrowed_at, id) AS n
    FROM loan WHERE returned_at IS NULL
), numbered_item AS (
    SELECT id, book_id, row_number() OVER (PARTITION BY book_id ORDER BY barcode) AS n
    FROM item
)
UPDATE loan l SET item_id = i.id
FROM open_loan o JOIN numbered_item i ON i.book_id = o.book_id AND i.n = o.n
WHERE l.id = o.id;
UPDATE item i SET status = 'on_loan', status_changed_at = l.borrowed_at
FROM loan l WHERE l.item_id = i.id AND l.returned_at IS NULL;

-- The running number continues after the highest generated barcode (the seeder and restore
-- call this after loading items).
CREATE FUNCTION item_barcode_catch_up() RETURNS bigint
LANGUAGE sql VOLATILE AS $$
    SELECT setval('item_barcode_seq',
                  coalesce(max(substr(i.barcode, length(p.prefix) + 1, 13 - length(p.prefix))::bigint), 0) + 1,
                  false)
    FROM (SELECT item_barcode_prefix() AS prefix) p
    LEFT JOIN item i ON i.barcode ~ '^[0-9]{14}$' AND left(i.barcode, length(p.prefix)) = p.prefix
$$;

-- An open loan without an item (a book with more open loans than copies) fails here.
ALTER TABLE loan ADD CONSTRAINT loan_open_has_item CHECK (returned_at IS NOT NULL OR item_id IS NOT NULL);
ALTER TABLE loan ADD CONSTRAINT loan_item_of_book FOREIGN KEY (book_id, item_id) REFERENCES item (book_id, id);
CREATE UNIQUE INDEX loan_one_open_per_item ON loan (item_id) WHERE returned_at IS NULL;
-- An item's loans in time order, for `item show` and for `db check`'s overlap test, which reads
-- it index-only in this order (returned_at in the key: a return is never a HOT update anyway,
-- since the open-loan indexes name returned_at).
CREATE INDEX loan_item_history ON loan (item_id, borrowed_at, returned_at) WHERE item_id IS NOT NULL;

-- circulation_member also locks the item a borrow takes: the scanned one (p_barcode), or the
-- first available item of the title (p_book), after the member and the book, always in that
-- order. Open loans carry their item and its barcode.
DROP FUNCTION circulation_member(uuid, uuid, uuid, uuid, text, text, text[], timestamptz,
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
        IF p_barcode IS NOT NULL THEN
            SELECT i.id, i.barcode, i.status, i.status_changed_at
            INTO v_item_id, v_item_barcode, v_item_status, v_item_changed
            FROM item i WHERE i.barcode = p_barcode FOR UPDATE;
        ELSE
            -- Under the book's lock no other borrow of this title picks concurrently.
            SELECT i.id, i.barcode, i.status, i.status_changed_at
            INTO v_item_id, v_item_barcode, v_item_status, v_item_changed
            FROM item i WHERE i.book_id = p_book AND i.status = 'available'
            ORDER BY i.id LIMIT 1 FOR UPDATE;
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
