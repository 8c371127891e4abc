//! The SyncML message model shared by the XML and WBXML codecs and the engine.
//!
//! Every text value is a [`Text`]: it borrows from the request buffer when the
//! codec can hand out the bytes as they are, and owns a copy only where
//! unescaping (XML entities) or a charset conversion needed one. Numeric
//! elements (MsgID, CmdID, sizes, status codes) stay text here: the codecs are
//! lossless and tolerant, and the engine parses what it needs, answering bad
//! numbers with a SyncML status instead of failing the whole message.
//!
//! The structure follows the content models of the SyncML RepPro, MetInf and
//! DevInf DTDs (1.0–1.2). Element order is not recorded: encoders write DTD
//! order, decoders accept any order.

use std::borrow::Cow;

/// Text content of an element: borrowed from the input when possible.
pub type Text<'a> = Cow<'a, str>;

/// The SyncML protocol version of a message (from `VerDTD`/`VerProto`).
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    rkyv::Archive,
    rkyv::Serialize,
    rkyv::Deserialize,
)]
pub enum Version {
    /// SyncML 1.0 (`SYNCML:SYNCML1.0`).
    V1_0,
    /// SyncML / OMA DS 1.1.x (`SYNCML:SYNCML1.1`).
    V1_1,
    /// OMA DS 1.2.x (`SYNCML:SYNCML1.2`).
    V1_2,
}

impl Version {
    /// Parses a `VerDTD` value (`1.0`, `1.1`, `1.2`).
    pub fn from_ver_dtd(s: &str) -> Option<Version> {
        match s.trim() {
            "1.0" => Some(Version::V1_0),
            "1.1" => Some(Version::V1_1),
            "1.2" => Some(Version::V1_2),
            _ => None,
        }
    }

    /// Parses a `VerProto` value (`SyncML/1.x`).
    pub fn from_ver_proto(s: &str) -> Option<Version> {
        let s = s.trim();
        let rest = s.get(..7).filter(|p| p.eq_ignore_ascii_case("SyncML/")).map(|_| &s[7..])?;
        Version::from_ver_dtd(rest)
    }

    /// The `VerDTD` string of this version.
    pub fn ver_dtd(self) -> &'static str {
        match self {
            Version::V1_0 => "1.0",
            Version::V1_1 => "1.1",
            Version::V1_2 => "1.2",
        }
    }

    /// The `VerProto` string of this version.
    pub fn ver_proto(self) -> &'static str {
        match self {
            Version::V1_0 => "SyncML/1.0",
            Version::V1_1 => "SyncML/1.1",
            Version::V1_2 => "SyncML/1.2",
        }
    }

    /// The XML namespace of the `<SyncML>` element.
    pub fn namespace(self) -> &'static str {
        match self {
            Version::V1_0 => "SYNCML:SYNCML1.0",
            Version::V1_1 => "SYNCML:SYNCML1.1",
            Version::V1_2 => "SYNCML:SYNCML1.2",
        }
    }

    /// The DevInf LocURI of this version (`./devinf1x`).
    pub fn devinf_uri(self) -> &'static str {
        match self {
            Version::V1_0 => "./devinf10",
            Version::V1_1 => "./devinf11",
            Version::V1_2 => "./devinf12",
        }
    }
}

/// One SyncML message: `<SyncML>` with its header and body.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct SyncMl<'a> {
    /// The `SyncHdr`.
    pub hdr: SyncHdr<'a>,
    /// The commands of `SyncBody`, in document order.
    pub body: Vec<Command<'a>>,
    /// `<Final/>`: this message closes the sender's package.
    pub final_: bool,
}

impl SyncMl<'_> {
    /// The protocol version, from `VerDTD` (falling back to `VerProto`).
    pub fn version(&self) -> Option<Version> {
        Version::from_ver_dtd(&self.hdr.ver_dtd).or_else(|| Version::from_ver_proto(&self.hdr.ver_proto))
    }

    /// Copies every borrowed text so the message no longer borrows the input.
    pub fn into_owned(self) -> SyncMl<'static> {
        SyncMl {
            hdr: self.hdr.into_owned(),
            body: self.body.into_iter().map(Command::into_owned).collect(),
            final_: self.final_,
        }
    }
}

/// The `SyncHdr` element.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct SyncHdr<'a> {
    /// `VerDTD`.
    pub ver_dtd: Text<'a>,
    /// `VerProto`.
    pub ver_proto: Text<'a>,
    /// `SessionID`, chosen by the client.
    pub session_id: Text<'a>,
    /// `MsgID` of this message.
    pub msg_id: Text<'a>,
    /// `Target`: the server URL (client → server) or the device id.
    pub target: Location<'a>,
    /// `Source`: the device id (client → server) or the server URL.
    pub source: Location<'a>,
    /// `RespURI`: where the next message of the session goes.
    pub resp_uri: Option<Text<'a>>,
    /// `NoResp`: no Status is wanted for any command of this message.
    pub no_resp: bool,
    /// `Cred`: credentials.
    pub cred: Option<Cred<'a>>,
    /// `Meta`: MaxMsgSize, MaxObjSize and so on.
    pub meta: Option<Meta<'a>>,
}

