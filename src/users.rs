//! Users and their credentials.
//!
//! A [`UserRecord`] never holds the clear password. It keeps exactly what
//! the two SyncML auth schemes need:
//! - `syncml:auth-md5` (DS 1.1/1.2) hashes `B64(MD5("user:password"))` with
//!   the nonce, so the server must keep that digest ([`md5_b64`]);
//! - `syncml:auth-basic` sends the password itself, which is checked against
//!   a slow argon2id hash ([`UserRecord::verify_basic`]).
//!
//! Argon2id parameters: m = 19 MiB, t = 2, p = 1 — the OWASP minimum
//! recommendation. One hash costs a few tens of milliseconds in an optimized
//! build; the parameters are stored in each PHC string, so they can be raised
//! later without invalidating existing hashes.

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};
use base64::Engine as _;
use md5::{Digest, Md5};

use crate::store::UserRecord;

/// Argon2 memory cost in KiB (19 MiB).
pub const ARGON2_M_KIB: u32 = 19 * 1024;
/// Argon2 iterations.
pub const ARGON2_T: u32 = 2;
/// Argon2 lanes.
pub const ARGON2_P: u32 = 1;

/// Longest accepted user name, in bytes.
pub const MAX_NAME_LEN: usize = 128;

/// Why a user name or password cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UserError {
    /// The name is empty, too long, or holds a character auth cannot carry.
    #[error("invalid user name {0:?}: use 1-128 printable characters without ':' or spaces")]
    InvalidName(String),
    /// The password is empty.
    #[error("the password must not be empty")]
    EmptyPassword,
    /// Hashing failed (bad parameters; should not happen).
    #[error("password hashing failed: {0}")]
    Hash(String),
}

/// Checks that `name` can be used as a SyncML user name.
///
/// `:` is refused because basic auth and the MD5 digest both join
/// `user:password` with it; whitespace and control characters because
/// clients and shells mangle them.
pub fn validate_name(name: &str) -> Result<(), UserError> {
    let ok = !name.is_empty()
        && name.len() <= MAX_NAME_LEN
        && name.chars().all(|c| !c.is_control() && !c.is_whitespace() && c != ':');
    if ok {
        Ok(())
    } else {
        Err(UserError::InvalidName(name.to_owned()))
    }
}

/// `B64(MD5("user:password"))`, the digest syncml:auth-md5 builds on.
pub fn md5_b64(user: &str, password: &str) -> String {
    let mut h = Md5::new();
    h.update(user.as_bytes());
    h.update(b":");
    h.update(password.as_bytes());
    base64::engine::general_purpose::STANDARD.encode(h.finalize())
}

fn argon2() -> Result<Argon2<'static>, UserError> {
    let params =
        Params::new(ARGON2_M_KIB, ARGON2_T, ARGON2_P, None).map_err(|e| UserError::Hash(e.to_string()))?;
    Ok(Argon2::new(Algorithm::Argon2id, Version::V0x13, params))
}

/// An argon2id PHC string for `password`, with a fresh random salt.
pub fn hash_password(password: &str) -> Result<String, UserError> {
    let salt_bytes: [u8; 16] = rand::random();
    let salt = SaltString::encode_b64(&salt_bytes).map_err(|e| UserError::Hash(e.to_string()))?;
    let hash =
        argon2()?.hash_password(password.as_bytes(), &salt).map_err(|e| UserError::Hash(e.to_string()))?;
    Ok(hash.to_string())
}

impl UserRecord {
    /// A record for `name` with `password`: its MD5 digest and an argon2id hash.
    pub fn new(name: &str, password: &str) -> Result<UserRecord, UserError> {
        validate_name(name)?;
        if password.is_empty() {
            return Err(UserError::EmptyPassword);
        }
        Ok(UserRecord {
            name: name.to_owned(),
            md5_b64: md5_b64(name, password),
            password_hash: hash_password(password)?,
        })
    }

    /// Checks a clear password (syncml:auth-basic) against the slow hash.
    ///
    /// This costs one argon2id evaluation (tens of milliseconds): callers on
    /// a shard should run it off the shard or cache the result per session.
    pub fn verify_basic(&self, password: &str) -> bool {
        // Verify with the parameters stored in the hash, not today's defaults.
        verify_phc(&self.password_hash, password)
    }

    /// Checks a clear password against the MD5 digest (cheap, constant time).
    pub fn verify_md5_digest(&self, password: &str) -> bool {
        let expected = md5_b64(&self.name, password);
        let (a, b) = (expected.as_bytes(), self.md5_b64.as_bytes());
        a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
    }
}

/// Checks syncml:auth-basic passwords against argon2id hashes on threads of
/// its own: one check costs tens of milliseconds of CPU, which must not stall
/// a shard (no blocking call on a shard). A shard awaits the verdict.
#[derive(Debug, Clone)]
pub struct PasswordCheck {
    tx: crossbeam_channel::Sender<CheckJob>,
}

