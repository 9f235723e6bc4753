//! Getting and renewing this host's certificate.
//!
//! **Enrollment** (like `kubeadm join --discovery-token-ca-cert-hash`): an
//! agent whose TLS directory has no valid certificate, and whose config has
//! an `[enroll]` section (a bootstrap token, inline or in a file, and the
//! CA pin), connects to a controller trusting it only through the pin
//! ([`rpool_proto::pinned`]), makes a fresh key and CSR, and calls
//! `EnrollService.Enroll`. It checks that the CA it gets back has the pin
//! and that the certificate names this host and chains to that CA, then
//! writes `ca.crt`, `agent.crt` (0644) and `agent.key` (0600). The normal
//! mutual-TLS session follows. The token is never logged: errors name the
//! token id at most.
//!
//! **Renewal**: [`run_renewer`] sleeps until two thirds of the
//! certificate's lifetime has passed (counted from its issue, which is
//! `not_before` + [`CLOCK_SKEW`]), then asks `EnrollService.Renew` over
//! the normal mutual-TLS connection for a certificate for a new key,
//! writes both files atomically and tells the session to reconnect with
//! them. Failures are retried with a growing delay, rotating over the
//! controllers.

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use rpool_proto::pinned;
use rpool_proto::pki::{self, CLOCK_SKEW, Identity};
use rpool_proto::tls::TlsFiles;
use rpool_proto::v1::enroll_service_client::EnrollServiceClient;
use rpool_proto::v1::{EnrollRequest, RenewRequest};
use serde::Deserialize;
use tokio::sync::watch;
use tracing::{info, warn};

/// Bound on one enrollment or renewal call (connect + RPC).
pub const CALL_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest a token file may be (bytes).
pub const TOKEN_FILE_MAX_BYTES: u64 = 4096;
/// Renewal retry delays: first, and the most.
pub const RENEW_RETRY_MIN: Duration = Duration::from_secs(1);
pub const RENEW_RETRY_MAX: Duration = Duration::from_secs(60);
/// Longest the renewer sleeps before looking at the certificate again
/// (it may have been replaced by hand or by a new enrollment).
pub const RECHECK: Duration = Duration::from_secs(60);

/// A bootstrap token as it appears in the config: Debug never shows it.
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct TokenText(String);

impl TokenText {
    pub fn new(text: impl Into<String>) -> TokenText {
        TokenText(text.into())
    }
}

impl fmt::Debug for TokenText {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

/// `[enroll]`: how to get a first certificate.
#[derive(Debug, Clone, PartialEq, Eq, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EnrollConfig {
    /// The bootstrap token, `[a-z0-9]{6}.[a-z0-9]{16}` (secret).
    pub token: Option<TokenText>,
    /// A file holding the token (whitespace around it is ignored).
    pub token_file: Option<PathBuf>,
    /// `sha256:<hex>` of the cluster CA's SubjectPublicKeyInfo, as printed
    /// by `rpoolctl token create`.
    pub ca_pin: String,
}

/// A bad `[enroll]` value: field and message (never the token).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EnrollFieldError {
    pub field: &'static str,
    pub message: String,
}

impl EnrollConfig {
    /// Checks the section: exactly one of `token` / `token_file`, a
    /// well-formed inline token, a well-formed pin.
    pub fn validate(&self) -> Result<(), EnrollFieldError> {
        match (&self.token, &self.token_file) {
            (Some(_), Some(_)) => {
                return Err(EnrollFieldError {
                    field: "enroll.token",
                    message: "set together with enroll.token_file (accepted one of them)".to_owned(),
                });
            }
            (None, None) => {
                return Err(EnrollFieldError {
                    field: "enroll.token",
                    message: "missing (accepted enroll.token or enroll.token_file)".to_owned(),
                });
            }
            (Some(TokenText(t)), None) => {
                check_token("enroll.token", t)?;
            }
            (None, Some(path)) if path.as_os_str().is_empty() => {
                return Err(EnrollFieldError {
                    field: "enroll.token_file",
                    message: "empty path (accepted a file path)".to_owned(),
                });
            }
            (None, Some(_)) => {}
        }
        pinned::parse_pin("enroll.ca_pin", &self.ca_pin).map_err(|e| EnrollFieldError {
            field: "enroll.ca_pin",
            message: strip_field(&e.to_string()),
        })?;
        Ok(())
    }

