//! Builds the libcurl callback shim (`curlfix.c`) once per source version into the target dir.
//!
//! Debian 12's SyncEvolution 2.0.0 client crashes on its first HTTP POST without it (see the
//! comment in `curlfix.c`). The shared object is cached under `CARGO_TARGET_TMPDIR`, named after
//! a hash of the source, and written atomically (temp file + rename) so that concurrent test
//! binaries can race safely.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

const SOURCE: &str = include_str!("curlfix.c");

fn fnv1a(data: &[u8]) -> u64 {
    data.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3))
}

/// Path of the compiled shim; builds it on first use. Panics with the compiler output on failure.
pub fn curlfix_path() -> &'static Path {
    static PATH: OnceLock<PathBuf> = OnceLock::new();
    PATH.get_or_init(|| build(&super::scratch_root().join("curlfix")).unwrap_or_else(|e| panic!("{e}")))
}

/// Compiles `curlfix.c` into `dir` (if not there yet) and returns the `.so` path.
pub fn build(dir: &Path) -> Result<PathBuf, String> {
    let so = dir.join(format!("libcurlfix-{:016x}.so", fnv1a(SOURCE.as_bytes())));
    if so.is_file() {
        return Ok(so);
    }
    std::fs::create_dir_all(dir).map_err(|e| format!("create {}: {e}", dir.display()))?;
    let pid = std::process::id();
    let src = dir.join(format!("curlfix-{pid}.c"));
    let tmp = dir.join(format!("libcurlfix-{pid}.so.tmp"));
    std::fs::write(&src, SOURCE).map_err(|e| format!("write {}: {e}", src.display()))?;
    let compiler = std::env::var("CC").unwrap_or_else(|_| "cc".into());
    let out = Command::new(&compiler)
        .args(["-O2", "-Wall", "-shared", "-fPIC", "-o"])
        .arg(&tmp)
        .arg(&src)
        .arg("-ldl")
        .output()
        .map_err(|e| {
            format!("cannot run {compiler} to build the libcurl shim (apt-get install gcc libc6-dev): {e}")
        })?;
    let _ = std::fs::remove_file(&src);
    if !out.status.success() {
        return Err(format!(
            "building the libcurl shim failed ({}):\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    std::fs::rename(&tmp, &so).map_err(|e| format!("rename to {}: {e}", so.display()))?;
    Ok(so)
}
