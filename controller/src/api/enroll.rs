//! `EnrollService`: certificates for agents.
//!
//! - `Enroll` (no client certificate needed): an agent trades a bootstrap
//!   token for a certificate naming its host id. Checked in this order, so
//!   that nothing is spent on a request that cannot succeed: the fields
//!   (host id as in `Hello`, CSR shape, size and self-signature, token
//!   format), that this controller can sign (`[tls] ca_key`), the token
//!   against the applied state (cheap denial without a Raft write), then
//!   the token use is proposed as a `UseToken` command. Only once it is
//!   committed (and applied by every replica with the same verdict) is the
//!   CSR signed. A follower forwards the request to the leader.
//! - `Renew` (agent client certificate required): a new certificate for the
//!   host named in the presented certificate; the request carries only a
//!   CSR. Served by whichever controller is asked (no state changes).
//!
//! A bad, expired, revoked or used-up token is UNAUTHENTICATED with a
//! message that may name the token id, never its secret; every denial is
//! logged and counted ([`denials`]).

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use rpool_proto::pki::{Ca, Identity};
use rpool_proto::v1::enroll_service_client::EnrollServiceClient;
use rpool_proto::v1::enroll_service_server::EnrollService;
use rpool_proto::v1::{EnrollRequest, EnrollResponse, RenewRequest, RenewResponse};
use tonic::transport::Channel;
use tonic::{Request, Response, Status};
use tracing::{info, instrument, warn};

use crate::Shared;
use crate::api::forward::{LeaderLink, Route, forwarded_request, relay, was_forwarded};
use crate::api::validate::Invalid;
use crate::replica::ProposeError;
use crate::state::ApplyError;
use crate::state::command::Command;
use crate::state::tokens;
use rpool_proto::clock::unix_ms_now;

/// Largest `Enroll`/`Renew` message accepted (bytes).
pub const MAX_MESSAGE_BYTES: usize = 64 << 10;

static DENIALS: AtomicU64 = AtomicU64::new(0);

/// Enrollments and renewals refused for authentication (bad token, no or
/// wrong client certificate) since start.
pub fn denials() -> u64 {
    DENIALS.load(Ordering::Relaxed)
}

fn deny(reason: &str, message: String) -> Status {
    DENIALS.fetch_add(1, Ordering::Relaxed);
    warn!(reason, denials = denials(), "enrollment denied: {message}");
    Status::unauthenticated(message)
}

/// Checks an `EnrollRequest`'s fields (not the token's validity).
pub fn validate_enroll(r: &EnrollRequest) -> Result<tokens::ParsedToken, Invalid> {
    crate::api::validate::host_id("enroll.host_id", &r.host_id)?;
    rpool_proto::pinned::check_csr_pem(&r.csr_pem).map_err(|p| Invalid::new("enroll.csr_pem", p))?;
    tokens::parse("enroll.token", &r.token)
        .map_err(|e| Invalid::new("enroll.token", strip_field(&e.to_string())))
}

fn strip_field(message: &str) -> String {
    message
        .split_once(": ")
        .map_or(message, |(_, rest)| rest)
        .to_owned()
}

/// Where the CA certificate and key are, and how long agent certificates
/// last, from the config.
#[derive(Debug, Clone)]
pub struct SignerConfig {
    pub ca: PathBuf,
    pub ca_key: Option<PathBuf>,
    pub agent_cert_ttl: Duration,
}

/// The CA that signs agent certificates, read from the files (so a
/// rotated CA is picked up without a restart).
fn load_ca(config: &SignerConfig) -> Result<Ca, Status> {
    let key_path = config.ca_key.as_ref().ok_or_else(|| {
        Status::failed_precondition(
            "this controller cannot sign agent certificates: [tls] ca_key is not set in its config",
        )
    })?;
    let read = |p: &PathBuf| {
        std::fs::read_to_string(p).map_err(|e| {
            warn!(path = %p.display(), error = %e, "reading CA material for enrollment");
            Status::failed_precondition(format!("this controller cannot read {}: {e}", p.display()))
        })
    };
    Ca::from_pem(&read(&config.ca)?, &read(key_path)?).map_err(|e| {
        warn!(error = %e, "loading the CA for enrollment");
        Status::failed_precondition(format!("this controller's CA does not load: {e}"))
    })
}