    /// The token, read from the file if configured so.
    fn token(&self) -> Result<String, EnrollError> {
        let text = match (&self.token, &self.token_file) {
            (Some(TokenText(t)), _) => t.clone(),
            (None, Some(path)) => read_token_file(path)?,
            (None, None) => return Err(EnrollError::Config("enroll.token: missing".to_owned())),
        };
        let field = if self.token.is_some() {
            "enroll.token"
        } else {
            "enroll.token_file"
        };
        check_token(field, &text).map_err(|e| EnrollError::Config(format!("{}: {}", e.field, e.message)))?;
        Ok(text)
    }
}

fn strip_field(message: &str) -> String {
    message
        .split_once(": ")
        .map_or(message, |(_, rest)| rest)
        .to_owned()
}

/// The token format (the same rule the controller applies).
fn check_token(field: &'static str, token: &str) -> Result<(), EnrollFieldError> {
    let ok = token.split_once('.').is_some_and(|(id, secret)| {
        let chars = |s: &str, n: usize| {
            s.len() == n && s.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
        };
        chars(id, 6) && chars(secret, 16)
    });
    if ok {
        Ok(())
    } else {
        Err(EnrollFieldError {
            field,
            message: "not a bootstrap token (accepted [a-z0-9]{6}.[a-z0-9]{16}, as printed by rpoolctl token create)"
                .to_owned(),
        })
    }
}

fn read_token_file(path: &Path) -> Result<String, EnrollError> {
    let shown = path.display();
    let meta = std::fs::metadata(path)
        .map_err(|e| EnrollError::Config(format!("enroll.token_file: {shown}: {e}")))?;
    if meta.len() > TOKEN_FILE_MAX_BYTES {
        return Err(EnrollError::Config(format!(
            "enroll.token_file: {shown}: {} bytes is out of range (accepted at most {TOKEN_FILE_MAX_BYTES})",
            meta.len()
        )));
    }
    let text = std::fs::read_to_string(path)
        .map_err(|e| EnrollError::Config(format!("enroll.token_file: {shown}: {e}")))?;
    Ok(text.trim().to_owned())
}

/// Why enrollment or renewal did not produce a certificate. Messages never
/// contain the token's secret.
#[derive(Debug, thiserror::Error)]
pub enum EnrollError {
    /// No usable certificate and nothing to get one with.
    #[error("no valid certificate in {dir} ({problem}) and no [enroll] section to get one")]
    NoCertificate { dir: String, problem: String },
    /// A config problem found when it was used (e.g. the token file).
    #[error("{0}")]
    Config(String),
    /// The controller's chain does not contain the pinned CA.
    #[error("pin mismatch: {0}")]
    PinMismatch(String),
    /// Could not reach the controller.
    #[error("connecting to {addr}: {message}")]
    Connect { addr: String, message: String },
    /// The controller refused (bad/expired/revoked/used-up token, ...).
    #[error("the controller refused: {code:?}: {message}")]
    Refused { code: tonic::Code, message: String },
    /// What came back does not check out.
    #[error("the controller's answer is not acceptable: {0}")]
    BadAnswer(String),
    /// Writing the files failed.
    #[error("writing the certificate: {0}")]
    Write(String),
}

impl EnrollError {
    /// A refusal that retrying soon will not fix (the token is bad).
    pub fn is_refusal(&self) -> bool {
        matches!(
            self,
            EnrollError::Refused { .. } | EnrollError::PinMismatch(_) | EnrollError::Config(_)
        )
    }
}

/// The agent's certificate files in `dir`.
pub fn files(dir: &Path) -> TlsFiles {
    TlsFiles::in_dir(dir, "agent")
}

