//! `bench borrow`: a mixed desk workload (70 % borrow, 25 % return, 5 % renew) on N threads with
//! their own connections, through libcore or through bare SQL, and the invariants afterwards.
//!
//! The bare-SQL mode runs what any borrow needs — lock the member, count their open loans, lock
//! the book, take a copy, insert the loan — with none of libcore's rules, audit or rate limits,
//! so the ratio between the two is libcore's overhead. It still counts the member's open loans,
//! so the data stays valid for `db check`. It sends its statements in one of two ways
//! ([`BorrowMode`]): typed and unnamed, parsed and planned on every call, as libcore sends its
//! own without a [`Session`]; or prepared once per connection, the fastest plain SQL there is.
//! libcore runs on a [`Session`] here, so it prepares its statements once per connection too.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use chrono::Utc;
use postgres::Client;
use rand::{Rng, SeedableRng};
use uuid::Uuid;

use libcore::actor::{Actor, Ctx, Role};
use libcore::circulation::{self, LoanRef};
use libcore::error::{Error, Result};
use libcore::session::Session;

/// Through what a run sends its work.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BorrowMode {
    /// libcore's borrow, return and renew: rules, audit rows, rate limits.
    Libcore,
    /// The bare statements, typed and unnamed: one round trip each, parsed and planned on every
    /// call, as libcore sends its own on a plain `Client`.
    BareSql,
    /// The bare statements, each prepared once per connection and then only executed.
    BareSqlPrepared,
}

impl BorrowMode {
    /// The name in the output.
    pub fn as_str(self) -> &'static str {
        match self {
            BorrowMode::Libcore => "libcore",
            BorrowMode::BareSql => "bare_sql",
            BorrowMode::BareSqlPrepared => "bare_sql_prepared",
        }
    }
}

/// Who acts for each operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BenchActors {
    /// The seeded librarians at the desk, each thread taking turns over its own share of them:
    /// a few staff acting many times a second, so each one's rate-limit window is full.
    Librarians,
    /// Each member for themselves, as at a self-service kiosk: many actors, each acting
    /// rarely, so each one's window holds almost nothing.
    Members,
}

impl BenchActors {
    /// The name in the output.
    pub fn as_str(self) -> &'static str {
        match self {
            BenchActors::Librarians => "librarians",
            BenchActors::Members => "members",
        }
    }
}

/// What to run.
#[derive(Debug, Clone)]
pub struct BorrowBench {
    /// Threads, each with its own connection.
    pub clients: usize,
    /// How long.
    pub duration: Duration,
    /// Concentrate the load on the K most popular books.
    pub hot_books: Option<usize>,
    /// Through libcore, or as bare SQL.
    pub mode: BorrowMode,
    /// Who acts (libcore only: bare SQL has no actor).
    pub actors: BenchActors,
}

/// Latency percentiles in milliseconds.
#[derive(Debug, Clone, Copy, Default, serde::Serialize)]
pub struct Latency {
    /// Median.
    pub p50: f64,
    /// 95th percentile.
    pub p95: f64,
    /// 99th percentile.
    pub p99: f64,
    /// Slowest.
    pub max: f64,
}

/// What a run measured.
#[derive(Debug, Clone, serde::Serialize)]
pub struct BorrowBenchResult {
    /// `libcore`, `bare_sql` or `bare_sql_prepared`.
    pub mode: String,
    /// Who acted: `librarians` or `members` (the same workload in the bare modes, which have
    /// no actor).
    pub actors: String,
    /// Threads.
    pub clients: usize,
    /// Seconds run.
    pub seconds: f64,
    /// Operations finished (any outcome).
    pub operations: u64,
    /// Operations per second.
    pub throughput_per_sec: f64,
    /// Latency of one operation.
    pub latency_ms: Latency,
    /// Outcomes by code (`ok` or an error code).
    pub outcomes: BTreeMap<String, u64>,
    /// Transient conflicts retried.
    pub retries: u64,
    /// Whether `db check` found nothing afterwards.
    pub invariants_ok: bool,
    /// Whether the run started right after a CHECKPOINT (it needs a superuser or
    /// `pg_checkpoint`).
    pub checkpointed: bool,
    /// What the whole machine's CPUs did during the run (Linux only), so that a slow run can
    /// be told from a starved one.
    pub host_cpu: Option<HostCpu>,
}

