-- Tables, with their keys, checks, indexes and triggers, of the current schema, written from a fresh migration.
-- Generated: do not edit. Rewrite with `LIBCTL_WRITE_SCHEMA_SNAPSHOT=1 cargo test -p libcore --test tests schema_snapshot`.
-- The history is the migrations in sql/V*.sql.

CREATE TABLE account_entry (
    id uuid NOT NULL,
    member_id uuid NOT NULL,
    kind text NOT NULL,
    amount_cents bigint NOT NULL,
    created_at timestamp with time zone NOT NULL,
    note text,
    loan_id uuid
);
ALTER TABLE account_entry ADD CONSTRAINT account_entry_amount_cents_check CHECK ((amount_cents > 0));
ALTER TABLE account_entry ADD CONSTRAINT account_entry_kind_check CHECK ((kind = ANY (ARRAY['payment'::text, 'waiver'::text, 'lost_item'::text, 'processing_fee'::text, 'refund'::text])));
ALTER TABLE account_entry ADD CONSTRAINT account_entry_loan_charges_have_a_loan CHECK (((kind = ANY (ARRAY['payment'::text, 'waiver'::text])) OR (loan_id IS NOT NULL)));
ALTER TABLE account_entry ADD CONSTRAINT account_entry_member_id_fkey FOREIGN KEY (member_id) REFERENCES member(id);
ALTER TABLE account_entry ADD CONSTRAINT account_entry_pkey PRIMARY KEY (id);
CREATE INDEX account_entry_member_idx ON public.account_entry USING btree (member_id);
CREATE UNIQUE INDEX account_entry_one_per_loan_kind ON public.account_entry USING btree (loan_id, kind) WHERE (loan_id IS NOT NULL);
CREATE TRIGGER account_entry_loan_exists BEFORE INSERT OR UPDATE OF loan_id ON public.account_entry FOR EACH ROW EXECUTE FUNCTION loan_reference_exists();
CREATE TRIGGER account_entry_tally_delete AFTER DELETE ON public.account_entry REFERENCING OLD TABLE AS tally_old FOR EACH STATEMENT EXECUTE FUNCTION library_tally_ledger();
CREATE TRIGGER account_entry_tally_insert AFTER INSERT ON public.account_entry REFERENCING NEW TABLE AS tally_new FOR EACH STATEMENT EXECUTE FUNCTION library_tally_ledger();
CREATE TRIGGER account_entry_tally_update AFTER UPDATE ON public.account_entry REFERENCING OLD TABLE AS tally_old NEW TABLE AS tally_new FOR EACH STATEMENT EXECUTE FUNCTION library_tally_ledger();

CREATE TABLE audit_history (
    id uuid NOT NULL,
    at timestamp with time zone NOT NULL,
    recorded_at timestamp with time zone NOT NULL,
    actor text NOT NULL,
    actor_role text NOT NULL,
    action text NOT NULL,
    entity_type text,
    entity_id text,
    outcome text NOT NULL,
    details jsonb NOT NULL,
    db_user text
);
ALTER TABLE audit_history ADD CONSTRAINT audit_history_pkey PRIMARY KEY (id, at);
CREATE INDEX audit_history_actor_at_idx ON ONLY public.audit_history USING btree (actor, at) INCLUDE (action, outcome);
CREATE TRIGGER audit_history_no_truncate BEFORE TRUNCATE ON public.audit_history FOR EACH STATEMENT EXECUTE FUNCTION audit_log_append_only();
CREATE TRIGGER audit_history_no_update_delete BEFORE DELETE OR UPDATE ON public.audit_history FOR EACH ROW EXECUTE FUNCTION audit_log_append_only();

CREATE TABLE audit_log (
    id uuid NOT NULL,
    at timestamp with time zone NOT NULL,
    recorded_at timestamp with time zone NOT NULL DEFAULT clock_timestamp(),
    actor text NOT NULL,
    actor_role text NOT NULL,
    action text NOT NULL,
    entity_type text,
    entity_id text,
    outcome text NOT NULL,
    details jsonb NOT NULL DEFAULT '{}'::jsonb,
    db_user text DEFAULT SESSION_USER
);
ALTER TABLE audit_log ADD CONSTRAINT audit_log_outcome_check CHECK ((outcome = ANY (ARRAY['ok'::text, 'refused'::text, 'denied'::text, 'rate_limited'::text])));
ALTER TABLE audit_log ADD CONSTRAINT audit_log_pkey PRIMARY KEY (id);
CREATE INDEX audit_log_actor_at_idx ON public.audit_log USING btree (actor, at) INCLUDE (action, outcome);
CREATE TRIGGER audit_log_no_truncate BEFORE TRUNCATE ON public.audit_log FOR EACH STATEMENT EXECUTE FUNCTION audit_log_append_only();
CREATE TRIGGER audit_log_no_update_delete BEFORE DELETE OR UPDATE ON public.audit_log FOR EACH ROW EXECUTE FUNCTION audit_log_append_only();

