//! The sync engine alone (no sockets, no store: reads are handed over from
//! memory and writes are dropped): slow-sync ingest items/s and empty
//! two-way sessions/s, each message encoded as the server would send it.
//!
//! `cargo bench --bench engine` (CI smoke run: `-- --quick`).

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use shardsync::engine::endpoint::SessionSecret;
use shardsync::engine::{EngineConfig, Session};
use shardsync::model::{Encoding, SyncMl};
use shardsync::store::{
    Collection, DatastoreSnapshot, DeviceRecord, ReadRequest, ReadResponse, SyncState, UserRecord,
};

/// mimalloc: glibc's malloc returns freed memory to the OS at the end of
/// every large message and page-faults it back in on the next one (about 3×
/// slower XML decode of a 100-item Sync in the codec bench); mimalloc keeps it.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

const ITEMS: usize = 100;

fn hdr(msg_id: u32, cred: bool) -> String {
    let cred = if cred {
        "<Cred><Meta><Type xmlns='syncml:metinf'>syncml:auth-basic</Type></Meta><Data>dGVzdDp0ZXN0</Data></Cred>"
    } else {
        ""
    };
    format!(
        "<SyncML xmlns='SYNCML:SYNCML1.2'><SyncHdr><VerDTD>1.2</VerDTD><VerProto>SyncML/1.2</VerProto><SessionID>7</SessionID><MsgID>{msg_id}</MsgID><Target><LocURI>http://localhost/sync</LocURI></Target><Source><LocURI>bench-device</LocURI><LocName>test</LocName></Source>{cred}<Meta><MaxMsgSize xmlns='syncml:metinf'>150000</MaxMsgSize></Meta></SyncHdr><SyncBody>"
    )
}

fn init(code: u16) -> String {
    let last = if code == 200 { "<Last>L</Last>" } else { "" };
    format!(
        "{}<Alert><CmdID>1</CmdID><Data>{code}</Data><Item><Target><LocURI>addressbook</LocURI></Target><Source><LocURI>./addressbook</LocURI></Source><Meta><Anchor xmlns='syncml:metinf'>{last}<Next>N</Next></Anchor></Meta></Item></Alert><Final/></SyncBody></SyncML>",
        hdr(1, true)
    )
}

fn vcard(i: usize) -> String {
    format!(
        "BEGIN:VCARD\r\nVERSION:3.0\r\nN:Surname{i};Given{i};;;\r\nFN:Given{i} Surname{i}\r\nTITLE:Engineer\r\nORG:Example Corp;;;\r\nTEL;TYPE=CELL:+1 555 {i:04}\r\nTEL;TYPE=WORK,VOICE:+1 555 9{i:03}\r\nEMAIL;TYPE=INTERNET:person{i}@example.com\r\nADR;TYPE=HOME:;;{i} Main St;Springfield;IL;62701;USA\r\nNOTE:Met at the conference.\r\nEND:VCARD\r\n"
    )
}

fn sync_adds() -> String {
    let mut m = hdr(2, false);
    m.push_str("<Sync><CmdID>2</CmdID><Target><LocURI>addressbook</LocURI></Target><Source><LocURI>./addressbook</LocURI></Source>");
    for i in 0..ITEMS {
        m.push_str(&format!(
            "<Add><CmdID>{}</CmdID><Meta><Type xmlns='syncml:metinf'>text/vcard</Type></Meta><Item><Source><LocURI>c{i}.vcf</LocURI></Source><Data><![CDATA[{}]]></Data></Item></Add>",
            i + 3,
            vcard(i)
        ));
    }
    m.push_str("</Sync><Final/></SyncBody></SyncML>");
    m
}

fn empty_sync() -> String {
    format!(
        "{}<Sync><CmdID>2</CmdID><Target><LocURI>addressbook</LocURI></Target><Source><LocURI>./addressbook</LocURI></Source></Sync><Final/></SyncBody></SyncML>",
        hdr(2, false)
    )
}

fn last_msg() -> String {
    format!("{}<Final/></SyncBody></SyncML>", hdr(3, false))
}

/// Answers the engine's reads from memory. The basic password's argon2id
/// check runs off the shard in the server; here its verdict (checked once,
/// before the benchmark: `basic_ok`) is handed over without the slow hash.
fn feed(s: &mut Session, cfg: &EngineConfig, msg: &SyncMl<'_>, user: &UserRecord, state: Option<SyncState>) {
    for _ in 0..4 {
        if s.basic_to_verify(msg).is_some() {
            s.basic_verified(msg, true);
        }
        let reads = s.pending_reads(cfg, msg);
        if reads.is_empty() {
            return;
        }
        for r in reads {
            let resp = match &r {
                ReadRequest::User { .. } => ReadResponse::User(Some(user.clone())),
                ReadRequest::Device { .. } => ReadResponse::Device(Some(DeviceRecord::default())),
                ReadRequest::Datastore { .. } => {
                    ReadResponse::Datastore(DatastoreSnapshot { state: state.clone(), ..Default::default() })
                }
                _ => continue,
            };
            s.provide(&r, resp);
        }
    }
}

fn bench(c: &mut Criterion) {
    let cfg = EngineConfig::default();
    let user = UserRecord::new("test", "test").expect("user record");
    assert!(user.verify_basic("test"), "the verdict `feed` hands over is the real one");
    let m1_slow = init(201);
    let m1_two_way = init(200);
    let m2_adds = sync_adds();
    let m2_empty = empty_sync();
    let m3 = last_msg();
    let decode = |s: &str| shardsync::xml::decode(s.as_bytes()).expect("bench message decodes").into_owned();
    let (init_slow, adds, init_two_way, empty, fin) =
        (decode(&m1_slow), decode(&m2_adds), decode(&m1_two_way), decode(&m2_empty), decode(&m3));
    let key = shardsync::routing::session_key("bench-device", "7");
    let matching = SyncState {
        client_anchor: "L".into(),
        server_anchor: "S".into(),
        seq_reached: 0,
        client_uri: "./addressbook".into(),
        last_sync_type: 200,
    };

    let mut g = c.benchmark_group("engine");
    g.throughput(Throughput::Elements(ITEMS as u64));
    g.bench_function("slow_sync_ingest_100_adds", |b| {
        b.iter_batched(
            || {
                let mut s = Session::new(key, &init_slow, Encoding::Xml, 1, SessionSecret([7; 16]));
                feed(&mut s, &cfg, &init_slow, &user, None);
                s.handle(&cfg, &init_slow, 1, 1);
                s
            },
            |mut s| {
                let step = s.handle(&cfg, &adds, 2, 2);
                black_box((step.reply.len(), step.writes.ops.len()))
            },
            BatchSize::SmallInput,
        )
    });
    g.throughput(Throughput::Elements(1));
    g.bench_function("empty_two_way_session", |b| {
        b.iter(|| {
            let mut s = Session::new(key, &init_two_way, Encoding::Xml, 1, SessionSecret([7; 16]));
            feed(&mut s, &cfg, &init_two_way, &user, Some(matching.clone()));
            let a = s.handle(&cfg, &init_two_way, 1, 1);
            let b2 = s.handle(&cfg, &empty, 2, 2);
            let c3 = s.handle(&cfg, &fin, 3, 3);
            black_box(a.reply.len() + b2.reply.len() + c3.reply.len())
        })
    });
    g.finish();
    let _ = Collection::Contacts;
}

criterion_group!(benches, bench);
criterion_main!(benches);
