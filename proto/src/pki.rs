//! rpool's private PKI: one CA per installation, ECDSA P-256 certificates
//! whose identity is a URI SubjectAltName.
//!
//! | who | URI SAN | also |
//! |---|---|---|
//! | controller `id` | `urn:rpool:controller:<id>` | DNS/IP SANs for every address it is reached at |
//! | admin `name` | `urn:rpool:admin:<name>` | |
//! | agent | `urn:rpool:agent:<host_id>` | |
//!
//! The subject's CN is only a readable name; authorization reads the URI
//! ([`identity_of_der`]). The CA's *pin* (`sha256:<hex>` of its
//! SubjectPublicKeyInfo, like kubeadm's discovery-token-ca-cert-hash) lets a
//! new agent check the CA it is handed. Every certificate starts
//! [`CLOCK_SKEW`] in the past.

use std::fmt;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use rcgen::{
    BasicConstraints, CertificateParams, CertificateSigningRequestParams, DistinguishedName, DnType,
    ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose, SanType, SerialNumber,
};
use x509_parser::certificate::X509Certificate;
use x509_parser::extensions::GeneralName;

/// How far in the past every certificate's validity starts (clock skew
/// between the machine that signs and the machines that verify).
pub const CLOCK_SKEW: Duration = Duration::from_secs(5 * 60);

/// Validity of a CA made by [`Ca::generate`]: ten years.
pub const CA_TTL: Duration = Duration::from_secs(10 * 365 * 24 * 3600);

/// Longest accepted name (admin name or host id) inside an identity.
pub const MAX_NAME_LEN: usize = 128;

const URI_PREFIX: &str = "urn:rpool:";

/// What can go wrong creating, reading or writing PKI material.
#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    /// Certificate or key generation/signing failed.
    #[error("certificate generation failed: {0}")]
    Generate(#[from] rcgen::Error),
    /// A PEM or DER blob is not what it should be.
    #[error("{what}: {reason}")]
    Parse {
        /// What was being parsed (e.g. "certificate", "CA key").
        what: &'static str,
        /// Why it failed.
        reason: String,
    },
    /// The certificate carries no `urn:rpool:` URI SubjectAltName.
    #[error("certificate has no rpool identity (no urn:rpool: URI SubjectAltName)")]
    NoIdentity,
    /// The URI SAN is `urn:rpool:` but not a known role or a valid name.
    #[error("unknown rpool identity {0:?}")]
    UnknownIdentity(String),
    /// A name given for an identity is not acceptable.
    #[error("invalid {what} {name:?}: use 1 to {MAX_NAME_LEN} characters from A-Z a-z 0-9 . _ - @")]
    InvalidName {
        /// "admin name" or "host id".
        what: &'static str,
        /// The rejected name.
        name: String,
    },
    /// The CA private key does not belong to the CA certificate.
    #[error("the CA key does not match the CA certificate")]
    KeyMismatch,
    /// Reading or writing a file.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
}

fn parse_err(what: &'static str, reason: impl fmt::Display) -> PkiError {
    PkiError::Parse {
        what,
        reason: reason.to_string(),
    }
}

/// Who a certificate speaks for.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Identity {
    /// A controller replica, by its Raft id.
    Controller(u64),
    /// An administrator (rpoolctl), by name.
    Admin(String),
    /// A host agent, by its host id.
    Agent(String),
}

impl Identity {
    /// The URI SubjectAltName carrying this identity.
    pub fn uri(&self) -> String {
        match self {
            Identity::Controller(id) => format!("{URI_PREFIX}controller:{id}"),
            Identity::Admin(name) => format!("{URI_PREFIX}admin:{name}"),
            Identity::Agent(host) => format!("{URI_PREFIX}agent:{host}"),
        }
    }

    /// Parses a URI made by [`Identity::uri`]; `None` if it is not an
    /// `urn:rpool:` URI at all.
    pub fn from_uri(uri: &str) -> Option<Result<Identity, PkiError>> {
        let rest = uri.strip_prefix(URI_PREFIX)?;
        let unknown = || PkiError::UnknownIdentity(uri.to_string());
        let parsed = match rest.split_once(':') {
            Some(("controller", id)) => id
                .parse::<u64>()
                .ok()
                .filter(|id| *id > 0)
                .map(Identity::Controller)
                .ok_or_else(unknown),
            Some(("admin", name)) => Identity::admin(name).map_err(|_| unknown()),
            Some(("agent", host)) => Identity::agent(host).map_err(|_| unknown()),
            _ => Err(unknown()),
        };
        Some(parsed)
    }