impl SyncHdr<'_> {
    /// Copies every borrowed text.
    pub fn into_owned(self) -> SyncHdr<'static> {
        SyncHdr {
            ver_dtd: own(self.ver_dtd),
            ver_proto: own(self.ver_proto),
            session_id: own(self.session_id),
            msg_id: own(self.msg_id),
            target: self.target.into_owned(),
            source: self.source.into_owned(),
            resp_uri: self.resp_uri.map(own),
            no_resp: self.no_resp,
            cred: self.cred.map(Cred::into_owned),
            meta: self.meta.map(Meta::into_owned),
        }
    }
}

/// `Target` or `Source` (and `SourceParent`/`TargetParent`, which only have a LocURI).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Location<'a> {
    /// `LocURI`.
    pub loc_uri: Text<'a>,
    /// `LocName`.
    pub loc_name: Option<Text<'a>>,
    /// DS 1.2 `Filter` (only inside an Alert item's Target).
    pub filter: Option<Box<Filter<'a>>>,
}

impl<'a> Location<'a> {
    /// A location with just a LocURI.
    pub fn uri(uri: impl Into<Text<'a>>) -> Self {
        Location { loc_uri: uri.into(), loc_name: None, filter: None }
    }

    /// Copies every borrowed text.
    pub fn into_owned(self) -> Location<'static> {
        Location {
            loc_uri: own(self.loc_uri),
            loc_name: self.loc_name.map(own),
            filter: self.filter.map(|f| Box::new(f.into_owned())),
        }
    }
}

/// DS 1.2 `Filter`.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Filter<'a> {
    /// `Meta` (content type the filter applies to).
    pub meta: Option<Meta<'a>>,
    /// `Field` filter item.
    pub field: Option<Item<'a>>,
    /// `Record` filter item.
    pub record: Option<Item<'a>>,
    /// `FilterType` (`INCLUSIVE` / `EXCLUSIVE`).
    pub filter_type: Option<Text<'a>>,
}

impl Filter<'_> {
    /// Copies every borrowed text.
    pub fn into_owned(self) -> Filter<'static> {
        Filter {
            meta: self.meta.map(Meta::into_owned),
            field: self.field.map(Item::into_owned),
            record: self.record.map(Item::into_owned),
            filter_type: self.filter_type.map(own),
        }
    }
}

/// `Cred`: authentication data.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Cred<'a> {
    /// `Meta` with Type (auth scheme) and Format.
    pub meta: Option<Meta<'a>>,
    /// `Data`: the credential.
    pub data: Data<'a>,
}

impl Cred<'_> {
    /// Copies every borrowed text.
    pub fn into_owned(self) -> Cred<'static> {
        Cred { meta: self.meta.map(Meta::into_owned), data: self.data.into_owned() }
    }
}

/// `Meta`: the MetInf elements (namespace `syncml:metinf`).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Meta<'a> {
    /// `Format` (`b64`, `bin`, `chr`, ...).
    pub format: Option<Text<'a>>,
    /// `Type`: MIME type or auth scheme.
    pub type_: Option<Text<'a>>,
    /// `Mark`.
    pub mark: Option<Text<'a>>,
    /// `Size`: total size of a chunked object.
    pub size: Option<Text<'a>>,
    /// `Anchor`.
    pub anchor: Option<Anchor<'a>>,
    /// `Version`.
    pub version: Option<Text<'a>>,
    /// `NextNonce` (base64).
    pub next_nonce: Option<Text<'a>>,
    /// `MaxMsgSize`.
    pub max_msg_size: Option<Text<'a>>,
    /// `MaxObjSize`.
    pub max_obj_size: Option<Text<'a>>,
    /// `EMI` (vendor extensions), in order.
    pub emi: Vec<Text<'a>>,
    /// `Mem`.
    pub mem: Option<Mem<'a>>,
    /// `FieldLevel` flag.
    pub field_level: bool,
}

impl Meta<'_> {
    /// Copies every borrowed text.
    pub fn into_owned(self) -> Meta<'static> {
        Meta {
            format: self.format.map(own),
            type_: self.type_.map(own),
            mark: self.mark.map(own),
            size: self.size.map(own),
            anchor: self.anchor.map(Anchor::into_owned),
            version: self.version.map(own),
            next_nonce: self.next_nonce.map(own),
            max_msg_size: self.max_msg_size.map(own),
            max_obj_size: self.max_obj_size.map(own),
            emi: self.emi.into_iter().map(own).collect(),
            mem: self.mem.map(Mem::into_owned),
            field_level: self.field_level,
        }
    }
}

/// MetInf `Anchor`.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Anchor<'a> {
    /// `Last`.
    pub last: Option<Text<'a>>,
    /// `Next`.
    pub next: Option<Text<'a>>,
}

impl Anchor<'_> {
    /// Copies every borrowed text.
    pub fn into_owned(self) -> Anchor<'static> {
        Anchor { last: self.last.map(own), next: self.next.map(own) }
    }
}

/// MetInf `Mem`.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Mem<'a> {
    /// `SharedMem` flag.
    pub shared_mem: bool,
    /// `FreeMem`.
    pub free_mem: Option<Text<'a>>,
    /// `FreeID`.
    pub free_id: Option<Text<'a>>,
}

impl Mem<'_> {
    /// Copies every borrowed text.
    pub fn into_owned(self) -> Mem<'static> {
        Mem { shared_mem: self.shared_mem, free_mem: self.free_mem.map(own), free_id: self.free_id.map(own) }
    }
}

