-- V26: the library's running totals, so `report summary` reads a few rows instead of the
-- whole library (SPEC §17: at a consortium's size every part of it scanned what grows).
--
-- Each statement that changes a title's copies, a member's status, a loan's openness or fine,
-- an archived fine or a ledger entry appends one row of differences to `library_tally` (a
-- statement trigger over its transition tables). Appends never wait on each other, so no two
-- desks queue on one counter row. `library_tally_total()` adds the rows up; the nightly rollup
-- folds them into one (`library_tally_fold()`); `db check` compares the total with
-- `library_tally_recount()`. A bulk load (seed, restore) drops the triggers with the other
-- keys and indexes and sets the tally itself.

CREATE TABLE library_tally (
    titles bigint NOT NULL DEFAULT 0,
    copies bigint NOT NULL DEFAULT 0,
    available_copies bigint NOT NULL DEFAULT 0,
    active_members bigint NOT NULL DEFAULT 0,
    open_loans bigint NOT NULL DEFAULT 0,
    -- sum of loan.fine_cents over the hot table
    loan_fine_cents bigint NOT NULL DEFAULT 0,
    -- sum of member_archived_fines.fine_cents
    archived_fine_cents bigint NOT NULL DEFAULT 0,
    -- account_entry signed as ledger_signed_cents: charges positive, credits negative
    ledger_cents bigint NOT NULL DEFAULT 0
);

-- The totals counted from the tables themselves: what the tally must add up to.
CREATE FUNCTION library_tally_recount() RETURNS library_tally
LANGUAGE sql STABLE AS $$
    SELECT b.titles, b.copies, b.available_copies,
           (SELECT count(*) FROM member WHERE status = 'active'),
           l.open_loans, l.loan_fine_cents,
           (SELECT coalesce(sum(fine_cents), 0)::bigint FROM member_archived_fines),
           (SELECT coalesce(sum(ledger_signed_cents(kind, amount_cents)), 0)::bigint FROM account_entry)
    FROM (SELECT count(*) AS titles, coalesce(sum(total_copies), 0)::bigint AS copies,
                 coalesce(sum(available_copies), 0)::bigint AS available_copies
          FROM book) b,
         (SELECT count(*) FILTER (WHERE returned_at IS NULL) AS open_loans,
                 coalesce(sum(fine_cents), 0)::bigint AS loan_fine_cents
          FROM loan) l
$$;

-- The totals as the tally keeps them.
CREATE FUNCTION library_tally_total() RETURNS library_tally
LANGUAGE sql STABLE AS $$
    SELECT coalesce(sum(titles), 0)::bigint, coalesce(sum(copies), 0)::bigint,
           coalesce(sum(available_copies), 0)::bigint, coalesce(sum(active_members), 0)::bigint,
           coalesce(sum(open_loans), 0)::bigint, coalesce(sum(loan_fine_cents), 0)::bigint,
           coalesce(sum(archived_fine_cents), 0)::bigint, coalesce(sum(ledger_cents), 0)::bigint
    FROM library_tally
$$;

-- Folds the rows into one. Under READ COMMITTED a row appended by a transaction still open
-- is not deleted and stays for the next fold; two folds at once each sum only what they delete.
CREATE FUNCTION library_tally_fold() RETURNS bigint
LANGUAGE sql AS $$
    WITH folded AS (DELETE FROM library_tally RETURNING *),
         one AS (
             INSERT INTO library_tally
             SELECT sum(titles), sum(copies), sum(available_copies), sum(active_members),
                    sum(open_loans), sum(loan_fine_cents), sum(archived_fine_cents), sum(ledger_cents)
             FROM folded HAVING count(*) > 0)
    SELECT count(*) FROM folded
$$;

-- Sets the tally to the recount (after a bulk load, and in this migration).
CREATE FUNCTION library_tally_reset() RETURNS void
LANGUAGE sql AS $$
    DELETE FROM library_tally;
    INSERT INTO library_tally SELECT * FROM library_tally_recount();
$$;

-- One function per table; a trigger per event, because a trigger with transition tables fires
-- on one event only. Each appends nothing when the statement changed no total (a renewal).
CREATE FUNCTION library_tally_book() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        INSERT INTO library_tally (titles, copies, available_copies)
        SELECT count(*), sum(total_copies), sum(available_copies) FROM tally_new HAVING count(*) > 0;
    ELSIF TG_OP = 'DELETE' THEN
        INSERT INTO library_tally (titles, copies, available_copies)
        SELECT -count(*), -sum(total_copies), -sum(available_copies) FROM tally_old HAVING count(*) > 0;
    ELSE
        INSERT INTO library_tally (copies, available_copies)
        SELECT sum(c), sum(a)
        FROM (SELECT total_copies AS c, available_copies AS a FROM tally_new
              UNION ALL SELECT -total_copies, -available_copies FROM tally_old) d
        HAVING sum(c) <> 0 OR sum(a) <> 0;
    END IF;
    RETURN NULL;
END $$;

CREATE FUNCTION library_tally_member() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        INSERT INTO library_tally (active_members)
        SELECT count(*) FROM tally_new WHERE status = 'active' HAVING count(*) > 0;
    ELSIF TG_OP = 'DELETE' THEN
        INSERT INTO library_tally (active_members)
        SELECT -count(*) FROM tally_old WHERE status = 'active' HAVING count(*) > 0;
    ELSE
        INSERT INTO library_tally (active_members)
        SELECT sum(n)
        FROM (SELECT 1 AS n FROM tally_new WHERE status = 'active'
              UNION ALL SELECT -1 FROM tally_old WHERE status = 'active') d
        HAVING sum(n) <> 0;
    END IF;
    RETURN NULL;
END $$;

CREATE FUNCTION library_tally_loan() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        INSERT INTO library_tally (open_loans, loan_fine_cents)
        SELECT count(*) FILTER (WHERE returned_at IS NULL), sum(fine_cents) FROM tally_new
        HAVING count(*) FILTER (WHERE returned_at IS NULL) > 0 OR sum(fine_cents) <> 0;
    ELSIF TG_OP = 'DELETE' THEN
        INSERT INTO library_tally (open_loans, loan_fine_cents)
        SELECT -count(*) FILTER (WHERE returned_at IS NULL), -sum(fine_cents) FROM tally_old
        HAVING count(*) FILTER (WHERE returned_at IS NULL) > 0 OR sum(fine_cents) <> 0;
    ELSE
        INSERT INTO library_tally (open_loans, loan_fine_cents)
        SELECT sum(o), sum(f)
        FROM (SELECT (returned_at IS NULL)::int AS o, fine_cents AS f FROM tally_new
              UNION ALL SELECT -(returned_at IS NULL)::int, -fine_cents FROM tally_old) d
        HAVING sum(o) <> 0 OR sum(f) <> 0;
    END IF;
    RETURN NULL;
END $$;

CREATE FUNCTION library_tally_archived_fines() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        INSERT INTO library_tally (archived_fine_cents)
        SELECT sum(fine_cents) FROM tally_new HAVING count(*) > 0;
    ELSIF TG_OP = 'DELETE' THEN
        INSERT INTO library_tally (archived_fine_cents)
        SELECT -sum(fine_cents) FROM tally_old HAVING count(*) > 0;
    ELSE
        INSERT INTO library_tally (archived_fine_cents)
        SELECT sum(f)
        FROM (SELECT fine_cents AS f FROM tally_new UNION ALL SELECT -fine_cents FROM tally_old) d
        HAVING sum(f) <> 0;
    END IF;
    RETURN NULL;
END $$;

CREATE FUNCTION library_tally_ledger() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        INSERT INTO library_tally (ledger_cents)
        SELECT sum(ledger_signed_cents(kind, amount_cents)) FROM tally_new HAVING count(*) > 0;
    ELSIF TG_OP = 'DELETE' THEN
        INSERT INTO library_tally (ledger_cents)
        SELECT -sum(ledger_signed_cents(kind, amount_cents)) FROM tally_old HAVING count(*) > 0;
    ELSE
        INSERT INTO library_tally (ledger_cents)
        SELECT sum(c)
        FROM (SELECT ledger_signed_cents(kind, amount_cents) AS c FROM tally_new
              UNION ALL SELECT -ledger_signed_cents(kind, amount_cents) FROM tally_old) d
        HAVING sum(c) <> 0;
    END IF;
    RETURN NULL;
END $$;

CREATE TRIGGER book_tally_insert AFTER INSERT ON book
    REFERENCING NEW TABLE AS tally_new FOR EACH STATEMENT EXECUTE FUNCTION library_tally_book();
CREATE TRIGGER book_tally_update AFTER UPDATE ON book
    REFERENCING OLD TABLE AS tally_old NEW TABLE AS tally_new FOR EACH STATEMENT EXECUTE FUNCTION library_tally_book();
CREATE TRIGGER book_tally_delete AFTER DELETE ON book
    REFERENCING OLD TABLE AS tally_old FOR EACH STATEMENT EXECUTE FUNCTION library_tally_book();

CREATE TRIGGER member_tally_insert AFTER INSERT ON member
    REFERENCING NEW TABLE AS tally_new FOR EACH STATEMENT EXECUTE FUNCTION library_tally_member();
CREATE TRIGGER member_tally_update AFTER UPDATE ON member
    REFERENCING OLD TABLE AS tally_old NEW TABLE AS tally_new FOR EACH STATEMENT EXECUTE FUNCTION library_tally_member();
CREATE TRIGGER member_tally_delete AFTER DELETE ON member
    REFERENCING OLD TABLE AS tally_old FOR EACH STATEMENT EXECUTE FUNCTION library_tally_member();

CREATE TRIGGER loan_tally_insert AFTER INSERT ON loan
    REFERENCING NEW TABLE AS tally_new FOR EACH STATEMENT EXECUTE FUNCTION library_tally_loan();
CREATE TRIGGER loan_tally_update AFTER UPDATE ON loan
    REFERENCING OLD TABLE AS tally_old NEW TABLE AS tally_new FOR EACH STATEMENT EXECUTE FUNCTION library_tally_loan();
CREATE TRIGGER loan_tally_delete AFTER DELETE ON loan
    REFERENCING OLD TABLE AS tally_old FOR EACH STATEMENT EXECUTE FUNCTION library_tally_loan();

CREATE TRIGGER member_archived_fines_tally_insert AFTER INSERT ON member_archived_fines
    REFERENCING NEW TABLE AS tally_new FOR EACH STATEMENT EXECUTE FUNCTION library_tally_archived_fines();
CREATE TRIGGER member_archived_fines_tally_update AFTER UPDATE ON member_archived_fines
    REFERENCING OLD TABLE AS tally_old NEW TABLE AS tally_new FOR EACH STATEMENT EXECUTE FUNCTION library_tally_archived_fines();
CREATE TRIGGER member_archived_fines_tally_delete AFTER DELETE ON member_archived_fines
    REFERENCING OLD TABLE AS tally_old FOR EACH STATEMENT EXECUTE FUNCTION library_tally_archived_fines();

CREATE TRIGGER account_entry_tally_insert AFTER INSERT ON account_entry
    REFERENCING NEW TABLE AS tally_new FOR EACH STATEMENT EXECUTE FUNCTION library_tally_ledger();
CREATE TRIGGER account_entry_tally_update AFTER UPDATE ON account_entry
    REFERENCING OLD TABLE AS tally_old NEW TABLE AS tally_new FOR EACH STATEMENT EXECUTE FUNCTION library_tally_ledger();
CREATE TRIGGER account_entry_tally_delete AFTER DELETE ON account_entry
    REFERENCING OLD TABLE AS tally_old FOR EACH STATEMENT EXECUTE FUNCTION library_tally_ledger();

SELECT library_tally_reset();
