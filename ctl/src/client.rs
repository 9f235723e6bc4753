//! Connecting to the controller and mapping gRPC errors to exit codes.
//!
//! Every connection is mutual TLS with the admin certificate chosen by
//! [`crate::settings`] and installed once per process with [`use_tls`]; the
//! files are read when connecting, and a missing or bad file is a usage
//! error (exit 64) naming the path.

use std::future::Future;
use std::time::Duration;

use rpool_proto::v1::admin_service_client::AdminServiceClient;
use tonic::Code;
use tonic::transport::{Channel, Endpoint};

use crate::exit::{self, Failure};

/// A connected admin client plus the address that answered (for messages),
/// and every address, to move to another controller when this one fails.
pub struct Controller {
    current: std::sync::Mutex<(AdminServiceClient<Channel>, String)>,
    pub timeout: Duration,
    pub addresses: Vec<String>,
}

/// Calls one AdminService method with a request on a [`Controller`],
/// retrying through [`Controller::call`]: `rpc!(ctl, list_hosts, request)`.
#[macro_export]
macro_rules! rpc {
    ($ctl:expr, $method:ident, $request:expr) => {{
        let request = $request;
        $ctl.call(move |mut client| {
            let request = request.clone();
            async move { client.$method(request).await }
        })
        .await
    }};
}

/// Pause before retrying an UNAVAILABLE answer. Fixed and short: an
/// election takes a few hundred milliseconds and the retry that finds the
/// new leader should come within 100 ms of its election, while a retry
/// costs the controllers one small RPC that fails fast.
pub const RETRY_PAUSE: Duration = Duration::from_millis(50);

/// Longest wait for another controller to accept a connection during a
/// retry: controllers sit on one LAN, so a peer that does not answer this
/// fast is down or cut off, and the next one is tried.
const RETRY_CONNECT_TIMEOUT: Duration = Duration::from_millis(300);

/// Longest wait for one address to accept a connection, so a dead first
/// controller does not eat the whole timeout before the next is tried.
pub const CONNECT_TIMEOUT_CAP: Duration = Duration::from_secs(5);

static TLS: std::sync::RwLock<Option<rpool_proto::tls::TlsFiles>> = std::sync::RwLock::new(None);

/// Sets the admin TLS files every connection of this process uses.
pub fn use_tls(files: Option<rpool_proto::tls::TlsFiles>) {
    *TLS.write().unwrap_or_else(|e| e.into_inner()) = files;
}

/// Loads the admin TLS files set with [`use_tls`].
pub fn tls_material() -> Result<rpool_proto::tls::TlsMaterial, Failure> {
    let files = TLS.read().unwrap_or_else(|e| e.into_inner()).clone();
    let Some(files) = files else {
        return Err(Failure::usage(
            "no admin certificate configured: set [tls] in ctl.toml, or --tls-ca/--tls-cert/--tls-key \
             (create them with `rpoolctl pki init`)",
        ));
    };
    files.load().map_err(|e| {
        let missing = matches!(
            &e,
            rpool_proto::tls::TlsError::Read { source, .. } if source.kind() == std::io::ErrorKind::NotFound
        );
        Failure::usage(format!(
            "{e} (the admin certificate: [tls] in ctl.toml, or --tls-ca/--tls-cert/--tls-key){}",
            if missing { MISSING_CERTIFICATE_HINT } else { "" }
        ))
    })
}

/// Said when the admin certificate files do not exist yet: the usual first
/// steps, a sandbox on this machine or the servers' PKI.
const MISSING_CERTIFICATE_HINT: &str = "; to try rpool on this machine, `rpoolctl sandbox up` makes them and \
     starts a sandbox; for servers, `rpoolctl pki init` (README, \"Install on servers\"), and \
     --controller ADDRESS to name a controller";