/// The content of a `Data` element.
#[derive(Debug, Clone, PartialEq)]
pub enum Data<'a> {
    /// Character data (escaped text, CDATA, WBXML inline string, or WBXML
    /// OPAQUE bytes that are valid UTF-8).
    Text(Text<'a>),
    /// WBXML OPAQUE bytes that are not UTF-8 (e.g. a binary MD5 digest).
    /// The XML encoder writes them base64-encoded.
    Binary(Cow<'a, [u8]>),
    /// An embedded DevInf document (inline XML, or a nested WBXML document).
    DevInf(Box<DevInf<'a>>),
    /// An embedded MetInf `Anchor` (the echoed anchor in an Alert's Status).
    Anchor(Anchor<'a>),
    /// Character data of one piece of an object split over several items
    /// (`MoreData`, `Size`). Only the engine makes it; decoders return
    /// [`Data::Text`]. Encoders write every piece of an object the same way
    /// (XML: escaped text with CR as `&#13;`; WBXML: OPAQUE), because a
    /// receiver may refuse to join pieces of different PCDATA kinds
    /// (libsynthesis answers 400 to a CDATA piece after a text piece).
    Chunk(Text<'a>),
}

impl Default for Data<'_> {
    fn default() -> Self {
        Data::Text(Cow::Borrowed(""))
    }
}

impl Data<'_> {
    /// The text, if this is character data.
    pub fn as_text(&self) -> Option<&str> {
        match self {
            Data::Text(t) | Data::Chunk(t) => Some(t),
            _ => None,
        }
    }

    /// The raw bytes of character or binary data.
    pub fn as_bytes(&self) -> Option<&[u8]> {
        match self {
            Data::Text(t) | Data::Chunk(t) => Some(t.as_bytes()),
            Data::Binary(b) => Some(b),
            _ => None,
        }
    }

    /// Copies every borrowed text.
    pub fn into_owned(self) -> Data<'static> {
        match self {
            Data::Text(t) => Data::Text(own(t)),
            Data::Binary(b) => Data::Binary(Cow::Owned(b.into_owned())),
            Data::DevInf(d) => Data::DevInf(Box::new(d.into_owned())),
            Data::Anchor(a) => Data::Anchor(a.into_owned()),
            Data::Chunk(t) => Data::Chunk(own(t)),
        }
    }
}

/// `Item`.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Item<'a> {
    /// `Target`.
    pub target: Option<Location<'a>>,
    /// `Source`.
    pub source: Option<Location<'a>>,
    /// `SourceParent` (DS 1.2).
    pub source_parent: Option<Location<'a>>,
    /// `TargetParent` (DS 1.2).
    pub target_parent: Option<Location<'a>>,
    /// `Meta` (overrides the command's Meta).
    pub meta: Option<Meta<'a>>,
    /// `Data`.
    pub data: Option<Data<'a>>,
    /// `MoreData`: a chunk of a large object follows.
    pub more_data: bool,
}

impl Item<'_> {
    /// Copies every borrowed text.
    pub fn into_owned(self) -> Item<'static> {
        Item {
            target: self.target.map(Location::into_owned),
            source: self.source.map(Location::into_owned),
            source_parent: self.source_parent.map(Location::into_owned),
            target_parent: self.target_parent.map(Location::into_owned),
            meta: self.meta.map(Meta::into_owned),
            data: self.data.map(Data::into_owned),
            more_data: self.more_data,
        }
    }
}