CREATE TABLE audit_seal (
    day date NOT NULL,
    rows bigint NOT NULL,
    previous text NOT NULL,
    digest text NOT NULL,
    sealed_at timestamp with time zone NOT NULL DEFAULT clock_timestamp(),
    resealed boolean NOT NULL DEFAULT false
);
ALTER TABLE audit_seal ADD CONSTRAINT audit_seal_digest_check CHECK ((digest ~ '^[0-9a-f]{64}$'::text));
ALTER TABLE audit_seal ADD CONSTRAINT audit_seal_pkey PRIMARY KEY (day);
ALTER TABLE audit_seal ADD CONSTRAINT audit_seal_previous_check CHECK ((previous ~ '^[0-9a-f]{64}$'::text));
ALTER TABLE audit_seal ADD CONSTRAINT audit_seal_rows_check CHECK ((rows > 0));
CREATE TRIGGER audit_seal_no_truncate BEFORE TRUNCATE ON public.audit_seal FOR EACH STATEMENT EXECUTE FUNCTION audit_log_append_only();
CREATE TRIGGER audit_seal_no_update_delete BEFORE DELETE OR UPDATE ON public.audit_seal FOR EACH ROW EXECUTE FUNCTION audit_log_append_only();

CREATE TABLE book (
    id uuid NOT NULL,
    isbn text NOT NULL,
    title text NOT NULL,
    author text NOT NULL,
    genre text,
    category text NOT NULL DEFAULT 'standard'::text,
    total_copies integer NOT NULL,
    available_copies integer NOT NULL,
    created_at timestamp with time zone NOT NULL,
    rating_count integer NOT NULL DEFAULT 0,
    rating_sum bigint NOT NULL DEFAULT 0,
    times_borrowed bigint NOT NULL DEFAULT 0
);
ALTER TABLE book ADD CONSTRAINT book_author_check CHECK ((btrim(author) <> ''::text));
ALTER TABLE book ADD CONSTRAINT book_available_copies_check CHECK (((0 <= available_copies) AND (available_copies <= total_copies)));
ALTER TABLE book ADD CONSTRAINT book_category_check CHECK ((category = ANY (ARRAY['standard'::text, 'reference'::text, 'short_loan'::text])));
ALTER TABLE book ADD CONSTRAINT book_isbn_check CHECK ((isbn ~ '^97[89][0-9]{10}$'::text));
ALTER TABLE book ADD CONSTRAINT book_pkey PRIMARY KEY (id);
ALTER TABLE book ADD CONSTRAINT book_rating_count_check CHECK ((rating_count >= 0));
ALTER TABLE book ADD CONSTRAINT book_rating_sum_check CHECK ((rating_sum >= 0));
ALTER TABLE book ADD CONSTRAINT book_times_borrowed_check CHECK ((times_borrowed >= 0));
ALTER TABLE book ADD CONSTRAINT book_title_check CHECK ((btrim(title) <> ''::text));
ALTER TABLE book ADD CONSTRAINT book_total_copies_check CHECK (((total_copies >= 0) AND (total_copies <= 10000)));
CREATE UNIQUE INDEX book_isbn_key ON public.book USING btree (isbn);
CREATE INDEX book_search_trgm_idx ON public.book USING gin ((((title || ' '::text) || author)) gin_trgm_ops);
CREATE TRIGGER book_tally_delete AFTER DELETE ON public.book REFERENCING OLD TABLE AS tally_old FOR EACH STATEMENT EXECUTE FUNCTION library_tally_book();
CREATE TRIGGER book_tally_insert AFTER INSERT ON public.book REFERENCING NEW TABLE AS tally_new FOR EACH STATEMENT EXECUTE FUNCTION library_tally_book();
CREATE TRIGGER book_tally_update AFTER UPDATE ON public.book REFERENCING OLD TABLE AS tally_old NEW TABLE AS tally_new FOR EACH STATEMENT EXECUTE FUNCTION library_tally_book();

CREATE TABLE book_dropped_loans (
    book_id uuid NOT NULL,
    loans bigint NOT NULL
);
ALTER TABLE book_dropped_loans ADD CONSTRAINT book_dropped_loans_book_id_fkey FOREIGN KEY (book_id) REFERENCES book(id);
ALTER TABLE book_dropped_loans ADD CONSTRAINT book_dropped_loans_loans_check CHECK ((loans > 0));
ALTER TABLE book_dropped_loans ADD CONSTRAINT book_dropped_loans_pkey PRIMARY KEY (book_id);

CREATE TABLE calendar_stamp (
    only_row boolean NOT NULL DEFAULT true,
    stamp uuid NOT NULL DEFAULT gen_random_uuid()
);
ALTER TABLE calendar_stamp ADD CONSTRAINT calendar_stamp_only_row_check CHECK (only_row);
ALTER TABLE calendar_stamp ADD CONSTRAINT calendar_stamp_pkey PRIMARY KEY (only_row);

CREATE TABLE circulation_month (
    month date NOT NULL,
    loans bigint NOT NULL,
    returns bigint NOT NULL,
    late_returns bigint NOT NULL,
    active_members bigint NOT NULL
);
ALTER TABLE circulation_month ADD CONSTRAINT circulation_month_pkey PRIMARY KEY (month);

