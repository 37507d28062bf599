//! libcore integration tests: one binary (linking is slow on 2 cores), one module per area.

mod support;

mod approvals;
mod archive;
mod circulation;
mod concurrency;
mod fines;
mod history;
mod holds;
mod imports;
mod items;
mod lost;
mod marc;
mod nightly;
mod outbox;
mod ratelimit;
mod reviews;
mod schema;