/// Makes sure `dir` holds a valid certificate for this host: does nothing
/// when it does, enrolls through the controller at `addr` when it does not.
/// Returns whether it enrolled.
pub async fn ensure_certificate(
    dir: &Path,
    enroll: Option<&EnrollConfig>,
    host_id: &str,
    addr: &str,
) -> Result<bool, EnrollError> {
    let problem = match files(dir).load() {
        Ok(material) if material.identity == Identity::Agent(host_id.to_owned()) => return Ok(false),
        Ok(material) => format!(
            "its certificate is for {}, not agent {host_id}",
            material.identity
        ),
        Err(e) => e.to_string(),
    };
    let Some(enroll) = enroll else {
        return Err(EnrollError::NoCertificate {
            dir: dir.display().to_string(),
            problem,
        });
    };
    info!(dir = %dir.display(), controller = %addr, reason = %problem, "no valid certificate; enrolling");
    let token = enroll.token()?;
    let token_id = token.split('.').next().unwrap_or_default().to_owned();
    let channel = pinned::connect(addr, &enroll.ca_pin, CALL_TIMEOUT)
        .await
        .map_err(|e| {
            let message = pinned::error_chain(e.as_ref());
            if message.contains(pinned::PIN_MISMATCH) {
                EnrollError::PinMismatch(format!("controller {addr}: {message}"))
            } else {
                EnrollError::Connect {
                    addr: addr.to_owned(),
                    message,
                }
            }
        })?;
    let (csr_pem, key_pem) = new_csr(host_id)?;
    let answer = EnrollServiceClient::new(channel)
        .enroll(EnrollRequest {
            token,
            host_id: host_id.to_owned(),
            csr_pem,
        })
        .await
        .map_err(refused)?
        .into_inner();
    let ca_pin =
        pki::pin_of_cert_pem(&answer.ca_pem).map_err(|e| EnrollError::BadAnswer(format!("CA: {e}")))?;
    if ca_pin != enroll.ca_pin {
        return Err(EnrollError::PinMismatch(format!(
            "the CA the controller returned has pin {ca_pin}, expected {}",
            enroll.ca_pin
        )));
    }
    check_certificate(&answer.cert_pem, &answer.ca_pem, host_id)?;
    write(dir, Some(&answer.ca_pem), &answer.cert_pem, &key_pem)?;
    info!(dir = %dir.display(), token_id = %token_id, "enrolled: certificate written");
    Ok(true)
}

/// The certificate names this host and chains to `ca_pem`.
fn check_certificate(cert_pem: &str, ca_pem: &str, host_id: &str) -> Result<(), EnrollError> {
    let identity = pki::identity_of_pem(cert_pem).map_err(|e| EnrollError::BadAnswer(e.to_string()))?;
    if identity != Identity::Agent(host_id.to_owned()) {
        return Err(EnrollError::BadAnswer(format!(
            "the certificate is for {identity}, not agent {host_id}"
        )));
    }
    pki::verify_issued_by(cert_pem, ca_pem).map_err(|e| EnrollError::BadAnswer(e.to_string()))
}

/// Writes key, certificate and (if given) CA, each atomically; the key
/// first so that a new certificate is never next to an old key for long.
fn write(dir: &Path, ca_pem: Option<&str>, cert_pem: &str, key_pem: &str) -> Result<(), EnrollError> {
    let files = files(dir);
    let w = |e: pki::PkiError| EnrollError::Write(e.to_string());
    if let Some(ca) = ca_pem {
        pki::write_public(&files.ca, ca.as_bytes()).map_err(w)?;
    }
    pki::write_private(&files.key, key_pem.as_bytes()).map_err(w)?;
    pki::write_public(&files.cert, cert_pem.as_bytes()).map_err(w)?;
    Ok(())
}

/// When a certificate valid `not_before..not_after` should be renewed: two
/// thirds into its life, counted from its issue (`not_before` is set
/// [`CLOCK_SKEW`] before the issue).
pub fn renew_at(not_before: SystemTime, not_after: SystemTime) -> SystemTime {
    let issued = (not_before + CLOCK_SKEW).min(not_after);
    let life = not_after.duration_since(issued).unwrap_or_default();
    issued + life * 2 / 3
}

/// Renews the certificate in `dir` through one of `controllers` (mutual
/// TLS with the current certificate). Returns the new certificate's
/// expiry.
pub async fn renew(dir: &Path, host_id: &str, addr: &str) -> Result<SystemTime, EnrollError> {
    let files = files(dir);
    let current = files.load().map_err(|e| EnrollError::NoCertificate {
        dir: dir.display().to_string(),
        problem: e.to_string(),
    })?;
    let connect = |message: String| EnrollError::Connect {
        addr: addr.to_owned(),
        message,
    };
    let endpoint = current
        .endpoint(addr)
        .map_err(|e| connect(e.to_string()))?
        .connect_timeout(CALL_TIMEOUT)
        .timeout(CALL_TIMEOUT);
    let channel = endpoint
        .connect()
        .await
        .map_err(|e| connect(pinned::error_chain(&e)))?;
    let (csr_pem, key_pem) = new_csr(host_id)?;
    let answer = EnrollServiceClient::new(channel)
        .renew(RenewRequest { csr_pem })
        .await
        .map_err(refused)?
        .into_inner();
    // Same CA as before: a renewal never changes whom we trust.
    let (old, new) = (
        pki::pin_of_cert_pem(&current.ca_pem).map_err(|e| EnrollError::BadAnswer(e.to_string()))?,
        pki::pin_of_cert_pem(&answer.ca_pem).map_err(|e| EnrollError::BadAnswer(e.to_string()))?,
    );
    if old != new {
        return Err(EnrollError::BadAnswer(format!(
            "renewal came with another CA (pin {new}, ours {old})"
        )));
    }
    check_certificate(&answer.cert_pem, &current.ca_pem, host_id)?;
    write(dir, None, &answer.cert_pem, &key_pem)?;
    pki::not_after(&answer.cert_pem).map_err(|e| EnrollError::BadAnswer(e.to_string()))
}

