//! Building the server's reply message: CmdIDs, Status commands, and the
//! split between responses (Status/Results, in the order of the commands they
//! answer) and the server's own new commands.

use std::borrow::Cow;

use crate::model::{
    Alert, Anchor, Command, Data, Encoding, Item, Location, Meta, Results, Status, SyncHdr, SyncMl,
};

/// A reply under construction.
#[derive(Debug, Default)]
pub struct Reply {
    /// Header of the reply.
    pub hdr: SyncHdr<'static>,
    /// Status and Results commands, in the order of what they answer.
    pub responses: Vec<Command<'static>>,
    /// The server's own commands (Alert, Sync, Get, Put).
    pub commands: Vec<Command<'static>>,
    /// Next CmdID.
    next_cmd_id: u64,
}

/// Owned text helper.
pub fn t(s: impl Into<String>) -> Cow<'static, str> {
    Cow::Owned(s.into())
}

impl Reply {
    /// A reply with the given header.
    pub fn new(hdr: SyncHdr<'static>) -> Reply {
        Reply { hdr, responses: Vec::new(), commands: Vec::new(), next_cmd_id: 1 }
    }

    /// An empty reply of a session-less answer to `msg` (a challenge, a busy
    /// server): its version, SessionID, MsgID 1 and the message's addresses
    /// swapped.
    pub fn answering(msg: &SyncMl<'_>) -> Reply {
        let version = msg.version().unwrap_or(crate::model::Version::V1_2);
        Reply::new(SyncHdr {
            ver_dtd: t(version.ver_dtd()),
            ver_proto: t(version.ver_proto()),
            session_id: t(msg.hdr.session_id.trim()),
            msg_id: t("1"),
            target: Location::uri(t(msg.hdr.source.loc_uri.trim())),
            source: Location::uri(t(msg.hdr.target.loc_uri.trim())),
            ..Default::default()
        })
    }

    /// Allocates the next CmdID.
    pub fn cmd_id(&mut self) -> Cow<'static, str> {
        let id = self.next_cmd_id;
        self.next_cmd_id += 1;
        t(id.to_string())
    }

    /// Numbers the commands 1, 2, ... in message order (after commands were
    /// moved between messages). Only for replies without Sync: the ids of
    /// the items inside a Sync are recorded elsewhere when they are made.
    pub fn renumber(&mut self) {
        let mut id = 0u64;
        for cmd in self.responses.iter_mut().chain(self.commands.iter_mut()) {
            id += 1;
            *cmd.cmd_id_mut() = t(id.to_string());
        }
        self.next_cmd_id = id + 1;
    }

    /// Appends a Status and returns it for further decoration.
    #[allow(clippy::too_many_arguments)]
    pub fn status(
        &mut self,
        msg_ref: &str,
        cmd_ref: &str,
        cmd: &str,
        target_ref: Option<&str>,
        source_ref: Option<&str>,
        code: u16,
    ) -> &mut Status<'static> {
        let st = Status {
            cmd_id: self.cmd_id(),
            ..Status::answer(msg_ref, cmd_ref, cmd, target_ref, source_ref, code)
        };
        self.responses.push(Command::Status(st));
        match self.responses.last_mut() {
            Some(Command::Status(s)) => s,
            // Just pushed a Status; this arm cannot be reached.
            _ => unreachable!("last response is the status just pushed"),
        }
    }

    /// Appends a Results command.
    pub fn results(&mut self, results: Results<'static>) {
        self.responses.push(Command::Results(results));
    }

    /// Appends a server command.
    pub fn command(&mut self, cmd: Command<'static>) {
        self.commands.push(cmd);
    }

    /// True if the reply holds no commands besides Status.
    pub fn only_statuses(&self) -> bool {
        self.commands.is_empty() && self.responses.iter().all(|c| matches!(c, Command::Status(_)))
    }

    /// Adds Alert 222 (next message) so a non-final reply is not status-only.
    pub fn alert_next_message(&mut self, own_uri: &str, peer_uri: &str) {
        let id = self.cmd_id();
        self.commands.push(Command::Alert(Alert {
            cmd_id: id,
            data: Some(t("222")),
            items: vec![Item {
                target: Some(Location::uri(t(peer_uri))),
                source: Some(Location::uri(t(own_uri))),
                ..Default::default()
            }],
            ..Default::default()
        }));
    }

    /// Assembles the message.
    pub fn into_message(self, final_: bool) -> SyncMl<'static> {
        let mut body = self.responses;
        body.extend(self.commands);
        SyncMl { hdr: self.hdr, body, final_ }
    }

    /// Encodes the message as it stands into `out` and keeps the reply
    /// usable (to measure its size before more is added). The commands are
    /// moved into the message and back, not copied.
    pub fn encode_into(&mut self, encoding: Encoding, final_: bool, out: &mut Vec<u8>) {
        let mut body = std::mem::take(&mut self.responses);
        let responses = body.len();
        body.append(&mut self.commands);
        let msg = SyncMl { hdr: std::mem::take(&mut self.hdr), body, final_ };
        crate::codec::encode(encoding, &msg, out);
        let SyncMl { hdr, mut body, .. } = msg;
        self.commands = body.split_off(responses);
        self.responses = body;
        self.hdr = hdr;
    }
}

/// A Status item carrying an anchor (the echo of the client's Next).
pub fn anchor_item(next: &str) -> Item<'static> {
    Item { data: Some(Data::Anchor(Anchor { last: None, next: Some(t(next)) })), ..Default::default() }
}

/// Meta with just a Type.
pub fn type_meta(ty: &str) -> Meta<'static> {
    Meta { type_: Some(t(ty)), ..Default::default() }
}
