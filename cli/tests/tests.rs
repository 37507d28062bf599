//! CLI tests: the real `libctl` binary against a real PostgreSQL, one database per test.

#[path = "../../libcore/tests/support/mod.rs"]
mod support;
mod util;

mod approvals;
mod archive;
mod audit;
mod backup;
mod bench;
mod catalogue_and_members;
mod charts;
mod circulation;
mod connection;
mod database;
mod hardening;
mod holds;
mod identity;
mod items;
mod marc;
mod nightly;
mod notices;
mod output;
mod replica;
mod reports;
mod reviews;
mod seed;