/// Renewals so far, process-wide: the session watches it and reconnects
/// after each (so it presents the new certificate).
fn renewal_counter() -> &'static watch::Sender<u64> {
    static COUNTER: std::sync::OnceLock<watch::Sender<u64>> = std::sync::OnceLock::new();
    COUNTER.get_or_init(|| watch::channel(0).0)
}

/// A receiver that sees every renewal after this call.
pub fn renewals() -> watch::Receiver<u64> {
    renewal_counter().subscribe()
}

/// Keeps the certificate in `dir` renewed until `shutdown`; bumps
/// [`renewals`] after each renewal so the session reconnects with it.
pub async fn run_renewer(
    dir: PathBuf,
    host_id: String,
    controllers: Vec<String>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut next_controller = 0usize;
    let mut retry = RENEW_RETRY_MIN;
    loop {
        let now = SystemTime::now();
        let due = std::fs::read_to_string(files(&dir).cert)
            .ok()
            .and_then(|pem| pinned::cert_validity(&pem))
            .map(|(from, to)| renew_at(from, to));
        let wait = match due {
            // Not enrolled yet (or unreadable): look again soon.
            None => RENEW_RETRY_MIN,
            Some(at) => at.duration_since(now).unwrap_or_default().min(RECHECK),
        };
        if !wait.is_zero() {
            tokio::select! {
                _ = shutdown.wait_for(|s| *s) => return,
                _ = tokio::time::sleep(wait) => {}
            }
            if due.is_none_or(|at| SystemTime::now() < at) {
                continue;
            }
        }
        if controllers.is_empty() {
            return;
        }
        let addr = &controllers[next_controller % controllers.len()];
        match renew(&dir, &host_id, addr).await {
            Ok(expires) => {
                let in_s = expires
                    .duration_since(SystemTime::now())
                    .unwrap_or_default()
                    .as_secs();
                info!(controller = %addr, expires_in_s = in_s, "certificate renewed");
                retry = RENEW_RETRY_MIN;
                renewal_counter().send_modify(|n| *n += 1);
            }
            Err(e) => {
                warn!(controller = %addr, retry_in_ms = retry.as_millis() as u64, "certificate renewal failed: {e}");
                next_controller += 1;
                tokio::select! {
                    _ = shutdown.wait_for(|s| *s) => return,
                    _ = tokio::time::sleep(retry) => {}
                }
                retry = (retry * 2).min(RENEW_RETRY_MAX);
            }
        }
    }
}

/// A new key and a CSR for this host's agent identity: `(csr_pem, key_pem)`.
fn new_csr(host_id: &str) -> Result<(String, String), EnrollError> {
    let identity = Identity::agent(host_id).map_err(|e| EnrollError::Config(format!("host id: {e}")))?;
    pki::new_csr(&identity).map_err(|e| EnrollError::Write(e.to_string()))
}

