//! Timing helpers shared by the benchmarks (each includes this file with `#[path]`).

use std::time::{Duration, Instant};

/// Runs `work` a few times to warm caches, then `runs` times, and returns the
/// median duration.
pub fn median_time(runs: usize, mut work: impl FnMut()) -> Duration {
    for _ in 0..3 {
        work();
    }
    let mut times: Vec<Duration> = (0..runs)
        .map(|_| {
            let start = Instant::now();
            work();
            start.elapsed()
        })
        .collect();
    times.sort();
    times[times.len() / 2]
}

pub fn milliseconds(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1000.0
}
