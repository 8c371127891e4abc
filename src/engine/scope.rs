//! Which items a datastore read needs whole, from the sync Alert that asks
//! for it.
//!
//! A two-way or one-way sync sends only the items changed since the
//! device's last sync and checks conflicts only against those; the rest of
//! the collection it needs only bare (id, seq, tombstone). Reading an
//! address book whole for every such session made the commonest sync cost
//! as much as the address book is large. A slow sync and a refresh from the
//! server need every item whole. The mode is known only once the device's
//! sync state is read (anchors that do not match turn a two-way sync into a
//! slow one), so the first read guesses from the requested code and
//! [`Alerted::served_by`] decides whether the snapshot that came back will
//! do or must be read again whole.

use super::process::alert_collection;
use super::EngineConfig;
use crate::model::{Command, SyncMl};
use crate::store::{Collection, DatastoreSnapshot, ItemScope, SyncState};

/// A sync Alert of a message, as far as the reads before it need it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Alerted {
    /// The collection it addresses.
    pub collection: Collection,
    /// The requested code, server-alerted codes (206–210) taken as their
    /// plain modes (200–204).
    pub requested: u16,
    /// The client's Last anchor.
    pub last: String,
}

impl Alerted {
    /// The scope of the first read for this Alert: whole for a requested
    /// slow sync or refresh from the server, else changes since the last sync.
    pub fn first_scope(&self) -> ItemScope {
        if matches!(self.requested, 201 | 205) {
            ItemScope::Whole
        } else {
            ItemScope::ChangedSinceLastSync
        }
    }

    /// Whether `snap` holds whole every item the sync this Alert starts
    /// will use.
    pub fn served_by(&self, snap: &DatastoreSnapshot) -> bool {
        let matched = anchors_match(snap.state.as_ref(), &self.last);
        let (_, mode) = alert_mode(self.requested, matched);
        serves(snap.bare_up_to, mode, prev_seq(snap.state.as_ref(), mode))
    }
}

/// The sync Alerts of a message (codes 200–210 and 225), one per collection,
/// in message order.
pub(super) fn alerted(cfg: &EngineConfig, msg: &SyncMl<'_>) -> Vec<Alerted> {
    let mut out: Vec<Alerted> = Vec::new();
    for cmd in &msg.body {
        let Command::Alert(a) = cmd else { continue };
        let code: u16 = a.data.as_deref().and_then(|d| d.trim().parse().ok()).unwrap_or(0);
        if !(200..=210).contains(&code) && code != 225 {
            continue;
        }
        let Some(item) = a.items.first() else { continue };
        let Some(collection) = alert_collection(cfg, item) else { continue };
        if out.iter().any(|x| x.collection == collection) {
            continue;
        }
        let last = item
            .meta
            .as_ref()
            .and_then(|m| m.anchor.as_ref())
            .and_then(|a| a.last.as_deref())
            .unwrap_or("")
            .trim()
            .to_string();
        out.push(Alerted { collection, requested: plain_code(code), last });
    }
    out
}

/// Server-alerted codes echoed back by the client mean their plain modes.
pub(super) fn plain_code(code: u16) -> u16 {
    if (206..=210).contains(&code) {
        code - 6
    } else {
        code
    }
}

/// Whether the client's Last anchor is the one stored for it.
pub(super) fn anchors_match(state: Option<&SyncState>, last: &str) -> bool {
    state.is_some_and(|st| !st.client_anchor.is_empty() && st.client_anchor == last)
}

/// The Alert's status and the mode the sync runs in, for a requested code
/// (see [`plain_code`]): anchors that do not match turn a two-way sync into
/// a slow one and a one-way sync into a refresh (508).
pub(super) fn alert_mode(requested: u16, anchors_match: bool) -> (u16, u16) {
    match requested {
        200 | 225 if anchors_match => (200, 200),
        200 | 225 => (508, 201),
        201 => (200, 201),
        202 | 204 if anchors_match => (200, requested),
        202 | 204 => (508, requested + 1),
        _ => (200, requested), // 203, 205
    }
}

/// The seq a sync in `mode` sends changes after (0: it sends everything or nothing).
pub(super) fn prev_seq(state: Option<&SyncState>, mode: u16) -> u64 {
    match (state, mode) {
        (Some(st), 200 | 202 | 204) => st.seq_reached,
        _ => 0,
    }
}

