//! An in-memory [`Backend`]: for tests of the layers above the store, and
//! the reference model the embedded backend is checked against.
//!
//! Same semantics as every backend (it passes `tests/suite`), nothing durable.
//! One mutex guards the state; it is only ever taken on store threads.

use std::collections::BTreeMap;
use std::sync::{Mutex, MutexGuard};

use super::{
    bare_item, Backend, Collection, CommitInfo, DatastoreSnapshot, DeviceRecord, DeviceSummary, ItemRecord,
    ReadRequest, ReadResponse, SessionRecord, StoreError, SyncState, UserRecord, WriteBatch, WriteOp,
};

type UserColl = (String, Collection);

#[derive(Debug, Default, Clone)]
struct State {
    users: BTreeMap<String, UserRecord>,
    devices: BTreeMap<(String, String), DeviceRecord>,
    items: BTreeMap<(String, Collection, u64), ItemRecord>,
    /// (next server id, highest seq).
    counters: BTreeMap<UserColl, (u64, u64)>,
    states: BTreeMap<(String, String, Collection), SyncState>,
    maps: BTreeMap<(String, String, Collection, String), u64>,
    sessions: BTreeMap<u64, SessionRecord>,
}

/// A backend that keeps everything in memory.
#[derive(Debug, Default)]
pub struct MemoryBackend {
    state: Mutex<State>,
}

impl MemoryBackend {
    /// An empty store.
    pub fn new() -> MemoryBackend {
        MemoryBackend::default()
    }

    fn lock(&self) -> Result<MutexGuard<'_, State>, StoreError> {
        self.state.lock().map_err(|_| StoreError::Backend("memory store poisoned by a panic".into()))
    }
}

impl Backend for MemoryBackend {
    fn read(&self, request: &ReadRequest) -> Result<ReadResponse, StoreError> {
        let st = self.lock()?;
        Ok(match request {
            ReadRequest::User { name } => ReadResponse::User(st.users.get(name).cloned()),
            ReadRequest::Device { user, device_id } => {
                ReadResponse::Device(st.devices.get(&(user.clone(), device_id.clone())).cloned())
            }
            ReadRequest::Datastore { user, device_id, collection, scope } => {
                let c = *collection;
                let state = st.states.get(&(user.clone(), device_id.clone(), c)).cloned();
                let reached = state.as_ref().map_or(0, |s| s.seq_reached);
                let bare_up_to = scope.bare_up_to(state.as_ref());
                let mappings = st
                    .maps
                    .iter()
                    .filter(|((u, d, mc, _), _)| u == user && d == device_id && *mc == c)
                    .map(|((_, _, _, cid), sid)| (cid.clone(), *sid))
                    .collect();
                let items = st
                    .items
                    .iter()
                    .filter(|((u, ic, _), it)| u == user && *ic == c && (!it.deleted || it.seq > reached))
                    .map(|(_, it)| {
                        if it.seq > bare_up_to {
                            it.clone()
                        } else {
                            bare_item(it.server_id, it.seq, it.deleted)
                        }
                    })
                    .collect();
                let max_seq = st.counters.get(&(user.clone(), c)).map_or(0, |v| v.1);
                ReadResponse::Datastore(DatastoreSnapshot { state, mappings, items, bare_up_to, max_seq })
            }
            ReadRequest::Session { key } => ReadResponse::Session(st.sessions.get(key).cloned()),
            ReadRequest::ListUsers => ReadResponse::Users(st.users.keys().cloned().collect()),
            ReadRequest::ListDevices { user } => ReadResponse::Devices(
                st.devices
                    .iter()
                    .filter(|((u, _), _)| u == user)
                    .map(|((_, d), device)| DeviceSummary {
                        device: device.clone(),
                        states: st
                            .states
                            .iter()
                            .filter(|((su, sd, _), _)| su == user && sd == d)
                            .map(|((_, _, c), s)| (*c, s.clone()))
                            .collect(),
                        mappings: st.maps.keys().filter(|(mu, md, _, _)| mu == user && md == d).count()
                            as u64,
                    })
                    .collect(),
            ),
        })
    }

    fn commit(&self, batches: &[WriteBatch]) -> Result<Vec<CommitInfo>, StoreError> {
        let mut st = self.lock()?;
        // No op can fail in memory, so applying in place is atomic.
        Ok(batches.iter().map(|b| st.apply_batch(b)).collect())
    }
}

impl State {
    fn apply_batch(&mut self, batch: &WriteBatch) -> CommitInfo {
        let mut info = CommitInfo::default();
        if let Some((key, last)) = batch.expected_session() {
            // 0: the batch starts a session and expects none under its key.
            if self.sessions.get(&key).map_or(0, |s| s.last_msg_id) != last {
                info.session_conflict = true;
                return info;
            }
        }
        for op in &batch.ops {
            self.apply(op, &mut info);
        }
        info
    }

