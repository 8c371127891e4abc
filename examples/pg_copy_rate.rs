//! The physical ingest limit of a PostgreSQL server for sync items: rows/s of
//! raw binary `COPY` into a table shaped like `items` (same columns and
//! primary key), with the load generator's contacts as data, in transactions
//! of `ROWS` rows, for `SECS` seconds. perf/compare.sh compares the slow-sync
//! items/s of `shardsync serve --store URL` with it, on the same server.
//!
//! `cargo run --release --example pg_copy_rate -- postgres://user@127.0.0.1:5432/db [SECS] [ROWS]`
use std::time::{Duration, Instant};

use postgres::binary_copy::BinaryCopyInWriter;
use postgres::types::Type;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let url = args.next().ok_or("usage: pg_copy_rate URL [SECS] [ROWS]")?;
    let secs: f64 = args.next().map(|s| s.parse()).transpose()?.unwrap_or(5.0);
    let rows: usize = args.next().map(|s| s.parse()).transpose()?.unwrap_or(1000);
    let mut client = postgres::Client::connect(&url, postgres::NoTls)?;
    client
        .batch_execute("DROP TABLE IF EXISTS items_raw; CREATE TABLE items_raw (LIKE items INCLUDING ALL)")?;
    let cards: Vec<Vec<u8>> = (0..rows as u64)
        .map(|i| shardsync::load::data::item(shardsync::load::data::DataKind::Contacts, 1, i, 0).into_bytes())
        .collect();
    let bytes: usize = cards.iter().map(Vec::len).sum();
    let types =
        [Type::TEXT, Type::INT2, Type::INT8, Type::INT8, Type::TEXT, Type::BYTEA, Type::TEXT, Type::BOOL];
    let (mut done, mut next_id) = (0u64, 1i64);
    let t0 = Instant::now();
    while t0.elapsed() < Duration::from_secs_f64(secs) {
        let mut txn = client.transaction()?;
        let sink = txn.copy_in(
            "COPY items_raw (user_name, coll, server_id, seq, content_type, data, origin_device, deleted) \
             FROM STDIN (FORMAT binary)",
        )?;
        let mut w = BinaryCopyInWriter::new(sink, &types);
        for card in &cards {
            w.write(&[
                &"raw",
                &0i16,
                &next_id,
                &next_id,
                &"text/vcard",
                &card.as_slice(),
                &"copy-device",
                &false,
            ])?;
            next_id += 1;
        }
        w.finish()?;
        txn.commit()?;
        done += rows as u64;
    }
    let took = t0.elapsed().as_secs_f64();
    client.batch_execute("DROP TABLE items_raw")?;
    println!(
        "{{\"rows\":{done},\"seconds\":{took:.3},\"rows_per_s\":{:.1},\"rows_per_txn\":{rows},\"avg_row_bytes\":{}}}",
        done as f64 / took,
        bytes / rows.max(1)
    );
    Ok(())
}
