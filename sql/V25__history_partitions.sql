-- History in monthly partitions (SPEC §17). The hot tables keep every constraint; ended loans
-- (with their notices) and old audit rows move out, by `libctl archive …`, into tables
-- partitioned by month, and the views `loan_all` and `audit_all` read both. A month is a UTC
-- month: partition bounds must not move when the library's time zone does. The functions
-- below that set the maintenance switch put it back as they found it, so a bulk load (a seed,
-- a restore) that set it for its whole transaction keeps it.

-- Ended loans, by the month they ended. Same columns as `loan`, in the same order.
CREATE TABLE loan_history (
    id                 uuid        NOT NULL,
    book_id            uuid        NOT NULL,
    member_id          uuid        NOT NULL,
    borrowed_at        timestamptz NOT NULL,
    due_at             timestamptz NOT NULL,
    returned_at        timestamptz NOT NULL,
    renewals           integer     NOT NULL,
    fine_cents_per_day bigint      NOT NULL,
    grace_days         integer     NOT NULL,
    max_fine_cents     bigint      NOT NULL,
    fine_cents         bigint      NOT NULL,
    fine_assessed_on   date,
    item_id            uuid,
    end_state          text        NOT NULL,
    PRIMARY KEY (id, returned_at),
    CONSTRAINT loan_history_end_state_known CHECK (end_state IN ('returned', 'lost', 'claims_returned')),
    CONSTRAINT loan_history_returned_after_borrowed CHECK (returned_at >= borrowed_at)
) PARTITION BY RANGE (returned_at);
CREATE INDEX loan_history_member_idx ON loan_history (member_id, borrowed_at);
CREATE INDEX loan_history_book_idx ON loan_history (book_id);
CREATE INDEX loan_history_item_idx ON loan_history (item_id, borrowed_at) WHERE item_id IS NOT NULL;

-- The notices of those loans, in the month of their loan's end, with the delivery they had.
CREATE TABLE notice_history (
    id               uuid        NOT NULL,
    loan_id          uuid        NOT NULL,
    level            smallint,
    member_id        uuid        NOT NULL,
    issued_on        date        NOT NULL,
    overdue_days     integer,
    fine_cents       bigint,
    created_at       timestamptz NOT NULL,
    kind             text        NOT NULL,
    key_date         date,
    reason           text,
    loan_returned_at timestamptz NOT NULL,
    delivery         jsonb,
    PRIMARY KEY (id, loan_returned_at)
) PARTITION BY RANGE (loan_returned_at);
CREATE INDEX notice_history_loan_idx ON notice_history (loan_id);

-- History does not change: no UPDATE ever, and rows leave only with their month
-- (`libctl_history_drop`) or, for the owner under the maintenance switch, row by row.
CREATE FUNCTION history_unchanged() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'DELETE'
       AND current_setting('libctl.audit_maintenance', true) = 'on'
       AND pg_has_role(current_user, (SELECT relowner FROM pg_class WHERE oid = TG_RELID), 'MEMBER')
    THEN
        RETURN OLD;
    END IF;
    RAISE EXCEPTION '% is history: % is not allowed', TG_TABLE_NAME, TG_OP
        USING ERRCODE = 'insufficient_privilege';
END $$;
CREATE TRIGGER loan_history_unchanged BEFORE DELETE OR UPDATE ON loan_history
    FOR EACH ROW EXECUTE FUNCTION history_unchanged();
CREATE TRIGGER notice_history_unchanged BEFORE DELETE OR UPDATE ON notice_history
    FOR EACH ROW EXECUTE FUNCTION history_unchanged();

-- Audit rows, by the month of `at`. Append-only like audit_log, on every partition.
CREATE TABLE audit_history (
    id          uuid        NOT NULL,
    at          timestamptz NOT NULL,
    recorded_at timestamptz NOT NULL,
    actor       text        NOT NULL,
    actor_role  text        NOT NULL,
    action      text        NOT NULL,
    entity_type text,
    entity_id   text,
    outcome     text        NOT NULL,
    details     jsonb       NOT NULL,
    db_user     text,
    PRIMARY KEY (id, at)
) PARTITION BY RANGE (at);
CREATE INDEX audit_history_actor_at_idx ON audit_history (actor, at) INCLUDE (action, outcome);
CREATE TRIGGER audit_history_no_update_delete BEFORE DELETE OR UPDATE ON audit_history
    FOR EACH ROW EXECUTE FUNCTION audit_log_append_only();
