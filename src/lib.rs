//! shardsync: a shard-per-core SyncML (OMA DS 1.1/1.2) data synchronization server.
//!
//! See README.md for the architecture; each module's doc says what it holds.

#![deny(unsafe_code)]
#![warn(missing_docs)]

pub mod admin;
pub mod balancer;
pub mod codec;
pub mod config;
pub mod convert;
pub mod engine;
pub mod http;
pub mod limits;
pub mod load;
pub mod logs;
pub mod metrics;
pub mod model;
pub mod routing;
pub mod server;
pub mod service;
pub mod sessions;
pub mod shard;
pub mod store;
pub mod sync_service;
pub mod tls;
pub mod users;
pub mod wbxml;
pub mod xml;
