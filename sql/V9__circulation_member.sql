-- Borrow, return and renew start by locking the member (named, or found from one of their
-- loans when p_member is NULL); this function does that and reads,
-- in the same round trip, everything their rules need: the member, their circulation rule,
-- the library's time zone and closed days, their payments, the fines stored on all their
-- loans (`loan_fined_member_idx` answers that index-only), and their open loans: one row per
-- open loan, one row with NULL loan columns when there is none, no row when there is no such
-- member.
--
-- A borrow names its book (p_book): the book is locked right after the member, in the same
-- call, and its category, free copies and title come back on every row (NULL when there is no
-- such book). The open loans carry their book's category, which a renewal needs.
--
-- The read is a statement of its own after the lock. A VOLATILE PL/pgSQL function gives each
-- statement a fresh snapshot, so it sees every loan and payment committed by whoever held the
-- lock before us (a sub-select in the locking statement itself would still see the snapshot
-- taken before the wait). PL/pgSQL also keeps both plans for the session, where a statement
-- sent from the client would be parsed and planned on every call.
CREATE FUNCTION circulation_member(p_member uuid, p_loan uuid, p_book uuid)
RETURNS TABLE (member_id uuid, email text, status text, created_at timestamptz, expires_at timestamptz,
               category text, loan_days integer, max_active_loans integer,
               max_renewals integer, fine_cents_per_day bigint, grace_days integer,
               max_fine_cents_per_loan bigint, block_fine_cents bigint,
               block_overdue_days integer, credits_cents bigint, stored_fines_cents bigint,
               timezone text, closed_days date[],
               loan_id uuid, loan_book_id uuid, loan_borrowed_at timestamptz,
               loan_due_at timestamptz, loan_fine_cents bigint,
               loan_fine_cents_per_day bigint, loan_grace_days integer,
               loan_max_fine_cents bigint, loan_renewals integer, loan_book_category text,
               book_category text, book_available_copies integer, book_title text)
LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    v_book_category text;
    v_book_available integer;
    v_book_title text;
BEGIN
    IF p_member IS NULL THEN
        SELECT l.member_id INTO p_member FROM loan l WHERE l.id = p_loan;
    END IF;
    PERFORM 1 FROM member m WHERE m.id = p_member FOR UPDATE;
    IF FOUND AND p_book IS NOT NULL THEN
        SELECT b.category, b.available_copies, b.title
        INTO v_book_category, v_book_available, v_book_title
        FROM book b WHERE b.id = p_book FOR UPDATE;
    END IF;
    RETURN QUERY
        SELECT m.id, m.email, m.status, m.created_at, m.expires_at,
               r.category, r.loan_days, r.max_active_loans, r.max_renewals,
               r.fine_cents_per_day, r.grace_days, r.max_fine_cents_per_loan,
               r.block_fine_cents, r.block_overdue_days,
               (SELECT coalesce(sum(a.amount_cents), 0)::bigint
                FROM account_entry a WHERE a.member_id = p_member),
               (SELECT coalesce(sum(f.fine_cents), 0)::bigint
                FROM loan f WHERE f.member_id = p_member AND f.fine_cents > 0),
               (SELECT library_timezone()),
               ARRAY(SELECT d.day FROM closed_day d ORDER BY d.day),
               l.id, l.book_id, l.borrowed_at, l.due_at, l.fine_cents,
               l.fine_cents_per_day, l.grace_days, l.max_fine_cents, l.renewals, lb.category,
               v_book_category, v_book_available, v_book_title
        FROM member m
        JOIN circulation_rule r ON r.category = m.category
        LEFT JOIN loan l ON l.member_id = m.id AND l.returned_at IS NULL
        LEFT JOIN book lb ON lb.id = l.book_id
        WHERE m.id = p_member;
END $$;
