//! Counts panics of the server's threads in the test process: actix turns a panicking handler
//! into a dropped connection and restarts the worker, so a panic is otherwise easy to miss.
//!
//! Threads that call [`panics_so_far`] are test threads: their panics are failed assertions,
//! reported by the test harness, and are not counted (so one failing test does not make the
//! others of the binary fail).

use std::collections::HashSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, OnceLock};
use std::thread::ThreadId;

static PANICS: AtomicUsize = AtomicUsize::new(0);
static TEST_THREADS: Mutex<Option<HashSet<ThreadId>>> = Mutex::new(None);
static HOOK: OnceLock<()> = OnceLock::new();

fn is_test_thread() -> bool {
    let id = std::thread::current().id();
    TEST_THREADS.lock().map(|t| t.as_ref().is_some_and(|set| set.contains(&id))).unwrap_or(false)
}

/// Installs the counting hook (once; the default hook still prints), marks the calling thread as
/// a test thread, and returns the number of server-thread panics so far.
pub fn panics_so_far() -> usize {
    HOOK.get_or_init(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if !is_test_thread() {
                PANICS.fetch_add(1, Ordering::SeqCst);
            }
            previous(info);
        }));
    });
    if let Ok(mut threads) = TEST_THREADS.lock() {
        threads.get_or_insert_with(HashSet::new).insert(std::thread::current().id());
    }
    PANICS.load(Ordering::SeqCst)
}