/// Tries each address in order and returns the first that accepts a
/// connection. If none does: exit 69 with one line naming every address tried.
pub async fn connect(addresses: &[String], timeout: Duration) -> Result<Controller, Failure> {
    // A missing or bad certificate is the user's to fix: say so first.
    tls_material()?;
    let mut tried = Vec::new();
    let mut untrusted = Vec::new();
    for address in addresses {
        match connect_one(address, timeout.min(CONNECT_TIMEOUT_CAP)).await {
            Ok(channel) => {
                return Ok(Controller {
                    current: std::sync::Mutex::new((AdminServiceClient::new(channel), address.clone())),
                    timeout,
                    addresses: addresses.to_vec(),
                });
            }
            Err(reason) if reason.starts_with(TRUST_PREFIX) => {
                untrusted.push((address.clone(), reason[TRUST_PREFIX.len()..].to_string()));
            }
            Err(reason) => tried.push((address.clone(), reason)),
        }
    }
    if !untrusted.is_empty() {
        return Err(trust_failure(&untrusted));
    }
    Err(unreachable(&tried))
}

/// Marks a [`connect_one`] reason that is a TLS trust failure (the server's
/// certificate does not chain to our CA, or it refused ours), not a network one.
const TRUST_PREFIX: &str = "TLS trust: ";

/// The controller answered but TLS failed on trust: a configuration problem
/// (wrong CA or admin certificate), exit 77, not "cannot reach".
pub fn trust_failure(tried: &[(String, String)]) -> Failure {
    let list = tried
        .iter()
        .map(|(addr, reason)| format!("{addr} ({reason})"))
        .collect::<Vec<_>>()
        .join(", ");
    Failure::new(
        exit::PERMISSION_DENIED,
        format!(
            "TLS trust problem with the rpool controller at {list}: the controller answered, but its \
             certificate and our CA (--tls-ca, [tls] ca in ctl.toml) or our admin certificate \
             (--tls-cert/--tls-key) do not belong to the same PKI; point them at this group's files \
             (for the sandbox: the pki/ directory in its dir)"
        ),
    )
}

/// Opens a channel to one address; `Err` is a short reason ("connection refused").
pub async fn connect_one(address: &str, timeout: Duration) -> Result<Channel, String> {
    let tls = tls_material().map_err(|f| f.message)?;
    let endpoint: Endpoint = tls
        .endpoint(address)
        .map_err(|e| e.to_string())?
        .connect_timeout(timeout)
        .tcp_nodelay(true);
    match tokio::time::timeout(timeout, endpoint.connect()).await {
        Ok(Ok(channel)) => Ok(channel),
        Ok(Err(e)) => Err(match trust_reason(&e) {
            Some(reason) => format!("{TRUST_PREFIX}{reason}"),
            None => connect_reason(&e),
        }),
        Err(_) => Err(format!(
            "timed out after {}",
            rpool_proto::units::format_duration(timeout)
        )),
    }
}