/// The signer settings from `[tls]`.
fn signer_config(shared: &Shared) -> Option<SignerConfig> {
    let tls = &shared.config.tls;
    Some(SignerConfig {
        ca: tls.ca.clone(),
        ca_key: Some(tls.ca_key.clone()),
        agent_cert_ttl: tls.agent_cert_ttl(),
    })
}

/// The pin of this controller's CA (`sha256:<hex>`), `None` without TLS.
pub(crate) fn ca_pin(shared: &Shared) -> Option<String> {
    let config = signer_config(shared)?;
    let pem = std::fs::read_to_string(&config.ca).ok()?;
    rpool_proto::pki::pin_of_cert_pem(&pem).ok()
}

/// The service.
pub struct EnrollSvc {
    shared: Arc<Shared>,
    /// Channel to the leader, reused while the leader's address holds.
    leader: LeaderLink,
}

impl EnrollSvc {
    pub(crate) fn new(shared: Arc<Shared>) -> Self {
        EnrollSvc {
            shared,
            leader: LeaderLink::default(),
        }
    }

    /// `None` when this controller leads; otherwise a client for the
    /// leader and the route it takes (see [`crate::api::forward`]).
    fn leader_client<T>(
        &self,
        request: &Request<T>,
    ) -> Result<Option<(EnrollServiceClient<Channel>, Route)>, Status> {
        let Some(route) = self.leader.route(&self.shared, was_forwarded(request))? else {
            return Ok(None);
        };
        let client =
            EnrollServiceClient::new(route.channel.clone()).max_decoding_message_size(MAX_MESSAGE_BYTES);
        Ok(Some((client, route)))
    }

    fn signer(&self) -> Result<(SignerConfig, Ca), Status> {
        let config = signer_config(&self.shared).ok_or_else(|| {
            Status::failed_precondition(
                "this controller runs without TLS ([tls] is not configured): it cannot enroll agents",
            )
        })?;
        let ca = load_ca(&config)?;
        Ok((config, ca))
    }
}

#[tonic::async_trait]
impl EnrollService for EnrollSvc {
    #[instrument(skip_all, fields(host_id = %request.get_ref().host_id))]
    async fn enroll(&self, request: Request<EnrollRequest>) -> Result<Response<EnrollResponse>, Status> {
        let token = validate_enroll(request.get_ref())?;
        if let Some((mut client, route)) = self.leader_client(&request)? {
            let forwarded = forwarded_request(self.shared.config.id, request.into_inner());
            return relay(&self.shared, &self.leader, &route, client.enroll(forwarded)).await;
        }
        // Able to sign before anything is spent.
        let (config, ca) = self.signer()?;
        let identity = Identity::agent(&request.get_ref().host_id)
            .map_err(|e| Status::invalid_argument(format!("enroll.host_id: {e}")))?;
        // A token must not let its holder take over a host that is running:
        // a live agent renews its own certificate (Renew); re-enrolling a
        // host id is for a host whose agent is gone (reinstalled, lost its
        // certificate), so it is refused while that host has a session here
        // (only the leader gets this far, and only it holds sessions).
        let live = self
            .shared
            .liveness
            .lock()
            .map_err(|_| Status::internal("liveness lock poisoned"))?
            .observation(&request.get_ref().host_id)
            .is_some_and(|o| o.session.is_some());
        if live {
            return Err(deny(
                "host_connected",
                format!(
                    "host {} is connected with a valid certificate; a running agent renews its own \
                     certificate, and a host is re-enrolled only while its agent is stopped",
                    request.get_ref().host_id
                ),
            ));
        }
        let presented = token.secret_sha256();
        let now = unix_ms_now();
        // Cheap denial against the applied state; the command checks again.
        self.shared
            .node
            .read(|sm| tokens::plan_use(sm.tokens(), &token.id, &presented, now))
            .map_err(|e| deny(e.reason(), e.to_string()))?;
        let command = Command::UseToken {
            token_id: token.id.clone(),
            secret_sha256: presented,
            host_id: request.get_ref().host_id.clone(),
            at_unix_ms: now,
        };
        match self.shared.node.propose(command).await {
            Ok(_) => {}
            Err(ProposeError::Rejected(ApplyError::Refused(m))) => return Err(deny("refused", m)),
            Err(e) => {
                return Err(crate::api::status::propose_status(
                    e,
                    crate::api::status::Refusal::Race,
                ));
            }
        }
        let cert_pem = ca
            .sign_csr(&request.get_ref().csr_pem, &identity, config.agent_cert_ttl)
            .map_err(|e| Status::invalid_argument(format!("enroll.csr_pem: {e}")))?;
        info!(token_id = %token.id, ttl_s = config.agent_cert_ttl.as_secs(), "agent enrolled");
        Ok(Response::new(EnrollResponse {
            cert_pem,
            ca_pem: ca.cert_pem().to_owned(),
        }))
    }

