//! The bootstrap-token half of `AdminService`: create, list, revoke (see
//! [`crate::state::tokens`]). Run on the leader (the caller forwards); list reads
//! after a ReadIndex barrier.
//!
//! A token's secret exists in clear only in the `CreateToken` answer: it
//! is drawn here from the system's secure random source, hashed, and only
//! the hash goes into the Raft log.

use rpool_proto::v1;
use tonic::Status;

use crate::Shared;
use crate::api::status::{Refusal, propose_status};
use crate::api::validate::Invalid;
use crate::replica::ProposeError;
use crate::state::command::Command;
use crate::state::tokens::{self, TokenRecord};
use crate::state::{ApplyError, State};
use rpool_proto::clock::unix_ms_now;

/// Shortest token lifetime (s). One second so that expiry can be tested
/// end to end without a clock of its own; `rpoolctl` defaults to 1 h.
pub const TTL_MIN_S: u64 = 1;
/// Longest token lifetime (s): 30 days.
pub const TTL_MAX_S: u64 = 30 * 24 * 3_600;
/// Most uses of one token (0 = unlimited).
pub const USES_MAX: u32 = 10_000;
/// Longest description (characters).
pub const DESCRIPTION_MAX_CHARS: usize = 256;
/// Ids drawn before giving up on a collision with an existing token.
const CREATE_ATTEMPTS: usize = 3;

/// A checked `CreateTokenRequest`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewToken {
    pub ttl_ms: u64,
    pub uses: Option<u32>,
    pub description: String,
    /// The caller's own token (id, secret), if it sent one.
    pub token: Option<(String, String)>,
}

/// Checks a `CreateTokenRequest`; errors name the field and range.
pub fn validate_create(r: &v1::CreateTokenRequest) -> Result<NewToken, Invalid> {
    if !(TTL_MIN_S..=TTL_MAX_S).contains(&r.ttl_seconds) {
        return Err(Invalid::new(
            "create_token.ttl_seconds",
            format!(
                "{} is out of range (accepted 1..=2592000, i.e. 1s..=30d)",
                r.ttl_seconds
            ),
        ));
    }
    if r.uses > USES_MAX {
        return Err(Invalid::new(
            "create_token.uses",
            format!(
                "{} is out of range (accepted 0 = unlimited, or 1..=10000)",
                r.uses
            ),
        ));
    }
    let chars = r.description.chars().count();
    if chars > DESCRIPTION_MAX_CHARS {
        return Err(Invalid::new(
            "create_token.description",
            format!("{chars} characters is out of range (accepted 0..=256)"),
        ));
    }
    if r.description.chars().any(char::is_control) {
        return Err(Invalid::new(
            "create_token.description",
            "contains a control character (accepted printable text)",
        ));
    }
    let token = if r.token.is_empty() {
        None
    } else {
        let parsed = tokens::parse("create_token.token", &r.token).map_err(|_| {
            Invalid::new(
                "create_token.token",
                "is not a token (accepted [a-z0-9]{6}.[a-z0-9]{16}, or empty to have one made)",
            )
        })?;
        Some((parsed.id.clone(), parsed.secret().to_owned()))
    };
    Ok(NewToken {
        ttl_ms: r.ttl_seconds * 1_000,
        uses: (r.uses != 0).then_some(r.uses),
        description: r.description.clone(),
        token,
    })
}

/// Checks a token id (`[a-z0-9]{6}`).
pub fn token_id(field: &str, id: &str) -> Result<(), Invalid> {
    if tokens::is_token_id(id) {
        Ok(())
    } else {
        Err(Invalid::new(
            field,
            format!(
                "{:?} is not a token id (accepted [a-z0-9]{{6}}, the part before the dot)",
                id.chars().take(40).collect::<String>()
            ),
        ))
    }
}

/// A fresh `(id, secret)` from the system's secure random source.
fn generate() -> Result<(String, String), Status> {
    tokens::generate().map_err(Status::internal)
}

/// The wire view of a token at `now` (never the secret).
pub fn info(record: &TokenRecord, now_unix_ms: u64) -> v1::TokenInfo {
    v1::TokenInfo {
        id: record.id.clone(),
        description: record.description.clone(),
        created_at_unix_ms: record.created_at_unix_ms,
        expires_at_unix_ms: record.expires_at_unix_ms,
        uses_left: record.uses_left,
        state: record.state(now_unix_ms).as_str().to_owned(),
    }
}

