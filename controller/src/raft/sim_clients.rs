//! The simulated agents and admins: commands they propose, which
//! controller they ask, proposals and reads.

#![allow(clippy::field_reassign_with_default)]

use super::*;

impl Sim {
    /// An agent or admin command; every one is unique (its sequence number
    /// is in it), so an entry names its proposal.
    pub(super) fn command(&mut self) -> Command {
        let seq = self.next_command;
        self.next_command += 1;
        let host_id = format!("h{}", self.rng.u8(0..HOSTS));
        match self.rng.u8(0..12) {
            // Pool commands: most are refused (busy or unready hosts), which
            // still consumes an index; accepted ones change hosts, pools and
            // events together, which the reload checks must see on disk.
            10 => {
                let name = format!("p{}", self.rng.u8(0..2));
                let worker = format!("h{}", self.rng.u8(0..HOSTS));
                Command::CreatePool {
                    spec: crate::state::pool::PoolSpec {
                        name,
                        cores: 8,
                        memory_bytes: 8 << 30,
                        control_planes: 1,
                        kubernetes_version: "v1.32.0".to_owned(),
                        pod_network_cidr: "10.244.0.0/16".to_owned(),
                        service_cidr: "10.96.0.0/12".to_owned(),
                        vip: String::new(),
                        lb_range: String::new(),
                        ..Default::default()
                    },
                    control_planes: vec![host_id.clone()],
                    workers: vec![worker],
                    control_plane_endpoint: format!("{host_id}:6443"),
                    at_unix_ms: seq,
                }
            }
            11 => Command::DestroyPool {
                pool: format!("p{}", self.rng.u8(0..2)),
                at_unix_ms: seq,
            },
            0..=2 => Command::RegisterHost {
                facts: facts(&host_id, 8),
                host_id,
                agent_version: "0.1.0".to_owned(),
                at_unix_ms: seq,
            },
            3..=6 => Command::SetHostState {
                host_id,
                state: HostState::ALL[self.rng.usize(0..HostState::ALL.len())],
                reason: format!("simulated #{seq}"),
                at_unix_ms: seq,
            },
            _ => {
                let key = format!("k{}", self.rng.u8(0..4));
                let remove = if self.rng.bool() {
                    vec![format!("k{}", self.rng.u8(0..4))]
                } else {
                    Vec::new()
                };
                Command::SetHostLabels {
                    host_id,
                    set: BTreeMap::from([(key, "v".to_owned()), ("seq".to_owned(), seq.to_string())]),
                    remove,
                }
            }
        }
    }

    /// A client picks a controller: the leader half of the time (an admin
    /// that followed a redirect), any controller otherwise (an agent).
    pub(super) fn pick(&mut self) -> Option<u64> {
        let leader = self.leader();
        let id = match leader {
            Some(leader) if self.rng.bool() => leader,
            _ => self.rng.u64(1..=NODES),
        };
        self.is_up(id).then_some(id)
    }

    pub(super) fn propose(&mut self, id: u64) -> Result<(), String> {
        let command = self.command();
        let data = serde_json::to_vec(&command).expect("commands encode");
        let (reply, answer) = oneshot::channel();
        self.calls.push(Call::Write {
            node: id,
            data: data.clone(),
            answer,
        });
        self.input(id, Input::Propose { data, reply })
    }

    pub(super) fn read(&mut self, id: u64) -> Result<(), String> {
        let (reply, answer) = oneshot::channel();
        self.calls.push(Call::Read {
            node: id,
            floor: self.max_acked,
            answer,
        });
        self.input(id, Input::ReadIndex { reply })
    }
}
