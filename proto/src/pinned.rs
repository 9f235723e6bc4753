//! A TLS client that trusts a controller only through a CA pin, for agent
//! enrollment (like kubeadm's `--discovery-token-ca-cert-hash`).
//!
//! An agent that has no certificate yet has no CA file either: it was
//! given a bootstrap token and the CA's pin, `sha256:<hex>` of the CA
//! certificate's SubjectPublicKeyInfo. [`PinnedVerifier`] accepts a server
//! chain only if one certificate in the presented chain has that pin *and*
//! the leaf verifies (webpki: signature, validity, server name) with that
//! certificate as the only trust anchor. The client presents no
//! certificate; the controller's `EnrollService.Enroll` allows that.
//!
//! [`connect`] makes a tonic [`Channel`] over it (our own connector:
//! TCP, then tokio-rustls with ALPN `h2`).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use hyper_util::rt::TokioIo;
use rustls::DigitallySignedStruct;
use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use tonic::transport::{Channel, Endpoint, Uri};

/// What went wrong connecting with a pin.
#[derive(Debug, thiserror::Error)]
pub enum PinnedError {
    /// The pin is not `sha256:` followed by 64 lowercase hex digits.
    #[error("{field}: {value:?} is not a CA pin (accepted sha256:<64 lowercase hex digits>)")]
    BadPin {
        /// Config field, e.g. `enroll.ca_pin`.
        field: String,
        /// The value (a pin is public).
        value: String,
    },
    /// The address is not `host:port`.
    #[error("invalid controller address {0:?} (accepted host:port)")]
    Address(String),
    /// rustls refused the configuration (should not happen).
    #[error("TLS configuration: {0}")]
    Config(String),
}

/// Checks a pin's format: `sha256:` and 64 lowercase hex digits.
pub fn parse_pin(field: &str, pin: &str) -> Result<String, PinnedError> {
    let ok = pin.strip_prefix("sha256:").is_some_and(|hex| {
        hex.len() == 64
            && hex
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    });
    if ok {
        Ok(pin.to_owned())
    } else {
        Err(PinnedError::BadPin {
            field: field.to_owned(),
            value: pin.chars().take(80).collect(),
        })
    }
}

/// `sha256:<hex>` of a DER certificate's SubjectPublicKeyInfo; `None` when
/// it does not parse.
pub fn pin_of_der(der: &[u8]) -> Option<String> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    let digest = ring::digest::digest(&ring::digest::SHA256, cert.public_key().raw);
    Some(format!(
        "sha256:{}",
        digest
            .as_ref()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<String>()
    ))
}

/// Accepts a server whose chain contains a certificate with the pinned
/// SPKI hash and whose leaf verifies against that certificate.
#[derive(Debug)]
pub struct PinnedVerifier {
    pin: String,
    provider: Arc<CryptoProvider>,
}

impl PinnedVerifier {
    /// A verifier for `pin` (already checked with [`parse_pin`]).
    pub fn new(pin: &str) -> PinnedVerifier {
        PinnedVerifier {
            pin: pin.to_owned(),
            provider: Arc::new(rustls::crypto::ring::default_provider()),
        }
    }
}

/// The message of a pin mismatch; callers look for it in error chains.
pub const PIN_MISMATCH: &str = "pin mismatch";

impl ServerCertVerifier for PinnedVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let chain = std::iter::once(end_entity).chain(intermediates);
        let mut presented = Vec::new();
        let mut anchor = None;
        for cert in chain {
            let pin = pin_of_der(cert.as_ref());
            if pin.as_deref() == Some(self.pin.as_str()) {
                anchor = Some(cert.clone().into_owned());
                break;
            }
            presented.push(pin.unwrap_or_else(|| "unparsable".to_owned()));
        }
        let Some(anchor) = anchor else {
            return Err(rustls::Error::General(format!(
                "{PIN_MISMATCH}: no certificate the controller presented has pin {} (it presented {})",
                self.pin,
                presented.join(", ")
            )));
        };
        let mut roots = rustls::RootCertStore::empty();
        roots
            .add(anchor)
            .map_err(|e| rustls::Error::General(format!("pinned CA certificate: {e}")))?;
        let webpki = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), self.provider.clone())
            .build()
            .map_err(|e| rustls::Error::General(format!("pinned CA certificate: {e}")))?;
        webpki.verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// A rustls client config trusting only `pin`, no client certificate,
