//! The runtime's ceiling for perf comparisons: the same executors, pinning
//! and SO_REUSEPORT accept as the real server, but each connection only
//! finds where a request ends (blank line plus `Content-Length`) and answers
//! fixed bytes. No header validation, limits, timeouts, decoding or routing.

use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};

use futures_lite::io::{AsyncReadExt, AsyncWriteExt};
use glommio::net::{TcpListener, TcpStream};
use glommio::timer::Timer;
use glommio::{LocalExecutorBuilder, Placement};

use super::{allowed_cpus, check_memlock, ServerError, STOP_POLL};
use crate::config::Config;
use crate::http::{write_response, ConnectionHeader};
use crate::server::StopOnSignal;

/// Runs the ceiling server until SIGINT/SIGTERM; every request on the shared
/// listen address gets a 200 with `body` as `application/vnd.syncml+xml`.
pub fn run_ceiling(config: Config, body: Vec<u8>) -> Result<(), ServerError> {
    config.validate()?;
    let io_memory = check_memlock(&config)?;
    let mut response = Vec::new();
    let ct = Some("application/vnd.syncml+xml");
    write_response(&mut response, 200, ct, &[], ConnectionHeader::Default, &body, false);
    let response = Arc::new(response);
    let stop = Arc::new(AtomicBool::new(false));
    let cpus = allowed_cpus();
    let mut listen = config.listen;
    let mut threads = Vec::new();
    for id in 0..config.shards {
        let placement = match (config.pin, cpus.is_empty()) {
            (true, false) => Placement::Fixed(cpus[id % cpus.len()]),
            _ => Placement::Unbound,
        };
        let builder = LocalExecutorBuilder::new(placement).io_memory(io_memory).ring_depth(config.ring_depth);
        let (tx, rx) = mpsc::channel::<Result<SocketAddr, ServerError>>();
        let (stop2, response2) = (stop.clone(), response.clone());
        let thread = std::thread::spawn(move || {
            let ex = match builder.make() {
                Ok(ex) => ex,
                Err(e) => {
                    let _ = tx.send(Err(ServerError::Runtime { shard: id, reason: e.to_string() }));
                    return;
                }
            };
            ex.run(async move {
                let listener = match TcpListener::bind(listen) {
                    Ok(l) => l,
                    Err(e) => {
                        let _ = tx.send(Err(ServerError::Bind { addr: listen, reason: e.to_string() }));
                        return;
                    }
                };
                let _ = tx.send(
                    listener
                        .local_addr()
                        .map_err(|e| ServerError::Bind { addr: listen, reason: e.to_string() }),
                );
                let response = Rc::new(response2.as_ref().clone());
                let accept = glommio::spawn_local(async move {
                    while let Ok(stream) = listener.accept().await {
                        glommio::spawn_local(answer(stream, response.clone())).detach();
                    }
                });
                while !stop2.load(Ordering::SeqCst) {
                    Timer::new(STOP_POLL).await;
                }
                drop(accept);
            });
        });
        match rx.recv() {
            Ok(Ok(addr)) => listen = addr,
            Ok(Err(e)) => {
                stop.store(true, Ordering::SeqCst);
                return Err(e);
            }
            Err(_) => return Err(ServerError::Runtime { shard: id, reason: "shard thread ended".into() }),
        }
        threads.push(thread);
    }
    tracing::info!(%listen, shards = config.shards, "ceiling server serving");
    let signals = StopOnSignal::install(stop.clone())?;
    for t in threads {
        let _ = t.join();
    }
    signals.finish();
    Ok(())
}

async fn answer(mut stream: TcpStream, response: Rc<Vec<u8>>) {
    let _ = stream.set_nodelay(true);
    let mut buf = vec![0u8; 64 << 10];
    let (mut start, mut end) = (0usize, 0usize);
    let mut out = Vec::with_capacity(response.len() * 2);
    loop {
        // Answer every complete request in the buffer (pipelining included).
        while let Some(head_len) = find(&buf[start..end], b"\r\n\r\n") {
            let total = head_len + 4 + content_length(&buf[start..start + head_len]);
            if end - start < total {
                break;
            }
            start += total;
            out.extend_from_slice(&response);
        }
        if !out.is_empty() {
            if stream.write_all(&out).await.is_err() {
                return;
            }
            out.clear();
        }
        if start == end {
            (start, end) = (0, 0);
        } else if end == buf.len() {
            buf.copy_within(start..end, 0);
            (start, end) = (0, end - start);
            if end == buf.len() {
                buf.resize(buf.len() * 2, 0);
            }
        }
        match stream.read(&mut buf[end..]).await {
            Ok(0) | Err(_) => return,
            Ok(n) => end += n,
        }
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

fn content_length(head: &[u8]) -> usize {
    head.split(|&b| b == b'\n')
        .find_map(|line| {
            let (name, value) = line.split_at(line.iter().position(|&b| b == b':')?);
            if !name.eq_ignore_ascii_case(b"content-length") {
                return None;
            }
            std::str::from_utf8(&value[1..]).ok()?.trim().parse().ok()
        })
        .unwrap_or(0)
}
