//! Work counters of the native solver, compiled only with the `lap-stats` feature (for
//! measuring where the time goes; never in the default build). Each cold or warm solve prints
//! one line `lap-stats: …` to stderr when it returns.

use std::cell::RefCell;
use std::time::Instant;

/// Counters of one solve (per thread).
#[derive(Default, Debug)]
pub(super) struct Stats {
    pub phase: Vec<(&'static str, f64)>,
    pub bids: usize,
    pub auction_bids: usize,
    pub auction_phases: usize,
    pub auction_per_phase: Vec<usize>,
    pub arr_windows: Vec<usize>,
    pub free_after_init: usize,
    pub augmentations: usize,
    pub steps: usize,
    pub max_path: usize,
    pub columns_scanned: usize,
    pub tie_scans: usize,
    started: Option<Instant>,
}

thread_local! {
    static STATS: RefCell<Stats> = RefCell::new(Stats::default());
}

/// Run `f` on this thread's counters.
pub(super) fn with(f: impl FnOnce(&mut Stats)) {
    STATS.with(|s| f(&mut s.borrow_mut()));
}

/// Start the clock of a new phase (closing the previous one).
pub(super) fn phase(name: &'static str) {
    with(|s| {
        let now = Instant::now();
        if let (Some(t), Some(last)) = (s.started, s.phase.last_mut()) {
            last.1 += (now - t).as_secs_f64();
        }
        s.phase.push((name, 0.0));
        s.started = Some(now);
    });
}

/// Close the last phase, print the counters to stderr and reset them.
pub(super) fn report(n: usize) {
    phase("end");
    with(|s| {
        s.phase.pop();
        eprintln!(
            "lap-stats: n={n} phases={:?} bids={} auction_bids={} auction_phases={} free_after_init={} augmentations={} steps={} max_path={} columns_scanned={} tie_scans={} auction_cumulative={:?} arr_free_per_window={:?}",
            s.phase
                .iter()
                .map(|(k, t)| format!("{k}:{t:.3}s"))
                .collect::<Vec<_>>(),
            s.bids,
            s.auction_bids,
            s.auction_phases,
            s.free_after_init,
            s.augmentations,
            s.steps,
            s.max_path,
            s.columns_scanned,
            s.tie_scans,
            s.auction_per_phase,
            s.arr_windows
        );
        *s = Stats::default();
    });
}
