//! The simulator's invariant checks (see the `sim` module header) and
//! the descriptions a failure report prints.

#![allow(clippy::field_reassign_with_default)]

use super::*;

impl Sim {
    /// Checks what controller `id` shows and what its state machine applied.
    pub(super) fn observe(&mut self, id: u64) -> Result<(), String> {
        let (term, leader) = {
            let raft = &self.node(id).core.as_ref().expect("observed while up").raw().raft;
            (raft.term, raft.state == StateRole::Leader)
        };
        self.summary.max_term = self.summary.max_term.max(term);
        if leader {
            let first = *self.leaders.entry(term).or_insert(id);
            if first != id {
                return Err(format!(
                    "two leaders in term {term}: controllers {first} and {id}"
                ));
            }
        }
        // The log up to the commit index.
        let core = self.node(id).core.as_ref().expect("observed while up");
        let raft = &core.raw().raft;
        let log = core.log();
        let commit = raft.raft_log.committed.min(log.last_index().unwrap_or(0));
        let from = (self.node(id).checked + 1).max(log.first_index().unwrap_or(1));
        let mut seen = Vec::new();
        if from <= commit {
            let entries = log
                .entries(from, commit + 1, None, GetEntriesContext::empty(false))
                .map_err(|e| format!("controller {id}: reading its log {from}..={commit}: {e}"))?;
            for entry in entries {
                let content = match entry.get_entry_type() {
                    EntryType::EntryNormal if entry.data.is_empty() => Content::Empty,
                    EntryType::EntryNormal => Content::Command(entry.data.to_vec()),
                    _ => {
                        let change = ConfChange::parse_from_bytes(&entry.data).map_err(|e| e.to_string())?;
                        Content::Conf(change.write_to_bytes().map_err(|e| e.to_string())?)
                    }
                };
                seen.push((entry.index, Some(entry.term), content));
            }
        }
        if commit > self.node(id).checked {
            self.node_mut(id).checked = commit;
        }
        for (index, term, content) in seen {
            self.committed_at(id, index, term, content)?;
        }
        let applied: Vec<Applying> = std::mem::take(&mut *self.seen.lock().unwrap());
        for applying in applied {
            if let Some(content) = applying.content {
                self.committed_at(applying.node, applying.index, None, content)?;
            }
            match self.states.get(&applying.index) {
                None => {
                    self.states.insert(applying.index, applying.state);
                }
                Some(first) if *first == applying.state => {}
                Some(first) => {
                    return Err(format!(
                        "controller {} at applied index {} holds {:?}, another replica held {:?}",
                        applying.node, applying.index, applying.state, first
                    ));
                }
            }
        }
        Ok(())
    }

    pub(super) fn committed_at(
        &mut self,
        node: u64,
        index: u64,
        term: Option<u64>,
        content: Content,
    ) -> Result<(), String> {
        match self.committed.get_mut(&index) {
            None => {
                self.committed.insert(index, Committed { term, content });
            }
            Some(first) => {
                if first.content != content || (term.is_some() && first.term.is_some() && first.term != term)
                {
                    return Err(format!(
                        "committed entry {index} changed: first (term {:?}) {}, now at controller {node} (term {:?}) {}",
                        first.term,
                        describe(&first.content),
                        term,
                        describe(&content)
                    ));
                }
                if first.term.is_none() {
                    first.term = term;
                }
            }
        }
        Ok(())
    }

    /// Collects the answers clients got.
    pub(super) fn poll_calls(&mut self) -> Result<(), String> {
        let mut still = Vec::with_capacity(self.calls.len());
        for mut call in std::mem::take(&mut self.calls) {
            match &mut call {
                Call::Write { node, data, answer } => match answer.try_recv() {
                    Err(oneshot::error::TryRecvError::Empty) => {
                        still.push(call);
                        continue;
                    }
                    Err(oneshot::error::TryRecvError::Closed) => self.summary.unknown += 1,
                    Ok(Ok((index, _outcome))) => {
                        let found = self.committed.get(&index).map(|c| &c.content);
                        if found != Some(&Content::Command(data.clone())) {
                            return Err(format!(
                                "controller {node} acknowledged {} at index {index}, but the entry committed there is {}",
                                describe(&Content::Command(data.clone())),
                                found.map_or("unknown".to_owned(), describe)
                            ));
                        }
                        self.summary.acked += 1;
                        self.max_acked = self.max_acked.max(index);
                        self.acked.push((index, std::mem::take(data)));
                    }
                    Ok(Err(SubmitError::Dropped)) => {
                        if self.verbose {
                            eprintln!("t={}ms controller {node} answered Dropped", self.now);
                        }
                        self.summary.dropped += 1;
                        self.dropped.push((*node, self.now, std::mem::take(data)));
                    }
                    Ok(Err(_)) => self.summary.unknown += 1,
                },
                Call::Read { node, floor, answer } => match answer.try_recv() {
                    Err(oneshot::error::TryRecvError::Empty) => {
                        still.push(call);
                        continue;
                    }
                    Ok(Ok(index)) => {
                        if index < *floor {
                            return Err(format!(
                                "controller {node} answered a read at index {index}, but index {floor} \
                                 was acknowledged before the read was issued"
                            ));
                        }
                        self.summary.reads += 1;
                    }
                    _ => {}
                },
            }
        }
        still.append(&mut self.calls);
        self.calls = still;
        Ok(())
    }

