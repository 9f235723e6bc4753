//! Connecting to the controller and mapping gRPC errors to exit codes.

use std::future::Future;
use std::time::Duration;

use rpool_proto::v1::admin_service_client::AdminServiceClient;
use tonic::Code;
use tonic::transport::{Channel, Endpoint};

use crate::exit::{self, Failure};

/// A connected admin client plus the address that answered (for messages).
pub struct Controller {
    pub client: AdminServiceClient<Channel>,
    pub address: String,
    pub timeout: Duration,
}

/// Longest wait for one address to accept a connection, so a dead first
/// controller does not eat the whole timeout before the next is tried.
pub const CONNECT_TIMEOUT_CAP: Duration = Duration::from_secs(5);

/// Tries each address in order and returns the first that accepts a
/// connection. If none does: exit 69 with one line naming every address tried.
pub async fn connect(addresses: &[String], timeout: Duration) -> Result<Controller, Failure> {
    let mut tried = Vec::new();
    for address in addresses {
        match connect_one(address, timeout.min(CONNECT_TIMEOUT_CAP)).await {
            Ok(channel) => {
                return Ok(Controller {
                    client: AdminServiceClient::new(channel),
                    address: address.clone(),
                    timeout,
                });
            }
            Err(reason) => tried.push((address.clone(), reason)),
        }
    }
    Err(unreachable(&tried))
}

/// Opens a channel to one address; `Err` is a short reason ("connection refused").
pub async fn connect_one(address: &str, timeout: Duration) -> Result<Channel, String> {
    let uri = if address.contains("://") {
        address.to_string()
    } else {
        format!("http://{address}")
    };
    let endpoint = Endpoint::from_shared(uri)
        .map_err(|e| format!("invalid address: {e}"))?
        .connect_timeout(timeout)
        .tcp_nodelay(true);
    match tokio::time::timeout(timeout, endpoint.connect()).await {
        Ok(Ok(channel)) => Ok(channel),
        Ok(Err(e)) => Err(connect_reason(&e)),
        Err(_) => Err(format!(
            "timed out after {}",
            rpool_proto::units::format_duration(timeout)
        )),
    }
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
    /// Runs one RPC with the timeout, mapping errors to exit codes.
    pub async fn call<T, F>(&self, rpc: F) -> Result<T, Failure>
    where
        F: Future<Output = Result<tonic::Response<T>, tonic::Status>>,
    {
        match tokio::time::timeout(self.timeout, rpc).await {
            Ok(Ok(response)) => Ok(response.into_inner()),
            Ok(Err(status)) => Err(status_failure(&status, &self.address)),
            Err(_) => Err(Failure::new(
                exit::TIMED_OUT,
                format!(
                    "the rpool controller at {} did not answer within {} (raise --timeout)",
                    self.address,
                    rpool_proto::units::format_duration(self.timeout)
                ),
            )),
        }
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

    #[tokio::test]
    async fn a_closed_port_is_reported_as_connection_refused() {
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
