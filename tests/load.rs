//! `shardsync load` (the binary) against a real `shardsync serve` started here
//! on a free loopback port with a temp data dir, in every scenario, XML and
//! WBXML, md5 and basic auth; and against SyncEvolution's own server. Each
//! run's JSON must show zero errors and exactly the items the scenario
//! transfers; the server's store is read back by a follow-up run.

mod support;

use std::path::Path;
use std::process::Command;

use serde_json::Value;
use support::server::{RefServer, RefServerOptions, ServerProcess};
use support::Scratch;

const BIN: &str = env!("CARGO_BIN_EXE_shardsync");

/// Runs `shardsync load ARGS --json`; returns the JSON object and whether it exited 0.
fn load(url: &str, args: &[&str]) -> (Value, bool, String) {
    let out = Command::new(BIN)
        .args(["load", "--url", url, "--json", "--progress", "never"])
        .args(args)
        .env("RUST_LOG", "warn")
        .output()
        .expect("run shardsync load");
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    let line = stdout.lines().last().unwrap_or("");
    let json: Value = serde_json::from_str(line).unwrap_or_else(|e| {
        panic!("load printed no JSON ({e}): {args:?}\nstdout: {stdout}\nstderr: {stderr}")
    });
    (json, out.status.success(), stderr)
}

/// Like [`load`], and asserts a clean run.
fn load_ok(url: &str, args: &[&str], server_log: &dyn Fn() -> String) -> Value {
    let (json, ok, stderr) = load(url, args);
    assert!(
        ok && json["errors"] == 0,
        "load {args:?} failed:\n{json:#}\nstderr: {stderr}\nserver log:\n{}",
        server_log()
    );
    json
}

fn n(v: &Value) -> u64 {
    v.as_u64().unwrap_or_else(|| panic!("not a count: {v}"))
}

fn serve() -> (ServerProcess, Scratch) {
    let data = Scratch::new("load-serve");
    // No auth back-off: the tests fail logins on purpose, from one address, many times.
    let args = ["--shards", "2", "--auth-free-failures", "1000000"];
    let server = ServerProcess::start(Path::new(BIN), &args, &data.path().join("data"))
        .unwrap_or_else(|e| panic!("{e}"));
    (server, data)
}

const STORES: &str = "contacts,events,tasks,notes";

/// `shardsync load` arguments for a run against our server in `dir`: all
/// four datastores, the devices' users created first, then `extra`.
fn our_load_args(dir: &str, encoding: &str, devices: &str, users: &str, extra: &[&str]) -> Vec<String> {
    let mut args = vec![
        "--encoding",
        encoding,
        "--datastores",
        STORES,
        "--create-users",
        "--data-dir",
        dir,
        "--device-prefix",
        devices,
        "--user-prefix",
        users,
    ];
    args.extend_from_slice(extra);
    args.into_iter().map(str::to_owned).collect()
}