/// The machine's CPU time over a run, from `/proc/stat`: every process counts, the
/// database server's included.
#[derive(Debug, Clone, Copy, serde::Serialize)]
pub struct HostCpu {
    /// Share of all CPUs' time spent working (user, system, interrupts).
    pub busy_percent: f64,
    /// Share taken by the hypervisor for other guests. A run with much steal measured a
    /// smaller machine than the one described.
    pub steal_percent: f64,
    /// CPU time worked per operation, in milliseconds, summed over every CPU.
    pub cpu_ms_per_op: f64,
}

/// Cumulative CPU time counters of the whole machine, in clock ticks.
#[derive(Clone, Copy)]
struct CpuTicks {
    busy: u64,
    steal: u64,
    total: u64,
    cpus: usize,
}

impl CpuTicks {
    /// The machine's line of `/proc/stat` (`cpu  user nice system idle iowait irq softirq
    /// steal …`) and the number of CPUs (its `cpuN` lines).
    fn read() -> Option<CpuTicks> {
        let stat = std::fs::read_to_string("/proc/stat").ok()?;
        let fields: Vec<u64> = stat
            .lines()
            .next()?
            .split_whitespace()
            .skip(1)
            .take(8)
            .map(|f| f.parse().ok())
            .collect::<Option<_>>()?;
        let [user, nice, system, idle, iowait, irq, softirq, steal] = fields[..] else {
            return None;
        };
        Some(CpuTicks {
            busy: user + nice + system + irq + softirq,
            steal,
            total: user + nice + system + idle + iowait + irq + softirq + steal,
            cpus: stat
                .lines()
                .filter(|l| l.starts_with("cpu") && !l.starts_with("cpu "))
                .count(),
        })
    }

    /// What happened between `self` and `later`, `seconds` apart, over `operations`.
    fn until(self, later: CpuTicks, seconds: f64, operations: u64) -> Option<HostCpu> {
        let total = later.total.checked_sub(self.total).filter(|&t| t > 0)? as f64;
        let busy = later.busy.saturating_sub(self.busy) as f64 / total;
        let steal = later.steal.saturating_sub(self.steal) as f64 / total;
        let cpu_seconds = busy * seconds * self.cpus as f64;
        let round = |v: f64, places: i32| (v * 10f64.powi(places)).round() / 10f64.powi(places);
        Some(HostCpu {
            busy_percent: round(busy * 100.0, 1),
            steal_percent: round(steal * 100.0, 1),
            cpu_ms_per_op: round(cpu_seconds * 1000.0 / operations.max(1) as f64, 3),
        })
    }
}

/// Starts a run from a fresh checkpoint. After one, the first change to each page writes the
/// whole page to the WAL; a run that started late in a checkpoint cycle would find most pages
/// already written and pay far less than the run before it. Each run, whatever its mode,
/// starts from the same point. False when the role may not checkpoint.
fn checkpoint(client: &mut Client) -> bool {
    match client.batch_execute("CHECKPOINT") {
        Ok(()) => true,
        Err(error) => {
            tracing::warn!(error = %libcore::error::describe_postgres_error(&error),
                "bench borrow runs without a checkpoint first");
            false
        }
    }
}

/// The members and books a run draws from.
struct Population {
    members: Vec<Uuid>,
    /// Each member as an actor, in the order of `members`: who acts when members serve
    /// themselves, built once so an operation borrows it rather than building it.
    member_actors: Vec<Ctx>,
    books: Vec<Uuid>,
    book_weights: Vec<u64>,
    desk: Vec<Actor>,
}