    #[instrument(skip_all)]
    async fn renew(&self, request: Request<RenewRequest>) -> Result<Response<RenewResponse>, Status> {
        let host_id = match rpool_proto::tls::peer_identity(&request) {
            Some(Identity::Agent(host_id)) => host_id,
            Some(other) => return Err(deny("not-an-agent", format!("renew: {other} is not an agent"))),
            None => {
                return Err(deny(
                    "no-certificate",
                    "renew: an agent client certificate is required (enroll first)".to_owned(),
                ));
            }
        };
        tracing::Span::current().record("host_id", host_id.as_str());
        rpool_proto::pinned::check_csr_pem(&request.get_ref().csr_pem)
            .map_err(|p| Status::invalid_argument(format!("renew.csr_pem: {p}")))?;
        let (config, ca) = self.signer()?;
        let cert_pem = ca
            .sign_csr(
                &request.get_ref().csr_pem,
                &Identity::Agent(host_id.clone()),
                config.agent_cert_ttl,
            )
            .map_err(|e| Status::invalid_argument(format!("renew.csr_pem: {e}")))?;
        info!(host_id = %host_id, ttl_s = config.agent_cert_ttl.as_secs(), "agent certificate renewed");
        Ok(Response::new(RenewResponse {
            cert_pem,
            ca_pem: ca.cert_pem().to_owned(),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(token: &str, host_id: &str, csr_pem: &str) -> EnrollRequest {
        EnrollRequest {
            token: token.to_owned(),
            host_id: host_id.to_owned(),
            csr_pem: csr_pem.to_owned(),
        }
    }

    #[test]
    fn enroll_requests_are_checked_field_by_field_and_never_echo_the_token() {
        let id = crate::api::validate::tests::ID;
        let (csr, _) = rpool_proto::pki::new_csr(&Identity::Agent(id.to_owned())).unwrap();
        let token = "abcdef.0123456789abcdef";
        assert_eq!(validate_enroll(&request(token, id, &csr)).unwrap().id, "abcdef");
        let err = validate_enroll(&request(token, "nope", &csr))
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("enroll.host_id: "), "{err}");
        let err = validate_enroll(&request(token, id, "")).unwrap_err().to_string();
        assert_eq!(
            err,
            "enroll.csr_pem: missing (accepted a PEM CERTIFICATE REQUEST)"
        );
        let almost = "abcdef.0123456789abcdeX";
        let err = validate_enroll(&request(almost, id, &csr))
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("enroll.token: not a bootstrap token (accepted"),
            "{err}"
        );
        assert!(!err.contains("0123456789abcde"), "{err}");
    }
}
