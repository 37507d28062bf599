-- Rate-limit policies per role and action group (SPEC §9). The sliding-window state is the
-- audit log itself: every attempt is already there, indexed by (actor, at), so a decision counts
-- the actor's recent rows under a per-actor advisory lock and needs no second store to keep in step.
CREATE TABLE rate_limit_policy (
    role           text NOT NULL CHECK (role IN ('member', 'librarian', 'admin', 'any')),
    action_group   text NOT NULL CHECK (action_group IN ('borrow', 'mutation')),
    limit_count    integer NOT NULL CHECK (limit_count > 0),
    window_seconds integer NOT NULL CHECK (window_seconds > 0),
    burst          integer NOT NULL CHECK (burst > 0),
    PRIMARY KEY (role, action_group)
);
INSERT INTO rate_limit_policy (role, action_group, limit_count, window_seconds, burst) VALUES
    ('member', 'borrow', 10, 3600, 5),
    ('any', 'mutation', 120, 60, 120);

-- The rate-limit decision and its audit read (actor, at, action, outcome) of many rows:
-- carrying action and outcome in the index makes both index-only scans.
DROP INDEX audit_log_actor_at_idx;
CREATE INDEX audit_log_actor_at_idx ON audit_log (actor, at) INCLUDE (action, outcome);
