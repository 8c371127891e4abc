//! The balancer: `shardsync balance` (DESIGN §6).

pub mod key;
pub mod select;
