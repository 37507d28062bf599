//! Holds for the seeded library (SPEC §16): a queue on popular titles whose every copy is
//! out, copies on the hold shelf for members who asked, and a history of holds fulfilled,
//! cancelled and expired. Decided after the lending pass, before books and items are written,
//! because a copy on the hold shelf is neither on loan nor on the open shelf.
//!
//! Everything satisfies `db check`: a hold-shelf item has exactly one ready hold of its
//! title, and waiting holds sit only on titles with no copy on the open shelf.

use std::collections::{HashMap, HashSet};

use chrono::{DateTime, Duration, NaiveDate, Utc};
use libcore::ids::id_from_parts;
use rand::Rng;
use uuid::Uuid;

use super::{model, rng_for, LoanRow, Plan, Shelves, HOLD_STREAM};

/// One hold, referring to books, members and items by index.
#[derive(Debug, Clone, PartialEq)]
pub struct HoldRow {
    /// Primary key.
    pub id: Uuid,
    /// Index into the books.
    pub book: u32,
    /// Index into the members.
    pub member: u32,
    /// When it was placed.
    pub placed_at: DateTime<Utc>,
    /// `waiting`, `ready`, `fulfilled`, `cancelled` or `expired`.
    pub status: &'static str,
    /// The item trapped (ready, expired) or borrowed (fulfilled), an index into the items.
    pub item: Option<u32>,
    /// When its item was trapped.
    pub ready_at: Option<DateTime<Utc>>,
    /// The last day to collect it.
    pub pickup_by: Option<NaiveDate>,
    /// When it ended.
    pub ended_at: Option<DateTime<Utc>>,
}

/// The holds of a seed and the items they put on the hold shelf.
pub struct Holds {
    /// Every hold, in no particular order.
    pub rows: Vec<HoldRow>,
    /// Items on the hold shelf, off the open shelf.
    pub on_hold_shelf: HashSet<u32>,
}

/// Of the titles whose every copy is out, the share with a queue.
const QUEUED_TITLE_SHARE: f64 = 0.5;
/// Of the copies back on the shelf in the last days, the share trapped for a hold.
const TRAPPED_SHARE: f64 = 0.15;
/// Of the loans still out, the share that collected a hold.
const FULFILLED_SHARE: f64 = 0.1;
/// Holds that ended without a loan, per hundred loans of the history.
const ENDED_PER_HUNDRED_LOANS: usize = 1;
/// Days a seeded hold waits on the hold shelf (the rule default).
const PICKUP_DAYS: i32 = 7;

/// The live holds of each member, kept under the limit of five.
#[derive(Default)]
struct Live {
    per_member: HashMap<u32, i32>,
    taken: HashSet<(u32, u32)>,
}

impl Live {
    const LIMIT: i32 = 5;

    fn admits(&self, member: u32, book: u32) -> bool {
        self.per_member.get(&member).copied().unwrap_or(0) < Self::LIMIT
            && !self.taken.contains(&(member, book))
    }

    fn add(&mut self, member: u32, book: u32) {
        *self.per_member.entry(member).or_default() += 1;
        self.taken.insert((member, book));
    }
}

impl Plan {
    fn pickup_by(&self, ready_at: DateTime<Utc>) -> NaiveDate {
        self.calendar
            .open_days_after(self.calendar.local_date(ready_at), PICKUP_DAYS)
    }

    /// An active member who joined before `before` and has not `book` out or on hold; a few
    /// draws, then none.
    fn hold_member(
        &self,
        rng: &mut impl Rng,
        shelves: &Shelves,
        live: &Live,
        book: u32,
        before: DateTime<Utc>,
    ) -> Option<u32> {
        let eligible = self.members_before(before);
        (0..8).find_map(|_| {
            let m = model::sample_prefix(rng, &self.member_weights, eligible)? as u32;
            (self.members[m as usize].status == "active"
                && !shelves.held.contains(&(m, book))
                && live.admits(m, book))
            .then_some(m)
        })
    }

