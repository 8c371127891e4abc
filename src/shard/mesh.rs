//! Cross-shard hand-over: a full mesh of glommio shared channels.
//!
//! Shard `i` holds a sender to every other shard and a receiver from every
//! other shard. A request is sent as [`Envelope::Request`] with an id; the
//! owner answers with [`Envelope::Reply`] on its own channel back, and the
//! origin wakes the waiting connection through a local one-shot channel. No
//! locks: channels are lock-free SPSC queues, the pending table is a
//! shard-local `RefCell`.
//!
//! A plain connection can also move as a whole ([`Envelope::Adopt`], see
//! [`super::conn::Migration`]): the owner then serves it from there on.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::net::SocketAddr;

use glommio::channels::local_channel::{self, LocalSender};
use glommio::channels::shared_channel::{ConnectedReceiver, ConnectedSender, SharedReceiver, SharedSender};
use glommio::{GlommioError, ResourceType};

use crate::model::Encoding;
use crate::service::ServiceError;

/// Capacity of each shard-to-shard channel.
pub(crate) const CHANNEL_SIZE: usize = 1024;

/// A request handed to its owner shard: owned bytes and metadata only.
#[derive(Debug)]
pub(crate) struct Handoff {
    pub body: Vec<u8>,
    pub encoding: Encoding,
    pub token: Option<String>,
    pub peer: Option<SocketAddr>,
}

/// What the owner made of a request.
#[derive(Debug)]
pub(crate) enum Outcome {
    /// 200 with this SyncML body.
    Reply(Vec<u8>),
    /// The service refused it.
    Service(ServiceError),
    /// The body did not decode (400).
    Decode(String),
    /// The body went over a decode cap (413).
    TooLarge(String),
    /// No decoder for the body's encoding in this build (415).
    Unsupported(String),
    /// The owner could not be reached (503).
    Unavailable(String),
    /// Decoding or the service panicked; the panic was caught (500).
    Panicked,
}

/// A message between shards.
#[derive(Debug)]
pub(crate) enum Envelope {
    Request {
        id: u64,
        from: usize,
        job: Handoff,
    },
    Reply {
        id: u64,
        outcome: Outcome,
    },
    /// A connection moving to the receiving shard (no reply).
    Adopt(Box<super::conn::Migration>),
}

/// The unconnected channel ends of one shard, built on the main thread.
pub(crate) struct MeshEnds {
    pub senders: Vec<Option<SharedSender<Envelope>>>,
    pub receivers: Vec<Option<SharedReceiver<Envelope>>>,
}

/// Builds the n×(n-1) channels; entry `i` goes to shard `i`.
pub(crate) fn build(n: usize) -> Vec<MeshEnds> {
    let mut ends: Vec<MeshEnds> = (0..n)
        .map(|_| MeshEnds {
            senders: (0..n).map(|_| None).collect(),
            receivers: (0..n).map(|_| None).collect(),
        })
        .collect();
    for from in 0..n {
        for to in 0..n {
            if from != to {
                let (tx, rx) = glommio::channels::shared_channel::new_bounded(CHANNEL_SIZE);
                ends[from].senders[to] = Some(tx);
                ends[to].receivers[from] = Some(rx);
            }
        }
    }
    ends
}

/// One shard's connected view of the mesh.
pub(crate) struct Mesh {
    senders: Vec<Option<ConnectedSender<Envelope>>>,
    pending: RefCell<HashMap<u64, LocalSender<Outcome>>>,
    next_id: Cell<u64>,
    id: usize,
}

impl Mesh {
    /// Connects every channel end (waits until all peers connected theirs).
    /// Returns the mesh and the receivers, indexed by peer.
    pub(crate) async fn connect(
        id: usize,
        ends: MeshEnds,
    ) -> (Mesh, Vec<(usize, ConnectedReceiver<Envelope>)>) {
        // Connect all ends concurrently: each connect waits for its peer.
        let senders: Vec<_> =
            ends.senders.into_iter().map(|s| s.map(|s| glommio::spawn_local(s.connect()).detach())).collect();
        let receivers: Vec<_> = ends
            .receivers
            .into_iter()
            .enumerate()
            .filter_map(|(i, r)| r.map(|r| (i, glommio::spawn_local(r.connect()).detach())))
            .collect();
        let mut connected_senders = Vec::with_capacity(senders.len());
        for s in senders {
            connected_senders.push(match s {
                Some(task) => task.await,
                None => None,
            });
        }
        let mut connected_receivers = Vec::with_capacity(receivers.len());
        for (i, task) in receivers {
            if let Some(r) = task.await {
                connected_receivers.push((i, r));
            }
        }
        let mesh = Mesh {
            senders: connected_senders,
            pending: RefCell::new(HashMap::new()),
            next_id: Cell::new(0),
            id,
        };
        (mesh, connected_receivers)
    }

    /// Hands `job` to shard `owner` and waits for its outcome.
    pub(crate) async fn call(&self, owner: usize, job: Handoff) -> Outcome {
        let Some(Some(sender)) = self.senders.get(owner) else {
            return Outcome::Unavailable(format!("no channel to shard {owner}"));
        };
        let id = self.next_id.get();
        self.next_id.set(id.wrapping_add(1));
        let (tx, rx) = local_channel::new_bounded(1);
        self.pending.borrow_mut().insert(id, tx);
        // Whatever happens to this future (the client goes away, shutdown),
        // the pending entry is removed.
        let _guard = PendingGuard { mesh: self, id };
        if sender.send(Envelope::Request { id, from: self.id, job }).await.is_err() {
            return Outcome::Unavailable(format!("shard {owner} is not accepting hand-overs"));
        }
        rx.recv().await.unwrap_or_else(|| Outcome::Unavailable(format!("shard {owner} went away")))
    }

    /// Moves a connection to shard `owner`. `Err` gives it back when the
    /// owner does not take connections (it is shutting down).
    pub(crate) async fn adopt(
        &self,
        owner: usize,
        moving: super::conn::Migration,
    ) -> Result<(), super::conn::Migration> {
        let Some(Some(sender)) = self.senders.get(owner) else {
            return Err(moving);
        };
        match sender.send(Envelope::Adopt(Box::new(moving))).await {
            Ok(()) => Ok(()),
            Err(GlommioError::Closed(ResourceType::Channel(Envelope::Adopt(back)))) => Err(*back),
            // `send` fails only with the item in `Closed`; should that
            // change, the connection is gone and the client reconnects.
            Err(e) => {
                tracing::error!(shard = self.id, owner, error = %e, "connection lost while moving it to its owner");
                Ok(())
            }
        }
    }

    /// Delivers a reply to the waiting connection (if it is still there).
    pub(crate) fn complete(&self, id: u64, outcome: Outcome) {
        if let Some(tx) = self.pending.borrow_mut().remove(&id) {
            let _ = tx.try_send(outcome);
        }
    }

    /// Sends a reply back to shard `to`.
    pub(crate) async fn reply(&self, to: usize, id: u64, outcome: Outcome) {
        if let Some(Some(sender)) = self.senders.get(to) {
            // The origin only goes away at shutdown; then nobody waits for this.
            let _ = sender.send(Envelope::Reply { id, outcome }).await;
        }
    }
}

struct PendingGuard<'a> {
    mesh: &'a Mesh,
    id: u64,
}

impl Drop for PendingGuard<'_> {
    fn drop(&mut self) {
        self.mesh.pending.borrow_mut().remove(&self.id);
    }
}
