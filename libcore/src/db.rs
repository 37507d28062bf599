//! Connections, migrations, schema gating, status and the invariant check (SPEC §3, §5).

use postgres::Client;
use serde::Serialize;

use crate::error::{Error, Result};

mod embedded {
    refinery::embed_migrations!("../sql");
}

/// The URL used when neither `--database-url` nor `DATABASE_URL` is given.
pub const DEFAULT_URL: &str = "postgres://postgres@127.0.0.1:5432/library";

/// Every table of the schema, in dependency order: `db status` counts them and backups carry
/// them (a test checks that none is missing).
pub const TABLES: &[&str] = &[
    "library_setting",
    "circulation_rule",
    "closed_day",
    "member",
    "book",
    "item",
    "loan",
    "hold",
    "account_entry",
    "audit_log",
    "notice",
    "notice_delivery",
    "circulation_month",
    "request",
    "rate_limit_policy",
    "review",
    "recommendation",
    "member_login",
    "audit_seal",
    "nightly_run",
    "loan_history",
    "notice_history",
    "audit_history",
    "member_archived_fines",
    "book_dropped_loans",
];

/// Every data table any schema version has had, in load order, with the migration that
/// created it and the one that dropped it: a backup of an older version lists exactly the
/// tables of its version, and a restore of it loads them.
pub const TABLE_HISTORY: &[(&str, i32, Option<i32>)] = &[
    ("library_setting", 1, None),
    ("circulation_rule", 1, None),
    ("closed_day", 1, None),
    ("member", 1, None),
    ("book", 1, None),
    ("item", 20, None),
    ("loan", 1, None),
    ("hold", 21, None),
    ("account_entry", 1, None),
    ("audit_log", 1, None),
    ("notice", 2, None),
    ("circulation_month", 2, None),
    ("request", 3, None),
    ("rate_limit_policy", 4, None),
    ("rate_limit_policy_saved", 11, Some(16)),
    ("review", 6, None),
    ("recommendation", 6, None),
    ("member_login", 17, None),
    ("audit_seal", 18, None),
    ("nightly_run", 23, None),
    ("notice_delivery", 24, None),
    ("member_archived_fines", 25, None),
    ("book_dropped_loans", 25, None),
    ("loan_history", 25, None),
    ("notice_history", 25, None),
    ("audit_history", 25, None),
];

/// The tables partitioned by month (V25). A backup carries each of their partitions as a
/// table of its own, `<parent>_yYYYYmMM`, and never the parent.
pub const PARTITIONED: &[&str] = &["loan_history", "notice_history", "audit_history"];

/// The parent and month of a partition's name (`loan_history_y2024m03`), if it is one.
pub fn partition_of(name: &str) -> Option<(&'static str, chrono::NaiveDate)> {
    let (parent, suffix) = name.rsplit_once("_y")?;
    let parent = PARTITIONED.iter().find(|p| **p == parent)?;
    let (year, month) = suffix.split_once('m')?;
    if year.len() != 4 || month.len() != 2 {
        return None;
    }
    let month = chrono::NaiveDate::from_ymd_opt(year.parse().ok()?, month.parse().ok()?, 1)?;
    Some((parent, month))
}

/// The partition of `parent` holding `month` (its first day).
pub fn partition_name(parent: &str, month: chrono::NaiveDate) -> String {
    format!("{parent}{}", month.format("_y%Ym%m"))
}

/// The data tables of schema version `version`, in load order.
pub fn tables_at(version: i32) -> Vec<&'static str> {
    TABLE_HISTORY
        .iter()
        .filter(|(_, since, until)| *since <= version && !matches!(until, Some(u) if version >= *u))
        .map(|(t, _, _)| *t)
        .collect()
}

/// Tables that hold no library data, only state derived from it: backups leave them out and
/// status does not count them. `calendar_stamp` (V15) is renewed by any write to the calendar,
/// a restore's or a seed's included; `library_tally` (V26) is recounted by the seed and the
/// restore once their rows are in (`tally::reset_in`).
pub const DERIVED_TABLES: &[&str] = &["calendar_stamp", "library_tally"];

