-- Identity from PostgreSQL itself: group roles with the privileges each kind of user needs,
-- logins bound to members, the login recorded on every audit row, and a maintenance switch
-- that only the schema's owner can use.
--
-- Group roles are cluster-wide, so they are created once and shared by every libctl database
-- on the server. Creating them needs CREATEROLE; a migrator without it leaves them out, and
-- libctl then works as a single-login application, as before.
DO $$
DECLARE
    name text;
BEGIN
    IF NOT (SELECT rolsuper OR rolcreaterole FROM pg_roles WHERE rolname = current_user) THEN
        RAISE NOTICE 'libctl: % may not create roles; the libctl_* group roles are left out', current_user;
        RETURN;
    END IF;
    FOREACH name IN ARRAY ARRAY['libctl_owner', 'libctl_staff', 'libctl_reader', 'libctl_job',
                                'libctl_delegate'] LOOP
        BEGIN
            IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = name) THEN
                EXECUTE format('CREATE ROLE %I NOLOGIN', name);
            END IF;
        EXCEPTION WHEN duplicate_object OR unique_violation THEN
            NULL; -- another database's migration created it at the same moment
        END;
    END LOOP;
END $$;

-- Which member a database login acts as. A login that is a member of libctl_delegate and has
-- no row here acts for members only (a kiosk, or a service that authenticates readers).
CREATE TABLE member_login (
    login      name PRIMARY KEY,
    member_id  uuid NOT NULL REFERENCES member (id),
    grp        text NOT NULL CHECK (grp IN ('libctl_staff', 'libctl_reader')),
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX member_login_member_idx ON member_login (member_id);

-- The login behind every audit row from now on (rows written before this migration have none).
ALTER TABLE audit_log ADD COLUMN db_user text;
ALTER TABLE audit_log ALTER COLUMN db_user SET DEFAULT session_user;

-- History is append-only. The sanctioned removals set libctl.audit_maintenance inside their
-- transaction, and the switch works only for the table's owner (or a superuser): a login
-- that merely sets it still cannot delete a row.
CREATE OR REPLACE FUNCTION audit_log_append_only() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP <> 'UPDATE'
       AND current_setting('libctl.audit_maintenance', true) = 'on'
       AND pg_has_role(current_user, (SELECT relowner FROM pg_class WHERE oid = TG_RELID), 'MEMBER')
    THEN
        RETURN OLD;
    END IF;
    RAISE EXCEPTION 'audit_log is append-only: % is not allowed', TG_OP
        USING ERRCODE = 'insufficient_privilege';
END $$;

-- The privilege model, applied to every table of the schema. `libctl db migrate` calls it after
-- each migration run (when the migrator may), so tables added later are covered too.
--   libctl_owner    owns every table, function and type;
--   libctl_reader   reads;
--   libctl_staff,   read and write what circulation, the catalogue, members, policy and the
--   libctl_job,     jobs need; INSERT only on audit_log (no UPDATE, DELETE or TRUNCATE);
--   libctl_delegate nothing on member_login or the migration history but reading them.
CREATE FUNCTION libctl_apply_privileges() RETURNS void
LANGUAGE plpgsql AS $$
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
        IF obj.relname = 'audit_log' THEN
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
END $$;

-- Logins are cluster-wide roles; names and passwords reach the DDL only through format()'s
-- %I and %L quoting. Creating one needs CREATEROLE, which libctl's group roles do not have:
-- only an administrator's own connection can mint logins. An existing role is never taken
-- over (that could reset the password of someone else's account).
CREATE FUNCTION libctl_create_login(login name, password text, grp text) RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    IF grp NOT IN ('libctl_staff', 'libctl_reader', 'libctl_delegate') THEN
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

-- Drops a login libctl created: one mapped to a member, or a delegate.
CREATE FUNCTION libctl_drop_login(login name) RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_roles r
                   WHERE r.rolname = login AND r.rolcanlogin AND NOT r.rolsuper
                     AND (pg_has_role(login, 'libctl_staff', 'MEMBER')
                          OR pg_has_role(login, 'libctl_reader', 'MEMBER')
                          OR pg_has_role(login, 'libctl_delegate', 'MEMBER'))) THEN
        RAISE EXCEPTION '% is not a libctl login', login USING ERRCODE = 'undefined_object';
    END IF;
    EXECUTE format('DROP ROLE %I', login);
END $$;
