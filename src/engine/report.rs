//! What a session did so far, for metrics, the session log and admin
//! listings: read-only views of [`Session`] that never include credentials,
//! nonces or item data.

use super::{process, Session};
use crate::model::SyncMl;
use crate::store::Collection;

/// Item counts of one datastore of a session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StoreReport {
    /// The collection.
    pub collection: Collection,
    /// Effective sync type (alert code 200–205).
    pub sync_type: u16,
    /// Adds, replaces, deletes applied from the client.
    pub from_client: [u32; 3],
    /// Adds, replaces, deletes sent to the client.
    pub to_client: [u32; 3],
    /// Conflicts resolved.
    pub conflicts: u32,
    /// Client items matched to server items in a slow sync.
    pub twins: u32,
}

/// A session's state as reported.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionReport {
    /// The authenticated user (`None` before authentication).
    pub user: Option<String>,
    /// The device id.
    pub device: String,
    /// The client's SessionID.
    pub session_id: String,
    /// Seconds since the Unix epoch of the first message.
    pub started_at: u64,
    /// Seconds since the Unix epoch of the last message.
    pub last_activity: u64,
    /// Failed authentication attempts in this session.
    pub auth_failures: u32,
    /// Per datastore, in alert order.
    pub stores: Vec<StoreReport>,
}

impl SessionReport {
    /// `contacts,notes`
    pub fn datastores(&self) -> String {
        self.stores.iter().map(|s| s.collection.as_str()).collect::<Vec<_>>().join(",")
    }

    /// `contacts:200 notes:201`
    pub fn sync_types(&self) -> String {
        self.stores
            .iter()
            .map(|s| format!("{}:{}", s.collection.as_str(), s.sync_type))
            .collect::<Vec<_>>()
            .join(" ")
    }

    /// Adds, replaces, deletes from the client, summed over datastores.
    pub fn from_client(&self) -> [u32; 3] {
        self.stores
            .iter()
            .fold([0; 3], |a, s| [a[0] + s.from_client[0], a[1] + s.from_client[1], a[2] + s.from_client[2]])
    }

    /// Adds, replaces, deletes to the client, summed over datastores.
    pub fn to_client(&self) -> [u32; 3] {
        self.stores
            .iter()
            .fold([0; 3], |a, s| [a[0] + s.to_client[0], a[1] + s.to_client[1], a[2] + s.to_client[2]])
    }

    /// Conflicts over all datastores.
    pub fn conflicts(&self) -> u32 {
        self.stores.iter().map(|s| s.conflicts).sum()
    }
}

impl Session {
    /// What the session did so far.
    pub fn report(&self) -> SessionReport {
        SessionReport {
            user: self.user().map(str::to_owned),
            device: self.device_id.clone(),
            session_id: self.session_id.clone(),
            started_at: self.started_at,
            last_activity: self.last_activity,
            auth_failures: self.auth_failures,
            stores: self
                .stores
                .iter()
                .map(|d| {
                    let c = &d.counts;
                    StoreReport {
                        collection: d.collection,
                        sync_type: d.mode,
                        from_client: [c.from_client_add, c.from_client_replace, c.from_client_delete],
                        to_client: [c.to_client_add, c.to_client_replace, c.to_client_delete],
                        conflicts: c.conflicts,
                        twins: c.twins,
                    }
                })
                .collect(),
        }
    }

    /// Failed authentication attempts in this session.
    pub fn auth_failures(&self) -> u32 {
        self.auth_failures
    }
}

/// The user name a message claims (LocName, or the name in basic
/// credentials), whether or not it exists; for rate limits.
pub fn claimed_user(msg: &SyncMl<'_>) -> Option<String> {
    process::claimed_user(msg)
}