CREATE TABLE circulation_rule (
    category text NOT NULL,
    loan_days integer NOT NULL DEFAULT 14,
    max_active_loans integer NOT NULL DEFAULT 5,
    max_renewals integer NOT NULL DEFAULT 2,
    fine_cents_per_day bigint NOT NULL DEFAULT 100,
    grace_days integer NOT NULL DEFAULT 0,
    max_fine_cents_per_loan bigint NOT NULL DEFAULT 2000,
    block_fine_cents bigint NOT NULL DEFAULT 1000,
    block_overdue_days integer NOT NULL DEFAULT 30,
    max_holds integer NOT NULL DEFAULT 5,
    hold_pickup_days integer NOT NULL DEFAULT 7,
    courtesy_days integer NOT NULL DEFAULT 2,
    expiry_notice_days integer NOT NULL DEFAULT 30,
    lost_after_days integer NOT NULL DEFAULT 60,
    processing_fee_cents bigint NOT NULL DEFAULT 500,
    lost_refund_on_return boolean NOT NULL DEFAULT true,
    max_claims_returned integer NOT NULL DEFAULT 3,
    auto_renew boolean NOT NULL DEFAULT false
);
ALTER TABLE circulation_rule ADD CONSTRAINT circulation_rule_block_fine_cents_check CHECK ((block_fine_cents >= 0));
ALTER TABLE circulation_rule ADD CONSTRAINT circulation_rule_block_overdue_days_check CHECK ((block_overdue_days >= 0));
ALTER TABLE circulation_rule ADD CONSTRAINT circulation_rule_category_check CHECK ((category ~ '^[a-z][a-z0-9_]{0,31}$'::text));
ALTER TABLE circulation_rule ADD CONSTRAINT circulation_rule_courtesy_days_check CHECK (((courtesy_days >= 0) AND (courtesy_days <= 30)));
ALTER TABLE circulation_rule ADD CONSTRAINT circulation_rule_expiry_notice_days_check CHECK (((expiry_notice_days >= 0) AND (expiry_notice_days <= 365)));
ALTER TABLE circulation_rule ADD CONSTRAINT circulation_rule_fine_cents_per_day_check CHECK ((fine_cents_per_day >= 0));
ALTER TABLE circulation_rule ADD CONSTRAINT circulation_rule_grace_days_check CHECK ((grace_days >= 0));
ALTER TABLE circulation_rule ADD CONSTRAINT circulation_rule_hold_pickup_days_check CHECK (((hold_pickup_days >= 1) AND (hold_pickup_days <= 365)));
ALTER TABLE circulation_rule ADD CONSTRAINT circulation_rule_loan_days_check CHECK (((loan_days >= 1) AND (loan_days <= 365)));
ALTER TABLE circulation_rule ADD CONSTRAINT circulation_rule_lost_after_days_check CHECK (((lost_after_days >= 0) AND (lost_after_days <= 3650)));
ALTER TABLE circulation_rule ADD CONSTRAINT circulation_rule_max_active_loans_check CHECK (((max_active_loans >= 0) AND (max_active_loans <= 1000)));
ALTER TABLE circulation_rule ADD CONSTRAINT circulation_rule_max_claims_returned_check CHECK (((max_claims_returned >= 0) AND (max_claims_returned <= 100)));
ALTER TABLE circulation_rule ADD CONSTRAINT circulation_rule_max_fine_cents_per_loan_check CHECK ((max_fine_cents_per_loan >= 0));
ALTER TABLE circulation_rule ADD CONSTRAINT circulation_rule_max_holds_check CHECK (((max_holds >= 0) AND (max_holds <= 1000)));
ALTER TABLE circulation_rule ADD CONSTRAINT circulation_rule_max_renewals_check CHECK (((max_renewals >= 0) AND (max_renewals <= 100)));
ALTER TABLE circulation_rule ADD CONSTRAINT circulation_rule_pkey PRIMARY KEY (category);
ALTER TABLE circulation_rule ADD CONSTRAINT circulation_rule_processing_fee_cents_check CHECK (((processing_fee_cents >= 0) AND (processing_fee_cents <= 10000000)));

CREATE TABLE closed_day (
    day date NOT NULL,
    reason text
);
ALTER TABLE closed_day ADD CONSTRAINT closed_day_pkey PRIMARY KEY (day);
CREATE TRIGGER closed_day_renews_calendar_stamp AFTER INSERT OR DELETE OR UPDATE OR TRUNCATE ON public.closed_day FOR EACH STATEMENT EXECUTE FUNCTION calendar_stamp_renew();