/// ALPN `h2`.
pub fn client_config(pin: &str) -> Result<rustls::ClientConfig, PinnedError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| PinnedError::Config(e.to_string()))?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(PinnedVerifier::new(pin)))
        .with_no_client_auth();
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(config)
}

/// tonic connector: TCP to the URI's authority, then TLS with the pinned
/// verifier, checking the server name `host`.
#[derive(Clone)]
struct PinnedConnector {
    config: Arc<rustls::ClientConfig>,
    host: String,
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

impl tonic::codegen::Service<Uri> for PinnedConnector {
    type Response = TokioIo<tokio_rustls::client::TlsStream<tokio::net::TcpStream>>;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, BoxError>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        let config = self.config.clone();
        let host = self.host.clone();
        Box::pin(async move {
            let authority = uri
                .authority()
                .ok_or("controller address has no host:port")?
                .to_string();
            let tcp = tokio::net::TcpStream::connect(&authority).await?;
            tcp.set_nodelay(true)?;
            let name = ServerName::try_from(host)?;
            let tls = tokio_rustls::TlsConnector::from(config)
                .connect(name, tcp)
                .await?;
            Ok(TokioIo::new(tls))
        })
    }
}

/// A channel to the controller at `addr` (`host:port`, optionally with an
/// `http(s)://` prefix) that trusts it only through `pin`. Connects
/// eagerly, so a pin mismatch is an error here (look for [`PIN_MISMATCH`]
/// in the error chain: see [`error_chain`]).
pub async fn connect(addr: &str, pin: &str, timeout: Duration) -> Result<Channel, BoxError> {
    let (authority, host) =
        crate::tls::split_addr(addr).map_err(|_| PinnedError::Address(addr.to_owned()))?;
    let connector = PinnedConnector {
        config: Arc::new(client_config(pin)?),
        host,
    };
    let endpoint = Endpoint::from_shared(format!("http://{authority}"))
        .map_err(|_| PinnedError::Address(addr.to_owned()))?
        .connect_timeout(timeout)
        .timeout(timeout);
    Ok(endpoint.connect_with_connector(connector).await?)
}

/// An error and all its sources, `: `-separated (tonic's transport errors
/// hide the TLS cause in their sources).
pub fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let text = s.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = s.source();
    }
    out
}

/// Largest CSR accepted by enrollment and renewal (bytes of PEM).
pub const CSR_MAX_BYTES: usize = 16 << 10;

/// Checks a PKCS#10 CSR in PEM before anything is spent on it: one
/// `CERTIFICATE REQUEST` block, at most [`CSR_MAX_BYTES`], whose
/// self-signature verifies. The error says what is wrong (never echoes
/// the input).
pub fn check_csr_pem(pem: &str) -> Result<(), String> {
    if pem.is_empty() {
        return Err("missing (accepted a PEM CERTIFICATE REQUEST)".to_owned());
    }
    if pem.len() > CSR_MAX_BYTES {
        return Err(format!(
            "{} bytes is out of range (accepted 1..=16384)",
            pem.len()
        ));
    }
    let block = x509_parser::pem::Pem::iter_from_buffer(pem.as_bytes())
        .next()
        .and_then(Result::ok)
        .filter(|b| b.label == "CERTIFICATE REQUEST")
        .ok_or_else(|| "not a PEM CERTIFICATE REQUEST".to_owned())?;
    use x509_parser::prelude::FromDer;
    let (_, csr) = x509_parser::certification_request::X509CertificationRequest::from_der(&block.contents)
        .map_err(|_| "does not parse as a PKCS#10 request".to_owned())?;
    csr.verify_signature()
        .map_err(|_| "its self-signature does not verify".to_owned())
}

