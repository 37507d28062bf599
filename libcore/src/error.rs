//! One error type for the whole library, with a stable machine code and the exit code of
//! SPEC §13, so the binary maps nothing by hand.

use std::fmt;

/// Result alias used throughout libcore.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Why a business rule refused an operation (exit 4). The string form is a stable contract:
/// scripts match on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Refusal {
    /// No copy of the book is on the shelf.
    NoCopyAvailable,
    /// The member already holds `max_active_loans` open loans.
    LoanLimitReached,
    /// The member already has this book out.
    DuplicateLoan,
    /// Outstanding fines or a long-overdue loan block the member.
    MemberBlocked,
    /// The member is not `active`.
    MemberNotActive,
    /// The membership has expired.
    MembershipExpired,
    /// The book's circulation category is not loanable (`reference`).
    NotLoanable,
    /// The loan has already been returned.
    AlreadyReturned,
    /// The loan has been renewed `max_renewals` times.
    RenewalLimitReached,
    /// An email address already belongs to another member.
    DuplicateEmail,
    /// An ISBN already belongs to another book.
    DuplicateIsbn,
    /// Fewer copies than are currently on loan.
    CopiesOnLoan,
    /// A payment larger than the outstanding balance.
    PaymentExceedsBalance,
    /// The request was already decided.
    RequestNotPending,
    /// A waiver larger than the outstanding balance.
    WaiverExceedsBalance,
    /// Another run of the same job holds its lock.
    JobAlreadyRunning,
    /// Seeding or restoring over existing data without `--replace`/`--force`.
    DatabaseNotEmpty,
    /// Restore target is not empty.
    TargetNotEmpty,
    /// The member has open loans or an outstanding balance and cannot be closed.
    MemberHasLoans,
    /// The member has not borrowed the book they try to review.
    NotBorrowed,
    /// A second review of the same book by the same member.
    DuplicateReview,
    /// `rate-limit audit --fail-on-violation` found violations.
    RateLimitViolations,
    /// A destructive command on a library (not a playground) without `--confirm`.
    ConfirmationRequired,
    /// The scanned item is not on the shelf (on loan, missing, …).
    ItemNotAvailable,
    /// The item is on loan or on the hold shelf, so its status cannot be set by hand.
    ItemInUse,
    /// A barcode already belongs to another item.
    DuplicateBarcode,
    /// The scanned item is on the hold shelf for another member.
    ItemOnHold,
    /// A hold was asked for while a copy is on the shelf: borrow it instead.
    CopyAvailable,
    /// The member already has a live hold on this title.
    DuplicateHold,
    /// The member already has `max_holds` live holds.
    HoldLimitReached,
    /// The member already has this title on loan.
    AlreadyOnLoan,
    /// Waiting holds on the title need the copy back.
    RenewalBlockedByHold,
    /// The hold is no longer waiting or ready.
    HoldNotLive,
    /// The member has made `max_claims_returned` claims; the next needs an override.
    ClaimsLimitReached,
    /// A lost-items run would mark more items than `--max-items` allows.
    TooManyItems,
}

impl Refusal {
    /// The stable machine code.
    pub fn as_str(self) -> &'static str {
        match self {
            Refusal::NoCopyAvailable => "no_copy_available",
            Refusal::LoanLimitReached => "loan_limit_reached",
            Refusal::DuplicateLoan => "duplicate_loan",
            Refusal::MemberBlocked => "member_blocked",
            Refusal::MemberNotActive => "member_not_active",
            Refusal::MembershipExpired => "membership_expired",
            Refusal::NotLoanable => "not_loanable",
            Refusal::AlreadyReturned => "already_returned",
            Refusal::RenewalLimitReached => "renewal_limit_reached",
            Refusal::DuplicateEmail => "duplicate_email",
            Refusal::DuplicateIsbn => "duplicate_isbn",
            Refusal::CopiesOnLoan => "copies_on_loan",
            Refusal::PaymentExceedsBalance => "payment_exceeds_balance",
            Refusal::RequestNotPending => "request_not_pending",
            Refusal::WaiverExceedsBalance => "waiver_exceeds_balance",
            Refusal::JobAlreadyRunning => "job_already_running",
            Refusal::DatabaseNotEmpty => "database_not_empty",
            Refusal::TargetNotEmpty => "target_not_empty",
            Refusal::MemberHasLoans => "member_has_loans",
            Refusal::NotBorrowed => "not_borrowed",
            Refusal::DuplicateReview => "duplicate_review",
            Refusal::RateLimitViolations => "rate_limit_violations",
            Refusal::ConfirmationRequired => "confirmation_required",
            Refusal::ItemNotAvailable => "item_not_available",
            Refusal::ItemInUse => "item_in_use",
            Refusal::DuplicateBarcode => "duplicate_barcode",
            Refusal::ItemOnHold => "item_on_hold",
            Refusal::CopyAvailable => "copy_available",
            Refusal::DuplicateHold => "duplicate_hold",
            Refusal::HoldLimitReached => "hold_limit_reached",
            Refusal::AlreadyOnLoan => "already_on_loan",
            Refusal::RenewalBlockedByHold => "renewal_blocked_by_hold",
            Refusal::HoldNotLive => "hold_not_live",
            Refusal::ClaimsLimitReached => "claims_limit_reached",
            Refusal::TooManyItems => "too_many_items",
        }
    }
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One bad row of an imported file.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct RowError {
    /// 1-based line number in the file (the header is line 1).
    pub line: u64,
    /// What is wrong with it.
    pub reason: String,
}

