//! Incarnations: telling a member's data dir apart from a wiped one that
//! came back under the same id.
//!
//! Every raft log gets a random 128-bit incarnation when it is created
//! (`INCARNATION`, written durably before `MEMBER`, so a log that exists
//! has one; a log of an earlier rpool gets one on its first open). Every
//! batch of raft messages a replica sends carries it (`RaftBatch.
//! incarnation`), with the table of incarnations the sender knows
//! (`RaftBatch.known`: while a leader leads, two followers never talk, so
//! each learns the other's through the leader). Each replica remembers,
//! durably (`PEERS`, rewritten atomically and synced before the first
//! message of a new peer is stepped), the first incarnation it has seen or
//! been told for each peer id, and never replaces it. A batch from a
//! known id with another incarnation is refused before any of its messages
//! reaches raft-rs, and the sender is told ([`Refusal`]); it then marks its
//! log damaged and stops (exit 65). So a replica that lost its data and
//! restarts under its old id never votes, never acknowledges an entry and
//! never counts toward a quorum, whoever leads.
//!
//! Why each replica keeps its own record rather than replicating it
//! through a Raft command: the check must hold while there is no leader
//! (a wiped replica's first messages are pre-votes; the interesting case
//! is the leader itself being wiped), and a record that exists only once
//! committed would leave a window after every restart where a peer does
//! not know it yet. A local record is known the moment the peer first
//! spoke (or the leader passed it on), needs no state-machine change and
//! no new command. What it cannot do: a peer that never heard of the
//! member's earlier life, directly or through another (the member was
//! wiped before its first batch reached anyone who passed it on), takes
//! the new life as the first one. etcd has the same limit with its
//! member ids (a member's identity is only as good as what peers saw).
//!
//! Legitimate new incarnations: a new member (`rpoolctl controller add`,
//! a new id: nobody knows it); the documented replacement (wipe, start
//! under a NEW id); a group restored from a backup (`replica::restore`
//! writes every data dir afresh: new incarnations and no peer records on
//! all of them at once). A member that was removed is forgotten when its
//! removal is applied, so its id may be added again with an empty dir.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use ring::rand::{SecureRandom as _, SystemRandom};

use super::log_store::LogError;
use super::wal;

/// File holding this log's incarnation (32 hex digits).
pub const INCARNATION_FILE: &str = "INCARNATION";
/// File holding the incarnation seen for each peer (`ID HEX` per line).
pub const PEERS_FILE: &str = "PEERS";

/// Why a peer's messages were refused: its data is not the one this
/// replica knew under its id. The text goes back to the peer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub peer: u64,
    pub detail: String,
}

/// This replica's incarnation and the ones it has seen for its peers.
pub struct Incarnations {
    dir: PathBuf,
    id: u64,
    own: u128,
    peers: Mutex<BTreeMap<u64, u128>>,
}

/// A fresh random incarnation (never 0: 0 means "none sent").
pub fn random() -> u128 {
    let mut bytes = [0u8; 16];
    SystemRandom::new()
        .fill(&mut bytes)
        .expect("system random source");
    u128::from_be_bytes(bytes).max(1)
}

/// Writes a fresh incarnation into `dir` (a log being created).
pub fn create(dir: &Path) -> Result<u128, LogError> {
    let own = random();
    wal::write_atomic(dir, INCARNATION_FILE, format!("{own:032x}\n").as_bytes())?;
    Ok(own)
}

/// The wire form of an incarnation (16 bytes, big-endian); empty for none.
pub fn to_wire(incarnation: u128) -> Vec<u8> {
    if incarnation == 0 {
        Vec::new()
    } else {
        incarnation.to_be_bytes().to_vec()
    }
}

/// Reads an incarnation off the wire: `None` when the sender sent none (an
/// earlier rpool), an error text when it is malformed.
pub fn from_wire(bytes: &[u8]) -> Result<Option<u128>, String> {
    match bytes.len() {
        0 => Ok(None),
        16 => Ok(Some(u128::from_be_bytes(bytes.try_into().expect("16 bytes")))),
        n => Err(format!("incarnation must be 0 or 16 bytes, got {n}")),
    }
}