CREATE TRIGGER audit_history_no_truncate BEFORE TRUNCATE ON audit_history
    FOR EACH STATEMENT EXECUTE FUNCTION audit_log_append_only();

-- The fines of archived loans, per member: the balance rule reads one row here instead of
-- probing every history partition at each borrow.
CREATE TABLE member_archived_fines (
    member_id  uuid   PRIMARY KEY REFERENCES member (id),
    fine_cents bigint NOT NULL CHECK (fine_cents > 0)
);

CREATE OR REPLACE FUNCTION member_balance_cents(p_member uuid) RETURNS bigint
LANGUAGE sql STABLE AS $$
    SELECT ((SELECT coalesce(sum(f.fine_cents), 0) FROM loan f
             WHERE f.member_id = p_member AND f.fine_cents > 0)
          + coalesce((SELECT h.fine_cents FROM member_archived_fines h WHERE h.member_id = p_member), 0)
          + (SELECT coalesce(sum(ledger_signed_cents(a.kind, a.amount_cents)), 0)
             FROM account_entry a WHERE a.member_id = p_member))::bigint
$$;

CREATE VIEW loan_all AS
    SELECT id, book_id, member_id, borrowed_at, due_at, returned_at, renewals, fine_cents_per_day,
           grace_days, max_fine_cents, fine_cents, fine_assessed_on, item_id, end_state
    FROM loan
    UNION ALL
    SELECT id, book_id, member_id, borrowed_at, due_at, returned_at, renewals, fine_cents_per_day,
           grace_days, max_fine_cents, fine_cents, fine_assessed_on, item_id, end_state
    FROM loan_history;

CREATE VIEW audit_all AS
    SELECT id, at, recorded_at, actor, actor_role, action, entity_type, entity_id, outcome,
           details, db_user
    FROM audit_log
    UNION ALL
    SELECT id, at, recorded_at, actor, actor_role, action, entity_type, entity_id, outcome,
           details, db_user
    FROM audit_history;

-- Ledger entries and requests name loans that may since have moved to history, so their
-- reference is checked by a trigger that looks in both (a foreign key sees only `loan`).
-- The key share lock makes an archive wait for (or skip) a loan being referenced right now.
ALTER TABLE account_entry DROP CONSTRAINT account_entry_loan_id_fkey;
ALTER TABLE request DROP CONSTRAINT request_loan_id_fkey;
CREATE FUNCTION loan_reference_exists() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.loan_id IS NULL OR current_setting('libctl.audit_maintenance', true) = 'on' THEN
        RETURN NEW;
    END IF;
    PERFORM 1 FROM loan WHERE id = NEW.loan_id FOR KEY SHARE;
    IF NOT FOUND AND NOT EXISTS (SELECT 1 FROM loan_history WHERE id = NEW.loan_id) THEN
        RAISE EXCEPTION '% % names loan %, which does not exist', TG_TABLE_NAME, NEW.id, NEW.loan_id
            USING ERRCODE = 'foreign_key_violation';
    END IF;
    RETURN NEW;
END $$;
CREATE TRIGGER account_entry_loan_exists BEFORE INSERT OR UPDATE OF loan_id ON account_entry
    FOR EACH ROW EXECUTE FUNCTION loan_reference_exists();
CREATE TRIGGER request_loan_exists BEFORE INSERT OR UPDATE OF loan_id ON request
    FOR EACH ROW EXECUTE FUNCTION loan_reference_exists();

-- The partition key of each history table.
CREATE FUNCTION libctl_history_key(p_table text) RETURNS text
LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE p_table WHEN 'loan_history' THEN 'returned_at'
                        WHEN 'notice_history' THEN 'loan_returned_at'
                        WHEN 'audit_history' THEN 'at' END
$$;

