//! The balancer: `shardsync balance` (DESIGN §6).

pub mod select;
