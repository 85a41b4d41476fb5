//! A small bounded worker pool over scoped threads: runs one job per index on at most `jobs` threads, in a
//! given schedule, and stops handing out work once a job reports a failure.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Mutex;

/// How many jobs to run at once: `requested`, or the machine's cores.
pub(crate) fn jobs(requested: Option<usize>) -> usize {
    requested.unwrap_or_else(|| std::thread::available_parallelism().map_or(1, usize::from)).max(1)
}

/// Run `f(i)` for every index of `schedule` (a permutation of `0..n`, largest jobs first for balance) on up
/// to `jobs` threads. Results come back by index; `None` for jobs never started because an earlier one
/// `failed`.
pub(crate) fn run<R: Send>(
    schedule: &[usize],
    jobs: usize,
    f: impl Fn(usize) -> R + Sync,
    failed: impl Fn(&R) -> bool + Sync,
) -> Vec<Option<R>> {
    let n = schedule.len();
    let results: Mutex<Vec<Option<R>>> = Mutex::new((0..n).map(|_| None).collect());
    let next = AtomicUsize::new(0);
    let stop = AtomicBool::new(false);
    let worker = || loop {
        if stop.load(Ordering::Relaxed) {
            break;
        }
        let k = next.fetch_add(1, Ordering::Relaxed);
        let Some(&i) = schedule.get(k) else { break };
        let r = f(i);
        if failed(&r) {
            stop.store(true, Ordering::Relaxed);
        }
        results.lock().unwrap_or_else(|e| e.into_inner())[i] = Some(r);
    };
    std::thread::scope(|s| {
        for _ in 1..jobs.min(n) {
            s.spawn(worker);
        }
        worker();
    });
    results.into_inner().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn results_come_back_by_index_and_failures_stop_new_work() {
        let out = run(&[2, 0, 1], 2, |i| i * 10, |_| false);
        assert_eq!(out, vec![Some(0), Some(10), Some(20)]);
        let out = run(&[0, 1, 2, 3], 1, |i| i, |&r| r == 1);
        assert_eq!(out, vec![Some(0), Some(1), None, None]);
    }
}
