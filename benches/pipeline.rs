//! `cargo bench --bench pipeline`: the push pipeline of a 1 GiB layer (`AF_BENCH_SIZE_MIB`) with
//! and without the UnixFS DAG, in process: the body arrives as 64 KiB shared buffers (as from the
//! network), crosses to the writer thread (vectored writes, sha256, fsync at the end) and, with
//! the DAG, to the importer thread too. HTTP is left out so that the difference is the DAG's
//! alone; `--bench registry` measures whole pushes. Rounds interleave; medians of 6.
//!
//! Twice: on the disk (under `target/`), where the disk's speed swings from run to run, and on
//! tmpfs (`/dev/shm`), where nothing but the CPU sets the pace: the harder test for the DAG.

use af_registry::digest::Algorithm;
use af_registry::storage::{append_stream, BlobStore, SideHasher};
use af_registry::unixfs::{CollectingImporter, Profile};
use bytes::Bytes;
use std::io::Read;
use std::time::Instant;

struct NoDag;

impl SideHasher for NoDag {
    fn update(&mut self, _: &[u8]) {}
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn body(source: &Bytes, total: u64) -> impl futures_util::Stream<Item = Result<Bytes, std::io::Error>> + Unpin {
    const CHUNK: usize = 64 * 1024;
    let mut sent = 0u64;
    let source = source.clone();
    futures_util::stream::iter(std::iter::from_fn(move || {
        if sent >= total {
            return None;
        }
        let start = (sent % source.len() as u64) as usize;
        let n = CHUNK.min((total - sent) as usize).min(source.len() - start);
        sent += n as u64;
        Some(Ok(source.slice(start..start + n)))
    }))
}

async fn push<T: SideHasher>(store: &BlobStore, source: &Bytes, total: u64, side: T) -> f64 {
    let id = uuid::Uuid::new_v4();
    store.create_upload(&id).unwrap();
    std::process::Command::new("sync").status().unwrap();
    let t = Instant::now();
    let out = append_stream(store, id, 0, Algorithm::Sha256.hasher(), side, body(source, total), None).await.unwrap();
    let elapsed = t.elapsed().as_secs_f64();
    assert_eq!(out.len, total);
    out.result.unwrap();
    store.remove_upload(&id).unwrap();
    elapsed
}

fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    let size_mib: u64 = std::env::var("AF_BENCH_SIZE_MIB").ok().and_then(|v| v.parse().ok()).unwrap_or(1024);
    let total = size_mib << 20;
    // 64 MiB of random bytes, cycled: enough that nothing downstream sees repetition cheaply.
    let mut random = vec![0u8; 64 << 20];
    std::fs::File::open("/dev/urandom").unwrap().read_exact(&mut random).unwrap();
    let source = Bytes::from(random);
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let mb = total as f64 / 1e6;
    println!("push pipeline, {size_mib} MiB, fsync'd, medians of 6 interleaved rounds, alternating which goes first");
    let disk = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target/bench-pipeline");
    let shm = std::path::PathBuf::from(format!("/dev/shm/af-bench-pipeline-{}", std::process::id()));
    for (place, dir) in [("disk", disk), ("tmpfs", shm)] {
        let _ = std::fs::remove_dir_all(&dir);
        let Ok(store) = BlobStore::open(&dir) else {
            println!("{place}: {} not writable, skipped", dir.display());
            continue;
        };
        let (mut with, mut without) = (Vec::new(), Vec::new());
        rt.block_on(async {
            // Which goes first alternates: the first of a pair tends to pay for the page cache
            // the previous pair left behind.
            for round in 0..6 {
                if round % 2 == 0 {
                    without.push(push(&store, &source, total, NoDag).await);
                }
                with.push(push(&store, &source, total, CollectingImporter::new(Profile::default())).await);
                if round % 2 == 1 {
                    without.push(push(&store, &source, total, NoDag).await);
                }
            }
        });
        let (w, wo) = (median(with), median(without));
        println!("{place}: with the UnixFS DAG {:.0} MB/s, without {:.0} MB/s: with/without {:.3} (target >= 0.95)", mb / w, mb / wo, wo / w);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