CREATE TABLE hold (
    id uuid NOT NULL,
    book_id uuid NOT NULL,
    member_id uuid NOT NULL,
    placed_at timestamp with time zone NOT NULL,
    status text NOT NULL DEFAULT 'waiting'::text,
    item_id uuid,
    ready_at timestamp with time zone,
    pickup_by date,
    cancelled_at timestamp with time zone,
    fulfilled_at timestamp with time zone,
    expired_at timestamp with time zone
);
ALTER TABLE hold ADD CONSTRAINT hold_book_id_fkey FOREIGN KEY (book_id) REFERENCES book(id);
ALTER TABLE hold ADD CONSTRAINT hold_ended_after_placed CHECK ((COALESCE(cancelled_at, fulfilled_at, expired_at, placed_at) >= placed_at));
ALTER TABLE hold ADD CONSTRAINT hold_item_of_book FOREIGN KEY (book_id, item_id) REFERENCES item(book_id, id);
ALTER TABLE hold ADD CONSTRAINT hold_member_id_fkey FOREIGN KEY (member_id) REFERENCES member(id);
ALTER TABLE hold ADD CONSTRAINT hold_pkey PRIMARY KEY (id);
ALTER TABLE hold ADD CONSTRAINT hold_ready_after_placed CHECK ((ready_at >= placed_at));
ALTER TABLE hold ADD CONSTRAINT hold_state CHECK ((((status = 'waiting'::text) AND (item_id IS NULL) AND (ready_at IS NULL) AND (pickup_by IS NULL) AND (cancelled_at IS NULL) AND (fulfilled_at IS NULL) AND (expired_at IS NULL)) OR ((status = 'ready'::text) AND (item_id IS NOT NULL) AND (ready_at IS NOT NULL) AND (pickup_by IS NOT NULL) AND (cancelled_at IS NULL) AND (fulfilled_at IS NULL) AND (expired_at IS NULL)) OR ((status = 'fulfilled'::text) AND (item_id IS NOT NULL) AND (fulfilled_at IS NOT NULL) AND (cancelled_at IS NULL) AND (expired_at IS NULL)) OR ((status = 'cancelled'::text) AND (cancelled_at IS NOT NULL) AND (fulfilled_at IS NULL) AND (expired_at IS NULL)) OR ((status = 'expired'::text) AND (item_id IS NOT NULL) AND (ready_at IS NOT NULL) AND (pickup_by IS NOT NULL) AND (expired_at IS NOT NULL) AND (cancelled_at IS NULL) AND (fulfilled_at IS NULL))));
ALTER TABLE hold ADD CONSTRAINT hold_status_known CHECK ((status = ANY (ARRAY['waiting'::text, 'ready'::text, 'fulfilled'::text, 'cancelled'::text, 'expired'::text])));
CREATE INDEX hold_member_history ON public.hold USING btree (member_id, placed_at);
CREATE UNIQUE INDEX hold_one_live_per_member_title ON public.hold USING btree (member_id, book_id) WHERE (status = ANY (ARRAY['waiting'::text, 'ready'::text]));
CREATE UNIQUE INDEX hold_one_ready_per_item ON public.hold USING btree (item_id) WHERE (status = 'ready'::text);
CREATE INDEX hold_queue ON public.hold USING btree (book_id, placed_at, id) WHERE (status = 'waiting'::text);
CREATE INDEX hold_shelf ON public.hold USING btree (pickup_by, id) WHERE (status = 'ready'::text);

CREATE TABLE item (
    id uuid NOT NULL,
    book_id uuid NOT NULL,
    barcode text NOT NULL,
    status text NOT NULL DEFAULT 'available'::text,
    location text,
    call_number text,
    price_cents bigint,
    created_at timestamp with time zone NOT NULL,
    status_changed_at timestamp with time zone NOT NULL
);
ALTER TABLE item ADD CONSTRAINT item_barcode_form CHECK ((barcode ~ '^[A-Za-z0-9-]{1,32}$'::text));
ALTER TABLE item ADD CONSTRAINT item_barcode_key UNIQUE (barcode);
ALTER TABLE item ADD CONSTRAINT item_book_id_fkey FOREIGN KEY (book_id) REFERENCES book(id);
ALTER TABLE item ADD CONSTRAINT item_book_id_id_key UNIQUE (book_id, id);
ALTER TABLE item ADD CONSTRAINT item_pkey PRIMARY KEY (id);
ALTER TABLE item ADD CONSTRAINT item_price_cents_check CHECK ((price_cents >= 0));
ALTER TABLE item ADD CONSTRAINT item_status_known CHECK ((status = ANY (ARRAY['available'::text, 'on_loan'::text, 'on_hold_shelf'::text, 'missing'::text, 'damaged'::text, 'lost'::text, 'withdrawn'::text])));

CREATE TABLE library_setting (
    key text NOT NULL,
    value text NOT NULL
);
ALTER TABLE library_setting ADD CONSTRAINT library_setting_pkey PRIMARY KEY (key);
CREATE TRIGGER library_setting_renews_calendar_stamp AFTER INSERT OR DELETE OR UPDATE OR TRUNCATE ON public.library_setting FOR EACH STATEMENT EXECUTE FUNCTION calendar_stamp_renew();

CREATE TABLE library_tally (
    titles bigint NOT NULL DEFAULT 0,
    copies bigint NOT NULL DEFAULT 0,
    available_copies bigint NOT NULL DEFAULT 0,
    active_members bigint NOT NULL DEFAULT 0,
    open_loans bigint NOT NULL DEFAULT 0,
    loan_fine_cents bigint NOT NULL DEFAULT 0,
    archived_fine_cents bigint NOT NULL DEFAULT 0,
    ledger_cents bigint NOT NULL DEFAULT 0
);