/// The schema version this binary was built with.
pub fn latest_version() -> i32 {
    embedded::migrations::runner()
        .get_migrations()
        .iter()
        .map(|m| m.version() as i32)
        .max()
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    #[test]
    fn urls() {
        assert_eq!(
            super::redact_url("postgres://u:secret@h:5/db"),
            "postgres://u:***@h:5/db"
        );
        assert_eq!(
            super::redact_url("postgres://u@h:5/db?sslmode=require&password=s3cret&x=1"),
            "postgres://u@h:5/db?sslmode=require&password=***&x=1"
        );
        assert_eq!(
            super::redact_url("postgres://u:a@b@h/db?password=z"),
            "postgres://u:***@h/db?password=***"
        );
        assert_eq!(
            super::redact_url("host=h password=s3cret dbname=x"),
            "host=h password=*** dbname=x"
        );
        assert_eq!(
            super::redact_url("host=h password = 'se cr\\'et' dbname=x"),
            "host=h password = *** dbname=x"
        );
        assert_eq!(
            super::redact_url("host=h mypassword=ok"),
            "host=h mypassword=ok"
        );
        assert_eq!(
            super::url_with_database("postgres://u@h:5/db?sslmode=disable", "x"),
            "postgres://u@h:5/x?sslmode=disable"
        );
        assert_eq!(
            super::url_with_database("postgres://u@h:5", "x"),
            "postgres://u@h:5/x"
        );
    }
}

pub use crate::conninfo::redact_url;

/// Connects, mapping every connection failure to exit 10 with the password hidden.
pub fn connect(url: &str) -> Result<Client> {
    connect_to(&crate::conninfo::parse(url)?, url)
}

fn connect_to(target: &crate::conninfo::Conninfo, url: &str) -> Result<Client> {
    target.connect().map_err(|failure| match failure {
        crate::conninfo::ConnectFailure::Tls(message) => {
            Error::Unavailable(format!("{}: {message}", redact_url(url)))
        }
        crate::conninfo::ConnectFailure::Postgres(e) => {
            let hint = if e.code() == Some(&postgres::error::SqlState::INVALID_CATALOG_NAME) {
                "; run `libctl db init` to create it"
            } else {
                ""
            };
            Error::Unavailable(format!(
                "{}: {}{hint}",
                redact_url(url),
                crate::error::describe_postgres_error(&e)
            ))
        }
    })
}

/// Connects and refuses a database whose schema is missing, older or newer than this binary.
pub fn connect_current(url: &str) -> Result<Client> {
    let mut client = connect(url)?;
    require_current_schema(&mut client)?;
    Ok(client)
}

/// The applied schema version, or `None` when the database has no libctl schema.
pub fn applied_version(client: &mut Client) -> Result<Option<i32>> {
    let has_history: bool = client
        .query_one(
            "SELECT to_regclass('refinery_schema_history') IS NOT NULL",
            &[],
        )?
        .get(0);
    if !has_history {
        return Ok(None);
    }
    Ok(client
        .query_one("SELECT max(version) FROM refinery_schema_history", &[])?
        .get(0))
}

/// A database state marker (`seeding`, `restoring`) left by an interrupted bulk job.
pub fn incomplete_marker(client: &mut Client) -> Result<Option<String>> {
    Ok(client
        .query_opt(
            "SELECT value FROM library_setting WHERE key = 'incomplete'",
            &[],
        )?
        .map(|r| r.get(0)))
}

/// The exit-10 gate every command but `db init`/`db migrate` passes through.
pub fn require_current_schema(client: &mut Client) -> Result<()> {
    let latest = latest_version();
    match applied_version(client)? {
        None => Err(Error::Schema(
            "this database has no libctl schema; run `libctl db init`".into(),
        )),
        Some(v) if v < latest => Err(Error::Schema(format!(
            "schema version {v} is older than this binary's {latest}; run `libctl db migrate`"
        ))),
        Some(v) if v > latest => Err(Error::Schema(format!(
            "schema version {v} is newer than this binary's {latest}; upgrade libctl"
        ))),
        Some(_) => match incomplete_marker(client)? {
            Some(what) => Err(Error::Schema(format!(
                "this database is incomplete: a {what} did not finish; restore or re-seed it"
            ))),
            None => Ok(()),
        },
    }
}

/// A failed migration, with the database's own words: refinery's message alone says only
/// "db error".
fn migration_failed(e: refinery::Error) -> Error {
    let mut message = format!("migration failed: {e}");
    let mut source = std::error::Error::source(&e);
    while let Some(cause) = source {
        message.push_str(&format!(": {cause}"));
        source = cause.source();
    }
    Error::Schema(message)
}

