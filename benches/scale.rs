//! `cargo bench --bench scale`: a node holding 100,000 repositories, 1.1 million tags and about
//! 10 million blocks, against the same shape a hundred times smaller, in the same run.
//!
//! The data are generated straight into the stores of a stopped node (its own schema, made by a
//! first start), with the library's own UnixFS importer, manifest parser and image-DAG builder,
//! so every row is what a push would have written:
//! - each repository `scale/rNNNNNN` holds a config blob and a layer blob, and 10 manifests
//!   (one per tag `v0`..`v9`, told apart by an annotation) that reference both; the repository
//!   `scale/wide` holds one manifest under 100,000 tags (1,000 small), for tag-list paging;
//! - every manifest has its image DAG (untagged and tagged: about 7 inline blocks);
//! - layers are 28 KiB cut in 1 KiB raw leaves, so that 10 million blocks fit on a test
//!   machine's disk: a real layer's leaves are 1 MiB, which changes the bytes stored per block
//!   and nothing else this bench measures (the index overhead is reported both ways).
//!
//! Everything is dated a day back, so a GC marks and scans the whole store (and removes
//! nothing: all of it is tagged).
//!
//! Measures, for each node: start-up after a clean stop and after kill -9 (until `/v2/`
//! answers), how long the node then stays busy (its DHT announcements), and, once it is at
//! rest, manifest GETs by tag (wrk, 64 connections, tags picked at random), `_catalog` and
//! tag-list paging (`n=100`, each page timed), `af registry gc` and `af registry verify` (time
//! and peak anonymous memory), and the disk the metadata and the block index take beside what they index.
//! Prints each figure, large/small, and how each compares with its target (issue: p99 within 2x,
//! start-up under 2 s, GC and verify linear, index overhead under 1%).
//!
//! The generated data directories are kept in target/bench-scale and reused by the next run
//! (`AF_SCALE_REFILL=1` makes them again). `AF_SCALE_REPOS` changes the large shape's size.

mod common;

use af_registry::digest::Digest;
use af_registry::image::{self, LayoutBlobs, TopManifest};
use af_registry::unixfs::{BlockSink, Importer, NewBlock, Profile, Root};
use common::*;
use rusqlite::{params, Connection};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Leaf size and count of the synthetic layers (see the module comment).
const LEAF: usize = 1024;
const LEAVES: usize = 28;
const TAGS: u64 = 10;
const MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";

#[derive(Clone, Copy)]
struct Shape {
    name: &'static str,
    repos: u64,
    wide_tags: u64,
}

/// What a fill put in a node.
#[derive(Default, Debug, Clone, Copy)]
struct Filled {
    repos: u64,
    tags: u64,
    manifests: u64,
    blocks: u64,
    blob_bytes: u64,
    seconds: f64,
}

impl Filled {
    fn save(&self, path: &Path) {
        let t = format!("{} {} {} {} {} {}", self.repos, self.tags, self.manifests, self.blocks, self.blob_bytes, self.seconds);
        std::fs::write(path, t).unwrap();
    }

    fn load(path: &Path) -> Option<Filled> {
        let text = std::fs::read_to_string(path).ok()?;
        let v: Vec<f64> = text.split_whitespace().filter_map(|x| x.parse().ok()).collect();
        (v.len() == 6).then(|| Filled { repos: v[0] as u64, tags: v[1] as u64, manifests: v[2] as u64, blocks: v[3] as u64, blob_bytes: v[4] as u64, seconds: v[5] })
    }
}

struct Node {
    child: Proc,
    base: String,
}

impl Node {
    /// Starts a node on `dir`; returns it once `/v2/` answers, with how long that took.
    fn start(dir: &Path) -> (Node, Duration) {
        let node = Serve::new(dir).spawn();
        let ready_after = node.ready_after;
        (Node { child: node.proc, base: format!("http://{}", node.api) }, ready_after)
    }

    /// SIGTERM, as an operator stops it; waits for the clean stop.
    fn stop(mut self) {
        let pid = self.child.0.id().to_string();
        Command::new("kill").args(["-TERM", &pid]).status().unwrap();
        let status = self.child.0.wait().unwrap();
        assert!(status.success(), "the node stopped with {status}");
    }
}

