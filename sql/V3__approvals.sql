-- Requests that need a second person (SPEC §7): membership applications, overrides of a
-- limit or block, fine waivers, and corrections of a member's contact details.
CREATE TABLE request (
    id            uuid PRIMARY KEY,
    kind          text NOT NULL CHECK (kind IN ('membership', 'override', 'waiver', 'correction')),
    status        text NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'approved', 'rejected', 'expired')),
    member_id     uuid NOT NULL REFERENCES member (id),
    book_id       uuid REFERENCES book (id),
    amount_cents  bigint CHECK (amount_cents > 0),
    field         text CHECK (field IN ('name', 'email', 'phone')),
    value         text,
    reason        text,
    filed_by      text NOT NULL,
    filed_at      timestamptz NOT NULL,
    decided_by    text,
    decided_at    timestamptz,
    decision_note text,
    result        jsonb,
    CONSTRAINT request_shape CHECK (
        (kind = 'override' AND book_id IS NOT NULL)
        OR (kind = 'waiver' AND amount_cents IS NOT NULL)
        OR (kind = 'correction' AND field IS NOT NULL AND value IS NOT NULL)
        OR kind = 'membership'),
    CONSTRAINT request_decided CHECK ((status = 'pending') = (decided_at IS NULL))
);
CREATE INDEX request_pending_idx ON request (kind, filed_at) WHERE status = 'pending';
CREATE INDEX request_member_idx ON request (member_id);
