//! The cluster behind the balancer: the test's own PostgreSQL as the shared
//! store, three `shardsync serve` nodes (two shards each) on loopback, two
//! `shardsync balance` instances in front, 50 simulated SyncML devices and
//! two real SyncEvolution clients syncing at once, and a node killed with
//! SIGKILL in the middle: the node that holds a SyncEvolution session.
//!
//! Sessions continue on the new owner from the store (no sync restarts from
//! message 1; a client may resend a message), every sync completes, every
//! Add is acknowledged once, and the server's data read back by fresh devices
//! holds every item exactly once.
//!
//! Run: `cargo test --release --test cluster -- --nocapture`.

mod support;
mod support_pg;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use shardsync::model::{Command as Cmd, SyncMl};
use support::compare;
use support::items::{self, GenOptions};
use support::syncevo::{ClientConfig, Kind, SyncEvoClient, SyncMode};

const BIN: &str = env!("CARGO_BIN_EXE_shardsync");
const DEVICES: usize = 50;
const SESSIONS_PER_DEVICE: usize = 3;
const ITEMS_PER_SESSION: usize = 4;
const EVO_CLIENTS: usize = 2;
const EVO_ITEMS: usize = 1000;
const EVO_PASSWORD: &str = "evo-secret";

/// Each SyncEvolution client is a user of its own: devices of one user share its
/// address book, so a slow sync would also bring the other client's items.
fn evo_user(e: usize) -> String {
    format!("evo{e}")
}

fn evo_device(e: usize) -> String {
    format!("cluster-evo-{e}")
}

fn evo_tag(e: usize) -> String {
    format!("evo{e}")
}

/// `n` consecutive free loopback ports (probed by binding; retried on collision).
fn free_ports(n: u16) -> u16 {
    for _ in 0..200 {
        let base = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        if base > 65000 {
            continue;
        }
        let held: Vec<_> = (0..n).filter_map(|i| TcpListener::bind(("127.0.0.1", base + i)).ok()).collect();
        if held.len() == n as usize {
            return base;
        }
    }
    panic!("no {n} consecutive free ports");
}

/// A child process killed by PID when dropped.
struct Proc {
    child: Option<Child>,
    args: Vec<String>,
    log: PathBuf,
}

impl Proc {
    fn spawn(args: &[String], log: &Path) -> Proc {
        let mut p = Proc { child: None, args: args.to_vec(), log: log.to_owned() };
        p.start();
        p
    }

    fn start(&mut self) {
        let out = std::fs::OpenOptions::new().create(true).append(true).open(&self.log).unwrap();
        let err = out.try_clone().unwrap();
        let child = Command::new(BIN)
            .args(&self.args)
            // "session started" lines tell which node holds a session.
            .env("RUST_LOG", "warn,shardsync::sync_service=info")
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .unwrap();
        self.child = Some(child);
    }

    fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill(); // SIGKILL on Unix
            let _ = c.wait();
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if let Some(c) = &mut self.child {
            // Teardown: SIGKILL by PID (std's Child::kill) is enough here.
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// A minimal blocking HTTP/1.1 client with keep-alive.
struct Http {
    addr: SocketAddr,
    conn: Option<TcpStream>,
    /// An `Authorization` header line sent with each request.
    auth: String,
}

/// The balancers' admin token (`--admin-token-file`).
const ADMIN_TOKEN: &str = "cluster-test-admin-token-0123456789";

impl Http {
    fn new(port: u16) -> Http {
        Http { addr: SocketAddr::from(([127, 0, 0, 1], port)), conn: None, auth: String::new() }
    }

    /// A client of a balancer's admin listener, with the admin token.
    fn admin(port: u16) -> Http {
        Http { auth: format!("Authorization: Bearer {ADMIN_TOKEN}\r\n"), ..Http::new(port) }
    }

    /// One request; `None` on any transport failure (the connection is dropped).
    fn request(
        &mut self,
        method: &str,
        target: &str,
        ctype: Option<&str>,
        body: &[u8],
    ) -> Option<(u16, Vec<u8>)> {
        let r = self.try_request(method, target, ctype, body);
        if r.is_none() {
            self.conn = None;
        }
        r
    }

    fn try_request(
        &mut self,
        method: &str,
        target: &str,
        ctype: Option<&str>,
        body: &[u8],
    ) -> Option<(u16, Vec<u8>)> {
        if self.conn.is_none() {
            let s = TcpStream::connect_timeout(&self.addr, Duration::from_secs(2)).ok()?;
            s.set_read_timeout(Some(Duration::from_secs(30))).ok()?;
            self.conn = Some(s);
        }
        let s = self.conn.as_mut()?;
        let ct = ctype.map(|c| format!("Content-Type: {c}\r\n")).unwrap_or_default();
        let head = format!(
            "{method} {target} HTTP/1.1\r\nHost: {}\r\n{ct}{}Content-Length: {}\r\n\r\n",
            self.addr,
            self.auth,
            body.len()
        );
        s.write_all(head.as_bytes()).ok()?;
        s.write_all(body).ok()?;
        let mut buf = Vec::new();
        let mut chunk = [0u8; 16384];
        let (status, len, head_len, close) = loop {
            let n = s.read(&mut chunk).ok()?;
            if n == 0 {
                return None;
            }
            buf.extend_from_slice(&chunk[..n]);
            let mut hs = [httparse::EMPTY_HEADER; 32];
            let mut resp = httparse::Response::new(&mut hs);
            if let Ok(httparse::Status::Complete(h)) = resp.parse(&buf) {
                let len = resp
                    .headers
                    .iter()
                    .find(|h| h.name.eq_ignore_ascii_case("content-length"))
                    .and_then(|h| std::str::from_utf8(h.value).ok()?.trim().parse::<usize>().ok())?;
                let close = resp.headers.iter().any(|h| {
                    h.name.eq_ignore_ascii_case("connection") && h.value.eq_ignore_ascii_case(b"close")
                });
                break (resp.code?, len, h, close);
            }
        };
        while buf.len() < head_len + len {
            let n = s.read(&mut chunk).ok()?;
            if n == 0 {
                return None;
            }
            buf.extend_from_slice(&chunk[..n]);
        }
        if close {
            self.conn = None;
        }
        Some((status, buf[head_len..head_len + len].to_vec()))
    }

    fn get(&mut self, target: &str) -> Option<(u16, String)> {
        self.request("GET", target, None, b"").map(|(s, b)| (s, String::from_utf8_lossy(&b).into_owned()))
    }
}

/// `GET target` on a balancer's admin listener.
fn get_json(admin_port: u16, target: &str) -> serde_json::Value {
    let (status, body) =
        Http::admin(admin_port).get(target).unwrap_or_else(|| panic!("GET {target} on {admin_port} failed"));
    assert_eq!(status, 200, "{target}: {body}");
    serde_json::from_str(&body).unwrap()
}

fn wait_until(what: &str, timeout: Duration, mut f: impl FnMut() -> bool) {
    let end = Instant::now() + timeout;
    while Instant::now() < end {
        if f() {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("timed out waiting for {what}");
}

struct Node {
    proc: Proc,
    port: u16,
    shard_base: u16,
}

struct Cluster {
    _dir: tempfile::TempDir,
    nodes: Vec<Node>,
    /// Each balancer, its public port and its admin port.
    balancers: Vec<(Proc, u16, u16)>,
    // Last: dropped after the nodes that use it.
    _pg: support_pg::PgServer,
}

impl Cluster {
    fn start() -> Cluster {
        let dir = tempfile::Builder::new().prefix("cluster").tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
        let bports: Vec<u16> = (0..2).map(|_| free_ports(1)).collect();
        let aports: Vec<u16> = (0..2).map(|_| free_ports(1)).collect();
        let token_file = dir.path().join("admin-token");
        std::fs::write(&token_file, format!("{ADMIN_TOKEN}\n")).unwrap();
        let public = format!("http://127.0.0.1:{}/sync", bports[0]);
        let mut nodes = Vec::new();
        let pg = support_pg::PgServer::start();
        let url = pg.create_db("cluster");
        let ok = Command::new(BIN).args(["migrate", "--store", &url]).status().unwrap().success();
        assert!(ok, "shardsync migrate --store failed");
        let users: Vec<(String, &str)> = std::iter::once(("test".to_string(), "test"))
            .chain((0..EVO_CLIENTS).map(|e| (evo_user(e), EVO_PASSWORD)))
            .collect();
        for (user, password) in &users {
            let mut add = Command::new(BIN)
                .args(["user", "add", user.as_str(), "--store", &url])
                .stdin(Stdio::piped())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap();
            add.stdin.take().unwrap().write_all(format!("{password}\n").as_bytes()).unwrap();
            assert!(add.wait().unwrap().success(), "user add");
        }
        for i in 0..3 {
            let data = dir.path().join(format!("node{i}"));
            std::fs::create_dir_all(&data).unwrap();
            let base = free_ports(3);
            let mut args: Vec<String> = vec![
                "serve".into(),
                "--listen".into(),
                format!("127.0.0.1:{base}"),
                "--shards".into(),
                "2".into(),
                "--shard-port-base".into(),
                (base + 1).to_string(),
                "--data-dir".into(),
                data.display().to_string(),
                "--public-url".into(),
                public.clone(),
                "--pin".into(),
                "false".into(),
            ];
            // One challenge key for the cluster (README, Security): a client challenged by one
            // node may retry on another.
            args.extend(["--store".into(), url.clone()]);
            args.extend(["--auth-key-file".into(), dir.path().join("auth.key").display().to_string()]);
            let proc = Proc::spawn(&args, &dir.path().join(format!("node{i}.log")));
            nodes.push(Node { proc, port: base, shard_base: base + 1 });
        }
        for n in &nodes {
            let port = n.port;
            wait_until("node /health", Duration::from_secs(20), || {
                Http::new(port).get("/health").is_some_and(|(s, _)| s == 200)
            });
        }
        let mut balancers = Vec::new();
        for (i, (&port, &aport)) in bports.iter().zip(&aports).enumerate() {
            let mut args: Vec<String> = vec![
                "balance".into(),
                "--listen".into(),
                format!("127.0.0.1:{port}"),
                "--admin-listen".into(),
                format!("127.0.0.1:{aport}"),
                "--admin-token-file".into(),
                token_file.display().to_string(),
                "--threads".into(),
                "1".into(),
            ];
            for n in &nodes {
                args.extend(["--backend".into(), format!("127.0.0.1:{}", n.port)]);
            }
            args.extend(["--public-url".into(), public.clone()]);
            let proc = Proc::spawn(&args, &dir.path().join(format!("balance{i}.log")));
            wait_until("balancer /status", Duration::from_secs(20), || {
                Http::admin(aport)
                    .get("/status")
                    .is_some_and(|(s, b)| s == 200 && b.matches("\"healthy\":true").count() == 6)
            });
            balancers.push((proc, port, aport));
        }
        Cluster { _dir: dir, nodes, balancers, _pg: pg }
    }

    fn members_of(&self, node: usize) -> Vec<String> {
        let b = self.nodes[node].shard_base;
        vec![format!("127.0.0.1:{b}"), format!("127.0.0.1:{}", b + 1)]
    }
}

fn tokens(n: usize) -> Vec<String> {
    (0..n)
        .map(|i| shardsync::routing::token(shardsync::routing::session_key(&format!("probe-{i}"), "1")))
        .collect()
}

/// The member each token routes to, via a balancer's `/route` (on its admin listener).
fn routes(admin_port: u16, toks: &[String], new: bool) -> Vec<String> {
    let mut http = Http::admin(admin_port);
    toks.iter()
        .map(|t| {
            let q = if new { format!("/route?s={t}&new=1") } else { format!("/route?s={t}") };
            let (s, body) = http.get(&q).unwrap();
            assert_eq!(s, 200);
            let v: serde_json::Value = serde_json::from_str(&body).unwrap();
            v["member"].as_str().unwrap_or("").to_string()
        })
        .collect()
}

fn healthy(admin_port: u16) -> Vec<(String, bool)> {
    get_json(admin_port, "/status")["members"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| (m["id"].as_str().unwrap().to_string(), m["healthy"].as_bool().unwrap()))
        .collect()
}

// ---------------------------------------------------------------- devices

fn hdr(device: &str, session: u32, msg: u32, cred: bool) -> String {
    let cred = if cred {
        "<Cred><Meta><Type xmlns='syncml:metinf'>syncml:auth-basic</Type><Format xmlns='syncml:metinf'>b64</Format></Meta><Data>dGVzdDp0ZXN0</Data></Cred>"
    } else {
        ""
    };
    format!(
        "<?xml version=\"1.0\"?><SyncML xmlns='SYNCML:SYNCML1.2'><SyncHdr><VerDTD>1.2</VerDTD><VerProto>SyncML/1.2</VerProto>\
         <SessionID>{session}</SessionID><MsgID>{msg}</MsgID><Target><LocURI>http://127.0.0.1/sync</LocURI></Target>\
         <Source><LocURI>{device}</LocURI><LocName>test</LocName></Source>{cred}\
         <Meta><MaxMsgSize xmlns='syncml:metinf'>150000</MaxMsgSize></Meta></SyncHdr><SyncBody>"
    )
}

fn vcard(name: &str) -> String {
    format!("BEGIN:VCARD\r\nVERSION:3.0\r\nN:{name};Dev;;;\r\nFN:Dev {name}\r\nTEL;TYPE=CELL:555{}\r\nEND:VCARD\r\n", name.len())
}

fn statuses(m: &SyncMl<'_>) -> Vec<(String, String, u16)> {
    m.body
        .iter()
        .filter_map(|c| match c {
            Cmd::Status(s) => {
                Some((s.cmd.to_string(), s.cmd_ref.to_string(), s.data.trim().parse().unwrap_or(0)))
            }
            _ => None,
        })
        .collect()
}

/// The contact names a server holds for user `test`: a fresh device slow-syncs
/// with no items and collects every Add the server sends.
fn server_names(port: u16, device: &str) -> Vec<String> {
    let mut http = Http::new(port);
    let mut report = DeviceReport::default();
    let m1 = format!(
        "{}<Alert><CmdID>1</CmdID><Data>201</Data><Item><Target><LocURI>contacts</LocURI></Target>\
         <Source><LocURI>./contacts</LocURI></Source><Meta><Anchor xmlns='syncml:metinf'><Next>1</Next></Anchor></Meta>\
         </Item></Alert><Final/></SyncBody></SyncML>",
        hdr(device, 1, 1, true)
    );
    let r1 = exchange(&mut http, "/sync", &m1, &mut report).expect("check sync: message 1");
    assert!(statuses(&r1).iter().any(|(c, _, s)| c == "SyncHdr" && (*s == 212 || *s == 200)));
    let m2 = format!(
        "{}<Sync><CmdID>2</CmdID><Target><LocURI>contacts</LocURI></Target><Source><LocURI>./contacts</LocURI></Source></Sync>\
         <Final/></SyncBody></SyncML>",
        // Posted to /sync, not RespURI: credentials in every message.
        hdr(device, 1, 2, true)
    );
    let mut reply = exchange(&mut http, "/sync", &m2, &mut report).expect("check sync: message 2");
    let mut names = Vec::new();
    for msg in 3..200 {
        for c in &reply.body {
            let Cmd::Sync(sync) = c else { continue };
            for ic in &sync.commands {
                let Cmd::Add(add) = ic else { continue };
                for it in &add.items {
                    if let Some(shardsync::model::Data::Text(t)) = &it.data {
                        let n = t.lines().find_map(|l| l.strip_prefix("N:")).unwrap_or("");
                        names.push(n.split(';').next().unwrap_or("").to_string());
                    }
                }
            }
        }
        let fin = reply.final_;
        let m =
            format!("{}{}</SyncBody></SyncML>", hdr(device, 1, msg, true), if fin { "<Final/>" } else { "" });
        reply = exchange(&mut http, "/sync", &m, &mut report).expect("check sync: later message");
        if fin {
            break;
        }
    }
    names
}

#[derive(Default)]
struct DeviceReport {
    sessions: usize,
    restarts: usize,
    resends: usize,
    items_acked: usize,
}

/// Sends one message, resending once on a transport error or a 5xx; returns the decoded reply.
fn exchange(http: &mut Http, url: &str, body: &str, report: &mut DeviceReport) -> Option<SyncMl<'static>> {
    for attempt in 0..2 {
        if attempt > 0 {
            report.resends += 1;
        }
        match http.request("POST", url, Some("application/vnd.syncml+xml"), body.as_bytes()) {
            Some((200, reply)) => return shardsync::xml::decode(&reply).ok().map(SyncMl::into_owned),
            Some((s, _)) if s < 500 => return None,
            _ => std::thread::sleep(Duration::from_millis(100)),
        }
    }
    None
}

/// One complete sync session (slow sync, `ITEMS_PER_SESSION` Adds); `Err` when the
/// session broke and must be restarted from message 1.
fn one_session(
    http: &mut Http,
    device: &str,
    sid: u32,
    round: usize,
    follow: bool,
    report: &mut DeviceReport,
) -> Result<(), String> {
    let mut msg = 1;
    let m1 = format!(
        "{}<Alert><CmdID>1</CmdID><Data>201</Data><Item><Target><LocURI>contacts</LocURI></Target>\
         <Source><LocURI>./contacts</LocURI></Source><Meta><Anchor xmlns='syncml:metinf'><Next>{sid}</Next></Anchor></Meta>\
         </Item></Alert><Final/></SyncBody></SyncML>",
        hdr(device, sid, msg, true)
    );
    let r1 = exchange(http, "/sync", &m1, report).ok_or("message 1 failed")?;
    let st = statuses(&r1);
    if !st.iter().any(|(c, _, s)| c == "SyncHdr" && (*s == 212 || *s == 200)) {
        return Err(format!("auth: {st:?}"));
    }
    // Follow RespURI (it carries ?s=token), or keep posting to /sync (key from the header).
    let url = match (&r1.hdr.resp_uri, follow) {
        (Some(u), true) => {
            u.split_once("/sync").map(|(_, rest)| format!("/sync{rest}")).unwrap_or("/sync".into())
        }
        _ => "/sync".to_string(),
    };
    // A device that ignores RespURI has no session secret: it proves itself with its
    // credentials in every message (README, Security).
    let cred = !follow;
    msg += 1;
    let mut m2 = hdr(device, sid, msg, cred);
    m2.push_str("<Sync><CmdID>2</CmdID><Target><LocURI>contacts</LocURI></Target><Source><LocURI>./contacts</LocURI></Source>");
    for i in 0..ITEMS_PER_SESSION {
        let luid = format!("{device}-r{round}-i{i}");
        m2.push_str(&format!(
            "<Add><CmdID>{}</CmdID><Meta><Type xmlns='syncml:metinf'>text/vcard</Type></Meta><Item><Source><LocURI>{luid}</LocURI></Source>\
             <Data><![CDATA[{}]]></Data></Item></Add>",
            10 + i,
            vcard(&luid)
        ));
    }
    m2.push_str("</Sync><Final/></SyncBody></SyncML>");
    std::thread::sleep(Duration::from_millis(30));
    let r2 = exchange(http, &url, &m2, report).ok_or("message 2 failed")?;
    let st = statuses(&r2);
    let adds: Vec<&(String, String, u16)> = st.iter().filter(|(c, _, _)| c == "Add").collect();
    if adds.len() != ITEMS_PER_SESSION || !adds.iter().all(|(_, _, s)| *s == 201 || *s == 200) {
        return Err(format!("adds: {st:?}"));
    }
    let mut refs: Vec<&str> = adds.iter().map(|(_, r, _)| r.as_str()).collect();
    refs.sort();
    refs.dedup();
    if refs.len() != ITEMS_PER_SESSION {
        return Err(format!("duplicate Add statuses: {st:?}"));
    }
    // Package 5 (empty, final) closes the session; the server's reply is final.
    let mut reply = r2;
    for _ in 0..4 {
        msg += 1;
        let fin = reply.final_;
        let m = format!(
            "{}{}</SyncBody></SyncML>",
            hdr(device, sid, msg, cred),
            if fin { "<Final/>" } else { "" }
        );
        std::thread::sleep(Duration::from_millis(30));
        reply = exchange(http, &url, &m, report).ok_or("closing message failed")?;
        if fin {
            report.items_acked += ITEMS_PER_SESSION;
            report.sessions += 1;
            return Ok(());
        }
    }
    Err("server never ended the session".into())
}

fn run_device(port: u16, d: usize, started: Arc<AtomicUsize>) -> DeviceReport {
    let device = format!("cluster-dev-{d}");
    let mut http = Http::new(port);
    let mut report = DeviceReport::default();
    let mut sid = 1u32;
    for round in 0..SESSIONS_PER_DEVICE {
        started.fetch_add(1, Ordering::SeqCst);
        let mut tries = 0;
        loop {
            // Half the devices ignore RespURI: the balancer routes them by their SyncHdr.
            match one_session(&mut http, &device, sid, round, d % 2 == 0, &mut report) {
                Ok(()) => break,
                Err(e) => {
                    tries += 1;
                    report.restarts += 1;
                    assert!(tries < 5, "{device} round {round}: sync keeps failing: {e}");
                    std::thread::sleep(Duration::from_millis(200));
                }
            }
            sid += 1;
        }
        sid += 1;
    }
    report
}

#[test]
fn cluster_failover_draining_and_two_balancers() {
    let mut c = Cluster::start();
    let (b0, b1) = (c.balancers[0].1, c.balancers[1].1);
    let (a0, a1) = (c.balancers[0].2, c.balancers[1].2);
    let toks = tokens(3000);

    // Two balancers, same members: the same owner for every key.
    let r0 = routes(a0, &toks, false);
    assert_eq!(r0, routes(a1, &toks, false), "balancers disagree");
    let all_members: Vec<String> = (0..3).flat_map(|n| c.members_of(n)).collect();
    for m in &all_members {
        let share = r0.iter().filter(|r| *r == m).count() as f64 / toks.len() as f64;
        assert!((share - 1.0 / 6.0).abs() < 0.04, "{m}: share {share}");
    }

    // Draining (on both balancers): new sessions avoid the member, existing ones stay.
    let drained = c.members_of(0)[0].clone();
    for a in [a0, a1] {
        let (s, _) =
            Http::admin(a).request("POST", &format!("/admin/drain?member={drained}"), None, b"").unwrap();
        assert_eq!(s, 202);
    }
    wait_until("draining in /status", Duration::from_secs(5), || {
        get_json(a0, "/status")["members"]
            .as_array()
            .unwrap()
            .iter()
            .any(|m| m["id"] == drained.as_str() && m["draining"] == true)
    });
    std::thread::sleep(Duration::from_millis(200));
    let new_routes = routes(a0, &toks, true);
    assert_eq!(routes(a0, &toks, false), r0, "draining must not move existing sessions");
    assert!(!new_routes.contains(&drained), "a new session went to the draining member");
    assert_eq!(new_routes, routes(a1, &toks, true));
    for a in [a0, a1] {
        Http::admin(a).request("POST", &format!("/admin/undrain?member={drained}"), None, b"").unwrap();
    }
    wait_until("undrained", Duration::from_secs(5), || routes(a0, &toks[..50], true) == r0[..50]);

    // Two real SyncEvolution clients (their own user), one through each balancer: slow syncs of
    // many small messages, so the kill lands in the middle of their sessions.
    let evo_originals: Vec<Vec<String>> = (0..EVO_CLIENTS)
        .map(|e| {
            (0..EVO_ITEMS)
                .map(|i| items::generate(Kind::Contacts, &evo_tag(e), i, 0, GenOptions::default()))
                .collect()
        })
        .collect();
    let evo: Vec<SyncEvoClient> = (0..EVO_CLIENTS)
        .map(|e| {
            let url = format!("http://127.0.0.1:{}/sync", [b0, b1][e % 2]);
            let mut cfg = ClientConfig::new(&url, &evo_user(e), EVO_PASSWORD, &evo_device(e), Kind::Contacts);
            cfg.max_msg_size = 8_000;
            // Resend a message that got no answer after 2 s, for up to a minute: the
            // balancer meanwhile notices the dead node and routes to the new owner.
            cfg.retry_interval_s = 2;
            cfg.retry_duration_s = 60;
            let client = SyncEvoClient::new(cfg).unwrap_or_else(|e| panic!("{e}"));
            items::write_items(
                client.data_dir(),
                Kind::Contacts,
                &evo_tag(e),
                0..EVO_ITEMS,
                GenOptions::default(),
            );
            client
        })
        .collect();
    let mut running: Vec<_> = evo.iter().map(|c| c.spawn_sync(SyncMode::TwoWay)).collect();
    // The simulated devices are quick (all their sessions take a second or two): start them
    // once the clients are under way, so that the kill finds both in the middle of their syncs.
    wait_until("SyncEvolution clients started", Duration::from_secs(60), || {
        running.iter_mut().all(|r| !r.is_running() || r.messages_started() >= 2)
    });

    // 50 devices, half through each balancer.
    let started = Arc::new(AtomicUsize::new(0));
    let t0 = Instant::now();
    let threads: Vec<_> = (0..DEVICES)
        .map(|d| {
            let port = if d % 4 < 2 { b0 } else { b1 };
            let started = started.clone();
            std::thread::spawn(move || run_device(port, d, started))
        })
        .collect();
    // Kill -9 the node holding SyncEvolution client 0's session once a third of the
    // simulated sessions have started.
    wait_until("devices started", Duration::from_secs(60), || {
        started.load(Ordering::SeqCst) >= DEVICES + DEVICES / 3
    });
    if !running[0].is_running() {
        let report = running.remove(0).wait();
        panic!("SyncEvolution client 0 finished before the kill\n{}", report.diagnostics());
    }
    let victim = (0..3)
        .find(|&n| {
            std::fs::read_to_string(&c.nodes[n].proc.log)
                .unwrap_or_default()
                .lines()
                .any(|l| l.contains("session started") && l.contains(&format!("device={}", evo_device(0))))
        })
        .expect("a node logged SyncEvolution client 0's session");
    c.nodes[victim].proc.kill9();
    let killed_at = t0.elapsed();
    let reports: Vec<DeviceReport> = threads.into_iter().map(|t| t.join().expect("device thread")).collect();
    let sessions: usize = reports.iter().map(|r| r.sessions).sum();
    let restarts: usize = reports.iter().map(|r| r.restarts).sum();
    let resends: usize = reports.iter().map(|r| r.resends).sum();
    let items: usize = reports.iter().map(|r| r.items_acked).sum();
    eprintln!(
        "cluster: {DEVICES} devices, {sessions} sessions completed in {:?} (node {victim} killed at {killed_at:?}); \
         {restarts} sessions restarted, {resends} messages resent, {items} items acknowledged",
        t0.elapsed()
    );
    assert_eq!(sessions, DEVICES * SESSIONS_PER_DEVICE, "every sync completes");
    assert_eq!(items, DEVICES * SESSIONS_PER_DEVICE * ITEMS_PER_SESSION, "every item acknowledged once");
    assert_eq!(restarts, 0, "with the shared store sessions continue on the new owner");

    // The SyncEvolution sessions themselves succeed, across the failover.
    for (e, r) in running.into_iter().enumerate() {
        let report = r.wait();
        eprintln!("cluster: SyncEvolution client {e}: {}", report.mode);
        assert!(report.ok(), "SyncEvolution client {e}'s sync failed\n{}", report.diagnostics());
    }

    // Client 0's session went on on another node, from the store.
    let continued = (0..3).filter(|&n| n != victim).any(|n| {
        std::fs::read_to_string(&c.nodes[n].proc.log).unwrap_or_default().lines().any(|l| {
            l.contains("session continued from the store") && l.contains(&format!("device={}", evo_device(0)))
        })
    });
    assert!(continued, "no surviving node continued SyncEvolution client 0's session");

    // Nothing lost, nothing duplicated: every item added is on the server once.
    let expected: std::collections::BTreeSet<String> = (0..DEVICES)
        .flat_map(|d| {
            (0..SESSIONS_PER_DEVICE)
                .flat_map(move |r| (0..ITEMS_PER_SESSION).map(move |i| format!("cluster-dev-{d}-r{r}-i{i}")))
        })
        .collect();
    // A slow sync through the balancer returns each item exactly once.
    let mut names = server_names(b0, "cluster-check");
    let all = names.len();
    names.sort();
    names.dedup();
    assert_eq!(names.len(), all, "duplicated items on the server");
    assert_eq!(names.into_iter().collect::<std::collections::BTreeSet<_>>(), expected, "items lost");
    // Each SyncEvolution client holds exactly its own items, and the server exactly theirs.
    for (e, client) in evo.iter().enumerate() {
        compare::compare_with(Kind::Contacts, &evo_originals[e], client.data_dir())
            .unwrap_or_else(|d| panic!("SyncEvolution client {e}'s items changed\n{d}"));
    }
    for (e, originals) in evo_originals.iter().enumerate() {
        let mut cfg = ClientConfig::new(
            &format!("http://127.0.0.1:{b1}/sync"),
            &evo_user(e),
            EVO_PASSWORD,
            &evo_device(EVO_CLIENTS + e),
            Kind::Contacts,
        );
        cfg.max_msg_size = 100_000;
        let verifier = SyncEvoClient::new(cfg).unwrap_or_else(|e| panic!("{e}"));
        verifier.sync(SyncMode::RefreshFromServer).assert_ok("verifier refresh-from-server");
        compare::compare_with(Kind::Contacts, originals, verifier.data_dir())
            .unwrap_or_else(|d| panic!("the server's items of SyncEvolution client {e} differ\n{d}"));
    }

    // The victim is down on both balancers (passively or by checks): its keys moved, others stayed.
    let dead = c.members_of(victim);
    for a in [a0, a1] {
        wait_until("victim down", Duration::from_secs(15), || {
            healthy(a).iter().filter(|(id, up)| dead.contains(id) && !up).count() == 2
        });
    }
    let r_down = routes(a0, &toks, false);
    assert_eq!(r_down, routes(a1, &toks, false));
    let owned_by_dead = r0.iter().filter(|r| dead.contains(r)).count();
    let moved_others = r0.iter().zip(&r_down).filter(|(a, b)| a != b && !dead.contains(a)).count();
    assert!(r_down.iter().all(|r| !dead.contains(r)));
    assert!(moved_others as f64 <= 0.01 * toks.len() as f64, "{moved_others} keys of live members moved");

    // Restart it: after `rise` good checks only its share moves back.
    c.nodes[victim].proc.start();
    for a in [a0, a1] {
        wait_until("victim up again", Duration::from_secs(30), || healthy(a).iter().all(|(_, up)| *up));
    }
    let r_back = routes(a0, &toks, false);
    assert_eq!(r_back, r0, "the same members give the same routing");
    let moved_back = r_down.iter().zip(&r_back).filter(|(a, b)| a != b).count();
    eprintln!(
        "cluster: node {victim} owned {owned_by_dead}/{} probe keys; {moved_others} others moved when it died; \
         {moved_back} moved back on restart",
        toks.len()
    );
    assert!(moved_back as f64 <= owned_by_dead as f64 + 0.01 * toks.len() as f64);
    // Sessions work again everywhere, also on the restarted node.
    let after = run_device(b0, DEVICES + 1, Arc::new(AtomicUsize::new(0)));
    assert_eq!((after.sessions, after.restarts), (SESSIONS_PER_DEVICE, 0));

    // /status shows requests on every live member.
    let status = get_json(a0, "/status");
    for m in status["members"].as_array().unwrap() {
        assert!(m["weight"].as_u64() == Some(1));
    }
    // Unroutable body → 400.
    let (s, _) =
        Http::new(b0).request("POST", "/sync", Some("application/vnd.syncml+xml"), b"<nope/>").unwrap();
    assert_eq!(s, 400);
    let _ = &mut c;
}
