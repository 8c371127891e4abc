//! Real-client tests: SyncEvolution 2.0.0 syncs with a running server, and every scenario ends
//! with an item-by-item (normalized) comparison of the client's data and the server's.
//!
//! The server's data is read back through a second, fresh SyncEvolution client that does a
//! refresh-from-server into an empty directory, which proves what the server holds and hands
//! out. The target is `shardsync serve` (the binary of this crate) unless
//! `SHARDSYNC_TEST_TARGET=refserver` selects SyncEvolution's own server, which is only there to
//! validate the harness itself.
//!
//! With `SHARDSYNC_TEST_STORE=postgres` the server under test keeps its data in a private
//! PostgreSQL started for each test (`serve --store postgres://…`, see `support_pg`) instead of
//! the embedded store: the same scenarios on both stores.
//!
//! Run one scenario: `cargo test --release --test realclient -- contacts_vcard21 --nocapture`.

mod support;
mod support_pg;

use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use support::compare::{self, NormItem};
use support::items::{self, GenOptions};
use support::server::{self, RefServer, RefServerOptions, ServerProcess};
use support::syncevo::{Auth, ClientConfig, Encoding, Kind, SyncEvoClient, SyncMode, SyncReport};
use support::{wait_until, Scratch};

const USER: &str = "test";
const PASSWORD: &str = "test";

/// What the tests sync with.
enum Server {
    /// `shardsync serve` with its data dir.
    /// (Fields drop in order: the server stops before its PostgreSQL, if any.)
    Shardsync { process: ServerProcess, _data: Scratch, pg: Option<support_pg::PgServer> },
    /// SyncEvolution's own server (harness validation only).
    Reference(RefServer),
}

/// The server under test plus the bookkeeping for client device ids.
struct Target {
    name: String,
    server: Server,
    devices: AtomicU32,
}

/// Devices the reference server accepts per test (it rejects unknown device ids).
const REF_DEVICES: u32 = 12;

/// `SHARDSYNC_TEST_STORE=postgres`: the server under test uses a private PostgreSQL.
fn use_postgres() -> bool {
    match std::env::var("SHARDSYNC_TEST_STORE").as_deref() {
        Err(_) | Ok("") | Ok("embedded") => false,
        Ok("postgres") => true,
        Ok(other) => panic!("SHARDSYNC_TEST_STORE={other}: expected `embedded` (default) or `postgres`"),
    }
}