/// A command of `SyncBody` (or nested in Sync, Atomic, Sequence).
#[derive(Debug, Clone, PartialEq)]
// Boxing the big variants would change the shape every module codes against;
// commands live in a Vec, so the size difference costs little.
#[allow(clippy::large_enum_variant)]
pub enum Command<'a> {
    /// `Alert`.
    Alert(Alert<'a>),
    /// `Add`.
    Add(ItemCommand<'a>),
    /// `Replace`.
    Replace(ItemCommand<'a>),
    /// `Delete`.
    Delete(ItemCommand<'a>),
    /// `Copy`.
    Copy(ItemCommand<'a>),
    /// `Move` (DS 1.2).
    Move(ItemCommand<'a>),
    /// `Sync`.
    Sync(Sync<'a>),
    /// `Atomic`.
    Atomic(Container<'a>),
    /// `Sequence`.
    Sequence(Container<'a>),
    /// `Status`.
    Status(Status<'a>),
    /// `Put`.
    Put(PutGet<'a>),
    /// `Get`.
    Get(PutGet<'a>),
    /// `Results`.
    Results(Results<'a>),
    /// `Map`.
    Map(Map<'a>),
    /// `Exec`.
    Exec(Exec<'a>),
    /// `Search`.
    Search(Search<'a>),
    /// A command element this model does not know; kept so the engine can
    /// answer it with a Status (406/501) by its CmdID. Encoders skip it.
    Unknown(UnknownCommand<'a>),
}

/// An unknown command: its element name and CmdID.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct UnknownCommand<'a> {
    /// The element's local name.
    pub name: Text<'a>,
    /// `CmdID`, if the element had one.
    pub cmd_id: Text<'a>,
}

impl<'a> Command<'a> {
    /// The element name (as used in `Status/Cmd`).
    pub fn name(&self) -> &'static str {
        match self {
            Command::Alert(_) => "Alert",
            Command::Add(_) => "Add",
            Command::Replace(_) => "Replace",
            Command::Delete(_) => "Delete",
            Command::Copy(_) => "Copy",
            Command::Move(_) => "Move",
            Command::Sync(_) => "Sync",
            Command::Atomic(_) => "Atomic",
            Command::Sequence(_) => "Sequence",
            Command::Status(_) => "Status",
            Command::Put(_) => "Put",
            Command::Get(_) => "Get",
            Command::Results(_) => "Results",
            Command::Map(_) => "Map",
            Command::Exec(_) => "Exec",
            Command::Search(_) => "Search",
            Command::Unknown(_) => "Unknown",
        }
    }

    /// The `CmdID` of the command.
    pub fn cmd_id(&self) -> &Text<'a> {
        match self {
            Command::Alert(c) => &c.cmd_id,
            Command::Add(c)
            | Command::Replace(c)
            | Command::Delete(c)
            | Command::Copy(c)
            | Command::Move(c) => &c.cmd_id,
            Command::Sync(c) => &c.cmd_id,
            Command::Atomic(c) | Command::Sequence(c) => &c.cmd_id,
            Command::Status(c) => &c.cmd_id,
            Command::Put(c) | Command::Get(c) => &c.cmd_id,
            Command::Results(c) => &c.cmd_id,
            Command::Map(c) => &c.cmd_id,
            Command::Exec(c) => &c.cmd_id,
            Command::Search(c) => &c.cmd_id,
            Command::Unknown(c) => &c.cmd_id,
        }
    }

    /// The `CmdID` of the command, to change it.
    pub fn cmd_id_mut(&mut self) -> &mut Text<'a> {
        match self {
            Command::Alert(c) => &mut c.cmd_id,
            Command::Add(c)
            | Command::Replace(c)
            | Command::Delete(c)
            | Command::Copy(c)
            | Command::Move(c) => &mut c.cmd_id,
            Command::Sync(c) => &mut c.cmd_id,
            Command::Atomic(c) | Command::Sequence(c) => &mut c.cmd_id,
            Command::Status(c) => &mut c.cmd_id,
            Command::Put(c) | Command::Get(c) => &mut c.cmd_id,
            Command::Results(c) => &mut c.cmd_id,
            Command::Map(c) => &mut c.cmd_id,
            Command::Exec(c) => &mut c.cmd_id,
            Command::Search(c) => &mut c.cmd_id,
            Command::Unknown(c) => &mut c.cmd_id,
        }
    }

    /// Copies every borrowed text.
    pub fn into_owned(self) -> Command<'static> {
        match self {
            Command::Alert(c) => Command::Alert(c.into_owned()),
            Command::Add(c) => Command::Add(c.into_owned()),
            Command::Replace(c) => Command::Replace(c.into_owned()),
            Command::Delete(c) => Command::Delete(c.into_owned()),
            Command::Copy(c) => Command::Copy(c.into_owned()),
            Command::Move(c) => Command::Move(c.into_owned()),
            Command::Sync(c) => Command::Sync(c.into_owned()),
            Command::Atomic(c) => Command::Atomic(c.into_owned()),
            Command::Sequence(c) => Command::Sequence(c.into_owned()),
            Command::Status(c) => Command::Status(c.into_owned()),
            Command::Put(c) => Command::Put(c.into_owned()),
            Command::Get(c) => Command::Get(c.into_owned()),
            Command::Results(c) => Command::Results(c.into_owned()),
            Command::Map(c) => Command::Map(c.into_owned()),
            Command::Exec(c) => Command::Exec(c.into_owned()),
            Command::Search(c) => Command::Search(c.into_owned()),
            Command::Unknown(c) => {
                Command::Unknown(UnknownCommand { name: own(c.name), cmd_id: own(c.cmd_id) })
            }
        }
    }
}

/// `Alert`.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Alert<'a> {
    /// `CmdID`.
    pub cmd_id: Text<'a>,
    /// `NoResp`.
    pub no_resp: bool,
    /// `Cred`.
    pub cred: Option<Cred<'a>>,
    /// `Data`: the alert code.
    pub data: Option<Text<'a>>,
    /// `Correlator` (1.2).
    pub correlator: Option<Text<'a>>,
    /// `Item`s: datastore Target/Source and anchors.
    pub items: Vec<Item<'a>>,
}

impl Alert<'_> {
    /// Copies every borrowed text.
    pub fn into_owned(self) -> Alert<'static> {
        Alert {
            cmd_id: own(self.cmd_id),
            no_resp: self.no_resp,
            cred: self.cred.map(Cred::into_owned),
            data: self.data.map(own),
            correlator: self.correlator.map(own),
            items: owned_items(self.items),
        }
    }
}

/// `Add`, `Replace`, `Delete`, `Copy` and `Move`.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ItemCommand<'a> {
    /// `CmdID`.
    pub cmd_id: Text<'a>,
    /// `NoResp`.
    pub no_resp: bool,
    /// `Archive` (Delete only).
    pub archive: bool,
    /// `SftDel` (Delete only): soft delete.
    pub sft_del: bool,
    /// `Cred`.
    pub cred: Option<Cred<'a>>,
    /// `Meta`: defaults for the items.
    pub meta: Option<Meta<'a>>,
    /// `Item`s.
    pub items: Vec<Item<'a>>,
}

impl ItemCommand<'_> {
    /// Copies every borrowed text.
    pub fn into_owned(self) -> ItemCommand<'static> {
        ItemCommand {
            cmd_id: own(self.cmd_id),
            no_resp: self.no_resp,
            archive: self.archive,
            sft_del: self.sft_del,
            cred: self.cred.map(Cred::into_owned),
            meta: self.meta.map(Meta::into_owned),
            items: owned_items(self.items),
        }
    }
}

/// `Sync`: one datastore's changes in one direction.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Sync<'a> {
    /// `CmdID`.
    pub cmd_id: Text<'a>,
    /// `NoResp`.
    pub no_resp: bool,
    /// `Cred`.
    pub cred: Option<Cred<'a>>,
    /// `Target`: the receiver's datastore.
    pub target: Option<Location<'a>>,
    /// `Source`: the sender's datastore.
    pub source: Option<Location<'a>>,
    /// `Meta`.
    pub meta: Option<Meta<'a>>,
    /// `NumberOfChanges`.
    pub number_of_changes: Option<Text<'a>>,
    /// The contained Add/Replace/Delete/Copy/Move/Atomic/Sequence commands.
    pub commands: Vec<Command<'a>>,
}

impl Sync<'_> {
    /// Copies every borrowed text.
    pub fn into_owned(self) -> Sync<'static> {
        Sync {
            cmd_id: own(self.cmd_id),
            no_resp: self.no_resp,
            cred: self.cred.map(Cred::into_owned),
            target: self.target.map(Location::into_owned),
            source: self.source.map(Location::into_owned),
            meta: self.meta.map(Meta::into_owned),
            number_of_changes: self.number_of_changes.map(own),
            commands: self.commands.into_iter().map(Command::into_owned).collect(),
        }
    }
}

/// `Atomic` and `Sequence`.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Container<'a> {
    /// `CmdID`.
    pub cmd_id: Text<'a>,
    /// `NoResp`.
    pub no_resp: bool,
    /// `Meta`.
    pub meta: Option<Meta<'a>>,
    /// The contained commands.
    pub commands: Vec<Command<'a>>,
}

impl Container<'_> {
    /// Copies every borrowed text.
    pub fn into_owned(self) -> Container<'static> {
        Container {
            cmd_id: own(self.cmd_id),
            no_resp: self.no_resp,
            meta: self.meta.map(Meta::into_owned),
            commands: self.commands.into_iter().map(Command::into_owned).collect(),
        }
    }
}