/// Every failure libcore reports. `code()` and `exit_code()` are the stable contract.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A named entity does not exist (exit 3).
    #[error("{what} not found: {key}")]
    NotFound {
        /// The kind of thing (`member`, `book`, `loan`, ...).
        what: &'static str,
        /// How it was looked up.
        key: String,
    },
    /// A business rule refused the operation (exit 4).
    #[error("{message}")]
    Refused {
        /// Which rule.
        reason: Refusal,
        /// A sentence for a person.
        message: String,
    },
    /// The actor may not do this (exit 5).
    #[error("{message}")]
    Denied {
        /// `permission_denied`, `self_approval`, `unknown_actor`, ...
        code: &'static str,
        /// A sentence for a person.
        message: String,
    },
    /// A rate limit was exceeded (exit 6).
    #[error("rate limited: {message}; retry in {retry_after_secs} s")]
    RateLimited {
        /// What limit.
        message: String,
        /// When a retry can succeed.
        retry_after_secs: u64,
    },
    /// Validation failed (exit 7).
    #[error("{message}")]
    Invalid {
        /// `invalid_input`, `invalid_isbn`, `invalid_email`, ...
        code: &'static str,
        /// A sentence for a person.
        message: String,
    },
    /// An import file had bad rows; nothing was written (exit 7).
    #[error("{} bad row(s), nothing imported: {}", rows.len(), summarize_rows(rows))]
    InvalidRows {
        /// Every bad row with its line number.
        rows: Vec<RowError>,
    },
    /// An integrity check found violations (exit 8).
    #[error("{} integrity violation(s): {}", violations.len(), violations.join("; "))]
    Integrity {
        /// One line per violation.
        violations: Vec<String>,
    },
    /// The database cannot be reached (exit 10).
    #[error("database unavailable: {0}")]
    Unavailable(String),
    /// The schema is missing or older than this binary (exit 10).
    #[error("{0}")]
    Schema(String),
    /// An unexpected database error (exit 1).
    #[error("database error: {}", describe_postgres_error(.0))]
    Database(#[from] postgres::Error),
    /// An I/O error (exit 1).
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The underlying error.
        source: std::io::Error,
    },
    /// A bug or an impossible state (exit 1).
    #[error("internal error: {0}")]
    Internal(String),
}

fn summarize_rows(rows: &[RowError]) -> String {
    let shown: Vec<String> = rows
        .iter()
        .take(20)
        .map(|r| format!("line {}: {}", r.line, r.reason))
        .collect();
    let more = rows.len().saturating_sub(shown.len());
    if more > 0 {
        format!("{}; and {more} more", shown.join("; "))
    } else {
        shown.join("; ")
    }
}

