//! Read batching for a metadata store across the network.
//!
//! A read through [`Batcher::get`] waits in a queue; while fewer than `max_in_flight` batches are
//! running, a batch takes the whole queue, asks the database once for every distinct key in it,
//! and answers every waiter. Under light load a read is a batch of one (no added latency); under
//! heavy load hundreds of reads share one round trip.
//!
//! A read of a key that a running batch already asks for joins that batch instead of waiting for
//! the next one, unless this node wrote since the batch was sent ([`Batcher::wrote`]). So a read
//! is never older than one round trip to the database (the batch left at most that long before
//! the read arrived), and a client always reads its own writes through the node it wrote
//! through. Nothing is kept after a batch is answered: this is not a cache.
//!
//! A batch also asks again for the keys read in the last [`HOT_BATCHES`] batches (at most
//! [`CARRIED`]), so that reads of a hot set of keys (a rollout pulling a handful of tags) find
//! their key in the batch in flight instead of waiting for the next one.

use super::{MetaResult, MetadataError};
use futures_util::future::BoxFuture;
use futures_util::FutureExt;
use std::collections::HashMap;
use std::hash::Hash;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use tokio::sync::oneshot;

type Waiters<V> = Vec<oneshot::Sender<MetaResult<V>>>;
/// Loads the values of distinct keys, in the order of the keys.
pub type Loader<K, V> = Box<dyn Fn(Vec<K>) -> BoxFuture<'static, MetaResult<Vec<V>>> + Send + Sync>;

pub struct Batcher<K, V> {
    state: Mutex<State<K, V>>,
    /// Bumped by every write of this node to what the batches read.
    generation: AtomicU64,
    max_in_flight: usize,
    load: Loader<K, V>,
}

/// Keys carried from one batch to the next at most.
pub const CARRIED: usize = 256;
/// A key not read in this many batches in a row is no longer carried.
pub const HOT_BATCHES: u32 = 8;

struct State<K, V> {
    queue: HashMap<K, Waiters<V>>,
    /// Keys read lately, with the number of batches since: asked for again by the next batch.
    hot: HashMap<K, u32>,
    running: Vec<Running<K, V>>,
    /// Drain tasks alive (each runs one batch at a time).
    draining: usize,
    next_id: u64,
}

/// A batch sent and not yet answered.
struct Running<K, V> {
    id: u64,
    /// The generation when it was sent: joined only while it is still current.
    generation: u64,
    waiters: HashMap<K, Waiters<V>>,
}

