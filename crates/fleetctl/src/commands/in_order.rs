//! Work on many units at once, told in the order given: a few threads take the items one
//! after another, and once an item fails no new one is begun (those under way finish).

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Mutex;

/// How many items are worked on at once.
pub const CONCURRENT: usize = 8;

/// `work` for each item, [`CONCURRENT`] at a time; each item's result in order, `None` for
/// those not begun because an earlier one `failed`.
pub fn each<T: Sync, R: Send>(
    items: &[T],
    work: impl Fn(&T) -> R + Sync,
    failed: impl Fn(&R) -> bool + Sync,
) -> Vec<Option<R>> {
    let next = AtomicUsize::new(0);
    let stop = AtomicBool::new(false);
    let results: Mutex<Vec<Option<R>>> = Mutex::new((0..items.len()).map(|_| None).collect());
    std::thread::scope(|scope| {
        for _ in 0..CONCURRENT.min(items.len()) {
            scope.spawn(|| loop {
                if stop.load(Ordering::Acquire) {
                    return;
                }
                let at = next.fetch_add(1, Ordering::AcqRel);
                let Some(item) = items.get(at) else { return };
                let result = work(item);
                if failed(&result) {
                    stop.store(true, Ordering::Release);
                }
                results.lock().unwrap_or_else(|e| e.into_inner())[at] = Some(result);
            });
        }
    });
    results.into_inner().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn results_come_in_order_and_nothing_is_begun_after_a_failure() {
        let items: Vec<u32> = (0..100).collect();
        let all = each(&items, |n| n * 2, |_| false);
        assert_eq!(all, items.iter().map(|n| Some(n * 2)).collect::<Vec<_>>());

        let begun = AtomicUsize::new(0);
        let some = each(
            &items,
            |n| {
                begun.fetch_add(1, Ordering::SeqCst);
                *n
            },
            |n| *n == 10,
        );
        assert_eq!(some[10], Some(10));
        assert!(some[..10].iter().all(Option::is_some));
        // Only the items under way when 10 failed were begun after it.
        assert!(begun.load(Ordering::SeqCst) <= 11 + CONCURRENT, "{begun:?}");
    }
}
