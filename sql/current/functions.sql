-- Types and functions of the current schema, written from a fresh migration.
-- Generated: do not edit. Rewrite with `LIBCTL_WRITE_SCHEMA_SNAPSHOT=1 cargo test -p libcore --test tests schema_snapshot`.
-- The history is the migrations in sql/V*.sql.

CREATE TYPE circulation_member_row AS (
    member_id uuid,
    email text,
    status text,
    created_at timestamp with time zone,
    expires_at timestamp with time zone,
    category text,
    loan_days integer,
    max_active_loans integer,
    max_renewals integer,
    fine_cents_per_day bigint,
    grace_days integer,
    max_fine_cents_per_loan bigint,
    block_fine_cents bigint,
    block_overdue_days integer,
    credits_cents bigint,
    stored_fines_cents bigint,
    timezone text,
    closed_days date[],
    calendar_stamp uuid,
    loan_id uuid,
    loan_book_id uuid,
    loan_borrowed_at timestamp with time zone,
    loan_due_at timestamp with time zone,
    loan_fine_cents bigint,
    loan_fine_cents_per_day bigint,
    loan_grace_days integer,
    loan_max_fine_cents bigint,
    loan_renewals integer,
    loan_book_category text,
    book_category text,
    book_available_copies integer,
    book_title text,
    book_id uuid,
    loan_item_id uuid,
    loan_item_barcode text,
    item_id uuid,
    item_barcode text,
    item_status text,
    item_status_changed_at timestamp with time zone,
    read_row boolean,
    allowed boolean,
    stale boolean
);

CREATE TYPE rate_limit_gate_row AS (
    allowed boolean,
    stale boolean
);

CREATE OR REPLACE FUNCTION public.audit_log_append_only()
 RETURNS trigger
 LANGUAGE plpgsql
AS $function$
BEGIN
    IF TG_OP <> 'UPDATE'
       AND current_setting('libctl.audit_maintenance', true) = 'on'
       AND pg_has_role(current_user, (SELECT relowner FROM pg_class WHERE oid = TG_RELID), 'MEMBER')
    THEN
        RETURN OLD;
    END IF;
    RAISE EXCEPTION 'audit_log is append-only: % is not allowed', TG_OP
        USING ERRCODE = 'insufficient_privilege';
END $function$
;

CREATE OR REPLACE FUNCTION public.calendar_stamp_renew()
 RETURNS trigger
 LANGUAGE plpgsql
AS $function$
BEGIN
    INSERT INTO calendar_stamp (only_row, stamp) VALUES (true, gen_random_uuid())
    ON CONFLICT (only_row) DO UPDATE SET stamp = EXCLUDED.stamp;
    RETURN NULL;
END $function$
;

CREATE OR REPLACE FUNCTION public.circulation_member(p_member uuid, p_loan uuid, p_book uuid, p_calendar_stamp uuid, p_barcode text, p_actor text, p_role text, p_groups text[], p_now timestamp with time zone, p_burst_seconds double precision, p_borrow_actions text[])
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
END $function$
;

CREATE OR REPLACE FUNCTION public.fine_cents(per_day bigint, grace integer, cap bigint, overdue integer)
 RETURNS bigint
 LANGUAGE sql
 IMMUTABLE
AS $function$
    SELECT CASE WHEN overdue <= grace THEN 0::bigint ELSE least(overdue::bigint * per_day, cap) END
$function$
;

CREATE OR REPLACE FUNCTION public.item_barcode(prefix text, n bigint)
 RETURNS text
 LANGUAGE plpgsql
 IMMUTABLE STRICT
AS $function$
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
END $function$
;

CREATE OR REPLACE FUNCTION public.item_barcode_catch_up()
 RETURNS bigint
 LANGUAGE sql
AS $function$
    SELECT setval('item_barcode_seq',
                  coalesce(max(substr(i.barcode, length(p.prefix) + 1, 13 - length(p.prefix))::bigint), 0) + 1,
                  false)
    FROM (SELECT item_barcode_prefix() AS prefix) p
    LEFT JOIN item i ON i.barcode ~ '^[0-9]{14}$' AND left(i.barcode, length(p.prefix)) = p.prefix
$function$
;

CREATE OR REPLACE FUNCTION public.item_barcode_prefix()
 RETURNS text
 LANGUAGE sql
 STABLE
AS $function$
    SELECT coalesce((SELECT value FROM library_setting WHERE key = 'item_barcode_prefix'), '3')
$function$
;

CREATE OR REPLACE FUNCTION public.libctl_apply_privileges()
 RETURNS void
 LANGUAGE plpgsql
AS $function$
DECLARE
    obj record;