impl Error {
    /// The stable machine code printed as `error[CODE]`.
    pub fn code(&self) -> &'static str {
        match self {
            Error::NotFound { .. } => "not_found",
            Error::Refused { reason, .. } => reason.as_str(),
            Error::Denied { code, .. } => code,
            Error::RateLimited { .. } => "rate_limited",
            Error::Invalid { code, .. } => code,
            Error::InvalidRows { .. } => "invalid_input",
            Error::Integrity { .. } => "integrity_check_failed",
            Error::Unavailable(_) => "database_unavailable",
            Error::Schema(_) => "schema_outdated",
            Error::Database(e) if is_transient(e) => "transient_conflict",
            Error::Database(e) if is_unavailable(e) => "database_unavailable",
            Error::Database(e) if is_insufficient_privilege(e) => "insufficient_privilege",
            Error::Database(_) => "database_error",
            Error::Io { .. } => "io_error",
            Error::Internal(_) => "internal",
        }
    }

    /// The process exit code of SPEC §13.
    pub fn exit_code(&self) -> i32 {
        match self {
            Error::NotFound { .. } => 3,
            Error::Refused { .. } => 4,
            Error::Denied { .. } => 5,
            Error::RateLimited { .. } => 6,
            Error::Invalid { .. } | Error::InvalidRows { .. } => 7,
            Error::Integrity { .. } => 8,
            Error::Unavailable(_) | Error::Schema(_) => 10,
            Error::Database(e) if is_unavailable(e) => 10,
            Error::Database(e) if is_insufficient_privilege(e) => 5,
            Error::Database(_) | Error::Io { .. } | Error::Internal(_) => 1,
        }
    }

    /// The audit outcome this error stands for, if it is one a person caused
    /// (refused, denied, rate limited) rather than a fault.
    pub fn audit_outcome(&self) -> Option<&'static str> {
        match self {
            Error::Refused { .. }
            | Error::NotFound { .. }
            | Error::Invalid { .. }
            | Error::InvalidRows { .. } => Some("refused"),
            Error::Denied { .. } => Some("denied"),
            Error::RateLimited { .. } => Some("rate_limited"),
            _ => None,
        }
    }

    /// Shorthand for a refusal.
    pub fn refused(reason: Refusal, message: impl Into<String>) -> Self {
        Error::Refused {
            reason,
            message: message.into(),
        }
    }

    /// Shorthand for `permission_denied`.
    pub fn denied(message: impl Into<String>) -> Self {
        Error::Denied {
            code: "permission_denied",
            message: message.into(),
        }
    }

    /// Shorthand for `invalid_input` and its relatives.
    pub fn invalid(code: &'static str, message: impl Into<String>) -> Self {
        Error::Invalid {
            code,
            message: message.into(),
        }
    }

    /// Shorthand for not found.
    pub fn not_found(what: &'static str, key: impl Into<String>) -> Self {
        Error::NotFound {
            what,
            key: key.into(),
        }
    }

    /// Wraps an I/O error with what was being done.
    pub fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        Error::Io {
            context: context.into(),
            source,
        }
    }

    /// True for serialization failures and deadlocks, which are retried.
    pub fn is_transient(&self) -> bool {
        matches!(self, Error::Database(e) if is_transient(e))
    }
}

/// The server's own message (and detail) where there is one; postgres::Error's Display
/// says only "db error".
pub fn describe_postgres_error(e: &postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => match db.detail() {
            Some(detail) => format!("{} ({}): {detail}", db.message(), db.code().code()),
            None => format!("{} ({})", db.message(), db.code().code()),
        },
        // "error connecting to server" alone does not say why: the cause (connection
        // refused, a timeout, an unknown host, a TLS failure) is in the source chain.
        None => {
            let mut message = e.to_string();
            let mut source = std::error::Error::source(e);
            while let Some(cause) = source {
                let cause_text = cause.to_string();
                if !message.contains(&cause_text) {
                    message.push_str(": ");
                    message.push_str(&cause_text);
                }
                source = cause.source();
            }
            message
        }
    }
}

/// The server went away under the command: the connection closed, the server was shut down
/// or restarted (57P01–57P03), or the connection broke (class 08). Exit 10, like a server that
/// cannot be reached at all.
pub(crate) fn is_unavailable(e: &postgres::Error) -> bool {
    e.is_closed()
        || e.code().is_some_and(|c| {
            let code = c.code();
            code.starts_with("08") || matches!(code, "57P01" | "57P02" | "57P03")
        })
        || (e.as_db_error().is_none()
            && std::error::Error::source(e)
                .and_then(|s| s.downcast_ref::<std::io::Error>())
                .is_some())
}

/// SQLSTATE 40001 (serialization failure) and 40P01 (deadlock detected).
pub(crate) fn is_transient(e: &postgres::Error) -> bool {
    use postgres::error::SqlState;
    matches!(
        e.code(),
        Some(c) if *c == SqlState::T_R_SERIALIZATION_FAILURE || *c == SqlState::T_R_DEADLOCK_DETECTED
    )
}

/// SQLSTATE 42501: PostgreSQL's own privileges refused the statement (a read-only login that
/// tried to write, the append-only audit log). A denial like libctl's own (exit 5).
pub(crate) fn is_insufficient_privilege(e: &postgres::Error) -> bool {
    e.code() == Some(&postgres::error::SqlState::INSUFFICIENT_PRIVILEGE)
}