/// Applies every pending migration. Idempotent. Returns the versions applied now.
pub fn migrate(client: &mut Client) -> Result<Vec<i32>> {
    let report = embedded::migrations::runner()
        .set_abort_divergent(true)
        .run(client)
        .map_err(migration_failed)?;
    apply_privileges(client)?;
    Ok(report
        .applied_migrations()
        .iter()
        .map(|m| m.version() as i32)
        .collect())
}

/// Applies migrations up to `version` (a restore matches the backup's schema).
pub fn migrate_to(client: &mut Client, version: i32) -> Result<()> {
    embedded::migrations::runner()
        .set_abort_divergent(true)
        .set_target(refinery::Target::Version(version.max(0) as u32))
        .run(client)
        .map_err(migration_failed)?;
    apply_privileges(client)?;
    Ok(())
}

/// Applies the privilege model of V17 (`libctl_apply_privileges`) to every table, function and
/// type, so tables added by later migrations get their grants too. Only a superuser can hand
/// objects to `libctl_owner`; for anyone else, and before V17, this does nothing and the
/// database stays a single-login one.
pub fn apply_privileges(client: &mut Client) -> Result<()> {
    let may: bool = client
        .query_one(
            "SELECT to_regprocedure('libctl_apply_privileges()') IS NOT NULL
                    AND (SELECT rolsuper FROM pg_roles WHERE rolname = current_user)",
            &[],
        )?
        .get(0);
    if may {
        client.batch_execute("SELECT libctl_apply_privileges()")?;
    }
    Ok(())
}

/// The database named in `url`, and a connection to the server's `postgres` database (where
/// databases are created and dropped).
fn maintenance_client(url: &str) -> Result<(String, Client)> {
    let mut target = crate::conninfo::parse(url)?;
    let name = target
        .config
        .get_dbname()
        .ok_or_else(|| {
            Error::invalid("invalid_database_url", "the database URL names no database")
        })?
        .to_string();
    target.config.dbname("postgres");
    let client = connect_to(&target, url)?;
    Ok((name, client))
}

/// The database named in `url`.
pub fn database_name(url: &str) -> Result<String> {
    crate::conninfo::parse(url)?
        .config
        .get_dbname()
        .map(str::to_string)
        .ok_or_else(|| Error::invalid("invalid_database_url", "the database URL names no database"))
}

/// True when the database named in `url` exists on its server.
pub fn database_exists(url: &str) -> Result<bool> {
    let (name, mut client) = maintenance_client(url)?;
    Ok(client
        .query_opt("SELECT 1 FROM pg_database WHERE datname = $1", &[&name])?
        .is_some())
}

/// Puts the database at `staging_url` in the place of the one at `target_url`, in one
/// transaction on the server: the target (if any) is renamed to `replaced_url`'s name and the
/// staging database to the target's. Sessions still connected to either are ended first, as
/// `DROP DATABASE … WITH (FORCE)` would; the server waits a few seconds for them to go, and a
/// session that connects in between makes the swap try again.
pub fn swap_databases(target_url: &str, staging_url: &str, replaced_url: &str) -> Result<()> {
    let (target, mut client) = maintenance_client(target_url)?;
    let staging = database_name(staging_url)?;
    let replaced = database_name(replaced_url)?;
    let mut tries = 0;
    loop {
        let mut tx = client.transaction()?;
        tx.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity
             WHERE datname IN ($1, $2) AND pid <> pg_backend_pid()",
            &[&target, &staging],
        )?;
        let target_exists = tx
            .query_opt("SELECT 1 FROM pg_database WHERE datname = $1", &[&target])?
            .is_some();
        // ALTER DATABASE takes no parameters; the server quotes the names with format(%I).
        let renames: String = tx
            .query_one(
                "SELECT CASE WHEN $4 THEN format('ALTER DATABASE %I RENAME TO %I; ', $1::text, $2::text) ELSE '' END
                        || format('ALTER DATABASE %I RENAME TO %I', $3::text, $1::text)",
                &[&target, &replaced, &staging, &target_exists],
            )?
            .get(0);
        let renamed = tx.batch_execute(&renames).and_then(|()| tx.commit());
        match renamed {
            Ok(()) => return Ok(()),
            Err(e) if e.code() == Some(&postgres::error::SqlState::OBJECT_IN_USE) && tries < 5 => {
                tries += 1;
                std::thread::sleep(std::time::Duration::from_millis(200));
            }
            Err(e) => return Err(e.into()),
        }
    }
}