BEGIN
    IF (SELECT count(*) FROM pg_roles
        WHERE rolname IN ('libctl_owner', 'libctl_staff', 'libctl_reader', 'libctl_job',
                          'libctl_delegate')) < 5 THEN
        RETURN;
    END IF;
    GRANT USAGE ON SCHEMA public TO libctl_staff, libctl_reader, libctl_job, libctl_delegate;
    -- A single-login setup's owner keeps what it had: it joins libctl_owner before its
    -- tables move there.
    FOR obj IN
        SELECT DISTINCT r.rolname
        FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
        JOIN pg_roles r ON r.oid = c.relowner
        WHERE n.nspname = 'public' AND c.relkind IN ('r', 'p')
          AND NOT r.rolsuper AND r.rolname <> 'libctl_owner'
    LOOP
        EXECUTE format('GRANT libctl_owner TO %I', obj.rolname);
    END LOOP;
    FOR obj IN
        SELECT c.oid::regclass AS rel, c.relname
        FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE n.nspname = 'public' AND c.relkind IN ('r', 'p')
    LOOP
        EXECUTE format('ALTER TABLE %s OWNER TO libctl_owner', obj.rel);
        EXECUTE format('REVOKE ALL ON %s FROM libctl_staff, libctl_reader, libctl_job, libctl_delegate', obj.rel);
        EXECUTE format('GRANT SELECT ON %s TO libctl_staff, libctl_reader, libctl_job, libctl_delegate', obj.rel);
        IF obj.relname IN ('audit_log', 'audit_seal') THEN
            EXECUTE format('GRANT INSERT ON %s TO libctl_staff, libctl_job, libctl_delegate', obj.rel);
        ELSIF obj.relname NOT IN ('member_login', 'refinery_schema_history') THEN
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
END $function$
;

CREATE OR REPLACE FUNCTION public.libctl_audit_prune(before timestamp with time zone, row_id uuid, declared_actor text, declared_role text)
 RETURNS bigint
 LANGUAGE plpgsql
 SECURITY DEFINER
 SET search_path TO 'public', 'pg_temp'
AS $function$
DECLARE
    who     text := libctl_history_admin(declared_actor, declared_role);
    removed bigint;
BEGIN
    IF who IS NULL THEN
        RAISE EXCEPTION 'only an admin may prune the audit log (login %)', session_user
            USING ERRCODE = 'insufficient_privilege';
    END IF;
    PERFORM set_config('libctl.audit_maintenance', 'on', true);
    DELETE FROM audit_log WHERE at < before;
    GET DIAGNOSTICS removed = ROW_COUNT;
    PERFORM set_config('libctl.audit_maintenance', 'off', true);
    INSERT INTO audit_log (id, at, actor, actor_role, action, entity_type, entity_id, outcome, details)
    VALUES (row_id, now(), who, 'admin', 'audit.prune', 'audit_log', 'audit_log', 'ok',
            jsonb_build_object('before', before, 'rows', removed));
    RETURN removed;
END $function$
;

CREATE OR REPLACE FUNCTION public.libctl_audit_seal_drop(sealed_day date, declared_actor text, declared_role text)
 RETURNS void
 LANGUAGE plpgsql
 SECURITY DEFINER
 SET search_path TO 'public', 'pg_temp'
AS $function$
BEGIN
    IF libctl_history_admin(declared_actor, declared_role) IS NULL THEN
        RAISE EXCEPTION 'only an admin may rebuild audit seals (login %)', session_user
            USING ERRCODE = 'insufficient_privilege';
    END IF;
    PERFORM set_config('libctl.audit_maintenance', 'on', true);
    DELETE FROM audit_seal WHERE day = sealed_day;
    PERFORM set_config('libctl.audit_maintenance', 'off', true);
END $function$
;

CREATE OR REPLACE FUNCTION public.libctl_create_login(login name, password text, grp text)
 RETURNS void
 LANGUAGE plpgsql
AS $function$
BEGIN
    IF grp NOT IN ('libctl_staff', 'libctl_reader', 'libctl_delegate', 'libctl_job') THEN
        RAISE EXCEPTION 'not a libctl group role: %', grp USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = login) THEN
        RAISE EXCEPTION 'role % already exists', login USING ERRCODE = 'duplicate_object';
    END IF;
    IF password IS NULL THEN
        EXECUTE format('CREATE ROLE %I LOGIN IN ROLE %I', login, grp);
    ELSE
        EXECUTE format('CREATE ROLE %I LOGIN PASSWORD %L IN ROLE %I', login, password, grp);
    END IF;
END $function$
;

CREATE OR REPLACE FUNCTION public.libctl_drop_login(login name)
 RETURNS void
 LANGUAGE plpgsql
