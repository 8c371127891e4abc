//! The attacks of the security review, each against a real `shardsync serve` on loopback,
//! asserting the safe outcome: sessions bound to their user (a real SyncEvolution client as the
//! victim), no static md5 credential, probes held back, bounded decoding, no panic from stored
//! text, private files.
//!
//! Attackers appear from other addresses through `X-Forwarded-For` (the server trusts it from
//! 127.0.0.1 here), so that the per-address back-off they trigger does not hold back the victim,
//! who connects from 127.0.0.1 itself.
//!
//! Run one: `cargo test --release --test adversarial -- probes --nocapture`.

mod support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use support::server::{add_user, http_get_status, ServerProcess};
use support::syncevo::{ClientConfig, Kind, SyncEvoClient, SyncMode};
use support::{items, Scratch};

const BIN: &str = env!("CARGO_BIN_EXE_shardsync");
const USER: &str = "test";
const PASSWORD: &str = "test";

/// A server with users `test`/`test` and `bob`/`bobpw`, trusting X-Forwarded-For from loopback.
fn serve(extra: &[&str]) -> (ServerProcess, Scratch) {
    let data = Scratch::new("adversarial");
    let dir = data.path().join("data");
    std::fs::create_dir_all(&dir).expect("data dir");
    add_user(Path::new(BIN), &dir, USER, PASSWORD).expect("user test");
    add_user(Path::new(BIN), &dir, "bob", "bobpw").expect("user bob");
    let mut args = vec!["--trusted-proxies", "127.0.0.1", "--auth-fail-delay-ms", "0"];
    args.extend_from_slice(extra);
    let server = ServerProcess::start(Path::new(BIN), &args, &dir).expect("serve");
    (server, data)
}

struct Resp {
    status: u16,
    headers: String,
    body: Vec<u8>,
}

impl Resp {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The SyncHdr status of an XML SyncML reply (0 if there is none).
    fn hdr_status(&self) -> u16 {
        let t = self.text();
        t.split("<Status>")
            .find(|s| s.contains("<Cmd>SyncHdr</Cmd>"))
            .and_then(|s| between(s, "<Data>", "</Data>"))
            .and_then(|d| d.parse().ok())
            .unwrap_or(0)
    }

    /// The path and query of the RespURI.
    fn resp_path(&self) -> Option<String> {
        let t = self.text();
        let uri = between(&t, "<RespURI>", "</RespURI>")?;
        let rest = uri.split_once("://").map_or(uri, |(_, r)| r);
        Some(rest[rest.find('/')?..].replace("&amp;", "&"))
    }
}

fn between<'a>(s: &'a str, a: &str, b: &str) -> Option<&'a str> {
    let start = s.find(a)? + a.len();
    let end = s[start..].find(b)? + start;
    Some(&s[start..end])
}

/// One POST over a fresh connection; `from` is sent as X-Forwarded-For.
fn post(port: u16, path: &str, ctype: &str, body: &[u8], from: Option<&str>) -> Resp {
    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(60))).expect("timeout");
    let fwd = from.map(|f| format!("X-Forwarded-For: {f}\r\n")).unwrap_or_default();
    let head = format!(
        "POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\n{fwd}Connection: close\r\n\r\n",
        body.len()
    );
    s.write_all(head.as_bytes()).expect("write head");
    // The server may answer (and close) before it read a body it refuses.
    let _ = s.write_all(body);
    let mut raw = Vec::new();
    let _ = s.read_to_end(&mut raw);
    let split = raw.windows(4).position(|w| w == b"\r\n\r\n").expect("response head");
    let headers = String::from_utf8_lossy(&raw[..split]).into_owned();
    let status = headers.get(9..12).and_then(|c| c.parse().ok()).expect("status code");
    Resp { status, headers, body: raw[split + 4..].to_vec() }
}

const XML: &str = "application/vnd.syncml+xml";

fn post_xml(port: u16, path: &str, body: &str, from: Option<&str>) -> Resp {
    post(port, path, XML, body.as_bytes(), from)
}

