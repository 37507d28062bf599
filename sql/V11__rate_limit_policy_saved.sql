-- While `bench borrow` runs with the rate limits lifted, the real policies wait here. A bench
-- that dies before restoring them (killed, connection lost) leaves them in this table, and the
-- next bench puts them back before it does anything else: lifted limits never outlive a run
-- by more than that.
CREATE TABLE rate_limit_policy_saved (LIKE rate_limit_policy INCLUDING ALL);
