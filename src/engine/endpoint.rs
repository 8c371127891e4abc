//! Who may enter a session: the entry rules, with no I/O.
//!
//! A session key (XXH64 of device id and SessionID) routes; it is not a
//! secret, since anyone can compute it. What binds a session to the client
//! that opened it is the session's [`SessionSecret`]: 128 random bits carried
//! in the RespURI token (`?s=<key>.<secret>`). [`admit`] decides, from the
//! session found under the key (if any) and what the request presents, what
//! may happen — the way quinn-proto's `Endpoint::handle` admits datagrams
//! before any connection sees them:
//!
//! | session under the key | request presents | decision |
//! |---|---|---|
//! | none | MsgID 1, or credentials | [`Admission::Start`] a new session (it must authenticate) |
//! | none | anything else | refused: unknown session (404) |
//! | another device id / SessionID (a key collision) | anything | refused (404) |
//! | yes | a wrong secret | refused (404) |
//! | yes | the secret | resend, continue, or restart by MsgID |
//! | yes | no secret | the same, but only once the message's credentials verify for the session's user ([`Admission::Prove`]) |
//!
//! A resend (the client repeats its last message because the reply was
//! lost) is recognised by the message itself — the same MsgID *and* the
//! same bytes — never by the MsgID alone: a new session under a recycled
//! SessionID starts over instead of getting an old reply. A restart (MsgID
//! lower than the last) begins a new session that replaces the old one only
//! if it authenticates as the same user (the caller checks that after the
//! engine ran), so nobody ends someone else's session.

use xxhash_rust::xxh64::xxh64;

use super::Session;
use crate::model::SyncMl;
pub use crate::routing::SessionSecret;

/// What a request presents besides its message.
#[derive(Debug, Clone, Copy)]
pub struct Entry<'a> {
    /// The secret from the URL's session token, if it carried one.
    pub secret: Option<SessionSecret>,
    /// The raw request body (a resend must repeat it byte for byte).
    pub body: &'a [u8],
}

/// What a message may do with the session under its key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    /// No session: start a new one with this message.
    Start,
    /// The message repeats the session's last one: answer the stored reply.
    Resend,
    /// The message is the session's next one.
    Continue,
    /// The message starts over (a client restart, or a new session under a
    /// recycled SessionID): a new session, which replaces the old one only
    /// once it authenticated as the old one's user.
    Restart,
    /// The request did not present the session's secret: it may do `then`
    /// only if its credentials verify for the session's user; otherwise it
    /// gets a challenge and nothing of the session.
    Prove(Then),
    /// Refused: the request gets nothing of the session.
    Refuse(Refusal),
}

/// What a request that proves itself with credentials may then do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Then {
    /// Get the stored reply.
    Resend,
    /// Continue the session.
    Continue,
}

/// Why a request was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// No session under the key, and the message cannot start one.
    #[error("no such session")]
    Unknown,
    /// The token's secret is not the session's.
    #[error("wrong session secret")]
    WrongSecret,
    /// The session under the key belongs to another device id or SessionID
    /// (two pairs with the same 64-bit key).
    #[error("the session under this key has another device id or SessionID")]
    Collision,
    /// The MsgID skips messages the session never saw.
    #[error("messages of this session are missing")]
    Gap,
    /// The MsgID repeats the last one, but the message differs from it.
    #[error("MsgID repeats the last message with different content")]
    NotAResend,
    /// The MsgID is not a number.
    #[error("MsgID is not a number")]
    BadMsgId,
}

impl Refusal {
    /// Whether this refusal looks like someone probing for sessions (it
    /// counts against the client address's back-off). A message that
    /// repeats a MsgID with other content does too: a real client resends
    /// the same bytes.
    pub fn is_probe(self) -> bool {
        matches!(self, Refusal::Unknown | Refusal::WrongSecret | Refusal::Collision | Refusal::NotAResend)
    }
}