/// Validity of the first certificate in `pem`: (not before, not after).
pub fn cert_validity(pem: &str) -> Option<(std::time::SystemTime, std::time::SystemTime)> {
    let der = crate::pki::certs_from_pem(pem).ok()?.into_iter().next()?;
    let (_, cert) = x509_parser::parse_x509_certificate(&der).ok()?;
    let at = |t: i64| Some(std::time::UNIX_EPOCH + Duration::from_secs(u64::try_from(t).ok()?));
    Some((
        at(cert.validity().not_before.timestamp())?,
        at(cert.validity().not_after.timestamp())?,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pki::{Ca, Identity};

    #[test]
    fn pins_are_checked_for_shape() {
        let good = format!("sha256:{}", "0a".repeat(32));
        assert_eq!(parse_pin("enroll.ca_pin", &good).unwrap(), good);
        for bad in [
            String::new(),
            "0a".repeat(32),
            format!("sha256:{}", "0A".repeat(32)),
            format!("sha256:{}", "0a".repeat(31)),
            format!("sha1:{}", "0a".repeat(32)),
        ] {
            let err = parse_pin("enroll.ca_pin", &bad).unwrap_err().to_string();
            assert!(err.starts_with("enroll.ca_pin: "), "{err}");
            assert!(err.contains("accepted sha256:<64 lowercase hex digits>"), "{err}");
        }
    }

    #[test]
    fn the_pin_of_a_der_certificate_is_the_cas_pin() {
        let ca = Ca::generate("test").unwrap();
        let der = crate::pki::certs_from_pem(ca.cert_pem()).unwrap().remove(0);
        assert_eq!(pin_of_der(&der).unwrap(), ca.pin());
        assert_eq!(pin_of_der(b"junk"), None);
    }

    #[test]
    fn csrs_are_checked_before_signing() {
        let (csr, _key) = crate::pki::new_csr(&Identity::Agent("h1".into())).unwrap();
        assert_eq!(check_csr_pem(&csr), Ok(()));
        assert!(check_csr_pem("").unwrap_err().starts_with("missing"));
        assert!(
            check_csr_pem(&"x".repeat(CSR_MAX_BYTES + 1))
                .unwrap_err()
                .contains("out of range")
        );
        let ca = Ca::generate("t").unwrap();
        assert_eq!(
            check_csr_pem(ca.cert_pem()),
            Err("not a PEM CERTIFICATE REQUEST".to_owned())
        );
        // A flipped byte in the body breaks the parse or the signature.
        let mut lines: Vec<String> = csr.lines().map(str::to_owned).collect();
        let mid = lines.len() / 2;
        lines[mid] = lines[mid].chars().rev().collect();
        assert!(check_csr_pem(&lines.join("\n")).is_err());
    }

    #[test]
    fn validity_reads_both_ends() {
        let ca = Ca::generate("t").unwrap();
        let issued = ca
            .issue(&Identity::Agent("h1".into()), &[], Duration::from_secs(600))
            .unwrap();
        let (from, to) = cert_validity(&issued.cert_pem).unwrap();
        assert_eq!(
            to.duration_since(from).unwrap(),
            Duration::from_secs(600) + crate::pki::CLOCK_SKEW
        );
        assert_eq!(cert_validity("junk"), None);
    }

    fn verify(pin: &str, chain_pem: &str, name: &str) -> Result<ServerCertVerified, rustls::Error> {
        let certs: Vec<CertificateDer<'static>> = crate::pki::certs_from_pem(chain_pem)
            .unwrap()
            .into_iter()
            .map(CertificateDer::from)
            .collect();
        PinnedVerifier::new(pin).verify_server_cert(
            &certs[0],
            &certs[1..],
            &ServerName::try_from(name.to_owned()).unwrap(),
            &[],
            UnixTime::now(),
        )
    }

    #[test]
    fn the_verifier_wants_the_pinned_ca_and_a_leaf_it_signed_for_that_name() {
        let ca = Ca::generate("test").unwrap();
        let other = Ca::generate("other").unwrap();
        let server = ca
            .issue(
                &Identity::Controller(1),
                &["127.0.0.1".to_owned()],
                Duration::from_secs(3600),
            )
            .unwrap();
        assert!(verify(&ca.pin(), &server.cert_pem, "127.0.0.1").is_ok());
        // Wrong pin: refused, and the error says so.
        let err = verify(&other.pin(), &server.cert_pem, "127.0.0.1").unwrap_err();
        assert!(err.to_string().contains(PIN_MISMATCH), "{err}");
        // Right pin but the name is not in the certificate.
        assert!(verify(&ca.pin(), &server.cert_pem, "10.9.9.9").is_err());
        // A chain that carries the pinned CA but a leaf another CA signed.
        let forged = other
            .issue(
                &Identity::Controller(1),
                &["127.0.0.1".to_owned()],
                Duration::from_secs(3600),
            )
            .unwrap();
        let leaf_only = forged
            .cert_pem
            .split_inclusive("-----END CERTIFICATE-----\n")
            .next()
            .unwrap();
        let mixed = format!("{leaf_only}{}", ca.cert_pem());
        assert!(verify(&ca.pin(), &mixed, "127.0.0.1").is_err());
    }
}
