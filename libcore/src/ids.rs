//! UUID v7 primary keys. The timestamp part is the row's own time (which `--at` may
//! backdate), so keys sort in the order the rows describe.

use chrono::{DateTime, Utc};
use uuid::{Timestamp, Uuid};

/// A fresh UUID v7 whose time part is `at`.
pub fn new_id(at: DateTime<Utc>) -> Uuid {
    Uuid::new_v7(timestamp(at))
}

/// The UUID v7 timestamp for `at` (millisecond precision, clamped at the epoch).
pub fn timestamp(at: DateTime<Utc>) -> Timestamp {
    let millis = at.timestamp_millis().max(0) as u64;
    Timestamp::from_unix(
        uuid::NoContext,
        millis / 1000,
        ((millis % 1000) * 1_000_000) as u32,
    )
}

/// A UUID v7 built from `at` and caller-supplied random bits, for deterministic generation.
pub fn id_from_parts(at: DateTime<Utc>, random: u128) -> Uuid {
    let millis = (at.timestamp_millis().max(0) as u64) & 0xFFFF_FFFF_FFFF;
    let rand_a = (random >> 64) as u16 & 0x0FFF;
    let rand_b = random as u64 & 0x3FFF_FFFF_FFFF_FFFF;
    let hi = (millis << 16) | 0x7000 | rand_a as u64;
    let lo = 0x8000_0000_0000_0000 | rand_b;
    Uuid::from_u64_pair(hi, lo)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parts_make_a_valid_v7_with_the_given_time() {
        let at = DateTime::parse_from_rfc3339("2024-05-06T07:08:09.123Z")
            .unwrap()
            .with_timezone(&Utc);
        let id = id_from_parts(at, u128::MAX);
        assert_eq!(id.get_version_num(), 7);
        assert_eq!(id.get_variant(), uuid::Variant::RFC4122);
        let (secs, nanos) = id.get_timestamp().unwrap().to_unix();
        assert_eq!(secs, at.timestamp() as u64);
        assert_eq!(nanos / 1_000_000, 123);
    }
}
