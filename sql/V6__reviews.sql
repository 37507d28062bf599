-- Reviews and ratings (one per member and book), the book's aggregate kept exact by the
-- transaction that writes a review, and precomputed recommendations.
ALTER TABLE book
    ADD COLUMN rating_count integer NOT NULL DEFAULT 0 CHECK (rating_count >= 0),
    ADD COLUMN rating_sum   bigint  NOT NULL DEFAULT 0 CHECK (rating_sum >= 0),
    -- Loans ever made of this title, counted by the same UPDATE that takes the copy (the row is
    -- locked anyway): "never borrowed" without an index on loan(book_id).
    ADD COLUMN times_borrowed bigint NOT NULL DEFAULT 0 CHECK (times_borrowed >= 0);
UPDATE book b SET times_borrowed = (SELECT count(*) FROM loan l WHERE l.book_id = b.id);

CREATE TABLE review (
    id         uuid PRIMARY KEY,
    member_id  uuid NOT NULL REFERENCES member (id),
    book_id    uuid NOT NULL REFERENCES book (id),
    rating     smallint NOT NULL CHECK (rating BETWEEN 1 AND 5),
    text       text CHECK (char_length(text) <= 2000),
    created_at timestamptz NOT NULL,
    updated_at timestamptz NOT NULL,
    CONSTRAINT review_member_book_key UNIQUE (member_id, book_id)
);
CREATE INDEX review_book_idx ON review (book_id, id);

-- Refreshed by `recommend refresh` (set-based), read by `recommend`.
CREATE TABLE recommendation (
    member_id uuid NOT NULL REFERENCES member (id),
    rank      integer NOT NULL,
    book_id   uuid NOT NULL REFERENCES book (id),
    score     bigint NOT NULL,
    reason    text NOT NULL,
    PRIMARY KEY (member_id, rank)
);