/// The entry rules (see the module doc): what `msg`, arriving with `entry`,
/// may do with `existing`, the live session under its key (cached or
/// stored), if any.
pub fn admit(existing: Option<&Session>, msg: &SyncMl<'_>, entry: &Entry<'_>) -> Admission {
    let msg_id: Option<u64> = msg.hdr.msg_id.trim().parse().ok();
    let Some(s) = existing else {
        return if msg_id == Some(1) || msg.hdr.cred.is_some() {
            Admission::Start
        } else {
            Admission::Refuse(Refusal::Unknown)
        };
    };
    if s.device_id != msg.hdr.source.loc_uri.trim() || s.session_id != msg.hdr.session_id.trim() {
        return Admission::Refuse(Refusal::Collision);
    }
    let proven = match &entry.secret {
        Some(secret) if secret.ct_eq(&s.secret) => true,
        Some(_) => return Admission::Refuse(Refusal::WrongSecret),
        None => false,
    };
    let Some(id) = msg_id else { return Admission::Refuse(Refusal::BadMsgId) };
    let last = s.last_msg_in;
    let gated = |then| if proven { then } else { Admission::Prove(to_then(then)) };
    if id == last && last > 0 {
        if !s.last_reply.is_empty() && s.body_digest(entry.body) == s.last_body_digest {
            return gated(Admission::Resend);
        }
        // Same MsgID, another message: MsgID 1 is a new session under a
        // recycled SessionID; anything else is a confused client.
        return if id == 1 { Admission::Restart } else { Admission::Refuse(Refusal::NotAResend) };
    }
    if id == last + 1 {
        return gated(Admission::Continue);
    }
    if id < last {
        return Admission::Restart;
    }
    Admission::Refuse(Refusal::Gap)
}

fn to_then(a: Admission) -> Then {
    match a {
        Admission::Resend => Then::Resend,
        _ => Then::Continue,
    }
}

impl Session {
    /// The session's secret (for the RespURI token).
    pub fn secret(&self) -> &SessionSecret {
        &self.secret
    }

    /// A digest of a request body, keyed with the session's secret (so a
    /// client cannot aim at it): what tells a resend from a new message.
    pub(super) fn body_digest(&self, body: &[u8]) -> u64 {
        let mut seed = [0u8; 8];
        seed.copy_from_slice(&self.secret.0[..8]);
        xxh64(body, u64::from_le_bytes(seed))
    }

