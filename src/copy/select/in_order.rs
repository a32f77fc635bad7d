//! Resolve a wildcard's repositories a few at a time and hand each part to the copy in catalog
//! order, without ever leaving a repository's reads half done while the copy is busy.
//!
//! `buffered(n).for_each(send)` would not do: while `send` waits for room in the parts
//! channel, the stream is not polled, so the repositories it is resolving stop where they
//! are, each holding what its requests hold (a connection slot of the source registry, a
//! pace slot). The copy of the parts in flight needs those slots to finish and make room: a
//! run stopped for good. Here the repositories started are polled until they end whatever
//! the channel does; only starting the next one waits for room.

use std::collections::VecDeque;
use std::future::Future;

use futures::stream::FuturesOrdered;
use futures::StreamExt;

use tokio::sync::mpsc::Sender;

/// Resolve each of `parts` (`concurrency` at a time, each polled to its end) and send what
/// they resolve to `out` in the order of `parts`. Resolved and unsent parts count against
/// `concurrency`, so what waits here is bounded too.
pub(super) async fn send_in_order<T, F>(
    parts: impl IntoIterator<Item = F>,
    concurrency: usize,
    out: &Sender<T>,
) where
    F: Future<Output = T>,
{
    let mut parts = parts.into_iter();
    let mut resolving = FuturesOrdered::new();
    let mut resolved: VecDeque<T> = VecDeque::new();
    loop {
        while resolving.len() + resolved.len() < concurrency.max(1) {
            match parts.next() {
                Some(part) => resolving.push_back(part),
                None => break,
            }
        }
        if resolving.is_empty() && resolved.is_empty() {
            return;
        }
        tokio::select! {
            Some(part) = resolving.next(), if !resolving.is_empty() => resolved.push_back(part),
            room = out.reserve(), if !resolved.is_empty() => match room {
                Ok(room) => room.send(resolved.pop_front().expect("a resolved part")),
                // The receiver is gone only when the run is over.
                Err(_) => return,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    /// Parts that each hold a slot of a shared semaphore while they resolve, and a channel with
    /// no room until a consumer that needs those slots makes some: the old
    /// `buffered(..).for_each(send)` stopped here for good.
    #[tokio::test]
    async fn parts_being_resolved_are_polled_to_their_end_while_the_channel_is_full() {
        let slots = Arc::new(tokio::sync::Semaphore::new(2));
        let (tx, mut rx) = tokio::sync::mpsc::channel(1);
        let started = Arc::new(AtomicUsize::new(0));
        let parts = (0..20).map(|n| {
            let (slots, started) = (slots.clone(), started.clone());
            async move {
                started.fetch_add(1, Ordering::SeqCst);
                let _slot = slots.acquire().await.unwrap();
                tokio::task::yield_now().await;
                n
            }
        });
        let producing = send_in_order(parts, 4, &tx);
        let consuming = async {
            let mut got = Vec::new();
            while let Some(p) = rx.recv().await {
                // The consumer needs both slots before it takes the next part.
                let _all = slots.acquire_many(2).await.unwrap();
                got.push(p);
                if got.len() == 20 {
                    break;
                }
            }
            got
        };
        let run = async { futures::join!(producing, consuming).1 };
        let got = tokio::time::timeout(std::time::Duration::from_secs(10), run)
            .await
            .expect("resolving and consuming stopped for good");
        let want: Vec<usize> = (0..20).collect();
        assert_eq!(got, want, "parts come in the order given");
        assert_eq!(started.load(Ordering::SeqCst), 20);
    }

    /// At most `concurrency` parts are resolving or waiting for room at once.
    #[tokio::test]
    async fn what_waits_for_room_is_bounded() {
        let (tx, mut rx) = tokio::sync::mpsc::channel(1);
        let live = Arc::new(AtomicUsize::new(0));
        let most = Arc::new(AtomicUsize::new(0));
        let parts = (0..50).map(|n| {
            let (live, most) = (live.clone(), most.clone());
            async move {
                let now = live.fetch_add(1, Ordering::SeqCst) + 1;
                most.fetch_max(now, Ordering::SeqCst);
                n
            }
        });
        let consuming = async {
            let mut n = 0;
            while rx.recv().await.is_some() {
                live.fetch_sub(1, Ordering::SeqCst);
                n += 1;
                tokio::task::yield_now().await;
            }
            n
        };
        let producing = async {
            send_in_order(parts, 3, &tx).await;
            drop(tx);
        };
        let (_, n) = futures::join!(producing, consuming);
        assert_eq!(n, 50);
        // Three resolving or resolved here, one in the channel, one being taken out.
        assert!(most.load(Ordering::SeqCst) <= 3 + 2, "{most:?}");
    }
}