CREATE TABLE loan (
    id uuid NOT NULL,
    book_id uuid NOT NULL,
    member_id uuid NOT NULL,
    borrowed_at timestamp with time zone NOT NULL,
    due_at timestamp with time zone NOT NULL,
    returned_at timestamp with time zone,
    renewals integer NOT NULL DEFAULT 0,
    fine_cents_per_day bigint NOT NULL,
    grace_days integer NOT NULL,
    max_fine_cents bigint NOT NULL,
    fine_cents bigint NOT NULL DEFAULT 0,
    fine_assessed_on date,
    item_id uuid,
    end_state text
);
ALTER TABLE loan ADD CONSTRAINT loan_book_id_fkey FOREIGN KEY (book_id) REFERENCES book(id);
ALTER TABLE loan ADD CONSTRAINT loan_due_after_borrowed CHECK ((due_at > borrowed_at));
ALTER TABLE loan ADD CONSTRAINT loan_end_state_known CHECK ((end_state = ANY (ARRAY['returned'::text, 'lost'::text, 'claims_returned'::text])));
ALTER TABLE loan ADD CONSTRAINT loan_end_state_when_ended CHECK (((returned_at IS NULL) = (end_state IS NULL)));
ALTER TABLE loan ADD CONSTRAINT loan_fine_cents_per_day_check CHECK ((fine_cents_per_day >= 0));
ALTER TABLE loan ADD CONSTRAINT loan_fine_within_cap CHECK (((fine_cents >= 0) AND (fine_cents <= max_fine_cents)));
ALTER TABLE loan ADD CONSTRAINT loan_grace_days_check CHECK ((grace_days >= 0));
ALTER TABLE loan ADD CONSTRAINT loan_item_of_book FOREIGN KEY (book_id, item_id) REFERENCES item(book_id, id);
ALTER TABLE loan ADD CONSTRAINT loan_max_fine_cents_check CHECK ((max_fine_cents >= 0));
ALTER TABLE loan ADD CONSTRAINT loan_member_id_fkey FOREIGN KEY (member_id) REFERENCES member(id);
ALTER TABLE loan ADD CONSTRAINT loan_open_has_item CHECK (((returned_at IS NOT NULL) OR (item_id IS NOT NULL)));
ALTER TABLE loan ADD CONSTRAINT loan_pkey PRIMARY KEY (id);
ALTER TABLE loan ADD CONSTRAINT loan_renewals_check CHECK ((renewals >= 0));
ALTER TABLE loan ADD CONSTRAINT loan_returned_after_borrowed CHECK (((returned_at IS NULL) OR (returned_at >= borrowed_at)));
CREATE INDEX loan_claims_returned ON public.loan USING btree (member_id) WHERE (end_state = 'claims_returned'::text);
CREATE INDEX loan_fined_member_idx ON public.loan USING btree (member_id) INCLUDE (fine_cents) WHERE (fine_cents > 0);
CREATE INDEX loan_item_history ON public.loan USING btree (item_id, borrowed_at, returned_at) WHERE (item_id IS NOT NULL);
CREATE INDEX loan_member_borrowed_idx ON public.loan USING btree (member_id, borrowed_at);
CREATE UNIQUE INDEX loan_one_open_per_item ON public.loan USING btree (item_id) WHERE (returned_at IS NULL);
CREATE UNIQUE INDEX loan_open_book_member_key ON public.loan USING btree (book_id, member_id) WHERE (returned_at IS NULL);
CREATE INDEX loan_open_due_idx ON public.loan USING btree (due_at) WHERE (returned_at IS NULL);
CREATE INDEX loan_open_member_idx ON public.loan USING btree (member_id) WHERE (returned_at IS NULL);
CREATE TRIGGER loan_tally_delete AFTER DELETE ON public.loan REFERENCING OLD TABLE AS tally_old FOR EACH STATEMENT EXECUTE FUNCTION library_tally_loan();
CREATE TRIGGER loan_tally_insert AFTER INSERT ON public.loan REFERENCING NEW TABLE AS tally_new FOR EACH STATEMENT EXECUTE FUNCTION library_tally_loan();
CREATE TRIGGER loan_tally_update AFTER UPDATE ON public.loan REFERENCING OLD TABLE AS tally_old NEW TABLE AS tally_new FOR EACH STATEMENT EXECUTE FUNCTION library_tally_loan();

CREATE TABLE loan_history (
    id uuid NOT NULL,
    book_id uuid NOT NULL,
    member_id uuid NOT NULL,
    borrowed_at timestamp with time zone NOT NULL,
    due_at timestamp with time zone NOT NULL,
    returned_at timestamp with time zone NOT NULL,
    renewals integer NOT NULL,
    fine_cents_per_day bigint NOT NULL,
    grace_days integer NOT NULL,
    max_fine_cents bigint NOT NULL,
    fine_cents bigint NOT NULL,
    fine_assessed_on date,
    item_id uuid,
    end_state text NOT NULL
);
ALTER TABLE loan_history ADD CONSTRAINT loan_history_end_state_known CHECK ((end_state = ANY (ARRAY['returned'::text, 'lost'::text, 'claims_returned'::text])));
ALTER TABLE loan_history ADD CONSTRAINT loan_history_pkey PRIMARY KEY (id, returned_at);
ALTER TABLE loan_history ADD CONSTRAINT loan_history_returned_after_borrowed CHECK ((returned_at >= borrowed_at));
CREATE INDEX loan_history_book_idx ON ONLY public.loan_history USING btree (book_id);
CREATE INDEX loan_history_item_idx ON ONLY public.loan_history USING btree (item_id, borrowed_at) WHERE (item_id IS NOT NULL);
CREATE INDEX loan_history_member_idx ON ONLY public.loan_history USING btree (member_id, borrowed_at);
CREATE TRIGGER loan_history_unchanged BEFORE DELETE OR UPDATE ON public.loan_history FOR EACH ROW EXECUTE FUNCTION history_unchanged();