impl Population {
    /// Who acts for the member at `index`: the librarian on duty, or the member at a kiosk.
    fn acting<'a>(&'a self, actors: BenchActors, desk: &'a Ctx, index: usize) -> &'a Ctx {
        match actors {
            BenchActors::Librarians => desk,
            BenchActors::Members => &self.member_actors[index],
        }
    }
}

fn population(client: &mut Client, hot_books: Option<usize>) -> Result<Population> {
    let (members, member_actors): (Vec<Uuid>, Vec<Ctx>) = client
        .query(
            "SELECT id, email FROM member WHERE role = 'member' AND status = 'active' AND (expires_at IS NULL OR expires_at > now())",
            &[],
        )?
        .iter()
        .map(|r| {
            let id: Uuid = r.get(0);
            let actor = Actor {
                member_id: Some(id),
                name: r.get(1),
                role: Role::Member,
            };
            (id, Ctx::new(actor))
        })
        .unzip();
    // Popularity as seeded: loans per book over the last year (by primary-key range).
    let since = libcore::ids::id_from_parts(Utc::now() - chrono::Duration::days(365), 0);
    let mut popular: Vec<(Uuid, i64)> = client
        .query(
            "SELECT b.id, coalesce(p.n, 0) + 1 FROM book b
             LEFT JOIN (SELECT book_id, count(*) AS n FROM loan WHERE id >= $1 GROUP BY book_id) p ON p.book_id = b.id
             WHERE b.category <> 'reference' AND b.total_copies > 0
             ORDER BY 2 DESC, b.id",
            &[&since],
        )?
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    if let Some(k) = hot_books {
        popular.truncate(k.max(1));
    }
    let mut acc = 0u64;
    let book_weights = popular
        .iter()
        .map(|(_, n)| {
            acc += *n as u64;
            acc
        })
        .collect();
    let desk = client
        .query("SELECT id, email, role FROM member WHERE role IN ('librarian', 'admin') AND status = 'active' ORDER BY role DESC, email", &[])?
        .iter()
        .map(|r| Actor {
            member_id: Some(r.get(0)),
            name: r.get(1),
            role: Role::parse_member_role(r.get(2)).unwrap_or(Role::Librarian),
        })
        .collect::<Vec<_>>();
    if members.is_empty() || popular.is_empty() || desk.is_empty() {
        return Err(Error::invalid(
            "invalid_input",
            "bench borrow needs a seeded database (members, books and staff): run `libctl seed` first",
        ));
    }
    Ok(Population {
        members,
        member_actors,
        books: popular.into_iter().map(|(id, _)| id).collect(),
        book_weights,
        desk,
    })
}

/// One operation in bare SQL: the statements a borrow, return or renew needs and nothing else.
mod bare {
    use postgres::types::Type;
    use postgres::{Row, Transaction};

    use super::*;
    use libcore::session::{self, Params, Statements};

    /// How one thread's connection sends bare SQL.
    pub(super) struct Sender {
        /// `None`: every statement typed and unnamed, one round trip each, parsed and planned
        /// on every call. `Some`: each statement prepared once on this connection and then only
        /// executed (the fastest plain SQL there is).
        prepared: Option<Statements>,
    }

    impl Sender {
        pub(super) fn new(prepared: bool) -> Sender {
            Sender {
                prepared: prepared.then(Statements::default),
            }
        }

        fn query(
            &mut self,
            tx: &mut Transaction<'_>,
            sql: &str,
            params: &Params<'_>,
        ) -> Result<Vec<Row>> {
            session::query(tx, self.prepared.as_mut(), sql, params)
        }

        fn execute(
            &mut self,
            tx: &mut Transaction<'_>,
            sql: &str,
            params: &Params<'_>,
        ) -> Result<u64> {
            session::execute(tx, self.prepared.as_mut(), sql, params)
        }

        /// A statement about one row, named by id; how many rows it touched.
        fn by_id(&mut self, tx: &mut Transaction<'_>, sql: &str, id: Uuid) -> Result<u64> {
            self.execute(tx, sql, &[(&id, Type::UUID)])
        }