/// `Status`.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Status<'a> {
    /// `CmdID`.
    pub cmd_id: Text<'a>,
    /// `MsgRef`.
    pub msg_ref: Option<Text<'a>>,
    /// `CmdRef` (0 for the SyncHdr).
    pub cmd_ref: Text<'a>,
    /// `Cmd`: name of the referenced command.
    pub cmd: Text<'a>,
    /// `TargetRef`s.
    pub target_refs: Vec<Text<'a>>,
    /// `SourceRef`s.
    pub source_refs: Vec<Text<'a>>,
    /// `Cred`.
    pub cred: Option<Cred<'a>>,
    /// `Chal`: an authentication challenge (its Meta).
    pub chal: Option<Meta<'a>>,
    /// `Data`: the status code.
    pub data: Text<'a>,
    /// `Item`s (echoed anchor, error text).
    pub items: Vec<Item<'a>>,
}

impl Status<'static> {
    /// The Status answering command `cmd_ref` (named `cmd`) of message
    /// `msg_ref` with `code`, echoing its target and source; no CmdID yet.
    pub fn answer(
        msg_ref: &str,
        cmd_ref: &str,
        cmd: &str,
        target_ref: Option<&str>,
        source_ref: Option<&str>,
        code: u16,
    ) -> Status<'static> {
        let own = |s: &str| Cow::Owned(s.to_owned());
        Status {
            msg_ref: Some(own(msg_ref)),
            cmd_ref: own(cmd_ref),
            cmd: own(cmd),
            target_refs: target_ref.map(|s| vec![own(s)]).unwrap_or_default(),
            source_refs: source_ref.map(|s| vec![own(s)]).unwrap_or_default(),
            data: Cow::Owned(code.to_string()),
            ..Default::default()
        }
    }
}

impl Status<'_> {
    /// Copies every borrowed text.
    pub fn into_owned(self) -> Status<'static> {
        Status {
            cmd_id: own(self.cmd_id),
            msg_ref: self.msg_ref.map(own),
            cmd_ref: own(self.cmd_ref),
            cmd: own(self.cmd),
            target_refs: self.target_refs.into_iter().map(own).collect(),
            source_refs: self.source_refs.into_iter().map(own).collect(),
            cred: self.cred.map(Cred::into_owned),
            chal: self.chal.map(Meta::into_owned),
            data: own(self.data),
            items: owned_items(self.items),
        }
    }
}

/// `Put` and `Get`.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct PutGet<'a> {
    /// `CmdID`.
    pub cmd_id: Text<'a>,
    /// `NoResp`.
    pub no_resp: bool,
    /// `Lang`.
    pub lang: Option<Text<'a>>,
    /// `Cred`.
    pub cred: Option<Cred<'a>>,
    /// `Meta`.
    pub meta: Option<Meta<'a>>,
    /// `Item`s.
    pub items: Vec<Item<'a>>,
}