    /// Replays the committed log from scratch: every replica's final state
    /// and every state seen at an index must match it; acknowledged writes
    /// are in that log at their index, dropped ones nowhere.
    pub(super) fn final_checks(&mut self) -> Result<(), String> {
        let last = *self.committed.keys().next_back().unwrap_or(&0);
        let mut model = State::new();
        for index in 1..=last {
            let Some(entry) = self.committed.get(&index) else {
                return Err(format!(
                    "no replica ever showed committed entry {index} (of {last})"
                ));
            };
            match &entry.content {
                Content::Command(data) => match serde_json::from_slice::<Command>(data) {
                    Ok(command) => {
                        if model.apply(index, &command).is_err() {
                            model.skip(index);
                        }
                    }
                    Err(_) => model.skip(index),
                },
                Content::Empty | Content::Conf(_) => model.skip(index),
            }
            if let Some(state) = self.states.get(&index)
                && *state != model
            {
                return Err(format!(
                    "the state at index {index} is not the replay of the committed log: {state:?} vs {model:?}"
                ));
            }
        }
        for node in self.nodes.iter().filter(|n| !n.retired) {
            let core = node.core.as_ref().expect("all up at the end");
            let state = core.machine().state.read().unwrap().clone();
            if state.applied_index() != last || state != model {
                return Err(format!(
                    "controller {} ended at {} with a state other than the replay of the committed log (to {last})",
                    node.id,
                    state.applied_index()
                ));
            }
        }
        for (index, data) in &self.acked {
            if self.committed.get(index).map(|c| &c.content) != Some(&Content::Command(data.clone())) {
                return Err(format!("acknowledged write at {index} is not in the final log"));
            }
        }
        let commands: BTreeSet<&Vec<u8>> = self
            .committed
            .values()
            .filter_map(|c| match &c.content {
                Content::Command(data) => Some(data),
                _ => None,
            })
            .collect();
        for (node, at, data) in &self.dropped {
            if commands.contains(data) {
                return Err(format!(
                    "controller {node} answered {} with Dropped at t={at}ms, but it committed",
                    describe(&Content::Command(data.clone()))
                ));
            }
        }
        Ok(())
    }

    pub(super) fn digest(&self) -> u64 {
        use std::hash::{Hash, Hasher};
        // Fixed keys: the digest must not change between runs.
        let mut hasher = std::hash::BuildHasher::build_hasher(&std::hash::BuildHasherDefault::<
            std::collections::hash_map::DefaultHasher,
        >::default());
        for (index, entry) in &self.committed {
            index.hash(&mut hasher);
            entry.term.hash(&mut hasher);
            format!("{:?}", entry.content).hash(&mut hasher);
        }
        self.leaders.hash(&mut hasher);
        hasher.finish()
    }

    pub(super) fn describe_nodes(&self) -> String {
        self.nodes
            .iter()
            .map(|n| match &n.core {
                None if n.retired => format!("[{} retired (wiped, refused)]", n.id),
                None => format!("[{} down]", n.id),
                Some(c) => {
                    let raft = &c.raw().raft;
                    format!(
                        "[{} {:?} term {} leader {} commit {} applied {}]",
                        n.id,
                        raft.state,
                        raft.term,
                        raft.leader_id,
                        raft.raft_log.committed,
                        c.machine().applied_index()
                    )
                }
            })
            .collect::<Vec<_>>()
            .join(" ")
    }
}

pub(super) fn describe(content: &Content) -> String {
    match content {
        Content::Empty => "an empty entry".to_owned(),
        Content::Command(data) => format!("command {}", String::from_utf8_lossy(data)),
        Content::Conf(_) => "a membership change".to_owned(),
    }
}

pub(super) fn describe_event(event: &Event) -> String {
    match event {
        Event::Deliver { message: m, .. } => format!(
            "deliver {:?} {} -> {} term {} index {} commit {} entries {}",
            m.get_msg_type(),
            m.from,
            m.to,
            m.term,
            m.index,
            m.commit,
            m.entries.len()
        ),
        other => format!("{other:?}"),
    }
}