/// All four scenarios in one encoding and auth scheme, with the server's
/// store checked by a refresh of fresh devices at the end.
fn scenarios(server: &ServerProcess, encoding: &str, auth: &str) {
    let url = server.sync_url();
    let dir = server.data_dir().to_str().expect("utf-8 temp path").to_string();
    let log = || server.log_tail();
    let tag = format!("{encoding}-{auth}");
    let run = |extra: &[&str], devices: &str, users: &str| {
        let mut args = vec!["--auth", auth];
        args.extend_from_slice(extra);
        let args = our_load_args(&dir, encoding, devices, users, &args);
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        load_ok(&url, &refs, &log)
    };

    // slow-sync: 3 devices, one user each, 15 items per datastore, MaxMsgSize
    // small enough that package 3 takes several messages.
    let j = run(
        &["--scenario", "slow-sync", "--devices", "3", "--items", "15", "--max-msg-size", "20000"],
        &format!("slow-{tag}-"),
        &format!("slow-{tag}-u"),
    );
    assert_eq!(n(&j["sessions_ok"]), 3, "{j:#}");
    assert_eq!(n(&j["items_sent"]["add"]), 3 * 4 * 15, "{j:#}");
    assert_eq!(n(&j["items_received"]["add"]), 0, "{j:#}");
    assert!(n(&j["messages"]) > 3 * 3, "multi-message package 3: {j:#}");

    // empty-two-way: after the set-up slow sync, 3 messages per session, nothing exchanged.
    let j = run(
        &["--scenario", "empty-two-way", "--devices", "3", "--items", "5", "--sessions", "9"],
        &format!("empty-{tag}-"),
        &format!("empty-{tag}-u"),
    );
    assert_eq!(n(&j["sessions_ok"]), 9, "{j:#}");
    assert_eq!(n(&j["items"]), 0, "{j:#}");
    assert_eq!(n(&j["messages"]), 9 * 3, "{j:#}");
    assert_eq!(n(&j["setup"]["items_sent"]["add"]), 3 * 4 * 5, "{j:#}");

    // two-way-changes: 4 devices on 2 users, one session at a time, so each
    // device receives exactly the changes of its user's other device.
    let users = format!("chg-{tag}-u");
    let j = run(
        &[
            "--scenario",
            "two-way-changes",
            "--devices",
            "4",
            "--user-count",
            "2",
            "--items",
            "10",
            "--changes",
            "7",
            "--sessions",
            "8",
            "--concurrency",
            "1",
        ],
        &format!("chg-{tag}-"),
        &users,
    );
    assert_eq!(n(&j["sessions_ok"]), 8, "{j:#}");
    // 7 changes per datastore: adds at n = 0, 3, 6; replaces at 1, 4; deletes at 2, 5.
    let per = |k: u64| 8 * 4 * k;
    assert_eq!(
        (n(&j["items_sent"]["add"]), n(&j["items_sent"]["replace"]), n(&j["items_sent"]["delete"])),
        (per(3), per(2), per(2)),
        "{j:#}"
    );
    // Sessions 3..8 each receive the 7 changes per datastore its partner sent last.
    assert_eq!(n(&j["items_received"]["add"]), 6 * 4 * 3, "{j:#}");
    assert_eq!(n(&j["items_received"]["replace"]), 6 * 4 * 2, "{j:#}");
    assert_eq!(n(&j["items_received"]["delete"]), 6 * 4 * 2, "{j:#}");

    // refresh, by two new devices of the same users with no items: the set-up
    // slow sync and the refresh each bring every item the server holds.
    // Per user and datastore: 2 × 10 from the set-up, +1 net per session (4 sessions).
    let expected = 2 * 4 * (20 + 4);
    let j = run(
        &["--scenario", "refresh", "--devices", "2", "--user-count", "2", "--items", "0"],
        &format!("ref-{tag}-"),
        &users,
    );
    assert_eq!(n(&j["sessions_ok"]), 2, "{j:#}");
    assert_eq!(n(&j["setup"]["items_received"]["add"]), expected, "{j:#}");
    assert_eq!(n(&j["items_received"]["add"]), expected, "{j:#}");
    assert_eq!(n(&j["items_sent"]["add"]), 0, "{j:#}");
    assert_eq!(n(&j["params"]["device_items_after"]), expected, "{j:#}");

    // The slow-synced users' items are on the server, once: a refresh of new devices sees all.
    let j = run(
        &["--scenario", "refresh", "--devices", "3", "--items", "0"],
        &format!("slowcheck-{tag}-"),
        &format!("slow-{tag}-u"),
    );
    assert_eq!(n(&j["items_received"]["add"]), 3 * 4 * 15, "{j:#}");
}

#[test]
fn scenarios_xml_md5_and_basic() {
    let (server, _data) = serve();
    scenarios(&server, "xml", "md5");
    scenarios(&server, "xml", "basic");
}

#[test]
fn scenarios_wbxml_md5_and_basic() {
    let (server, _data) = serve();
    scenarios(&server, "wbxml", "md5");
    scenarios(&server, "wbxml", "basic");
}

