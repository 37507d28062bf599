//! # libcore: every business rule of libctl
//!
//! libcore runs a library's circulation on PostgreSQL through the synchronous `postgres`
//! client. The `libctl` binary only parses arguments, calls these functions and renders
//! what they return; everything that decides anything lives here.
//!
//! ## A borrow, end to end
//!
//! ```no_run
//! use libcore::{actor, circulation, db};
//!
//! let mut client = db::connect_current("postgres://postgres@127.0.0.1:5432/library")?;
//! let ctx = actor::resolve(&mut client, Some("desk@library.test"), None)?;
//! let loan = circulation::borrow(&mut client, &ctx, "reader@example.org", "9780306406157")?;
//! println!("due {}", loan.due_at);
//! # Ok::<(), libcore::Error>(())
//! ```
//!
//! ## Map
//!
//! - [`db`]: connections, migrations, the schema gate (exit 10), `db status`, `db check`.
//! - [`schema`]: the keys, indexes and triggers the migrations create, checked by `db check`.
//! - [`cluster`]: the embedded PostgreSQL used when none is configured.
//! - [`actor`]: who is acting and what their role allows.
//! - [`audit`]: the transaction runner every mutation goes through, and the audit log.
//! - [`catalog`], [`members`]: books and people.
//! - [`items`]: the physical copies of a title, with barcodes and statuses.
//! - [`marc`]: MARC 21 records in and out (ISO 2709 and MARCXML).
//! - [`circulation`]: borrow, return, renew.
//! - [`approvals`]: requests decided by a second person.
//! - [`calendar`], [`fines`], [`policy`]: due dates, fines and the rules behind them.
//! - [`ledger`]: what members owe and pay, as typed entries, and the one balance rule.
//! - [`lost`]: lost items, claims returned, and lost items found again.
//! - [`holds`], [`hold_queue`]: holds, and the queue that traps returned copies for them.
//! - [`notices`], [`jobs`]: notices and the nightly pipeline.
//! - [`outbox`]: each notice's delivery, by email or letter, rendered from its template.
//! - [`playground`]: whether a database is a seeded playground or a library, for the commands
//!   that replace or churn everything.
//! - [`reports`]: read-only, streaming reports; [`charts`] draws them as SVG, and
//!   [`report_page`] puts them on one self-contained HTML page.
//! - [`replica`]: the checks a streaming replica passes before read-only commands use it.
//! - [`reviews`]: reviews, ratings and recommendations.
//! - [`ratelimit`]: sliding-window rate limits over the audit log, and their audit.
//! - [`binary_copy`]: PostgreSQL's binary COPY format, written by the seeder and counted by backups.
//! - [`backup`]: consistent parallel backups, verification, retention.
//! - [`restore`]: a backup becomes the target whole, or the target stays as it was.
//! - [`loan_ref`]: how a command names a loan.
//! - [`error`]: one error type with stable codes and exit codes.
#![warn(missing_docs)]

pub mod actor;
pub mod approvals;
pub mod archive;
pub mod audit;
pub mod backup;
pub mod barcode;
pub mod binary_copy;
pub mod bulk;
pub mod calendar;
pub mod catalog;
pub mod charts;
pub mod circulation;
pub mod cluster;
pub mod conninfo;
pub mod db;
pub mod error;
pub mod fines;
pub mod history;
pub mod hold_queue;
pub mod holds;
pub mod ids;
mod import;
pub mod items;
mod joblock;
pub mod jobs;
pub mod ledger;
pub mod loan_ref;
pub mod logins;
pub mod lost;
pub mod marc;
pub mod members;
pub mod notices;
pub mod outbox;
pub mod page;
pub mod pg;
pub mod playground;
pub mod policy;
pub mod ratelimit;
pub mod replica;
pub mod report_page;
pub mod reports;
pub mod restore;
pub mod reviews;
pub mod schema;
pub mod session;
pub mod tally;
pub mod validate;

pub use error::{Error, Refusal, Result, RowError};
pub use import::ImportSummary;
/// The synchronous PostgreSQL client every libcore function takes.
pub use postgres::Client;
