//! The production state machine and an outbox transport, instrumented
//! for the simulator.

#![allow(clippy::field_reassign_with_default)]

use super::*;
use crate::raft::node::MachineError;

/// One observation from inside a state machine.
pub(super) struct Applying {
    pub(super) node: u64,
    pub(super) index: u64,
    /// `None` for a snapshot restore.
    pub(super) content: Option<Content>,
    pub(super) state: State,
}

pub(super) type Observations = Arc<Mutex<Vec<Applying>>>;

/// The real [`Replicated`] state machine, reporting what it applies.
pub(super) struct Observed {
    pub(super) inner: Replicated,
    pub(super) state: Arc<RwLock<State>>,
    pub(super) node: u64,
    pub(super) seen: Observations,
}

impl Observed {
    fn record(&self, index: u64, content: Option<Content>) {
        let state = self.state.read().unwrap().clone();
        self.seen.lock().unwrap().push(Applying {
            node: self.node,
            index,
            content,
            state,
        });
    }
}

impl crate::raft::node::StateMachine for Observed {
    type Output = Applied;

    fn applied_index(&self) -> u64 {
        self.inner.applied_index()
    }

    fn apply(&mut self, index: u64, data: &[u8]) -> Result<Applied, MachineError> {
        let output = self.inner.apply(index, data)?;
        self.record(index, Some(Content::Command(data.to_vec())));
        Ok(output)
    }

    fn skip(&mut self, index: u64) -> Result<(), MachineError> {
        self.inner.skip(index)?;
        self.record(index, Some(Content::Empty));
        Ok(())
    }

    fn apply_conf_change(&mut self, index: u64, change: &ConfChange) -> Result<(), MachineError> {
        self.inner.apply_conf_change(index, change)?;
        let bytes = change.write_to_bytes().map_err(|e| e.to_string())?;
        self.record(index, Some(Content::Conf(bytes)));
        Ok(())
    }

    fn snapshot(&self) -> Vec<u8> {
        self.inner.snapshot()
    }

    fn restore(&mut self, index: u64, data: &[u8]) -> Result<(), MachineError> {
        self.inner.restore(index, data)?;
        self.record(index, None);
        Ok(())
    }
}

/// Collects what a core sends; the loop puts it on the simulated network.
#[derive(Default)]
pub(super) struct Outbox(pub(super) Mutex<Vec<Message>>);

impl Transport for Outbox {
    fn send(&self, messages: Vec<Message>) {
        self.0.lock().unwrap().extend(messages);
    }
}