/// Creates the database named in `url` if it does not exist. Returns true if it created it.
pub fn create_database_if_missing(url: &str) -> Result<bool> {
    let (name, mut client) = maintenance_client(url)?;
    let exists = client
        .query_opt("SELECT 1 FROM pg_database WHERE datname = $1", &[&name])?
        .is_some();
    if exists {
        return Ok(false);
    }
    // CREATE DATABASE takes no parameters; the server quotes the name with format(%I).
    let create: String = client
        .query_one("SELECT format('CREATE DATABASE %I', $1::text)", &[&name])?
        .get(0);
    match client.batch_execute(&create) {
        Ok(()) => Ok(true),
        // Another process created it between the check and the CREATE.
        Err(e) if e.code() == Some(&postgres::error::SqlState::DUPLICATE_DATABASE) => Ok(false),
        Err(e) => Err(e.into()),
    }
}

/// The same URL naming another database (for scratch databases beside the configured one).
pub fn url_with_database(url: &str, database: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (url, None),
    };
    let prefix = match base.split_once("://") {
        Some((scheme, rest)) => match rest.split_once('/') {
            Some((authority, _)) => format!("{scheme}://{authority}"),
            None => base.to_string(),
        },
        None => base.to_string(),
    };
    match query {
        Some(q) => format!("{prefix}/{database}?{q}"),
        None => format!("{prefix}/{database}"),
    }
}

/// Drops the database named in `url` if it exists (used for scratch databases).
pub fn drop_database_if_exists(url: &str) -> Result<()> {
    let (name, mut client) = maintenance_client(url)?;
    let drop: String = client
        .query_one(
            "SELECT format('DROP DATABASE IF EXISTS %I WITH (FORCE)', $1::text)",
            &[&name],
        )?
        .get(0);
    client.batch_execute(&drop)?;
    Ok(())
}

/// Row counts and schema state for `db status`.
#[derive(Debug, Clone, Serialize)]
pub struct Status {
    /// Applied schema version (`None` when uninitialised).
    pub schema_version: Option<i32>,
    /// This binary's schema version.
    pub binary_schema_version: i32,
    /// `ok`, `uninitialised`, `outdated`, `newer`, or `incomplete (...)`.
    pub state: String,
    /// Row count per table.
    pub tables: Vec<TableCount>,
}

/// One table's row count.
#[derive(Debug, Clone, Serialize)]
pub struct TableCount {
    /// Table name.
    pub table: String,
    /// Exact row count.
    pub rows: i64,
}

/// Reads the schema state and row counts.
pub fn status(client: &mut Client) -> Result<Status> {
    let latest = latest_version();
    let version = applied_version(client)?;
    let mut state = match version {
        None => "uninitialised".to_string(),
        Some(v) if v < latest => "outdated".to_string(),
        Some(v) if v > latest => "newer".to_string(),
        Some(_) => "ok".to_string(),
    };
    let mut tables = Vec::new();
    if version.is_some() {
        let incomplete = incomplete_marker(client)?;
        if let Some(what) = &incomplete {
            state = format!("incomplete ({what} interrupted)");
        }
        for table in TABLES {
            // Table names come from the fixed list above, never from input.
            let exists: bool = client
                .query_one("SELECT to_regclass($1) IS NOT NULL", &[table])?
                .get(0);
            if exists {
                let rows: i64 = client
                    .query_one(&format!("SELECT count(*) FROM {table}"), &[])?
                    .get(0);
                tables.push(TableCount {
                    table: table.to_string(),
                    rows,
                });
            }
        }
    }
    Ok(Status {
        schema_version: version,
        binary_schema_version: latest,
        state,
        tables,
    })
}

/// One invariant and the SQL that lists its violations (one text column per violation).
struct Invariant {
    name: &'static str,
    sql: &'static str,
}