CREATE TABLE member (
    id uuid NOT NULL,
    name text NOT NULL,
    email text NOT NULL,
    phone text,
    role text NOT NULL DEFAULT 'member'::text,
    category text NOT NULL,
    status text NOT NULL,
    created_at timestamp with time zone NOT NULL,
    expires_at timestamp with time zone,
    notice_channel text NOT NULL DEFAULT 'email'::text
);
ALTER TABLE member ADD CONSTRAINT member_category_fkey FOREIGN KEY (category) REFERENCES circulation_rule(category);
ALTER TABLE member ADD CONSTRAINT member_email_check CHECK ((POSITION(('@'::text) IN (email)) > 1));
ALTER TABLE member ADD CONSTRAINT member_name_check CHECK ((btrim(name) <> ''::text));
ALTER TABLE member ADD CONSTRAINT member_notice_channel_known CHECK ((notice_channel = ANY (ARRAY['email'::text, 'print'::text])));
ALTER TABLE member ADD CONSTRAINT member_pkey PRIMARY KEY (id);
ALTER TABLE member ADD CONSTRAINT member_role_check CHECK ((role = ANY (ARRAY['member'::text, 'librarian'::text, 'admin'::text])));
ALTER TABLE member ADD CONSTRAINT member_status_check CHECK ((status = ANY (ARRAY['pending'::text, 'active'::text, 'suspended'::text, 'closed'::text])));
CREATE UNIQUE INDEX member_email_key ON public.member USING btree (lower(email));
CREATE TRIGGER member_tally_delete AFTER DELETE ON public.member REFERENCING OLD TABLE AS tally_old FOR EACH STATEMENT EXECUTE FUNCTION library_tally_member();
CREATE TRIGGER member_tally_insert AFTER INSERT ON public.member REFERENCING NEW TABLE AS tally_new FOR EACH STATEMENT EXECUTE FUNCTION library_tally_member();
CREATE TRIGGER member_tally_update AFTER UPDATE ON public.member REFERENCING OLD TABLE AS tally_old NEW TABLE AS tally_new FOR EACH STATEMENT EXECUTE FUNCTION library_tally_member();

CREATE TABLE member_archived_fines (
    member_id uuid NOT NULL,
    fine_cents bigint NOT NULL
);
ALTER TABLE member_archived_fines ADD CONSTRAINT member_archived_fines_fine_cents_check CHECK ((fine_cents > 0));
ALTER TABLE member_archived_fines ADD CONSTRAINT member_archived_fines_member_id_fkey FOREIGN KEY (member_id) REFERENCES member(id);
ALTER TABLE member_archived_fines ADD CONSTRAINT member_archived_fines_pkey PRIMARY KEY (member_id);
CREATE TRIGGER member_archived_fines_tally_delete AFTER DELETE ON public.member_archived_fines REFERENCING OLD TABLE AS tally_old FOR EACH STATEMENT EXECUTE FUNCTION library_tally_archived_fines();
CREATE TRIGGER member_archived_fines_tally_insert AFTER INSERT ON public.member_archived_fines REFERENCING NEW TABLE AS tally_new FOR EACH STATEMENT EXECUTE FUNCTION library_tally_archived_fines();
CREATE TRIGGER member_archived_fines_tally_update AFTER UPDATE ON public.member_archived_fines REFERENCING OLD TABLE AS tally_old NEW TABLE AS tally_new FOR EACH STATEMENT EXECUTE FUNCTION library_tally_archived_fines();

CREATE TABLE member_login (
    login name NOT NULL,
    member_id uuid NOT NULL,
    grp text NOT NULL,
    created_at timestamp with time zone NOT NULL DEFAULT now()
);
ALTER TABLE member_login ADD CONSTRAINT member_login_grp_check CHECK ((grp = ANY (ARRAY['libctl_staff'::text, 'libctl_reader'::text])));
ALTER TABLE member_login ADD CONSTRAINT member_login_member_id_fkey FOREIGN KEY (member_id) REFERENCES member(id);
ALTER TABLE member_login ADD CONSTRAINT member_login_pkey PRIMARY KEY (login);
CREATE INDEX member_login_member_idx ON public.member_login USING btree (member_id);

CREATE TABLE nightly_run (
    day date NOT NULL,
    finished_at timestamp with time zone NOT NULL,
    summary jsonb NOT NULL
);
ALTER TABLE nightly_run ADD CONSTRAINT nightly_run_pkey PRIMARY KEY (day);

