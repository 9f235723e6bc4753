//! The simulator's storage fault model: what a crash keeps of the log
//! and of the state store.

#![allow(clippy::field_reassign_with_default)]

use super::*;

impl Sim {
    pub(super) fn crash(&mut self, id: u64) {
        let node = self.node_mut(id);
        let unsynced = node.core.as_ref().map(|c| c.log().unsynced());
        // Every sled handle lives in the core: dropping it releases the
        // directory (sled flushes on drop).
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
        self.lose_unsynced_state(id);
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
        bytes.truncate((synced + kept) as usize);
        let end = bytes.len();
        for byte in &mut bytes[end - torn as usize..] {
            *byte = self.rng.u8(..);
        }
        std::fs::write(segment, &bytes).expect("writing the crashed segment");
        self.summary.lost_log_bytes += unsynced - kept + torn;
        self.note(format!(
            "controller {id}: the crash kept {kept} of {unsynced} unsynced log bytes, {torn} of them torn"
        ));
    }

    /// The storage fault model for the state store: half of the crashes
    /// lose everything sled wrote since the state was last synced (the
    /// copy taken then, or nothing before the first sync).
    pub(super) fn lose_unsynced_state(&mut self, id: u64) {
        if !self.rng.bool() {
            return;
        }
        let dir = self.node(id).dir.clone();
        let (state, synced) = (dir.join("state"), dir.join("state.synced"));
        let _ = std::fs::remove_dir_all(&state);
        if synced.exists() {
            copy_dir(&synced, &state).expect("restoring the synced state copy");
        }
        self.summary.state_rollbacks += 1;
        self.note(format!("controller {id}: the crash lost sled's unsynced writes"));
    }

    /// After a `Ready` cycle: if the log was compacted or a snapshot
    /// installed, the state store was just synced: copy it.
    pub(super) fn note_state_sync(&mut self, id: u64) {
        let Some(core) = self.node(id).core.as_ref() else {
            return;
        };
        let index = core.log().snapshot_index();
        if index == self.node(id).synced_snapshot {
            return;
        }
        let dir = self.node(id).dir.clone();
        let copy = dir.join("state.synced");
        let _ = std::fs::remove_dir_all(&copy);
        copy_dir(&dir.join("state"), &copy).expect("copying the synced state");
        self.node_mut(id).synced_snapshot = index;
    }
}

pub(super) fn copy_dir(from: &std::path::Path, to: &std::path::Path) -> std::io::Result<()> {
    std::fs::create_dir_all(to)?;
    for item in std::fs::read_dir(from)? {
        let item = item?;
        let target = to.join(item.file_name());
        if item.file_type()?.is_dir() {
            copy_dir(&item.path(), &target)?;
        } else {
            std::fs::copy(item.path(), target)?;
        }
    }
    Ok(())
}
