-- Fewer 4M-row indexes: each one costs the seeder and a restore a second or two to build.
-- - loan(book_id, borrowed_at): its readers (inventory's never-borrowed, loans --book) do as well
--   with a hash anti-join or a scan, and books are never deleted, so the foreign key needs no index.
-- - audit_log(at): exports by time and the rate-limit audit read (actor, at) instead.
-- - The trigram index covers title and author; an ISBN is matched exactly after normalisation.
DROP INDEX loan_book_borrowed_idx;
DROP INDEX audit_log_at_idx;
DROP INDEX book_search_trgm_idx;
CREATE INDEX book_search_trgm_idx ON book USING gin ((title || ' ' || author) gin_trgm_ops);