CREATE TABLE notice (
    id uuid NOT NULL,
    loan_id uuid,
    level smallint,
    member_id uuid NOT NULL,
    issued_on date NOT NULL,
    overdue_days integer,
    fine_cents bigint,
    created_at timestamp with time zone NOT NULL,
    kind text NOT NULL DEFAULT 'overdue'::text,
    hold_id uuid,
    key_date date,
    reason text,
    pending_handover boolean NOT NULL DEFAULT false
);
ALTER TABLE notice ADD CONSTRAINT notice_hold_id_fkey FOREIGN KEY (hold_id) REFERENCES hold(id);
ALTER TABLE notice ADD CONSTRAINT notice_kind_key CHECK ((((kind = 'overdue'::text) AND (loan_id IS NOT NULL) AND (level IS NOT NULL) AND (overdue_days IS NOT NULL) AND (fine_cents IS NOT NULL) AND (hold_id IS NULL)) OR ((kind = 'hold_ready'::text) AND (hold_id IS NOT NULL) AND (loan_id IS NULL) AND (level IS NULL)) OR ((kind = 'courtesy'::text) AND (loan_id IS NOT NULL) AND (key_date IS NOT NULL) AND (level IS NULL) AND (hold_id IS NULL)) OR ((kind = 'membership_expiring'::text) AND (key_date IS NOT NULL) AND (loan_id IS NULL) AND (level IS NULL) AND (hold_id IS NULL)) OR ((kind = 'auto_renewed'::text) AND (loan_id IS NOT NULL) AND (key_date IS NOT NULL) AND (level IS NULL) AND (hold_id IS NULL)) OR ((kind = 'auto_renew_failed'::text) AND (loan_id IS NOT NULL) AND (key_date IS NOT NULL) AND (reason IS NOT NULL) AND (level IS NULL) AND (hold_id IS NULL)) OR ((kind = 'lost_billed'::text) AND (loan_id IS NOT NULL) AND (fine_cents IS NOT NULL) AND (level IS NULL) AND (hold_id IS NULL))));
ALTER TABLE notice ADD CONSTRAINT notice_kind_known CHECK ((kind = ANY (ARRAY['overdue'::text, 'hold_ready'::text, 'courtesy'::text, 'membership_expiring'::text, 'auto_renewed'::text, 'auto_renew_failed'::text, 'lost_billed'::text])));
ALTER TABLE notice ADD CONSTRAINT notice_level_check CHECK (((level >= 1) AND (level <= 3)));
ALTER TABLE notice ADD CONSTRAINT notice_loan_id_fkey FOREIGN KEY (loan_id) REFERENCES loan(id);
ALTER TABLE notice ADD CONSTRAINT notice_loan_level_key UNIQUE (loan_id, level);
ALTER TABLE notice ADD CONSTRAINT notice_member_id_fkey FOREIGN KEY (member_id) REFERENCES member(id);
ALTER TABLE notice ADD CONSTRAINT notice_pkey PRIMARY KEY (id);
CREATE INDEX notice_member_idx ON public.notice USING btree (member_id);
CREATE UNIQUE INDEX notice_one_auto_renew_failure ON public.notice USING btree (loan_id, key_date) WHERE (kind = 'auto_renew_failed'::text);
CREATE UNIQUE INDEX notice_one_auto_renewal ON public.notice USING btree (loan_id, key_date) WHERE (kind = 'auto_renewed'::text);
CREATE UNIQUE INDEX notice_one_courtesy ON public.notice USING btree (loan_id, key_date) WHERE (kind = 'courtesy'::text);
CREATE UNIQUE INDEX notice_one_expiry ON public.notice USING btree (member_id, key_date) WHERE (kind = 'membership_expiring'::text);
CREATE UNIQUE INDEX notice_one_lost_bill ON public.notice USING btree (loan_id) WHERE (kind = 'lost_billed'::text);
CREATE UNIQUE INDEX notice_one_per_hold ON public.notice USING btree (hold_id) WHERE (kind = 'hold_ready'::text);
CREATE INDEX notice_pending_handover ON public.notice USING btree (issued_on) WHERE pending_handover;
CREATE TRIGGER notice_queues_its_delivery AFTER INSERT ON public.notice FOR EACH ROW EXECUTE FUNCTION notice_delivery_queue();

CREATE TABLE notice_delivery (
    notice_id uuid NOT NULL,
    channel text NOT NULL,
    status text NOT NULL DEFAULT 'queued'::text,
    attempts integer NOT NULL DEFAULT 0,
    last_error text,
    queued_at timestamp with time zone NOT NULL,
    next_attempt_at timestamp with time zone,
    in_flight_since timestamp with time zone,
    sent_at timestamp with time zone,
    subject text,
    body text
);
ALTER TABLE notice_delivery ADD CONSTRAINT notice_delivery_attempts_check CHECK ((attempts >= 0));
ALTER TABLE notice_delivery ADD CONSTRAINT notice_delivery_channel_known CHECK ((channel = ANY (ARRAY['email'::text, 'print'::text])));
ALTER TABLE notice_delivery ADD CONSTRAINT notice_delivery_notice_id_fkey FOREIGN KEY (notice_id) REFERENCES notice(id);
ALTER TABLE notice_delivery ADD CONSTRAINT notice_delivery_pkey PRIMARY KEY (notice_id);
ALTER TABLE notice_delivery ADD CONSTRAINT notice_delivery_sent_when_sent CHECK (((status = 'sent'::text) = (sent_at IS NOT NULL)));
ALTER TABLE notice_delivery ADD CONSTRAINT notice_delivery_sent_with_text CHECK (((status <> 'sent'::text) OR (body IS NOT NULL)));
ALTER TABLE notice_delivery ADD CONSTRAINT notice_delivery_status_known CHECK ((status = ANY (ARRAY['queued'::text, 'sent'::text, 'failed'::text, 'skipped'::text])));
CREATE INDEX notice_delivery_queue ON public.notice_delivery USING btree (channel, queued_at) WHERE (status = 'queued'::text);

CREATE TABLE notice_history (
    id uuid NOT NULL,
    loan_id uuid NOT NULL,
    level smallint,
    member_id uuid NOT NULL,
    issued_on date NOT NULL,
    overdue_days integer,
    fine_cents bigint,
    created_at timestamp with time zone NOT NULL,
    kind text NOT NULL,
    key_date date,
    reason text,
    loan_returned_at timestamp with time zone NOT NULL,
    delivery jsonb
);
ALTER TABLE notice_history ADD CONSTRAINT notice_history_pkey PRIMARY KEY (id, loan_returned_at);
CREATE INDEX notice_history_loan_idx ON ONLY public.notice_history USING btree (loan_id);
CREATE TRIGGER notice_history_unchanged BEFORE DELETE OR UPDATE ON public.notice_history FOR EACH ROW EXECUTE FUNCTION history_unchanged();