/// A TLS trust failure in an error chain, said plainly: the server's
/// certificate is not trusted by our CA, or the server refused ours.
fn trust_reason(err: &(dyn std::error::Error + 'static)) -> Option<String> {
    let mut source = Some(err);
    while let Some(e) = source {
        let tls = e.downcast_ref::<rustls::Error>().or_else(|| {
            e.downcast_ref::<std::io::Error>()
                .and_then(|io| io.get_ref())
                .and_then(|inner| inner.downcast_ref::<rustls::Error>())
        });
        match tls {
            Some(rustls::Error::InvalidCertificate(why)) => {
                return Some(format!("its certificate is not trusted: {why:?}"));
            }
            Some(rustls::Error::AlertReceived(alert)) => {
                return Some(format!("it refused our admin certificate: {alert:?}"));
            }
            _ => {}
        }
        source = e.source();
    }
    None
}

/// The most specific, human-sized reason in an error chain.
fn connect_reason(err: &(dyn std::error::Error + 'static)) -> String {
    let mut source = Some(err);
    let mut last = err.to_string();
    while let Some(e) = source {
        if let Some(io) = e.downcast_ref::<std::io::Error>() {
            return match io.kind() {
                std::io::ErrorKind::ConnectionRefused => "connection refused".to_string(),
                std::io::ErrorKind::TimedOut => "timed out".to_string(),
                _ => io.to_string(),
            };
        }
        last = e.to_string();
        source = e.source();
    }
    last
}

/// The one-line "cannot reach" error (exit 69).
pub fn unreachable(tried: &[(String, String)]) -> Failure {
    let list = tried
        .iter()
        .map(|(addr, reason)| format!("{addr} ({reason})"))
        .collect::<Vec<_>>()
        .join(", ");
    Failure::new(
        exit::UNAVAILABLE,
        format!(
            "cannot reach the rpool controller at {list}; check that rpool-controller is running there, \
             or set --controller / RPOOL_CONTROLLER"
        ),
    )
}

impl Controller {
    /// Runs one RPC (built by `rpc` from a client) within the timeout,
    /// mapping errors to exit codes. An UNAVAILABLE answer (a controller
    /// that went away, a leader election in progress, a forwarded call
    /// abandoned because leadership moved) is retried every [`RETRY_PAUSE`],
    /// moving through the other addresses, until the timeout: a
    /// failover is invisible to the user beyond a short delay. Every rpool
    /// admin write is idempotent or refuses a repeat with a clear message.
    pub async fn call<T, F, Fut>(&self, mut rpc: F) -> Result<T, Failure>
    where
        F: FnMut(AdminServiceClient<Channel>) -> Fut,
        Fut: Future<Output = Result<tonic::Response<T>, tonic::Status>>,
    {
        let deadline = tokio::time::Instant::now() + self.timeout;
        let mut next = self
            .addresses
            .iter()
            .position(|a| *a == self.address())
            .unwrap_or(0);
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            let client = self.current.lock().unwrap_or_else(|e| e.into_inner()).0.clone();
            let status = match tokio::time::timeout(left, rpc(client)).await {
                Ok(Ok(response)) => return Ok(response.into_inner()),
                Ok(Err(status)) if status.code() == Code::Unavailable => status,
                Ok(Err(status)) => return Err(status_failure(&status, &self.address())),
                Err(_) => return Err(self.timed_out()),
            };
            if tokio::time::Instant::now() + RETRY_PAUSE >= deadline {
                return Err(status_failure(&status, &self.address()));
            }
            tokio::time::sleep(RETRY_PAUSE).await;
            // Move on to the next controller that accepts a connection.
            for _ in 0..self.addresses.len() {
                next = (next + 1) % self.addresses.len();
                let address = self.addresses[next].clone();
                if let Ok(channel) = connect_one(&address, RETRY_CONNECT_TIMEOUT).await {
                    *self.current.lock().unwrap_or_else(|e| e.into_inner()) =
                        (AdminServiceClient::new(channel), address);
                    break;
                }
            }
        }
    }

    /// The address of the controller currently used.
    pub fn address(&self) -> String {
        self.current.lock().unwrap_or_else(|e| e.into_inner()).1.clone()
    }

    fn timed_out(&self) -> Failure {
        Failure::new(
            exit::TIMED_OUT,
            format!(
                "the rpool controller at {} did not answer within {} (raise --timeout)",
                self.address(),
                rpool_proto::units::format_duration(self.timeout)
            ),
        )
    }
}

/// Exit code for a gRPC status code.
pub fn exit_code_for(code: Code) -> u8 {
    match code {
        Code::Ok => exit::OK,
        // FAILED_PRECONDITION: e.g. a membership change that would lose quorum.
        // ALREADY_EXISTS: e.g. adding a controller id that is a member.
        Code::InvalidArgument | Code::FailedPrecondition | Code::AlreadyExists => exit::REJECTED,
        Code::NotFound => exit::NOT_FOUND,
        Code::PermissionDenied | Code::Unauthenticated => exit::PERMISSION_DENIED,
        Code::DeadlineExceeded => exit::TIMED_OUT,
        Code::Unavailable => exit::UNAVAILABLE,
        _ => exit::UNEXPECTED,
    }
}

/// A gRPC error as a user-facing failure: the server's message is shown as is
/// for rejections and not-found; other codes say which controller failed.
pub fn status_failure(status: &tonic::Status, address: &str) -> Failure {
    let code = exit_code_for(status.code());
    let message = status.message();
    let text = match status.code() {
        Code::InvalidArgument | Code::FailedPrecondition | Code::AlreadyExists | Code::NotFound
            if !message.is_empty() =>
        {
            message.to_string()
        }
        Code::Unavailable => format!("the rpool controller at {address} is unavailable: {message}"),
        Code::DeadlineExceeded => format!("the rpool controller at {address} timed out: {message}"),
        other => format!("the rpool controller at {address} answered {other:?}: {message}"),
    };
    Failure::new(code, text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_admin_certificate_files_point_to_the_sandbox_and_the_pki() {
        let dir = tempfile::tempdir().unwrap();
        use_tls(Some(rpool_proto::tls::TlsFiles {
            ca: dir.path().join("pki/ca.crt"),
            cert: dir.path().join("pki/admin.crt"),
            key: dir.path().join("pki/admin.key"),
        }));
        let failure = tls_material().err().expect("no files, no TLS");
        assert_eq!(failure.code, exit::USAGE);
        assert!(failure.message.contains("pki/ca.crt"), "{}", failure.message);
        assert!(
            failure.message.contains("rpoolctl sandbox up"),
            "{}",
            failure.message
        );
        assert!(failure.message.contains("--controller"), "{}", failure.message);
    }

    #[test]
    fn grpc_codes_map_to_the_documented_exit_codes() {
        let cases = [
            (Code::InvalidArgument, 65),
            (Code::FailedPrecondition, 65),
            (Code::AlreadyExists, 65),
            (Code::NotFound, 3),
            (Code::PermissionDenied, 77),
            (Code::Unauthenticated, 77),
            (Code::DeadlineExceeded, 75),
            (Code::Unavailable, 69),
            (Code::Internal, 1),
            (Code::Aborted, 1),
        ];
        for (code, want) in cases {
            assert_eq!(exit_code_for(code), want, "{code:?}");
        }
    }

    #[test]
    fn a_rejection_prints_the_servers_message_as_is() {
        let f = status_failure(
            &tonic::Status::invalid_argument("zone: \"A\" is not a DNS label"),
            "x:1",
        );
        assert_eq!(f, Failure::new(65, "zone: \"A\" is not a DNS label"));
        let f = status_failure(
            &tonic::Status::failed_precondition("removing controller 2 would leave 1 of 3 reachable"),
            "x:1",
        );
        assert_eq!(
            f,
            Failure::new(65, "removing controller 2 would leave 1 of 3 reachable")
        );
    }

    #[test]
    fn unreachable_names_every_address_tried_on_one_line() {
        let one = unreachable(&[("127.0.0.1:7443".into(), "connection refused".into())]);
        assert_eq!(one.code, 69);
        assert_eq!(
            one.message,
            "cannot reach the rpool controller at 127.0.0.1:7443 (connection refused); check that \
             rpool-controller is running there, or set --controller / RPOOL_CONTROLLER"
        );
        let two = unreachable(&[
            ("a:1".into(), "connection refused".into()),
            ("b:2".into(), "timed out".into()),
        ]);
        assert!(
            two.message.starts_with(
                "cannot reach the rpool controller at a:1 (connection refused), b:2 (timed out); "
            )
        );
        assert!(!two.message.contains('\n'));
    }

    #[test]
    fn an_untrusted_certificate_is_a_trust_problem_not_unreachable() {
        let io = std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            rustls::Error::InvalidCertificate(rustls::CertificateError::UnknownIssuer),
        );
        let wrapped = anyhow::Error::new(io).context("transport error");
        let reason = trust_reason(wrapped.as_ref()).expect("a trust failure");
        assert_eq!(reason, "its certificate is not trusted: UnknownIssuer");
        let refused =
            std::io::Error::other(rustls::Error::AlertReceived(rustls::AlertDescription::UnknownCA));
        assert_eq!(
            trust_reason(&refused).as_deref(),
            Some("it refused our admin certificate: UnknownCA")
        );
        let refused_conn = std::io::Error::from(std::io::ErrorKind::ConnectionRefused);
        assert_eq!(trust_reason(&refused_conn), None);
        let f = trust_failure(&[("a:1".into(), reason)]);
        assert_eq!(f.code, exit::PERMISSION_DENIED);
        assert!(
            f.message
                .starts_with("TLS trust problem with the rpool controller at a:1 (its certificate")
        );
        assert!(!f.message.contains("cannot reach"), "{}", f.message);
    }

    #[tokio::test]
    async fn a_closed_port_is_reported_as_connection_refused() {
        crate::testing::test_tls();
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        drop(listener);
        let err = connect(std::slice::from_ref(&addr), Duration::from_secs(2))
            .await
            .err()
            .unwrap();
        assert_eq!(err.code, 69);
        assert!(
            err.message.contains(&format!("{addr} (connection refused)")),
            "{}",
            err.message
        );
    }
}