        pub(super) fn borrow(
            &mut self,
            client: &mut Client,
            member: Uuid,
            book: Uuid,
        ) -> Result<Uuid> {
            let mut tx = client.transaction()?;
            // The lock first, then the counts: read in the locking statement, they would come
            // from its snapshot, taken before the lock was granted.
            self.by_id(
                &mut tx,
                "SELECT 1 FROM member WHERE id = $1 FOR UPDATE",
                member,
            )?;
            let rows = self.query(
                &mut tx,
                "SELECT (SELECT count(*) FROM loan WHERE member_id = $1 AND returned_at IS NULL),
                        (SELECT count(*) FROM loan WHERE member_id = $1 AND book_id = $2 AND returned_at IS NULL)",
                &[(&member, Type::UUID), (&book, Type::UUID)],
            )?;
            let (open, same): (i64, i64) = (rows[0].get(0), rows[0].get(1));
            if open >= 5 || same > 0 {
                return Err(Error::refused(
                    libcore::Refusal::LoanLimitReached,
                    "bare: limit or duplicate",
                ));
            }
            self.by_id(&mut tx, "SELECT 1 FROM book WHERE id = $1 FOR UPDATE", book)?;
            let rows = self.query(
                &mut tx,
                "SELECT id FROM item WHERE book_id = $1 AND status = 'available'
                 ORDER BY id LIMIT 1 FOR UPDATE",
                &[(&book, Type::UUID)],
            )?;
            let Some(item) = rows.first().map(|r| r.get::<_, Uuid>(0)) else {
                return Err(Error::refused(
                    libcore::Refusal::NoCopyAvailable,
                    "bare: no copy",
                ));
            };
            self.by_id(
                &mut tx,
                "UPDATE book SET available_copies = available_copies - 1, times_borrowed = times_borrowed + 1 WHERE id = $1",
                book,
            )?;
            self.by_id(
                &mut tx,
                "UPDATE item SET status = 'on_loan', status_changed_at = now() WHERE id = $1",
                item,
            )?;
            let now = Utc::now();
            let id = libcore::ids::new_id(now);
            self.execute(
                &mut tx,
                "INSERT INTO loan (id, book_id, member_id, borrowed_at, due_at, fine_cents_per_day, grace_days, max_fine_cents, item_id)
                 VALUES ($1, $2, $3, $4, $5, 100, 0, 2000, $6)",
                &[
                    (&id, Type::UUID),
                    (&book, Type::UUID),
                    (&member, Type::UUID),
                    (&now, Type::TIMESTAMPTZ),
                    (&(now + chrono::Duration::days(14)), Type::TIMESTAMPTZ),
                    (&item, Type::UUID),
                ],
            )?;
            tx.commit()?;
            Ok(id)
        }

        pub(super) fn give_back(
            &mut self,
            client: &mut Client,
            loan: Uuid,
            member: Uuid,
            book: Uuid,
        ) -> Result<()> {
            let mut tx = client.transaction()?;
            self.by_id(
                &mut tx,
                "SELECT 1 FROM member WHERE id = $1 FOR UPDATE",
                member,
            )?;
            self.by_id(&mut tx, "SELECT 1 FROM book WHERE id = $1 FOR UPDATE", book)?;
            let returned = self.query(
                &mut tx,
                "UPDATE loan SET returned_at = clock_timestamp(), end_state = 'returned' WHERE id = $1 AND returned_at IS NULL RETURNING item_id",
                &[(&loan, Type::UUID)],
            )?;
            if let Some(item) = returned.first().map(|r| r.get::<_, Uuid>(0)) {
                self.by_id(
                    &mut tx,
                    "UPDATE book SET available_copies = available_copies + 1 WHERE id = $1",
                    book,
                )?;
                self.by_id(
                    &mut tx,
                    "UPDATE item SET status = 'available', status_changed_at = clock_timestamp() WHERE id = $1",
                    item,
                )?;
            }
            tx.commit()?;
            Ok(())
        }

