-- The sanctioned removals of history run as the schema's owner (SECURITY DEFINER), so an
-- admin working through their own login (libctl_staff, no DELETE on audit_log) can prune,
-- while no other login can. Each function checks its caller itself: a login bound to an
-- active admin member, or an owner-level session (superuser, or a member of the table's
-- owner), whose declared actor is then taken as libctl's single-login setup takes it.

-- The acting admin's email, or NULL when the caller may not remove history.
CREATE FUNCTION libctl_history_admin(declared_actor text, declared_role text) RETURNS text
LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = public, pg_temp AS $$
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
END $$;

-- `audit prune`: deletes the rows older than `before` and writes its own audit row.
CREATE FUNCTION libctl_audit_prune(before timestamptz, row_id uuid, declared_actor text,
                                   declared_role text) RETURNS bigint
LANGUAGE plpgsql SECURITY DEFINER SET search_path = public, pg_temp AS $$
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
END $$;

-- Drops one day's seal so a prune can rebuild it (the new seal is an ordinary INSERT).
CREATE FUNCTION libctl_audit_seal_drop(sealed_day date, declared_actor text, declared_role text)
RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path = public, pg_temp AS $$
BEGIN
    IF libctl_history_admin(declared_actor, declared_role) IS NULL THEN
        RAISE EXCEPTION 'only an admin may rebuild audit seals (login %)', session_user
            USING ERRCODE = 'insufficient_privilege';
    END IF;
    PERFORM set_config('libctl.audit_maintenance', 'on', true);
    DELETE FROM audit_seal WHERE day = sealed_day;
    PERFORM set_config('libctl.audit_maintenance', 'off', true);
END $$;

REVOKE EXECUTE ON FUNCTION libctl_audit_prune(timestamptz, uuid, text, text) FROM PUBLIC;
REVOKE EXECUTE ON FUNCTION libctl_audit_seal_drop(date, text, text) FROM PUBLIC;
DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'libctl_staff') THEN
        GRANT EXECUTE ON FUNCTION libctl_audit_prune(timestamptz, uuid, text, text) TO libctl_staff;
        GRANT EXECUTE ON FUNCTION libctl_audit_seal_drop(date, text, text) TO libctl_staff;
    END IF;
END $$;

-- Cron gets a login of its own: a member of libctl_job, bound to no member, acts as `system`.
CREATE OR REPLACE FUNCTION libctl_create_login(login name, password text, grp text) RETURNS void
LANGUAGE plpgsql AS $$
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
END $$;

CREATE OR REPLACE FUNCTION libctl_drop_login(login name) RETURNS void
LANGUAGE plpgsql AS $$
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
END $$;
