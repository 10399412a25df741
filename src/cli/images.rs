//! `af registry export|import`: images as CAR files.

use super::{attach, DataDir};
use anyhow::Context;
use std::path::PathBuf;

/// Writes `image` as a CAR to `output` (written aside and renamed) or standard output.
pub fn export(image: String, output: Option<PathBuf>, data: DataDir) -> anyhow::Result<()> {
    let (repo, reference) = af_registry::names::parse_image_reference(&image)?;
    actix_web::rt::System::new().block_on(async {
        // Export makes no blobs, so the profile does not matter.
        let registry = std::sync::Arc::new(attach(data, Default::default()).await?);
        let summary = match &output {
            None => {
                let mut out = tokio::io::BufWriter::with_capacity(1 << 20, tokio::io::stdout());
                let summary = af_registry::car::export(registry.clone(), &repo, &reference, &mut out).await?;
                tokio::io::AsyncWriteExt::flush(&mut out).await.context("cannot write to standard output")?;
                summary
            }
            Some(path) => {
                // Written aside and renamed, so a failed export leaves no partial CAR.
                let partial = path.with_extension("partial");
                let file = tokio::fs::File::create(&partial).await.with_context(|| format!("cannot create {}", partial.display()))?;
                let mut out = tokio::io::BufWriter::with_capacity(1 << 20, file);
                let summary = match af_registry::car::export(registry.clone(), &repo, &reference, &mut out).await {
                    Ok(s) => s,
                    Err(e) => {
                        let _ = std::fs::remove_file(&partial);
                        return Err(e.into());
                    }
                };
                out.into_inner().sync_all().await.with_context(|| format!("cannot write {}", partial.display()))?;
                std::fs::rename(&partial, path).with_context(|| format!("cannot write {}", path.display()))?;
                summary
            }
        };
        eprintln!("exported {image}: root {}, {} blocks, {} bytes", summary.root, summary.blocks, summary.bytes);
        Ok(())
    })
}

/// Imports the image CAR in `file` (`-`: standard input).
pub fn import(file: PathBuf, repo: Option<String>, data: DataDir, cid_profile: Option<af_registry::unixfs::Profile>) -> anyhow::Result<()> {
    let input: Box<dyn std::io::Read + Send> =
        if file.as_os_str() == "-" { Box::new(std::io::stdin()) } else { Box::new(std::fs::File::open(&file).with_context(|| format!("cannot open {}", file.display()))?) };
    let input = std::io::BufReader::with_capacity(1 << 20, input);
    actix_web::rt::System::new().block_on(async {
        let registry = attach(data, cid_profile.unwrap_or_default()).await?;
        let s = af_registry::car::import(&registry, input, repo).await.with_context(|| format!("nothing imported from {}", file.display()))?;
        println!("imported into {}: {} manifests, {} blobs ({} new) from CAR root {}", s.repository, s.manifests, s.blobs, s.new_blobs, s.car_root);
        for (tag, image) in &s.tags {
            println!("{}:{tag} image CID {}", s.repository, image.as_deref().unwrap_or("(none)"));
        }
        Ok(())
    })
}