        pub(super) fn renew(
            &mut self,
            client: &mut Client,
            loan: Uuid,
            member: Uuid,
        ) -> Result<()> {
            let mut tx = client.transaction()?;
            self.by_id(
                &mut tx,
                "SELECT 1 FROM member WHERE id = $1 FOR UPDATE",
                member,
            )?;
            self.by_id(
                &mut tx,
                "UPDATE loan SET due_at = due_at + interval '14 days', renewals = renewals + 1 WHERE id = $1 AND returned_at IS NULL AND renewals < 2",
                loan,
            )?;
            tx.commit()?;
            Ok(())
        }
    }
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = ((p / 100.0) * (sorted.len() - 1) as f64).round() as usize;
    (sorted[rank.min(sorted.len() - 1)] * 1000.0).round() / 1000.0
}

/// A run is bounded: between 1 and 600 seconds.
pub fn check_duration(duration: Duration) -> Result<()> {
    if duration > Duration::from_secs(600) || duration.is_zero() {
        return Err(Error::invalid(
            "invalid_input",
            "--duration must be between 1 and 600 seconds",
        ));
    }
    Ok(())
}

/// Runs the workload against the database at `url`, then checks every invariant.
///
/// On a playground anyone may run it; on a library only an admin who passed `confirm`
/// ([`libcore::playground`]). The run is audited under `ctx`: a `bench.borrow` row when it
/// starts and a `bench.finished` row when it ends, which bound the window of its own work.
/// The rate limits are lifted on its own connections only. Every worker gives back what it
/// borrowed before it stops, whatever happened; the loans of a run that was killed are given
/// back by the next run on a playground (on a library they are counted and left to the desk).
pub fn run_borrow_bench(
    url: &str,
    ctx: &Ctx,
    confirm: bool,
    spec: &BorrowBench,
) -> Result<BorrowBenchResult> {
    check_duration(spec.duration)?;
    libcore::validate::in_range("--clients", spec.clients, 1, 256)?;
    if let Some(hot) = spec.hot_books {
        libcore::validate::in_range("--hot-books", hot, 1, 1_000_000)?;
    }
    let mut setup = libcore::db::connect_current(url)?;
    let kind =
        libcore::playground::authorise(&mut setup, ctx, confirm, "run a borrow benchmark on it")?;
    let locked: bool = setup
        .query_one("SELECT pg_try_advisory_lock($1)", &[&BENCH_LOCK_KEY])?
        .get(0);
    if !locked {
        return Err(Error::refused(
            libcore::Refusal::JobAlreadyRunning,
            "another bench borrow is running on this database",
        ));
    }
    let run = libcore::ids::new_id(Utc::now());
    let deadline = Utc::now() + chrono::Duration::from_std(spec.duration).unwrap_or_default();
    let audit = |client: &mut Client, action: &'static str, details: serde_json::Value| {
        libcore::audit::record(
            client,
            ctx,
            &libcore::audit::Entry {
                action,
                entity_type: "bench",
                entity_id: Some(run.to_string()),
                outcome: "ok",
                details,
            },
        )
    };
    audit(
        &mut setup,
        "bench.borrow",
        serde_json::json!({
            "mode": spec.mode.as_str(), "clients": spec.clients, "deadline": deadline,
            "library": kind == libcore::playground::Kind::Library,
        }),
    )?;
    let given_back = give_back_killed_runs(&mut setup, ctx, run, kind)?;
    let population = Arc::new(population(&mut setup, spec.hot_books)?);
    let checkpointed = checkpoint(&mut setup);
    let mut finish = libcore::db::connect(url)?;
    let result = run_workload(url, spec, population, setup, checkpointed);
    audit(
        &mut finish,
        "bench.finished",
        serde_json::json!({ "ok": result.is_ok(), "stray_loans_given_back": given_back }),
    )?;
    result
}