    /// An admin identity, checking the name.
    pub fn admin(name: &str) -> Result<Identity, PkiError> {
        check_name("admin name", name)?;
        Ok(Identity::Admin(name.to_string()))
    }

    /// An agent identity, checking the host id.
    pub fn agent(host_id: &str) -> Result<Identity, PkiError> {
        check_name("host id", host_id)?;
        Ok(Identity::Agent(host_id.to_string()))
    }

    /// The readable subject CN.
    pub fn common_name(&self) -> String {
        match self {
            Identity::Controller(id) => format!("rpool-controller-{id}"),
            Identity::Admin(name) => format!("rpool-admin-{name}"),
            Identity::Agent(host) => format!("rpool-agent-{host}"),
        }
    }

    /// The role, for logs and metrics: `controller`, `admin` or `agent`.
    pub fn role(&self) -> &'static str {
        match self {
            Identity::Controller(_) => "controller",
            Identity::Admin(_) => "admin",
            Identity::Agent(_) => "agent",
        }
    }

    fn validate(&self) -> Result<(), PkiError> {
        match self {
            Identity::Controller(0) => Err(PkiError::UnknownIdentity(self.uri())),
            Identity::Controller(_) => Ok(()),
            Identity::Admin(name) => check_name("admin name", name),
            Identity::Agent(host) => check_name("host id", host),
        }
    }
}

impl fmt::Display for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Identity::Controller(id) => write!(f, "controller {id}"),
            Identity::Admin(name) => write!(f, "admin {name}"),
            Identity::Agent(host) => write!(f, "agent {host}"),
        }
    }
}

/// Whether `name` may be used as an admin name or host id.
pub fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_NAME_LEN
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-' | b'@'))
}

fn check_name(what: &'static str, name: &str) -> Result<(), PkiError> {
    if valid_name(name) {
        Ok(())
    } else {
        Err(PkiError::InvalidName {
            what,
            name: name.to_string(),
        })
    }
}

/// The rpool identity in a DER certificate (its `urn:rpool:` URI SAN).
pub fn identity_of_der(cert_der: &[u8]) -> Result<Identity, PkiError> {
    let (_, cert) = x509_parser::parse_x509_certificate(cert_der).map_err(|e| parse_err("certificate", e))?;
    identity_of(&cert)
}

fn identity_of(cert: &X509Certificate<'_>) -> Result<Identity, PkiError> {
    let san = cert
        .subject_alternative_name()
        .map_err(|e| parse_err("certificate SubjectAltName", e))?
        .ok_or(PkiError::NoIdentity)?;
    for name in &san.value.general_names {
        if let GeneralName::URI(uri) = name
            && let Some(identity) = Identity::from_uri(uri)
        {
            return identity;
        }
    }
    Err(PkiError::NoIdentity)
}

/// Every certificate (as DER) in a PEM text, in order; error if none.
pub fn certs_from_pem(pem: &str) -> Result<Vec<Vec<u8>>, PkiError> {
    let mut out = Vec::new();
    for block in x509_parser::pem::Pem::iter_from_buffer(pem.as_bytes()) {
        let block = block.map_err(|e| parse_err("certificate PEM", e))?;
        if block.label == "CERTIFICATE" {
            out.push(block.contents);
        }
    }
    if out.is_empty() {
        return Err(parse_err("certificate PEM", "no CERTIFICATE block"));
    }
    Ok(out)
}

fn first_cert_der(pem: &str) -> Result<Vec<u8>, PkiError> {
    certs_from_pem(pem).map(|mut certs| certs.swap_remove(0))
}

fn parse_der<'a>(der: &'a [u8]) -> Result<X509Certificate<'a>, PkiError> {
    x509_parser::parse_x509_certificate(der)
        .map(|(_, c)| c)
        .map_err(|e| parse_err("certificate", e))
}

