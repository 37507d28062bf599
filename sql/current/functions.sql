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
    balance_cents bigint,
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
    hold_id uuid,
    hold_status text,
    hold_placed_at timestamp with time zone,
    item_held_for uuid,
    max_holds integer,
    live_holds bigint,
    read_row boolean,
    allowed boolean,
    stale boolean
);

CREATE TYPE hold_trapped AS (
    hold_id uuid,
    member_id uuid,
    ready_at timestamp with time zone,
    pickup_by date
);

CREATE TYPE rate_limit_gate_row AS (
    allowed boolean,
    stale boolean
);

CREATE OR REPLACE FUNCTION public.audit_history_ddl_guard()
 RETURNS event_trigger
 LANGUAGE plpgsql
AS $function$
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
END $function$
;

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

CREATE OR REPLACE FUNCTION public.fine_cents(per_day bigint, grace integer, cap bigint, overdue integer)
 RETURNS bigint
 LANGUAGE sql
 IMMUTABLE
AS $function$
    SELECT CASE WHEN overdue <= grace THEN 0::bigint ELSE least(overdue::bigint * per_day, cap) END
$function$
;

CREATE OR REPLACE FUNCTION public.history_unchanged()
 RETURNS trigger
 LANGUAGE plpgsql
AS $function$
BEGIN
    IF TG_OP = 'DELETE'
       AND current_setting('libctl.audit_maintenance', true) = 'on'
       AND pg_has_role(current_user, (SELECT relowner FROM pg_class WHERE oid = TG_RELID), 'MEMBER')
    THEN
        RETURN OLD;
    END IF;
    RAISE EXCEPTION '% is history: % is not allowed', TG_TABLE_NAME, TG_OP
        USING ERRCODE = 'insufficient_privilege';
END $function$
;

CREATE OR REPLACE FUNCTION public.hold_end(p_hold uuid, p_status text, p_item uuid, p_now timestamp with time zone, p_reason text, p_actor text, p_role text)
 RETURNS text
 LANGUAGE plpgsql
AS $function$
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
END $function$
;

CREATE OR REPLACE FUNCTION public.hold_trap(p_item uuid, p_now timestamp with time zone, p_actor text, p_role text)
 RETURNS hold_trapped
 LANGUAGE plpgsql
AS $function$
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
END $function$
;

CREATE OR REPLACE FUNCTION public.holds_expire(p_as_of date, p_actor text, p_role text, OUT expired integer, OUT passed_on integer)
 RETURNS record
 LANGUAGE plpgsql
AS $function$
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
END $function$
;

CREATE OR REPLACE FUNCTION public.holds_retarget(p_book uuid, p_member uuid, p_now timestamp with time zone, p_actor text, p_role text)
 RETURNS integer
 LANGUAGE plpgsql
AS $function$
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
END $function$
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

CREATE OR REPLACE FUNCTION public.ledger_signed_cents(p_kind text, p_amount bigint)
 RETURNS bigint
 LANGUAGE sql
 IMMUTABLE PARALLEL SAFE
AS $function$
    SELECT CASE WHEN p_kind IN ('lost_item', 'processing_fee') THEN p_amount ELSE -p_amount END
$function$
;

CREATE OR REPLACE FUNCTION public.libctl_apply_privileges()
 RETURNS void
 LANGUAGE plpgsql
AS $function$
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
END $function$
;

CREATE OR REPLACE FUNCTION public.libctl_archive_audit(before timestamp with time zone, after_id uuid, upto_id uuid, batch_size integer, row_id uuid, declared_actor text, declared_role text, OUT moved bigint, OUT last_id uuid)
 RETURNS record
 LANGUAGE plpgsql
 SECURITY DEFINER
 SET search_path TO 'public', 'pg_temp'
AS $function$
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
END $function$
;

CREATE OR REPLACE FUNCTION public.libctl_archive_caller(declared_actor text, declared_role text)
 RETURNS text
 LANGUAGE plpgsql
 STABLE SECURITY DEFINER
 SET search_path TO 'public', 'pg_temp'
AS $function$
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
END $function$
;

CREATE OR REPLACE FUNCTION public.libctl_archive_loans(ended_before timestamp with time zone, after_id uuid, upto_id uuid, batch_size integer, row_id uuid, declared_actor text, declared_role text, OUT moved bigint, OUT last_id uuid)
 RETURNS record
 LANGUAGE plpgsql
 SECURITY DEFINER
 SET search_path TO 'public', 'pg_temp'
AS $function$
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
END $function$
;

CREATE OR REPLACE FUNCTION public.libctl_audit_prune(before timestamp with time zone, row_id uuid, declared_actor text, declared_role text)
 RETURNS bigint
 LANGUAGE plpgsql
 SECURITY DEFINER
 SET search_path TO 'public', 'pg_temp'
AS $function$
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

CREATE OR REPLACE FUNCTION public.libctl_history_attach(p_table text, p_month date)
 RETURNS void
 LANGUAGE plpgsql
 SECURITY DEFINER
 SET search_path TO 'public', 'pg_temp'
AS $function$
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
END $function$
;

CREATE OR REPLACE FUNCTION public.libctl_history_drop(p_table text, p_month date, expected_rows bigint, row_id uuid, declared_actor text, declared_role text)
 RETURNS bigint
 LANGUAGE plpgsql
 SECURITY DEFINER
 SET search_path TO 'public', 'pg_temp'
AS $function$
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
END $function$
;

CREATE OR REPLACE FUNCTION public.libctl_history_key(p_table text)
 RETURNS text
 LANGUAGE sql
 IMMUTABLE
