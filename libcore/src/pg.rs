//! Small helpers for talking to PostgreSQL that several capabilities share: telling which
//! unique key a write ran into, and quoting a search term for LIKE.

/// True when `e` is a unique violation of `constraint`: a duplicate the caller turns into its
/// own refusal (`duplicate_isbn`, `duplicate_email`, …) instead of a database error.
pub fn is_unique_violation(e: &postgres::Error, constraint: &str) -> bool {
    e.as_db_error().is_some_and(|db| {
        db.code() == &postgres::error::SqlState::UNIQUE_VIOLATION
            && db.constraint() == Some(constraint)
    })
}

/// Escapes LIKE wildcards so user text matches literally.
pub fn escape_like(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('%', "\\%")
        .replace('_', "\\_")
}
