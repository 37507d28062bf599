-- Notices that reach people (issue 28): an outbox with one delivery per notice, by email or
-- on paper, each delivered at most once.
--
-- The delivery of a notice is queued by the transaction that issues the notice (a trigger,
-- so every kind, written in Rust or in SQL, gets one). The channel is the member's choice:
-- `email` (the default) or `print` (a letter).

ALTER TABLE member ADD COLUMN notice_channel text NOT NULL DEFAULT 'email'
    CONSTRAINT member_notice_channel_known CHECK (notice_channel IN ('email', 'print'));

-- What letters and emails say about the library.
INSERT INTO library_setting (key, value) VALUES
    ('library_name', 'The Library'),
    ('library_contact', 'desk@library.test'),
    ('currency', 'EUR')
ON CONFLICT (key) DO NOTHING;

CREATE TABLE notice_delivery (
    notice_id  uuid PRIMARY KEY REFERENCES notice (id),
    channel    text NOT NULL CONSTRAINT notice_delivery_channel_known CHECK (channel IN ('email', 'print')),
    status     text NOT NULL DEFAULT 'queued'
        CONSTRAINT notice_delivery_status_known CHECK (status IN ('queued', 'sent', 'failed', 'skipped')),
    attempts   integer NOT NULL DEFAULT 0 CONSTRAINT notice_delivery_attempts_check CHECK (attempts >= 0),
    last_error text,
    queued_at  timestamptz NOT NULL,
    -- A failed attempt's retry time (backoff); NULL: at once.
    next_attempt_at timestamptz,
    -- Set while a send is in flight; a sender that finds it set after a crash cannot know
    -- whether the server accepted the message, and never sends it again (`failed`).
    in_flight_since timestamptz,
    sent_at    timestamptz,
    -- The subject and body as sent (or printed).
    subject    text,
    body       text,
    CONSTRAINT notice_delivery_sent_when_sent CHECK ((status = 'sent') = (sent_at IS NOT NULL)),
    CONSTRAINT notice_delivery_sent_with_text CHECK (status <> 'sent' OR body IS NOT NULL)
);
-- The queue of each channel, oldest first.
CREATE INDEX notice_delivery_queue ON notice_delivery (channel, queued_at) WHERE status = 'queued';

-- A restore loads notices and their deliveries as they were (under the maintenance switch).
CREATE FUNCTION notice_delivery_queue() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF current_setting('libctl.audit_maintenance', true) = 'on' THEN
        RETURN NULL;
    END IF;
    INSERT INTO notice_delivery (notice_id, channel, queued_at)
    SELECT NEW.id, m.notice_channel, NEW.created_at FROM member m WHERE m.id = NEW.member_id;
    RETURN NULL;
END $$;

CREATE TRIGGER notice_queues_its_delivery AFTER INSERT ON notice
    FOR EACH ROW EXECUTE FUNCTION notice_delivery_queue();

-- Notices issued before the outbox were handed over as files: nothing to send again.
INSERT INTO notice_delivery (notice_id, channel, status, queued_at, last_error)
SELECT n.id, m.notice_channel, 'skipped', n.created_at, 'issued before the outbox existed'
FROM notice n JOIN member m ON m.id = n.member_id;