impl<K, V> Batcher<K, V>
where
    K: Eq + Hash + Clone + Send + 'static,
    V: Clone + Send + 'static,
{
    pub fn new(max_in_flight: usize, load: Loader<K, V>) -> Arc<Self> {
        Arc::new(Batcher {
            state: Mutex::new(State { queue: HashMap::new(), hot: HashMap::new(), running: Vec::new(), draining: 0, next_id: 0 }),
            generation: AtomicU64::new(0),
            max_in_flight,
            load,
        })
    }

    /// Records that this node changed what the batches read (after the change committed, before
    /// it is acknowledged): reads from now on wait for a batch sent after it.
    pub fn wrote(&self) {
        self.generation.fetch_add(1, Ordering::SeqCst);
    }

    pub async fn get(self: &Arc<Self>, key: K) -> MetaResult<V> {
        let (tx, rx) = oneshot::channel();
        let start = {
            let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
            let generation = self.generation.load(Ordering::SeqCst);
            let joined = state.running.iter_mut().filter(|r| r.generation == generation).find_map(|r| r.waiters.get_mut(&key));
            match joined {
                Some(waiters) => {
                    waiters.push(tx);
                    false
                }
                None => {
                    state.queue.entry(key).or_default().push(tx);
                    let free = state.draining < self.max_in_flight;
                    state.draining += usize::from(free);
                    free
                }
            }
        };
        if start {
            // A task of its own: a reader that goes away (a client disconnecting) must not
            // abandon the batch the others wait on.
            tokio::spawn(Arc::clone(self).drain());
        }
        rx.await.unwrap_or_else(|_| Err(MetadataError::Unavailable("the read batch was abandoned".into())))
    }

    async fn drain(self: Arc<Self>) {
        loop {
            let (id, keys) = {
                let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
                if state.queue.is_empty() {
                    state.draining -= 1;
                    return;
                }
                let mut waiters = std::mem::take(&mut state.queue);
                for key in state.hot.keys() {
                    if !waiters.contains_key(key) {
                        waiters.insert(key.clone(), Vec::new());
                    }
                }
                let keys: Vec<K> = waiters.keys().cloned().collect();
                let id = state.next_id;
                state.next_id += 1;
                let generation = self.generation.load(Ordering::SeqCst);
                state.running.push(Running { id, generation, waiters });
                (id, keys)
            };
            let expected = keys.len();
            let loaded = std::panic::AssertUnwindSafe((self.load)(keys.clone())).catch_unwind().await;
            let result = match loaded {
                Ok(Ok(values)) if values.len() == expected => Ok(values),
                Ok(Ok(values)) => Err(MetadataError::Backend(format!("a batch of {expected} reads returned {}", values.len()))),
                Ok(Err(e)) => Err(e),
                Err(_) => Err(MetadataError::Backend("a batched read panicked".into())),
            };
            let mut waiters = {
                let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
                let at = state.running.iter().position(|r| r.id == id).expect("a running batch is answered once");
                let waiters = state.running.swap_remove(at).waiters;
                if result.is_ok() {
                    state.hot.retain(|_, age| {
                        *age += 1;
                        *age < HOT_BATCHES
                    });
                    for (key, _) in waiters.iter().filter(|(_, w)| !w.is_empty()) {
                        if state.hot.len() < CARRIED || state.hot.contains_key(key) {
                            state.hot.insert(key.clone(), 0);
                        }
                    }
                } else {
                    state.hot.clear();
                }
                waiters
            };
            for (i, key) in keys.iter().enumerate() {
                // Carried keys nobody read this time have no waiters.
                let Some(readers) = waiters.remove(key).filter(|w| !w.is_empty()) else { continue };
                let value = result.as_ref().map(|values| values[i].clone()).map_err(Clone::clone);
                for w in readers {
                    let _ = w.send(value.clone());
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    fn counting(calls: Arc<AtomicUsize>, sizes: Arc<Mutex<Vec<usize>>>) -> Arc<Batcher<u32, u32>> {
        Batcher::new(
            1,
            Box::new(move |keys: Vec<u32>| {
                calls.fetch_add(1, Ordering::SeqCst);
                sizes.lock().unwrap().push(keys.len());
                async move {
                    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
                    if keys.contains(&13) {
                        return Err(MetadataError::Unavailable("13".into()));
                    }
                    Ok(keys.iter().map(|k| k * 2).collect())
                }
                .boxed()
            }),
        )
    }

    #[tokio::test]
    async fn concurrent_reads_share_batches_and_each_gets_its_own_value() {
        let calls = Arc::new(AtomicUsize::new(0));
        let sizes = Arc::new(Mutex::new(Vec::new()));
        let b = counting(calls.clone(), sizes.clone());
        let reads = (0..100u32).map(|i| {
            let b = b.clone();
            tokio::spawn(async move { (i % 10, b.get(i % 10).await) })
        });
        for r in futures_util::future::join_all(reads).await {
            let (k, v) = r.unwrap();
            assert_eq!(v.unwrap(), k * 2);
        }
        // The first read runs alone; the other 99 arrive during it and share the next batch,
        // which asks for each distinct key once.
        assert!(calls.load(Ordering::SeqCst) <= 3, "{} batches", calls.load(Ordering::SeqCst));
        assert!(sizes.lock().unwrap().iter().all(|&n| n <= 10));
        let state = b.state.lock().unwrap();
        assert_eq!((state.draining, state.running.len(), state.queue.len()), (0, 0, 0));
    }

    #[tokio::test]
    async fn a_read_joins_the_running_batch_of_its_key_unless_the_node_wrote_since() {
        let calls = Arc::new(AtomicUsize::new(0));
        let b = counting(calls.clone(), Arc::new(Mutex::new(Vec::new())));
        let in_flight = |key| {
            let b = b.clone();
            tokio::spawn(async move { b.get(key).await })
        };
        let first = in_flight(1);
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        assert_eq!(b.get(1).await.unwrap(), 2);
        assert_eq!(first.await.unwrap().unwrap(), 2);
        assert_eq!(calls.load(Ordering::SeqCst), 1, "the second read shared the first one's batch");
        let second = in_flight(1);
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        b.wrote();
        assert_eq!(b.get(1).await.unwrap(), 2);
        assert_eq!(second.await.unwrap().unwrap(), 2);
        assert_eq!(calls.load(Ordering::SeqCst), 3, "after a write, a batch sent before it is not joined");
    }

    #[tokio::test]
    async fn keys_read_lately_are_asked_for_again_until_nobody_reads_them() {
        let calls = Arc::new(AtomicUsize::new(0));
        let sizes = Arc::new(Mutex::new(Vec::new()));
        let b = counting(calls.clone(), sizes.clone());
        let in_flight = |key| {
            let b = b.clone();
            tokio::spawn(async move { b.get(key).await })
        };
        // Batch 1 reads 1; batch 2 (1 carried, 2 queued) is started by a reader of 2 only.
        in_flight(1).await.unwrap().unwrap();
        let two = in_flight(2);
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        // 1 is in the batch in flight although nobody queued it: this read joins it.
        assert_eq!(b.get(1).await.unwrap(), 2);
        assert_eq!(two.await.unwrap().unwrap(), 4);
        assert_eq!(calls.load(Ordering::SeqCst), 2);
        // Then only 3 is read: 1 and 2 ride along for HOT_BATCHES batches, then are dropped.
        for _ in 0..=HOT_BATCHES {
            in_flight(3).await.unwrap().unwrap();
        }
        let mut expected = vec![1, 2];
        expected.extend(std::iter::repeat_n(3, HOT_BATCHES as usize));
        expected.push(1);
        assert_eq!(*sizes.lock().unwrap(), expected);
    }

    #[tokio::test]
    async fn an_error_reaches_every_reader_of_the_batch_and_the_next_batch_runs() {
        let calls = Arc::new(AtomicUsize::new(0));
        let b = counting(calls.clone(), Arc::new(Mutex::new(Vec::new())));
        let blocker = tokio::spawn({
            let b = b.clone();
            async move { b.get(0).await }
        });
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        let (a, c) = tokio::join!(b.get(13), b.get(4));
        assert!(matches!(a, Err(MetadataError::Unavailable(_))));
        assert!(matches!(c, Err(MetadataError::Unavailable(_))));
        assert_eq!(blocker.await.unwrap().unwrap(), 0);
        assert_eq!(b.get(4).await.unwrap(), 8);
    }
}