/// Closes the runs that were killed (a `bench.borrow` row without its `bench.finished`, while
/// this run holds the bench lock, so none is still running), and gives back the loans they
/// left open: on a playground every loan borrowed inside such a run's window is the bench's
/// own. On a library they cannot be told from the desk's, so they are only counted in a
/// warning. Closing a run ends its window now, so nothing done after this counts as bench work.
fn give_back_killed_runs(
    client: &mut Client,
    ctx: &Ctx,
    current: Uuid,
    kind: libcore::playground::Kind,
) -> Result<u64> {
    let mut tx = client.transaction()?;
    let killed: Vec<String> = tx
        .query(
            "SELECT b.entity_id FROM audit_log b
             WHERE b.action = 'bench.borrow' AND b.entity_id <> $1
               AND NOT EXISTS (SELECT 1 FROM audit_log f
                               WHERE f.action = 'bench.finished' AND f.entity_id = b.entity_id)",
            &[&current.to_string()],
        )?
        .iter()
        .map(|r| r.get(0))
        .collect();
    if killed.is_empty() {
        return Ok(0);
    }
    let strays: Vec<Uuid> = tx
        .query(
            "SELECT l.id FROM audit_log b
             JOIN loan l ON l.returned_at IS NULL
              AND l.borrowed_at BETWEEN b.at
                  AND (b.details->>'deadline')::timestamptz + make_interval(secs => $2)
             WHERE b.action = 'bench.borrow' AND b.entity_id = ANY($1)
             FOR UPDATE OF l",
            &[
                &killed,
                &(libcore::playground::BENCH_WINDOW_SLACK_SECONDS as f64),
            ],
        )?
        .iter()
        .map(|r| r.get(0))
        .collect();
    let given_back = if kind == libcore::playground::Kind::Library {
        if !strays.is_empty() {
            tracing::warn!(
                loans = strays.len(),
                "a killed bench borrow left loans open on this library; they are left to the desk"
            );
        }
        0
    } else {
        tx.execute(
            "WITH back AS (UPDATE loan SET returned_at = greatest(now(), borrowed_at), end_state = 'returned'
                           WHERE id = ANY($1) RETURNING book_id, item_id, returned_at),
                  shelved AS (UPDATE item i SET status = 'available', status_changed_at = back.returned_at
                              FROM back WHERE i.id = back.item_id)
             UPDATE book b SET available_copies = b.available_copies + n.count
             FROM (SELECT book_id, count(*)::int AS count FROM back GROUP BY book_id) n
             WHERE b.id = n.book_id",
            &[&strays],
        )?;
        strays.len() as u64
    };
    for run in killed {
        libcore::audit::record(
            &mut tx,
            ctx,
            &libcore::audit::Entry {
                action: "bench.finished",
                entity_type: "bench",
                entity_id: Some(run),
                outcome: "ok",
                details: serde_json::json!({
                    "killed": true, "closed_by": current, "loans_given_back": given_back,
                    "loans_left_open": strays.len() as u64 - given_back,
                }),
            },
        )?;
    }
    tx.commit()?;
    Ok(given_back)
}