-- One month's partition, `<table>_yYYYYmMM`, created if missing. Detached, it is a plain table
-- of the parent's columns and checks, with no index, for a bulk load that `attach` then
-- indexes; attached, it gets the parent's indexes and triggers at once. Names and bounds reach
-- the DDL only through format()'s %I and %L.
CREATE FUNCTION libctl_history_partition(p_table text, p_month date, p_detached boolean DEFAULT false)
RETURNS text
LANGUAGE plpgsql SECURITY DEFINER SET search_path = public, pg_temp AS $$
DECLARE
    prev_maintenance text := current_setting('libctl.audit_maintenance', true);
    key  text := libctl_history_key(p_table);
    leaf text;
    lo   timestamptz;
    hi   timestamptz;
BEGIN
    IF key IS NULL THEN
        RAISE EXCEPTION '% is not a history table', p_table USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF p_month IS NULL OR p_month <> date_trunc('month', p_month)::date THEN
        RAISE EXCEPTION 'a partition month starts on its first day, not %', p_month
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    leaf := p_table || to_char(p_month, '"_y"YYYY"m"MM');
    lo := p_month::timestamp AT TIME ZONE 'UTC';
    hi := (p_month + interval '1 month')::timestamp AT TIME ZONE 'UTC';
    IF to_regclass(leaf) IS NOT NULL THEN
        RETURN leaf;
    END IF;
    BEGIN
        IF p_detached THEN
            PERFORM set_config('libctl.audit_maintenance', 'on', true);
            EXECUTE format('CREATE TABLE %I (LIKE %I INCLUDING DEFAULTS INCLUDING CONSTRAINTS)', leaf, p_table);
            EXECUTE format('ALTER TABLE %I ADD CONSTRAINT %I CHECK (%I >= %L AND %I < %L)',
                           leaf, leaf || '_bounds', key, lo, key, hi);
            PERFORM set_config('libctl.audit_maintenance', coalesce(nullif(prev_maintenance, ''), 'off'), true);
        ELSE
            EXECUTE format('CREATE TABLE %I PARTITION OF %I FOR VALUES FROM (%L) TO (%L)',
                           leaf, p_table, lo, hi);
        END IF;
    EXCEPTION WHEN duplicate_table THEN
        RETURN leaf; -- created by a concurrent caller
    END;
    -- Statement triggers are not inherited: each audit partition refuses TRUNCATE itself.
    IF p_table = 'audit_history' THEN
        EXECUTE format('CREATE TRIGGER audit_history_no_truncate BEFORE TRUNCATE ON %I
                        FOR EACH STATEMENT EXECUTE FUNCTION audit_log_append_only()', leaf);
    END IF;
    RETURN leaf;
END $$;

-- Attaches a partition `libctl_history_partition(…, true)` made and a bulk load filled: the
-- bounds check spares ATTACH its scan, and ATTACH builds the leaf's indexes from the parent's.
CREATE FUNCTION libctl_history_attach(p_table text, p_month date) RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path = public, pg_temp AS $$
DECLARE
    prev_maintenance text := current_setting('libctl.audit_maintenance', true);
    leaf text := p_table || to_char(p_month, '"_y"YYYY"m"MM');
BEGIN
    IF libctl_history_key(p_table) IS NULL THEN
        RAISE EXCEPTION '% is not a history table', p_table USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF EXISTS (SELECT 1 FROM pg_inherits WHERE inhrelid = leaf::regclass) THEN
        RETURN;
    END IF;
    PERFORM set_config('libctl.audit_maintenance', 'on', true);
    EXECUTE format('ALTER TABLE %I ATTACH PARTITION %I FOR VALUES FROM (%L) TO (%L)', p_table, leaf,
                   p_month::timestamp AT TIME ZONE 'UTC',
                   (p_month + interval '1 month')::timestamp AT TIME ZONE 'UTC');
    EXECUTE format('ALTER TABLE %I DROP CONSTRAINT IF EXISTS %I', leaf, leaf || '_bounds');
    PERFORM set_config('libctl.audit_maintenance', coalesce(nullif(prev_maintenance, ''), 'off'), true);
END $$;

-- Who may archive: an admin (by login, or declared on an owner-level session) or `system`
-- (the cron login, a member of libctl_job bound to no member, or declared likewise).
CREATE FUNCTION libctl_archive_caller(declared_actor text, declared_role text) RETURNS text
LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = public, pg_temp AS $$
BEGIN
    IF coalesce((SELECT rolsuper FROM pg_roles WHERE rolname = session_user), false)
       OR pg_has_role(session_user, (SELECT relowner FROM pg_class WHERE oid = 'loan'::regclass), 'MEMBER')
    THEN
        RETURN CASE WHEN declared_role IN ('admin', 'system') THEN declared_actor END;
    END IF;
    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'libctl_job')
       AND pg_has_role(session_user, 'libctl_job', 'MEMBER')
       AND NOT EXISTS (SELECT 1 FROM member_login l WHERE l.login = session_user)
    THEN
        RETURN 'system';
    END IF;
    RETURN libctl_history_admin(declared_actor, declared_role);