AS $function$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_roles r
                   WHERE r.rolname = login AND r.rolcanlogin AND NOT r.rolsuper
                     AND (pg_has_role(login, 'libctl_staff', 'MEMBER')
                          OR pg_has_role(login, 'libctl_reader', 'MEMBER')
                          OR pg_has_role(login, 'libctl_delegate', 'MEMBER')
                          OR pg_has_role(login, 'libctl_job', 'MEMBER'))) THEN
        RAISE EXCEPTION '% is not a libctl login', login USING ERRCODE = 'undefined_object';
    END IF;
    EXECUTE format('DROP ROLE %I', login);
END $function$
;

CREATE OR REPLACE FUNCTION public.libctl_history_admin(declared_actor text, declared_role text)
 RETURNS text
 LANGUAGE plpgsql
 STABLE SECURITY DEFINER
 SET search_path TO 'public', 'pg_temp'
AS $function$
DECLARE
    who  text;
    role text;
BEGIN
    IF coalesce((SELECT rolsuper FROM pg_roles WHERE rolname = session_user), false)
       OR pg_has_role(session_user, (SELECT relowner FROM pg_class WHERE oid = 'audit_log'::regclass), 'MEMBER')
    THEN
        who := declared_actor;
        role := declared_role;
    ELSE
        SELECT m.email, m.role INTO who, role
        FROM member_login l JOIN member m ON m.id = l.member_id
        WHERE l.login = session_user AND m.status = 'active';
    END IF;
    IF role IS DISTINCT FROM 'admin' THEN
        RETURN NULL;
    END IF;
    RETURN who;
END $function$
;

CREATE OR REPLACE FUNCTION public.library_timezone()
 RETURNS text
 LANGUAGE sql
 STABLE
AS $function$ SELECT value FROM library_setting WHERE key = 'timezone' $function$
;

CREATE OR REPLACE FUNCTION public.next_item_barcode()
 RETURNS text
 LANGUAGE plpgsql
AS $function$
DECLARE
    prefix    text := item_barcode_prefix();
    candidate text;
BEGIN
    LOOP
        candidate := item_barcode(prefix, nextval('item_barcode_seq'));
        EXIT WHEN NOT EXISTS (SELECT 1 FROM item WHERE barcode = candidate);
    END LOOP;
    RETURN candidate;
END $function$
;

CREATE OR REPLACE FUNCTION public.overdue_days(due_at timestamp with time zone, end_at timestamp with time zone, tz text)
 RETURNS integer
 LANGUAGE sql
 STABLE
AS $function$
    SELECT CASE WHEN e <= d THEN 0
                ELSE (e - d) - (SELECT count(*)::integer FROM closed_day c WHERE c.day > d AND c.day <= e)
           END
    FROM (SELECT (due_at AT TIME ZONE tz)::date AS d, (end_at AT TIME ZONE tz)::date AS e) AS days
$function$
;

CREATE OR REPLACE FUNCTION public.rate_limit_budgets(p_actor text, p_role text, p_groups text[], p_now timestamp with time zone, p_burst_seconds double precision, p_borrow_actions text[], p_bounded boolean)
 RETURNS TABLE(role text, action_group text, limit_count integer, window_seconds integer, burst integer, used bigint, burst_used bigint)
 LANGUAGE sql
 STABLE
AS $function$
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
$function$
;

CREATE OR REPLACE FUNCTION public.rate_limit_gate(p_actor text, p_role text, p_groups text[], p_now timestamp with time zone, p_burst_seconds double precision, p_borrow_actions text[])
 RETURNS rate_limit_gate_row
 LANGUAGE plpgsql
AS $function$
DECLARE
    v_gate rate_limit_gate_row;
BEGIN
    PERFORM pg_advisory_xact_lock(21068, hashtext(p_actor));
    IF EXISTS (SELECT 1 FROM audit_log a WHERE a.actor = p_actor AND a.at > p_now) THEN
        RETURN ROW(false, true)::rate_limit_gate_row;
    END IF;
    SELECT coalesce(bool_and(b.used < b.limit_count AND b.burst_used < b.burst), true), false
    INTO v_gate
    FROM rate_limit_budgets(p_actor, p_role, p_groups, p_now, p_burst_seconds,
                            p_borrow_actions, true) b;
    RETURN v_gate;
END $function$
;

CREATE OR REPLACE FUNCTION public.uuid_v7(ts timestamp with time zone)
 RETURNS uuid
 LANGUAGE sql
AS $function$
    SELECT encode(
        set_bit(set_bit(
            overlay(uuid_send(gen_random_uuid())
                    PLACING substring(int8send(floor(extract(epoch FROM ts) * 1000)::bigint) FROM 3)
                    FROM 1 FOR 6),
            52, 1), 53, 1),
        'hex')::uuid
$function$
;
