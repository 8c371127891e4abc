//! The deployment files cannot rot: the example configurations in `deploy/`
//! parse with the real option parsers (unknown keys are errors there) and
//! name every option of `serve` and `balance`; the systemd units start the
//! right subcommand with the locked-memory limit glommio needs.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use clap::Args;

fn deploy(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy").join(name)
}

/// The TOML keys of a file.
fn keys(path: &Path) -> BTreeSet<String> {
    let text = std::fs::read_to_string(path).expect("read example");
    let table: toml::Table = text.parse().expect("valid TOML");
    table.keys().cloned().collect()
}

/// The long options of a clap argument struct, as TOML keys (`-` → `_`; `--backend` → `backends`).
fn options(cmd: clap::Command) -> BTreeSet<String> {
    cmd.get_arguments()
        .filter_map(|a| a.get_long())
        .filter(|l| *l != "config")
        .map(|l| match l {
            "backend" => "backends".to_string(),
            "weight" => "weights".to_string(),
            other => other.replace('-', "_"),
        })
        .collect()
}

#[test]
fn serve_example_parses_and_names_every_option() {
    let path = deploy("shardsync.toml.example");
    let args = shardsync::config::ServeArgs { config: Some(path.clone()), ..Default::default() };
    let c = shardsync::config::Config::resolve(&args).expect("the example resolves");
    assert_eq!(c.shards, 4);
    assert_eq!(c.abuse.max_sessions_per_user, 32);
    assert_eq!(c.trusted_proxies.len(), 2);
    assert!(c.tls.is_some());
    assert!(c.store.as_deref().is_some_and(|s| s.starts_with("postgres://")));
    let want = options(shardsync::config::ServeArgs::augment_args(clap::Command::new("serve")));
    assert_eq!(keys(&path), want, "deploy/shardsync.toml.example must set exactly the options of `serve`");
}

#[test]
fn balance_example_parses_and_names_every_option() {
    let path = deploy("shardsync-balance.toml.example");
    let args = shardsync::balancer::BalanceArgs { config: Some(path.clone()), ..Default::default() };
    let c = shardsync::balancer::BalanceConfig::resolve(&args).expect("the example resolves");
    assert_eq!(c.backends.len(), 3);
    assert!(c.tls.is_some());
    let want = options(shardsync::balancer::BalanceArgs::augment_args(clap::Command::new("balance")));
    assert_eq!(
        keys(&path),
        want,
        "deploy/shardsync-balance.toml.example must set exactly the options of `balance`"
    );
}

#[test]
fn systemd_units_run_the_right_command_with_memlock() {
    for (unit, command, config, io_uring) in [
        ("shardsync.service", "serve", "/etc/shardsync/shardsync.toml", true),
        ("shardsync-balance.service", "balance", "/etc/shardsync/balance.toml", false),
    ] {
        let text = std::fs::read_to_string(deploy(unit)).expect("read unit");
        let exec = text.lines().find(|l| l.starts_with("ExecStart=")).expect("ExecStart");
        assert_eq!(exec, format!("ExecStart=/usr/local/bin/shardsync {command} --config {config}"));
        let memlock = text.lines().find_map(|l| l.strip_prefix("LimitMEMLOCK="));
        if io_uring {
            let bytes = shardsync::config::parse_size(memlock.expect("LimitMEMLOCK")).expect("a size");
            // 3 rings x the default io memory for 64 shards.
            assert!(bytes >= 3 * shardsync::config::DEFAULT_IO_MEMORY * 64, "{bytes}");
        } else {
            // The balancer's workers run on epoll: no locked memory to raise.
            assert_eq!(memlock, None, "{unit} needs no LimitMEMLOCK");
        }
        for section in ["[Unit]", "[Service]", "[Install]"] {
            assert!(text.contains(section), "{unit}: {section}");
        }
    }
}
