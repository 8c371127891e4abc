//! HTTPS end to end with a self-signed certificate made by the test (rcgen):
//! curl posts a SyncML session to `serve --tls-cert/--tls-key` and through a
//! TLS-terminating `balance`; SyncEvolution (libcurl, verifying the
//! certificate) syncs contacts over HTTPS; plain HTTP to a TLS port fails.

mod support;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use support::items::{self, GenOptions};
use support::server::ServerProcess;
use support::syncevo::{ClientConfig, Kind, SyncEvoClient, SyncMode};

const BIN: &str = env!("CARGO_BIN_EXE_shardsync");

/// A self-signed certificate for 127.0.0.1 and localhost, as PEM files in `dir`.
fn make_cert(dir: &Path) -> (PathBuf, PathBuf) {
    let mut params = rcgen::CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()])
        .expect("params");
    params.distinguished_name.push(rcgen::DnType::CommonName, "shardsync test");
    // Its own trust anchor: clients are given this file as their CA list.
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let key = rcgen::KeyPair::generate().expect("key");
    let cert = params.self_signed(&key).expect("self-signed");
    let (c, k) = (dir.join("cert.pem"), dir.join("key.pem"));
    std::fs::write(&c, cert.pem()).expect("write cert");
    std::fs::write(&k, key.serialize_pem()).expect("write key");
    (c, k)
}

/// curl: one request; (HTTP status, body). `cacert: None` uses plain HTTP semantics of the URL.
fn curl(url: &str, cacert: &Path, body: Option<&str>) -> (u16, String) {
    let mut cmd = Command::new("curl");
    cmd.args(["-s", "-S", "--max-time", "20", "--cacert"]).arg(cacert).args(["-w", "\n%{http_code}"]);
    if let Some(b) = body {
        cmd.args(["-H", "Content-Type: application/vnd.syncml+xml", "--data-binary", b]);
    }
    let out = cmd.arg(url).output().expect("run curl (apt-get install curl)");
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", "0"));
    (code.trim().parse().unwrap_or(0), body.to_string())
}

fn hdr_status(body: &str) -> u16 {
    let st = body.split("<Status>").find(|s| s.contains("<Cmd>SyncHdr</Cmd>")).expect("SyncHdr status");
    let d = &st[st.find("<Data>").expect("Data") + 6..];
    d[..d.find("</Data>").expect("/Data")].parse().expect("code")
}

fn message(device: &str, msg_id: u32, body: &str) -> String {
    // test:test, basic auth.
    let cred = if msg_id == 1 {
        "<Cred><Meta><Type xmlns='syncml:metinf'>syncml:auth-basic</Type></Meta><Data>dGVzdDp0ZXN0</Data></Cred>"
    } else {
        ""
    };
    format!(
        "<SyncML xmlns='SYNCML:SYNCML1.2'><SyncHdr><VerDTD>1.2</VerDTD><VerProto>SyncML/1.2</VerProto>\
         <SessionID>1</SessionID><MsgID>{msg_id}</MsgID><Target><LocURI>https://127.0.0.1/sync</LocURI></Target>\
         <Source><LocURI>{device}</LocURI></Source>{cred}</SyncHdr><SyncBody>{body}<Final/></SyncBody></SyncML>"
    )
}

const ALERT: &str = "<Alert><CmdID>1</CmdID><Data>201</Data><Item><Target><LocURI>notes</LocURI></Target>\
    <Source><LocURI>./notes</LocURI></Source><Meta><Anchor xmlns='syncml:metinf'><Next>1</Next></Anchor></Meta></Item></Alert>";
const SYNC: &str = "<Sync><CmdID>2</CmdID><Target><LocURI>notes</LocURI></Target><Source><LocURI>./notes</LocURI></Source>\
    <Add><CmdID>3</CmdID><Meta><Type xmlns='syncml:metinf'>text/plain</Type></Meta><Item><Source><LocURI>n1</LocURI></Source><Data>over tls</Data></Item></Add></Sync>";