impl PutGet<'_> {
    /// Copies every borrowed text.
    pub fn into_owned(self) -> PutGet<'static> {
        PutGet {
            cmd_id: own(self.cmd_id),
            no_resp: self.no_resp,
            lang: self.lang.map(own),
            cred: self.cred.map(Cred::into_owned),
            meta: self.meta.map(Meta::into_owned),
            items: owned_items(self.items),
        }
    }
}

/// `Results`.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Results<'a> {
    /// `CmdID`.
    pub cmd_id: Text<'a>,
    /// `MsgRef`.
    pub msg_ref: Option<Text<'a>>,
    /// `CmdRef`.
    pub cmd_ref: Text<'a>,
    /// `Meta`.
    pub meta: Option<Meta<'a>>,
    /// `TargetRef`.
    pub target_ref: Option<Text<'a>>,
    /// `SourceRef`.
    pub source_ref: Option<Text<'a>>,
    /// `Item`s.
    pub items: Vec<Item<'a>>,
}

impl Results<'_> {
    /// Copies every borrowed text.
    pub fn into_owned(self) -> Results<'static> {
        Results {
            cmd_id: own(self.cmd_id),
            msg_ref: self.msg_ref.map(own),
            cmd_ref: own(self.cmd_ref),
            meta: self.meta.map(Meta::into_owned),
            target_ref: self.target_ref.map(own),
            source_ref: self.source_ref.map(own),
            items: owned_items(self.items),
        }
    }
}

/// `Map`.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Map<'a> {
    /// `CmdID`.
    pub cmd_id: Text<'a>,
    /// `Target`: the server datastore.
    pub target: Location<'a>,
    /// `Source`: the client datastore.
    pub source: Location<'a>,
    /// `Cred`.
    pub cred: Option<Cred<'a>>,
    /// `Meta`.
    pub meta: Option<Meta<'a>>,
    /// `MapItem`s.
    pub map_items: Vec<MapItem<'a>>,
}

impl Map<'_> {
    /// Copies every borrowed text.
    pub fn into_owned(self) -> Map<'static> {
        Map {
            cmd_id: own(self.cmd_id),
            target: self.target.into_owned(),
            source: self.source.into_owned(),
            cred: self.cred.map(Cred::into_owned),
            meta: self.meta.map(Meta::into_owned),
            map_items: self.map_items.into_iter().map(MapItem::into_owned).collect(),
        }
    }
}

/// `MapItem`: Target = server GUID, Source = client LUID.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct MapItem<'a> {
    /// `Target` (server id).
    pub target: Location<'a>,
    /// `Source` (client id).
    pub source: Location<'a>,
}

impl MapItem<'_> {
    /// Copies every borrowed text.
    pub fn into_owned(self) -> MapItem<'static> {
        MapItem { target: self.target.into_owned(), source: self.source.into_owned() }
    }
}

/// `Exec`.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Exec<'a> {
    /// `CmdID`.
    pub cmd_id: Text<'a>,
    /// `NoResp`.
    pub no_resp: bool,
    /// `Cred`.
    pub cred: Option<Cred<'a>>,
    /// `Meta`.
    pub meta: Option<Meta<'a>>,
    /// `Correlator`.
    pub correlator: Option<Text<'a>>,
    /// `Item`.
    pub item: Item<'a>,
}

impl Exec<'_> {
    /// Copies every borrowed text.
    pub fn into_owned(self) -> Exec<'static> {
        Exec {
            cmd_id: own(self.cmd_id),
            no_resp: self.no_resp,
            cred: self.cred.map(Cred::into_owned),
            meta: self.meta.map(Meta::into_owned),
            correlator: self.correlator.map(own),
            item: self.item.into_owned(),
        }
    }
}

/// `Search`.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Search<'a> {
    /// `CmdID`.
    pub cmd_id: Text<'a>,
    /// `NoResp`.
    pub no_resp: bool,
    /// `NoResults`.
    pub no_results: bool,
    /// `Cred`.
    pub cred: Option<Cred<'a>>,
    /// `Target`.
    pub target: Option<Location<'a>>,
    /// `Source`s.
    pub sources: Vec<Location<'a>>,
    /// `Lang`.
    pub lang: Option<Text<'a>>,
    /// `Meta`.
    pub meta: Option<Meta<'a>>,
    /// `Data`.
    pub data: Option<Data<'a>>,
}

impl Search<'_> {
    /// Copies every borrowed text.
    pub fn into_owned(self) -> Search<'static> {
        Search {
            cmd_id: own(self.cmd_id),
            no_resp: self.no_resp,
            no_results: self.no_results,
            cred: self.cred.map(Cred::into_owned),
            target: self.target.map(Location::into_owned),
            sources: self.sources.into_iter().map(Location::into_owned).collect(),
            lang: self.lang.map(own),
            meta: self.meta.map(Meta::into_owned),
            data: self.data.map(Data::into_owned),
        }
    }
}

