//! The behaviour model of SPEC §12, as pure functions of a random stream: book tiers,
//! member segments, seasonality, daily volume, return delays and times of day.

use chrono::{Datelike, NaiveDate, NaiveTime};
use rand::Rng;

/// Book popularity tiers: (share of books, borrow weight).
pub const TIERS: [(f64, u32); 4] = [(0.05, 50), (0.25, 10), (0.50, 1), (0.20, 0)];
/// Member segments: (share of members, borrow rate weight). Heavy, regular, casual, inactive.
pub const SEGMENTS: [(f64, u32); 4] = [(0.05, 8), (0.50, 2), (0.25, 1), (0.20, 0)];
/// Share of loans returned late.
pub const LATE_SHARE: f64 = 0.12;
/// Late-return buckets in days after the due date, with their share of late returns.
pub const LATE_BUCKETS: [(u32, u32, f64); 3] = [(1, 3, 0.5), (4, 7, 0.3), (8, 30, 0.2)];
/// Relative standard deviation of the daily volume.
pub const DAILY_SIGMA: f64 = 0.10;

/// Picks an index by cumulative shares (which sum to 1).
fn pick_share<R: Rng>(rng: &mut R, shares: impl Iterator<Item = f64>) -> usize {
    let x: f64 = rng.random();
    let mut acc = 0.0;
    let mut last = 0;
    for (i, s) in shares.enumerate() {
        acc += s;
        last = i;
        if x < acc {
            return i;
        }
    }
    last
}

/// The tier (0 = A … 3 = D) of a new book.
pub fn book_tier<R: Rng>(rng: &mut R) -> u8 {
    pick_share(rng, TIERS.iter().map(|t| t.0)) as u8
}

/// The segment (0 = heavy … 3 = inactive) of a new member.
pub fn member_segment<R: Rng>(rng: &mut R) -> u8 {
    pick_share(rng, SEGMENTS.iter().map(|s| s.0)) as u8
}

/// Copies owned by a book of `tier`: popular titles are bought in several copies.
pub fn copies_for_tier<R: Rng>(rng: &mut R, tier: u8) -> i32 {
    match tier {
        0 => rng.random_range(4..=10),
        1 => rng.random_range(2..=5),
        2 => rng.random_range(1..=3),
        _ => rng.random_range(1..=2),
    }
}

/// Seasonality: Nov/Dec +30 %, Jun/Jul −20 %, otherwise 1.
pub fn seasonality(day: NaiveDate) -> f64 {
    match day.month() {
        11 | 12 => 1.3,
        6 | 7 => 0.8,
        _ => 1.0,
    }
}