const INVARIANTS: &[Invariant] = &[
    Invariant {
        name: "book counters equal the counts of its items",
        sql: "SELECT format('book %s: total_copies %s, available_copies %s; items owned %s, on the shelf %s', b.id, b.total_copies, b.available_copies, coalesce(i.owned, 0), coalesce(i.available, 0))
              FROM book b LEFT JOIN (SELECT book_id, count(*) FILTER (WHERE status NOT IN ('withdrawn', 'lost')) AS owned,
                                            count(*) FILTER (WHERE status = 'available') AS available
                                     FROM item GROUP BY book_id) i ON i.book_id = b.id
              WHERE b.total_copies <> coalesce(i.owned, 0) OR b.available_copies <> coalesce(i.available, 0)",
    },
    Invariant {
        name: "an item is on_loan exactly when it has an open loan",
        sql: "SELECT format('item %s (%s) is %s with %s open loans', i.barcode, i.id, i.status, coalesce(o.n, 0))
              FROM item i LEFT JOIN (SELECT item_id, count(*) AS n FROM loan
                                     WHERE returned_at IS NULL AND item_id IS NOT NULL GROUP BY item_id) o ON o.item_id = i.id
              WHERE (i.status = 'on_loan') <> (coalesce(o.n, 0) > 0)",
    },
    Invariant {
        name: "every open loan has an item of its book",
        sql: "SELECT format('open loan %s of book %s has item %s of book %s', l.id, l.book_id, l.item_id, i.book_id)
              FROM loan l LEFT JOIN item i ON i.id = l.item_id
              WHERE l.returned_at IS NULL AND (i.id IS NULL OR i.book_id <> l.book_id)",
    },
    Invariant {
        name: "no item has two loans whose periods overlap",
        // History included: a loan archived last night still may not overlap today's.
        sql: "SELECT format('item %s: a loan from %s began before the loan before it ended (%s)', item_id, borrowed_at, coalesce(previous_end::text, 'still open'))
              FROM (SELECT item_id, borrowed_at,
                           lag(returned_at) OVER w AS previous_end,
                           lag(true) OVER w AS has_previous
                    FROM loan_all WHERE item_id IS NOT NULL
                    WINDOW w AS (PARTITION BY item_id ORDER BY borrowed_at, returned_at)) l
              WHERE has_previous AND (previous_end IS NULL OR previous_end > borrowed_at)",
    },
    Invariant {
        name: "an item is on_hold_shelf exactly when one ready hold names it",
        sql: "SELECT format('item %s (%s) is %s and %s ready holds name it', i.barcode, i.id, i.status, coalesce(h.n, 0))
              FROM item i LEFT JOIN (SELECT item_id, count(*) AS n FROM hold
                                     WHERE status = 'ready' GROUP BY item_id) h ON h.item_id = i.id
              WHERE (i.status = 'on_hold_shelf') <> (coalesce(h.n, 0) = 1) OR coalesce(h.n, 0) > 1",
    },
    Invariant {
        name: "a ready hold's item belongs to its title",
        sql: "SELECT format('ready hold %s on book %s holds item %s of book %s', h.id, h.book_id, h.item_id, i.book_id)
              FROM hold h LEFT JOIN item i ON i.id = h.item_id
              WHERE h.status = 'ready' AND (i.id IS NULL OR i.book_id <> h.book_id)",
    },
    Invariant {
        // Members who are not in good standing (suspended, expired, blocked) are skipped at
        // trapping, so their waiting holds may sit beside a copy on the shelf.
        name: "no title has a waiting hold of a member in good standing while a copy is on the shelf",
        sql: "SELECT format('book %s: hold %s of member %s waits while item %s is available', h.book_id, h.id, h.member_id, i.barcode)
              FROM hold h
              JOIN LATERAL (SELECT barcode FROM item WHERE book_id = h.book_id AND status = 'available' LIMIT 1) i ON true
              WHERE h.status = 'waiting' AND member_in_good_standing(h.member_id, now())",
    },
    Invariant {
        name: "no member over the loan limit",
        sql: "SELECT format('member %s: %s open loans, limit %s', m.id, o.n, r.max_active_loans)
              FROM (SELECT member_id, count(*) AS n FROM loan WHERE returned_at IS NULL GROUP BY member_id) o
              JOIN member m ON m.id = o.member_id JOIN circulation_rule r ON r.category = m.category
              WHERE o.n > r.max_active_loans",
    },
    Invariant {
        name: "no duplicate open loans",
        sql: "SELECT format('member %s holds book %s %s times', member_id, book_id, count(*))
              FROM loan WHERE returned_at IS NULL GROUP BY member_id, book_id HAVING count(*) > 1",
    },
    Invariant {
        name: "returned_at >= borrowed_at",
        sql: "SELECT format('loan %s returned %s before borrowed %s', id, returned_at, borrowed_at)
              FROM loan WHERE returned_at < borrowed_at",
    },
    Invariant {
        name: "borrowed_at >= member.created_at",
        sql: "SELECT format('loan %s borrowed %s before member %s existed (%s)', l.id, l.borrowed_at, m.id, m.created_at)
              FROM loan_all l JOIN member m ON m.id = l.member_id WHERE l.borrowed_at < m.created_at",
    },
    Invariant {
        name: "fines within their caps",
        sql: "SELECT format('loan %s: fine %s above cap %s', id, fine_cents, max_fine_cents)
              FROM loan_all WHERE fine_cents > max_fine_cents OR fine_cents < 0",
    },
    Invariant {
        name: "times_borrowed equals the loans of each book, history and dropped months included",
        sql: "SELECT format('book %s: times_borrowed %s, loans %s', b.id, b.times_borrowed, coalesce(l.n, 0) + coalesce(d.loans, 0))
              FROM book b LEFT JOIN (SELECT book_id, count(*) AS n FROM loan_all GROUP BY book_id) l ON l.book_id = b.id
              LEFT JOIN book_dropped_loans d ON d.book_id = b.id
              WHERE b.times_borrowed <> coalesce(l.n, 0) + coalesce(d.loans, 0)",
    },
    Invariant {
        name: "book rating aggregates equal their recount",
        sql: "SELECT format('book %s: rating_count %s, rating_sum %s; recount %s, %s', b.id, b.rating_count, b.rating_sum, coalesce(r.n, 0), coalesce(r.s, 0))
              FROM book b LEFT JOIN (SELECT book_id, count(*) AS n, sum(rating) AS s FROM review GROUP BY book_id) r ON r.book_id = b.id
              WHERE b.rating_count <> coalesce(r.n, 0) OR b.rating_sum <> coalesce(r.s, 0)",
    },
    Invariant {
        name: "payments and waivers never exceed the charges (fines, replacements, fees)",
        sql: "SELECT format('member %s: charges %s, payments and waivers %s', c.member_id, coalesce(f.total, 0) + c.charged, c.credited)
              FROM (SELECT member_id,
                           sum(amount_cents) FILTER (WHERE kind IN ('lost_item', 'processing_fee')) AS charged,
                           coalesce(sum(amount_cents) FILTER (WHERE kind IN ('payment', 'waiver')), 0) AS credited
                    FROM account_entry GROUP BY member_id) c
              LEFT JOIN (SELECT member_id, sum(fine_cents) AS total
                         FROM (SELECT member_id, fine_cents FROM loan WHERE fine_cents > 0
                               UNION ALL SELECT member_id, fine_cents FROM member_archived_fines) x
                         GROUP BY member_id) f
                ON f.member_id = c.member_id
              WHERE c.credited > coalesce(f.total, 0) + coalesce(c.charged, 0)",
    },
    Invariant {
        name: "replacement charges and fees belong to loans that ended lost, refunds to their charge",
        sql: "SELECT format('account entry %s (%s) of loan %s: the loan ended %s', a.id, a.kind, a.loan_id, coalesce(l.end_state, 'open'))
              FROM account_entry a JOIN loan_all l ON l.id = a.loan_id
              WHERE a.kind IN ('lost_item', 'processing_fee', 'refund')
                AND (l.end_state IS DISTINCT FROM 'lost' OR l.member_id <> a.member_id)
              UNION ALL
              SELECT format('refund %s of loan %s: %s cents, more than its replacement charge of %s', r.id, r.loan_id, r.amount_cents, coalesce(c.amount_cents, 0))
              FROM account_entry r
              LEFT JOIN account_entry c ON c.loan_id = r.loan_id AND c.kind = 'lost_item'
              WHERE r.kind = 'refund' AND r.amount_cents > coalesce(c.amount_cents, 0)",
    },
    Invariant {
        name: "a lost item's latest loan ended lost",
        sql: "SELECT format('item %s is lost, but its latest loan %s ended %s', i.barcode, l.id, coalesce(l.end_state, 'open'))
              FROM item i
              LEFT JOIN LATERAL (SELECT id, end_state FROM loan_all WHERE item_id = i.id
                                 ORDER BY borrowed_at DESC LIMIT 1) l ON true
              WHERE i.status = 'lost' AND l.end_state IS DISTINCT FROM 'lost'",
    },
    Invariant {
        name: "every loan a ledger entry or request names exists, hot or in history",
        sql: "SELECT format('%s %s names loan %s, which does not exist', t, id, loan_id)
              FROM (SELECT 'account entry' AS t, id, loan_id FROM account_entry WHERE loan_id IS NOT NULL
                    UNION ALL SELECT 'request', id, loan_id FROM request WHERE loan_id IS NOT NULL) r
              WHERE NOT EXISTS (SELECT 1 FROM loan_all l WHERE l.id = r.loan_id)
                AND NOT EXISTS (SELECT 1 FROM book_dropped_loans)",
    },
    Invariant {
        name: "no loan is both hot and in history",
        sql: "SELECT format('loan %s is in loan and in loan_history', l.id)
              FROM loan l JOIN loan_history h ON h.id = l.id",
    },
    Invariant {
        name: "archived fines cover the fines of the loans in history",
        sql: "SELECT format('member %s: %s cents of fines in history, %s archived', h.member_id, h.total, coalesce(f.fine_cents, 0))
              FROM (SELECT member_id, sum(fine_cents) AS total FROM loan_history WHERE fine_cents > 0 GROUP BY member_id) h
              LEFT JOIN member_archived_fines f ON f.member_id = h.member_id
              WHERE h.total > coalesce(f.fine_cents, 0)",
    },
    Invariant {
        name: "the running totals of library_tally equal their recount",
        sql: "SELECT format('%s: the tally says %s, the tables %s', t.key, t.value, r.value)
              FROM json_each_text(row_to_json(library_tally_total())) t
              JOIN json_each_text(row_to_json(library_tally_recount())) r USING (key)
              WHERE t.value <> r.value",
    },
    Invariant {
        name: "every trigger is enabled",
        sql: "SELECT format('trigger %s on %s is disabled', t.tgname, t.tgrelid::regclass)
              FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid
              WHERE NOT t.tgisinternal AND t.tgenabled = 'D'
                AND c.relnamespace = current_schema()::regnamespace",
    },
];