    /// Records the body of the message just handled (see [`admit`]).
    pub fn set_last_body(&mut self, body: &[u8]) {
        self.last_body_digest = self.body_digest(body);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Encoding;

    fn msg(device: &str, sid: &str, msg_id: &str, cred: bool) -> String {
        let cred = if cred {
            "<Cred><Meta><Type xmlns='syncml:metinf'>syncml:auth-basic</Type></Meta><Data>dGVzdDp0ZXN0</Data></Cred>"
        } else {
            ""
        };
        format!(
            "<SyncML xmlns='SYNCML:SYNCML1.2'><SyncHdr><VerDTD>1.2</VerDTD><VerProto>SyncML/1.2</VerProto>\
             <SessionID>{sid}</SessionID><MsgID>{msg_id}</MsgID><Target><LocURI>http://x/sync</LocURI></Target>\
             <Source><LocURI>{device}</LocURI><LocName>test</LocName></Source>{cred}</SyncHdr>\
             <SyncBody><Final/></SyncBody></SyncML>"
        )
    }

    fn session_at(last: u64, body: &[u8]) -> Session {
        let text = msg("dev", "7", "1", true);
        let m = crate::codec::decode(Encoding::Xml, text.as_bytes()).unwrap();
        let mut s = Session::new(1, &m, Encoding::Xml, 0, SessionSecret([9; 16]));
        s.last_msg_in = last;
        s.last_reply = b"reply".to_vec();
        s.set_last_body(body);
        s
    }

    fn run(existing: Option<&Session>, text: &str, secret: Option<SessionSecret>) -> Admission {
        let m = crate::codec::decode(Encoding::Xml, text.as_bytes()).unwrap();
        admit(existing, &m, &Entry { secret, body: text.as_bytes() })
    }

    const RIGHT: Option<SessionSecret> = Some(SessionSecret([9; 16]));
    const WRONG: Option<SessionSecret> = Some(SessionSecret([8; 16]));

    #[test]
    fn without_a_session_only_a_first_message_or_credentials_start_one() {
        assert_eq!(run(None, &msg("dev", "7", "1", false), None), Admission::Start);
        assert_eq!(run(None, &msg("dev", "7", "2", true), None), Admission::Start);
        assert_eq!(run(None, &msg("dev", "7", "2", false), None), Admission::Refuse(Refusal::Unknown));
        assert_eq!(run(None, &msg("dev", "7", "3", false), RIGHT), Admission::Refuse(Refusal::Unknown));
        assert!(Refusal::Unknown.is_probe() && Refusal::WrongSecret.is_probe());
        assert!(!Refusal::Gap.is_probe());
    }

    #[test]
    fn the_secret_or_credentials_are_needed_to_continue() {
        let m2 = msg("dev", "7", "2", false);
        let s = session_at(1, b"first");
        assert_eq!(run(Some(&s), &m2, RIGHT), Admission::Continue);
        assert_eq!(run(Some(&s), &m2, WRONG), Admission::Refuse(Refusal::WrongSecret));
        assert_eq!(run(Some(&s), &m2, None), Admission::Prove(Then::Continue));
        // Another pair hashing to the same key never touches the session.
        assert_eq!(run(Some(&s), &msg("eve", "7", "2", false), RIGHT), Admission::Refuse(Refusal::Collision));
        assert_eq!(run(Some(&s), &msg("dev", "8", "2", false), RIGHT), Admission::Refuse(Refusal::Collision));
        // A gap: messages missing.
        assert_eq!(run(Some(&s), &msg("dev", "7", "4", false), RIGHT), Admission::Refuse(Refusal::Gap));
        assert_eq!(run(Some(&s), &msg("dev", "7", "x", false), RIGHT), Admission::Refuse(Refusal::BadMsgId));
    }

    #[test]
    fn a_resend_is_the_same_message_not_just_the_same_msg_id() {
        let m3 = msg("dev", "7", "3", false);
        let s = session_at(3, m3.as_bytes());
        assert_eq!(run(Some(&s), &m3, RIGHT), Admission::Resend);
        assert_eq!(run(Some(&s), &m3, None), Admission::Prove(Then::Resend));
        assert_eq!(run(Some(&s), &m3, WRONG), Admission::Refuse(Refusal::WrongSecret));
        // Same MsgID, other bytes: not a resend.
        let other = msg("dev", "7", "3", true);
        assert_eq!(run(Some(&s), &other, RIGHT), Admission::Refuse(Refusal::NotAResend));
        // A recycled SessionID: a new message 1 where an old session answered message 1.
        let old_first = msg("dev", "7", "1", false);
        let s1 = session_at(1, old_first.as_bytes());
        assert_eq!(run(Some(&s1), &old_first, None), Admission::Prove(Then::Resend));
        assert_eq!(run(Some(&s1), &msg("dev", "7", "1", true), None), Admission::Restart);
        // A lower MsgID restarts (the new session must still authenticate).
        assert_eq!(run(Some(&s), &msg("dev", "7", "1", false), None), Admission::Restart);
    }

    #[test]
    fn body_digests_depend_on_the_secret() {
        let a = session_at(1, b"x");
        let mut b = session_at(1, b"x");
        b.secret = SessionSecret([1; 16]);
        assert_ne!(a.body_digest(b"body"), b.body_digest(b"body"));
        assert_eq!(a.body_digest(b"body"), a.body_digest(b"body"));
    }
}
