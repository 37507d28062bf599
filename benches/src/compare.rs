//! The borrow comparison: libcore against both bare-SQL baselines, in rounds.

use libcore::actor::Ctx;
use libcore::Result;
use serde::Serialize;

use crate::borrow::{run_borrow_bench, BorrowBench, BorrowBenchResult, BorrowMode};
use crate::ratio;

/// libcore against both bare-SQL baselines: each mode's median run over the rounds.
#[derive(Serialize)]
pub struct BorrowComparison {
    pub libcore: BorrowBenchResult,
    pub bare_sql: BorrowBenchResult,
    pub bare_sql_prepared: BorrowBenchResult,
    pub ratio_libcore_to_bare: f64,
    pub ratio_libcore_to_bare_prepared: f64,
    /// Every run of every round, in the order they ran.
    pub rounds: Vec<Vec<RoundRun>>,
    /// Whether every invariant held after every run, not only the median ones.
    pub invariants_ok: bool,
}

/// One run of a round.
#[derive(Serialize)]
pub struct RoundRun {
    pub mode: &'static str,
    pub throughput_per_sec: f64,
    /// The machine's CPU over the run: how much work an operation took, and how much of the
    /// machine the hypervisor kept for others.
    pub host_cpu: Option<crate::borrow::HostCpu>,
}

/// libcore and the two bare-SQL baselines on the same database, `rounds` times. The database
/// drifts over a run (dead rows, the cache, the audit log grows), so each round starts with
/// the next mode: none always runs first or last.
pub fn borrow_comparison(
    url: &str,
    ctx: &Ctx,
    confirm: bool,
    spec: &BorrowBench,
    rounds: u32,
) -> Result<BorrowComparison> {
    const MODES: [BorrowMode; 3] = [
        BorrowMode::Libcore,
        BorrowMode::BareSql,
        BorrowMode::BareSqlPrepared,
    ];
    let mut runs: [Vec<BorrowBenchResult>; 3] = Default::default();
    let mut log = Vec::new();
    for round in 0..rounds as usize {
        let mut this_round = Vec::new();
        for m in (0..MODES.len()).map(|i| (round + i) % MODES.len()) {
            let result = run_borrow_bench(
                url,
                ctx,
                confirm,
                &BorrowBench {
                    mode: MODES[m],
                    ..spec.clone()
                },
            )?;
            this_round.push(RoundRun {
                mode: MODES[m].as_str(),
                throughput_per_sec: result.throughput_per_sec,
                host_cpu: result.host_cpu,
            });
            runs[m].push(result);
        }
        log.push(this_round);
    }
    let invariants_ok = runs.iter().flatten().all(|r| r.invariants_ok);
    let [libcore, bare_sql, bare_sql_prepared] = runs.map(|mut results| {
        results.sort_by(|a, b| a.throughput_per_sec.total_cmp(&b.throughput_per_sec));
        results.swap_remove(results.len() / 2)
    });
    Ok(BorrowComparison {
        ratio_libcore_to_bare: ratio(libcore.throughput_per_sec, bare_sql.throughput_per_sec),
        ratio_libcore_to_bare_prepared: ratio(
            libcore.throughput_per_sec,
            bare_sql_prepared.throughput_per_sec,
        ),
        libcore,
        bare_sql,
        bare_sql_prepared,
        rounds: log,
        invariants_ok,
    })
}
