//! Helpers shared by the round-trip fuzz targets and tests/fuzz_regressions.rs.

use shardsync::model::{Command, SyncMl};

/// The message without `Command::Unknown` (at any nesting level): what an
/// encoder writes, since unknown commands are only kept for the engine.
pub fn without_unknown(mut m: SyncMl<'_>) -> SyncMl<'_> {
    fn strip(cmds: &mut Vec<Command<'_>>) {
        cmds.retain(|c| !matches!(c, Command::Unknown(_)));
        for c in cmds {
            match c {
                Command::Sync(s) => strip(&mut s.commands),
                Command::Atomic(k) | Command::Sequence(k) => strip(&mut k.commands),
                _ => {}
            }
        }
    }
    strip(&mut m.body);
    m
}
