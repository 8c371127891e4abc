//! WBXML global tokens and the SyncML, MetInf and DevInf tag tables
//! (digest §13.2, §13.4–§13.6). A tag token is `id | 0x40` (has content)
//! `| 0x80` (has attributes); ids 0x05–0x3F are code-page specific.

/// Global tokens, the same in every code page.
pub(crate) mod global {
    pub const SWITCH_PAGE: u8 = 0x00;
    pub const END: u8 = 0x01;
    pub const ENTITY: u8 = 0x02;
    pub const STR_I: u8 = 0x03;
    pub const LITERAL: u8 = 0x04;
    pub const EXT_I_0: u8 = 0x40;
    pub const EXT_I_2: u8 = 0x42;
    pub const PI: u8 = 0x43;
    pub const EXT_T_0: u8 = 0x80;
    pub const EXT_T_2: u8 = 0x82;
    pub const STR_T: u8 = 0x83;
    pub const EXT_0: u8 = 0xC0;
    pub const EXT_2: u8 = 0xC2;
    pub const OPAQUE: u8 = 0xC3;
}

/// Tag bit: the element has content and is closed by END.
pub(crate) const CONTENT: u8 = 0x40;
/// Tag bit: the element has an attribute list (closed by END).
pub(crate) const ATTRS: u8 = 0x80;

/// Public identifiers (WBXML header).
pub(crate) mod public_id {
    /// Public id given as a string-table reference.
    pub const IN_STRTBL: u32 = 0;
    pub const SYNCML_10: u32 = 0x0FD1;
    pub const DEVINF_10: u32 = 0x0FD2;
    pub const SYNCML_11: u32 = 0x0FD3;
    pub const DEVINF_11: u32 = 0x0FD4;
    pub const SYNCML_12: u32 = 0x1201;
    pub const DEVINF_12: u32 = 0x1203;
}

/// IANA MIBenum values of the charsets we read.
pub(crate) mod charset {
    pub const UNKNOWN: u32 = 0;
    pub const US_ASCII: u32 = 3;
    pub const ISO_8859_1: u32 = 4;
    pub const UTF_8: u32 = 106;
}

/// Code page 0 of a SyncML document.
pub(crate) mod syncml {
    pub const ADD: u8 = 0x05;
    pub const ALERT: u8 = 0x06;
    pub const ARCHIVE: u8 = 0x07;
    pub const ATOMIC: u8 = 0x08;
    pub const CHAL: u8 = 0x09;
    pub const CMD: u8 = 0x0A;
    pub const CMD_ID: u8 = 0x0B;
    pub const CMD_REF: u8 = 0x0C;
    pub const COPY: u8 = 0x0D;
    pub const CRED: u8 = 0x0E;
    pub const DATA: u8 = 0x0F;
    pub const DELETE: u8 = 0x10;
    pub const EXEC: u8 = 0x11;
    pub const FINAL: u8 = 0x12;
    pub const GET: u8 = 0x13;
    pub const ITEM: u8 = 0x14;
    pub const LANG: u8 = 0x15;
    pub const LOC_NAME: u8 = 0x16;
    pub const LOC_URI: u8 = 0x17;
    pub const MAP: u8 = 0x18;
    pub const MAP_ITEM: u8 = 0x19;
    pub const META: u8 = 0x1A;
    pub const MSG_ID: u8 = 0x1B;
    pub const MSG_REF: u8 = 0x1C;
    pub const NO_RESP: u8 = 0x1D;
    pub const NO_RESULTS: u8 = 0x1E;
    pub const PUT: u8 = 0x1F;
    pub const REPLACE: u8 = 0x20;
    pub const RESP_URI: u8 = 0x21;
    pub const RESULTS: u8 = 0x22;
    pub const SEARCH: u8 = 0x23;
    pub const SEQUENCE: u8 = 0x24;
    pub const SESSION_ID: u8 = 0x25;
    pub const SFT_DEL: u8 = 0x26;
    pub const SOURCE: u8 = 0x27;
    pub const SOURCE_REF: u8 = 0x28;
    pub const STATUS: u8 = 0x29;
    pub const SYNC: u8 = 0x2A;
    pub const SYNC_BODY: u8 = 0x2B;
    pub const SYNC_HDR: u8 = 0x2C;
    pub const SYNC_ML: u8 = 0x2D;
    pub const TARGET: u8 = 0x2E;
    pub const TARGET_REF: u8 = 0x2F;
    pub const VER_DTD: u8 = 0x31;
    pub const VER_PROTO: u8 = 0x32;
    pub const NUMBER_OF_CHANGES: u8 = 0x33;
    pub const MORE_DATA: u8 = 0x34;
    pub const FIELD: u8 = 0x35;
    pub const FILTER: u8 = 0x36;
    pub const RECORD: u8 = 0x37;
    pub const FILTER_TYPE: u8 = 0x38;
    pub const SOURCE_PARENT: u8 = 0x39;
    pub const TARGET_PARENT: u8 = 0x3A;
    pub const MOVE: u8 = 0x3B;
    pub const CORRELATOR: u8 = 0x3C;