    fn counter(&mut self, user: &str, c: Collection) -> &mut (u64, u64) {
        self.counters.entry((user.to_owned(), c)).or_insert((1, 0))
    }

    fn apply(&mut self, op: &WriteOp, info: &mut CommitInfo) {
        match op {
            WriteOp::PutUser(u) => {
                self.users.insert(u.name.clone(), u.clone());
            }
            WriteOp::DeleteUser { name } => {
                self.users.remove(name);
                self.devices.retain(|(u, _), _| u != name);
                self.items.retain(|(u, _, _), _| u != name);
                self.counters.retain(|(u, _), _| u != name);
                self.states.retain(|(u, _, _), _| u != name);
                self.maps.retain(|(u, _, _, _), _| u != name);
            }
            WriteOp::PutDevice { user, device } => {
                self.devices.insert((user.clone(), device.device_id.clone()), device.clone());
            }
            WriteOp::PutItem {
                user,
                collection,
                server_id,
                content_type,
                data,
                origin_device,
                map_client_id,
            } => {
                let counter = self.counter(user, *collection);
                let sid = match server_id {
                    Some(id) => {
                        counter.0 = counter.0.max(id.saturating_add(1));
                        *id
                    }
                    None => {
                        let id = counter.0;
                        counter.0 += 1;
                        info.new_server_ids.push(id);
                        id
                    }
                };
                counter.1 += 1;
                let item = ItemRecord {
                    server_id: sid,
                    seq: counter.1,
                    content_type: content_type.clone(),
                    data: data.clone(),
                    origin_device: origin_device.clone(),
                    deleted: false,
                };
                self.items.insert((user.clone(), *collection, sid), item);
                if let Some(cid) = map_client_id {
                    self.maps.insert((user.clone(), origin_device.clone(), *collection, cid.clone()), sid);
                }
            }
            WriteOp::DeleteItem { user, collection, server_id, origin_device, client_id } => {
                let key = (user.clone(), *collection, *server_id);
                if self.items.get(&key).is_some_and(|it| !it.deleted) {
                    let counter = self.counter(user, *collection);
                    counter.1 += 1;
                    let tomb = ItemRecord {
                        server_id: *server_id,
                        seq: counter.1,
                        content_type: String::new(),
                        data: Vec::new(),
                        origin_device: origin_device.clone(),
                        deleted: true,
                    };
                    self.items.insert(key, tomb);
                }
                // Only the deleting device's mapping goes; others keep theirs
                // until the Delete has been sent to them.
                let named = client_id
                    .as_ref()
                    .map(|cid| (user.clone(), origin_device.clone(), *collection, cid.clone()))
                    .filter(|k| self.maps.get(k) == Some(server_id));
                match named {
                    Some(k) => {
                        self.maps.remove(&k);
                    }
                    None => self.maps.retain(|(u, d, c, _), sid| {
                        !(u == user && d == origin_device && c == collection && sid == server_id)
                    }),
                }
            }
            WriteOp::SetMapping { user, device_id, collection, client_id, server_id } => {
                self.maps
                    .insert((user.clone(), device_id.clone(), *collection, client_id.clone()), *server_id);
            }
            WriteOp::RemoveMapping { user, device_id, collection, client_id } => {
                self.maps.remove(&(user.clone(), device_id.clone(), *collection, client_id.clone()));
            }
            WriteOp::ClearMappings { user, device_id, collection } => {
                self.maps.retain(|(u, d, c, _), _| !(u == user && d == device_id && c == collection));
            }
            WriteOp::PutSyncState { user, device_id, collection, state } => {
                self.states.insert((user.clone(), device_id.clone(), *collection), state.clone());
            }
            WriteOp::PutSession(s) | WriteOp::FinishSession(s) => {
                self.sessions.insert(s.key, s.clone());
            }
            WriteOp::ForgetDevice { user, device_id } => {
                self.devices.remove(&(user.clone(), device_id.clone()));
                self.states.retain(|(u, d, _), _| !(u == user && d == device_id));
                self.maps.retain(|(u, d, _, _), _| !(u == user && d == device_id));
            }
            WriteOp::DeleteSession { key } => {
                self.sessions.remove(key);
            }
            WriteOp::PurgeSessions { expired_before } => {
                self.sessions.retain(|_, s| s.expires_at >= *expired_before);
            }
            // Checked by `apply_batch` before anything of the batch is applied.
            WriteOp::ExpectSession { .. } => {}
        }
    }
}
