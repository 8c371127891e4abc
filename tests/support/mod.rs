//! Test support for the real-client tests: SyncEvolution as an independent SyncML client, the
//! server under test, SyncEvolution's own reference server, item generators and a normalized
//! comparison of PIM items.
//!
//! Integration tests use it with `mod support;`. Not every test binary uses every helper.
#![allow(dead_code)]

pub mod compare;
pub mod items;
pub mod server;
pub mod shim;
pub mod syncevo;

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Polls `cond` every `every` until it returns true or `timeout` passes; returns its last answer.
pub fn wait_until(timeout: Duration, every: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(every);
    }
}

/// A loopback port that was free a moment ago (bind port 0, read it, release it).
pub fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    listener.local_addr().expect("local_addr").port()
}

/// Cargo's scratch directory for integration tests (under `target/`).
pub fn scratch_root() -> &'static Path {
    Path::new(env!("CARGO_TARGET_TMPDIR"))
}

/// A fresh directory below the target dir, removed on drop unless `SHARDSYNC_TEST_KEEP=1`.
pub struct Scratch {
    path: PathBuf,
}

impl Scratch {
    pub fn new(prefix: &str) -> Scratch {
        let dir = tempfile::Builder::new()
            .prefix(&format!("{prefix}-"))
            .tempdir_in(scratch_root())
            .expect("create temp dir under CARGO_TARGET_TMPDIR");
        Scratch { path: dir.keep() }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        if std::env::var_os("SHARDSYNC_TEST_KEEP").is_some_and(|v| v == "1") {
            eprintln!("kept {}", self.path.display());
        } else {
            let _ = std::fs::remove_dir_all(&self.path);
        }
    }
}

/// The last `max` bytes of a log file, for error messages.
pub fn tail_file(path: &Path, max: usize) -> String {
    match std::fs::read(path) {
        Ok(bytes) => {
            let start = bytes.len().saturating_sub(max);
            String::from_utf8_lossy(&bytes[start..]).into_owned()
        }
        Err(e) => format!("<cannot read {}: {e}>", path.display()),
    }
}