/// `sha256:<hex>` of a certificate's SubjectPublicKeyInfo.
fn pin_of_der(der: &[u8]) -> Result<String, PkiError> {
    let cert = parse_der(der)?;
    let digest = ring::digest::digest(&ring::digest::SHA256, cert.public_key().raw);
    let mut out = String::from("sha256:");
    for b in digest.as_ref() {
        out.push_str(&format!("{b:02x}"));
    }
    Ok(out)
}

/// The pin (`sha256:<hex>` of the SubjectPublicKeyInfo) of the first
/// certificate in `pem`.
pub fn pin_of_cert_pem(pem: &str) -> Result<String, PkiError> {
    pin_of_der(&first_cert_der(pem)?)
}

/// When the first certificate in `pem` expires.
pub fn not_after(cert_pem: &str) -> Result<SystemTime, PkiError> {
    let der = first_cert_der(cert_pem)?;
    let cert = parse_der(&der)?;
    let secs = cert.validity().not_after.timestamp();
    let secs = u64::try_from(secs).map_err(|_| parse_err("certificate", "expires before 1970"))?;
    Ok(SystemTime::UNIX_EPOCH + Duration::from_secs(secs))
}

/// The identity in the first certificate of `cert_pem`.
pub fn identity_of_pem(cert_pem: &str) -> Result<Identity, PkiError> {
    identity_of_der(&first_cert_der(cert_pem)?)
}

/// Checks that the first certificate in `cert_pem` is signed by the CA in
/// `ca_pem` and valid now.
pub fn verify_issued_by(cert_pem: &str, ca_pem: &str) -> Result<(), PkiError> {
    let leaf_der = first_cert_der(cert_pem)?;
    let ca_der = first_cert_der(ca_pem)?;
    let leaf = parse_der(&leaf_der)?;
    let ca = parse_der(&ca_der)?;
    leaf.verify_signature(Some(ca.public_key()))
        .map_err(|_| parse_err("certificate", "not signed by this CA"))?;
    if !leaf.validity().is_valid() {
        return Err(parse_err("certificate", "expired or not yet valid"));
    }
    Ok(())
}

/// A certificate chain and its private key, as PEM.
#[derive(Clone)]
pub struct Issued {
    /// The leaf certificate followed by the CA certificate.
    pub cert_pem: String,
    /// PKCS#8 private key (secret: never log).
    pub key_pem: String,
}

impl fmt::Debug for Issued {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Issued")
            .field("key_pem", &"[redacted]")
            .finish_non_exhaustive()
    }
}

/// The rpool certificate authority: its certificate and signing key.
pub struct Ca {
    cert_pem: String,
    cert_der: Vec<u8>,
    key_pem: String,
}

impl fmt::Debug for Ca {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Ca")
            .field("key", &"[redacted]")
            .finish_non_exhaustive()
    }
}

fn new_key() -> Result<KeyPair, PkiError> {
    Ok(KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?)
}

fn random_serial() -> Result<SerialNumber, PkiError> {
    use ring::rand::SecureRandom;
    let mut bytes = [0u8; 16];
    ring::rand::SystemRandom::new()
        .fill(&mut bytes)
        .map_err(|_| parse_err("serial number", "no system randomness"))?;
    bytes[0] &= 0x7f; // positive
    bytes[0] |= 0x01; // no leading zero byte
    Ok(SerialNumber::from_slice(&bytes))
}

/// Validity window: from [`CLOCK_SKEW`] ago to `ttl` from now.
fn set_validity(params: &mut CertificateParams, ttl: Duration) {
    let now = SystemTime::now();
    params.not_before = (now - CLOCK_SKEW).into();
    params.not_after = (now + ttl).into();
}

/// The DNS name every controller certificate carries for its id.
/// Controllers connecting to a peer expect this name (not the address's),
/// so the certificate of another controller answering at that address is
/// refused at the handshake.
pub fn controller_server_name(id: u64) -> String {
    format!("controller-{id}.rpool.internal")
}