/// Every token, by creation time then id.
pub fn list(sm: &State, now_unix_ms: u64) -> Vec<v1::TokenInfo> {
    let mut out: Vec<&TokenRecord> = sm.tokens().values().collect();
    out.sort_by(|a, b| (a.created_at_unix_ms, &a.id).cmp(&(b.created_at_unix_ms, &b.id)));
    out.into_iter().map(|t| info(t, now_unix_ms)).collect()
}

fn propose_error(e: ProposeError) -> Status {
    match e {
        ProposeError::Rejected(ApplyError::Refused(m)) if m.starts_with("no token") => Status::not_found(m),
        other => propose_status(other, Refusal::Precondition),
    }
}

/// Creates a token; answers it with the CA pin agents need.
pub(crate) async fn create(
    shared: &Shared,
    request: &v1::CreateTokenRequest,
    audit: &crate::state::audit::AuditRecord,
) -> Result<v1::CreateTokenResponse, Status> {
    let new = validate_create(request)?;
    let mut attempt = 0;
    loop {
        attempt += 1;
        let (id, secret) = match &new.token {
            Some(given) => given.clone(),
            None => generate()?,
        };
        let now = unix_ms_now();
        let record = TokenRecord {
            id: id.clone(),
            secret_sha256: tokens::secret_sha256(&secret),
            description: new.description.clone(),
            created_at_unix_ms: now,
            expires_at_unix_ms: now.saturating_add(new.ttl_ms),
            uses_left: new.uses,
            revoked: false,
        };
        // The token's id only: its secret is never recorded.
        let audit = audit
            .clone()
            .arg("id", &id)
            .arg("ttl_ms", new.ttl_ms)
            .arg("uses", new.uses.map_or("unlimited".to_owned(), |u| u.to_string()))
            .arg("description", &new.description);
        let command = audit.wrap(Command::CreateToken {
            token: record,
            at_unix_ms: now,
        });
        match shared.node.propose(command).await {
            Ok(_) => {
                // A repeat of the same token changed nothing: answer with
                // the record the first call made.
                let expires_at_unix_ms = shared
                    .node
                    .read(|sm| sm.tokens().get(&id).map(|t| t.expires_at_unix_ms))
                    .ok_or_else(|| Status::internal(format!("token {id} vanished after its creation")))?;
                tracing::info!(token_id = %id, uses = ?new.uses, ttl_ms = new.ttl_ms, "bootstrap token created");
                return Ok(v1::CreateTokenResponse {
                    token: format!("{id}.{secret}"),
                    id,
                    expires_at_unix_ms,
                    ca_pin: crate::api::enroll::ca_pin(shared).unwrap_or_default(),
                });
            }
            Err(ProposeError::Rejected(ApplyError::Refused(m)))
                if m.starts_with("a token with id") && new.token.is_none() && attempt < CREATE_ATTEMPTS =>
            {
                continue;
            }
            Err(e) => return Err(propose_error(e)),
        }
    }
}

