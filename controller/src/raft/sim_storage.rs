//! The simulator's storage fault model: what a crash keeps of the log (the
//! only store; the state machine is rebuilt from it on restart).

#![allow(clippy::field_reassign_with_default)]

use super::*;

impl Sim {
    pub(super) fn crash(&mut self, id: u64) {
        let node = self.node_mut(id);
        let unsynced = node.core.as_ref().map(|c| c.log().unsynced());
        node.core = None;
        node._status = None;
        node.incarnation += 1;
        node.outbox.0.lock().unwrap().clear();
        self.summary.crashes += 1;
        self.note(format!("controller {id} crashed"));
        // A dead process's connections close at once: its peers' streams
        // to it end within a moment.
        for other in (1..=NODES).filter(|&o| o != id) {
            let after = self.rng.u64(0..=30);
            self.schedule(
                after,
                Event::Lost {
                    node: other,
                    peer: id,
                },
            );
        }
        if let Some((segment, synced, len)) = unsynced {
            self.lose_unsynced_log(id, &segment, synced, len);
        }
    }

    /// The storage fault model for the log: of the bytes written after the
    /// last fdatasync, the disk kept all, none, or a prefix whose end is
    /// torn (overwritten with garbage). Synced bytes are never touched.
    pub(super) fn lose_unsynced_log(&mut self, id: u64, segment: &std::path::Path, synced: u64, len: u64) {
        if len == synced {
            return;
        }
        let unsynced = len - synced;
        let (kept, torn) = match self.rng.u8(0..4) {
            0 => (unsynced, 0),
            1 => (0, 0),
            _ => {
                let kept = self.rng.u64(1..=unsynced);
                (kept, self.rng.u64(1..=kept.min(64)))
            }
        };
        let mut bytes = std::fs::read(segment).expect("reading the crashed segment");
        let size = bytes.len();
        bytes.truncate((synced + kept) as usize);
        let end = bytes.len();
        for byte in &mut bytes[end - torn as usize..] {
            *byte = self.rng.u8(..);
        }
        // The preallocated zeros after it survive, or the file's size does
        // not (a filesystem that lost the extension).
        if self.rng.bool() {
            bytes.resize(size, 0);
        }
        std::fs::write(segment, &bytes).expect("writing the crashed segment");
        self.summary.lost_log_bytes += unsynced - kept + torn;
        self.note(format!(
            "controller {id}: the crash kept {kept} of {unsynced} unsynced log bytes, {torn} of them torn"
        ));
    }
}