/// A session of three messages posted with curl to `base` (`https://host:port`); returns the replies.
fn curl_session(base: &str, cacert: &Path, device: &str) -> Vec<String> {
    let (code, r1) = curl(&format!("{base}/sync"), cacert, Some(&message(device, 1, ALERT)));
    assert_eq!(code, 200, "{r1}");
    assert_eq!(hdr_status(&r1), 212, "{r1}");
    let uri = &r1[r1.find("<RespURI>").expect("RespURI") + 9..];
    let uri = uri[..uri.find("</RespURI>").expect("/RespURI")].replace("&amp;", "&");
    let path = &uri[uri.find("/sync").expect("path")..];
    let (code, r2) = curl(&format!("{base}{path}"), cacert, Some(&message(device, 2, SYNC)));
    assert_eq!((code, hdr_status(&r2)), (200, 200), "{r2}");
    let (code, r3) = curl(&format!("{base}{path}"), cacert, Some(&message(device, 3, "")));
    assert_eq!((code, hdr_status(&r3)), (200, 200), "{r3}");
    vec![r1, r2, r3]
}

struct Balancer(Child);

impl Drop for Balancer {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).expect("port")
}

fn add_user(data: &Path) {
    support::server::add_user(Path::new(BIN), data, "test", "test").expect("user add");
}

#[test]
fn curl_syncs_over_https_with_serve_and_with_the_balancer() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (cert, key) = make_cert(dir.path());
    let data = dir.path().join("data");
    add_user(&data);
    let (c, k) = (cert.to_str().expect("utf-8"), key.to_str().expect("utf-8"));
    // A TLS node (cert and key from the environment), probed over HTTPS.
    let port = free_port();
    let log = std::fs::File::create(dir.path().join("serve.log")).expect("log");
    let child = Command::new(BIN)
        .args(["serve", "--listen", &format!("127.0.0.1:{port}"), "--shards", "2", "--shard-port-base", "0"])
        .args(["--pin", "false", "--data-dir"])
        .arg(&data)
        .env("SHARDSYNC_TLS_CERT", c)
        .env("SHARDSYNC_TLS_KEY", k)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("serve");
    let _node = Balancer(child);
    let base = format!("https://127.0.0.1:{port}");
    let deadline = Instant::now() + Duration::from_secs(15);
    while curl(&format!("{base}/health"), &cert, None).0 != 200 {
        assert!(Instant::now() < deadline, "TLS node did not start");
        std::thread::sleep(Duration::from_millis(100));
    }
    let replies = curl_session(&base, &cert, "tls-dev-1");
    assert!(
        replies[0].contains("<RespURI>https://127.0.0.1/sync?s="),
        "RespURI keeps the scheme: {}",
        replies[0]
    );
    // Plain HTTP to the TLS port gets no HTTP answer.
    let (code, _) = curl(&format!("http://127.0.0.1:{port}/health"), &cert, None);
    assert_eq!(code, 0, "plain HTTP must not be answered on a TLS port");
    // /metrics over HTTPS counts the session.
    let (code, text) = curl(&format!("{base}/metrics"), &cert, None);
    assert_eq!(code, 200);
    let scrape = shardsync::metrics::parse::parse(&text).expect("exposition");
    assert_eq!(scrape.value("shardsync_sessions_completed_total", &[]), Some(1.0));

    // A TLS-terminating balancer in front of a plain node.
    let plain_data = dir.path().join("plain");
    add_user(&plain_data);
    let plain = ServerProcess::start(
        Path::new(BIN),
        &["--shards", "2", "--shard-port-base", "0", "--pin", "false"],
        &plain_data,
    )
    .expect("plain node");
    let bport = free_port();
    // Its /metrics is on the admin listener, over TLS too.
    let aport = free_port();
    let child = Command::new(BIN)
        .args(["balance", "--listen", &format!("127.0.0.1:{bport}"), "--threads", "1"])
        .args(["--admin-listen", &format!("127.0.0.1:{aport}")])
        .args(["--backend", &format!("127.0.0.1:{}", plain.port())])
        .args(["--tls-cert", c, "--tls-key", k, "--check-interval-ms", "200"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.path().join("balance.log")).expect("log"))
        .spawn()
        .expect("balance");
    let _balancer = Balancer(child);
    let bbase = format!("https://127.0.0.1:{bport}");
    let abase = format!("https://127.0.0.1:{aport}");
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let (code, text) = curl(&format!("{abase}/metrics"), &cert, None);
        let up = (code == 200)
            .then(|| shardsync::metrics::parse::parse(&text).ok())
            .flatten()
            .map(|s| s.sum("shardsync_balancer_member_up", &[]));
        if up == Some(2.0) {
            break;
        }
        assert!(Instant::now() < deadline, "balancer members not up: {code} {text}");
        std::thread::sleep(Duration::from_millis(100));
    }
    curl_session(&bbase, &cert, "tls-dev-2");
    let (_, text) = curl(&format!("{abase}/metrics"), &cert, None);
    let s = shardsync::metrics::parse::parse(&text).expect("balancer exposition");
    assert_eq!(s.sum("shardsync_balancer_member_requests_total", &[]), 3.0, "{text}");
    assert_eq!(s.sum("shardsync_balancer_member_failures_total", &[]), 0.0);
    assert_eq!(s.value("shardsync_balancer_members", &[("state", "up")]), Some(2.0));
}

