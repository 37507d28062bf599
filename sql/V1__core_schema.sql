-- Core circulation schema: catalogue, members, loans with their policy snapshot,
-- circulation rules, the closed-day calendar, the fine ledger and the append-only audit log.
-- Every invariant PostgreSQL can hold by itself is a constraint here; the rest
-- (member loan limit, blocks) is enforced by libcore under row locks and checked by `db check`.

CREATE EXTENSION IF NOT EXISTS pg_trgm;

-- Library-wide settings (time zone, ...). Key/value so later settings need no migration.
CREATE TABLE library_setting (
    key   text PRIMARY KEY,
    value text NOT NULL
);
INSERT INTO library_setting (key, value) VALUES ('timezone', 'UTC');

CREATE FUNCTION library_timezone() RETURNS text
LANGUAGE sql STABLE AS $$ SELECT value FROM library_setting WHERE key = 'timezone' $$;

CREATE TABLE circulation_rule (
    category                text PRIMARY KEY CHECK (category ~ '^[a-z][a-z0-9_]{0,31}$'),
    loan_days               integer NOT NULL DEFAULT 14   CHECK (loan_days BETWEEN 1 AND 365),
    max_active_loans        integer NOT NULL DEFAULT 5    CHECK (max_active_loans BETWEEN 0 AND 1000),
    max_renewals            integer NOT NULL DEFAULT 2    CHECK (max_renewals BETWEEN 0 AND 100),
    fine_cents_per_day      bigint  NOT NULL DEFAULT 100  CHECK (fine_cents_per_day >= 0),
    grace_days              integer NOT NULL DEFAULT 0    CHECK (grace_days >= 0),
    max_fine_cents_per_loan bigint  NOT NULL DEFAULT 2000 CHECK (max_fine_cents_per_loan >= 0),
    block_fine_cents        bigint  NOT NULL DEFAULT 1000 CHECK (block_fine_cents >= 0),
    block_overdue_days      integer NOT NULL DEFAULT 30   CHECK (block_overdue_days >= 0)
);
INSERT INTO circulation_rule (category) VALUES ('student'), ('staff'), ('public');

CREATE TABLE closed_day (
    day    date PRIMARY KEY,
    reason text
);

CREATE TABLE member (
    id         uuid PRIMARY KEY,
    name       text NOT NULL CHECK (btrim(name) <> ''),
    email      text NOT NULL CHECK (position('@' IN email) > 1),
    phone      text,
    role       text NOT NULL DEFAULT 'member' CHECK (role IN ('member', 'librarian', 'admin')),
    category   text NOT NULL REFERENCES circulation_rule (category),
    status     text NOT NULL CHECK (status IN ('pending', 'active', 'suspended', 'closed')),
    created_at timestamptz NOT NULL,
    expires_at timestamptz
);
CREATE UNIQUE INDEX member_email_key ON member (lower(email));

CREATE TABLE book (
    id               uuid PRIMARY KEY,
    isbn             text NOT NULL CHECK (isbn ~ '^97[89][0-9]{10}$'),
    title            text NOT NULL CHECK (btrim(title) <> ''),
    author           text NOT NULL CHECK (btrim(author) <> ''),
    genre            text,
    category         text NOT NULL DEFAULT 'standard' CHECK (category IN ('standard', 'reference', 'short_loan')),
    total_copies     integer NOT NULL CHECK (total_copies BETWEEN 0 AND 10000),
    available_copies integer NOT NULL,
    created_at       timestamptz NOT NULL,
    CONSTRAINT book_available_copies_check CHECK (0 <= available_copies AND available_copies <= total_copies)
);
CREATE UNIQUE INDEX book_isbn_key ON book (isbn);
CREATE INDEX book_search_trgm_idx ON book USING gin ((title || ' ' || author || ' ' || isbn) gin_trgm_ops);