    /// Draws the holds of the seed from where the lending pass left every item.
    pub fn holds(&self, shelves: &Shelves, open: &[LoanRow]) -> Holds {
        let mut rng = rng_for(self.seed, HOLD_STREAM);
        let end = self.end_instant();
        let mut live = Live::default();
        let mut rows = Vec::new();
        let mut on_hold_shelf = HashSet::new();

        // Copies back on the shelf in the last days: some were trapped for a member.
        let recent = (end - Duration::days(i64::from(PICKUP_DAYS) - 2)).timestamp_micros();
        for b in 0..self.books.len() as u32 {
            if !self.loanable(b) {
                continue;
            }
            for item in self.items_of(b) {
                let back = shelves.changed_at[item as usize];
                if shelves.free_from[item as usize] == Shelves::OUT
                    || back < recent
                    || !rng.random_bool(TRAPPED_SHARE)
                {
                    continue;
                }
                let ready_at = DateTime::from_timestamp_micros(back).expect("a return's time");
                let placed_at = ready_at - Duration::hours(rng.random_range(24..24 * 30));
                let Some(member) = self.hold_member(&mut rng, shelves, &live, b, placed_at) else {
                    continue;
                };
                live.add(member, b);
                on_hold_shelf.insert(item);
                rows.push(HoldRow {
                    id: id_from_parts(placed_at, rng.random()),
                    book: b,
                    member,
                    placed_at,
                    status: "ready",
                    item: Some(item),
                    ready_at: Some(ready_at),
                    pickup_by: Some(self.pickup_by(ready_at)),
                    ended_at: None,
                });
                break;
            }
        }

        // Titles with no copy on the open shelf: a queue, placed after the last copy went out.
        let mut last_out: HashMap<u32, DateTime<Utc>> = HashMap::new();
        for loan in open {
            let t = last_out.entry(loan.book).or_insert(loan.borrowed_at);
            *t = (*t).max(loan.borrowed_at);
        }
        for b in 0..self.books.len() as u32 {
            let items = self.items_of(b);
            let none_free = !items.is_empty()
                && items.clone().all(|i| {
                    shelves.free_from[i as usize] == Shelves::OUT || on_hold_shelf.contains(&i)
                });
            let Some(&since) = last_out.get(&b) else {
                continue;
            };
            if !none_free || !self.loanable(b) || !rng.random_bool(QUEUED_TITLE_SHARE) {
                continue;
            }
            let span = (end - since).num_seconds().max(2);
            for _ in 0..rng.random_range(1..=4) {
                let placed_at = since + Duration::seconds(rng.random_range(1..span));
                let Some(member) = self.hold_member(&mut rng, shelves, &live, b, placed_at) else {
                    continue;
                };
                live.add(member, b);
                rows.push(HoldRow {
                    id: id_from_parts(placed_at, rng.random()),
                    book: b,
                    member,
                    placed_at,
                    status: "waiting",
                    item: None,
                    ready_at: None,
                    pickup_by: None,
                    ended_at: None,
                });
            }
        }

        // Loans still out that began as a hold: collected from the hold shelf.
        for loan in open {
            if !rng.random_bool(FULFILLED_SHARE) {
                continue;
            }
            let member_since = self.members[loan.member as usize].created_at;
            let ready_at = loan.borrowed_at - Duration::hours(rng.random_range(1..24 * 5));
            let placed_at = ready_at - Duration::hours(rng.random_range(24..24 * 30));
            if placed_at < member_since {
                continue;
            }
            rows.push(HoldRow {
                id: id_from_parts(placed_at, rng.random()),
                book: loan.book,
                member: loan.member,
                placed_at,
                status: "fulfilled",
                item: Some(loan.item),
                ready_at: Some(ready_at),
                pickup_by: Some(self.pickup_by(ready_at)),
                ended_at: Some(loan.borrowed_at),
            });
        }

        // Holds that ended without a loan, over the last year: cancelled while waiting, or
        // never collected from the hold shelf.
        let ended = self.scenario.loans * ENDED_PER_HUNDRED_LOANS / 100;
        let year = Duration::days(365).num_seconds();
        for _ in 0..ended {
            let Some(b) = model::sample_prefix(&mut rng, &self.book_weights, self.books.len())
            else {
                break;
            };
            let b = b as u32;
            if !self.loanable(b) || self.items_of(b).is_empty() {
                continue;
            }
            let placed_at = end - Duration::seconds(rng.random_range(30 * 86_400..year));
            let Some(m) = model::sample_prefix(
                &mut rng,
                &self.member_weights,
                self.members_before(placed_at),
            ) else {
                continue;
            };
            let m = m as u32;
            let row = if rng.random_bool(0.5) {
                HoldRow {
                    id: id_from_parts(placed_at, rng.random()),
                    book: b,
                    member: m,
                    placed_at,
                    status: "cancelled",
                    item: None,
                    ready_at: None,
                    pickup_by: None,
                    ended_at: Some(placed_at + Duration::hours(rng.random_range(1..24 * 20))),
                }
            } else {
                let items = self.items_of(b);
                let item = rng.random_range(items.start..items.end);
                let ready_at = placed_at + Duration::hours(rng.random_range(1..24 * 20));
                let pickup_by = self.pickup_by(ready_at);
                HoldRow {
                    id: id_from_parts(placed_at, rng.random()),
                    book: b,
                    member: m,
                    placed_at,
                    status: "expired",
                    item: Some(item),
                    ready_at: Some(ready_at),
                    pickup_by: Some(pickup_by),
                    ended_at: Some(self.calendar.end_of_day(pickup_by) + Duration::seconds(1)),
                }
            };
            rows.push(row);
        }
        Holds {
            rows,
            on_hold_shelf,
        }
    }
}