END $$;

-- Loans of each book whose history month was exported and dropped: `times_borrowed` still
-- counts them, so `db check` adds them back.
CREATE TABLE book_dropped_loans (
    book_id uuid   PRIMARY KEY REFERENCES book (id),
    loans   bigint NOT NULL CHECK (loans > 0)
);

-- One batch of `archive loans`: the ended loans among the first `batch_size` ids after
-- `after_id` (and before `upto_id`) whose end is before `ended_before` move to loan_history,
-- their notices (with the delivery each had) to notice_history, their fines to
-- member_archived_fines, and the batch writes its audit row. Returns the loans moved and the
-- last id looked at, so the caller's next batch starts after it. The months' partitions must
-- exist (the caller creates them first, each in a short transaction of its own).
CREATE FUNCTION libctl_archive_loans(ended_before timestamptz, after_id uuid, upto_id uuid,
                                     batch_size integer, row_id uuid, declared_actor text,
                                     declared_role text, OUT moved bigint, OUT last_id uuid)
LANGUAGE plpgsql SECURITY DEFINER SET search_path = public, pg_temp AS $$
DECLARE
    who text := libctl_archive_caller(declared_actor, declared_role);
    ids uuid[];
BEGIN
    IF who IS NULL THEN
        RAISE EXCEPTION 'only an admin or system may archive loans (login %)', session_user
            USING ERRCODE = 'insufficient_privilege';
    END IF;
    SELECT s.id INTO last_id
    FROM (SELECT l.id FROM loan l WHERE l.id > after_id AND l.id < upto_id
          ORDER BY l.id LIMIT batch_size) s
    ORDER BY s.id DESC LIMIT 1;
    IF last_id IS NULL THEN
        moved := 0;
        RETURN;
    END IF;
    SELECT array_agg(l.id) INTO ids
    FROM (SELECT l.id FROM loan l
          WHERE l.id > after_id AND l.id <= last_id AND l.returned_at < ended_before
          FOR UPDATE SKIP LOCKED) l;
    moved := coalesce(cardinality(ids), 0);
    IF moved = 0 THEN
        RETURN;
    END IF;
    INSERT INTO notice_history (id, loan_id, level, member_id, issued_on, overdue_days, fine_cents,
                                created_at, kind, key_date, reason, loan_returned_at, delivery)
    SELECT n.id, n.loan_id, n.level, n.member_id, n.issued_on, n.overdue_days, n.fine_cents,
           n.created_at, n.kind, n.key_date, n.reason, l.returned_at,
           (SELECT to_jsonb(d) - 'notice_id' FROM notice_delivery d WHERE d.notice_id = n.id)
    FROM notice n JOIN loan l ON l.id = n.loan_id
    WHERE n.loan_id = ANY (ids);
    DELETE FROM notice_delivery d USING notice n WHERE d.notice_id = n.id AND n.loan_id = ANY (ids);
    DELETE FROM notice WHERE loan_id = ANY (ids);
    WITH gone AS (
        DELETE FROM loan WHERE id = ANY (ids)
        RETURNING id, book_id, member_id, borrowed_at, due_at, returned_at, renewals,
                  fine_cents_per_day, grace_days, max_fine_cents, fine_cents, fine_assessed_on,
                  item_id, end_state
    ), kept AS (
        INSERT INTO loan_history SELECT * FROM gone RETURNING member_id, fine_cents
    )
    INSERT INTO member_archived_fines (member_id, fine_cents)
    SELECT member_id, sum(fine_cents) FROM kept WHERE fine_cents > 0 GROUP BY member_id
    ON CONFLICT (member_id) DO UPDATE
        SET fine_cents = member_archived_fines.fine_cents + EXCLUDED.fine_cents;
    INSERT INTO audit_log (id, at, actor, actor_role, action, entity_type, entity_id, outcome, details)
    VALUES (row_id, now(), who, declared_role, 'archive.loans', 'loan_history', NULL, 'ok',
            jsonb_build_object('ended_before', ended_before, 'rows', moved));