-- A loan carries a snapshot of the fine policy in force when it was borrowed:
-- later policy edits never change an open loan.
CREATE TABLE loan (
    id                 uuid PRIMARY KEY,
    book_id            uuid NOT NULL REFERENCES book (id),
    member_id          uuid NOT NULL REFERENCES member (id),
    borrowed_at        timestamptz NOT NULL,
    due_at             timestamptz NOT NULL,
    returned_at        timestamptz,
    renewals           integer NOT NULL DEFAULT 0 CHECK (renewals >= 0),
    fine_cents_per_day bigint  NOT NULL CHECK (fine_cents_per_day >= 0),
    grace_days         integer NOT NULL CHECK (grace_days >= 0),
    max_fine_cents     bigint  NOT NULL CHECK (max_fine_cents >= 0),
    -- Assessed fine: recomputed by `fines accrue` while open, frozen by the return.
    fine_cents         bigint  NOT NULL DEFAULT 0,
    -- The as-of date of the last assessment; an older run never overwrites a newer one.
    fine_assessed_on   date,
    CONSTRAINT loan_returned_after_borrowed CHECK (returned_at IS NULL OR returned_at >= borrowed_at),
    CONSTRAINT loan_due_after_borrowed CHECK (due_at > borrowed_at),
    CONSTRAINT loan_fine_within_cap CHECK (fine_cents BETWEEN 0 AND max_fine_cents)
);
CREATE UNIQUE INDEX loan_open_book_member_key ON loan (book_id, member_id) WHERE returned_at IS NULL;
CREATE INDEX loan_open_member_idx ON loan (member_id) WHERE returned_at IS NULL;
CREATE INDEX loan_member_borrowed_idx ON loan (member_id, borrowed_at);
CREATE INDEX loan_book_borrowed_idx ON loan (book_id, borrowed_at);

-- Payments and waivers; outstanding balance = sum(loan.fine_cents) - payments - waivers.
CREATE TABLE account_entry (
    id           uuid PRIMARY KEY,
    member_id    uuid NOT NULL REFERENCES member (id),
    kind         text NOT NULL CHECK (kind IN ('payment', 'waiver')),
    amount_cents bigint NOT NULL CHECK (amount_cents > 0),
    created_at   timestamptz NOT NULL,
    note         text
);
CREATE INDEX account_entry_member_idx ON account_entry (member_id);

CREATE TABLE audit_log (
    id          uuid PRIMARY KEY,
    at          timestamptz NOT NULL,
    -- The wall-clock time the row was written; differs from `at` for --at backfills.
    recorded_at timestamptz NOT NULL DEFAULT clock_timestamp(),
    actor       text NOT NULL,
    actor_role  text NOT NULL,
    action      text NOT NULL,
    entity_type text,
    entity_id   text,
    outcome     text NOT NULL CHECK (outcome IN ('ok', 'refused', 'denied', 'rate_limited')),
    details     jsonb NOT NULL DEFAULT '{}'::jsonb
);
CREATE INDEX audit_log_actor_at_idx ON audit_log (actor, at);
CREATE INDEX audit_log_at_idx ON audit_log (at);

-- History is append-only. The one sanctioned removal path (`audit prune`, the seeder's
-- replace and the backup restore) sets libctl.audit_maintenance locally inside its transaction.
CREATE FUNCTION audit_log_append_only() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP <> 'UPDATE' AND current_setting('libctl.audit_maintenance', true) = 'on' THEN
        RETURN OLD;
    END IF;
    RAISE EXCEPTION 'audit_log is append-only: % is not allowed', TG_OP
        USING ERRCODE = 'insufficient_privilege';
END $$;
CREATE TRIGGER audit_log_no_update_delete BEFORE UPDATE OR DELETE ON audit_log
    FOR EACH ROW EXECUTE FUNCTION audit_log_append_only();
CREATE TRIGGER audit_log_no_truncate BEFORE TRUNCATE ON audit_log
    FOR EACH STATEMENT EXECUTE FUNCTION audit_log_append_only();

-- Overdue days of a loan: calendar days in library time after the due date up to the end
-- date, skipping closed days. Mirrors libcore::fines::overdue_days (a property test holds them equal).
CREATE FUNCTION overdue_days(due_at timestamptz, end_at timestamptz, tz text) RETURNS integer
LANGUAGE sql STABLE AS $$
    SELECT CASE WHEN e <= d THEN 0
                ELSE (e - d) - (SELECT count(*)::integer FROM closed_day c WHERE c.day > d AND c.day <= e)
           END
    FROM (SELECT (due_at AT TIME ZONE tz)::date AS d, (end_at AT TIME ZONE tz)::date AS e) AS days
$$;

-- The fine rule of SPEC §6 given the overdue days. Mirrors libcore::fines::fine_cents.
CREATE FUNCTION fine_cents(per_day bigint, grace integer, cap bigint, overdue integer) RETURNS bigint
LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE WHEN overdue <= grace THEN 0::bigint ELSE least(overdue::bigint * per_day, cap) END
$$;
