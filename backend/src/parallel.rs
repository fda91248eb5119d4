//! Work spread over threads with results in input order: compiling a batch of functions,
//! writing debug units. Workers take the next item from an atomic counter (no lock on the hot
//! path), so a slow item never holds up the others; each worker has its own state (a Cranelift
//! `Context`, say), made by `init`.

use std::sync::atomic::{AtomicUsize, Ordering};

/// `f` over `items` on up to `jobs` threads, each with its own state from `init`; results in
/// `items` order.
pub fn map<T: Sync, S, R: Send>(
    items: &[T],
    jobs: usize,
    init: impl Fn() -> S + Sync,
    f: impl Fn(&mut S, &T) -> R + Sync,
) -> Vec<R> {
    if jobs <= 1 || items.len() <= 1 {
        let mut state = init();
        return items.iter().map(|item| f(&mut state, item)).collect();
    }
    let next = AtomicUsize::new(0);
    let mut results: Vec<Option<R>> = (0..items.len()).map(|_| None).collect();
    std::thread::scope(|s| {
        let workers: Vec<_> = (0..jobs.min(items.len()))
            .map(|_| {
                s.spawn(|| {
                    let mut state = init();
                    let mut done = Vec::new();
                    loop {
                        let k = next.fetch_add(1, Ordering::Relaxed);
                        let Some(item) = items.get(k) else {
                            break done;
                        };
                        done.push((k, f(&mut state, item)));
                    }
                })
            })
            .collect();
        for w in workers {
            for (k, r) in w.join().expect("workers do not panic") {
                results[k] = Some(r);
            }
        }
    });
    results
        .into_iter()
        .map(|r| r.expect("every item was mapped"))
        .collect()
}