END $$;

-- One batch of `archive audit`: like the loans', for audit rows whose `at` is before `before`.
CREATE FUNCTION libctl_archive_audit(before timestamptz, after_id uuid, upto_id uuid,
                                     batch_size integer, row_id uuid, declared_actor text,
                                     declared_role text, OUT moved bigint, OUT last_id uuid)
LANGUAGE plpgsql SECURITY DEFINER SET search_path = public, pg_temp AS $$
DECLARE
    prev_maintenance text := current_setting('libctl.audit_maintenance', true);
    who text := libctl_archive_caller(declared_actor, declared_role);
BEGIN
    IF who IS NULL THEN
        RAISE EXCEPTION 'only an admin or system may archive the audit log (login %)', session_user
            USING ERRCODE = 'insufficient_privilege';
    END IF;
    SELECT s.id INTO last_id
    FROM (SELECT a.id FROM audit_log a WHERE a.id > after_id AND a.id < upto_id
          ORDER BY a.id LIMIT batch_size) s
    ORDER BY s.id DESC LIMIT 1;
    IF last_id IS NULL THEN
        moved := 0;
        RETURN;
    END IF;
    PERFORM set_config('libctl.audit_maintenance', 'on', true);
    WITH gone AS (
        DELETE FROM audit_log a WHERE a.id > after_id AND a.id <= last_id AND a.at < before
        RETURNING a.id, a.at, a.recorded_at, a.actor, a.actor_role, a.action, a.entity_type,
                  a.entity_id, a.outcome, a.details, a.db_user
    )
    INSERT INTO audit_history SELECT * FROM gone;
    GET DIAGNOSTICS moved = ROW_COUNT;
    PERFORM set_config('libctl.audit_maintenance', coalesce(nullif(prev_maintenance, ''), 'off'), true);
    IF moved > 0 THEN
        INSERT INTO audit_log (id, at, actor, actor_role, action, entity_type, entity_id, outcome, details)
        VALUES (row_id, now(), who, declared_role, 'archive.audit', 'audit_history', NULL, 'ok',
                jsonb_build_object('before', before, 'rows', moved));
    END IF;
END $$;

-- `archive export --drop`: detaches one exported month and drops it, audited, refusing when
-- the month no longer holds exactly the rows the export wrote. A loan month takes its notices'
-- month with it, and its loans stay counted in book_dropped_loans. The only path, with
-- `audit prune`, by which history partitions go away (the guard below refuses any other).
CREATE FUNCTION libctl_history_drop(p_table text, p_month date, expected_rows bigint, row_id uuid,
                                    declared_actor text, declared_role text) RETURNS bigint
LANGUAGE plpgsql SECURITY DEFINER SET search_path = public, pg_temp AS $$
DECLARE
    prev_maintenance text := current_setting('libctl.audit_maintenance', true);
    who    text := libctl_history_admin(declared_actor, declared_role);
    suffix text := to_char(p_month, '"_y"YYYY"m"MM');
    leaf   text := p_table || suffix;
    rows   bigint;
