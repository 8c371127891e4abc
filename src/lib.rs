//! shardsync: a shard-per-core SyncML (OMA DS 1.1/1.2) data synchronization server.
//!
//! See README.md for the architecture; each module's doc says what it holds.

#![deny(unsafe_code)]
#![warn(missing_docs)]

pub mod convert;
pub mod model;
pub mod routing;
pub mod service;
pub mod store;
pub mod users;