fn xorshift(x: &mut u64) -> u64 {
    *x ^= *x << 13;
    *x ^= *x >> 7;
    *x ^= *x << 17;
    *x
}

fn random_bytes(seed: u64, len: usize) -> Vec<u8> {
    let mut x = 0x2545_F491_4F6C_DD1D ^ seed.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    (0..len.div_ceil(8)).flat_map(|_| xorshift(&mut x).to_le_bytes()).take(len).collect()
}

fn sha256(bytes: &[u8]) -> Digest {
    use sha2::Digest as _;
    format!("sha256:{}", hex::encode(sha2::Sha256::digest(bytes))).parse().unwrap()
}

/// One row of the block index, as the node writes it.
struct BlockRow {
    multihash: Vec<u8>,
    codec: u64,
    blob: Option<String>,
    offset: Option<i64>,
    length: i64,
    data: Option<Vec<u8>>,
    owner_kind: &'static str,
    owner: String,
}

impl BlockRow {
    fn inline(cid: cid::Cid, data: Vec<u8>, owner_kind: &'static str, owner: &str) -> Self {
        BlockRow {
            multihash: cid.hash().to_bytes(),
            codec: cid.codec(),
            blob: None,
            offset: None,
            length: data.len() as i64,
            data: Some(data),
            owner_kind,
            owner: owner.to_string(),
        }
    }
}

#[derive(Default)]
struct Dag {
    leaves: Vec<(cid::Cid, u64, u64)>,
    nodes: Vec<(cid::Cid, Vec<u8>)>,
}

impl BlockSink for Dag {
    fn block(&mut self, block: NewBlock<'_>) {
        match block {
            NewBlock::Leaf { cid, offset, len } => self.leaves.push((cid, offset, len)),
            NewBlock::Node { cid, bytes } => self.nodes.push((cid, bytes.to_vec())),
        }
    }
}

/// A blob: its file's bytes, digest, DAG root and the block rows of its DAG.
struct Blob {
    bytes: Vec<u8>,
    digest: Digest,
    root: Root,
    rows: Vec<BlockRow>,
}

fn blob(bytes: Vec<u8>) -> Blob {
    let digest = sha256(&bytes);
    let mut dag = Dag::default();
    let mut importer = Importer::with_layout(LEAF, 1024);
    importer.update(&bytes, &mut dag);
    let root = importer.finish(&mut dag);
    let owner = digest.to_string();
    let mut rows: Vec<BlockRow> = dag
        .leaves
        .into_iter()
        .map(|(cid, offset, len)| BlockRow {
            multihash: cid.hash().to_bytes(),
            codec: cid.codec(),
            blob: Some(owner.clone()),
            offset: Some(offset as i64),
            length: len as i64,
            data: None,
            owner_kind: "blob",
            owner: owner.clone(),
        })
        .collect();
    rows.extend(dag.nodes.into_iter().map(|(cid, data)| BlockRow::inline(cid, data, "blob", &owner)));
    Blob { bytes, digest, root, rows }
}

/// One manifest of a repository, with its tags.
struct ManifestRows {
    digest: Digest,
    content: Vec<u8>,
    annotations: Option<String>,
    image_cid: String,
    tags: Vec<(String, String)>,
}

/// Everything one repository adds.
struct Repo {
    name: String,
    blobs: Vec<Blob>,
    manifests: Vec<ManifestRows>,
    blocks: Vec<BlockRow>,
}