BEGIN
    IF who IS NULL THEN
        RAISE EXCEPTION 'only an admin may drop history (login %)', session_user
            USING ERRCODE = 'insufficient_privilege';
    END IF;
    IF p_table NOT IN ('loan_history', 'audit_history') THEN
        RAISE EXCEPTION '% is not an exportable history table', p_table USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF to_regclass(leaf) IS NULL THEN
        RETURN 0;
    END IF;
    EXECUTE format('LOCK TABLE %I IN ACCESS EXCLUSIVE MODE', p_table);
    EXECUTE format('SELECT count(*) FROM %I', leaf) INTO rows;
    IF rows <> expected_rows THEN
        RAISE EXCEPTION '% holds % rows, the export wrote %: export it again', leaf, rows, expected_rows
            USING ERRCODE = 'serialization_failure';
    END IF;
    PERFORM set_config('libctl.audit_maintenance', 'on', true);
    IF p_table = 'loan_history' THEN
        EXECUTE format('INSERT INTO book_dropped_loans (book_id, loans)
                        SELECT book_id, count(*) FROM %I GROUP BY book_id
                        ON CONFLICT (book_id) DO UPDATE SET loans = book_dropped_loans.loans + EXCLUDED.loans', leaf);
        IF to_regclass('notice_history' || suffix) IS NOT NULL THEN
            EXECUTE format('ALTER TABLE notice_history DETACH PARTITION %I', 'notice_history' || suffix);
            EXECUTE format('DROP TABLE %I', 'notice_history' || suffix);
        END IF;
    END IF;
    EXECUTE format('ALTER TABLE %I DETACH PARTITION %I', p_table, leaf);
    EXECUTE format('DROP TABLE %I', leaf);
    PERFORM set_config('libctl.audit_maintenance', coalesce(nullif(prev_maintenance, ''), 'off'), true);
    INSERT INTO audit_log (id, at, actor, actor_role, action, entity_type, entity_id, outcome, details)
    VALUES (row_id, now(), who, 'admin', 'archive.drop', p_table, leaf, 'ok',
            jsonb_build_object('table', p_table, 'month', p_month, 'rows', rows));
    RETURN rows;
END $$;

-- `audit prune` removes history through the partitions: rows older than `before` still in
-- audit_log move to audit_history, each month wholly before it is detached and dropped, and the
-- rest of `before`'s own month is deleted row by row under the maintenance switch.
CREATE OR REPLACE FUNCTION libctl_audit_prune(before timestamptz, row_id uuid, declared_actor text,
                                              declared_role text) RETURNS bigint
LANGUAGE plpgsql SECURITY DEFINER SET search_path = public, pg_temp AS $$
DECLARE
    prev_maintenance text := current_setting('libctl.audit_maintenance', true);
    who     text := libctl_history_admin(declared_actor, declared_role);
    removed bigint := 0;
    n       bigint;
    month   date;
    first   date := date_trunc('month', before AT TIME ZONE 'UTC')::date;
BEGIN
    IF who IS NULL THEN
        RAISE EXCEPTION 'only an admin may prune the audit log (login %)', session_user
            USING ERRCODE = 'insufficient_privilege';
    END IF;
    FOR month IN
        SELECT DISTINCT date_trunc('month', a.at AT TIME ZONE 'UTC')::date FROM audit_log a WHERE a.at < before
    LOOP
        PERFORM libctl_history_partition('audit_history', month);
    END LOOP;
    PERFORM set_config('libctl.audit_maintenance', 'on', true);
    WITH gone AS (
        DELETE FROM audit_log a WHERE a.at < before
        RETURNING a.id, a.at, a.recorded_at, a.actor, a.actor_role, a.action, a.entity_type,
                  a.entity_id, a.outcome, a.details, a.db_user
    )
    INSERT INTO audit_history SELECT * FROM gone;
    FOR month IN
        SELECT to_date(substring(c.relname from '_y(\d{4}m\d{2})$'), 'YYYY"m"MM')
        FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
        WHERE i.inhparent = 'audit_history'::regclass
    LOOP
        IF month < first THEN
            EXECUTE format('SELECT count(*) FROM %I', 'audit_history' || to_char(month, '"_y"YYYY"m"MM')) INTO n;
            removed := removed + n;
            EXECUTE format('ALTER TABLE audit_history DETACH PARTITION %I', 'audit_history' || to_char(month, '"_y"YYYY"m"MM'));
            EXECUTE format('DROP TABLE %I', 'audit_history' || to_char(month, '"_y"YYYY"m"MM'));
        END IF;
    END LOOP;
    DELETE FROM audit_history a WHERE a.at < before;
    GET DIAGNOSTICS n = ROW_COUNT;
    removed := removed + n;
    PERFORM set_config('libctl.audit_maintenance', coalesce(nullif(prev_maintenance, ''), 'off'), true);
    INSERT INTO audit_log (id, at, actor, actor_role, action, entity_type, entity_id, outcome, details)
    VALUES (row_id, now(), who, 'admin', 'audit.prune', 'audit_log', 'audit_log', 'ok',
            jsonb_build_object('before', before, 'rows', removed));
    RETURN removed;
END $$;

-- The append-only guarantee through DDL: audit_log, audit_seal, audit_history and its
-- partitions are neither dropped nor detached except under the maintenance switch, which the
-- sanctioned functions above set. Event triggers need a superuser; a migrator without it
-- leaves the guard out (ownership still keeps every libctl group from DROP and DETACH).
CREATE FUNCTION audit_history_ddl_guard() RETURNS event_trigger
LANGUAGE plpgsql AS $$
DECLARE
    obj record;
BEGIN
    IF current_setting('libctl.audit_maintenance', true) = 'on' THEN
        RETURN;
    END IF;
    IF TG_EVENT = 'sql_drop' THEN
        FOR obj IN SELECT * FROM pg_event_trigger_dropped_objects() WHERE object_type = 'table' LOOP
            IF obj.object_name IN ('audit_log', 'audit_seal', 'audit_history')
               OR obj.object_name ~ '^audit_history_y\d{4}m\d{2}$' THEN
                RAISE EXCEPTION 'the audit history is append-only: DROP TABLE % is not allowed', obj.object_name
                    USING ERRCODE = 'insufficient_privilege';
            END IF;
        END LOOP;
    ELSE
        FOR obj IN SELECT * FROM pg_event_trigger_ddl_commands() LOOP
            IF obj.command_tag = 'ALTER TABLE' AND obj.object_identity ~ '^public\.audit_history(_y\d{4}m\d{2})?$' THEN
                RAISE EXCEPTION 'the audit history is append-only: ALTER TABLE % is not allowed', obj.object_identity
                    USING ERRCODE = 'insufficient_privilege';
            END IF;
        END LOOP;
    END IF;
END $$;

DO $$
BEGIN
    IF NOT (SELECT rolsuper FROM pg_roles WHERE rolname = current_user) THEN
        RAISE NOTICE 'libctl: % is not a superuser; the audit history DDL guard is left out', current_user;
        RETURN;
    END IF;
    EXECUTE 'CREATE EVENT TRIGGER libctl_audit_history_no_drop ON sql_drop
             EXECUTE FUNCTION audit_history_ddl_guard()';
    EXECUTE $e$CREATE EVENT TRIGGER libctl_audit_history_no_detach ON ddl_command_end
             WHEN TAG IN ('ALTER TABLE') EXECUTE FUNCTION audit_history_ddl_guard()$e$;
END $$;

-- History tables are written only by the functions above (as the owner): every libctl group
-- reads them, none writes them. Views are read like tables.
CREATE OR REPLACE FUNCTION libctl_apply_privileges() RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    prev_maintenance text := current_setting('libctl.audit_maintenance', true);
    obj record;
BEGIN
    IF (SELECT count(*) FROM pg_roles
        WHERE rolname IN ('libctl_owner', 'libctl_staff', 'libctl_reader', 'libctl_job',
                          'libctl_delegate')) < 5 THEN
        RETURN;
    END IF;
    -- ALTER … OWNER of the audit history passes its DDL guard only under the switch.
    PERFORM set_config('libctl.audit_maintenance', 'on', true);
    GRANT USAGE ON SCHEMA public TO libctl_staff, libctl_reader, libctl_job, libctl_delegate;
    -- The owner makes history partitions (libctl_history_partition runs as it).
    BEGIN
        GRANT CREATE ON SCHEMA public TO libctl_owner;
    EXCEPTION WHEN insufficient_privilege THEN
        RAISE NOTICE 'libctl: % may not grant CREATE on schema public to libctl_owner', current_user;
    END;
    -- A single-login setup's owner keeps what it had: it joins libctl_owner before its
    -- tables move there.
    FOR obj IN
        SELECT DISTINCT r.rolname
        FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
        JOIN pg_roles r ON r.oid = c.relowner
        WHERE n.nspname = 'public' AND c.relkind IN ('r', 'p', 'v')
          AND NOT r.rolsuper AND r.rolname <> 'libctl_owner'
    LOOP
        EXECUTE format('GRANT libctl_owner TO %I', obj.rolname);
    END LOOP;
    FOR obj IN
        SELECT c.oid::regclass AS rel, c.relname, c.relkind
        FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE n.nspname = 'public' AND c.relkind IN ('r', 'p', 'v')
    LOOP
        EXECUTE format('ALTER TABLE %s OWNER TO libctl_owner', obj.rel);
        EXECUTE format('REVOKE ALL ON %s FROM libctl_staff, libctl_reader, libctl_job, libctl_delegate', obj.rel);
        EXECUTE format('GRANT SELECT ON %s TO libctl_staff, libctl_reader, libctl_job, libctl_delegate', obj.rel);
        IF obj.relname IN ('audit_log', 'audit_seal') THEN
            EXECUTE format('GRANT INSERT ON %s TO libctl_staff, libctl_job, libctl_delegate', obj.rel);
        ELSIF obj.relkind = 'v'
              OR obj.relname IN ('member_login', 'refinery_schema_history', 'member_archived_fines',
                                 'book_dropped_loans')
              OR obj.relname ~ '^(loan|notice|audit)_history(_y\d{4}m\d{2})?$' THEN
            NULL;
        ELSE
            EXECUTE format('GRANT INSERT, UPDATE, DELETE ON %s TO libctl_staff, libctl_job, libctl_delegate', obj.rel);
        END IF;
    END LOOP;
    FOR obj IN
        SELECT p.oid::regprocedure AS fn
        FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
        WHERE n.nspname = 'public' AND p.prokind IN ('f', 'p')
          AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.objid = p.oid AND d.deptype = 'e')
    LOOP
        EXECUTE format('ALTER ROUTINE %s OWNER TO libctl_owner', obj.fn);
    END LOOP;
    FOR obj IN
        SELECT t.oid::regtype AS ty
        FROM pg_type t JOIN pg_class c ON c.oid = t.typrelid
        JOIN pg_namespace n ON n.oid = t.typnamespace
        WHERE n.nspname = 'public' AND c.relkind = 'c'
    LOOP
        EXECUTE format('ALTER TYPE %s OWNER TO libctl_owner', obj.ty);
    END LOOP;
    GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA public TO libctl_staff, libctl_job, libctl_delegate;
    PERFORM set_config('libctl.audit_maintenance', coalesce(nullif(prev_maintenance, ''), 'off'), true);
