-- Fines assessment, overdue notices and the indexes and rollup the nightly job and the
-- reports read. Small partial indexes only: the seeder rebuilds every index after a load,
-- so each 4M-row index costs seconds there.

-- Open loans by due date: `fines accrue`, `notices generate` and `report overdue` walk it.
CREATE INDEX loan_open_due_idx ON loan (due_at) WHERE returned_at IS NULL;

-- Loans that carry a fine, by member, with the amount: balances without touching the
-- other 88 % of the loan table.
CREATE INDEX loan_fined_member_idx ON loan (member_id) INCLUDE (fine_cents) WHERE fine_cents > 0;

-- One row per (loan, level) ever issued: the unique key is what makes notices exactly-once.
CREATE TABLE notice (
    id           uuid PRIMARY KEY,
    loan_id      uuid NOT NULL REFERENCES loan (id),
    level        smallint NOT NULL CHECK (level BETWEEN 1 AND 3),
    member_id    uuid NOT NULL REFERENCES member (id),
    issued_on    date NOT NULL,
    overdue_days integer NOT NULL,
    fine_cents   bigint NOT NULL,
    created_at   timestamptz NOT NULL,
    CONSTRAINT notice_loan_level_key UNIQUE (loan_id, level)
);
CREATE INDEX notice_member_idx ON notice (member_id);

-- Monthly circulation, refreshed by `nightly` (and written by the seeder), so `report trends`
-- reads 120 rows instead of grouping 4M loans.
CREATE TABLE circulation_month (
    month          date PRIMARY KEY,
    loans          bigint NOT NULL,
    returns        bigint NOT NULL,
    late_returns   bigint NOT NULL,
    active_members bigint NOT NULL
);
INSERT INTO library_setting (key, value) VALUES ('rollup_complete_before', '1900-01-01');

-- A UUID v7 for rows made by set-based SQL (PostgreSQL 15 has no uuidv7()): the
-- millisecond timestamp in the first 48 bits of a random UUID, version bits set to 7.
CREATE FUNCTION uuid_v7(ts timestamptz) RETURNS uuid
LANGUAGE sql VOLATILE AS $$
    SELECT encode(
        set_bit(set_bit(
            overlay(uuid_send(gen_random_uuid())
                    PLACING substring(int8send(floor(extract(epoch FROM ts) * 1000)::bigint) FROM 3)
                    FROM 1 FOR 6),
            52, 1), 53, 1),
        'hex')::uuid
$$;
