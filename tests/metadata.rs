//! One behavioural suite for the metadata store, run against both backends: SQLite (a file in a
//! temp dir) and a real PostgreSQL server (`AF_TEST_POSTGRES_URL`, started by
//! scripts/postgres.sh; each test gets a throwaway database). Every scenario runs on both, so the
//! backends cannot drift apart.

use af_registry::digest::Digest;
use af_registry::metadata::postgres::PgStore;
use af_registry::metadata::sqlite::SqliteStore;
use af_registry::metadata::*;
use bytes::Bytes;
use std::collections::HashMap;
use std::sync::Arc;

fn digest(s: &str) -> Digest {
    Digest::of_bytes(af_registry::digest::Algorithm::Sha256, s.as_bytes())
}

fn info() -> BlobInfo {
    BlobInfo { size: 7, root_cid: "bafkreia".into(), touched_at: 0 }
}

/// A fresh store of the backend; the value it also returns keeps it alive (temp dir, database).
enum Keep {
    Dir(#[allow(dead_code)] tempfile::TempDir),
    Database { admin: String, name: String },
}

impl Drop for Keep {
    fn drop(&mut self) {
        if let Keep::Database { admin, name } = self {
            let _ = std::process::Command::new("psql").arg(admin.as_str()).args(["-qc", &format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)")]).output();
        }
    }
}

async fn sqlite() -> (Arc<dyn MetadataStore>, Keep) {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(&dir.path().join("m.sqlite")).unwrap();
    (store, Keep::Dir(dir))
}

async fn postgres() -> (Arc<dyn MetadataStore>, Keep) {
    let (url, keep) = pg_database();
    (PgStore::connect(&url).await.unwrap(), keep)
}

/// A new, empty database on the test server: its URL and what drops it.
fn pg_database() -> (String, Keep) {
    let admin = std::env::var("AF_TEST_POSTGRES_URL").expect("AF_TEST_POSTGRES_URL: run scripts/test.sh, or start a server with scripts/postgres.sh");
    let name = format!("af_test_{}", uuid::Uuid::new_v4().simple());
    let out = std::process::Command::new("psql").arg(&admin).args(["-qc", &format!("CREATE DATABASE {name}")]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let url = format!("{}/{name}", admin.rsplit_once('/').unwrap().0);
    (url, Keep::Database { admin, name })
}

macro_rules! both {
    ($name:ident) => {
        mod $name {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite() {
                let (store, _keep) = super::sqlite().await;
                super::$name(store).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres() {
                let (store, _keep) = super::postgres().await;
                super::$name(store).await;
            }
        }
    };
}

fn manifest(blobs: &[&Digest], children: &[&Digest], subject: Option<&Digest>, tags: &[&str]) -> NewManifest {
    let body = format!("{blobs:?}{children:?}{subject:?}");
    let mut tag_images = HashMap::new();
    for t in tags {
        tag_images.insert(t.to_string(), format!("image-{t}"));
    }
    NewManifest {
        record: ManifestRecord {
            digest: digest(&body),
            media_type: "application/vnd.oci.image.manifest.v1+json".into(),
            artifact_type: None,
            subject: subject.cloned(),
            annotations: None,
            content: Bytes::from(body),
            image_cid: Some("image-untagged".into()),
        },
        blobs: blobs.iter().map(|d| (*d).clone()).collect(),
        manifests: children.iter().map(|d| (*d).clone()).collect(),
        tags: tags.iter().map(|t| t.to_string()).collect(),
        tag_images,
        require_references: true,
    }
}

both!(blobs_live_in_repositories);
async fn blobs_live_in_repositories(m: Arc<dyn MetadataStore>) {
    let d = digest("a");
    assert_eq!(m.blob_info("r", &d).await.unwrap(), None);
    m.commit_blob("r", &d, &info(), None).await.unwrap();
    let got = m.blob_info("r", &d).await.unwrap().unwrap();
    assert_eq!((got.size, got.root_cid.as_str()), (7, "bafkreia"));
    assert_eq!(m.blob_info("other", &d).await.unwrap(), None);
    assert_eq!(m.mount_blob("other", Some("nope"), &d).await.unwrap(), None);
    assert_eq!(m.mount_blob("other", Some("r"), &d).await.unwrap(), Some(7));
    assert_eq!(m.mount_blob("third", None, &d).await.unwrap(), Some(7));
    assert!(m.blob_info("other", &d).await.unwrap().is_some());
    assert!(m.unlink_blob("other", &d).await.unwrap());
    assert!(!m.unlink_blob("other", &d).await.unwrap());
    assert_eq!(m.blob_by_root("bafkreia").await.unwrap(), Some(d.clone()));
    m.mark_blob_missing(&d).await.unwrap();
    assert_eq!(m.blob_info("r", &d).await.unwrap(), None);
    assert!(m.list_blobs().await.unwrap().is_empty());
    // Committing it again repairs it.
    m.commit_blob("r", &d, &info(), None).await.unwrap();
    assert_eq!(m.list_blobs().await.unwrap(), vec![(d, 7)]);
}

both!(manifests_tags_and_referrers);
async fn manifests_tags_and_referrers(m: Arc<dyn MetadataStore>) {
    let (b1, b2) = (digest("b1"), digest("b2"));
    let first = manifest(&[&b1], &[], None, &["v1"]);
    assert_eq!(m.put_manifest("r", first.clone()).await.unwrap(), PutManifestOutcome::MissingReference(b1.clone()));
    assert!(m.get_manifest("r", &Reference::Tag("v1".into())).await.unwrap().is_none(), "nothing half-stored");
    m.commit_blob("r", &b1, &info(), None).await.unwrap();
    m.commit_blob("r", &b2, &info(), None).await.unwrap();
    assert_eq!(m.put_manifest("r", first.clone()).await.unwrap(), PutManifestOutcome::Stored);
    let by_tag = m.get_manifest("r", &Reference::Tag("v1".into())).await.unwrap().unwrap();
    assert_eq!(by_tag.digest, first.record.digest);
    assert_eq!(by_tag.content, first.record.content);
    assert_eq!(by_tag.image_cid.as_deref(), Some("image-v1"));
    let by_digest = m.get_manifest("r", &Reference::Digest(first.record.digest.clone())).await.unwrap().unwrap();
    assert_eq!(by_digest.image_cid.as_deref(), Some("image-untagged"));
    // The tag moves; the referrer is listed under its subject.
    let second = manifest(&[&b2], &[], Some(&first.record.digest), &["v1", "v2"]);
    m.put_manifest("r", second.clone()).await.unwrap();
    let moved = m.get_manifest("r", &Reference::Tag("v1".into())).await.unwrap().unwrap();
    assert_eq!(moved.digest, second.record.digest);
    let whole = ReferrerPage { after: None, budget: 1 << 20, max: 1000 };
    let (refs, more) = m.referrers("r", &first.record.digest, None, &whole).await.unwrap();
    assert!(!more);
    assert_eq!(refs.len(), 1);
    assert!(m.referrers("r", &first.record.digest, Some("other/type"), &whole).await.unwrap().0.is_empty());
    assert_eq!(refs[0].digest, second.record.digest);
    assert_eq!(refs[0].size, second.record.content.len() as u64);
    // An index needs its children.
    let missing_child = digest("nope");
    let index = manifest(&[], &[&missing_child], None, &[]);
    assert_eq!(m.put_manifest("r", index).await.unwrap(), PutManifestOutcome::MissingReference(missing_child));
    // Pagination of tags and repositories.
    let page = |last: Option<&str>, limit| Page { last: last.map(str::to_string), limit };
    assert_eq!(m.list_tags("r", &page(None, None)).await.unwrap().unwrap(), ["v1", "v2"]);
    assert_eq!(m.list_tags("r", &page(Some("v1"), Some(5))).await.unwrap().unwrap(), ["v2"]);
    assert_eq!(m.list_tags("unknown", &page(None, None)).await.unwrap(), None);
    m.commit_blob("a/b", &b1, &info(), None).await.unwrap();
    m.commit_blob("Z", &b1, &info(), None).await.unwrap();
    assert_eq!(m.list_repositories(&page(None, None)).await.unwrap(), ["Z", "a/b", "r"]);
    assert_eq!(m.list_repositories(&page(Some("Z"), Some(1))).await.unwrap(), ["a/b"]);
    // Deleting a manifest deletes its tags; deleting a tag leaves the manifest.
    assert!(m.delete_tag("r", "v2").await.unwrap());
    assert!(m.get_manifest("r", &Reference::Digest(second.record.digest.clone())).await.unwrap().is_some());
    assert!(m.delete_manifest("r", &second.record.digest).await.unwrap());
    assert!(m.get_manifest("r", &Reference::Tag("v1".into())).await.unwrap().is_none());
    assert!(!m.delete_manifest("r", &second.record.digest).await.unwrap());
}

both!(upload_sessions);
async fn upload_sessions(m: Arc<dyn MetadataStore>) {
    let id = uuid::Uuid::new_v4();
    assert!(m.create_upload("r", id, "user:alice", 2).await.unwrap());
    // Sessions are capped per owner, atomically: the cap refuses, another owner is not affected.
    assert!(m.create_upload("r", uuid::Uuid::new_v4(), "user:alice", 2).await.unwrap());
    let refused = uuid::Uuid::new_v4();
    assert!(!m.create_upload("r", refused, "user:alice", 2).await.unwrap());
    assert!(m.get_upload(refused).await.unwrap().is_none(), "a refused session leaves no row");
    let other = uuid::Uuid::new_v4();
    assert!(m.create_upload("r", other, "user:bob", 2).await.unwrap());
    for s in m.list_uploads().await.unwrap().into_iter().filter(|s| s.id != id) {
        m.delete_upload(s.id).await.unwrap();
    }
    let s = m.get_upload(id).await.unwrap().unwrap();
    assert_eq!((s.repository.as_str(), s.finishing), ("r", None));
    m.mark_upload_finishing(id, &digest("x")).await.unwrap();
    assert_eq!(m.get_upload(id).await.unwrap().unwrap().finishing, Some(digest("x")));
    assert_eq!(m.list_uploads().await.unwrap().len(), 1);
    assert_eq!(m.idle_uploads(0).await.unwrap(), vec![id]);
    m.touch_upload(id).await.unwrap();
    assert!(m.idle_uploads(3600).await.unwrap().is_empty());
    // Committing the blob of an upload ends it.
    m.commit_blob("r", &digest("x"), &info(), Some(id)).await.unwrap();
    assert!(m.get_upload(id).await.unwrap().is_none());
    assert!(!m.delete_upload(id).await.unwrap());
}

both!(garbage_collection);
async fn garbage_collection(m: Arc<dyn MetadataStore>) {
    let (kept, gone, pinned) = (digest("kept"), digest("gone"), digest("pinned"));
    for d in [&kept, &gone, &pinned] {
        m.commit_blob("r", d, &info(), None).await.unwrap();
    }
    let tagged = manifest(&[&kept], &[], None, &["t"]);
    let untagged = manifest(&[&gone], &[], None, &[]);
    let pin = manifest(&[&pinned], &[], None, &[]);
    for x in [&tagged, &untagged, &pin] {
        m.put_manifest("r", x.clone()).await.unwrap();
    }
    // An index's children live as long as the index; a referrer as long as its subject.
    let (kept_child, gone_child) = (manifest(&[&kept, &pinned], &[], None, &[]), manifest(&[&pinned, &kept], &[], None, &[]));
    let kept_index = manifest(&[], &[&kept_child.record.digest], None, &["index"]);
    let gone_index = manifest(&[], &[&gone_child.record.digest], None, &[]);
    let kept_referrer = manifest(&[], &[], Some(&tagged.record.digest), &[]);
    let gone_referrer = manifest(&[], &[], Some(&untagged.record.digest), &[]);
    for x in [&kept_child, &gone_child, &kept_index, &gone_index, &kept_referrer, &gone_referrer] {
        m.put_manifest("r", x.clone()).await.unwrap();
    }
    assert!(m.pin("r", &Reference::Digest(pin.record.digest.clone())).await.unwrap().is_some());
    assert_eq!(m.list_pins().await.unwrap(), vec![("r".to_string(), pin.record.digest.clone())]);
    // Everything is young: nothing goes.
    let none = m.collect_garbage(af_registry::clock::unix_now() - 3600).await.unwrap();
    assert_eq!((none.manifests, none.links, none.blobs.len()), (0, 0, 0));
    let swept = m.collect_garbage(af_registry::clock::unix_now() + 10).await.unwrap();
    assert_eq!((swept.manifests, swept.links), (4, 1));
    assert_eq!(swept.blobs.iter().map(|b| b.digest.clone()).collect::<Vec<_>>(), vec![gone.clone()]);
    for (x, stays) in [(&kept_child, true), (&kept_index, true), (&kept_referrer, true), (&gone_child, false), (&gone_index, false), (&gone_referrer, false), (&untagged, false)] {
        let found = m.get_manifest("r", &Reference::Digest(x.record.digest.clone())).await.unwrap();
        assert_eq!(found.is_some(), stays, "{:?}", x.record.content);
    }
    assert!(m.blob_info("r", &kept).await.unwrap().is_some());
    assert!(m.blob_info("r", &pinned).await.unwrap().is_some());
    assert!(m.live_roots().await.unwrap().contains(&"image-t".to_string()));
}

both!(accounts_tokens_and_visibility);
async fn accounts_tokens_and_visibility(m: Arc<dyn MetadataStore>) {
    assert!(m.create_user("alice", Some("hash"), false).await.unwrap());
    assert!(!m.create_user("alice", None, true).await.unwrap());
    assert!(m.create_organisation("acme").await.unwrap());
    assert!(!m.create_organisation("alice").await.unwrap(), "names are shared between users and organisations");
    assert!(m.set_member("acme", "alice", Some(Role::Write)).await.unwrap());
    assert_eq!(m.namespace_role("acme", "alice").await.unwrap(), Some(Role::Write));
    assert_eq!(m.namespace_role("alice", "alice").await.unwrap(), Some(Role::Admin));
    assert_eq!(m.namespace_role("bob", "alice").await.unwrap(), None);
    assert!(m.set_member("acme", "alice", None).await.unwrap());
    assert_eq!(m.namespace_role("acme", "alice").await.unwrap(), None);
    let token = TokenRecord {
        id: "0123456789abcdef".into(),
        user: "alice".into(),
        kind: TokenKind::Access,
        secret_hash: "phc".into(),
        scope: Role::Read,
        description: Some("ci".into()),
        expires_at: Some(42),
        revoked: false,
        created_at: 1,
        parent: None,
    };
    m.create_token(&token).await.unwrap();
    let got = m.get_token(&token.id).await.unwrap().unwrap();
    assert_eq!((got.user.as_str(), got.scope, got.expires_at, got.revoked), ("alice", Role::Read, Some(42), false));
    assert_eq!(m.list_tokens(Some("alice")).await.unwrap().len(), 1);
    assert!(m.revoke_token(&token.id).await.unwrap());
    assert!(!m.revoke_token(&token.id).await.unwrap());
    assert!(m.get_token(&token.id).await.unwrap().unwrap().revoked);
    let refresh = TokenRecord { id: "fedcba9876543210".into(), kind: TokenKind::Refresh, parent: Some("token:0123456789abcdef".into()), ..token.clone() };
    m.create_token(&refresh).await.unwrap();
    assert_eq!(m.get_token(&refresh.id).await.unwrap().unwrap().parent.as_deref(), Some("token:0123456789abcdef"));
    assert_eq!(m.list_tokens(Some("alice")).await.unwrap().len(), 2, "refresh tokens are listed too");
    let uid = m.get_user("alice").await.unwrap().unwrap().uid;
    assert_eq!(uid.len(), 16);
    assert!(m.remove_user("alice").await.unwrap());
    assert!(m.get_token(&token.id).await.unwrap().is_none(), "a user's tokens go with it");
    assert!(m.create_user("alice", None, false).await.unwrap());
    assert_ne!(m.get_user("alice").await.unwrap().unwrap().uid, uid, "a user made again is someone else");
    assert_eq!(m.is_public("r").await.unwrap(), None);
    m.set_public("r", true).await.unwrap();
    assert_eq!(m.is_public("r").await.unwrap(), Some(true));
    m.commit_blob("r", &digest("p"), &info(), None).await.unwrap();
    assert!(m.cid_is_public("bafkreia").await.unwrap());
    assert!(m.blob_is_public(&digest("p").to_string()).await.unwrap());
    let key = m.signing_key(vec![1, 2, 3]).await.unwrap();
    assert_eq!(m.signing_key(vec![9]).await.unwrap(), key, "the first key stays");
}

both!(concurrent_pushes_of_the_same_things);
/// Many tasks push the same blob, manifest and tag at once (as several nodes would): every push
/// succeeds, and there is one row of each.
async fn concurrent_pushes_of_the_same_things(m: Arc<dyn MetadataStore>) {
    let blob = digest("shared");
    let mut tasks = Vec::new();
    for i in 0..24 {
        let m = m.clone();
        let blob = blob.clone();
        tasks.push(tokio::spawn(async move {
            m.commit_blob("race", &blob, &info(), None).await.unwrap();
            let x = manifest(&[&blob], &[], None, &["latest"]);
            assert_eq!(m.put_manifest("race", x).await.unwrap(), PutManifestOutcome::Stored);
            let mine = manifest(&[&blob], &[], Some(&digest(&i.to_string())), &["latest"]);
            assert_eq!(m.put_manifest("race", mine).await.unwrap(), PutManifestOutcome::Stored);
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    assert_eq!(m.list_blobs().await.unwrap().len(), 1);
    assert_eq!(m.list_repositories(&Page::default()).await.unwrap(), ["race"]);
    assert_eq!(m.list_tags("race", &Page::default()).await.unwrap().unwrap(), ["latest"]);
    let tagged = m.get_manifest("race", &Reference::Tag("latest".into())).await.unwrap();
    assert!(tagged.is_some(), "the tag points at a manifest that exists");
}

both!(reads_under_load_are_never_stale);
async fn reads_under_load_are_never_stale(m: Arc<dyn MetadataStore>) {
    fresh_reads_while_a_tag_moves(m.clone(), m, true).await;
}

/// 32 readers hammer `reader` (so reads share batches on PostgreSQL) while `writer` moves a tag
/// 30 times, adds a tag each time and finally deletes manifests. Through the node that wrote,
/// every read returns a manifest at least as new as the last write completed before the read
/// began; through another node, at least as new as the last write completed before the reader's
/// previous read began (one round trip of staleness, batch.rs). Always with that manifest's own
/// bytes; a deleted manifest is gone at once by tag and by digest, even though its bytes were
/// read (and on PostgreSQL cached) just before.
async fn fresh_reads_while_a_tag_moves(reader: Arc<dyn MetadataStore>, writer: Arc<dyn MetadataStore>, same_node: bool) {
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    let blob = digest("fresh-blob");
    writer.commit_blob("fresh", &blob, &info(), None).await.unwrap();
    let versions: Vec<NewManifest> = (0..=30).map(|i| manifest(&[&blob], &[], Some(&digest(&format!("v{i}"))), &["latest", &format!("t{i:02}")])).collect();
    let index_of: HashMap<Digest, usize> = versions.iter().enumerate().map(|(i, v)| (v.record.digest.clone(), i)).collect();
    writer.put_manifest("fresh", versions[0].clone()).await.unwrap();
    let done = Arc::new(AtomicUsize::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let (index_of, versions) = (Arc::new(index_of), Arc::new(versions));
    let readers: Vec<_> = (0..32)
        .map(|r| {
            let (m, done, stop, index_of, versions) = (reader.clone(), done.clone(), stop.clone(), index_of.clone(), versions.clone());
            tokio::spawn(async move {
                let (mut reads, mut previous) = (0, 0);
                while !stop.load(Ordering::SeqCst) {
                    let now = done.load(Ordering::SeqCst);
                    let floor = if same_node { now } else { previous };
                    previous = now;
                    if r % 4 == 0 {
                        let tags = m.list_tags("fresh", &Page::default()).await.unwrap().unwrap();
                        assert!(tags.len() >= floor + 2, "{} tags listed after version {floor} was written", tags.len());
                    } else {
                        let got = m.get_manifest("fresh", &Reference::Tag("latest".into())).await.unwrap().unwrap();
                        let i = index_of[&got.digest];
                        assert!(i >= floor, "read version {i} after version {floor} was written");
                        assert_eq!(got.content, versions[i].record.content, "bytes of another manifest");
                        assert_eq!(got.image_cid.as_deref(), Some("image-latest"));
                    }
                    reads += 1;
                    // SQLite reads run inline and never yield; a request handler would on its socket.
                    tokio::task::yield_now().await;
                }
                reads
            })
        })
        .collect();
    for (i, v) in versions.iter().enumerate().skip(1) {
        writer.put_manifest("fresh", v.clone()).await.unwrap();
        done.store(i, Ordering::SeqCst);
        let got = writer.get_manifest("fresh", &Reference::Tag("latest".into())).await.unwrap().unwrap();
        assert_eq!(got.digest, v.record.digest, "the write just completed is read back");
        tokio::time::sleep(std::time::Duration::from_millis(3)).await;
    }
    stop.store(true, Ordering::SeqCst);
    let mut reads = 0;
    for r in readers {
        reads += r.await.unwrap();
    }
    assert!(reads > 300, "only {reads} reads ran alongside the writes");
    let last = &versions[30].record.digest;
    assert!(reader.get_manifest("fresh", &Reference::Digest(last.clone())).await.unwrap().is_some());
    assert!(writer.delete_manifest("fresh", last).await.unwrap());
    for m in [&writer, &reader] {
        assert!(m.get_manifest("fresh", &Reference::Digest(last.clone())).await.unwrap().is_none());
        assert!(m.get_manifest("fresh", &Reference::Tag("latest".into())).await.unwrap().is_none());
        assert!(m.get_manifest("fresh", &Reference::Tag("t30".into())).await.unwrap().is_none());
    }
    // Another repository's tag of the same name is its own.
    assert!(reader.get_manifest("elsewhere", &Reference::Tag("t01".into())).await.unwrap().is_none());
}

/// Two stores on one PostgreSQL database (two nodes): what one writes, the other reads at once
/// (under concurrent reads, within one round trip).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_share_one_postgres_database() {
    let (url, _keep) = pg_database();
    let (a, b) = (PgStore::connect(&url).await.unwrap(), PgStore::connect(&url).await.unwrap());
    let d = digest("shared");
    a.commit_blob("r", &d, &info(), None).await.unwrap();
    assert!(b.blob_info("r", &d).await.unwrap().is_some());
    b.put_manifest("r", manifest(&[&d], &[], None, &["t"])).await.unwrap();
    assert!(a.get_manifest("r", &Reference::Tag("t".into())).await.unwrap().is_some());
    assert_eq!(a.signing_key(vec![1]).await.unwrap(), b.signing_key(vec![2]).await.unwrap());
    // A tag moved through one node is read through the other at once, however busy its reads are.
    fresh_reads_while_a_tag_moves(a, b, false).await;
}