fn leaf_params(identity: &Identity, sans: &[String], ttl: Duration) -> Result<CertificateParams, PkiError> {
    identity.validate()?;
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::OrganizationName, "rpool");
    dn.push(DnType::CommonName, identity.common_name());
    params.distinguished_name = dn;
    params
        .subject_alt_names
        .push(SanType::URI(identity.uri().try_into()?));
    if let Identity::Controller(id) = identity {
        params
            .subject_alt_names
            .push(SanType::DnsName(controller_server_name(*id).try_into()?));
    }
    for san in sans {
        let san = san.trim();
        let entry = match san.parse::<std::net::IpAddr>() {
            Ok(ip) => SanType::IpAddress(ip),
            Err(_) => SanType::DnsName(san.to_string().try_into()?),
        };
        if !params.subject_alt_names.contains(&entry) {
            params.subject_alt_names.push(entry);
        }
    }
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = match identity {
        Identity::Controller(_) => {
            vec![
                ExtendedKeyUsagePurpose::ServerAuth,
                ExtendedKeyUsagePurpose::ClientAuth,
            ]
        }
        Identity::Admin(_) | Identity::Agent(_) => vec![ExtendedKeyUsagePurpose::ClientAuth],
    };
    params.use_authority_key_identifier_extension = true;
    params.serial_number = Some(random_serial()?);
    set_validity(&mut params, ttl);
    Ok(params)
}

impl Ca {
    /// A new self-signed CA valid for [`CA_TTL`].
    pub fn generate(common_name: &str) -> Result<Ca, PkiError> {
        let key = new_key()?;
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::OrganizationName, "rpool");
        dn.push(DnType::CommonName, common_name);
        params.distinguished_name = dn;
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        params.serial_number = Some(random_serial()?);
        set_validity(&mut params, CA_TTL);
        let cert = params.self_signed(&key)?;
        Ok(Ca {
            cert_pem: cert.pem(),
            cert_der: cert.der().to_vec(),
            key_pem: key.serialize_pem(),
        })
    }

    /// Loads a CA from its certificate and PKCS#8 key; checks they belong together.
    pub fn from_pem(cert_pem: &str, key_pem: &str) -> Result<Ca, PkiError> {
        let cert_der = first_cert_der(cert_pem)?;
        let key = KeyPair::from_pem(key_pem).map_err(|e| parse_err("CA key", e))?;
        let cert = parse_der(&cert_der)?;
        if cert.public_key().subject_public_key.data.as_ref() != key.public_key_raw() {
            return Err(PkiError::KeyMismatch);
        }
        if !cert.is_ca() {
            return Err(parse_err(
                "CA certificate",
                "not a CA (basicConstraints cA is not set)",
            ));
        }
        let cert_pem = pem_of_der(&cert_der);
        Ok(Ca {
            cert_pem,
            cert_der,
            key_pem: key_pem.to_string(),
        })
    }

    /// The CA certificate (PEM).
    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// The CA private key (PEM; secret: never log).
    pub fn key_pem(&self) -> &str {
        &self.key_pem
    }

    /// `sha256:<hex>` of the CA certificate's SubjectPublicKeyInfo.
    pub fn pin(&self) -> String {
        // The DER was parsed when the CA was made or loaded.
        pin_of_der(&self.cert_der).unwrap_or_default()
    }

    fn issuer(&self) -> Result<Issuer<'static, KeyPair>, PkiError> {
        let key = KeyPair::from_pem(&self.key_pem).map_err(|e| parse_err("CA key", e))?;
        Ok(Issuer::from_ca_cert_der(&self.cert_der.clone().into(), key)?)
    }

    /// Issues a certificate and a fresh key for `identity`, with extra
    /// `sans` (DNS names or IP literals), valid for `ttl`.
    pub fn issue(&self, identity: &Identity, sans: &[String], ttl: Duration) -> Result<Issued, PkiError> {
        let key = new_key()?;
        let cert = leaf_params(identity, sans, ttl)?.signed_by(&key, &self.issuer()?)?;
        Ok(Issued {
            cert_pem: format!("{}{}", cert.pem(), self.cert_pem),
            key_pem: key.serialize_pem(),
        })
    }

    /// Signs a CSR for `identity`: only the CSR's public key is used (after
    /// checking its self-signature); subject and SANs come from `identity`.
    /// Returns the leaf followed by the CA certificate.
    pub fn sign_csr(&self, csr_pem: &str, identity: &Identity, ttl: Duration) -> Result<String, PkiError> {
        let csr = CertificateSigningRequestParams::from_pem(csr_pem)
            .map_err(|e| parse_err("certificate signing request", e))?;
        let cert = leaf_params(identity, &[], ttl)?.signed_by(&csr.public_key, &self.issuer()?)?;
        Ok(format!("{}{}", cert.pem(), self.cert_pem))
    }
}