#[derive(Debug)]
struct CheckJob {
    password: String,
    /// The user's PHC string; `None` for a user that does not exist (checked
    /// against a dummy hash, so the time taken does not tell).
    phc: Option<String>,
    reply: futures_channel::oneshot::Sender<bool>,
}

/// Why a password could not be checked.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CheckError {
    /// Too many checks are waiting (the client may retry later).
    #[error("too many password checks waiting")]
    Busy,
    /// The checking threads are gone.
    #[error("the password check threads stopped")]
    Stopped,
}

impl PasswordCheck {
    /// Starts `threads` checking threads with room for `queue` waiting
    /// checks; they end when the last handle is dropped.
    pub fn start(threads: usize, queue: usize) -> Result<PasswordCheck, std::io::Error> {
        let (tx, rx) = crossbeam_channel::bounded::<CheckJob>(queue.max(1));
        for i in 0..threads.max(1) {
            let rx = rx.clone();
            std::thread::Builder::new().name(format!("shardsync-pwcheck-{i}")).spawn(move || {
                let mut dummy: Option<String> = None;
                for job in rx {
                    let ok = match &job.phc {
                        Some(phc) => verify_phc(phc, &job.password),
                        None => {
                            let phc = dummy.get_or_insert_with(|| {
                                hash_password("shardsync unknown user").unwrap_or_default()
                            });
                            // Same work as for a real user; the verdict is no.
                            std::hint::black_box(verify_phc(phc, &job.password));
                            false
                        }
                    };
                    // The shard may have given up on the request; nothing to do then.
                    let _ = job.reply.send(ok);
                }
            })?;
        }
        Ok(PasswordCheck { tx })
    }

    /// A handle whose checks all fail with [`CheckError::Stopped`] (when no
    /// thread could be started).
    pub fn stopped() -> PasswordCheck {
        let (tx, _) = crossbeam_channel::bounded(1);
        PasswordCheck { tx }
    }

    /// Whether `password` matches `phc` (`None`: an unknown user, always false).
    pub async fn verify(&self, password: String, phc: Option<String>) -> Result<bool, CheckError> {
        let (reply, verdict) = futures_channel::oneshot::channel();
        self.tx.try_send(CheckJob { password, phc, reply }).map_err(|e| match e {
            crossbeam_channel::TrySendError::Full(_) => CheckError::Busy,
            crossbeam_channel::TrySendError::Disconnected(_) => CheckError::Stopped,
        })?;
        verdict.await.map_err(|_| CheckError::Stopped)
    }
}

/// Checks a clear password against a PHC string (its own parameters).
fn verify_phc(phc: &str, password: &str) -> bool {
    let Ok(parsed) = PasswordHash::new(phc) else { return false };
    Argon2::default().verify_password(password.as_bytes(), &parsed).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn md5_vector() {
        assert_eq!(md5_b64("alice", "secret"), "b2IgWJaLuQdX5sbteeXfgQ==");
    }

    #[test]
    fn record_holds_no_plaintext_and_verifies() {
        let u = UserRecord::new("alice", "secret").unwrap();
        assert_eq!(u.md5_b64, "b2IgWJaLuQdX5sbteeXfgQ==");
        assert!(u.password_hash.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"), "{}", u.password_hash);
        assert!(!u.password_hash.contains("secret"));
        assert!(u.verify_basic("secret"));
        assert!(!u.verify_basic("Secret"));
        assert!(u.verify_md5_digest("secret"));
        assert!(!u.verify_md5_digest("nope"));
        // Fresh salt each time.
        assert_ne!(UserRecord::new("alice", "secret").unwrap().password_hash, u.password_hash);
        let broken = UserRecord { password_hash: "garbage".into(), ..u };
        assert!(!broken.verify_basic("secret"));
    }

    #[test]
    fn password_checks_run_off_the_caller_and_unknown_users_always_fail() {
        let check = PasswordCheck::start(1, 4).unwrap();
        let u = UserRecord::new("alice", "secret").unwrap();
        let run = |pw: &str, phc: Option<String>| {
            futures_lite::future::block_on(check.verify(pw.to_string(), phc)).unwrap()
        };
        assert!(run("secret", Some(u.password_hash.clone())));
        assert!(!run("Secret", Some(u.password_hash.clone())));
        assert!(!run("shardsync unknown user", None));
        assert!(!run("secret", Some("not a phc string".into())));
    }

    #[test]
    fn names_are_validated() {
        assert!(validate_name("bob@example.org").is_ok());
        for bad in ["", "a:b", "a b", "a\nb", &"x".repeat(129)] {
            assert!(matches!(UserRecord::new(bad, "pw"), Err(UserError::InvalidName(_))), "{bad:?}");
        }
        assert_eq!(UserRecord::new("bob", ""), Err(UserError::EmptyPassword));
    }
}