#[test]
fn syncevolution_syncs_contacts_over_https() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (cert, key) = make_cert(dir.path());
    let data = dir.path().join("data");
    add_user(&data);
    let port = free_port();
    let child = Command::new(BIN)
        .args(["serve", "--listen", &format!("127.0.0.1:{port}"), "--shards", "2", "--shard-port-base", "0"])
        .args(["--pin", "false", "--data-dir"])
        .arg(&data)
        .args(["--tls-cert"])
        .arg(&cert)
        .args(["--tls-key"])
        .arg(&key)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.path().join("serve.log")).expect("log"))
        .spawn()
        .expect("serve");
    let _node = Balancer(child);
    let base = format!("https://127.0.0.1:{port}");
    let deadline = Instant::now() + Duration::from_secs(15);
    while curl(&format!("{base}/health"), &cert, None).0 != 200 {
        assert!(Instant::now() < deadline, "TLS node did not start");
        std::thread::sleep(Duration::from_millis(100));
    }
    let mut cfg = ClientConfig::new(&format!("{base}/sync"), "test", "test", "tls-evo-1", Kind::Contacts);
    cfg.extra = vec![
        format!("SSLServerCertificates={}", cert.display()),
        "SSLVerifyServer=1".into(),
        "SSLVerifyHost=1".into(),
    ];
    let client = SyncEvoClient::new(cfg).expect("client");
    let sent = items::write_items(client.data_dir(), Kind::Contacts, "tls", 0..5, GenOptions::default());
    assert_eq!(sent.len(), 5);
    let r = client.sync(SyncMode::Slow);
    assert_eq!(r.status, Some(200), "{}", r.diagnostics());
    assert_eq!(r.remote_added, 5, "{}", r.diagnostics());
    let (_, text) = curl(&format!("{base}/metrics"), &cert, None);
    let s = shardsync::metrics::parse::parse(&text).expect("exposition");
    let added = s.value(
        "shardsync_items_total",
        &[("datastore", "contacts"), ("operation", "add"), ("direction", "from_client")],
    );
    assert_eq!(added, Some(5.0), "{text}");
    assert_eq!(s.value("shardsync_sessions_completed_total", &[]), Some(1.0));
    // SyncEvolution speaks WBXML by default: every message of the session was WBXML.
    assert_eq!(s.value("shardsync_messages_total", &[("encoding", "xml")]), Some(0.0));
    let wbxml = s.value("shardsync_messages_total", &[("encoding", "wbxml")]).unwrap_or(0.0);
    assert!(wbxml >= 2.0, "{wbxml}");
    assert_eq!(s.value("shardsync_message_duration_seconds_count", &[("encoding", "wbxml")]), Some(wbxml));
}
