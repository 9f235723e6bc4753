//! The TCP connector of the agent's gRPC channel: connects like tonic's
//! own (TCP_NODELAY, the endpoint's connect timeout and TLS are applied by
//! tonic around it) and records the connection's local address, the
//! address this host is reached at from the controllers' side (see
//! [`crate::address`]).

use std::future::Future;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tonic::codegen::Service;
use tonic::codegen::http::Uri;

/// Connects to the URI's host and port; `local` holds the latest
/// connection's local address.
#[derive(Clone, Default)]
pub struct RecordingConnector {
    pub local: Arc<Mutex<Option<IpAddr>>>,
}

impl RecordingConnector {
    /// The local address of the latest connection made.
    pub fn local_address(&self) -> Option<IpAddr> {
        *self.local.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Service<Uri> for RecordingConnector {
    type Response = TokioIo<TcpStream>;
    type Error = std::io::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        let local = self.local.clone();
        Box::pin(async move {
            let invalid = |what: &str| {
                std::io::Error::new(std::io::ErrorKind::InvalidInput, format!("{what} in {uri}"))
            };
            let host = uri.host().ok_or_else(|| invalid("no host"))?;
            // `[v6]` in a URI, bare for the resolver.
            let host = host.trim_start_matches('[').trim_end_matches(']').to_owned();
            let port = uri.port_u16().ok_or_else(|| invalid("no port"))?;
            let stream = TcpStream::connect((host.as_str(), port)).await?;
            stream.set_nodelay(true)?;
            let ip = stream.local_addr()?.ip();
            *local.lock().unwrap_or_else(|e| e.into_inner()) = Some(ip);
            Ok(TokioIo::new(stream))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_local_address_of_the_connection_is_recorded() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let mut connector = RecordingConnector::default();
        assert_eq!(connector.local_address(), None);
        let uri: Uri = format!("https://127.0.0.1:{port}").parse().unwrap();
        let _io = connector.call(uri).await.unwrap();
        let (_, peer) = listener.accept().await.unwrap();
        assert_eq!(connector.local_address(), Some(peer.ip()));
        let bad: Uri = "https://127.0.0.1".parse().unwrap();
        assert!(
            connector.call(bad).await.is_err(),
            "a URI without a port is refused"
        );
    }
}