    /// Element names by token (0x05..=0x3C), for unknown-command names.
    pub const NAMES: [&str; 56] = [
        "Add",
        "Alert",
        "Archive",
        "Atomic",
        "Chal",
        "Cmd",
        "CmdID",
        "CmdRef",
        "Copy",
        "Cred",
        "Data",
        "Delete",
        "Exec",
        "Final",
        "Get",
        "Item",
        "Lang",
        "LocName",
        "LocURI",
        "Map",
        "MapItem",
        "Meta",
        "MsgID",
        "MsgRef",
        "NoResp",
        "NoResults",
        "Put",
        "Replace",
        "RespURI",
        "Results",
        "Search",
        "Sequence",
        "SessionID",
        "SftDel",
        "Source",
        "SourceRef",
        "Status",
        "Sync",
        "SyncBody",
        "SyncHdr",
        "SyncML",
        "Target",
        "TargetRef",
        "Reserved",
        "VerDTD",
        "VerProto",
        "NumberOfChanges",
        "MoreData",
        "Field",
        "Filter",
        "Record",
        "FilterType",
        "SourceParent",
        "TargetParent",
        "Move",
        "Correlator",
    ];

    /// The element name of a code page 0 token, if it has one.
    pub fn name(id: u8) -> Option<&'static str> {
        NAMES.get(usize::from(id.checked_sub(0x05)?)).copied()
    }
}

/// Code page 1 of a SyncML document: MetInf.
pub(crate) mod metinf {
    pub const PAGE: u8 = 1;
    pub const ANCHOR: u8 = 0x05;
    pub const EMI: u8 = 0x06;
    pub const FORMAT: u8 = 0x07;
    pub const FREE_ID: u8 = 0x08;
    pub const FREE_MEM: u8 = 0x09;
    pub const LAST: u8 = 0x0A;
    pub const MARK: u8 = 0x0B;
    pub const MAX_MSG_SIZE: u8 = 0x0C;
    pub const MEM: u8 = 0x0D;
    pub const MET_INF: u8 = 0x0E;
    pub const NEXT: u8 = 0x0F;
    pub const NEXT_NONCE: u8 = 0x10;
    pub const SHARED_MEM: u8 = 0x11;
    pub const SIZE: u8 = 0x12;
    pub const TYPE: u8 = 0x13;
    pub const VERSION: u8 = 0x14;
    pub const MAX_OBJ_SIZE: u8 = 0x15;
    pub const FIELD_LEVEL: u8 = 0x16;
}

/// Code page 0 of a DevInf document.
pub(crate) mod devinf {
    pub const CT_CAP: u8 = 0x05;
    pub const CT_TYPE: u8 = 0x06;
    pub const DATA_STORE: u8 = 0x07;
    pub const DATA_TYPE: u8 = 0x08;
    pub const DEV_ID: u8 = 0x09;
    pub const DEV_INF: u8 = 0x0A;
    pub const DEV_TYP: u8 = 0x0B;
    pub const DISPLAY_NAME: u8 = 0x0C;
    pub const DS_MEM: u8 = 0x0D;
    pub const EXT: u8 = 0x0E;
    pub const FW_V: u8 = 0x0F;
    pub const HW_V: u8 = 0x10;
    pub const MAN: u8 = 0x11;
    pub const MAX_GUID_SIZE: u8 = 0x12;
    pub const MAX_ID: u8 = 0x13;
    pub const MAX_MEM: u8 = 0x14;
    pub const MOD: u8 = 0x15;
    pub const OEM: u8 = 0x16;
    pub const PARAM_NAME: u8 = 0x17;
    pub const PROP_NAME: u8 = 0x18;
    pub const RX: u8 = 0x19;
    pub const RX_PREF: u8 = 0x1A;
    pub const SHARED_MEM: u8 = 0x1B;
    /// `Size` (1.1) and `MaxSize` (1.2) share this token.
    pub const MAX_SIZE: u8 = 0x1C;
    pub const SOURCE_REF: u8 = 0x1D;
    pub const SW_V: u8 = 0x1E;
    pub const SYNC_CAP: u8 = 0x1F;
    pub const SYNC_TYPE: u8 = 0x20;
    pub const TX: u8 = 0x21;
    pub const TX_PREF: u8 = 0x22;
    pub const VAL_ENUM: u8 = 0x23;
    pub const VER_CT: u8 = 0x24;
    pub const VER_DTD: u8 = 0x25;
    pub const X_NAM: u8 = 0x26;
    pub const X_VAL: u8 = 0x27;
    pub const UTC: u8 = 0x28;
    pub const SUPPORT_NUMBER_OF_CHANGES: u8 = 0x29;
    pub const SUPPORT_LARGE_OBJS: u8 = 0x2A;
    pub const PROPERTY: u8 = 0x2B;
    pub const PROP_PARAM: u8 = 0x2C;
    pub const MAX_OCCUR: u8 = 0x2D;
    pub const NO_TRUNCATE: u8 = 0x2E;
    pub const FILTER_RX: u8 = 0x30;
    pub const FILTER_CAP: u8 = 0x31;
    pub const FILTER_KEYWORD: u8 = 0x32;
    pub const FIELD_LEVEL: u8 = 0x33;
    pub const SUPPORT_HIERARCHICAL_SYNC: u8 = 0x34;
}
