//! Mutual TLS for every rpool connection (rustls with the `ring` provider).
//!
//! Servers present their chain and verify client certificates against the
//! rpool CA, but let a client without a certificate finish the handshake
//! (`client_auth_optional`): the enrollment RPC must work before an agent
//! has a certificate, so every other RPC authorizes itself from
//! [`peer_identity`] (no certificate → UNAUTHENTICATED). A certificate from
//! another CA fails the handshake.
//!
//! Clients always present their certificate and verify the server's chain
//! and name (IP SAN for IP literals, DNS SAN otherwise).

use std::path::{Path, PathBuf};

use tonic::transport::{Certificate, ClientTlsConfig, Endpoint, ServerTlsConfig};

use crate::pki::{self, Identity, PkiError};

/// Installs rustls' `ring` crypto provider as the process default.
/// Idempotent; every binary calls it first thing.
pub fn install_crypto_provider() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        // Err only if another provider was installed first: keep that one.
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
}

/// What went wrong setting up TLS.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A file could not be read.
    #[error("reading {}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// A file was read but its content is wrong.
    #[error("{}: {reason}", path.display())]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// An address could not be turned into an `https://` endpoint.
    #[error("invalid address {addr:?}: {reason}")]
    Address {
        /// The address as given.
        addr: String,
        /// Why it was refused.
        reason: String,
    },
}

/// Where a process finds its CA certificate, its own certificate chain and
/// its private key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// CA certificate (PEM) that peers must chain to.
    pub ca: PathBuf,
    /// Own certificate chain (PEM, leaf first).
    pub cert: PathBuf,
    /// Own private key (PEM, PKCS#8).
    pub key: PathBuf,
}

impl TlsFiles {
    /// `{dir}/ca.crt`, `{dir}/{name}.crt`, `{dir}/{name}.key`.
    pub fn in_dir(dir: &Path, name: &str) -> TlsFiles {
        TlsFiles {
            ca: dir.join("ca.crt"),
            cert: dir.join(format!("{name}.crt")),
            key: dir.join(format!("{name}.key")),
        }
    }

    /// Reads and checks the three files: each parses, the key is a key,
    /// and the certificate is signed by the CA and valid now. Errors name
    /// the file.
    pub fn load(&self) -> Result<TlsMaterial, TlsError> {
        let ca_pem = read(&self.ca)?;
        let cert_pem = read(&self.cert)?;
        let key_pem = read(&self.key)?;
        let invalid = |path: &Path| {
            let path = path.to_path_buf();
            move |e: PkiError| TlsError::Invalid {
                path,
                reason: e.to_string(),
            }
        };
        pki::certs_from_pem(&ca_pem).map_err(invalid(&self.ca))?;
        check_validity(&self.ca, &ca_pem, "CA certificate")?;
        let identity = pki::identity_of_pem(&cert_pem).map_err(invalid(&self.cert))?;
        check_validity(&self.cert, &cert_pem, "certificate")?;
        pki::verify_issued_by(&cert_pem, &ca_pem).map_err(|e| TlsError::Invalid {
            path: self.cert.clone(),
            reason: format!("{e} (CA {})", self.ca.display()),
        })?;
        if !key_pem.contains("PRIVATE KEY-----") {
            return Err(TlsError::Invalid {
                path: self.key.clone(),
                reason: "no PEM private key in file".into(),
            });
        }
        self.check_key_matches(&cert_pem, &key_pem)?;
        Ok(TlsMaterial {
            ca_pem,
            cert_pem,
            key_pem,
            identity,
        })
    }
}

impl TlsFiles {
    /// [`TlsFiles::load`], and the key file is not readable by every user
    /// (what `--check-config` runs). Errors name the file.
    pub fn check(&self) -> Result<TlsMaterial, TlsError> {
        let material = self.load()?;
        check_key_mode(&self.key)?;
        Ok(material)
    }

    /// The private key is the one the certificate was issued for (the
    /// check rustls makes when it starts serving, made here so the error
    /// names the file).
    fn check_key_matches(&self, cert_pem: &str, key_pem: &str) -> Result<(), TlsError> {
        use rustls::pki_types::pem::PemObject;
        use rustls::pki_types::{CertificateDer, PrivateKeyDer};
        let bad_key = |reason: String| TlsError::Invalid {
            path: self.key.clone(),
            reason,
        };
        let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes())
            .map_err(|e| bad_key(format!("not a PEM private key ({e})")))?;
        let key = rustls::crypto::ring::sign::any_supported_type(&key)
            .map_err(|e| bad_key(format!("unusable private key ({e})")))?;
        let leaf = pki::certs_from_pem(cert_pem).map_err(|e| TlsError::Invalid {
            path: self.cert.clone(),
            reason: e.to_string(),
        })?;
        let leaf = CertificateDer::from(leaf.into_iter().next().unwrap_or_default());
        rustls::sign::CertifiedKey::new(vec![leaf], key)
            .keys_match()
            .map_err(|_| {
                bad_key(format!(
                    "private key does not match the certificate {} (use the key it was issued for)",
                    self.cert.display()
                ))
            })
    }
}

