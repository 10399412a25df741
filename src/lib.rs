//! af-registry: an OCI container registry node whose layers are IPFS content.
//! See ARCHITECTURE.md for the map of these modules.

pub mod api;
pub mod auth;
pub mod blockstore;
pub mod car;
pub mod client;
pub mod clock;
pub mod cluster;
pub mod config;
pub mod dag;
pub mod digest;
pub mod dnslink;
pub mod events;
pub mod exposure;
pub mod gateway;
pub mod identity;
pub mod image;
pub mod ipld;
pub mod ipns;
pub mod manifest;
pub mod metadata;
pub mod metrics;
pub mod multihash;
pub mod names;
pub mod node;
pub mod range;
pub mod registry;
pub mod rpc;
pub mod storage;
pub mod swarm;
pub mod unixfs;
pub mod varint;
