//! `af registry verify`: rehash every blob and every inline block; quarantine what no longer
//! matches its digest and mark it missing, so it is never served again until it is pushed anew.
//! Raw leaves are ranges of blob files, so checking a blob checks its leaves.

use super::{Registry, Result};
use crate::digest::Digest;
use crate::storage::StorageError;

/// One thing found wrong, and what was done about it.
#[derive(Debug, Clone)]
pub struct Finding {
    pub object: String,
    pub problem: String,
    pub action: String,
}

#[derive(Debug, Default)]
pub struct ScrubReport {
    pub blobs: u64,
    pub bytes: u64,
    pub blocks: u64,
    pub findings: Vec<Finding>,
}

impl Registry {
    /// Verifies everything this node stores. `on_finding` hears of each problem as it is found.
    pub async fn verify(&self, mut on_finding: impl FnMut(&Finding)) -> Result<ScrubReport> {
        let mut report = ScrubReport::default();
        for (digest, size) in self.meta.list_blobs().await? {
            report.blobs += 1;
            let problem = self.check_blob(&digest, size).await?;
            report.bytes += size;
            let Some(problem) = problem else { continue };
            let moved = self.blobs.quarantine(&digest)?;
            self.meta.mark_blob_missing(&digest).await?;
            self.changed().await?;
            self.blocks.forget_blob(&digest).await?;
            let action = match moved {
                Some(path) => format!("quarantined to {} and marked missing", path.display()),
                None => "marked missing".to_string(),
            };
            let f = Finding { object: format!("blob {digest}"), problem, action };
            on_finding(&f);
            report.findings.push(f);
        }
        let mut after = Vec::new();
        loop {
            let page = self.blocks.inline_blocks_after(after.clone()).await?;
            let Some(last) = page.last() else { break };
            after = last.0.clone();
            self.verify_inline(page, &mut report, &mut on_finding).await?;
        }
        self.verify_pins(&mut report, &mut on_finding).await?;
        Ok(report)
    }

    /// Checks a page of inline blocks against their hashes; removes those that do not match.
    async fn verify_inline(&self, page: Vec<(Vec<u8>, Vec<u8>)>, report: &mut ScrubReport, on_finding: &mut impl FnMut(&Finding)) -> Result<()> {
        for (multihash, data) in page {
            report.blocks += 1;
            let matches = cid::multihash::Multihash::<64>::from_bytes(&multihash).is_ok_and(|mh| crate::multihash::verify_multihash(&mh, &data).is_ok());
            if matches {
                continue;
            }
            self.blocks.forget(multihash.clone()).await?;
            let f = Finding {
                object: format!("block with multihash {}", hex::encode(&multihash)),
                problem: "its bytes do not match its hash".into(),
                action: "removed from the block index".into(),
            };
            on_finding(&f);
            report.findings.push(f);
        }
        Ok(())
    }

    /// Walks every pin's DAG and reports each block missing from it (a pin promises the whole
    /// DAG stays).
    async fn verify_pins(&self, report: &mut ScrubReport, on_finding: &mut impl FnMut(&Finding)) -> Result<()> {
        for pin in self.blocks.pins().await? {
            let Ok(root) = pin.parse::<cid::Cid>() else { continue };
            let mut seen = std::collections::HashSet::new();
            let mut stack = vec![root];
            while let Some(cid) = stack.pop() {
                if !seen.insert(cid) || cid.hash().code() == 0 {
                    continue;
                }
                match self.blocks.locate(&cid).await? {
                    None => {
                        let f = Finding { object: format!("pin {pin}"), problem: format!("block {cid} of its DAG is missing"), action: "none: add or import it again".into() };
                        on_finding(&f);
                        report.findings.push(f);
                    }
                    Some(crate::blockstore::Location::Inline(data)) if cid.codec() == crate::unixfs::DAG_PB => {
                        if let Ok(node) = crate::unixfs::decode_node(&data) {
                            stack.extend(node.links.into_iter().map(|l| l.cid));
                        }
                    }
                    Some(_) => {}
                }
            }
        }
        Ok(())
    }

    /// What is wrong with a blob's file, if anything.
    async fn check_blob(&self, digest: &Digest, size: u64) -> Result<Option<String>> {
        let store = self.blobs.clone();
        let d = digest.clone();
        let outcome = tokio::task::spawn_blocking(move || -> std::result::Result<Option<String>, StorageError> {
            if !store.has_blob(&d) {
                return Ok(Some("its file is gone".into()));
            }
            let mut hasher = d.algorithm().hasher();
            let len = store.scan_blob(&d, |data| hasher.update(data))?;
            let actual = hasher.finish();
            Ok(if actual != d {
                Some(format!("its file hashes to {actual}"))
            } else if len != size {
                Some(format!("its file is {len} bytes, not {size}"))
            } else {
                None
            })
        })
        .await
        .map_err(|e| StorageError::Task(e.to_string()))??;
        Ok(outcome)
    }
}