/// A standard normal draw (Box–Muller), so the model needs no extra crate.
pub fn standard_normal<R: Rng>(rng: &mut R) -> f64 {
    let u1: f64 = rng.random_range(f64::EPSILON..1.0);
    let u2: f64 = rng.random();
    (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()
}

/// The number of loans on `day`, given the mean daily volume before seasonality.
pub fn daily_volume<R: Rng>(rng: &mut R, day: NaiveDate, base: f64) -> u32 {
    let noise = (1.0 + DAILY_SIGMA * standard_normal(rng)).max(0.0);
    let expected = base * seasonality(day) * noise;
    // Stochastic rounding keeps the mean exact for small volumes.
    let whole = expected.floor();
    let extra = if rng.random::<f64>() < expected - whole {
        1.0
    } else {
        0.0
    };
    (whole + extra) as u32
}

/// When a loan comes back, in whole days after borrowing, and whether it is late.
/// On-time returns spread over the loan period; late ones fall in the SPEC buckets.
pub fn return_after_days<R: Rng>(rng: &mut R, loan_days: i32) -> (i64, bool) {
    if rng.random::<f64>() < LATE_SHARE {
        let bucket = pick_share(rng, LATE_BUCKETS.iter().map(|b| b.2));
        let (lo, hi, _) = LATE_BUCKETS[bucket];
        (
            i64::from(loan_days) + i64::from(rng.random_range(lo..=hi)),
            true,
        )
    } else {
        (rng.random_range(0..=i64::from(loan_days)), false)
    }
}

/// A time of day within opening hours (09:00–20:00), busier around midday and late afternoon.
pub fn time_of_day<R: Rng>(rng: &mut R) -> NaiveTime {
    // Two overlapping humps: 11:00–14:00 and 16:00–19:00 carry most visits.
    let hour_weights: [u32; 11] = [3, 6, 9, 10, 9, 7, 8, 10, 9, 6, 3];
    let total: u32 = hour_weights.iter().sum();
    let mut x = rng.random_range(0..total);
    let mut hour = 9;
    for (i, w) in hour_weights.iter().enumerate() {
        if x < *w {
            hour = 9 + i as u32;
            break;
        }
        x -= w;
    }
    NaiveTime::from_hms_opt(hour, rng.random_range(0..60), rng.random_range(0..60))
        .expect("valid time")
}

/// Weighted index sampling over a cumulative weight table, restricted to its first `len`
/// entries (members created before the day being simulated).
pub fn sample_prefix<R: Rng>(rng: &mut R, cumulative: &[u64], len: usize) -> Option<usize> {
    let total = *cumulative.get(len.checked_sub(1)?)?;
    if total == 0 {
        return None;
    }
    let x = rng.random_range(0..total);
    Some(cumulative[..len].partition_point(|&c| c <= x))
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;

    #[test]
    fn shares_and_weights_follow_the_spec() {
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        let n = 200_000;
        let mut tiers = [0u32; 4];
        let mut segments = [0u32; 4];
        let mut late = 0;
        for _ in 0..n {
            tiers[book_tier(&mut rng) as usize] += 1;
            segments[member_segment(&mut rng) as usize] += 1;
            late += u32::from(return_after_days(&mut rng, 14).1);
        }
        for (i, (share, _)) in TIERS.iter().enumerate() {
            assert!(
                (f64::from(tiers[i]) / f64::from(n) - share).abs() < 0.01,
                "tier {i}"
            );
        }
        for (i, (share, _)) in SEGMENTS.iter().enumerate() {
            assert!(
                (f64::from(segments[i]) / f64::from(n) - share).abs() < 0.01,
                "segment {i}"
            );
        }
        assert!((f64::from(late) / f64::from(n) - LATE_SHARE).abs() < 0.005);
    }

    #[test]
    fn times_of_day_are_spread_over_opening_hours() {
        let mut rng = ChaCha8Rng::seed_from_u64(2);
        let hours: std::collections::BTreeSet<u32> = (0..10_000)
            .map(|_| chrono::Timelike::hour(&time_of_day(&mut rng)))
            .collect();
        assert_eq!(hours, (9..20).collect());
    }

    #[test]
    fn prefix_sampling_never_leaves_the_prefix_and_skips_zero_weights() {
        let cumulative = [0u64, 5, 5, 10, 20];
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        for _ in 0..1000 {
            let i = sample_prefix(&mut rng, &cumulative, 4).unwrap();
            assert!(i == 1 || i == 3, "{i}");
        }
        assert_eq!(sample_prefix(&mut rng, &cumulative, 1), None);
        assert_eq!(sample_prefix(&mut rng, &cumulative, 0), None);
    }
}

/// Where a title is shelved, and the call number on its spine label.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Shelf {
    /// Shelving location.
    pub location: &'static str,
    /// Call number: `FIC`, `J FIC` or a Dewey class, and the author's first three letters.
    pub call_number: String,
}

/// The shelf of a title: fiction by author, non-fiction by a Dewey class of its genre;
/// reference and short-loan titles on their own shelves.
pub fn shelving<R: Rng>(rng: &mut R, genre: &str, category: &str, author: &str) -> Shelf {
    let cutter: String = author
        .split_whitespace()
        .last()
        .unwrap_or("ANON")
        .chars()
        .filter(char::is_ascii_alphabetic)
        .take(3)
        .collect::<String>()
        .to_ascii_uppercase();
    let dewey = |rng: &mut R, low: u32, high: u32| {
        format!(
            "{}.{:03}",
            rng.random_range(low..=high),
            rng.random_range(0..1000)
        )
    };
    let (location, class) = match genre {
        "Fiction" | "Mystery" | "Science Fiction" | "Fantasy" | "Romance" => {
            ("Adult Fiction", "FIC".to_string())
        }
        "Children" => ("Children's Room", "J FIC".to_string()),
        "Poetry" => ("Poetry", dewey(rng, 811, 811)),
        "Biography" => ("Biography", dewey(rng, 920, 928)),
        "History" => ("Non-fiction, 2nd floor", dewey(rng, 900, 999)),
        "Science" => ("Non-fiction, 2nd floor", dewey(rng, 500, 599)),
        "Philosophy" => ("Non-fiction, 2nd floor", dewey(rng, 100, 199)),
        "Economics" => ("Non-fiction, 2nd floor", dewey(rng, 330, 339)),
        "Travel" => ("Non-fiction, 1st floor", dewey(rng, 910, 919)),
        "Cookery" => ("Non-fiction, 1st floor", dewey(rng, 641, 641)),
        "Art" => ("Art & Music", dewey(rng, 700, 799)),
        _ => ("Non-fiction, 1st floor", dewey(rng, 0, 99)),
    };
    let location = match category {
        "reference" => "Reference",
        "short_loan" => "Quick Picks",
        _ => location,
    };
    Shelf {
        location,
        call_number: format!("{class} {cutter}"),
    }
}

/// A replacement price in cents, by genre: children's books cheapest, art books dearest.
pub fn replacement_price<R: Rng>(rng: &mut R, genre: &str) -> i64 {
    let (low, high) = match genre {
        "Children" => (799, 1999),
        "Poetry" => (1299, 2499),
        "Fiction" | "Mystery" | "Science Fiction" | "Fantasy" | "Romance" => (1499, 2999),
        "Art" => (3499, 7999),
        "Science" | "Economics" => (2499, 5999),
        _ => (1999, 3999),
    };
    rng.random_range(low..=high)
}