fn pem_of_der(der: &[u8]) -> String {
    let mut out = String::from("-----BEGIN CERTIFICATE-----\n");
    let b64 = base64_encode(der);
    for line in b64.as_bytes().chunks(64) {
        out.push_str(std::str::from_utf8(line).unwrap_or_default());
        out.push('\n');
    }
    out.push_str("-----END CERTIFICATE-----\n");
    out
}

fn base64_encode(data: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        let b = [chunk[0], *chunk.get(1).unwrap_or(&0), *chunk.get(2).unwrap_or(&0)];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// A new key and a CSR for `identity` (the signer sets the real subject
/// and SANs anyway). Returns `(csr_pem, key_pem)`.
pub fn new_csr(identity: &Identity) -> Result<(String, String), PkiError> {
    identity.validate()?;
    let key = new_key()?;
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, identity.common_name());
    params.distinguished_name = dn;
    let csr = params.serialize_request(&key)?;
    Ok((csr.pem()?, key.serialize_pem()))
}

/// Writes a secret file: mode 0600, missing parent directories made 0700,
/// atomically (temporary file in the same directory, then rename).
pub fn write_private(path: &Path, bytes: &[u8]) -> Result<(), PkiError> {
    write_atomic(path, bytes, 0o600)
}

/// Writes a public file (certificate): mode 0644, atomically.
pub fn write_public(path: &Path, bytes: &[u8]) -> Result<(), PkiError> {
    write_atomic(path, bytes, 0o644)
}

