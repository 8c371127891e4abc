//! Concurrent committers through a [`StoreHandle`], shared by the store benches.

use std::time::{Duration, Instant};

use futures_lite::future::block_on;
use shardsync::store::{StoreHandle, StoreStats, WriteBatch};

/// One criterion iteration = every batch committed once, each by its own
/// thread, concurrently; `iters` of them. Returns the elapsed time.
pub fn concurrent_commits(store: &StoreHandle, batches: &[WriteBatch], iters: u64) -> Duration {
    let start = Instant::now();
    std::thread::scope(|s| {
        for b in batches {
            let store = store.clone();
            s.spawn(move || {
                for _ in 0..iters {
                    block_on(store.commit(b.clone())).expect("commit");
                }
            });
        }
    });
    start.elapsed()
}

/// Prints how many batches the writer grouped into one commit.
pub fn report_grouping(name: &str, stats: StoreStats) {
    eprintln!(
        "{name}: {} batches in {} commits ({:.1} batches per commit)",
        stats.batches,
        stats.commits,
        stats.batches as f64 / stats.commits.max(1) as f64
    );
}