fn repository(index: u64, name: String, manifests: u64, tags_each: u64) -> Repo {
    let config = blob(format!(r#"{{"architecture":"amd64","os":"linux","rootfs":{{"type":"layers","diff_ids":[]}},"seed":{index}}}"#).into_bytes());
    let layer = blob(random_bytes(index, LEAF * LEAVES));
    let mut blocks = Vec::new();
    let mut rows = Vec::new();
    for m in 0..manifests {
        let content = serde_json::to_vec(&serde_json::json!({
            "schemaVersion": 2,
            "mediaType": MANIFEST,
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config.digest.to_string(), "size": config.bytes.len()},
            "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": layer.digest.to_string(), "size": layer.bytes.len()}],
            "annotations": {"org.opencontainers.image.version": format!("v{m}")},
        }))
        .unwrap();
        let parsed = af_registry::manifest::parse(Some(MANIFEST), &content).unwrap();
        let digest = sha256(&content);
        let mut layout = LayoutBlobs::default();
        layout.add_blob(config.digest.clone(), config.root.clone());
        layout.add_blob(layer.digest.clone(), layer.root.clone());
        layout.add_manifest(digest.clone(), &content, Profile::default());
        let top = TopManifest { repository: &name, media_type: MANIFEST, digest: &digest, size: content.len() as u64 };
        let untagged = image::build(&top, &layout, None, Profile::default());
        let image_cid = untagged.root.to_string();
        let mut image_blocks = untagged.blocks;
        let tags: Vec<String> = if manifests == 1 { (0..tags_each).map(|t| format!("t{t}")).collect() } else { vec![format!("v{m}")] };
        let mut named = Vec::new();
        for tag in tags {
            let dag = image::build(&top, &layout, Some(&tag), Profile::default());
            named.push((tag, dag.root.to_string()));
            image_blocks.extend(dag.blocks);
        }
        image_blocks.sort_by_key(|b| b.0);
        image_blocks.dedup_by(|a, b| a.0 == b.0);
        blocks.extend(image_blocks.into_iter().map(|(cid, data)| BlockRow::inline(cid, data, "image", &image_cid)));
        rows.push(ManifestRows { digest, content, annotations: parsed.annotations, image_cid, tags: named });
    }
    Repo { name, blobs: vec![config, layer], manifests: rows, blocks }
}

/// Opens a store for bulk loading: no journal, no syncs (the load is redone if it fails).
fn bulk(path: &Path) -> Connection {
    let conn = Connection::open(path).unwrap();
    conn.execute_batch("PRAGMA journal_mode = DELETE; PRAGMA journal_mode = OFF; PRAGMA synchronous = OFF; PRAGMA cache_size = -2000000;").unwrap();
    conn
}

/// Drops the secondary indexes (rebuilt by [`reindex`] after the load, much faster than kept).
fn unindex(conn: &Connection) -> Vec<String> {
    let indexes: Vec<(String, String)> = conn
        .prepare("SELECT name, sql FROM sqlite_master WHERE type = 'index' AND sql IS NOT NULL")
        .unwrap()
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    for (name, _) in &indexes {
        conn.execute_batch(&format!("DROP INDEX {name}")).unwrap();
    }
    indexes.into_iter().map(|(_, sql)| sql).collect()
}

fn reindex(conn: &Connection, indexes: &[String]) {
    for sql in indexes {
        conn.execute_batch(sql).unwrap();
    }
    conn.execute_batch("PRAGMA journal_mode = WAL; ANALYZE;").unwrap();
}

/// Writes a blob file with the modes the node gives its own (0600 in 0700 directories), so a
/// start does not spend its time repairing them.
fn write_private(path: &Path, bytes: &[u8]) {
    use std::io::Write;
    use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
    std::fs::DirBuilder::new().recursive(true).mode(0o700).create(path.parent().unwrap()).unwrap();
    let mut f = std::fs::OpenOptions::new().create(true).write(true).truncate(true).mode(0o600).open(path).unwrap();
    f.write_all(bytes).unwrap();
}

