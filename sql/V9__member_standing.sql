-- A member's standing for circulation's rules: their payments and credits, their open loans
-- and their returned loans that still carry a fine. One row per such loan; one row with NULL
-- loan columns when there are none.
--
-- Borrow, return and renew call it in the same statement that locks the member:
--   SELECT … FROM (SELECT … FROM member … FOR UPDATE) m CROSS JOIN LATERAL member_standing(m.id)
-- The function runs for the row only once the lock is granted, and as a VOLATILE PL/pgSQL
-- function its query takes a fresh snapshot, so it sees every loan and payment committed by
-- whoever held the lock before (a sub-select in the locking statement itself would still see
-- the snapshot taken before the wait). PL/pgSQL also keeps the query's plan for the session.
CREATE FUNCTION member_standing(p_member uuid)
RETURNS TABLE (credits_cents bigint, loan_id uuid, book_id uuid, due_at timestamptz, returned_at timestamptz,
               fine_cents bigint, fine_cents_per_day bigint, grace_days integer,
               max_fine_cents bigint, renewals integer)
LANGUAGE plpgsql VOLATILE AS $$
BEGIN
    RETURN QUERY
        SELECT c.credits, l.id, l.book_id, l.due_at, l.returned_at, l.fine_cents,
               l.fine_cents_per_day, l.grace_days, l.max_fine_cents, l.renewals
        FROM (SELECT coalesce(sum(a.amount_cents), 0)::bigint AS credits
              FROM account_entry a WHERE a.member_id = p_member) c
        LEFT JOIN loan l
               ON l.member_id = p_member AND (l.returned_at IS NULL OR l.fine_cents > 0);
END $$;
