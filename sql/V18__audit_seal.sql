-- Tamper evidence for the audit log: one seal per calendar day (library time) of the rows
-- written that day, chained. A day's digest is blake3 over the previous seal's digest and the
-- day's rows in (recorded_at, id) order; libcore computes and checks it (libcore::seal).
--
-- Days are days of recorded_at, the real time a row was written (a column default nobody's
-- command sets), not of `at`, which `--at` backdates: a legitimate backfill lands in today's
-- unsealed day, while a row slipped into a sealed day breaks that day's digest.
CREATE TABLE audit_seal (
    day       date PRIMARY KEY,
    rows      bigint NOT NULL CHECK (rows > 0),
    -- The digest of the seal before it when this one was made (64 zeros for the first).
    previous  text NOT NULL CHECK (previous ~ '^[0-9a-f]{64}$'),
    digest    text NOT NULL CHECK (digest ~ '^[0-9a-f]{64}$'),
    sealed_at timestamptz NOT NULL DEFAULT clock_timestamp(),
    -- Rebuilt by `audit prune`, the sanctioned removal of history (audited), rather than
    -- written once by `audit seal`.
    resealed  boolean NOT NULL DEFAULT false
);

-- Seals are append-only like the log itself; only the owner's maintenance path (prune) may
-- rebuild them.
CREATE TRIGGER audit_seal_no_update_delete BEFORE UPDATE OR DELETE ON audit_seal
    FOR EACH ROW EXECUTE FUNCTION audit_log_append_only();
CREATE TRIGGER audit_seal_no_truncate BEFORE TRUNCATE ON audit_seal
    FOR EACH STATEMENT EXECUTE FUNCTION audit_log_append_only();

-- Seals get the log's privileges: INSERT and SELECT for the staff, job and delegate groups.
CREATE OR REPLACE FUNCTION libctl_apply_privileges() RETURNS void
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
END $$;
