//! Root CIDs of af (`af cid` and the library importer) against two independent implementations:
//! Kubo (`ipfs add --only-hash`) and the JavaScript importer `ipfs-unixfs-importer`, on the edge
//! sizes of each profile (0, 1, a chunk ±1, max-links × chunk ±1), on trees of depth 3 and 4
//! (small chunks and fan-out, as Kubo's `--chunker` and `Import.UnixFSFileMaxLinks` allow) and on
//! random sizes and contents. The random seed is printed; `AF_INTEROP_SEED` replays one.

mod common;
use af_registry::unixfs::{Importer, Profile};
use common::{run, Kubo, Rng};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;

fn write_random(dir: &Path, rng: &mut Rng, size: u64) -> PathBuf {
    let path = dir.join(format!("f-{size}-{}", rng.next()));
    let mut f = std::io::BufWriter::new(std::fs::File::create(&path).unwrap());
    let mut left = size;
    while left > 0 {
        let word = rng.next().to_le_bytes();
        let n = left.min(8) as usize;
        f.write_all(&word[..n]).unwrap();
        left -= n as u64;
    }
    f.flush().unwrap();
    path
}

fn kubo_cid(kubo: &Kubo, file: &Path, chunk: usize, links: usize) -> String {
    run(kubo.cmd().args(["config", "--json", "Import.UnixFSFileMaxLinks", &links.to_string()]));
    let out = run(kubo.cmd().args(["add", "--only-hash", "-Q", "--cid-version=1", "--raw-leaves", &format!("--chunker=size-{chunk}")]).arg(file));
    out.trim().to_string()
}

fn js_cid(file: &Path, chunk: usize, links: usize) -> String {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/interop/unixfs-cid.mjs");
    run(Command::new("node").arg(script).arg(file).arg(chunk.to_string()).arg(links.to_string())).trim().to_string()
}

fn af_cli_cid(file: &Path, profile: Profile) -> String {
    run(Command::new(env!("CARGO_BIN_EXE_af")).args(["cid", "--profile", profile.name()]).arg(file)).trim().to_string()
}

fn af_lib_cid(file: &Path, chunk: usize, links: usize) -> String {
    let data = std::fs::read(file).unwrap();
    let mut imp = Importer::with_layout(chunk, links);
    imp.update(&data, &mut ());
    imp.finish(&mut ()).cid.to_string()
}

#[test]
fn root_cids_match_kubo_and_the_js_importer() {
    let seed = std::env::var("AF_INTEROP_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as u64 | 1);
    eprintln!("AF_INTEROP_SEED={seed}");
    let mut rng = Rng(seed);
    let dir = tempfile::tempdir().unwrap();
    let kubo = Kubo::new();
    let mut checked = 0;

    // The two profiles, through `af cid`.
    for (profile, max_sizes) in [(Profile::KuboV1, true), (Profile::UnixfsV1_2025, false)] {
        let (c, l) = (profile.chunk_size() as u64, profile.max_links() as u64);
        let mut sizes = vec![0, 1, c - 1, c, c + 1, 2 * c + 7];
        if max_sizes {
            // unixfs-v1-2025's links × chunk is 1 GiB: Kubo's own vectors cover it.
            sizes.extend([l * c - 1, l * c, l * c + 1]);
        }
        for _ in 0..3 {
            sizes.push(rng.below(4 * c));
        }
        for size in sizes {
            let file = write_random(dir.path(), &mut rng, size);
            let ours = af_cli_cid(&file, profile);
            assert_eq!(ours, kubo_cid(&kubo, &file, c as usize, l as usize), "Kubo, {profile}, {size} bytes, seed {seed}");
            assert_eq!(ours, js_cid(&file, c as usize, l as usize), "JS importer, {profile}, {size} bytes, seed {seed}");
            std::fs::remove_file(file).unwrap();
            checked += 1;
        }
    }

    // Deep trees with little data: depth 3 and 4 at 1 KiB chunks and 4 links; depth 3 at 11.
    for (chunk, links) in [(1024usize, 4usize), (4096, 11)] {
        let (c, l) = (chunk as u64, links as u64);
        let mut sizes = vec![l * l * c - 1, l * l * c, l * l * c + 1, l * l * l * c + 1];
        for _ in 0..3 {
            sizes.push(rng.below(l * l * l * c * 2));
        }
        for size in sizes {
            let file = write_random(dir.path(), &mut rng, size);
            let ours = af_lib_cid(&file, chunk, links);
            assert_eq!(ours, kubo_cid(&kubo, &file, chunk, links), "Kubo, {chunk}/{links}, {size} bytes, seed {seed}");
            assert_eq!(ours, js_cid(&file, chunk, links), "JS importer, {chunk}/{links}, {size} bytes, seed {seed}");
            std::fs::remove_file(file).unwrap();
            checked += 1;
        }
    }
    eprintln!("{checked} files: af, Kubo and ipfs-unixfs-importer agree");
}

/// Directories around Kubo's sharding threshold, plain and HAMT, for both profiles: the same
/// root CIDs as `ipfs add -r` (Kubo's default import settings for kubo-v1, and its
/// `unixfs-v1-2025` profile, whose threshold is the block size rather than the links' size).
#[test]
fn directories_shard_as_kubo_shards_them() {
    use af_registry::unixfs::{directory_for, DirEntry};
    let kubo_default = Kubo::new();
    let kubo_2025 = Kubo::new();
    run(kubo_2025.cmd().args(["config", "profile", "apply", "unixfs-v1-2025"]));
    // Names like an image layout's blobs/sha256: 64 hex digits.
    let name = |i: usize| {
        use sha2::Digest as _;
        hex::encode(sha2::Sha256::digest(i.to_string().as_bytes()))
    };
    for (count, extra) in [(10, None), (2427, None), (2426, Some("z".repeat(87))), (2426, Some("z".repeat(88))), (2621, None), (2622, None), (3000, None)] {
        let dir = tempfile::tempdir().unwrap();
        let mut entries = Vec::new();
        let mut names: Vec<String> = (0..count).map(name).collect();
        names.extend(extra.clone());
        for (i, n) in names.iter().enumerate() {
            let content = i.to_string();
            std::fs::write(dir.path().join(n), &content).unwrap();
            let digest: [u8; 32] = <sha2::Sha256 as sha2::Digest>::digest(content.as_bytes()).into();
            entries.push(DirEntry { name: n.clone(), cid: af_registry::unixfs::cid_v1(af_registry::unixfs::RAW, &digest), tsize: content.len() as u64 });
        }
        let path = dir.path().to_str().unwrap();
        let theirs = |k: &Kubo| run(k.cmd().args(["add", "-r", "-Q", "--only-hash", "--cid-version=1", "--raw-leaves", path])).trim().to_string();
        let (ours, _) = directory_for(entries.clone(), Profile::KuboV1);
        assert_eq!(ours.cid.to_string(), theirs(&kubo_default), "kubo-v1, {count} entries + {extra:?}");
        let (ours, _) = directory_for(entries, Profile::UnixfsV1_2025);
        assert_eq!(ours.cid.to_string(), theirs(&kubo_2025), "unixfs-v1-2025, {count} entries + {extra:?}");
    }
}