fn run_workload(
    url: &str,
    spec: &BorrowBench,
    population: Arc<Population>,
    mut setup: Client,
    checkpointed: bool,
) -> Result<BorrowBenchResult> {
    let retries_before = libcore::audit::RETRIES.load(Ordering::Relaxed);
    let barrier = Arc::new(Barrier::new(spec.clients.max(1) + 1));
    let mut handles = Vec::new();
    for thread in 0..spec.clients.max(1) {
        let (population, barrier, url, spec) = (
            population.clone(),
            barrier.clone(),
            url.to_string(),
            spec.clone(),
        );
        handles.push(std::thread::spawn(
            move || -> Result<(Vec<f64>, BTreeMap<String, u64>)> {
                // A long-lived connection, as a desk process keeps: libcore prepares its
                // statements once on it (bare SQL decides for itself, by mode).
                let mut connection = libcore::db::connect(&url)?;
                lift_for_this_connection(&mut connection)?;
                let mut client = Session::new(connection);
                let mut rng = rand::rngs::StdRng::seed_from_u64(thread as u64);
                // Librarians staff the desk (listed first); the admin only changes the policies.
                // Each thread serves with its own share of them, taking turns, so no two threads
                // act as the same librarian and none acts hundreds of times a second: a desk,
                // not one person at machine speed.
                let librarians = population
                    .desk
                    .iter()
                    .filter(|a| a.role == Role::Librarian)
                    .count()
                    .max(1);
                let shift: Vec<Ctx> = (thread % librarians..librarians)
                    .step_by(spec.clients.max(1))
                    .map(|i| Ctx::new(population.desk[i].clone()))
                    .collect();
                let mut turn = 0usize;
                // `Some` for the bare modes.
                let mut bare = (spec.mode != BorrowMode::Libcore)
                    .then(|| bare::Sender::new(spec.mode == BorrowMode::BareSqlPrepared));
                let acting = |desk, index| population.acting(spec.actors, desk, index);
                // (loan, the borrower's index in the population, book)
                let mut mine: std::collections::VecDeque<(Uuid, usize, Uuid)> = Default::default();
                let mut latencies = Vec::new();
                let mut outcomes = BTreeMap::new();
                barrier.wait();
                let deadline = Instant::now() + spec.duration;
                while Instant::now() < deadline {
                    let roll: f64 = rng.random();
                    turn += 1;
                    let desk = &shift[turn % shift.len()];
                    let started = Instant::now();
                    let outcome: Result<()> = if roll < 0.70 || mine.is_empty() {
                        let index = rng.random_range(0..population.members.len());
                        let member = population.members[index];
                        let x =
                            rng.random_range(0..*population.book_weights.last().expect("books"));
                        let book =
                            population.books[population.book_weights.partition_point(|&w| w <= x)];
                        let result = if let Some(bare) = &mut bare {
                            bare.borrow(&mut client, member, book)
                        } else {
                            circulation::borrow(
                                &mut client,
                                acting(desk, index),
                                &member.to_string(),
                                &book.to_string(),
                            )
                            .map(|l| l.id)
                        };
                        result.map(|loan| mine.push_back((loan, index, book)))
                    } else if roll < 0.95 {
                        let (loan, index, book) = mine.pop_front().expect("non-empty");
                        if let Some(bare) = &mut bare {
                            bare.give_back(&mut client, loan, population.members[index], book)
                        } else {
                            circulation::return_loan(
                                &mut client,
                                acting(desk, index),
                                &LoanRef::Id(loan),
                            )
                            .map(|_| ())
                        }
                    } else {
                        let (loan, index, _) = mine[rng.random_range(0..mine.len())];
                        if let Some(bare) = &mut bare {
                            bare.renew(&mut client, loan, population.members[index])
                        } else {
                            circulation::renew(&mut client, acting(desk, index), &LoanRef::Id(loan))
                                .map(|_| ())
                        }
                    };
                    latencies.push(started.elapsed().as_secs_f64() * 1000.0);
                    let code = match &outcome {
                        Ok(()) => "ok".to_string(),
                        Err(e) => e.code().to_string(),
                    };
                    *outcomes.entry(code).or_insert(0) += 1;
                }
                // Leave the library as we found it: give back what this thread still holds.
                for (loan, index, book) in mine {
                    let _ = if let Some(bare) = &mut bare {
                        bare.give_back(&mut client, loan, population.members[index], book)
                    } else {
                        let ctx = acting(&shift[0], index);
                        circulation::return_loan(&mut client, ctx, &LoanRef::Id(loan)).map(|_| ())
                    };
                }
                Ok((latencies, outcomes))
            },
        ));
    }
    barrier.wait();
    let started = Instant::now();
    let cpu_before = CpuTicks::read();
    // The threads stop starting operations at the deadline, then give back what they hold:
    // the CPU is read at the deadline, over the measured operations only (or as soon as every
    // thread has stopped: when none could connect, say).
    let deadline = started + spec.duration;
    while Instant::now() < deadline && !handles.iter().all(|h| h.is_finished()) {
        std::thread::sleep(
            Duration::from_millis(20).min(deadline.saturating_duration_since(Instant::now())),
        );
    }
    let cpu_after = CpuTicks::read();
    let mut latencies = Vec::new();
    let mut outcomes: BTreeMap<String, u64> = BTreeMap::new();
    for h in handles {
        let (l, o) = h
            .join()
            .map_err(|_| Error::Internal("a bench thread panicked".into()))??;
        latencies.extend(l);
        for (k, v) in o {
            *outcomes.entry(k).or_insert(0) += v;
        }
    }
    let seconds = spec
        .duration
        .as_secs_f64()
        .min(started.elapsed().as_secs_f64());
    latencies.sort_by(f64::total_cmp);
    let results = libcore::db::check(&mut setup)?;
    Ok(BorrowBenchResult {
        mode: spec.mode.as_str().into(),
        actors: spec.actors.as_str().into(),
        clients: spec.clients,
        seconds,
        operations: latencies.len() as u64,
        throughput_per_sec: (latencies.len() as f64 / seconds * 10.0).round() / 10.0,
        latency_ms: Latency {
            p50: percentile(&latencies, 50.0),
            p95: percentile(&latencies, 95.0),
            p99: percentile(&latencies, 99.0),
            max: percentile(&latencies, 100.0),
        },
        outcomes,
        retries: libcore::audit::RETRIES.load(Ordering::Relaxed) - retries_before,
        invariants_ok: results.iter().all(|r| r.violations == 0),
        checkpointed,
        host_cpu: cpu_before
            .zip(cpu_after)
            .and_then(|(before, after)| before.until(after, seconds, latencies.len() as u64)),
    })
}