CREATE TABLE rate_limit_policy (
    role text NOT NULL,
    action_group text NOT NULL,
    limit_count integer NOT NULL,
    window_seconds integer NOT NULL,
    burst integer NOT NULL
);
ALTER TABLE rate_limit_policy ADD CONSTRAINT rate_limit_policy_action_group_check CHECK ((action_group = ANY (ARRAY['borrow'::text, 'mutation'::text])));
ALTER TABLE rate_limit_policy ADD CONSTRAINT rate_limit_policy_burst_check CHECK ((burst > 0));
ALTER TABLE rate_limit_policy ADD CONSTRAINT rate_limit_policy_limit_count_check CHECK ((limit_count > 0));
ALTER TABLE rate_limit_policy ADD CONSTRAINT rate_limit_policy_pkey PRIMARY KEY (role, action_group);
ALTER TABLE rate_limit_policy ADD CONSTRAINT rate_limit_policy_role_check CHECK ((role = ANY (ARRAY['member'::text, 'librarian'::text, 'admin'::text, 'any'::text])));
ALTER TABLE rate_limit_policy ADD CONSTRAINT rate_limit_policy_window_seconds_check CHECK ((window_seconds > 0));

CREATE TABLE recommendation (
    member_id uuid NOT NULL,
    rank integer NOT NULL,
    book_id uuid NOT NULL,
    score bigint NOT NULL,
    reason text NOT NULL
);
ALTER TABLE recommendation ADD CONSTRAINT recommendation_book_id_fkey FOREIGN KEY (book_id) REFERENCES book(id);
ALTER TABLE recommendation ADD CONSTRAINT recommendation_member_id_fkey FOREIGN KEY (member_id) REFERENCES member(id);
ALTER TABLE recommendation ADD CONSTRAINT recommendation_pkey PRIMARY KEY (member_id, rank);

CREATE TABLE request (
    id uuid NOT NULL,
    kind text NOT NULL,
    status text NOT NULL DEFAULT 'pending'::text,
    member_id uuid NOT NULL,
    book_id uuid,
    amount_cents bigint,
    field text,
    value text,
    reason text,
    filed_by text NOT NULL,
    filed_at timestamp with time zone NOT NULL,
    decided_by text,
    decided_at timestamp with time zone,
    decision_note text,
    result jsonb,
    loan_id uuid
);
ALTER TABLE request ADD CONSTRAINT request_amount_cents_check CHECK ((amount_cents > 0));
ALTER TABLE request ADD CONSTRAINT request_book_id_fkey FOREIGN KEY (book_id) REFERENCES book(id);
ALTER TABLE request ADD CONSTRAINT request_decided CHECK (((status = 'pending'::text) = (decided_at IS NULL)));
ALTER TABLE request ADD CONSTRAINT request_field_check CHECK ((field = ANY (ARRAY['name'::text, 'email'::text, 'phone'::text])));
ALTER TABLE request ADD CONSTRAINT request_kind_check CHECK ((kind = ANY (ARRAY['membership'::text, 'override'::text, 'waiver'::text, 'correction'::text])));
ALTER TABLE request ADD CONSTRAINT request_member_id_fkey FOREIGN KEY (member_id) REFERENCES member(id);
ALTER TABLE request ADD CONSTRAINT request_pkey PRIMARY KEY (id);
ALTER TABLE request ADD CONSTRAINT request_shape CHECK ((((kind = 'override'::text) AND ((book_id IS NOT NULL) OR (loan_id IS NOT NULL))) OR ((kind = 'waiver'::text) AND (amount_cents IS NOT NULL)) OR ((kind = 'correction'::text) AND (field IS NOT NULL) AND (value IS NOT NULL)) OR (kind = 'membership'::text)));
ALTER TABLE request ADD CONSTRAINT request_status_check CHECK ((status = ANY (ARRAY['pending'::text, 'approved'::text, 'rejected'::text, 'expired'::text])));
CREATE INDEX request_member_idx ON public.request USING btree (member_id);
CREATE INDEX request_pending_idx ON public.request USING btree (kind, filed_at) WHERE (status = 'pending'::text);
CREATE TRIGGER request_loan_exists BEFORE INSERT OR UPDATE OF loan_id ON public.request FOR EACH ROW EXECUTE FUNCTION loan_reference_exists();

CREATE TABLE review (
    id uuid NOT NULL,
    member_id uuid NOT NULL,
    book_id uuid NOT NULL,
    rating smallint NOT NULL,
    text text,
    created_at timestamp with time zone NOT NULL,
    updated_at timestamp with time zone NOT NULL
);
ALTER TABLE review ADD CONSTRAINT review_book_id_fkey FOREIGN KEY (book_id) REFERENCES book(id);
ALTER TABLE review ADD CONSTRAINT review_member_book_key UNIQUE (member_id, book_id);
ALTER TABLE review ADD CONSTRAINT review_member_id_fkey FOREIGN KEY (member_id) REFERENCES member(id);
ALTER TABLE review ADD CONSTRAINT review_pkey PRIMARY KEY (id);
ALTER TABLE review ADD CONSTRAINT review_rating_check CHECK (((rating >= 1) AND (rating <= 5)));
ALTER TABLE review ADD CONSTRAINT review_text_check CHECK ((char_length(text) <= 2000));
CREATE INDEX review_book_idx ON public.review USING btree (book_id, id);