END $$;

REVOKE EXECUTE ON FUNCTION libctl_history_partition(text, date, boolean) FROM PUBLIC;
REVOKE EXECUTE ON FUNCTION libctl_history_attach(text, date) FROM PUBLIC;
REVOKE EXECUTE ON FUNCTION libctl_archive_loans(timestamptz, uuid, uuid, integer, uuid, text, text) FROM PUBLIC;
REVOKE EXECUTE ON FUNCTION libctl_archive_audit(timestamptz, uuid, uuid, integer, uuid, text, text) FROM PUBLIC;
REVOKE EXECUTE ON FUNCTION libctl_history_drop(text, date, bigint, uuid, text, text) FROM PUBLIC;
DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'libctl_staff') THEN
        GRANT EXECUTE ON FUNCTION libctl_history_partition(text, date, boolean) TO libctl_staff, libctl_job;
        GRANT EXECUTE ON FUNCTION libctl_archive_loans(timestamptz, uuid, uuid, integer, uuid, text, text) TO libctl_staff, libctl_job;
        GRANT EXECUTE ON FUNCTION libctl_archive_audit(timestamptz, uuid, uuid, integer, uuid, text, text) TO libctl_staff, libctl_job;
        GRANT EXECUTE ON FUNCTION libctl_history_drop(text, date, bigint, uuid, text, text) TO libctl_staff;
    END IF;
END $$;