/// The outcome of one invariant.
#[derive(Debug, Clone, Serialize)]
pub struct InvariantResult {
    /// What is checked.
    pub invariant: String,
    /// Number of violations.
    pub violations: i64,
    /// Up to 20 of them, described.
    pub examples: Vec<String>,
}

/// Checks the schema against this binary's snapshot (`sql/current/objects.txt`) and every
/// invariant of SPEC §5 over the whole database.
pub fn check(client: &mut Client) -> Result<Vec<InvariantResult>> {
    check_against(client, &crate::schema::expected())
}

/// [`check`] against the schema objects `expected` (a restore passes the catalog of the
/// backup's schema version, fresh from its own migration).
pub fn check_against(client: &mut Client, expected: &[String]) -> Result<Vec<InvariantResult>> {
    // One snapshot, so a concurrent borrow cannot show up as a violation.
    let mut tx = client
        .build_transaction()
        .read_only(true)
        .isolation_level(postgres::IsolationLevel::RepeatableRead)
        .start()?;
    // The data's guards first: without its keys, the data below could hold anything.
    let differences = crate::schema::differences(expected, &crate::schema::objects(&mut tx)?);
    let mut results = vec![InvariantResult {
        invariant: "the schema has every key, index and trigger its migrations create".into(),
        violations: differences.len() as i64,
        examples: differences.into_iter().take(20).collect(),
    }];
    for inv in INVARIANTS {
        let rows = tx.query(inv.sql, &[])?;
        results.push(InvariantResult {
            invariant: inv.name.to_string(),
            violations: rows.len() as i64,
            examples: rows.iter().take(20).map(|r| r.get(0)).collect(),
        });
    }
    tx.commit()?;
    Ok(results)
}

/// Fails with exit 8 listing every violation found by [`check`].
pub fn fail_on_violations(results: &[InvariantResult]) -> Result<()> {
    let violations: Vec<String> = results
        .iter()
        .flat_map(|r| {
            r.examples
                .iter()
                .map(move |e| format!("{}: {e}", r.invariant))
        })
        .collect();
    if violations.is_empty() {
        Ok(())
    } else {
        Err(Error::Integrity { violations })
    }
}