/// The first certificate in `pem` is valid now: not expired, not yet to
/// come. `what` names it in the error.
fn check_validity(path: &Path, pem: &str, what: &str) -> Result<(), TlsError> {
    let invalid = |reason: String| TlsError::Invalid {
        path: path.to_path_buf(),
        reason,
    };
    let der = pki::certs_from_pem(pem).map_err(|e| invalid(e.to_string()))?;
    let der = der.first().map(Vec::as_slice).unwrap_or_default();
    let (_, cert) = x509_parser::parse_x509_certificate(der).map_err(|e| invalid(e.to_string()))?;
    let validity = cert.validity();
    let now = x509_parser::time::ASN1Time::now();
    if now < validity.not_before {
        return Err(invalid(format!(
            "{what} is not valid before {} (check this machine's clock)",
            validity.not_before
        )));
    }
    if now > validity.not_after {
        return Err(invalid(format!(
            "{what} expired on {} (issue a new one)",
            validity.not_after
        )));
    }
    Ok(())
}

/// A private key file must not be readable by every user.
pub fn check_key_mode(path: &Path) -> Result<(), TlsError> {
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(path)
        .map_err(|source| TlsError::Read {
            path: path.to_path_buf(),
            source,
        })?
        .permissions()
        .mode();
    if mode & 0o004 != 0 {
        return Err(TlsError::Invalid {
            path: path.to_path_buf(),
            reason: format!(
                "private key is readable by every user (mode {:04o}; accepted 0600 or 0640: chmod 600 it)",
                mode & 0o7777
            ),
        });
    }
    Ok(())
}

fn read(path: &Path) -> Result<String, TlsError> {
    std::fs::read_to_string(path).map_err(|source| TlsError::Read {
        path: path.to_path_buf(),
        source,
    })
}

/// Loaded TLS material: build server and client configs from it without
/// reading the files again.
#[derive(Clone)]
pub struct TlsMaterial {
    /// CA certificate (PEM).
    pub ca_pem: String,
    /// Own certificate chain (PEM).
    pub cert_pem: String,
    key_pem: String,
    /// The identity in our own certificate.
    pub identity: Identity,
}

impl std::fmt::Debug for TlsMaterial {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsMaterial")
            .field("identity", &self.identity)
            .field("key_pem", &"[redacted]")
            .finish_non_exhaustive()
    }
}

impl TlsMaterial {
    /// Material from PEM strings already in memory (tests, in-process use).
    pub fn from_pem(ca_pem: &str, cert_pem: &str, key_pem: &str) -> Result<TlsMaterial, PkiError> {
        pki::certs_from_pem(ca_pem)?;
        let identity = pki::identity_of_pem(cert_pem)?;
        Ok(TlsMaterial {
            ca_pem: ca_pem.to_string(),
            cert_pem: cert_pem.to_string(),
            key_pem: key_pem.to_string(),
            identity,
        })
    }

    /// Server side: present our chain; verify client certificates against
    /// the CA, but allow clients without one (see the module doc).
    pub fn server_tls(&self) -> ServerTlsConfig {
        install_crypto_provider();
        ServerTlsConfig::new()
            .identity(tonic::transport::Identity::from_pem(
                &self.cert_pem,
                &self.key_pem,
            ))
            .client_ca_root(Certificate::from_pem(&self.ca_pem))
            .client_auth_optional(true)
    }

    /// Client side: present our chain, trust only the CA, expect
    /// `server_name` in the server's certificate.
    pub fn client_tls(&self, server_name: &str) -> ClientTlsConfig {
        install_crypto_provider();
        ClientTlsConfig::new()
            .ca_certificate(Certificate::from_pem(&self.ca_pem))
            .identity(tonic::transport::Identity::from_pem(
                &self.cert_pem,
                &self.key_pem,
            ))
            .domain_name(server_name)
    }

    /// An `https://` endpoint for `addr` (`host:port`, optionally with an
    /// `http://`/`https://` prefix) using this material.
    pub fn endpoint(&self, addr: &str) -> Result<Endpoint, TlsError> {
        self.endpoint_named(addr, None)
    }