/// The session advisory lock one `bench borrow` holds while it runs: a session lock, so a
/// killed bench releases it with its connection.
pub const BENCH_LOCK_KEY: i64 = 0x4C49_4243_424E; // "LIBCBN"

/// Lifts every rate limit for this connection alone, for `bench borrow`, which measures
/// circulation, not the limiter: the limiter still runs every decision, it just never refuses,
/// and counts about as many rows as a busy desk would under the real policy.
///
/// A temporary `rate_limit_policy` (every policy's limit and burst out of reach, its window one
/// second) shadows the real table on this connection: PostgreSQL looks in the session's
/// temporary schema first. It vanishes with the connection, so nothing lifted can outlive the
/// process or reach another session, and the real policies are never touched.
pub fn lift_for_this_connection(client: &mut impl postgres::GenericClient) -> Result<()> {
    client.batch_execute(
        "CREATE TEMPORARY TABLE rate_limit_policy (LIKE public.rate_limit_policy);
         INSERT INTO pg_temp.rate_limit_policy (role, action_group, limit_count, window_seconds, burst)
         SELECT role, action_group, 536870911, 1, 536870911 FROM public.rate_limit_policy;",
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_cpu_is_the_busy_share_of_every_cpu_over_the_run() {
        let before = CpuTicks {
            busy: 100,
            steal: 0,
            total: 1_000,
            cpus: 2,
        };
        let after = CpuTicks {
            busy: 600,
            steal: 100,
            total: 2_000,
            cpus: 2,
        };
        // Half of both CPUs for 10 s is 10 CPU-seconds, over 1,000 operations.
        let cpu = before.until(after, 10.0, 1_000).unwrap();
        assert_eq!(cpu.busy_percent, 50.0);
        assert_eq!(cpu.steal_percent, 10.0);
        assert_eq!(cpu.cpu_ms_per_op, 10.0);
        assert!(
            before.until(before, 10.0, 1_000).is_none(),
            "no time passed"
        );
        assert!(CpuTicks::read().is_some_and(|t| t.cpus > 0 && t.total > 0));
    }
}