fn write_atomic(path: &Path, bytes: &[u8], mode: u32) -> Result<(), PkiError> {
    use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
    let io = |p: &Path| {
        let p = p.to_path_buf();
        move |source| PkiError::Io { path: p, source }
    };
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&dir)
        .map_err(io(&dir))?;
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{name}.tmp{}", std::process::id()));
    let result = (|| {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(mode)
            .open(&tmp)
            .map_err(io(&tmp))?;
        // The mode given to open() is filtered by the umask: set it exactly.
        f.set_permissions(std::fs::Permissions::from_mode(mode))
            .map_err(io(&tmp))?;
        f.write_all(bytes).map_err(io(&tmp))?;
        f.sync_all().map_err(io(&tmp))?;
        std::fs::rename(&tmp, path).map_err(io(path))
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// Reads a PEM file, naming the path on error.
pub fn read_pem(path: &Path) -> Result<String, PkiError> {
    std::fs::read_to_string(path).map_err(|source| PkiError::Io {
        path: path.to_path_buf(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY: Duration = Duration::from_secs(24 * 3600);

    fn verifies(cert_pem: &str, ca_pem: &str) -> bool {
        verify_issued_by(cert_pem, ca_pem).is_ok()
    }

    #[test]
    fn issued_certificate_chains_to_its_ca_and_carries_the_identity() {
        let ca = Ca::generate("test CA").unwrap();
        let id = Identity::Controller(2);
        let issued = ca
            .issue(&id, &["127.0.0.1".into(), "c2.example".into()], DAY)
            .unwrap();
        let chain = certs_from_pem(&issued.cert_pem).unwrap();
        assert_eq!(chain.len(), 2, "leaf followed by the CA");
        assert_eq!(chain[1], certs_from_pem(ca.cert_pem()).unwrap()[0]);
        assert!(verifies(&issued.cert_pem, ca.cert_pem()));
        assert_eq!(identity_of_pem(&issued.cert_pem).unwrap(), id);
        let leaf = parse_der(&chain[0]).unwrap();
        let names: Vec<String> = leaf
            .subject_alternative_name()
            .unwrap()
            .unwrap()
            .value
            .general_names
            .iter()
            .map(|n| n.to_string())
            .collect();
        assert!(names.iter().any(|n| n.contains("c2.example")), "{names:?}");
        assert!(names.iter().any(|n| n.contains("7f:00:00:01")), "{names:?}");
        assert!(issued.key_pem.contains("PRIVATE KEY"));
        assert!(!format!("{issued:?}").contains("PRIVATE"));
    }

    #[test]
    fn validity_starts_in_the_past_and_ends_after_ttl() {
        let ca = Ca::generate("ca").unwrap();
        let issued = ca.issue(&Identity::Admin("alice".into()), &[], DAY).unwrap();
        let der = first_cert_der(&issued.cert_pem).unwrap();
        let cert = parse_der(&der).unwrap();
        let now = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap()
            .as_secs() as i64;
        let start = cert.validity().not_before.timestamp();
        assert!(
            start <= now - 299 && start >= now - 301 - 5,
            "not_before {start}, now {now}"
        );
        let end = not_after(&issued.cert_pem).unwrap();
        let left = end.duration_since(SystemTime::now()).unwrap();
        assert!(left > DAY - Duration::from_secs(10) && left <= DAY, "{left:?}");
    }

    #[test]
    fn certificate_from_another_ca_does_not_verify() {
        let ca = Ca::generate("ca").unwrap();
        let other = Ca::generate("ca").unwrap();
        let issued = other.issue(&Identity::Agent("h1".into()), &[], DAY).unwrap();
        assert!(!verifies(&issued.cert_pem, ca.cert_pem()));
        assert!(verifies(&issued.cert_pem, other.cert_pem()));
        assert_ne!(ca.pin(), other.pin());
    }

    #[test]
    fn pin_is_stable_across_reload_and_matches_the_cert_file() {
        let ca = Ca::generate("ca").unwrap();
        let pin = ca.pin();
        assert!(pin.starts_with("sha256:") && pin.len() == 7 + 64, "{pin}");
        assert!(
            pin[7..]
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        );
        let again = Ca::from_pem(ca.cert_pem(), ca.key_pem()).unwrap();
        assert_eq!(again.pin(), pin);
        assert_eq!(
            again.cert_pem(),
            ca.cert_pem(),
            "PEM re-encoding is byte-identical"
        );
        assert_eq!(pin_of_cert_pem(ca.cert_pem()).unwrap(), pin);
        // A leaf's chain file pins its leaf key, not the CA's.
        let issued = ca.issue(&Identity::Agent("h".into()), &[], DAY).unwrap();
        assert_ne!(pin_of_cert_pem(&issued.cert_pem).unwrap(), pin);
        // A reloaded CA still issues certificates that verify.
        let issued = again.issue(&Identity::Agent("h".into()), &[], DAY).unwrap();
        assert!(verifies(&issued.cert_pem, ca.cert_pem()));
    }

    #[test]
    fn ca_refuses_a_key_that_is_not_its_own() {
        let ca = Ca::generate("ca").unwrap();
        let other = Ca::generate("ca").unwrap();
        assert!(matches!(
            Ca::from_pem(ca.cert_pem(), other.key_pem()),
            Err(PkiError::KeyMismatch)
        ));
        let leaf = ca.issue(&Identity::Admin("a".into()), &[], DAY).unwrap();
        assert!(
            Ca::from_pem(&leaf.cert_pem, &leaf.key_pem).is_err(),
            "a leaf is not a CA"
        );
        assert!(Ca::from_pem("garbage", ca.key_pem()).is_err());
    }

    #[test]
    fn identity_uri_round_trips() {
        for id in [
            Identity::Controller(7),
            Identity::Admin("alice@ops".into()),
            Identity::Agent("0b6f7c0e-9d1c-4f43-8c43-1d2b9d3c1a55".into()),
        ] {
            assert_eq!(Identity::from_uri(&id.uri()).unwrap().unwrap(), id);
        }
        assert_eq!(Identity::Controller(3).uri(), "urn:rpool:controller:3");
        assert_eq!(Identity::Admin("bob".into()).to_string(), "admin bob");
        assert!(Identity::from_uri("https://example.com").is_none());
        for bad in [
            "urn:rpool:controller:x",
            "urn:rpool:controller:0",
            "urn:rpool:king:x",
            "urn:rpool:admin:",
            "urn:rpool:agent:a/b",
        ] {
            assert!(matches!(Identity::from_uri(bad), Some(Err(_))), "{bad}");
        }
    }

    #[test]
    fn invalid_names_are_refused_before_signing() {
        let ca = Ca::generate("ca").unwrap();
        let err = ca.issue(&Identity::Admin("a b".into()), &[], DAY).unwrap_err();
        assert!(err.to_string().contains("admin name"), "{err}");
        assert!(Identity::agent(&"x".repeat(MAX_NAME_LEN + 1)).is_err());
        assert!(Identity::agent("ok-host_1.a").is_ok());
    }

    #[test]
    fn certificate_without_rpool_uri_has_no_identity() {
        let key = new_key().unwrap();
        let cert = CertificateParams::new(vec!["example.com".to_string()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        assert!(matches!(identity_of_der(cert.der()), Err(PkiError::NoIdentity)));
        assert!(identity_of_der(b"not a certificate").is_err());
    }

    #[test]
    fn csr_signing_takes_only_the_key_and_ignores_the_csr_subject() {
        let ca = Ca::generate("ca").unwrap();
        // A CSR that claims to be controller 1, with a DNS name.
        let key = new_key().unwrap();
        let mut params = CertificateParams::new(vec!["evil.example".to_string()]).unwrap();
        params
            .subject_alt_names
            .push(SanType::URI("urn:rpool:controller:1".try_into().unwrap()));
        params
            .distinguished_name
            .push(DnType::CommonName, "rpool-controller-1");
        let csr = params.serialize_request(&key).unwrap().pem().unwrap();
        let chain = ca.sign_csr(&csr, &Identity::Agent("h9".into()), DAY).unwrap();
        assert_eq!(identity_of_pem(&chain).unwrap(), Identity::Agent("h9".into()));
        assert!(verifies(&chain, ca.cert_pem()));
        let der = first_cert_der(&chain).unwrap();
        let leaf = parse_der(&der).unwrap();
        let sans = leaf.subject_alternative_name().unwrap().unwrap();
        assert_eq!(sans.value.general_names.len(), 1, "only the agent URI");
        assert!(
            leaf.subject().to_string().contains("rpool-agent-h9"),
            "{}",
            leaf.subject()
        );
        // The certificate carries the CSR's public key.
        assert_eq!(
            leaf.public_key().subject_public_key.data.as_ref(),
            key.public_key_raw()
        );
    }

    #[test]
    fn new_csr_is_signable_and_tampered_csr_is_refused() {
        let ca = Ca::generate("ca").unwrap();
        let id = Identity::Agent("h1".into());
        let (csr, key_pem) = new_csr(&id).unwrap();
        let chain = ca.sign_csr(&csr, &id, DAY).unwrap();
        let key = KeyPair::from_pem(&key_pem).unwrap();
        let der = first_cert_der(&chain).unwrap();
        assert_eq!(
            parse_der(&der)
                .unwrap()
                .public_key()
                .subject_public_key
                .data
                .as_ref(),
            key.public_key_raw()
        );
        // Flip a byte inside the signed body: the self-signature no longer holds.
        let block = x509_parser::pem::parse_x509_pem(csr.as_bytes()).unwrap().1;
        let mut body = block.contents.clone();
        let mid = body.len() / 2;
        body[mid] ^= 0x01;
        let tampered = format!(
            "-----BEGIN CERTIFICATE REQUEST-----\n{}\n-----END CERTIFICATE REQUEST-----\n",
            base64_encode(&body)
        );
        assert!(ca.sign_csr(&tampered, &id, DAY).is_err());
        assert!(ca.sign_csr("nonsense", &id, DAY).is_err());
    }

    #[test]
    fn base64_matches_known_vectors() {
        for (input, expected) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foobar", "Zm9vYmFy"),
        ] {
            assert_eq!(base64_encode(input.as_bytes()), expected);
        }
    }

    #[test]
    fn private_files_are_0600_in_0700_dirs_and_replaced_atomically() {
        use std::os::unix::fs::PermissionsExt;
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("new/dir/secret.key");
        write_private(&path, b"one").unwrap();
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&path), 0o600);
        assert_eq!(mode(&tmp.path().join("new/dir")), 0o700);
        assert_eq!(mode(&tmp.path().join("new")), 0o700);
        write_private(&path, b"two").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"two");
        assert_eq!(mode(&path), 0o600);
        let public = tmp.path().join("new/ca.crt");
        write_public(&public, b"cert").unwrap();
        assert_eq!(mode(&public), 0o644);
        let leftovers: Vec<_> = std::fs::read_dir(tmp.path().join("new/dir")).unwrap().collect();
        assert_eq!(leftovers.len(), 1, "no temporary file left behind");
        let err = write_private(&tmp.path().join("new/ca.crt/x"), b"x").unwrap_err();
        assert!(err.to_string().contains("ca.crt"), "{err}");
    }
}