    /// An `https://` endpoint for controller `id` at `addr`: the server must
    /// present controller `id`'s certificate (see
    /// [`crate::pki::controller_server_name`]), whatever else answers there.
    pub fn controller_endpoint(&self, addr: &str, id: u64) -> Result<Endpoint, TlsError> {
        self.endpoint_named(addr, Some(&crate::pki::controller_server_name(id)))
    }

    fn endpoint_named(&self, addr: &str, server_name: Option<&str>) -> Result<Endpoint, TlsError> {
        let (authority, host) = split_addr(addr)?;
        let endpoint =
            Endpoint::from_shared(format!("https://{authority}")).map_err(|e| TlsError::Address {
                addr: addr.to_string(),
                reason: e.to_string(),
            })?;
        endpoint
            .tls_config(self.client_tls(server_name.unwrap_or(&host)))
            .map_err(|e| TlsError::Address {
                addr: addr.to_string(),
                reason: e.to_string(),
            })
    }
}

/// Server TLS config from files (see [`TlsMaterial::server_tls`]).
pub fn server_tls(files: &TlsFiles) -> Result<ServerTlsConfig, TlsError> {
    Ok(files.load()?.server_tls())
}

/// Client TLS config from files (see [`TlsMaterial::client_tls`]).
pub fn client_tls(files: &TlsFiles, server_name: &str) -> Result<ClientTlsConfig, TlsError> {
    Ok(files.load()?.client_tls(server_name))
}

/// An `https://host:port` endpoint for `addr` with mutual TLS from `files`;
/// the server name checked is the host part. Every rpool client uses this
/// (or [`TlsMaterial::endpoint`]).
pub fn https_endpoint(addr: &str, files: &TlsFiles) -> Result<Endpoint, TlsError> {
    files.load()?.endpoint(addr)
}

/// Splits `addr` into (`host:port` authority, host without brackets).
/// Accepts an optional `http://`/`https://` prefix and a trailing `/`.
pub fn split_addr(addr: &str) -> Result<(String, String), TlsError> {
    let bad = |reason: &str| TlsError::Address {
        addr: addr.to_string(),
        reason: reason.to_string(),
    };
    let rest = addr
        .strip_prefix("https://")
        .or_else(|| addr.strip_prefix("http://"))
        .unwrap_or(addr)
        .trim_end_matches('/');
    if rest.is_empty() || rest.contains('/') {
        return Err(bad("expected host:port"));
    }
    let host = if let Some(v6) = rest.strip_prefix('[') {
        let (host, port) = v6
            .split_once(']')
            .ok_or_else(|| bad("unclosed '[' in IPv6 address"))?;
        if !port.starts_with(':') {
            return Err(bad("expected [ipv6]:port"));
        }
        host.to_string()
    } else {
        match rest.rsplit_once(':') {
            Some((host, port)) if !host.is_empty() && port.parse::<u16>().is_ok() => host.to_string(),
            _ => return Err(bad("expected host:port")),
        }
    };
    Ok((rest.to_string(), host))
}

/// The identity in the first certificate the peer presented, if any (and if
/// it carries an rpool identity).
pub fn peer_identity<T>(req: &tonic::Request<T>) -> Option<Identity> {
    let certs = req.peer_certs()?;
    let first = certs.first()?;
    pki::identity_of_der(first.as_ref()).ok()
}

