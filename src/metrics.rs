//! The node's metrics, in Prometheus' text format on the `--metrics` listener: what every
//! listener serves (requests by route, method and status, latency, bytes in and out), what the
//! registry holds (read from the metadata at each scrape), GC runs, and the metadata store's
//! errors and waits for a connection. Counters live in one registry for the process; routes are
//! templates (`/v2/<name>/blobs/<digest>`), never raw paths, so the label space stays small
//! whatever clients ask for.

use prometheus::{Encoder, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGaugeVec, Opts, Registry};
use std::sync::LazyLock;

pub struct Metrics {
    pub registry: Registry,
    pub requests: IntCounterVec,
    pub duration: HistogramVec,
    pub received: IntCounterVec,
    pub sent: IntCounterVec,
    pub stored: IntGaugeVec,
    pub memory: IntGaugeVec,
    pub gc_runs: IntCounterVec,
    pub gc_reclaimed: IntCounter,
    pub metadata_errors: IntCounterVec,
    pub pool_wait: HistogramVec,
}

fn counter(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    let c = IntCounterVec::new(Opts::new(name, help), labels).expect("a valid metric");
    registry.register(Box::new(c.clone())).expect("registered once");
    c
}

fn histogram(registry: &Registry, name: &str, help: &str, labels: &[&str], buckets: Vec<f64>) -> HistogramVec {
    let h = HistogramVec::new(HistogramOpts::new(name, help).buckets(buckets), labels).expect("a valid metric");
    registry.register(Box::new(h.clone())).expect("registered once");
    h
}

pub static METRICS: LazyLock<Metrics> = LazyLock::new(|| {
    let registry = Registry::new();
    let stored = IntGaugeVec::new(
        Opts::new("af_stored", "What the registry holds (every node on a shared database): repositories, manifests, blobs, blob_bytes, upload_sessions"),
        &["what"],
    )
    .expect("a valid metric");
    registry.register(Box::new(stored.clone())).expect("registered once");
    let memory = IntGaugeVec::new(Opts::new("af_memory_bytes", "The node's heap, by whose it is: sqlite (what SQLite holds: page caches, statements), malloc_in_use (every live allocation, SQLite's included), malloc_held (what malloc holds from the system, free space in its arenas included)"), &["what"]).expect("a valid metric");
    registry.register(Box::new(memory.clone())).expect("registered once");
    Metrics {
        requests: counter(&registry, "af_http_requests_total", "HTTP requests answered, by listener, route, method and status", &["listener", "route", "method", "status"]),
        duration: histogram(
            &registry,
            "af_http_request_duration_seconds",
            "Time until the response began, by listener and route",
            &["listener", "route"],
            prometheus::exponential_buckets(0.0005, 4.0, 9).expect("buckets"),
        ),
        received: counter(&registry, "af_http_received_bytes_total", "Request body bytes received, by listener", &["listener"]),
        sent: counter(&registry, "af_http_sent_bytes_total", "Response body bytes sent, by listener", &["listener"]),
        gc_runs: counter(&registry, "af_gc_runs_total", "Garbage collections run by this node, by outcome", &["outcome"]),
        gc_reclaimed: {
            let c = IntCounter::with_opts(Opts::new("af_gc_reclaimed_bytes_total", "Bytes of blob files garbage collection removed")).expect("a valid metric");
            registry.register(Box::new(c.clone())).expect("registered once");
            c
        },
        metadata_errors: counter(&registry, "af_metadata_errors_total", "Metadata store operations that failed, by backend and kind", &["backend", "kind"]),
        pool_wait: histogram(
            &registry,
            "af_metadata_pool_wait_seconds",
            "Time waiting for a metadata store connection, by backend",
            &["backend"],
            prometheus::exponential_buckets(0.0001, 4.0, 9).expect("buckets"),
        ),
        stored,
        memory,
        registry,
    }
});

/// The text exposition of every metric.
pub fn render() -> Vec<u8> {
    measure_memory();
    let mut out = Vec::new();
    prometheus::TextEncoder::new().encode(&METRICS.registry.gather(), &mut out).expect("encoding to memory");
    out
}

/// Where the heap goes, so that growth can be told apart: a cache or a leak raises what is in
/// use; fragmentation raises only what malloc holds.
fn measure_memory() {
    let memory = &METRICS.memory;
    // SAFETY: a read of SQLite's own counter, safe from any thread (SQLite is built threadsafe).
    memory.with_label_values(&["sqlite"]).set(unsafe { rusqlite::ffi::sqlite3_memory_used() });
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // SAFETY: mallinfo2 takes no arguments and only reads malloc's statistics.
        let m = unsafe { libc::mallinfo2() };
        let clamp = |n: usize| i64::try_from(n).unwrap_or(i64::MAX);
        memory.with_label_values(&["malloc_in_use"]).set(clamp(m.uordblks.saturating_add(m.hblkhd)));
        memory.with_label_values(&["malloc_held"]).set(clamp(m.arena.saturating_add(m.hblkhd)));
    }
}

/// Counts a failed metadata operation (`kind`: unavailable, backend, conflict, ...).
pub fn metadata_error(backend: &str, kind: &str) {
    METRICS.metadata_errors.with_label_values(&[backend, kind]).inc();
}