/// Large objects both ways at MaxMsgSize 4000: a slow sync uploads contacts
/// (some with photos of 3–12 KB) and events, tasks, notes, the photo
/// contacts in chunks; new devices of the same users then download it all,
/// the server chunking to them, and hold byte-identical items (equal
/// content digests); two devices of one user then exchange changes at the
/// same size. Every status is checked by the client (zero errors).
fn large_objects(server: &ServerProcess, encoding: &str) {
    let url = server.sync_url();
    let dir = server.data_dir().to_str().expect("utf-8 temp path").to_string();
    let log = || server.log_tail();
    let run = |extra: &[&str], devices: &str, users: &str| {
        let mut args = vec!["--max-msg-size", "4000"];
        args.extend_from_slice(extra);
        let args = our_load_args(&dir, encoding, devices, users, &args);
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        load_ok(&url, &refs, &log)
    };
    let users = format!("lob-{encoding}-u");
    let up = run(
        &["--scenario", "slow-sync", "--devices", "3", "--items", "30"],
        &format!("lob-up-{encoding}-"),
        &users,
    );
    assert_eq!(n(&up["sessions_ok"]), 3, "{up:#}");
    assert_eq!(n(&up["items_sent"]["add"]), 3 * 4 * 30, "{up:#}");
    assert!(n(&up["large_objects"]["sent"]) > 0, "photo contacts go in chunks: {up:#}");
    assert!(n(&up["large_objects"]["chunks_sent"]) > n(&up["large_objects"]["sent"]), "{up:#}");
    assert!(n(&up["bytes_out"]) > 3 * 4 * 30 * 100, "{up:#}");

    let down = run(
        &["--scenario", "refresh", "--devices", "3", "--items", "0"],
        &format!("lob-down-{encoding}-"),
        &users,
    );
    assert_eq!(n(&down["sessions_ok"]), 3, "{down:#}");
    for phase in [&down["setup"], &down] {
        assert_eq!(n(&phase["items_received"]["add"]), 3 * 4 * 30, "{down:#}");
        assert!(n(&phase["large_objects"]["received"]) > 0, "the server chunks photos to us: {down:#}");
        assert_eq!(n(&phase["large_objects"]["chunks_sent"]), 0, "{down:#}");
    }
    assert_eq!(
        down["params"]["device_items_digest"], up["params"]["device_items_digest"],
        "the downloaded items are the uploaded ones, byte for byte"
    );

    // Two devices of one user, changes both ways (replaces of photo contacts too).
    let chg = run(
        &[
            "--scenario",
            "two-way-changes",
            "--devices",
            "2",
            "--user-count",
            "1",
            "--items",
            "20",
            "--changes",
            "7",
            "--sessions",
            "4",
            "--concurrency",
            "1",
        ],
        &format!("lob-chg-{encoding}-"),
        &format!("lob-chg-{encoding}-u"),
    );
    assert_eq!(n(&chg["sessions_ok"]), 4, "{chg:#}");
    // Sessions 2..4 each receive the 7 changes per datastore the other device sent last.
    let received = &chg["items_received"];
    assert_eq!(n(&received["add"]) + n(&received["replace"]) + n(&received["delete"]), 3 * 4 * 7, "{chg:#}");
}

#[test]
fn large_objects_xml_and_wbxml() {
    let (server, _data) = serve();
    large_objects(&server, "xml");
    large_objects(&server, "wbxml");
}

/// At the smallest MaxMsgSize (2048) with four datastores, our server's
/// package 2 (in XML about 3 KB: statuses and an Alert per datastore) goes
/// over several messages; the devices answer each part with their statuses
/// and Alert 222, check every reply against their MaxMsgSize
/// (`reply_exceeds_max_msg_size`) and every status by the end of the
/// server's package (`missing_status_*`): zero errors in every scenario.
/// An empty two-way session takes 3 messages when package 2 fits one (see
/// `scenarios`); here it takes more.
#[test]
fn smallest_max_msg_size_splits_package_2() {
    let (server, _data) = serve();
    let url = server.sync_url();
    let dir = server.data_dir().to_str().expect("utf-8 temp path").to_string();
    let log = || server.log_tail();
    for encoding in ["xml", "wbxml"] {
        let run = |extra: &[&str], devices: &str, users: &str| {
            let mut args = vec!["--max-msg-size", "2048"];
            args.extend_from_slice(extra);
            let args = our_load_args(&dir, encoding, devices, users, &args);
            let refs: Vec<&str> = args.iter().map(String::as_str).collect();
            load_ok(&url, &refs, &log)
        };
        let users = format!("small-{encoding}-u");
        let j = run(
            &["--scenario", "slow-sync", "--devices", "3", "--items", "10"],
            &format!("small-up-{encoding}-"),
            &users,
        );
        assert_eq!(n(&j["sessions_ok"]), 3, "{j:#}");
        assert_eq!(n(&j["items_sent"]["add"]), 3 * 4 * 10, "{j:#}");
        let j = run(
            &["--scenario", "empty-two-way", "--devices", "2", "--items", "2", "--sessions", "4"],
            &format!("small-empty-{encoding}-"),
            &format!("small-empty-{encoding}-u"),
        );
        assert_eq!(n(&j["sessions_ok"]), 4, "{j:#}");
        assert_eq!(n(&j["items"]), 0, "{j:#}");
        if encoding == "xml" {
            assert!(n(&j["messages"]) >= 4 * 4, "package 2 over several messages: {j:#}");
        } else {
            assert_eq!(n(&j["messages"]), 4 * 3, "package 2 fits one WBXML message: {j:#}");
        }
        let j = run(
            &["--scenario", "refresh", "--devices", "3", "--items", "0"],
            &format!("small-down-{encoding}-"),
            &users,
        );
        assert_eq!(n(&j["sessions_ok"]), 3, "{j:#}");
        assert_eq!(n(&j["items_received"]["add"]), 3 * 4 * 10, "{j:#}");
    }
}