/// Items above this seq must be whole for a sync in `mode` that sends
/// changes after `prev_seq`; `None`: it uses no item's data (one-way from
/// the client, refresh from the client).
pub(super) fn whole_above(mode: u16, prev_seq: u64) -> Option<u64> {
    match mode {
        200 | 204 => Some(prev_seq),
        202 | 203 => None,
        _ => Some(0), // 201, 205
    }
}

/// Whether a snapshot bare up to `bare_up_to` serves a sync in `mode`.
pub(super) fn serves(bare_up_to: u64, mode: u16, prev_seq: u64) -> bool {
    whole_above(mode, prev_seq).is_none_or(|w| bare_up_to <= w)
}

/// The scope to read a datastore again with for a session continued from
/// the store, whose mode and starting seq are known. Items above `max_seq`
/// (changed since the session started) are whole either way.
pub(super) fn reload_scope(mode: u16, prev_seq: u64, max_seq: u64) -> ItemScope {
    ItemScope::ChangedSince(whole_above(mode, prev_seq).unwrap_or(max_seq))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state(anchor: &str, reached: u64) -> SyncState {
        SyncState { client_anchor: anchor.into(), seq_reached: reached, ..Default::default() }
    }

    fn snap(state: Option<SyncState>, bare_up_to: u64) -> DatastoreSnapshot {
        DatastoreSnapshot { state, bare_up_to, ..Default::default() }
    }

    fn alert(requested: u16, last: &str) -> Alerted {
        Alerted { collection: Collection::Contacts, requested, last: last.into() }
    }

    #[test]
    fn modes_follow_the_anchors() {
        assert_eq!(alert_mode(200, true), (200, 200));
        assert_eq!(alert_mode(200, false), (508, 201));
        assert_eq!(alert_mode(225, true), (200, 200));
        assert_eq!(alert_mode(201, true), (200, 201));
        assert_eq!(alert_mode(202, false), (508, 203));
        assert_eq!(alert_mode(204, false), (508, 205));
        assert_eq!(alert_mode(204, true), (200, 204));
        assert_eq!(alert_mode(203, false), (200, 203));
        assert_eq!(plain_code(206), 200);
        assert_eq!(plain_code(210), 204);
        assert!(!anchors_match(Some(&state("", 3)), ""));
        assert!(anchors_match(Some(&state("a1", 3)), "a1"));
    }

    #[test]
    fn a_bare_snapshot_serves_only_syncs_that_send_changes_after_it() {
        let st = Some(state("a1", 7));
        // Two-way with matching anchors: changes after 7 are whole.
        assert!(alert(200, "a1").served_by(&snap(st.clone(), 7)));
        // Anchors differ: a slow sync, which needs all whole.
        assert!(!alert(200, "zz").served_by(&snap(st.clone(), 7)));
        assert!(alert(200, "zz").served_by(&snap(st.clone(), 0)));
        // Slow sync and refresh from the server need all whole.
        assert!(!alert(201, "a1").served_by(&snap(st.clone(), 7)));
        assert!(!alert(205, "a1").served_by(&snap(st.clone(), 7)));
        // One-way from the server with matching anchors sends changes after 7.
        assert!(alert(204, "a1").served_by(&snap(st.clone(), 7)));
        assert!(!alert(204, "a1").served_by(&snap(st.clone(), 8)));
        // One-way from the client and refresh from the client use no data.
        assert!(alert(202, "a1").served_by(&snap(st.clone(), 7)));
        assert!(alert(203, "a1").served_by(&snap(st, 7)));
        assert_eq!(alert(201, "").first_scope(), ItemScope::Whole);
        assert_eq!(alert(200, "").first_scope(), ItemScope::ChangedSinceLastSync);
    }

    #[test]
    fn reloads_keep_what_the_mode_needs_whole() {
        assert_eq!(reload_scope(200, 7, 9), ItemScope::ChangedSince(7));
        assert_eq!(reload_scope(201, 0, 9), ItemScope::ChangedSince(0));
        assert_eq!(reload_scope(205, 0, 9), ItemScope::ChangedSince(0));
        assert_eq!(reload_scope(203, 0, 9), ItemScope::ChangedSince(9));
    }
}
