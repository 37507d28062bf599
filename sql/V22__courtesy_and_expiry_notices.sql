-- Two more notice kinds (SPEC §16), each issued at most once per its key:
-- - courtesy: a loan falls due within the member category's courtesy_days, once per loan and
--   due date (a renewal's new due date earns a new one);
-- - membership_expiring: a membership lapses within expiry_notice_days, once per member and
--   expiry date (a renewal's new date earns a new one).
-- Either rule column at 0 turns its kind off.

ALTER TABLE circulation_rule
    ADD COLUMN courtesy_days integer NOT NULL DEFAULT 2
        CONSTRAINT circulation_rule_courtesy_days_check CHECK (courtesy_days BETWEEN 0 AND 30),
    ADD COLUMN expiry_notice_days integer NOT NULL DEFAULT 30
        CONSTRAINT circulation_rule_expiry_notice_days_check CHECK (expiry_notice_days BETWEEN 0 AND 365);

-- The date a notice is keyed by: the loan's due date (courtesy) or the membership's expiry
-- date (membership_expiring), in library time.
ALTER TABLE notice ADD COLUMN key_date date;

ALTER TABLE notice DROP CONSTRAINT notice_kind_known;
ALTER TABLE notice ADD CONSTRAINT notice_kind_known
    CHECK (kind IN ('overdue', 'hold_ready', 'courtesy', 'membership_expiring'));
ALTER TABLE notice DROP CONSTRAINT notice_kind_key;
ALTER TABLE notice ADD CONSTRAINT notice_kind_key CHECK (
    (kind = 'overdue' AND loan_id IS NOT NULL AND level IS NOT NULL AND overdue_days IS NOT NULL
     AND fine_cents IS NOT NULL AND hold_id IS NULL)
    OR (kind = 'hold_ready' AND hold_id IS NOT NULL AND loan_id IS NULL AND level IS NULL)
    OR (kind = 'courtesy' AND loan_id IS NOT NULL AND key_date IS NOT NULL AND level IS NULL
        AND hold_id IS NULL)
    OR (kind = 'membership_expiring' AND key_date IS NOT NULL AND loan_id IS NULL
        AND level IS NULL AND hold_id IS NULL));

CREATE UNIQUE INDEX notice_one_courtesy ON notice (loan_id, key_date) WHERE kind = 'courtesy';
CREATE UNIQUE INDEX notice_one_expiry ON notice (member_id, key_date)
    WHERE kind = 'membership_expiring';