#[test]
fn too_small_max_msg_size_is_a_usage_error() {
    let out = Command::new(BIN)
        .args(["load", "--url", "http://127.0.0.1:9/sync", "--max-msg-size", "1000", "--json"])
        .output()
        .expect("run shardsync load");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("--max-msg-size 1000 is too small: at least 2048"), "{stderr}");
}

#[test]
fn wrong_password_is_counted_by_kind() {
    let (server, _data) = serve();
    let dir = server.data_dir().to_str().expect("utf-8 temp path").to_string();
    let url = server.sync_url();
    let common = ["--scenario", "slow-sync", "--devices", "3", "--items", "3", "--user-prefix", "pw-"];
    let mut create = common.to_vec();
    create.extend(["--create-users", "--data-dir", &dir, "--password", "right"]);
    let j = load_ok(&url, &create, &|| server.log_tail());
    assert_eq!(n(&j["sessions_ok"]), 3);
    for auth in ["md5", "basic"] {
        let mut wrong = common.to_vec();
        wrong.extend(["--password", "wrong", "--auth", auth]);
        let (j, ok, stderr) = load(&url, &wrong);
        assert!(!ok, "a run with errors exits non-zero: {stderr}");
        assert_eq!(n(&j["sessions_failed"]), 3, "{j:#}");
        assert_eq!(n(&j["errors"]), 3, "{j:#}");
        assert_eq!(n(&j["errors_by_kind"]["auth_401"]), 3, "{j:#}");
        assert_eq!(n(&j["items_sent"]["add"]), 0, "nothing sent after a refused login: {j:#}");
    }
}

#[test]
fn hold_idle_keeps_sessions_open() {
    let (server, _data) = serve();
    let dir = server.data_dir().to_str().expect("utf-8 temp path").to_string();
    // Four session slots over two event-loop threads; every held session keeps its connection.
    let args = [
        "--scenario",
        "hold-idle",
        "--devices",
        "40",
        "--user-count",
        "2",
        "--create-users",
        "--data-dir",
        &dir,
        "--hold-secs",
        "0",
        "--hold-connections",
        "--concurrency",
        "4",
        "--threads",
        "2",
    ];
    let (j, ok, stderr) = load(&server.sync_url(), &args);
    assert!(ok && j["errors"] == 0, "{j:#}\nstderr: {stderr}\nserver log:\n{}", server.log_tail());
    assert_eq!(n(&j["sessions_held"]), 40, "{j:#}");
    // New devices: message 1 is challenged (no nonce yet), its retry opens the session.
    assert_eq!(n(&j["auth_retries"]), 40, "{j:#}");
    assert_eq!(n(&j["messages"]), 80, "{j:#}");
    assert!(stderr.contains("holding 40 sessions (40 open connections)"), "{stderr}");
}

/// SyncEvolution's server started with `opts`, and a `--users` file (with
/// its scratch directory, kept alive by the caller) naming its one account.
fn syncevolution_peer(opts: RefServerOptions) -> (RefServer, Scratch, String) {
    let server = RefServer::start(opts).unwrap_or_else(|e| panic!("{e}"));
    let users = Scratch::new("load-users");
    let users_file = users.path().join("users");
    std::fs::write(&users_file, "test:test\n").expect("write users file");
    let users_file = users_file.to_str().expect("utf-8 temp path").to_string();
    (server, users, users_file)
}

