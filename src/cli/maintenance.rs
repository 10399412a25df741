//! `af registry gc|pin|visibility|verify`: keeping a data directory, beside a running node.

use super::{attach, block_on, DataDir};
use anyhow::Context;
use clap::Subcommand;

#[derive(Subcommand)]
pub enum PinCommand {
    /// Keep a manifest (and so its blobs) through GCs even when untagged.
    Add {
        /// <repository>:<tag> (the manifest it points at now) or <repository>@<digest>.
        image: String,
        #[command(flatten)]
        data: DataDir,
    },
    /// Remove a pin.
    Rm {
        /// <repository>:<tag> or <repository>@<digest>.
        image: String,
        #[command(flatten)]
        data: DataDir,
    },
    /// List pins.
    Ls {
        #[command(flatten)]
        data: DataDir,
    },
}

pub fn gc(grace: Option<std::time::Duration>, data: DataDir) -> anyhow::Result<()> {
    block_on(async {
        let registry = attach(data, Default::default()).await?;
        let report = registry.gc(grace.unwrap_or(af_registry::registry::DEFAULT_GRACE)).await.context("gc stopped")?;
        println!("gc: {report}");
        Ok(())
    })
}

pub fn pin(command: PinCommand) -> anyhow::Result<()> {
    block_on(async {
        match command {
            PinCommand::Add { image, data } => {
                let (repo, reference) = af_registry::names::parse_image_reference(&image)?;
                let registry = attach(data, Default::default()).await?;
                let digest = registry.pin_image(&repo, &reference).await?;
                let digest = digest.with_context(|| format!("{image} is not in this registry"))?;
                println!("pinned {repo}@{digest}");
            }
            PinCommand::Rm { image, data } => {
                let (repo, reference) = af_registry::names::parse_image_reference(&image)?;
                let registry = attach(data, Default::default()).await?;
                let digest = match reference {
                    af_registry::metadata::Reference::Digest(d) => d,
                    tag => registry.manifest(&repo, &tag).await?.map(|m| m.digest).with_context(|| format!("{image} is not in this registry"))?,
                };
                anyhow::ensure!(registry.unpin_image(&repo, &digest).await?, "{repo}@{digest} is not pinned");
                println!("unpinned {repo}@{digest}");
            }
            PinCommand::Ls { data } => {
                let registry = attach(data, Default::default()).await?;
                for (repo, digest) in registry.image_pins().await? {
                    println!("{repo}@{digest}");
                }
            }
        }
        Ok(())
    })
}

pub fn visibility(repository: String, visibility: String, data: DataDir) -> anyhow::Result<()> {
    block_on(async move {
        anyhow::ensure!(af_registry::names::is_valid_name(&repository), "{repository:?} is not a valid repository name");
        let registry = attach(data, Default::default()).await?;
        let lagging = registry.set_visibility(&repository, visibility == "public").await?;
        for node in &lagging {
            eprintln!("af: warning: node {node} has not confirmed the change yet; it may serve by its old view until it does");
        }
        println!("{repository} is {visibility}");
        Ok(())
    })
}

pub fn replicas(repository: String, replicas: u32, data: DataDir) -> anyhow::Result<()> {
    block_on(async move {
        anyhow::ensure!(af_registry::names::is_valid_name(&repository), "{repository:?} is not a valid repository name");
        let registry = attach(data, Default::default()).await?;
        registry.set_replicas(&repository, (replicas > 0).then_some(replicas)).await?;
        match replicas {
            0 => println!("{repository}: images kept on the node's --replicas nodes"),
            n => println!("{repository}: images kept on {n} nodes"),
        }
        Ok(())
    })
}

/// Exits 1 when anything was found corrupt.
pub fn verify(data: DataDir) -> anyhow::Result<()> {
    // Every page of the SQLite files first: a node's start after a crash checks only the pages
    // the crash could have touched.
    if let Err(damaged) = af_registry::storage::health::check_every_page(&data.dir()) {
        println!("corrupt: {}: {}; {}", damaged.path, damaged.problem, damaged.remedy);
        std::process::exit(1);
    }
    block_on(async {
        // The profile only matters for new uploads, which verify does not make.
        let registry = attach(data, Default::default()).await?;
        let report = registry.verify(|f| println!("corrupt: {}: {}; {}", f.object, f.problem, f.action)).await.context("verification stopped")?;
        println!("verified {} blobs ({} bytes) and {} blocks: {} corrupt", report.blobs, report.bytes, report.blocks, report.findings.len());
        if !report.findings.is_empty() {
            std::process::exit(1);
        }
        Ok(())
    })
}
