//! How `sandbox up` watches its controllers come up: one controller at a
//! time, keeping the connection that answers, each connect and RPC bounded
//! by [`PROBE_TIMEOUT`]; a failure moves on to the next controller.

use std::time::Duration;

use rpool_proto::v1::admin_service_client::AdminServiceClient;
use rpool_proto::v1::{ListHostsRequest, ListHostsResponse, StatusRequest};
use tonic::transport::Channel;

use crate::client;

/// Bound on one connect or one RPC while polling, so a controller that hangs
/// does not stall the wait.
pub const PROBE_TIMEOUT: Duration = Duration::from_millis(1000);

/// Asks the sandbox's controllers, one at a time, keeping the connection
/// that answered; a failure moves on to the next controller.
pub struct Poller {
    addresses: Vec<String>,
    next: usize,
    client: Option<AdminServiceClient<Channel>>,
}

impl Poller {
    pub fn new(addresses: Vec<String>) -> Self {
        Self {
            addresses,
            next: 0,
            client: None,
        }
    }

    /// The connected client, connecting to the next controller if needed.
    pub async fn client(&mut self) -> Option<AdminServiceClient<Channel>> {
        if self.client.is_none() {
            let address = &self.addresses[self.next];
            self.next = (self.next + 1) % self.addresses.len();
            let channel = client::connect_one(address, PROBE_TIMEOUT).await.ok()?;
            self.client = Some(AdminServiceClient::new(channel));
        }
        self.client.clone()
    }

    /// One round over the controllers: `(leader_id, leader_address)` from the
    /// first that names a leader, `None` when none does (yet).
    pub async fn leader(&mut self) -> Option<(String, String)> {
        for _ in 0..self.addresses.len() {
            let Some(mut admin) = self.client().await else {
                continue;
            };
            if let Ok(Ok(response)) =
                tokio::time::timeout(PROBE_TIMEOUT, admin.status(StatusRequest {})).await
            {
                let status = response.into_inner();
                if has_leader(&status.leader_id) {
                    return Some((status.leader_id, status.leader_address));
                }
            }
            // Not answering or no leader known here: ask the next one.
            self.client = None;
        }
        None
    }

    /// An `[enroll]` section with a new bootstrap token good for `agents`
    /// enrollments (one hour), or `None` when no controller made one.
    pub async fn enroll_section(&mut self, agents: usize) -> Option<String> {
        let mut admin = self.client().await?;
        let request = rpool_proto::v1::CreateTokenRequest {
            ttl_seconds: 3_600,
            uses: u32::try_from(agents).unwrap_or(u32::MAX).clamp(1, 10_000),
            description: "sandbox agents".to_string(),
            token: String::new(),
        };
        match tokio::time::timeout(PROBE_TIMEOUT * 2, admin.create_token(request)).await {
            Ok(Ok(created)) => {
                let created = created.into_inner();
                Some(format!(
                    "\n# Written by `rpoolctl sandbox up`: the agent enrolls with this\n\
                     # bootstrap token on its first start.\n\
                     [enroll]\ntoken = \"{}\"\nca_pin = \"{}\"\n",
                    created.token, created.ca_pin
                ))
            }
            _ => {
                self.client = None;
                None
            }
        }
    }

    pub async fn list_hosts(&mut self) -> Option<ListHostsResponse> {
        let mut admin = self.client().await?;
        let request = ListHostsRequest::default();
        match tokio::time::timeout(PROBE_TIMEOUT * 2, admin.list_hosts(request)).await {
            Ok(Ok(response)) => Some(response.into_inner()),
            _ => {
                self.client = None;
                None
            }
        }
    }
}

/// `Status.leader_id` names a leader ("" and "0" mean none known).
pub fn has_leader(leader_id: &str) -> bool {
    !leader_id.is_empty() && leader_id != "0"
}