impl Incarnations {
    /// Reads the log's incarnation (creating one for a log of an earlier
    /// rpool, which had none) and the peers' from `dir`, an opened log.
    pub fn open(dir: &Path, id: u64) -> Result<Incarnations, LogError> {
        let damaged = |path: PathBuf, detail: String| LogError::Damaged { path, detail };
        let own_path = dir.join(INCARNATION_FILE);
        let own = match std::fs::read_to_string(&own_path) {
            Ok(text) => u128::from_str_radix(text.trim(), 16)
                .ok()
                .filter(|v| *v != 0 && text.trim().len() == 32)
                .ok_or_else(|| damaged(own_path.clone(), format!("not an incarnation: {:?}", text.trim())))?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => create(dir)?,
            Err(e) => return Err(wal::io(&own_path, e)),
        };
        let peers_path = dir.join(PEERS_FILE);
        let mut peers = BTreeMap::new();
        match std::fs::read_to_string(&peers_path) {
            Ok(text) => {
                for line in text.lines().filter(|l| !l.trim().is_empty()) {
                    let parsed = line.split_once(' ').and_then(|(id, hex)| {
                        Some((
                            id.parse::<u64>().ok()?,
                            u128::from_str_radix(hex.trim(), 16).ok()?,
                        ))
                    });
                    let (id, incarnation) = parsed.ok_or_else(|| {
                        damaged(peers_path.clone(), format!("not `ID INCARNATION`: {line:?}"))
                    })?;
                    peers.insert(id, incarnation);
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(wal::io(&peers_path, e)),
        }
        Ok(Incarnations {
            dir: dir.to_owned(),
            id,
            own,
            peers: Mutex::new(peers),
        })
    }

    /// This replica's incarnation.
    pub fn own(&self) -> u128 {
        self.own
    }

    /// The incarnation recorded for `peer`, if any.
    pub fn known(&self, peer: u64) -> Option<u128> {
        self.lock().get(&peer).copied()
    }

    /// Every incarnation this replica knows, its own included: sent with
    /// each batch (`RaftBatch.known`).
    pub fn table(&self) -> Vec<(u64, u128)> {
        let mut table: Vec<(u64, u128)> = self.lock().iter().map(|(id, inc)| (*id, *inc)).collect();
        table.push((self.id, self.own));
        table
    }

    /// Admits a batch from `peer` carrying `incarnation` (`None`: an
    /// earlier rpool that sends none; admitted, nothing recorded) and the
    /// table the peer knows (`known`). The first incarnation seen for a
    /// peer is recorded durably before this returns; another one than
    /// recorded is refused. Once admitted, the ids in `known` this replica
    /// did not know are recorded too (what it knew stays).
    pub fn admit(
        &self,
        peer: u64,
        incarnation: Option<u128>,
        known: &[(u64, u128)],
    ) -> Result<(), AdmitError> {
        let Some(incarnation) = incarnation else {
            return Ok(());
        };
        let mut peers = self.lock();
        let learnt: Vec<(u64, u128)> = known
            .iter()
            .filter(|(id, inc)| *id != self.id && *id != peer && *inc != 0 && !peers.contains_key(id))
            .copied()
            .collect();
        match peers.get(&peer) {
            Some(known) if *known == incarnation => {
                if learnt.is_empty() {
                    return Ok(());
                }
                self.record(&mut peers, &learnt).map_err(AdmitError::Io)
            }
            Some(known) => Err(AdmitError::Refused(Refusal {
                peer,
                detail: format!(
                    "controller {peer} came back with data incarnation {incarnation:032x}, but its peers \
                     knew it as {known:032x}: its data dir was wiped or lost and it restarted under its old id"
                ),
            })),
            None => {
                let mut new = learnt;
                new.push((peer, incarnation));
                self.record(&mut peers, &new).map_err(AdmitError::Io)
            }
        }
    }

    /// Records `new` durably (all or nothing).
    fn record(&self, peers: &mut BTreeMap<u64, u128>, new: &[(u64, u128)]) -> Result<(), LogError> {
        for (id, inc) in new {
            peers.insert(*id, *inc);
        }
        if let Err(e) = self.write(peers) {
            for (id, _) in new {
                peers.remove(id);
            }
            return Err(e);
        }
        for (peer, inc) in new {
            tracing::info!(peer, incarnation = %format!("{inc:032x}"), "recorded a peer's data incarnation");
        }
        Ok(())
    }

    /// Forgets `peer` (removed from the group): its id may be added again.
    pub fn forget(&self, peer: u64) -> Result<(), LogError> {
        let mut peers = self.lock();
        if peers.remove(&peer).is_some() {
            self.write(&peers)?;
        }
        Ok(())
    }

    fn write(&self, peers: &BTreeMap<u64, u128>) -> Result<(), LogError> {
        let text: String = peers
            .iter()
            .map(|(id, inc)| format!("{id} {inc:032x}\n"))
            .collect();
        wal::write_atomic(&self.dir, PEERS_FILE, text.as_bytes())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<u64, u128>> {
        self.peers.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Why [`Incarnations::admit`] did not admit a batch.
#[derive(Debug, thiserror::Error)]
pub enum AdmitError {
    /// The peer is not the one known under its id: tell it.
    #[error("{}", .0.detail)]
    Refused(Refusal),
    /// The first record of a peer could not be written: admit nothing.
    #[error(transparent)]
    Io(LogError),
}

/// What a replica that was refused stops with: its log is marked damaged
/// by the caller.
pub fn refused_detail(refusal: &Refusal) -> String {
    format!(
        "controller {} refused this replica's raft messages: {}",
        refusal.peer, refusal.detail
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_incarnation_of_a_peer_is_kept_across_reopen_and_another_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let first = Incarnations::open(dir.path(), 1).unwrap();
        let own = first.own();
        assert_ne!(own, 0);
        first.admit(2, Some(7), &[]).unwrap();
        first.admit(2, Some(7), &[]).unwrap();
        first.admit(3, None, &[]).unwrap();
        assert_eq!(first.known(3), None, "an earlier rpool's batch records nothing");
        drop(first);
        let again = Incarnations::open(dir.path(), 1).unwrap();
        assert_eq!(again.own(), own, "the own incarnation is durable");
        assert_eq!(again.known(2), Some(7));
        match again.admit(2, Some(8), &[]) {
            Err(AdmitError::Refused(r)) => {
                assert_eq!(r.peer, 2);
                assert!(r.detail.contains("wiped or lost"), "{}", r.detail);
            }
            other => panic!("expected a refusal, got {other:?}"),
        }
        // A removed member is forgotten: its id may come back with new data.
        again.forget(2).unwrap();
        again.admit(2, Some(8), &[]).unwrap();
        assert_eq!(Incarnations::open(dir.path(), 1).unwrap().known(2), Some(8));
    }

    #[test]
    fn a_peer_heard_of_only_through_another_is_known_and_what_was_known_stays() {
        let dir = tempfile::tempdir().unwrap();
        let follower = Incarnations::open(dir.path(), 3).unwrap();
        // The leader (1) tells what it knows: 2 (never heard here), and a
        // wrong value for this replica itself, which is ignored.
        follower.admit(1, Some(11), &[(1, 11), (2, 22), (3, 99)]).unwrap();
        assert_eq!(follower.known(2), Some(22));
        assert_eq!(follower.known(3), None);
        // A later claim about 2 does not replace what was known.
        follower.admit(1, Some(11), &[(2, 23)]).unwrap();
        assert_eq!(follower.known(2), Some(22));
        // 2, wiped, comes back with another incarnation: refused, although
        // this replica never heard from it directly.
        assert!(matches!(
            follower.admit(2, Some(23), &[]),
            Err(AdmitError::Refused(_))
        ));
        assert_eq!(
            Incarnations::open(dir.path(), 3).unwrap().known(2),
            Some(22),
            "durable"
        );
        let table = follower.table();
        assert!(
            table.contains(&(3, follower.own())) && table.contains(&(2, 22)),
            "{table:?}"
        );
    }

    #[test]
    fn malformed_files_and_wire_values_are_named() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(PEERS_FILE), "2 zz\n").unwrap();
        let err = Incarnations::open(dir.path(), 1).err().unwrap().to_string();
        assert!(err.contains(PEERS_FILE), "{err}");
        std::fs::write(dir.path().join(INCARNATION_FILE), "12\n").unwrap();
        let err = Incarnations::open(dir.path(), 1).err().unwrap().to_string();
        assert!(err.contains(INCARNATION_FILE), "{err}");
        assert_eq!(from_wire(&[]), Ok(None));
        assert_eq!(from_wire(&to_wire(5)), Ok(Some(5)));
        assert!(from_wire(&[1, 2, 3]).unwrap_err().contains("16 bytes"));
    }
}