/// Fills the (new) data directory `dir` with `shape`.
fn fill(dir: &Path, shape: Shape) -> Filled {
    let started = Instant::now();
    let _ = std::fs::remove_dir_all(dir);
    std::fs::create_dir_all(dir).unwrap();
    let (node, _) = Node::start(dir);
    node.stop();
    let meta = bulk(&dir.join("metadata.sqlite"));
    let blocks = bulk(&dir.join("blocks.sqlite"));
    let meta_indexes = unindex(&meta);
    let block_indexes = unindex(&blocks);
    meta.execute_batch("BEGIN").unwrap();
    blocks.execute_batch("BEGIN").unwrap();
    let then = af_registry::clock::unix_now() - 86_400;
    let mut filled = Filled::default();
    // Repositories are made on another thread while this one writes them.
    let (send, receive) = std::sync::mpsc::sync_channel::<Repo>(256);
    let repos = shape.repos;
    let wide_tags = shape.wide_tags;
    let maker = std::thread::spawn(move || {
        for i in 0..repos {
            send.send(repository(i, format!("scale/r{i:06}"), TAGS, 1)).unwrap();
        }
        send.send(repository(repos, "scale/wide".into(), 1, wide_tags)).unwrap();
    });
    {
        let mut repo_row = meta.prepare("INSERT INTO repositories (id, name, visibility, created_at) VALUES (?1, ?2, 'public', ?3)").unwrap();
        let mut blob_row = meta.prepare("INSERT OR IGNORE INTO blobs (digest, size, root_cid, created_at) VALUES (?1, ?2, ?3, ?4)").unwrap();
        let mut link = meta.prepare("INSERT INTO repository_blobs (repository_id, digest, touched_at) VALUES (?1, ?2, ?3)").unwrap();
        let mut manifest = meta
            .prepare(
                "INSERT INTO manifests (repository_id, digest, media_type, annotations, content, image_cid, created_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            )
            .unwrap();
        let mut reference = meta.prepare("INSERT INTO manifest_references (repository_id, manifest_digest, child_digest, kind) VALUES (?1, ?2, ?3, 'blob')").unwrap();
        let mut tag_row = meta.prepare("INSERT INTO tags (repository_id, name, manifest_digest, image_cid, updated_at) VALUES (?1, ?2, ?3, ?4, ?5)").unwrap();
        let mut block = blocks
            .prepare(
                "INSERT OR IGNORE INTO blocks (multihash, codec, blob, offset, length, data, owner_kind, owner, created_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
            )
            .unwrap();
        for (id, repo) in receive.iter().enumerate() {
            let id = id as i64 + 1;
            repo_row.execute(params![id, repo.name, then]).unwrap();
            filled.repos += 1;
            for b in &repo.blobs {
                write_private(&dir.join("blobs/sha256").join(&b.digest.hex()[..2]).join(b.digest.hex()), &b.bytes);
                blob_row.execute(params![b.digest.to_string(), b.bytes.len() as i64, b.root.cid.to_string(), then]).unwrap();
                link.execute(params![id, b.digest.to_string(), then]).unwrap();
                filled.blob_bytes += b.bytes.len() as u64;
            }
            for m in &repo.manifests {
                manifest.execute(params![id, m.digest.to_string(), MANIFEST, m.annotations, m.content, m.image_cid, then]).unwrap();
                filled.manifests += 1;
                for b in &repo.blobs {
                    reference.execute(params![id, m.digest.to_string(), b.digest.to_string()]).unwrap();
                }
                for (tag, image_cid) in &m.tags {
                    tag_row.execute(params![id, tag, m.digest.to_string(), image_cid, then]).unwrap();
                    filled.tags += 1;
                }
            }
            for r in repo.blobs.iter().flat_map(|b| &b.rows).chain(&repo.blocks) {
                let row = params![r.multihash, r.codec as i64, r.blob, r.offset, r.length, r.data, r.owner_kind, r.owner, then];
                filled.blocks += block.execute(row).unwrap() as u64;
            }
        }
    }
    maker.join().unwrap();
    meta.execute_batch("COMMIT").unwrap();
    blocks.execute_batch("COMMIT").unwrap();
    reindex(&meta, &meta_indexes);
    reindex(&blocks, &block_indexes);
    drop((meta, blocks));
    filled.seconds = started.elapsed().as_secs_f64();
    filled
}

/// The data directory of `shape`, filled now or by an earlier run.
fn prepared(shape: Shape) -> (PathBuf, Filled) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/bench-scale").join(shape.name);
    let marker = dir.with_extension("filled");
    let expected = format!("{} {}", shape.repos, shape.wide_tags);
    let reuse = std::env::var_os("AF_SCALE_REFILL").is_none() && std::fs::read_to_string(dir.with_extension("shape")).is_ok_and(|s| s == expected);
    if reuse {
        if let Some(filled) = Filled::load(&marker) {
            println!("{}: reusing {} (AF_SCALE_REFILL=1 makes it again)", shape.name, dir.display());
            return (dir, filled);
        }
    }
    let _ = std::fs::remove_file(&marker);
    println!("{}: filling {} ...", shape.name, dir.display());
    let filled = fill(&dir, shape);
    filled.save(&marker);
    std::fs::write(dir.with_extension("shape"), expected).unwrap();
    (dir, filled)
}