/// SyncEvolution's own server as the peer: slow sync, then empty two-way,
/// in XML with md5 and WBXML with basic, zero errors; its database holds
/// every item once.
#[test]
fn against_syncevolution_server() {
    let devices: Vec<String> =
        (0..2).flat_map(|i| [format!("ref-slow-{i}"), format!("ref-empty-{i}")]).collect();
    let opts = RefServerOptions { device_ids: devices, ..RefServerOptions::default() };
    let (server, _users, users_file) = syncevolution_peer(opts);
    let url = server.sync_url();
    let log = || server.log_tail();
    let j = load_ok(
        &url,
        &[
            "--scenario",
            "slow-sync",
            "--devices",
            "2",
            "--device-prefix",
            "ref-slow-",
            "--users",
            &users_file,
            "--items",
            "20",
            "--concurrency",
            "1",
            "--encoding",
            "xml",
            "--auth",
            "md5",
        ],
        &log,
    );
    assert_eq!(n(&j["sessions_ok"]), 2, "{j:#}");
    assert_eq!(n(&j["items_sent"]["add"]), 40, "{j:#}");
    // One database for all devices: the second device receives the first one's 20.
    assert_eq!(n(&j["items_received"]["add"]), 20, "{j:#}");
    let files = std::fs::read_dir(server.db_dir("addressbook")).expect("read the server's database").count();
    assert_eq!(files, 40, "the server's address book holds every contact once");

    let j = load_ok(
        &url,
        &[
            "--scenario",
            "empty-two-way",
            "--devices",
            "2",
            "--device-prefix",
            "ref-empty-",
            "--users",
            &users_file,
            "--items",
            "5",
            "--sessions",
            "4",
            "--concurrency",
            "1",
            "--encoding",
            "wbxml",
            "--auth",
            "basic",
        ],
        &log,
    );
    assert_eq!(n(&j["sessions_ok"]), 4, "{j:#}");
    assert_eq!(n(&j["items"]), 0, "{j:#}");
    let files = std::fs::read_dir(server.db_dir("addressbook")).expect("read the server's database").count();
    assert_eq!(files, 50, "set-up slow syncs added 2 × 5 contacts");
}

/// SyncEvolution's server at MaxMsgSize 4000 both ways (it supports large
/// objects): photo contacts go to it in chunks (XML), and a new device
/// downloads them all back in chunks (WBXML, set-up slow sync then refresh).
#[test]
fn against_syncevolution_server_large_objects() {
    let devices = vec!["lob-se-up-0".to_string(), "lob-se-down-0".to_string()];
    let opts = RefServerOptions { device_ids: devices, max_msg_size: 4000, ..RefServerOptions::default() };
    let (server, _users, users_file) = syncevolution_peer(opts);
    let url = server.sync_url();
    let log = || server.log_tail();
    let common = ["--users", &users_file, "--concurrency", "1", "--max-msg-size", "4000", "--devices", "1"];
    let mut args = common.to_vec();
    args.extend([
        "--scenario",
        "slow-sync",
        "--device-prefix",
        "lob-se-up-",
        "--items",
        "40",
        "--encoding",
        "xml",
    ]);
    let up = load_ok(&url, &args, &log);
    assert_eq!(n(&up["sessions_ok"]), 1, "{up:#}");
    assert_eq!(n(&up["items_sent"]["add"]), 40, "{up:#}");
    assert!(n(&up["large_objects"]["sent"]) > 0, "photo contacts go in chunks: {up:#}");
    let files = std::fs::read_dir(server.db_dir("addressbook")).expect("read the server's database").count();
    assert_eq!(files, 40, "the server's address book holds every contact once");

    let mut args = common.to_vec();
    args.extend([
        "--scenario",
        "refresh",
        "--device-prefix",
        "lob-se-down-",
        "--items",
        "0",
        "--encoding",
        "wbxml",
    ]);
    let down = load_ok(&url, &args, &log);
    assert_eq!(n(&down["sessions_ok"]), 1, "{down:#}");
    for phase in [&down["setup"], &down] {
        assert_eq!(n(&phase["items_received"]["add"]), 40, "{down:#}");
        assert!(n(&phase["large_objects"]["received"]) > 0, "the server chunks photos to us: {down:#}");
    }
}