/// Revokes token `id`; answers its new view.
pub(crate) async fn revoke(
    shared: &Shared,
    id: &str,
    audit: &crate::state::audit::AuditRecord,
) -> Result<v1::TokenInfo, Status> {
    token_id("revoke_token.id", id)?;
    if !shared.node.read(|sm| sm.tokens().contains_key(id)) {
        return Err(Status::not_found(format!("no token with id {id}")));
    }
    let command = audit.clone().arg("id", id).wrap(Command::RevokeToken {
        token_id: id.to_owned(),
        at_unix_ms: unix_ms_now(),
    });
    shared.node.propose(command).await.map_err(propose_error)?;
    tracing::info!(token_id = %id, "bootstrap token revoked");
    let now = unix_ms_now();
    shared
        .node
        .read(|sm| sm.tokens().get(id).map(|t| info(t, now)))
        .ok_or_else(|| Status::not_found(format!("token {id} is gone")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(ttl_seconds: u64, uses: u32, description: &str) -> v1::CreateTokenRequest {
        v1::CreateTokenRequest {
            ttl_seconds,
            uses,
            description: description.to_owned(),
            token: String::new(),
        }
    }

    #[test]
    fn create_requests_are_checked_with_field_and_range() {
        assert_eq!(
            validate_create(&req(3_600, 0, "rack 12")),
            Ok(NewToken {
                ttl_ms: 3_600_000,
                uses: None,
                description: "rack 12".to_owned(),
                token: None,
            })
        );
        let own = v1::CreateTokenRequest {
            token: "abcdef.0123456789abcdef".to_owned(),
            ..req(60, 1, "")
        };
        assert_eq!(
            validate_create(&own).unwrap().token,
            Some(("abcdef".to_owned(), "0123456789abcdef".to_owned()))
        );
        let bad = v1::CreateTokenRequest {
            token: "ABCDEF.secret-not-shown".to_owned(),
            ..req(60, 1, "")
        };
        let message = validate_create(&bad).unwrap_err().to_string();
        assert!(
            message.starts_with("create_token.token: is not a token"),
            "{message}"
        );
        assert!(
            !message.contains("secret-not-shown"),
            "the value is never echoed: {message}"
        );
        assert_eq!(validate_create(&req(1, 1, "")).unwrap().uses, Some(1));
        assert_eq!(
            validate_create(&req(TTL_MAX_S, USES_MAX, &"x".repeat(256)))
                .unwrap()
                .uses,
            Some(10_000)
        );
        let cases = [
            (
                req(0, 1, ""),
                "create_token.ttl_seconds: 0 is out of range (accepted 1..=2592000, i.e. 1s..=30d)",
            ),
            (
                req(TTL_MAX_S + 1, 1, ""),
                "create_token.ttl_seconds: 2592001 is out of range (accepted 1..=2592000, i.e. 1s..=30d)",
            ),
            (
                req(60, 10_001, ""),
                "create_token.uses: 10001 is out of range (accepted 0 = unlimited, or 1..=10000)",
            ),
            (
                req(60, 1, &"é".repeat(257)),
                "create_token.description: 257 characters is out of range (accepted 0..=256)",
            ),
            (
                req(60, 1, "a\nb"),
                "create_token.description: contains a control character (accepted printable text)",
            ),
        ];
        for (r, want) in cases {
            assert_eq!(validate_create(&r).unwrap_err().to_string(), want);
        }
    }

    #[test]
    fn token_ids_are_checked() {
        assert!(token_id("revoke_token.id", "abc123").is_ok());
        let err = token_id("revoke_token.id", "abc123.0123456789abcdef").unwrap_err();
        assert!(err.to_string().starts_with("revoke_token.id: "), "{err}");
        assert!(token_id("revoke_token.id", "ABC123").is_err());
    }

    #[test]
    fn generated_tokens_parse_and_differ() {
        let (id, secret) = generate().unwrap();
        let parsed = tokens::parse("t", &format!("{id}.{secret}")).unwrap();
        assert_eq!(parsed.id, id);
        assert_ne!(generate().unwrap(), (id, secret));
    }

    #[test]
    fn lists_show_state_and_never_the_secret_hash() {
        let mut sm = State::new();
        let record = |id: &str, at: u64| TokenRecord {
            id: id.to_owned(),
            secret_sha256: tokens::secret_sha256("0123456789abcdef"),
            description: String::new(),
            created_at_unix_ms: at,
            expires_at_unix_ms: 1_000,
            uses_left: Some(2),
            revoked: false,
        };
        sm.apply(
            1,
            &Command::CreateToken {
                token: record("bbbbbb", 1),
                at_unix_ms: 1,
            },
        )
        .unwrap();
        sm.apply(
            2,
            &Command::CreateToken {
                token: record("aaaaaa", 2),
                at_unix_ms: 2,
            },
        )
        .unwrap();
        let listed = list(&sm, 5);
        assert_eq!(
            listed
                .iter()
                .map(|t| (t.id.as_str(), t.state.as_str()))
                .collect::<Vec<_>>(),
            [("bbbbbb", "active"), ("aaaaaa", "active")]
        );
        assert_eq!(list(&sm, 1_000)[0].state, "expired");
        let shown = format!("{listed:?}");
        assert!(
            !shown.contains(&tokens::secret_sha256("0123456789abcdef")),
            "{shown}"
        );
    }
}
