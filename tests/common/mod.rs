//! Shared test helpers: proptest strategies for the message model.
#![allow(dead_code)]

pub mod gen;