fn percentile(v: &mut [f64], p: f64) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[((v.len() as f64 * p).ceil() as usize).clamp(1, v.len()) - 1]
}

/// Waits until process `pid` uses under 5% of a core for two seconds running; returns how long
/// that took.
fn idle(pid: u32) -> f64 {
    let started = Instant::now();
    let ticks = || -> u64 {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
        let fields: Vec<&str> = stat.rsplit_once(')').unwrap().1.split_whitespace().collect();
        fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap()
    };
    let mut quiet = 0;
    while quiet < 2 {
        let before = ticks();
        std::thread::sleep(Duration::from_secs(1));
        quiet = if ticks() - before < 5 { quiet + 1 } else { 0 };
        assert!(started.elapsed() < Duration::from_secs(1800), "the node never came to rest");
    }
    started.elapsed().as_secs_f64() - 2.0
}

/// Walks a paged listing from `first` by its `Link` headers; returns each page's milliseconds
/// and the entries seen.
fn walk(base: &str, first: &str, key: &str) -> (Vec<f64>, u64) {
    let client = reqwest::blocking::Client::new();
    let (mut times, mut entries) = (Vec::new(), 0u64);
    let mut next = Some(first.to_string());
    while let Some(path) = next.take() {
        let t = Instant::now();
        let r = client.get(format!("{base}{path}")).send().unwrap();
        assert!(r.status().is_success(), "{path}: {}", r.status());
        next = r.headers().get("link").and_then(|l| l.to_str().ok()).and_then(|l| l.split_once('<').and_then(|(_, rest)| rest.split_once('>')).map(|(p, _)| p.to_string()));
        let body: serde_json::Value = r.json().unwrap();
        times.push(t.elapsed().as_secs_f64() * 1e3);
        entries += body[key].as_array().map_or(0, |a| a.len() as u64);
    }
    (times, entries)
}

/// Runs `af registry <args>` on `dir`: (seconds, peak anonymous memory in MiB, its output).
/// Anonymous memory, not RSS: the stores are read through a memory map, whose pages (the page
/// cache's, shared and reclaimable) RSS counts as the process's own.
fn offline(dir: &Path, args: &[&str]) -> (f64, f64, String) {
    let started = Instant::now();
    let mut child = Command::new(env!("CARGO_BIN_EXE_af")).arg("registry").args(args).arg("--data-dir").arg(dir).env("AF_LOG", "warn").stdout(Stdio::piped()).spawn().unwrap();
    let status_file = format!("/proc/{}/status", child.id());
    let mut peak_kib = 0u64;
    while child.try_wait().unwrap().is_none() {
        let anon = std::fs::read_to_string(&status_file)
            .ok()
            .and_then(|s| s.lines().find_map(|l| l.strip_prefix("RssAnon:")).and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok()));
        peak_kib = peak_kib.max(anon.unwrap_or(0));
        std::thread::sleep(Duration::from_millis(50));
    }
    let out = child.wait_with_output().unwrap();
    let seconds = started.elapsed().as_secs_f64();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "af registry {args:?}: {stdout}");
    (seconds, peak_kib as f64 / 1024.0, stdout.trim().to_string())
}

fn file_size(path: &Path) -> u64 {
    std::fs::metadata(path).map_or(0, |m| m.len())
}