/// The controller's refusal of an enroll or renew call.
fn refused(status: tonic::Status) -> EnrollError {
    EnrollError::Refused {
        code: status.code(),
        message: status.message().to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TOKEN: &str = "abcdef.0123456789abcdef";

    fn pin() -> String {
        format!("sha256:{}", "ab".repeat(32))
    }

    #[test]
    fn the_section_wants_one_token_and_a_pin_and_never_shows_the_token() {
        let inline = EnrollConfig {
            token: Some(TokenText::new(TOKEN)),
            token_file: None,
            ca_pin: pin(),
        };
        assert_eq!(inline.validate(), Ok(()));
        assert!(!format!("{inline:?}").contains("0123456789abcdef"));
        let both = EnrollConfig {
            token_file: Some(PathBuf::from("/etc/rpool/token")),
            ..inline.clone()
        };
        assert_eq!(both.validate().unwrap_err().field, "enroll.token");
        let none = EnrollConfig {
            token: None,
            ..inline.clone()
        };
        assert_eq!(
            none.validate().unwrap_err().message,
            "missing (accepted enroll.token or enroll.token_file)"
        );
        let bad = EnrollConfig {
            token: Some(TokenText::new("abcdef.0123456789ABCDEF")),
            ..inline.clone()
        };
        let err = bad.validate().unwrap_err();
        assert_eq!(err.field, "enroll.token");
        assert!(!err.message.contains("0123456789"), "{}", err.message);
        let bad_pin = EnrollConfig {
            ca_pin: "sha256:nope".into(),
            ..inline
        };
        let err = bad_pin.validate().unwrap_err();
        assert_eq!(err.field, "enroll.ca_pin");
        assert!(
            err.message.contains("accepted sha256:<64 lowercase hex digits>"),
            "{}",
            err.message
        );
    }

    #[test]
    fn the_documented_example_section_is_valid() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../packaging/etc/rpool/agent.toml");
        let text = std::fs::read_to_string(path).unwrap();
        let start = text.find("# [enroll]").expect("the example documents [enroll]");
        let section: String = text[start..]
            .lines()
            .take_while(|l| !l.trim().is_empty())
            .map(|l| l.strip_prefix("# ").unwrap_or(l))
            .filter(|l| !l.starts_with('#'))
            .collect::<Vec<_>>()
            .join("\n");
        #[derive(Deserialize)]
        struct File {
            enroll: EnrollConfig,
        }
        let file: File = toml::from_str(&section).unwrap();
        assert_eq!(file.enroll.validate(), Ok(()));
        assert!(file.enroll.token_file.is_some());
    }

    #[test]
    fn a_token_file_is_read_trimmed_and_checked() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("token");
        std::fs::write(&path, format!("{TOKEN}\n")).unwrap();
        let config = EnrollConfig {
            token: None,
            token_file: Some(path.clone()),
            ca_pin: pin(),
        };
        assert_eq!(config.token().unwrap(), TOKEN);
        std::fs::write(&path, "abcdef.short").unwrap();
        let err = config.token().unwrap_err().to_string();
        assert!(
            err.starts_with("enroll.token_file: not a bootstrap token"),
            "{err}"
        );
        std::fs::remove_file(&path).unwrap();
        assert!(
            config
                .token()
                .unwrap_err()
                .to_string()
                .contains("enroll.token_file")
        );
    }

    #[test]
    fn renewal_is_due_two_thirds_into_the_life_counted_from_the_issue() {
        let issued = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        let at = renew_at(issued - CLOCK_SKEW, issued + Duration::from_secs(6));
        assert_eq!(at, issued + Duration::from_secs(4));
        let at = renew_at(issued - CLOCK_SKEW, issued + Duration::from_secs(30 * 86_400));
        assert_eq!(at, issued + Duration::from_secs(20 * 86_400));
        // A certificate made without the skew: due right away is wrong, it
        // is still two thirds of what is left.
        let at = renew_at(issued, issued + Duration::from_secs(3));
        assert!(at <= issued + Duration::from_secs(3));
    }

    #[tokio::test]
    async fn an_agent_with_a_valid_certificate_does_not_enroll_and_without_one_needs_a_section() {
        let dir = tempfile::tempdir().unwrap();
        let host = "0b5e8a3c-1f2d-4c6b-9a7e-3d2c1b0a9f8e";
        let err = ensure_certificate(dir.path(), None, host, "127.0.0.1:1")
            .await
            .unwrap_err();
        assert!(err.to_string().starts_with("no valid certificate in"), "{err}");
        let ca = pki::Ca::generate("t").unwrap();
        let issued = ca
            .issue(&Identity::Agent(host.to_owned()), &[], Duration::from_secs(600))
            .unwrap();
        write(dir.path(), Some(ca.cert_pem()), &issued.cert_pem, &issued.key_pem).unwrap();
        assert!(
            !ensure_certificate(dir.path(), None, host, "127.0.0.1:1")
                .await
                .unwrap()
        );
        // A certificate for another host does not count.
        let err = ensure_certificate(dir.path(), None, "other", "127.0.0.1:1")
            .await
            .unwrap_err();
        assert!(err.to_string().contains("not agent other"), "{err}");
        use std::os::unix::fs::PermissionsExt;
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        let f = files(dir.path());
        assert_eq!((mode(&f.key), mode(&f.cert), mode(&f.ca)), (0o600, 0o644, 0o644));
    }
}