/// Whether the peer presented any certificate at all.
pub fn peer_has_cert<T>(req: &tonic::Request<T>) -> bool {
    req.peer_certs().is_some_and(|c| !c.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pki::Ca;
    use rustls::client::danger::ServerCertVerifier;
    use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
    use std::sync::Arc;
    use std::time::Duration;

    const DAY: Duration = Duration::from_secs(86_400);

    fn ders(pem: &str) -> Vec<CertificateDer<'static>> {
        pki::certs_from_pem(pem)
            .unwrap()
            .into_iter()
            .map(CertificateDer::from)
            .collect()
    }

    fn roots(ca: &Ca) -> Arc<rustls::RootCertStore> {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(ders(ca.cert_pem()).remove(0)).unwrap();
        Arc::new(roots)
    }

    /// The same client verification the server config builds (tonic uses
    /// rustls' WebPkiClientVerifier with the CA as the only root).
    fn client_cert_ok(ca: &Ca, chain_pem: &str) -> bool {
        install_crypto_provider();
        let verifier = rustls::server::WebPkiClientVerifier::builder(roots(ca))
            .allow_unauthenticated()
            .build()
            .unwrap();
        let chain = ders(chain_pem);
        verifier
            .verify_client_cert(&chain[0], &chain[1..], UnixTime::now())
            .is_ok()
    }

    fn server_cert_ok(ca: &Ca, chain_pem: &str, name: &str) -> bool {
        install_crypto_provider();
        let verifier = rustls::client::WebPkiServerVerifier::builder(roots(ca))
            .build()
            .unwrap();
        let chain = ders(chain_pem);
        let name = ServerName::try_from(name.to_string()).unwrap();
        verifier
            .verify_server_cert(&chain[0], &chain[1..], &name, &[], UnixTime::now())
            .is_ok()
    }

    #[test]
    fn a_controller_certificate_answers_to_its_own_id_name_only() {
        let ca = Ca::generate("ca").unwrap();
        let two = ca
            .issue(&Identity::Controller(2), &["10.0.0.12".into()], DAY)
            .unwrap();
        let name = |id| pki::controller_server_name(id);
        assert!(server_cert_ok(&ca, &two.cert_pem, &name(2)));
        assert!(server_cert_ok(&ca, &two.cert_pem, "10.0.0.12"));
        // A peer dialling controller 3 refuses controller 2's certificate,
        // even at controller 3's address.
        assert!(!server_cert_ok(&ca, &two.cert_pem, &name(3)));
        assert!(!server_cert_ok(&ca, &two.cert_pem, &name(22)));
        // Admin and agent certificates carry no controller name.
        let admin = ca.issue(&Identity::Admin("a".into()), &[], DAY).unwrap();
        assert!(!server_cert_ok(&ca, &admin.cert_pem, &name(2)));
        let ep = TlsMaterial::from_pem(ca.cert_pem(), &two.cert_pem, &two.key_pem)
            .unwrap()
            .controller_endpoint("10.0.0.13:7443", 3)
            .unwrap();
        assert_eq!(ep.uri().to_string(), "https://10.0.0.13:7443/");
    }

    #[test]
    fn client_certificates_verify_only_against_their_own_ca() {
        let ca = Ca::generate("ca").unwrap();
        let other = Ca::generate("ca").unwrap();
        let good = ca.issue(&Identity::Agent("h1".into()), &[], DAY).unwrap();
        let foreign = other.issue(&Identity::Agent("h1".into()), &[], DAY).unwrap();
        assert!(client_cert_ok(&ca, &good.cert_pem));
        assert!(!client_cert_ok(&ca, &foreign.cert_pem));
    }

    #[test]
    fn controller_certificates_verify_by_ip_and_dns_name() {
        let ca = Ca::generate("ca").unwrap();
        let sans = [
            "127.0.0.1".to_string(),
            "localhost".to_string(),
            "c1.example".to_string(),
        ];
        let c1 = ca.issue(&Identity::Controller(1), &sans, DAY).unwrap();
        assert!(server_cert_ok(&ca, &c1.cert_pem, "127.0.0.1"));
        assert!(server_cert_ok(&ca, &c1.cert_pem, "localhost"));
        assert!(server_cert_ok(&ca, &c1.cert_pem, "c1.example"));
        assert!(!server_cert_ok(&ca, &c1.cert_pem, "10.0.0.9"));
        assert!(!server_cert_ok(&ca, &c1.cert_pem, "c2.example"));
        // An agent or admin certificate cannot act as a server, whatever its names.
        let agent = ca.issue(&Identity::Agent("h".into()), &sans, DAY).unwrap();
        assert!(!server_cert_ok(&ca, &agent.cert_pem, "127.0.0.1"));
    }

    #[test]
    fn files_load_with_errors_naming_the_path() {
        let tmp = tempfile::tempdir().unwrap();
        let ca = Ca::generate("ca").unwrap();
        let other = Ca::generate("ca").unwrap();
        let files = TlsFiles::in_dir(tmp.path(), "admin");
        let err = files.load().unwrap_err().to_string();
        assert!(err.contains("ca.crt"), "{err}");

        let issued = ca.issue(&Identity::Admin("root".into()), &[], DAY).unwrap();
        pki::write_public(&files.ca, ca.cert_pem().as_bytes()).unwrap();
        pki::write_public(&files.cert, issued.cert_pem.as_bytes()).unwrap();
        let err = files.load().unwrap_err().to_string();
        assert!(err.contains("admin.key"), "{err}");
        pki::write_private(&files.key, issued.key_pem.as_bytes()).unwrap();
        let loaded = files.load().unwrap();
        assert_eq!(loaded.identity, Identity::Admin("root".into()));
        assert!(!format!("{loaded:?}").contains("PRIVATE"));

        pki::write_public(&files.ca, other.cert_pem().as_bytes()).unwrap();
        let err = files.load().unwrap_err().to_string();
        assert!(
            err.contains("admin.crt") && err.contains("not signed by this CA"),
            "{err}"
        );

        pki::write_public(&files.ca, b"hello").unwrap();
        let err = files.load().unwrap_err().to_string();
        assert!(err.contains("ca.crt"), "{err}");
    }

    /// A self-signed certificate valid from `from` to `to` (Unix seconds).
    fn cert_valid(from: i64, to: i64) -> String {
        let mut params = rcgen::CertificateParams::new(vec!["x".to_owned()]).unwrap();
        params.not_before = ::time::OffsetDateTime::from_unix_timestamp(from).unwrap();
        params.not_after = ::time::OffsetDateTime::from_unix_timestamp(to).unwrap();
        let key = rcgen::KeyPair::generate().unwrap();
        params.self_signed(&key).unwrap().pem()
    }

    #[test]
    fn expired_and_future_certificates_are_named_with_their_dates() {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs() as i64;
        let path = Path::new("/etc/rpool/pki/x.crt");
        let past = check_validity(path, &cert_valid(now - 7_200, now - 3_600), "certificate")
            .unwrap_err()
            .to_string();
        assert!(
            past.starts_with("/etc/rpool/pki/x.crt: certificate expired on "),
            "{past}"
        );
        let future = check_validity(path, &cert_valid(now + 3_600, now + 7_200), "CA certificate")
            .unwrap_err()
            .to_string();
        assert!(
            future.starts_with("/etc/rpool/pki/x.crt: CA certificate is not valid before "),
            "{future}"
        );
        check_validity(path, &cert_valid(now - 60, now + 60), "certificate").unwrap();
    }

    #[test]
    fn a_key_that_is_not_the_certificates_or_readable_by_all_is_named() {
        use std::os::unix::fs::PermissionsExt;
        let tmp = tempfile::tempdir().unwrap();
        let ca = Ca::generate("ca").unwrap();
        let files = TlsFiles::in_dir(tmp.path(), "admin");
        let mine = ca.issue(&Identity::Admin("a".into()), &[], DAY).unwrap();
        let other = ca.issue(&Identity::Admin("a".into()), &[], DAY).unwrap();
        pki::write_public(&files.ca, ca.cert_pem().as_bytes()).unwrap();
        pki::write_public(&files.cert, mine.cert_pem.as_bytes()).unwrap();
        pki::write_private(&files.key, other.key_pem.as_bytes()).unwrap();
        let err = files.load().unwrap_err().to_string();
        assert!(
            err.starts_with(&format!(
                "{}: private key does not match the certificate",
                files.key.display()
            )),
            "{err}"
        );
        pki::write_private(&files.key, mine.key_pem.as_bytes()).unwrap();
        files.check().unwrap();
        std::fs::set_permissions(&files.key, std::fs::Permissions::from_mode(0o644)).unwrap();
        files.load().unwrap();
        let err = files.check().unwrap_err().to_string();
        assert!(
            err.starts_with(&format!(
                "{}: private key is readable by every user (mode 0644",
                files.key.display()
            )),
            "{err}"
        );
    }

    #[test]
    fn addresses_split_into_authority_and_server_name() {
        let ok = |a: &str| split_addr(a).unwrap();
        assert_eq!(
            ok("127.0.0.1:7000"),
            ("127.0.0.1:7000".into(), "127.0.0.1".into())
        );
        assert_eq!(
            ok("http://c1.example:7000/"),
            ("c1.example:7000".into(), "c1.example".into())
        );
        assert_eq!(ok("https://[::1]:7000"), ("[::1]:7000".into(), "::1".into()));
        for bad in ["", "c1", "c1:port", "[::1", "http://a:1/path", ":7000"] {
            assert!(split_addr(bad).is_err(), "{bad}");
        }
    }

    #[tokio::test]
    async fn endpoints_are_https_with_the_host_as_server_name() {
        let ca = Ca::generate("ca").unwrap();
        let issued = ca.issue(&Identity::Admin("a".into()), &[], DAY).unwrap();
        let m = TlsMaterial::from_pem(ca.cert_pem(), &issued.cert_pem, &issued.key_pem).unwrap();
        let ep = m.endpoint("http://127.0.0.1:1").unwrap();
        assert_eq!(ep.uri().scheme_str(), Some("https"));
        // Nothing listens on port 1: the connection fails, it does not panic.
        assert!(ep.connect().await.is_err());
    }
}