/// A DevInf document (1.0–1.2). A DevInf 1.1 global, flat `CTCap` is decoded
/// into [`DevInf::ct_caps`] with its properties grouped like 1.2's.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct DevInf<'a> {
    /// `VerDTD` of the DevInf document.
    pub ver_dtd: Text<'a>,
    /// `Man`.
    pub man: Option<Text<'a>>,
    /// `Mod`.
    pub model: Option<Text<'a>>,
    /// `OEM`.
    pub oem: Option<Text<'a>>,
    /// `FwV`.
    pub fw_v: Option<Text<'a>>,
    /// `SwV`.
    pub sw_v: Option<Text<'a>>,
    /// `HwV`.
    pub hw_v: Option<Text<'a>>,
    /// `DevID`.
    pub dev_id: Text<'a>,
    /// `DevTyp`.
    pub dev_typ: Text<'a>,
    /// `UTC` flag.
    pub utc: bool,
    /// `SupportLargeObjs` flag.
    pub support_large_objs: bool,
    /// `SupportNumberOfChanges` flag.
    pub support_number_of_changes: bool,
    /// `DataStore`s.
    pub data_stores: Vec<DataStore<'a>>,
    /// Global `CTCap`s (DevInf 1.0/1.1).
    pub ct_caps: Vec<CtCap<'a>>,
    /// `Ext`s.
    pub exts: Vec<Ext<'a>>,
}

impl DevInf<'_> {
    /// Copies every borrowed text.
    pub fn into_owned(self) -> DevInf<'static> {
        DevInf {
            ver_dtd: own(self.ver_dtd),
            man: self.man.map(own),
            model: self.model.map(own),
            oem: self.oem.map(own),
            fw_v: self.fw_v.map(own),
            sw_v: self.sw_v.map(own),
            hw_v: self.hw_v.map(own),
            dev_id: own(self.dev_id),
            dev_typ: own(self.dev_typ),
            utc: self.utc,
            support_large_objs: self.support_large_objs,
            support_number_of_changes: self.support_number_of_changes,
            data_stores: self.data_stores.into_iter().map(DataStore::into_owned).collect(),
            ct_caps: self.ct_caps.into_iter().map(CtCap::into_owned).collect(),
            exts: self.exts.into_iter().map(Ext::into_owned).collect(),
        }
    }
}

/// DevInf `DataStore`.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct DataStore<'a> {
    /// `SourceRef`: the datastore URI.
    pub source_ref: Text<'a>,
    /// `DisplayName`.
    pub display_name: Option<Text<'a>>,
    /// `MaxGUIDSize`.
    pub max_guid_size: Option<Text<'a>>,
    /// `Rx-Pref`.
    pub rx_pref: Option<ContentTypeVersion<'a>>,
    /// `Rx`.
    pub rx: Vec<ContentTypeVersion<'a>>,
    /// `Tx-Pref`.
    pub tx_pref: Option<ContentTypeVersion<'a>>,
    /// `Tx`.
    pub tx: Vec<ContentTypeVersion<'a>>,
    /// Per-datastore `CTCap`s (DevInf 1.2).
    pub ct_caps: Vec<CtCap<'a>>,
    /// `DSMem`.
    pub ds_mem: Option<DsMem<'a>>,
    /// `SupportHierarchicalSync` flag (1.2).
    pub support_hierarchical_sync: bool,
    /// `SyncCap/SyncType` values.
    pub sync_cap: Vec<Text<'a>>,
    /// `Filter-Rx` (1.2).
    pub filter_rx: Vec<ContentTypeVersion<'a>>,
    /// `FilterCap` (1.2).
    pub filter_caps: Vec<FilterCap<'a>>,
}

impl DataStore<'_> {
    /// Copies every borrowed text.
    pub fn into_owned(self) -> DataStore<'static> {
        DataStore {
            source_ref: own(self.source_ref),
            display_name: self.display_name.map(own),
            max_guid_size: self.max_guid_size.map(own),
            rx_pref: self.rx_pref.map(ContentTypeVersion::into_owned),
            rx: self.rx.into_iter().map(ContentTypeVersion::into_owned).collect(),
            tx_pref: self.tx_pref.map(ContentTypeVersion::into_owned),
            tx: self.tx.into_iter().map(ContentTypeVersion::into_owned).collect(),
            ct_caps: self.ct_caps.into_iter().map(CtCap::into_owned).collect(),
            ds_mem: self.ds_mem.map(DsMem::into_owned),
            support_hierarchical_sync: self.support_hierarchical_sync,
            sync_cap: self.sync_cap.into_iter().map(own).collect(),
            filter_rx: self.filter_rx.into_iter().map(ContentTypeVersion::into_owned).collect(),
            filter_caps: self.filter_caps.into_iter().map(FilterCap::into_owned).collect(),
        }
    }
}

/// `CTType` with `VerCT` (Rx, Tx, Rx-Pref, Tx-Pref, Filter-Rx).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ContentTypeVersion<'a> {
    /// `CTType`.
    pub ct_type: Text<'a>,
    /// `VerCT`.
    pub ver_ct: Option<Text<'a>>,
}

impl ContentTypeVersion<'_> {
    /// Copies every borrowed text.
    pub fn into_owned(self) -> ContentTypeVersion<'static> {
        ContentTypeVersion { ct_type: own(self.ct_type), ver_ct: self.ver_ct.map(own) }
    }
}

/// `CTCap`: the properties a content type supports.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct CtCap<'a> {
    /// `CTType`.
    pub ct_type: Text<'a>,
    /// `VerCT` (1.2).
    pub ver_ct: Option<Text<'a>>,
    /// `FieldLevel` flag (1.2).
    pub field_level: bool,
    /// `Property`s (1.1: the flat PropName sequence, grouped).
    pub properties: Vec<Property<'a>>,
}

