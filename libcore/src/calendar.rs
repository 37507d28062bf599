//! The library calendar: its time zone and its closed days.
//!
//! Due dates and overdue days are calendar days in the library's time zone, not 24-hour
//! spans, so a loan crossing a DST change or a midnight in UTC still counts the days a
//! librarian would count. A loan is due at the last second of its due date, library time.

use std::collections::BTreeSet;

use chrono::{DateTime, Days, NaiveDate, TimeZone, Utc};
use chrono_tz::Tz;
use postgres::GenericClient;

use crate::error::{Error, Result};

/// The time zone and closed days that every due-date and fine computation needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Calendar {
    /// The library's time zone.
    pub tz: Tz,
    closed: BTreeSet<NaiveDate>,
}

impl Calendar {
    /// Refuses (exit 7) an as-of date after today in library time. Jobs and reports know only
    /// the past: a nightly run "as of" next year would assess fines and send notices for loans
    /// not yet due, and every real run after it would find nothing left to do.
    pub fn require_not_future(&self, as_of: NaiveDate) -> Result<()> {
        let today = self.local_date(chrono::Utc::now());
        if as_of > today {
            return Err(Error::invalid(
                "future_as_of",
                format!("--as-of {as_of} is after today ({today} in library time)"),
            ));
        }
        Ok(())
    }

    /// A calendar with the given zone and closed days.
    pub fn new(tz: Tz, closed: impl IntoIterator<Item = NaiveDate>) -> Calendar {
        Calendar {
            tz,
            closed: closed.into_iter().collect(),
        }
    }

    /// Reads the library time zone and every closed day.
    pub fn load(client: &mut impl GenericClient) -> Result<Calendar> {
        let tz = library_timezone(client)?;
        let closed = client
            .query("SELECT day FROM closed_day", &[])?
            .iter()
            .map(|r| r.get::<_, NaiveDate>(0))
            .collect::<Vec<_>>();
        Ok(Calendar::new(tz, closed))
    }

    /// The calendar day of `t` in library time.
    pub fn local_date(&self, t: DateTime<Utc>) -> NaiveDate {
        t.with_timezone(&self.tz).date_naive()
    }

    /// True when the library is closed on `day`.
    pub fn is_closed(&self, day: NaiveDate) -> bool {
        self.closed.contains(&day)
    }

    /// `day`, or the first open day after it.
    pub fn next_open_day(&self, mut day: NaiveDate) -> NaiveDate {
        while self.is_closed(day) {
            day = day + Days::new(1);
        }
        day
    }

    /// The day `days` open days after `day`: closed days do not count (a hold's last pickup
    /// day; the SQL twin is `open_days_after`, V21).
    pub fn open_days_after(&self, day: NaiveDate, days: i32) -> NaiveDate {
        let mut left = days.max(1);
        let mut d = day;
        loop {
            d = d + Days::new(1);
            if !self.is_closed(d) {
                left -= 1;
                if left == 0 {
                    return d;
                }
            }
        }
    }

    /// The last second of `day` in library time.
    pub fn end_of_day(&self, day: NaiveDate) -> DateTime<Utc> {
        let last_second = day.and_hms_opt(23, 59, 59).expect("valid time");
        match self.tz.from_local_datetime(&last_second) {
            chrono::LocalResult::Single(t) => t.with_timezone(&Utc),
            chrono::LocalResult::Ambiguous(_, later) => later.with_timezone(&Utc),
            // A DST gap at 23:59:59 local: the day ends at the next valid instant.
            chrono::LocalResult::None => {
                let next = (day + Days::new(1))
                    .and_hms_opt(1, 0, 0)
                    .expect("valid time");
                self.tz
                    .from_local_datetime(&next)
                    .earliest()
                    .map(|t| t.with_timezone(&Utc))
                    .unwrap_or_else(|| Utc.from_utc_datetime(&last_second))
            }
        }
    }