/// The figures of one node.
#[derive(Default, Debug)]
struct Figures {
    startup_clean: f64,
    startup_crash: f64,
    busy_after_start: f64,
    manifest_rps: f64,
    manifest_p99: f64,
    catalog_p99: f64,
    catalog_pages: usize,
    tags_p99: f64,
    tags_pages: usize,
    gc_seconds: f64,
    gc_rss: f64,
    verify_seconds: f64,
    verify_rss: f64,
    /// Bytes of the two SQLite stores that are not content (rows, keys, indexes, free pages).
    index_bytes: u64,
    /// Bytes stored: blob files, inline blocks, manifests.
    stored_bytes: u64,
}

fn measure(dir: &Path, shape: Shape, filled: &Filled) -> Figures {
    let mut f = Figures::default();
    // Start-up: the median of three after a clean stop, then one after kill -9 (the node then
    // checks every page of the stores it can afford to).
    let mut clean = Vec::new();
    for _ in 0..3 {
        let (node, took) = Node::start(dir);
        clean.push(took.as_secs_f64());
        node.stop();
    }
    f.startup_clean = median(&mut clean);
    let (node, _) = Node::start(dir);
    drop(node);
    let (node, took) = Node::start(dir);
    f.startup_crash = took.as_secs_f64();
    // Requests are measured on a node at rest: after a start it works through what it announces
    // on the DHT (a rescan, bounded by what the DHT store holds), which is timed here.
    f.busy_after_start = idle(node.child.0.id());

    // Manifest GETs by tag, picked at random across the whole registry.
    let mut x = 0x9E37_79B9_7F4A_7C15u64;
    let paths: Vec<String> = (0..20_000)
        .map(|_| {
            let r = xorshift(&mut x) % shape.repos;
            let t = xorshift(&mut x) % TAGS;
            format!("\"/v2/scale/r{r:06}/manifests/v{t}\"")
        })
        .collect();
    let script = dir.with_extension("lua");
    std::fs::write(
        &script,
        format!("local paths = {{{}}}\nlocal i = 0\nrequest = function()\n  i = i + 1\n  return wrk.format(\"GET\", paths[(i % #paths) + 1])\nend\n", paths.join(",")),
    )
    .unwrap();
    let accept = format!("Accept: {MANIFEST}");
    (f.manifest_rps, f.manifest_p99) = wrk_script_load(&format!("{}/v2/", node.base), &[&accept], Some(&script), shape.name);

    // Paging, walked three times.
    let (mut catalog, mut tags) = (Vec::new(), Vec::new());
    for _ in 0..3 {
        let (times, repos) = walk(&node.base, "/v2/_catalog?n=100", "repositories");
        assert_eq!(repos, filled.repos, "the catalog lists every repository");
        f.catalog_pages = times.len();
        catalog.extend(times);
        let (times, listed) = walk(&node.base, "/v2/scale/wide/tags/list?n=100", "tags");
        assert_eq!(listed, shape.wide_tags, "the tag list lists every tag");
        f.tags_pages = times.len();
        tags.extend(times);
    }
    f.catalog_p99 = percentile(&mut catalog, 0.99);
    f.tags_p99 = percentile(&mut tags, 0.99);
    node.stop();

    let (seconds, rss, out) = offline(dir, &["gc", "--grace", "1h"]);
    assert!(out.contains("removed 0 manifests, 0 blob links, 0 blobs"), "the GC removed content that is tagged: {out}");
    (f.gc_seconds, f.gc_rss) = (seconds, rss);
    let (seconds, rss, out) = offline(dir, &["verify"]);
    assert!(out.ends_with(": 0 corrupt"), "verify: {out}");
    (f.verify_seconds, f.verify_rss) = (seconds, rss);

    let meta = Connection::open(dir.join("metadata.sqlite")).unwrap();
    let blocks = Connection::open(dir.join("blocks.sqlite")).unwrap();
    let manifest_bytes: i64 = meta.query_row("SELECT coalesce(sum(length(content)), 0) FROM manifests", [], |r| r.get(0)).unwrap();
    let inline_bytes: i64 = blocks.query_row("SELECT coalesce(sum(length), 0) FROM blocks WHERE data IS NOT NULL", [], |r| r.get(0)).unwrap();
    drop((meta, blocks));
    let store_bytes: u64 = ["metadata.sqlite", "metadata.sqlite-wal", "blocks.sqlite", "blocks.sqlite-wal"].iter().map(|n| file_size(&dir.join(n))).sum();
    f.stored_bytes = filled.blob_bytes + manifest_bytes as u64 + inline_bytes as u64;
    f.index_bytes = store_bytes - manifest_bytes as u64 - inline_bytes as u64;
    f
}

fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    let repos: u64 = std::env::var("AF_SCALE_REPOS").ok().and_then(|v| v.parse().ok()).unwrap_or(100_000);
    let small = Shape { name: "small", repos: (repos / 100).max(10), wide_tags: 1_000 };
    let large = Shape { name: "large", repos, wide_tags: 100_000 };
    let mut results = Vec::new();
    for shape in [small, large] {
        let (dir, filled) = prepared(shape);
        println!(
            "{}: {} repositories, {} tags, {} manifests, {} blocks, {:.2} GB of blobs (filled in {:.0} s)",
            shape.name,
            filled.repos,
            filled.tags,
            filled.manifests,
            filled.blocks,
            filled.blob_bytes as f64 / 1e9,
            filled.seconds
        );
        settle();
        let figures = measure(&dir, shape, &filled);
        println!("{}: {figures:?}", shape.name);
        results.push((filled, figures));
    }
    let [(fs, s), (fl, l)] = [&results[0], &results[1]];
    let per = |v: f64, n: u64| v / n as f64 * 1e6;
    println!();
    println!("scale: {} blocks against {} ({:.0}x)", fl.blocks, fs.blocks, fl.blocks as f64 / fs.blocks as f64);
    println!("{:<38} {:>12} {:>12} {:>10}  target", "", "small", "large", "large/small");
    let row = |name: &str, a: f64, b: f64, target: &str| println!("{name:<38} {a:>12.2} {b:>12.2} {:>10.2}  {target}", b / a);
    row("start-up after a clean stop, s", s.startup_clean, l.startup_clean, "large under 2 s");
    row("start-up after kill -9, s", s.startup_crash, l.startup_crash, "");
    row("busy after start (DHT announcements), s", s.busy_after_start, l.busy_after_start, "");
    row("manifest GET, requests/s", s.manifest_rps, l.manifest_rps, "");
    row("manifest GET p99, ms", s.manifest_p99, l.manifest_p99, "ratio within 2");
    row("_catalog page (n=100) p99, ms", s.catalog_p99, l.catalog_p99, "ratio within 2");
    row("tag-list page (n=100) p99, ms", s.tags_p99, l.tags_p99, "ratio within 2");
    row("gc, s", s.gc_seconds, l.gc_seconds, "");
    row("gc, s per million blocks", per(s.gc_seconds, fs.blocks), per(l.gc_seconds, fl.blocks), "linear: ratio near 1");
    row("gc peak anonymous memory, MiB", s.gc_rss, l.gc_rss, "");
    row("verify, s", s.verify_seconds, l.verify_seconds, "");
    row("verify, s per million blocks", per(s.verify_seconds, fs.blocks), per(l.verify_seconds, fl.blocks), "linear: ratio near 1");
    row("verify peak anonymous memory, MiB", s.verify_rss, l.verify_rss, "");
    let per_block = |f: &Figures, n: &Filled| f.index_bytes as f64 / n.blocks as f64;
    row("index bytes per block", per_block(s, fs), per_block(l, fl), "");
    let overhead = |f: &Figures| f.index_bytes as f64 / f.stored_bytes as f64 * 100.0;
    row("index overhead, % of stored bytes", overhead(s), overhead(l), "under 1% (1 KiB leaves here)");
    // With a real layer's 1 MiB leaves the same rows index 1024 times the bytes.
    let real = |f: &Figures, n: &Filled| f.index_bytes as f64 / (f.stored_bytes as f64 + n.blob_bytes as f64 * 1023.0) * 100.0;
    row("  the same with 1 MiB leaves, %", real(s, fs), real(l, fl), "under 1%");
    println!("(pages: catalog {} / {}, tags {} / {})", s.catalog_pages, l.catalog_pages, s.tags_pages, l.tags_pages);
}