/// A private PostgreSQL with a migrated database and the test user; its URL.
fn postgres_store(bin: &std::path::Path) -> (support_pg::PgServer, String) {
    use std::io::Write;
    let pg = support_pg::PgServer::start();
    let url = pg.create_db("realclient");
    let status = std::process::Command::new(bin).args(["migrate", "--store", &url]).status().unwrap();
    assert!(status.success(), "shardsync migrate failed");
    let mut add = std::process::Command::new(bin)
        .args(["user", "add", USER, "--store", &url])
        .stdin(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    add.stdin.take().unwrap().write_all(format!("{PASSWORD}\n").as_bytes()).unwrap();
    assert!(add.wait().unwrap().success(), "creating the test user failed");
    (pg, url)
}

fn use_reference_server() -> bool {
    match std::env::var("SHARDSYNC_TEST_TARGET").as_deref() {
        Err(_) | Ok("") | Ok("shardsync") => false,
        Ok("refserver") => true,
        Ok(other) => panic!("SHARDSYNC_TEST_TARGET={other}: expected `shardsync` (default) or `refserver`"),
    }
}

impl Target {
    fn start(name: &str) -> Target {
        Target::start_with(name, 150_000)
    }

    /// Starts a fresh server for one test. Never skips: a server that cannot start fails the test.
    fn start_with(name: &str, ref_max_msg_size: u32) -> Target {
        let server = if use_reference_server() {
            let opts = RefServerOptions {
                username: USER.into(),
                password: PASSWORD.into(),
                device_ids: (0..REF_DEVICES).map(|i| device_id(name, i)).collect(),
                max_msg_size: ref_max_msg_size,
                loglevel: 1,
            };
            Server::Reference(RefServer::start(opts).unwrap_or_else(|e| panic!("{e}")))
        } else {
            let bin = PathBuf::from(env!("CARGO_BIN_EXE_shardsync"));
            let data = Scratch::new(&format!("shardsync-{name}"));
            let data_dir = data.path().join("data");
            // extra `serve` options for debugging, e.g. SHARDSYNC_TEST_SERVER_ARGS="--shards 1"
            let extra = std::env::var("SHARDSYNC_TEST_SERVER_ARGS").unwrap_or_default();
            let mut args: Vec<&str> = extra.split_whitespace().collect();
            if use_postgres() {
                let (pg, url) = postgres_store(&bin);
                args.extend(["--store", url.as_str()]);
                let process = ServerProcess::start(&bin, &args, &data_dir).unwrap_or_else(|e| panic!("{e}"));
                Server::Shardsync { process, _data: data, pg: Some(pg) }
            } else {
                server::add_user(&bin, &data_dir, USER, PASSWORD)
                    .unwrap_or_else(|e| panic!("creating the test user failed: {e}"));
                let process = ServerProcess::start(&bin, &args, &data_dir).unwrap_or_else(|e| panic!("{e}"));
                Server::Shardsync { process, _data: data, pg: None }
            }
        };
        Target { name: name.to_owned(), server, devices: AtomicU32::new(0) }
    }

    fn url(&self) -> String {
        match &self.server {
            Server::Shardsync { process, .. } => process.sync_url(),
            Server::Reference(r) => r.sync_url(),
        }
    }

    fn next_device(&self) -> String {
        let n = self.devices.fetch_add(1, Ordering::SeqCst);
        assert!(n < REF_DEVICES, "test {} uses more than {REF_DEVICES} devices", self.name);
        device_id(&self.name, n)
    }

    /// A new client device configured for this server; `tweak` adjusts its config.
    fn client(&self, kind: Kind, tweak: impl FnOnce(&mut ClientConfig)) -> SyncEvoClient {
        let mut cfg = ClientConfig::new(&self.url(), USER, PASSWORD, &self.next_device(), kind);
        tweak(&mut cfg);
        SyncEvoClient::new(cfg).unwrap_or_else(|e| panic!("{e}"))
    }

    /// What the server holds, as a fresh client of the same kind and settings receives it with a
    /// refresh-from-server into an empty directory.
    fn server_items(&self, like: &SyncEvoClient) -> (SyncEvoClient, Vec<(String, NormItem)>) {
        let (verifier, items, _report) = self.server_items_report(like);
        (verifier, items)
    }

    /// [`Target::server_items`] plus the verifier's session report.
    fn server_items_report(
        &self,
        like: &SyncEvoClient,
    ) -> (SyncEvoClient, Vec<(String, NormItem)>, SyncReport) {
        let base = like.config().clone();
        let verifier = self.client(base.kind, |c| {
            c.encoding = base.encoding;
            c.syncml_version = base.syncml_version;
            c.max_msg_size = base.max_msg_size;
            c.max_obj_size = base.max_obj_size;
            c.loglevel = base.loglevel;
        });
        let r = verifier.sync(SyncMode::RefreshFromServer);
        self.check(&r, "verifier refresh-from-server");
        let items = compare::load_dir(base.kind, verifier.data_dir());
        (verifier, items, r)
    }

    /// Asserts that the server holds exactly the items of `client`'s data dir.
    fn assert_server_matches(&self, client: &SyncEvoClient) {
        let kind = client.config().kind;
        let (_verifier, server_items) = self.server_items(client);
        let local = compare::load_dir(kind, client.data_dir());
        if let Err(diff) = compare::compare_sets(kind, "client", &local, "server", &server_items) {
            panic!("{}: server and client differ\n{diff}", self.name);
        }
    }

    /// Like [`SyncReport::assert_ok`], with the server's log appended on failure.
    fn check(&self, report: &SyncReport, what: &str) {
        if !report.ok() {
            panic!(
                "{}: {what}: sync failed\n{}\n--- server log (tail) ---\n{}",
                self.name,
                report.diagnostics(),
                self.log_tail()
            );
        }
    }

    fn log_tail(&self) -> String {
        match &self.server {
            Server::Shardsync { process, .. } => process.log_tail(),
            Server::Reference(r) => r.log_tail(),
        }
    }

    /// The private PostgreSQL of a run with `SHARDSYNC_TEST_STORE=postgres`.
    fn postgres(&self) -> Option<&support_pg::PgServer> {
        match &self.server {
            Server::Shardsync { pg, .. } => pg.as_ref(),
            Server::Reference(_) => None,
        }
    }

    fn kill9(&mut self) {
        match &mut self.server {
            Server::Shardsync { process, .. } => process.kill9(),
            Server::Reference(r) => r.kill9(),
        }
    }

    fn restart(&mut self) {
        let result = match &mut self.server {
            Server::Shardsync { process, .. } => process.restart(),
            Server::Reference(r) => r.restart(),
        };
        result.unwrap_or_else(|e| panic!("{}: restart failed: {e}", self.name));
    }
}

fn device_id(test: &str, n: u32) -> String {
    format!("{test}-d{n}")
}

/// Expects the given change counters (local = applied to the client, remote = sent to the server).
#[track_caller]
fn assert_counts(r: &SyncReport, local: (u64, u64, u64), remote: (u64, u64, u64)) {
    let got_local = (r.local_added, r.local_updated, r.local_removed);
    let got_remote = (r.remote_added, r.remote_updated, r.remote_removed);
    assert_eq!((got_local, got_remote), (local, remote), "change counters (added, updated, removed)\n{r}");
}

#[track_caller]
fn assert_mode(r: &SyncReport, mode: &str) {
    assert_eq!(r.mode, mode, "sync mode actually run\n{r}");
}

fn contents(client: &SyncEvoClient, names: &[String]) -> Vec<(String, NormItem)> {
    let kind = client.config().kind;
    names
        .iter()
        .map(|n| {
            let text = std::fs::read_to_string(client.data_dir().join(n)).expect("read item");
            (n.clone(), compare::normalize(kind, &text))
        })
        .collect()
}

/// Checks the protocol version and (when the client dumps its messages, loglevel 5) the wire
/// encoding of both directions.
#[track_caller]
fn assert_wire(r: &SyncReport, cfg: &ClientConfig) {
    if let Some(v) = cfg.syncml_version {
        assert_eq!(
            r.syncml_version.as_deref(),
            Some(format!("SyncML/{v}").as_str()),
            "protocol version\n{r}"
        );
    }
    if cfg.loglevel >= 5 {
        let ext = match cfg.encoding {
            Encoding::Xml => ".xml",
            Encoding::Wbxml => ".wbxml",
        };
        assert!(!r.message_dumps.is_empty(), "no message dumps at loglevel 5\n{r}");
        let wrong: Vec<&String> = r.message_dumps.iter().filter(|n| !n.ends_with(ext)).collect();
        assert!(wrong.is_empty(), "messages not in {ext}: {wrong:?}\n{r}");
        assert!(r.message_dumps.iter().any(|n| n.contains("incoming")), "no server message dumped\n{r}");
    }
}

/// First sync of `n` items, a two-way with adds/replaces/deletes on the client, and an unchanged
/// two-way, each checked against the server's data.
fn basic_cycle(name: &str, kind: Kind, n: usize, tweak: impl Fn(&mut ClientConfig)) {
    let t = Target::start(name);
    let a = t.client(kind, &tweak);
    let names = items::write_items(a.data_dir(), kind, "a", 0..n, GenOptions::default());

    let r = a.sync(SyncMode::TwoWay);
    t.check(&r, "first sync");
    assert_mode(&r, "slow");
    assert_counts(&r, (0, 0, 0), (n as u64, 0, 0));
    assert_wire(&r, a.config());
    t.assert_server_matches(&a);

    items::modify_item(a.data_dir(), &names[0], kind, 1);
    items::modify_item(a.data_dir(), &names[1], kind, 1);
    items::delete_items(a.data_dir(), &names[2..3]);
    items::write_items(a.data_dir(), kind, "a", n..n + 2, GenOptions::default());
    let r = a.sync(SyncMode::TwoWay);
    t.check(&r, "two-way with changes");
    assert_mode(&r, "two-way");
    assert_counts(&r, (0, 0, 0), (2, 2, 1));
    assert_wire(&r, a.config());
    t.assert_server_matches(&a);

    let r = a.sync(SyncMode::TwoWay);
    t.check(&r, "unchanged two-way");
    assert_counts(&r, (0, 0, 0), (0, 0, 0));
}

// ---------------------------------------------------------------------------------------------
// formats

#[test]
fn contacts_vcard30() {
    basic_cycle("vcard30", Kind::Contacts, 20, |_| {});
}

#[test]
fn contacts_vcard21() {
    basic_cycle("vcard21", Kind::Contacts21, 20, |_| {});
}

#[test]
fn calendar_ical20() {
    basic_cycle("ical20", Kind::Calendar, 15, |_| {});
}

#[test]
fn calendar_vcal10() {
    basic_cycle("vcal10", Kind::Calendar10, 15, |_| {});
}

#[test]
fn tasks_ical20() {
    basic_cycle("todo20", Kind::Tasks, 15, |_| {});
}

#[test]
fn tasks_vcal10() {
    basic_cycle("todo10", Kind::Tasks10, 15, |_| {});
}

#[test]
fn notes_text() {
    basic_cycle("notes", Kind::Notes, 15, |_| {});
}

/// Two devices share one collection in different versions of its format: the server converts
/// (vCard 2.1 <-> 3.0, vCalendar 1.0 <-> iCalendar 2.0) in both directions.
fn cross_version(name: &str, old: Kind, new: Kind) {
    let t = Target::start(name);
    let a = t.client(old, |_| {});
    let b = t.client(new, |_| {});
    items::write_items(a.data_dir(), old, "a", 0..8, GenOptions::default());
    t.check(&a.sync(SyncMode::TwoWay), "old-format device, first sync");
    let r = b.sync(SyncMode::TwoWay);
    t.check(&r, "new-format device, first sync");
    assert_counts(&r, (8, 0, 0), (0, 0, 0));
    compare::compare_dirs_across(old, a.data_dir(), new, b.data_dir()).unwrap_or_else(|d| panic!("{d}"));

    let bnames = items::list_items(b.data_dir());
    items::modify_item(b.data_dir(), &bnames[0], new, 1);
    items::write_items(b.data_dir(), new, "b", 0..2, GenOptions::default());
    items::delete_items(b.data_dir(), &bnames[1..2]);
    t.check(&b.sync(SyncMode::TwoWay), "new-format device, changes");
    let r = a.sync(SyncMode::TwoWay);
    t.check(&r, "old-format device receives");
    assert_counts(&r, (2, 1, 1), (0, 0, 0));
    compare::compare_dirs_across(old, a.data_dir(), new, b.data_dir()).unwrap_or_else(|d| panic!("{d}"));
}

#[test]
fn contacts_vcard21_and_vcard30_devices() {
    cross_version("x-vcard", Kind::Contacts21, Kind::Contacts);
}

#[test]
fn calendar_vcal10_and_ical20_devices() {
    cross_version("x-vcal", Kind::Calendar10, Kind::Calendar);
}

#[test]
fn tasks_vcal10_and_ical20_devices() {
    cross_version("x-todo", Kind::Tasks10, Kind::Tasks);
}

// ---------------------------------------------------------------------------------------------
// encodings and protocol versions

#[test]
fn contacts_xml_syncml12() {
    basic_cycle("xml12", Kind::Contacts, 10, |c| {
        c.encoding = Encoding::Xml;
        c.syncml_version = Some("1.2");
        c.loglevel = 5;
    });
}

#[test]
fn contacts_wbxml_syncml12() {
    basic_cycle("wbxml12", Kind::Contacts, 10, |c| {
        c.encoding = Encoding::Wbxml;
        c.syncml_version = Some("1.2");
        c.loglevel = 5;
    });
}

#[test]
fn contacts_xml_syncml11() {
    basic_cycle("xml11", Kind::Contacts, 10, |c| {
        c.encoding = Encoding::Xml;
        c.syncml_version = Some("1.1");
        c.loglevel = 5;
    });
}

#[test]
fn contacts_wbxml_syncml11() {
    basic_cycle("wbxml11", Kind::Contacts, 10, |c| {
        c.encoding = Encoding::Wbxml;
        c.syncml_version = Some("1.1");
        c.loglevel = 5;
    });
}

// ---------------------------------------------------------------------------------------------
// sync modes

#[test]
fn first_slow_sync_200_items() {
    let t = Target::start("slow200");
    let a = t.client(Kind::Contacts, |_| {});
    items::write_items(a.data_dir(), Kind::Contacts, "a", 0..200, GenOptions::default());
    let r = a.sync(SyncMode::Slow);
    t.check(&r, "slow sync");
    assert_mode(&r, "slow");
    assert_counts(&r, (0, 0, 0), (200, 0, 0));
    t.assert_server_matches(&a);
    // a second slow sync matches every item against the server's: nothing comes back, nothing is
    // duplicated (the client counts every item it sends in a slow sync as "remote added", so the
    // item comparison is what proves it)
    let r = a.sync(SyncMode::Slow);
    t.check(&r, "second slow sync");
    assert_mode(&r, "slow");
    assert_eq!(r.local_added, 0, "the server sent items back in a slow sync\n{r}");
    assert_eq!(items::list_items(a.data_dir()).len(), 200);
    t.assert_server_matches(&a);
}

#[test]
fn two_way_adds_replaces_deletes() {
    let kind = Kind::Contacts;
    let t = Target::start("twoway");
    let a = t.client(kind, |_| {});
    let names = items::write_items(a.data_dir(), kind, "a", 0..30, GenOptions::default());
    t.check(&a.sync(SyncMode::TwoWay), "first sync");
    for round in 1..=3u32 {
        let base = (round as usize) * 6;
        for name in &names[base..base + 3] {
            items::modify_item(a.data_dir(), name, kind, round);
        }
        items::delete_items(a.data_dir(), &names[base + 3..base + 5]);
        items::write_items(a.data_dir(), kind, &format!("r{round}"), 0..4, GenOptions::default());
        let r = a.sync(SyncMode::TwoWay);
        t.check(&r, &format!("round {round}"));
        assert_mode(&r, "two-way");
        assert_counts(&r, (0, 0, 0), (4, 3, 2));
        t.assert_server_matches(&a);
    }
}

#[test]
fn changes_from_second_device() {
    let kind = Kind::Contacts;
    let t = Target::start("twodev");
    let a = t.client(kind, |_| {});
    let b = t.client(kind, |c| c.encoding = Encoding::Xml);
    items::write_items(a.data_dir(), kind, "a", 0..12, GenOptions::default());
    t.check(&a.sync(SyncMode::TwoWay), "A first sync");

    let r = b.sync(SyncMode::TwoWay);
    t.check(&r, "B first sync");
    assert_counts(&r, (12, 0, 0), (0, 0, 0));
    compare::compare_dirs(kind, a.data_dir(), b.data_dir()).unwrap_or_else(|d| panic!("{d}"));

    // B adds, edits and deletes; A receives exactly that
    let bnames = items::list_items(b.data_dir());
    items::write_items(b.data_dir(), kind, "b", 0..3, GenOptions::default());
    items::modify_item(b.data_dir(), &bnames[0], kind, 1);
    items::modify_item(b.data_dir(), &bnames[1], kind, 1);
    items::delete_items(b.data_dir(), &bnames[2..3]);
    let r = b.sync(SyncMode::TwoWay);
    t.check(&r, "B two-way");
    assert_counts(&r, (0, 0, 0), (3, 2, 1));

    let r = a.sync(SyncMode::TwoWay);
    t.check(&r, "A two-way");
    assert_counts(&r, (3, 2, 1), (0, 0, 0));
    compare::compare_dirs(kind, a.data_dir(), b.data_dir()).unwrap_or_else(|d| panic!("{d}"));
    t.assert_server_matches(&a);

    // no device gets its own changes echoed back
    let r = b.sync(SyncMode::TwoWay);
    t.check(&r, "B unchanged two-way");
    assert_counts(&r, (0, 0, 0), (0, 0, 0));
}

#[test]
fn refresh_from_client() {
    let kind = Kind::Contacts;
    let t = Target::start("rfc");
    let a = t.client(kind, |_| {});
    let b = t.client(kind, |_| {});
    let names = items::write_items(a.data_dir(), kind, "a", 0..10, GenOptions::default());
    t.check(&a.sync(SyncMode::TwoWay), "A first sync");
    t.check(&b.sync(SyncMode::TwoWay), "B first sync");
    items::write_items(b.data_dir(), kind, "b", 0..5, GenOptions::default());
    t.check(&b.sync(SyncMode::TwoWay), "B adds");

    items::delete_items(a.data_dir(), &names[0..2]);
    items::write_items(a.data_dir(), kind, "a", 10..13, GenOptions::default());
    let r = a.sync(SyncMode::RefreshFromClient);
    t.check(&r, "A refresh-from-client");
    assert_mode(&r, "refresh-from-local");
    assert_eq!(
        r.local_added + r.local_updated + r.local_removed,
        0,
        "refresh-from-client changed the client\n{r}"
    );
    assert_eq!(items::list_items(a.data_dir()).len(), 11);
    t.assert_server_matches(&a);

    // B follows the server: it ends up with A's items
    t.check(&b.sync(SyncMode::TwoWay), "B after the refresh");
    compare::compare_dirs(kind, a.data_dir(), b.data_dir()).unwrap_or_else(|d| panic!("{d}"));
}

#[test]
fn refresh_from_server() {
    let kind = Kind::Contacts;
    let t = Target::start("rfs");
    let a = t.client(kind, |_| {});
    let b = t.client(kind, |_| {});
    let names = items::write_items(a.data_dir(), kind, "a", 0..10, GenOptions::default());
    t.check(&a.sync(SyncMode::TwoWay), "A first sync");
    t.check(&b.sync(SyncMode::TwoWay), "B first sync");
    items::write_items(b.data_dir(), kind, "b", 0..5, GenOptions::default());
    t.check(&b.sync(SyncMode::TwoWay), "B adds");

    // local junk on A that the refresh must throw away
    items::write_items(a.data_dir(), kind, "junk", 0..3, GenOptions::default());
    items::modify_item(a.data_dir(), &names[0], kind, 7);
    items::delete_items(a.data_dir(), &names[1..2]);
    let r = a.sync(SyncMode::RefreshFromServer);
    t.check(&r, "A refresh-from-server");
    assert_mode(&r, "refresh-from-remote");
    assert_eq!(
        r.remote_added + r.remote_updated + r.remote_removed,
        0,
        "refresh-from-server changed the server\n{r}"
    );
    assert_eq!(items::list_items(a.data_dir()).len(), 15);
    compare::compare_dirs(kind, a.data_dir(), b.data_dir()).unwrap_or_else(|d| panic!("{d}"));
    t.assert_server_matches(&a);
}

#[test]
fn one_way_from_client() {
    let kind = Kind::Contacts;
    let t = Target::start("owc");
    let a = t.client(kind, |_| {});
    let b = t.client(kind, |_| {});
    let names = items::write_items(a.data_dir(), kind, "a", 0..10, GenOptions::default());
    t.check(&a.sync(SyncMode::TwoWay), "A first sync");
    t.check(&b.sync(SyncMode::TwoWay), "B first sync");
    let b_new = items::write_items(b.data_dir(), kind, "b", 0..2, GenOptions::default());
    t.check(&b.sync(SyncMode::TwoWay), "B adds");

    items::write_items(a.data_dir(), kind, "a", 10..13, GenOptions::default());
    items::modify_item(a.data_dir(), &names[4], kind, 1);
    let r = a.sync(SyncMode::OneWayFromClient);
    t.check(&r, "A one-way-from-client");
    assert_mode(&r, "one-way-from-local");
    assert_counts(&r, (0, 0, 0), (3, 1, 0));
    assert_eq!(items::list_items(a.data_dir()).len(), 13, "A must not receive B's items");

    // server = A's items + B's two new ones
    let mut expected = compare::load_dir(kind, a.data_dir());
    expected.extend(contents(&b, &b_new));
    let (_v, server_items) = t.server_items(&a);
    compare::compare_sets(kind, "A + B's adds", &expected, "server", &server_items)
        .unwrap_or_else(|d| panic!("{d}"));
}

#[test]
fn one_way_from_server() {
    let kind = Kind::Contacts;
    let t = Target::start("ows");
    let a = t.client(kind, |_| {});
    let b = t.client(kind, |_| {});
    items::write_items(a.data_dir(), kind, "a", 0..10, GenOptions::default());
    t.check(&a.sync(SyncMode::TwoWay), "A first sync");
    t.check(&b.sync(SyncMode::TwoWay), "B first sync");
    items::write_items(b.data_dir(), kind, "b", 0..2, GenOptions::default());
    t.check(&b.sync(SyncMode::TwoWay), "B adds");

    let a_local = items::write_items(a.data_dir(), kind, "a", 10..13, GenOptions::default());
    let a_local_items = contents(&a, &a_local);
    let r = a.sync(SyncMode::OneWayFromServer);
    t.check(&r, "A one-way-from-server");
    assert_mode(&r, "one-way-from-remote");
    assert_counts(&r, (2, 0, 0), (0, 0, 0));

    // the server still has exactly B's view; A has that plus its own unsent items
    let (_v, server_items) = t.server_items(&a);
    let b_items = compare::load_dir(kind, b.data_dir());
    compare::compare_sets(kind, "B", &b_items, "server", &server_items).unwrap_or_else(|d| panic!("{d}"));
    let mut expected_a = server_items.clone();
    expected_a.extend(a_local_items);
    let a_items = compare::load_dir(kind, a.data_dir());
    compare::compare_sets(kind, "server + A's unsent", &expected_a, "A", &a_items)
        .unwrap_or_else(|d| panic!("{d}"));
}

// ---------------------------------------------------------------------------------------------
// authentication, sizes

#[test]
fn wrong_password_is_rejected() {
    let t = Target::start("badpw");
    let a = t.client(Kind::Contacts, |c| c.password = "not-the-password".into());
    items::write_items(a.data_dir(), Kind::Contacts, "a", 0..3, GenOptions::default());
    let r = a.sync(SyncMode::TwoWay);
    assert_ne!(r.exit_code, Some(0), "a wrong password must fail the client\n{}", r.diagnostics());
    assert_eq!(r.signal, None, "{}", r.diagnostics());
    assert_eq!(r.status, Some(401), "expected status 401\n{}", r.diagnostics());
    // nothing reached the server
    let good = t.client(Kind::Contacts, |_| {});
    let (_v, server_items) = t.server_items(&good);
    assert!(server_items.is_empty(), "the server stored {} items from a rejected client", server_items.len());
}

#[test]
fn basic_auth_client() {
    // clientAuthType=basic: the first message carries syncml:auth-basic credentials
    basic_cycle("basicauth", Kind::Contacts, 5, |c| c.auth = Auth::Basic);
}

#[test]
fn max_msg_size_10240_with_500_contacts() {
    let kind = Kind::Contacts;
    let t = Target::start("msg10k");
    // loglevel 5: the client dumps every message, so their sizes can be checked
    let a = t.client(kind, |c| {
        c.max_msg_size = 10240;
        c.loglevel = 5;
    });
    items::write_items(a.data_dir(), kind, "a", 0..500, GenOptions::default());
    let r = a.sync(SyncMode::TwoWay);
    t.check(&r, "slow sync at MaxMsgSize 10240");
    assert_counts(&r, (0, 0, 0), (500, 0, 0));
    let sent = r.dump_sizes("outgoing");
    assert!(sent.len() >= 15, "500 contacts in only {} client messages\n{r}", sent.len());
    assert_replies_fit(&r, 10240);

    // the verifier announces 10240 as well, so the server's 500 Adds span many messages too
    let (_verifier, server_items, vr) = t.server_items_report(&a);
    let received = vr.dump_sizes("incoming");
    assert!(received.len() >= 15, "500 contacts in only {} server messages\n{vr}", received.len());
    assert_replies_fit(&vr, 10240);
    let local = compare::load_dir(kind, a.data_dir());
    compare::compare_sets(kind, "client", &local, "server", &server_items).unwrap_or_else(|d| panic!("{d}"));
}

/// Every message the server sent in this session fits the client's MaxMsgSize.
#[track_caller]
fn assert_replies_fit(r: &SyncReport, max: u64) {
    let sizes = r.dump_sizes("incoming");
    assert!(!sizes.is_empty(), "no server messages dumped\n{r}");
    let too_big: Vec<&u64> = sizes.iter().filter(|s| **s > max).collect();
    assert!(too_big.is_empty(), "server messages over MaxMsgSize {max}: {too_big:?}\n{r}");
}

#[test]
fn contact_with_200kb_photo() {
    let kind = Kind::Contacts;
    let t = Target::start("photo");
    // MaxMsgSize 150000 on both sides: the ~270 KB vCard must travel as a large object (MoreData
    // chunks) from the client, and from the server to the verifier
    let a = t.client(kind, |c| c.loglevel = 5);
    items::write_items(a.data_dir(), kind, "a", 0..3, GenOptions::default());
    items::write_items(a.data_dir(), kind, "p", 0..1, GenOptions { photo_bytes: Some(200 * 1024) });
    let r = a.sync(SyncMode::TwoWay);
    t.check(&r, "sync with a 200 KB photo");
    assert_counts(&r, (0, 0, 0), (4, 0, 0));
    let (_verifier, server_items, vr) = t.server_items_report(&a);
    assert!(vr.dump_sizes("incoming").len() >= 2, "the photo cannot fit one server message\n{vr}");
    assert_replies_fit(&vr, 150_000);
    let local = compare::load_dir(kind, a.data_dir());
    compare::compare_sets(kind, "client", &local, "server", &server_items).unwrap_or_else(|d| panic!("{d}"));
}

// ---------------------------------------------------------------------------------------------
// crash safety

/// kill -9 the server in the middle of a 2,000-contact slow sync, restart it on the same data:
/// the client's next sync completes and the server holds exactly the client's items.
#[test]
fn crash_during_slow_sync_of_2000_contacts() {
    let kind = Kind::Contacts;
    let mut t = Target::start("crash");
    let a = t.client(kind, |c| {
        c.max_msg_size = 20_000;
        c.retry_duration_s = 5;
        c.retry_interval_s = 2;
    });
    items::write_items(a.data_dir(), kind, "a", 0..2000, GenOptions::default());
    let originals: Vec<String> =
        (0..2000).map(|i| items::generate(kind, "a", i, 0, GenOptions::default())).collect();

    let mut running = a.spawn_sync(SyncMode::TwoWay);
    // kill once the client has sent a few of its ~40 messages (init + Sync chunks)
    let reached = wait_until(Duration::from_secs(60), Duration::from_millis(10), || {
        !running.is_running() || running.messages_started() >= 6
    });
    assert!(reached, "the client did not get going within 60 s");
    let killed_mid_sync = running.is_running();
    t.kill9();
    let first = running.wait();
    eprintln!("crash: killed mid-sync={killed_mid_sync}; interrupted session: {first}");
    assert!(killed_mid_sync, "the slow sync finished before the server could be killed\n{first}");
    assert!(!first.ok(), "the interrupted session cannot have succeeded\n{first}");

    t.restart();
    let r = a.sync(SyncMode::TwoWay);
    t.check(&r, "sync after the crash");
    // the client still holds exactly its own 2,000 items (nothing duplicated back to it) ...
    compare::compare_with(kind, &originals, a.data_dir())
        .unwrap_or_else(|d| panic!("after the crash, the client's items changed\n{r}\n{d}"));
    // ... and so does the server
    t.assert_server_matches(&a);
}

/// kill -9 the server in the middle of a slow sync and start it again at once: the *same*
/// session goes on. The client resends the message that got no answer; the restarted server
/// continues the session from the state stored with the last committed message (or answers the
/// resend from the stored reply), so the interrupted sync itself succeeds.
#[test]
fn session_survives_server_crash() {
    let kind = Kind::Contacts;
    if use_reference_server() {
        eprintln!("skipped: the reference server does not keep sessions across a restart");
        return;
    }
    let mut t = Target::start("survive");
    let a = t.client(kind, |c| {
        c.max_msg_size = 20_000;
        c.retry_duration_s = 120;
        c.retry_interval_s = 3;
    });
    items::write_items(a.data_dir(), kind, "a", 0..1000, GenOptions::default());
    let originals: Vec<String> =
        (0..1000).map(|i| items::generate(kind, "a", i, 0, GenOptions::default())).collect();

    let mut running = a.spawn_sync(SyncMode::TwoWay);
    let reached = wait_until(Duration::from_secs(60), Duration::from_millis(10), || {
        !running.is_running() || running.messages_started() >= 6
    });
    assert!(reached, "the client did not get going within 60 s");
    assert!(running.is_running(), "the slow sync finished before the server could be killed");
    t.kill9();
    t.restart();
    let r = running.wait();
    t.check(&r, "the session interrupted by the crash");
    assert_mode(&r, "slow");
    compare::compare_with(kind, &originals, a.data_dir())
        .unwrap_or_else(|d| panic!("after the crash, the client's items changed\n{r}\n{d}"));
    t.assert_server_matches(&a);
    // and the next session is a normal two-way sync with nothing to do
    let r = a.sync(SyncMode::TwoWay);
    t.check(&r, "the sync after");
    assert_mode(&r, "two-way");
    assert_counts(&r, (0, 0, 0), (0, 0, 0));
}

/// PostgreSQL restarts in the middle of a slow sync (only with `SHARDSYNC_TEST_STORE=postgres`):
/// messages in flight get HTTP 503 with nothing half-written, the server reconnects by itself,
/// and the client's resend continues the same session, which succeeds.
#[test]
fn postgres_restart_mid_sync() {
    if !use_postgres() || use_reference_server() {
        eprintln!("skipped: needs SHARDSYNC_TEST_STORE=postgres");
        return;
    }
    let kind = Kind::Contacts;
    let t = Target::start("pgrestart");
    let a = t.client(kind, |c| {
        c.max_msg_size = 20_000;
        c.retry_duration_s = 120;
        c.retry_interval_s = 3;
    });
    items::write_items(a.data_dir(), kind, "a", 0..1000, GenOptions::default());
    let originals: Vec<String> =
        (0..1000).map(|i| items::generate(kind, "a", i, 0, GenOptions::default())).collect();
    let mut running = a.spawn_sync(SyncMode::TwoWay);
    let reached = wait_until(Duration::from_secs(60), Duration::from_millis(10), || {
        !running.is_running() || running.messages_started() >= 6
    });
    assert!(reached, "the client did not get going within 60 s");
    assert!(running.is_running(), "the slow sync finished before PostgreSQL could be restarted");
    let pg = t.postgres().expect("a private PostgreSQL");
    pg.stop();
    std::thread::sleep(Duration::from_millis(1500));
    pg.start_again();
    let r = running.wait();
    t.check(&r, "the session interrupted by the PostgreSQL restart");
    assert_mode(&r, "slow");
    compare::compare_with(kind, &originals, a.data_dir())
        .unwrap_or_else(|d| panic!("after the restart, the client's items changed\n{r}\n{d}"));
    t.assert_server_matches(&a);
}