/// Credentials in a message.
enum Cred<'a> {
    None,
    Basic(&'a str, &'a str),
    /// md5 over the given nonce.
    Md5(&'a str, &'a str, &'a [u8]),
}

fn b64(bytes: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

fn message(device: &str, sid: &str, msg_id: u32, cred: Cred<'_>, cmds: &str) -> String {
    let (name, cred) = match cred {
        Cred::None => (USER.to_string(), String::new()),
        Cred::Basic(u, p) => (
            u.to_string(),
            format!(
                "<Cred><Meta><Type xmlns='syncml:metinf'>syncml:auth-basic</Type><Format xmlns='syncml:metinf'>b64</Format></Meta><Data>{}</Data></Cred>",
                b64(format!("{u}:{p}").as_bytes())
            ),
        ),
        Cred::Md5(u, p, nonce) => {
            let inner = shardsync::engine::auth::md5_user_pass_b64(u, p);
            let digest = shardsync::engine::auth::md5_cred_from_digest(&inner, nonce);
            (
                u.to_string(),
                format!(
                    "<Cred><Meta><Type xmlns='syncml:metinf'>syncml:auth-md5</Type><Format xmlns='syncml:metinf'>b64</Format></Meta><Data>{digest}</Data></Cred>"
                ),
            )
        }
    };
    format!(
        "<?xml version=\"1.0\"?><SyncML xmlns='SYNCML:SYNCML1.2'><SyncHdr><VerDTD>1.2</VerDTD><VerProto>SyncML/1.2</VerProto>\
         <SessionID>{sid}</SessionID><MsgID>{msg_id}</MsgID><Target><LocURI>http://127.0.0.1/sync</LocURI></Target>\
         <Source><LocURI>{device}</LocURI><LocName>{name}</LocName></Source>{cred}\
         <Meta><MaxMsgSize xmlns='syncml:metinf'>100000</MaxMsgSize></Meta></SyncHdr><SyncBody>{cmds}<Final/></SyncBody></SyncML>"
    )
}

fn alert(code: u16, next: &str) -> String {
    format!(
        "<Alert><CmdID>1</CmdID><Data>{code}</Data><Item><Target><LocURI>notes</LocURI></Target><Source><LocURI>./notes</LocURI></Source>\
         <Meta><Anchor xmlns='syncml:metinf'><Next>{next}</Next></Anchor></Meta></Item></Alert>"
    )
}

fn sync(items: &[(&str, &str, &str)]) -> String {
    let mut cmds = String::new();
    for (i, (op, id, data)) in items.iter().enumerate() {
        cmds.push_str(&format!(
            "<{op}><CmdID>{}</CmdID><Meta><Type xmlns='syncml:metinf'>text/plain</Type></Meta><Item><Source><LocURI>{id}</LocURI></Source><Data>{data}</Data></Item></{op}>",
            i + 3
        ));
    }
    format!("<Sync><CmdID>2</CmdID><Target><LocURI>notes</LocURI></Target><Source><LocURI>./notes</LocURI></Source>{cmds}</Sync>")
}

/// A client's whole session over raw messages: package 1 with basic auth, the given changes,
/// then the map-less end. Returns every reply.
fn raw_session(port: u16, device: &str, sid: &str, code: u16, changes: &[(&str, &str, &str)]) -> Vec<Resp> {
    let r1 = post_xml(
        port,
        "/sync",
        &message(device, sid, 1, Cred::Basic(USER, PASSWORD), &alert(code, sid)),
        None,
    );
    assert_eq!(r1.hdr_status(), 212, "{}", r1.text());
    let path = r1.resp_path().expect("RespURI");
    let r2 = post_xml(port, &path, &message(device, sid, 2, Cred::None, &sync(changes)), None);
    assert_eq!(r2.status, 200, "{}", r2.text());
    let r3 = post_xml(port, &path, &message(device, sid, 3, Cred::None, ""), None);
    assert_eq!(r3.status, 200, "{}", r3.text());
    vec![r1, r2, r3]
}

/// The log lines of the server so far.
fn log(server: &ServerProcess) -> String {
    std::fs::read_to_string(server.log_path()).unwrap_or_default()
}

#[test]
fn a_session_is_bound_to_its_secret_not_to_its_ids() {
    let (server, _data) = serve(&[]);
    let port = server.port();
    let eve = Some("10.66.0.1");
    // Alice's session: message 1 authenticates; the RespURI carries key and secret.
    let a1 = post_xml(
        port,
        "/sync",
        &message("alice-phone", "42", 1, Cred::Basic(USER, PASSWORD), &alert(201, "a1")),
        None,
    );
    assert_eq!(a1.hdr_status(), 212, "{}", a1.text());
    let path = a1.resp_path().expect("RespURI");
    let token = path.split("s=").nth(1).expect("token").to_string();
    let (key, secret) = token.split_once('.').expect("key.secret");
    assert_eq!((key.len(), secret.len()), (16, 32), "{token}");
    // Eve knows the device id and SessionID (not secret) and sends the next MsgID:
    // without credentials she gets a challenge and nothing of the session.
    let add = sync(&[("Add", "eve-1", "planted by eve")]);
    let e = post_xml(port, "/sync", &message("alice-phone", "42", 2, Cred::None, &add), eve);
    assert_eq!((e.status, e.hdr_status()), (200, 407), "{}", e.text());
    assert!(!e.text().contains("<RespURI>") && !e.text().contains(secret));
    // With her own (valid) credentials: 401, she is not the session's user.
    let e = post_xml(port, "/sync", &message("alice-phone", "42", 2, Cred::Basic("bob", "bobpw"), &add), eve);
    assert_eq!((e.status, e.hdr_status()), (200, 401), "{}", e.text());
    // With the routing key but a wrong secret: 404.
    let forged = format!("/sync?s={key}.{}", "0".repeat(32));
    let e = post_xml(port, &forged, &message("alice-phone", "42", 2, Cred::None, &add), eve);
    assert_eq!(e.status, 404, "{}", e.text());
    // The key alone (an old-style token) proves nothing either.
    let e =
        post_xml(port, &format!("/sync?s={key}"), &message("alice-phone", "42", 2, Cred::None, &add), eve);
    assert_eq!(e.hdr_status(), 407, "{}", e.text());
    // Repeating her last MsgID (hoping for her stored reply): no reply of hers.
    let e = post_xml(port, "/sync", &message("alice-phone", "42", 1, Cred::None, &alert(201, "a1")), eve);
    assert_eq!(e.hdr_status(), 407, "{}", e.text());
    // MsgID 1 with Eve's own login does not end or replace Alice's session.
    let e = post_xml(
        port,
        "/sync",
        &message("alice-phone", "42", 1, Cred::Basic("bob", "bobpw"), &alert(201, "e")),
        eve,
    );
    assert_eq!(e.status, 409, "{}", e.text());
    // Alice goes on, undisturbed, with her secret; nothing of Eve's reached her data.
    let a2 = post_xml(
        port,
        &path,
        &message("alice-phone", "42", 2, Cred::None, &sync(&[("Add", "a-1", "alice's note")])),
        None,
    );
    assert_eq!(a2.hdr_status(), 200, "{}", a2.text());
    assert!(a2.text().contains("<Cmd>Add</Cmd>") && !a2.text().contains("eve"), "{}", a2.text());
    // Her client's resend (same bytes, with the secret) gets the stored reply again ...
    let again = message("alice-phone", "42", 2, Cred::None, &sync(&[("Add", "a-1", "alice's note")]));
    let resent = post_xml(port, &path, &again, None);
    assert_eq!(resent.body, a2.body);
    // ... Eve's copy of the same bytes without the secret does not.
    let e = post_xml(port, "/sync", &again, eve);
    assert_eq!(e.hdr_status(), 407, "{}", e.text());
    // A client that ignores RespURI may continue with its user's credentials.
    let a3 = post_xml(port, "/sync", &message("alice-phone", "42", 3, Cred::Basic(USER, PASSWORD), ""), None);
    assert_eq!((a3.status, a3.hdr_status()), (200, 200), "{}", a3.text());
    // Alice's data: her note only.
    let check = raw_session(port, "alice-tablet", "1", 201, &[]);
    assert!(!check.iter().any(|r| r.text().contains("planted by eve")));
    assert!(log(&server).contains("refused"), "the refusals are logged");
}

#[test]
fn a_real_client_syncs_through_a_takeover_attempt() {
    let (server, _data) = serve(&[]);
    let port = server.port();
    const N: usize = 1500;
    let mut cfg = ClientConfig::new(&server.sync_url(), USER, PASSWORD, "alice-evo", Kind::Contacts);
    cfg.max_msg_size = 20_000;
    let alice = SyncEvoClient::new(cfg).expect("client");
    let opts = items::GenOptions::default();
    for i in 0..N {
        items::write_item(alice.data_dir(), &items::file_name("c", i), &items::vcard30("alice", i, 1, opts));
    }
    let mut running = alice.spawn_sync(SyncMode::Slow);
    // Eve watches for the session (its ids are not secret) and attacks every MsgID while it runs.
    let deadline = Instant::now() + Duration::from_secs(120);
    let sid = loop {
        let text = log(&server);
        if let Some(line) = text.lines().rfind(|l| l.contains("session started") && l.contains("alice-evo")) {
            if let Some(sid) = line.split("session_id=").nth(1).and_then(|r| r.split_whitespace().next()) {
                break sid.trim_matches('"').to_string();
            }
        }
        assert!(Instant::now() < deadline && running.is_running(), "no session of alice's seen:\n{text}");
        std::thread::sleep(Duration::from_millis(20));
    };
    let planted =
        sync(&[("Add", "eve-1", "BEGIN:VCARD\nVERSION:3.0\nFN:Planted by Eve\nN:Eve;Planted\nEND:VCARD")]);
    let mut answers = Vec::new();
    let mut round = 0;
    while running.is_running() && round < 40 {
        for msg_id in 1..=12 {
            for cred in [Cred::None, Cred::Basic("bob", "bobpw")] {
                let r = post_xml(
                    port,
                    "/sync",
                    &message("alice-evo", &sid, msg_id, cred, &planted),
                    Some("10.66.0.2"),
                );
                answers.push((msg_id, r.status, r.hdr_status(), r.text()));
            }
        }
        round += 1;
    }
    let report = running.wait();
    assert!(report.ok(), "alice's sync failed while attacked: {report:?}\n{}", log(&server));
    assert_eq!(report.remote_added, N as u64, "{report:?}");
    for (msg_id, status, hdr, text) in &answers {
        assert!(
            matches!((status, hdr), (200, 401 | 407) | (400 | 404 | 409 | 429, _)),
            "MsgID {msg_id}: {status} / {hdr}: {text}"
        );
        assert!(!text.contains("BEGIN:VCARD") && !text.contains("<RespURI>"), "MsgID {msg_id}: {text}");
    }
    // The server holds her contacts and nothing of Eve's: a second client of hers receives exactly them.
    let mut check = ClientConfig::new(&server.sync_url(), USER, PASSWORD, "alice-check", Kind::Contacts);
    check.max_msg_size = 150_000;
    let verifier = SyncEvoClient::new(check).expect("client");
    let r = verifier.sync(SyncMode::RefreshFromServer);
    assert!(r.ok(), "{r:?}");
    let got = items::list_items(verifier.data_dir());
    assert_eq!(got.len(), N);
    for name in &got {
        let text = std::fs::read_to_string(verifier.data_dir().join(name)).expect("item");
        assert!(!text.contains("Planted"), "{text}");
    }
    // Her next sync is an ordinary two-way one.
    let again = alice.sync(SyncMode::TwoWay);
    assert!(again.ok() && again.mode == "two-way", "{again:?}");
}

#[test]
fn an_md5_credential_over_an_empty_nonce_is_no_static_password() {
    let (server, _data) = serve(&[]);
    let port = server.port();
    // A captured empty-nonce credential, tried from three new device ids: refused each time,
    // with a challenge, and no device record is created.
    for dev in ["new-1", "new-2", "new-3"] {
        let r = post_xml(
            port,
            "/sync",
            &message(dev, "1", 1, Cred::Md5(USER, PASSWORD, b""), &alert(201, "x")),
            Some("10.66.0.3"),
        );
        assert_eq!((r.status, r.hdr_status()), (200, 401), "{}", r.text());
        assert!(r.text().contains("<NextNonce"), "{}", r.text());
    }
    let out = std::process::Command::new(BIN)
        .args(["device", "list", USER, "--data-dir"])
        .arg(server.data_dir())
        .output()
        .expect("device list");
    let listing = String::from_utf8_lossy(&out.stdout);
    assert!(!listing.contains("new-1") && !listing.contains("new-2"), "{listing}");
    // A real client's first sync (md5; no nonce yet): challenged, retries, succeeds.
    let mut cfg = ClientConfig::new(&server.sync_url(), USER, PASSWORD, "first-evo", Kind::Notes);
    cfg.loglevel = 1;
    let client = SyncEvoClient::new(cfg).expect("client");
    items::write_item(client.data_dir(), "n1", &items::note("first", 1, 1));
    let r = client.sync(SyncMode::Slow);
    assert!(r.ok(), "{r:?}");
    assert_eq!(r.remote_added, 1);
    assert!(log(&server).contains("authentication failed"), "the first attempt was challenged");
}

#[test]
fn unknown_session_probes_are_refused_after_a_few_dozen() {
    let (server, _data) = serve(&["--address-free-failures", "30"]);
    let port = server.port();
    let prober = Some("10.66.0.4");
    let mut statuses = Vec::new();
    for sid in 0..60 {
        // MsgID 5 of sessions that do not exist: each one a probe.
        let r =
            post_xml(port, "/sync", &message("victim-phone", &sid.to_string(), 5, Cred::None, ""), prober);
        if r.status == 429 {
            assert!(r.headers.to_ascii_lowercase().contains("\r\nretry-after:"), "{}", r.headers);
        }
        statuses.push(r.status);
    }
    let refused_at = statuses.iter().position(|s| *s == 429).expect("probes are held back");
    assert!((25..=35).contains(&refused_at), "first 429 after {refused_at} probes: {statuses:?}");
    assert!(statuses[..refused_at].iter().all(|s| *s == 404), "{statuses:?}");
    assert!(statuses[refused_at..].iter().all(|s| *s == 429), "{statuses:?}");
    // Others are not affected.
    let r = post_xml(
        port,
        "/sync",
        &message("ok-phone", "1", 1, Cred::Basic(USER, PASSWORD), &alert(201, "k")),
        Some("10.66.0.5"),
    );
    assert_eq!(r.hdr_status(), 212);
    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").expect("write");
    let mut text = String::new();
    let _ = s.read_to_string(&mut text);
    let probes: f64 = text
        .lines()
        .find_map(|l| l.strip_prefix("shardsync_session_probes_total "))
        .and_then(|v| v.trim().parse().ok())
        .expect("probe counter");
    assert_eq!(probes as usize, refused_at, "{text}");
}

/// Peak resident memory of a process (VmHWM), in bytes.
fn peak_rss(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("proc status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .expect("VmHWM")
        * 1024
}

#[test]
fn amplification_bodies_cost_bounded_memory_and_get_a_clear_status() {
    let (server, _data) = serve(&["--max-body", "8388608"]);
    let port = server.port();
    let pid = server.pid().expect("pid");
    // A normal session first, so the baseline includes a warmed-up server.
    raw_session(port, "warm-phone", "1", 201, &[("Add", "w1", "warm")]);
    let before = peak_rss(pid);
    // 4 MB of empty XML elements in the SyncBody.
    let mut xml = message("amp-phone", "1", 1, Cred::None, "");
    let at = xml.find("<Final/>").expect("final");
    xml.insert_str(at, &"<a/>".repeat(1 << 20));
    let r = post_xml(port, "/sync", &xml, Some("10.66.0.6"));
    assert!(matches!(r.status, 400 | 413), "{} {}", r.status, r.text());
    // 1 MB of one-byte empty WBXML commands (0x05).
    let mut wbxml = Vec::new();
    let plain = message("amp-phone", "2", 1, Cred::None, "");
    let m = shardsync::codec::decode(shardsync::model::Encoding::Xml, plain.as_bytes()).expect("decodes");
    shardsync::codec::encode(shardsync::model::Encoding::Wbxml, &m, &mut wbxml);
    let body = wbxml.windows(2).rposition(|w| w == [0x6B, 0x12]).expect("SyncBody with Final") + 1;
    wbxml.splice(body..body, std::iter::repeat_n(0x05u8, 1 << 20));
    let r = post(port, "/sync", "application/vnd.syncml+wbxml", &wbxml, Some("10.66.0.6"));
    assert!(matches!(r.status, 400 | 413), "{} {}", r.status, r.text());
    let after = peak_rss(pid);
    assert!(after - before <= 256 << 20, "peak RSS grew by {} MB", (after - before) >> 20);
    // Still serving.
    assert_eq!(http_get_status(port, "/health"), Some(200));
    raw_session(port, "after-phone", "1", 201, &[("Add", "x1", "still here")]);
}

#[test]
fn a_stored_note_with_an_emoji_goes_through_a_slow_sync() {
    let (server, _data) = serve(&[]);
    let port = server.port();
    // Notes whose first characters are multi-byte (the twin key cut them by bytes).
    let notes = [("Add", "e1", "😀 birthday party"), ("Add", "e2", "日本語のメモ"), ("Add", "e3", "ü")];
    raw_session(port, "emoji-a", "1", 201, &notes);
    // Another device's slow sync matches its items against every stored one.
    let replies = raw_session(
        port,
        "emoji-b",
        "1",
        201,
        &[("Add", "b1", "😀 birthday party"), ("Add", "b2", "✓ done")],
    );
    assert!(replies[1].text().contains("<Cmd>Add</Cmd>"), "{}", replies[1].text());
    assert_eq!(http_get_status(port, "/health"), Some(200));
    raw_session(port, "emoji-c", "1", 201, &[]);
}

#[test]
fn files_are_private_whatever_the_umask() {
    use std::os::unix::fs::PermissionsExt as _;
    // The server as started by a shell with umask 022.
    let data = Scratch::new("adversarial-files");
    let dir = data.path().join("data");
    let old = unsafe_umask(0o022);
    let server = ServerProcess::start(Path::new(BIN), &[], &dir).expect("serve");
    unsafe_umask(old);
    add_user(Path::new(BIN), &dir, USER, PASSWORD).expect("user");
    raw_session(server.port(), "perm-phone", "1", 201, &[("Add", "p1", "private")]);
    let mode = |p: PathBuf| {
        std::fs::metadata(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display())).permissions().mode() & 0o777
    };
    assert_eq!(mode(dir.clone()), 0o700, "data dir");
    for entry in std::fs::read_dir(&dir).expect("data dir") {
        let path = entry.expect("entry").path();
        let m = mode(path.clone());
        assert_eq!(m & 0o077, 0, "{} is mode {m:o}", path.display());
    }
    assert_eq!(mode(dir.join("auth.key")), 0o600);
}

/// Sets this process's umask (inherited by the server it starts); returns the old one.
fn unsafe_umask(mask: u32) -> u32 {
    // SAFETY: umask(2) only changes this process's file creation mask.
    unsafe { libc::umask(mask as libc::mode_t) as u32 }
}
