-- `bench borrow` no longer lifts the rate limits in shared rows. It lifts them for its own
-- connections only (a temporary rate_limit_policy that shadows this table on each of them),
-- so nothing it lifts can outlive its process or reach anyone else.
--
-- A bench killed under the old scheme left the lifted limits in rate_limit_policy and the
-- real ones in rate_limit_policy_saved: put those back before the copy goes.
INSERT INTO rate_limit_policy (role, action_group, limit_count, window_seconds, burst)
SELECT role, action_group, limit_count, window_seconds, burst FROM rate_limit_policy_saved
ON CONFLICT (role, action_group) DO UPDATE
    SET limit_count = excluded.limit_count,
        window_seconds = excluded.window_seconds,
        burst = excluded.burst;
DROP TABLE rate_limit_policy_saved;