impl CtCap<'_> {
    /// Copies every borrowed text.
    pub fn into_owned(self) -> CtCap<'static> {
        CtCap {
            ct_type: own(self.ct_type),
            ver_ct: self.ver_ct.map(own),
            field_level: self.field_level,
            properties: self.properties.into_iter().map(Property::into_owned).collect(),
        }
    }
}

/// A `Property` of a CTCap.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Property<'a> {
    /// `PropName`.
    pub prop_name: Text<'a>,
    /// `DataType`.
    pub data_type: Option<Text<'a>>,
    /// `MaxOccur` (1.2).
    pub max_occur: Option<Text<'a>>,
    /// `MaxSize` (1.2) or `Size` (1.1).
    pub max_size: Option<Text<'a>>,
    /// `NoTruncate` flag (1.2).
    pub no_truncate: bool,
    /// `ValEnum`s.
    pub val_enums: Vec<Text<'a>>,
    /// `DisplayName`.
    pub display_name: Option<Text<'a>>,
    /// `PropParam`s.
    pub prop_params: Vec<PropParam<'a>>,
}

impl Property<'_> {
    /// Copies every borrowed text.
    pub fn into_owned(self) -> Property<'static> {
        Property {
            prop_name: own(self.prop_name),
            data_type: self.data_type.map(own),
            max_occur: self.max_occur.map(own),
            max_size: self.max_size.map(own),
            no_truncate: self.no_truncate,
            val_enums: self.val_enums.into_iter().map(own).collect(),
            display_name: self.display_name.map(own),
            prop_params: self.prop_params.into_iter().map(PropParam::into_owned).collect(),
        }
    }
}

/// A `PropParam` of a Property.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct PropParam<'a> {
    /// `ParamName`.
    pub param_name: Text<'a>,
    /// `DataType`.
    pub data_type: Option<Text<'a>>,
    /// `ValEnum`s.
    pub val_enums: Vec<Text<'a>>,
    /// `DisplayName`.
    pub display_name: Option<Text<'a>>,
}

impl PropParam<'_> {
    /// Copies every borrowed text.
    pub fn into_owned(self) -> PropParam<'static> {
        PropParam {
            param_name: own(self.param_name),
            data_type: self.data_type.map(own),
            val_enums: self.val_enums.into_iter().map(own).collect(),
            display_name: self.display_name.map(own),
        }
    }
}

/// `DSMem`.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct DsMem<'a> {
    /// `SharedMem` flag.
    pub shared_mem: bool,
    /// `MaxMem`.
    pub max_mem: Option<Text<'a>>,
    /// `MaxID`.
    pub max_id: Option<Text<'a>>,
}

impl DsMem<'_> {
    /// Copies every borrowed text.
    pub fn into_owned(self) -> DsMem<'static> {
        DsMem { shared_mem: self.shared_mem, max_mem: self.max_mem.map(own), max_id: self.max_id.map(own) }
    }
}

/// `FilterCap` (1.2).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct FilterCap<'a> {
    /// `CTType`.
    pub ct_type: Text<'a>,
    /// `VerCT`.
    pub ver_ct: Option<Text<'a>>,
    /// `FilterKeyword`s.
    pub filter_keywords: Vec<Text<'a>>,
    /// `PropName`s.
    pub prop_names: Vec<Text<'a>>,
}

impl FilterCap<'_> {
    /// Copies every borrowed text.
    pub fn into_owned(self) -> FilterCap<'static> {
        FilterCap {
            ct_type: own(self.ct_type),
            ver_ct: self.ver_ct.map(own),
            filter_keywords: self.filter_keywords.into_iter().map(own).collect(),
            prop_names: self.prop_names.into_iter().map(own).collect(),
        }
    }
}

/// `Ext`: a vendor extension.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Ext<'a> {
    /// `XNam`.
    pub x_nam: Text<'a>,
    /// `XVal`s.
    pub x_vals: Vec<Text<'a>>,
}

impl Ext<'_> {
    /// Copies every borrowed text.
    pub fn into_owned(self) -> Ext<'static> {
        Ext { x_nam: own(self.x_nam), x_vals: self.x_vals.into_iter().map(own).collect() }
    }
}

fn own(t: Text<'_>) -> Text<'static> {
    Cow::Owned(t.into_owned())
}

fn owned_items(items: Vec<Item<'_>>) -> Vec<Item<'static>> {
    items.into_iter().map(Item::into_owned).collect()
}

/// The two wire encodings of SyncML.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub enum Encoding {
    /// `application/vnd.syncml+xml`.
    Xml,
    /// `application/vnd.syncml+wbxml`.
    Wbxml,
}

impl Encoding {
    /// The HTTP content type of this encoding.
    pub fn content_type(self) -> &'static str {
        match self {
            Encoding::Xml => "application/vnd.syncml+xml",
            Encoding::Wbxml => "application/vnd.syncml+wbxml",
        }
    }

    /// Matches an HTTP `Content-Type` value (parameters and case ignored).
    pub fn from_content_type(value: &str) -> Option<Encoding> {
        let base = value.split(';').next().unwrap_or("").trim();
        if base.eq_ignore_ascii_case("application/vnd.syncml+xml") {
            Some(Encoding::Xml)
        } else if base.eq_ignore_ascii_case("application/vnd.syncml+wbxml") {
            Some(Encoding::Wbxml)
        } else {
            None
        }
    }
}