AS $function$
    SELECT CASE p_table WHEN 'loan_history' THEN 'returned_at'
                        WHEN 'notice_history' THEN 'loan_returned_at'
                        WHEN 'audit_history' THEN 'at' END
$function$
;

CREATE OR REPLACE FUNCTION public.libctl_history_partition(p_table text, p_month date, p_detached boolean DEFAULT false)
 RETURNS text
 LANGUAGE plpgsql
 SECURITY DEFINER
 SET search_path TO 'public', 'pg_temp'
AS $function$
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
END $function$
;

CREATE OR REPLACE FUNCTION public.library_tally_archived_fines()
 RETURNS trigger
 LANGUAGE plpgsql
AS $function$
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
END $function$
;

CREATE OR REPLACE FUNCTION public.library_tally_book()
 RETURNS trigger
 LANGUAGE plpgsql
AS $function$
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
END $function$
;

CREATE OR REPLACE FUNCTION public.library_tally_fold()
 RETURNS bigint
 LANGUAGE sql
AS $function$
    WITH folded AS (DELETE FROM library_tally RETURNING *),
         one AS (
             INSERT INTO library_tally
             SELECT sum(titles), sum(copies), sum(available_copies), sum(active_members),
                    sum(open_loans), sum(loan_fine_cents), sum(archived_fine_cents), sum(ledger_cents)
             FROM folded HAVING count(*) > 0)
    SELECT count(*) FROM folded
$function$
;

CREATE OR REPLACE FUNCTION public.library_tally_ledger()
 RETURNS trigger
 LANGUAGE plpgsql
AS $function$
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
END $function$
;

CREATE OR REPLACE FUNCTION public.library_tally_loan()
 RETURNS trigger
 LANGUAGE plpgsql
AS $function$
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
END $function$
;

CREATE OR REPLACE FUNCTION public.library_tally_member()
 RETURNS trigger
 LANGUAGE plpgsql
AS $function$
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
END $function$
;

CREATE OR REPLACE FUNCTION public.library_tally_recount()
 RETURNS library_tally
 LANGUAGE sql
 STABLE
AS $function$
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
$function$
;

CREATE OR REPLACE FUNCTION public.library_tally_reset()
 RETURNS void
 LANGUAGE sql
AS $function$
    DELETE FROM library_tally;
    INSERT INTO library_tally SELECT * FROM library_tally_recount();
$function$
;

CREATE OR REPLACE FUNCTION public.library_tally_total()
 RETURNS library_tally
 LANGUAGE sql
 STABLE
AS $function$
    SELECT coalesce(sum(titles), 0)::bigint, coalesce(sum(copies), 0)::bigint,
           coalesce(sum(available_copies), 0)::bigint, coalesce(sum(active_members), 0)::bigint,
           coalesce(sum(open_loans), 0)::bigint, coalesce(sum(loan_fine_cents), 0)::bigint,
           coalesce(sum(archived_fine_cents), 0)::bigint, coalesce(sum(ledger_cents), 0)::bigint
    FROM library_tally
$function$
;

CREATE OR REPLACE FUNCTION public.library_timezone()
 RETURNS text
 LANGUAGE sql
 STABLE
AS $function$ SELECT value FROM library_setting WHERE key = 'timezone' $function$
;

CREATE OR REPLACE FUNCTION public.loan_reference_exists()
 RETURNS trigger
 LANGUAGE plpgsql
AS $function$
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
END $function$
;

CREATE OR REPLACE FUNCTION public.loan_return(p_loan uuid, p_now timestamp with time zone, p_fine bigint, p_assessed_on date, p_actor text, p_role text)
 RETURNS hold_trapped
 LANGUAGE plpgsql
AS $function$
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
END $function$
;

CREATE OR REPLACE FUNCTION public.member_balance_cents(p_member uuid)
 RETURNS bigint
 LANGUAGE sql
 STABLE
AS $function$
    SELECT ((SELECT coalesce(sum(f.fine_cents), 0) FROM loan f
             WHERE f.member_id = p_member AND f.fine_cents > 0)
          + coalesce((SELECT h.fine_cents FROM member_archived_fines h WHERE h.member_id = p_member), 0)
          + (SELECT coalesce(sum(ledger_signed_cents(a.kind, a.amount_cents)), 0)
             FROM account_entry a WHERE a.member_id = p_member))::bigint
$function$
;

CREATE OR REPLACE FUNCTION public.member_in_good_standing(p_member uuid, p_now timestamp with time zone)
 RETURNS boolean
 LANGUAGE sql
 STABLE
AS $function$
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
$function$
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

CREATE OR REPLACE FUNCTION public.notice_delivery_queue()
 RETURNS trigger
 LANGUAGE plpgsql
AS $function$
BEGIN
    IF current_setting('libctl.audit_maintenance', true) = 'on' THEN
        RETURN NULL;
    END IF;
    INSERT INTO notice_delivery (notice_id, channel, queued_at)
    SELECT NEW.id, m.notice_channel, NEW.created_at FROM member m WHERE m.id = NEW.member_id;
    RETURN NULL;
END $function$
;

CREATE OR REPLACE FUNCTION public.open_days_after(p_day date, p_days integer)
 RETURNS date
 LANGUAGE sql
 STABLE
AS $function$
    SELECT d.day
    FROM (SELECT (p_day + n) AS day FROM generate_series(1, p_days + 3660) AS n) AS d
    WHERE NOT EXISTS (SELECT 1 FROM closed_day c WHERE c.day = d.day)
    ORDER BY d.day OFFSET greatest(p_days, 1) - 1 LIMIT 1
$function$
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
