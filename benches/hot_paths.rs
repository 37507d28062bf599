//! criterion benches of the pure hot paths (SPEC §14): the fine function, due dates with
//! closed days, the seeder's row generation and binary COPY encoding, the rate-limit decision.
//!
//! Run: `cargo bench -p benches` (figures go to BENCHMARKS.md, never into tests).

use std::hint::black_box;

use chrono::{DateTime, Duration, NaiveDate, TimeZone, Utc};
use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use libcore::calendar::Calendar;
use libcore::fines::{fine_cents, FinePolicy};
use seeder::generate::Plan;
use seeder::Scenario;

fn calendar() -> Calendar {
    let start = NaiveDate::from_ymd_opt(2020, 1, 1).unwrap();
    // Closed every Sunday-ish and on holidays: about one day in six over five years.
    let closed = (0..365 * 5)
        .filter(|d| d % 6 == 0)
        .map(|d| start + Duration::days(d));
    Calendar::new(chrono_tz::Europe::Berlin, closed)
}

fn times(n: usize) -> Vec<(DateTime<Utc>, DateTime<Utc>)> {
    (0..n as i64)
        .map(|i| {
            let due = Utc.timestamp_opt(1_600_000_000 + i * 7_919, 0).unwrap();
            (due, due + Duration::hours((i * 37) % 1_500))
        })
        .collect()
}

fn fine_function(c: &mut Criterion) {
    let cal = calendar();
    let loans = times(100_000);
    let policy = FinePolicy {
        fine_cents_per_day: 100,
        grace_days: 2,
        max_fine_cents: 2_000,
    };
    let mut g = c.benchmark_group("fines");
    g.throughput(Throughput::Elements(loans.len() as u64));
    g.bench_function("fine_cents x100k loans, closed-day calendar", |b| {
        b.iter(|| {
            loans
                .iter()
                .map(|(due, end)| fine_cents(&policy, *due, *end, &cal))
                .sum::<i64>()
        })
    });
    g.finish();
}

fn due_dates(c: &mut Criterion) {
    let cal = calendar();
    let borrowed = times(100_000);
    let mut g = c.benchmark_group("calendar");
    g.throughput(Throughput::Elements(borrowed.len() as u64));
    g.bench_function("due_at x100k, 14 days past closed days", |b| {
        b.iter(|| borrowed.iter().map(|(t, _)| cal.due_at(*t, 14)).max())
    });
    g.finish();
}

fn seeder_rows(c: &mut Criterion) {
    let plan = Plan::new(
        Scenario::named("high_scale").unwrap(),
        42,
        NaiveDate::from_ymd_opt(2026, 1, 15).unwrap(),
    );
    // Three months of high_scale are about 100k loans.
    let months = [60usize, 61, 62];
    let loans: Vec<_> = months
        .iter()
        .flat_map(|m| plan.month(*m).returned)
        .collect();
    let mut g = c.benchmark_group("seeder");
    g.sample_size(10);
    g.throughput(Throughput::Elements(loans.len() as u64));
    g.bench_function("generate ~100k loans (3 months of high_scale)", |b| {
        b.iter(|| {
            months
                .iter()
                .map(|m| plan.month(*m).returned.len())
                .sum::<usize>()
        })
    });
    g.bench_function("binary COPY encode ~100k loan rows", |b| {
        b.iter_batched(
            || Vec::with_capacity(loans.len() * 160),
            |mut buf| {
                for l in &loans {
                    seeder::rows::encode_loan(&mut buf, &plan, l);
                }
                black_box(buf.len())
            },
            BatchSize::LargeInput,
        )
    });
    g.finish();
}

fn rate_limit(c: &mut Criterion) {
    let now = Utc::now();
    let mut g = c.benchmark_group("ratelimit");
    g.throughput(Throughput::Elements(1_000));
    g.bench_function("retry_after x1000 decisions", |b| {
        b.iter(|| {
            (0..1_000i64)
                .map(|i| {
                    libcore::ratelimit::retry_after(
                        black_box(i % 12),
                        black_box(i % 7),
                        10,
                        5,
                        3_600,
                        Some(now - Duration::seconds(i)),
                        now,
                    )
                })
                .sum::<i64>()
        })
    });
    g.finish();
}

criterion_group!(benches, fine_function, due_dates, seeder_rows, rate_limit);
criterion_main!(benches);