    /// The due instant of a loan period of `days` starting at `from`: the end of the
    /// `days`-th calendar day after it, moved forward past closed days.
    pub fn due_at(&self, from: DateTime<Utc>, days: i32) -> DateTime<Utc> {
        let nominal = self.local_date(from) + Days::new(days.max(1) as u64);
        self.end_of_day(self.next_open_day(nominal))
    }

    /// Overdue days: calendar days after the due date up to the end date (both in library
    /// time), not counting closed days. Zero when not yet overdue.
    pub fn overdue_days(&self, due_at: DateTime<Utc>, end: DateTime<Utc>) -> i32 {
        let due = self.local_date(due_at);
        let end = self.local_date(end);
        if end <= due {
            return 0;
        }
        let span = (end - due).num_days() as i32;
        let closed = self
            .closed
            .range(due.succ_opt().expect("date in range")..=end)
            .count() as i32;
        span - closed
    }
}

/// Reads and parses the library time zone setting.
pub fn library_timezone(client: &mut impl GenericClient) -> Result<Tz> {
    let name: Option<String> = client.query_one("SELECT library_timezone()", &[])?.get(0);
    let name = name.ok_or_else(|| {
        Error::Schema(
            "the library's time zone setting is missing; restore or re-seed this database".into(),
        )
    })?;
    parse_timezone(&name)
}

/// Parses an IANA zone name such as `Europe/Berlin`.
pub fn parse_timezone(name: &str) -> Result<Tz> {
    name.parse::<Tz>().map_err(|_| {
        Error::invalid(
            "invalid_timezone",
            format!("unknown time zone {name:?}; use an IANA name such as Europe/Berlin"),
        )
    })
}

/// A day the library is closed.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ClosedDay {
    /// The date, library time.
    pub day: NaiveDate,
    /// Why.
    pub reason: Option<String>,
}

/// Every closed day, in date order.
pub fn closed_days(client: &mut impl GenericClient) -> Result<Vec<ClosedDay>> {
    Ok(client
        .query("SELECT day, reason FROM closed_day ORDER BY day", &[])?
        .iter()
        .map(|r| ClosedDay {
            day: r.get(0),
            reason: r.get(1),
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(s: &str) -> NaiveDate {
        s.parse().unwrap()
    }
    fn t(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    #[test]
    fn due_date_skips_closed_days_and_ends_the_day_in_library_time() {
        let cal = Calendar::new(
            chrono_tz::Europe::Berlin,
            [d("2024-03-15"), d("2024-03-16")],
        );
        // Borrowed 1 March 10:00 Berlin; 14 days later is 15 March, closed, then 16, closed.
        let due = cal.due_at(t("2024-03-01T09:00:00Z"), 14);
        assert_eq!(cal.local_date(due), d("2024-03-17"));
        assert_eq!(due, t("2024-03-17T22:59:59Z"));
    }

    #[test]
    fn overdue_days_count_calendar_days_minus_closed_ones() {
        let cal = Calendar::new(chrono_tz::UTC, [d("2024-01-12")]);
        let due = cal.end_of_day(d("2024-01-10"));
        assert_eq!(cal.overdue_days(due, t("2024-01-10T23:59:59Z")), 0);
        assert_eq!(cal.overdue_days(due, t("2024-01-11T00:00:00Z")), 1);
        assert_eq!(cal.overdue_days(due, t("2024-01-13T08:00:00Z")), 2);
        assert_eq!(cal.overdue_days(due, t("2023-12-01T00:00:00Z")), 0);
    }

    #[test]
    fn midnight_in_library_time_is_not_midnight_in_utc() {
        let cal = Calendar::new(chrono_tz::America::New_York, []);
        let due = cal.end_of_day(d("2024-01-10"));
        // 02:00 UTC on the 11th is still the 10th in New York.
        assert_eq!(cal.overdue_days(due, t("2024-01-11T02:00:00Z")), 0);
        assert_eq!(cal.overdue_days(due, t("2024-01-11T05:00:00Z")), 1);
    }
}
