//! Device information: the server's own DevInf and what the engine keeps of a
//! client's (digest §11).

use std::borrow::Cow;

use crate::model::{ContentTypeVersion, DataStore, DevInf, Version};
use crate::store::Collection;

/// What the engine uses from a client's DevInf.
#[derive(Debug, Clone, PartialEq, Eq, Default, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub struct ClientCaps {
    /// The client can receive chunked large objects.
    pub large_objects: bool,
    /// The client can receive `NumberOfChanges`.
    pub number_of_changes: bool,
    /// The client wants UTC times.
    pub utc: bool,
    /// Per client datastore URI: the longest server id it can store, and its preferred receive type.
    pub datastores: Vec<ClientDatastore>,
}

/// One client datastore's capabilities.
#[derive(Debug, Clone, PartialEq, Eq, Default, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub struct ClientDatastore {
    /// `SourceRef` (as the client names the datastore).
    pub source_ref: String,
    /// `MaxGUIDSize`, if given.
    pub max_guid_size: Option<usize>,
    /// `Rx-Pref` content type and version.
    pub rx_pref: Option<(String, String)>,
    /// Every content type the datastore receives (`Rx-Pref` and `Rx`).
    pub rx: Vec<(String, String)>,
}

impl ClientCaps {
    /// Extracts the capabilities from a DevInf document.
    pub fn from_devinf(d: &DevInf<'_>) -> ClientCaps {
        let ctv = |c: &ContentTypeVersion<'_>| {
            (c.ct_type.trim().to_string(), c.ver_ct.as_deref().unwrap_or("").trim().to_string())
        };
        ClientCaps {
            large_objects: d.support_large_objs,
            number_of_changes: d.support_number_of_changes,
            utc: d.utc,
            datastores: d
                .data_stores
                .iter()
                .map(|ds| ClientDatastore {
                    source_ref: ds.source_ref.trim().to_string(),
                    max_guid_size: ds.max_guid_size.as_deref().and_then(|s| s.trim().parse().ok()),
                    rx_pref: ds.rx_pref.as_ref().map(ctv),
                    rx: ds.rx_pref.iter().chain(ds.rx.iter()).map(ctv).collect(),
                })
                .collect(),
        }
    }

    /// The datastore entry whose SourceRef names `client_uri` (ignoring `./` and case).
    pub fn datastore(&self, client_uri: &str) -> Option<&ClientDatastore> {
        let want = strip_dot_slash(client_uri);
        self.datastores.iter().find(|d| strip_dot_slash(&d.source_ref).eq_ignore_ascii_case(want))
    }
}

/// Removes a leading `./` and any `?query` from a datastore URI.
pub fn strip_dot_slash(uri: &str) -> &str {
    let uri = uri.trim();
    let uri = uri.split('?').next().unwrap_or(uri);
    uri.strip_prefix("./").unwrap_or(uri)
}

/// The content types a collection accepts: (type, version), preferred first.
pub fn accepted_types(c: Collection) -> &'static [(&'static str, &'static str)] {
    match c {
        Collection::Contacts => &[("text/vcard", "3.0"), ("text/x-vcard", "2.1")],
        Collection::Calendar | Collection::Tasks => &[("text/calendar", "2.0"), ("text/x-vcalendar", "1.0")],
        Collection::Notes => &[("text/plain", "1.0"), ("text/plain", "1.1")],
    }
}

/// The server's DevInf in the session's version. `names` gives, per
/// collection, the datastore URI to advertise (the client's spelling when it
/// alerted one, so phones that compare strings find it).
pub fn server_devinf(version: Version, server_id: &str, names: &[(Collection, String)]) -> DevInf<'static> {
    let ctv = |t: &'static str, v: &'static str| ContentTypeVersion {
        ct_type: Cow::Borrowed(t),
        ver_ct: Some(Cow::Borrowed(v)),
    };
    let data_stores = names
        .iter()
        .map(|(c, name)| {
            let types = accepted_types(*c);
            let (pt, pv) = types[0];
            let others: Vec<ContentTypeVersion<'static>> =
                types[1..].iter().map(|(t, v)| ctv(t, v)).collect();
            DataStore {
                source_ref: Cow::Owned(name.clone()),
                display_name: Some(Cow::Borrowed(match c {
                    Collection::Contacts => "Contacts",
                    Collection::Calendar => "Calendar",
                    Collection::Tasks => "Tasks",
                    Collection::Notes => "Notes",
                })),
                max_guid_size: Some(Cow::Borrowed("32")),
                rx_pref: Some(ctv(pt, pv)),
                rx: others.clone(),
                tx_pref: Some(ctv(pt, pv)),
                tx: others,
                sync_cap: (1..=7).map(|n| Cow::Owned(n.to_string())).collect(),
                ..Default::default()
            }
        })
        .collect();
    DevInf {
        ver_dtd: Cow::Borrowed(match version {
            Version::V1_0 => "1.0",
            Version::V1_1 => "1.1",
            Version::V1_2 => "1.2",
        }),
        man: Some(Cow::Borrowed("shardsync")),
        model: Some(Cow::Borrowed("shardsync")),
        oem: Some(Cow::Borrowed("-")),
        fw_v: Some(Cow::Borrowed("-")),
        sw_v: Some(Cow::Borrowed(env!("CARGO_PKG_VERSION"))),
        hw_v: Some(Cow::Borrowed("-")),
        dev_id: Cow::Owned(server_id.to_string()),
        dev_typ: Cow::Borrowed("server"),
        utc: true,
        support_large_objs: version >= Version::V1_1,
        support_number_of_changes: version >= Version::V1_1,
        data_stores,
        ct_caps: Vec::new(),
        exts: Vec::new(),
    }
}
