//! Bootstrap tokens (like kubeadm's): what an agent presents once to get
//! its first certificate.
//!
//! A token is `{id}.{secret}`: `[a-z0-9]{6}.[a-z0-9]{16}`. The id is public
//! (it names the token in lists, events and errors); the secret is shown
//! once, when the token is created, and is never stored: the replicated
//! record holds its SHA-256 only ([`TokenRecord::secret_sha256`]).
//!
//! Creating, using and revoking a token are Raft commands, so a use count
//! holds across failover: the leader checks a use against its applied state
//! before it proposes, and every replica checks it again when it applies,
//! with the proposer's timestamp carried in the command. The functions here
//! are that check: pure, no clock, no I/O.
//!
//! Expired, used-up and revoked tokens stay listed (with their state) for
//! [`KEEP_DEAD_MS`] past their expiry, then the next `CreateToken` prunes
//! them. At most [`MAX_TOKENS`] records exist at once.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

pub use rpool_proto::token::{ID_LEN, SECRET_LEN, from_random, generate};
/// Token records kept at once (any state).
pub const MAX_TOKENS: usize = 10_000;
/// How long an expired token stays listed before a later `CreateToken`
/// removes it (ms).
pub const KEEP_DEAD_MS: u64 = 24 * 3_600 * 1_000;

/// A bootstrap token as replicated: never the secret itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenRecord {
    /// The public half, `[a-z0-9]{6}`.
    pub id: String,
    /// Lowercase hex SHA-256 of the secret half.
    pub secret_sha256: String,
    /// What the admin said it is for (at most 256 characters).
    pub description: String,
    /// Proposer's clock at creation (Unix ms).
    pub created_at_unix_ms: u64,
    /// First instant it is no longer accepted (Unix ms).
    pub expires_at_unix_ms: u64,
    /// Enrollments left; `None` = unlimited.
    pub uses_left: Option<u32>,
    /// Revoked by an admin.
    pub revoked: bool,
}

/// What a token can be used for right now.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum TokenState {
    /// Accepted.
    Active,
    /// Past `expires_at`.
    Expired,
    /// No uses left.
    UsedUp,
    /// Revoked by an admin.
    Revoked,
}

impl TokenState {
    /// The name shown by `rpoolctl token list`.
    pub fn as_str(self) -> &'static str {
        match self {
            TokenState::Active => "active",
            TokenState::Expired => "expired",
            TokenState::UsedUp => "used-up",
            TokenState::Revoked => "revoked",
        }
    }
}

impl TokenRecord {
    /// The state at `now_unix_ms`; revoked wins over used-up over expired.
    pub fn state(&self, now_unix_ms: u64) -> TokenState {
        if self.revoked {
            TokenState::Revoked
        } else if self.uses_left == Some(0) {
            TokenState::UsedUp
        } else if now_unix_ms >= self.expires_at_unix_ms {
            TokenState::Expired
        } else {
            TokenState::Active
        }
    }
}

/// A token string split into its halves (the secret redacts itself).
#[derive(Clone, PartialEq, Eq)]
pub struct ParsedToken {
    /// Public id.
    pub id: String,
    secret: String,
}

impl ParsedToken {
    /// The secret, for hashing.
    pub fn secret(&self) -> &str {
        &self.secret
    }

    /// SHA-256 of the secret, lowercase hex.
    pub fn secret_sha256(&self) -> String {
        secret_sha256(&self.secret)
    }
}

impl fmt::Debug for ParsedToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ParsedToken({}.[redacted])", self.id)
    }
}

/// Why a token string is malformed. Never echoes the input (it may be a
/// real secret with a typo).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "{field}: not a bootstrap token (accepted [a-z0-9]{{6}}.[a-z0-9]{{16}}, as printed by rpoolctl token create)"
)]
pub struct BadFormat {
    /// Field path, e.g. `enroll.token`.
    pub field: String,
}

fn token_chars(s: &str, len: usize) -> bool {
    s.len() == len && s.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
}

/// True for a well-formed token id.
pub fn is_token_id(s: &str) -> bool {
    token_chars(s, ID_LEN)
}

/// Splits `token` into id and secret, checking the format.
pub fn parse(field: &str, token: &str) -> Result<ParsedToken, BadFormat> {
    let bad = || BadFormat {
        field: field.to_owned(),
    };
    let (id, secret) = token.split_once('.').ok_or_else(bad)?;
    if !is_token_id(id) || !token_chars(secret, SECRET_LEN) {
        return Err(bad());
    }
    Ok(ParsedToken {
        id: id.to_owned(),
        secret: secret.to_owned(),
    })
}

/// Lowercase hex SHA-256 of `secret`.
pub fn secret_sha256(secret: &str) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA256, secret.as_bytes());
    digest.as_ref().iter().map(|b| format!("{b:02x}")).collect()
}

/// Compares two hashes in time independent of where they differ.
pub fn hashes_equal(a: &str, b: &str) -> bool {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    if a.len() != b.len() {
        return false;
    }
    let diff = a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y));
    std::hint::black_box(diff) == 0
}

/// Why a token was not accepted. Messages name the token id, never the
/// secret. An unknown id and a wrong secret read the same, and a token's
/// state is told only to a caller that knows its secret.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Denied {
    #[error("token {0} is not valid (unknown id or wrong secret)")]
    Invalid(String),
    #[error("token {0} has expired")]
    Expired(String),
    #[error("token {0} was revoked")]
    Revoked(String),
    #[error("token {0} has no uses left")]
    UsedUp(String),
}

impl Denied {
    /// Short reason, for counters and logs.
    pub fn reason(&self) -> &'static str {
        match self {
            Denied::Invalid(_) => "invalid",
            Denied::Expired(_) => "expired",
            Denied::Revoked(_) => "revoked",
            Denied::UsedUp(_) => "used-up",
        }
    }
}

/// Why a create or revoke does not fit the state.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    #[error("a token with id {0} already exists")]
    Exists(String),
    #[error("no token with id {0}")]
    Unknown(String),
    #[error(
        "too many tokens ({0}; accepted at most 10000): revoke some or wait for expired ones to be pruned"
    )]
    TooMany(usize),
}

/// Record changes: `None` deletes.
pub type TokenChanges = Vec<(String, Option<TokenRecord>)>;

/// Adding `record` at `at_unix_ms`: the new record plus the removal of
/// tokens expired for longer than [`KEEP_DEAD_MS`].
pub fn plan_create(
    tokens: &BTreeMap<String, TokenRecord>,
    record: &TokenRecord,
    at_unix_ms: u64,
) -> Result<TokenChanges, Refused> {
    if let Some(existing) = tokens.get(&record.id) {
        // The same token again (a retried create): nothing changes.
        if hashes_equal(&existing.secret_sha256, &record.secret_sha256) {
            return Ok(Vec::new());
        }
        return Err(Refused::Exists(record.id.clone()));
    }
    let mut changes: TokenChanges = tokens
        .values()
        .filter(|t| t.expires_at_unix_ms.saturating_add(KEEP_DEAD_MS) <= at_unix_ms)
        .map(|t| (t.id.clone(), None))
        .collect();
    let kept = tokens.len() - changes.len();
    if kept >= MAX_TOKENS {
        return Err(Refused::TooMany(kept));
    }
    changes.push((record.id.clone(), Some(record.clone())));
    Ok(changes)
}

/// One use of token `id` presented with a secret hashing to
/// `presented_sha256` at `at_unix_ms`: the record with one use fewer.
pub fn plan_use(
    tokens: &BTreeMap<String, TokenRecord>,
    id: &str,
    presented_sha256: &str,
    at_unix_ms: u64,
) -> Result<TokenRecord, Denied> {
    let record = tokens.get(id).ok_or_else(|| Denied::Invalid(id.to_owned()))?;
    if !hashes_equal(&record.secret_sha256, presented_sha256) {
        return Err(Denied::Invalid(id.to_owned()));
    }
    match record.state(at_unix_ms) {
        TokenState::Active => {}
        TokenState::Expired => return Err(Denied::Expired(id.to_owned())),
        TokenState::Revoked => return Err(Denied::Revoked(id.to_owned())),
        TokenState::UsedUp => return Err(Denied::UsedUp(id.to_owned())),
    }
    Ok(TokenRecord {
        uses_left: record.uses_left.map(|n| n - 1),
        ..record.clone()
    })
}

/// Revoking token `id`: the revoked record, or `None` when it already is.
pub fn plan_revoke(tokens: &BTreeMap<String, TokenRecord>, id: &str) -> Result<Option<TokenRecord>, Refused> {
    let record = tokens.get(id).ok_or_else(|| Refused::Unknown(id.to_owned()))?;
    if record.revoked {
        return Ok(None);
    }
    Ok(Some(TokenRecord {
        revoked: true,
        ..record.clone()
    }))
}

impl crate::state::State {
    /// The token half of [`State::plan`](crate::state::State::plan).
    /// A refused use becomes `ApplyError::Refused` with the [`Denied`]
    /// message (never the secret).
    pub(crate) fn plan_token(
        &self,
        index: u64,
        command: &crate::state::command::Command,
    ) -> Result<crate::state::Change, crate::state::ApplyError> {
        use crate::state::command::Command;
        use crate::state::{ApplyError, ApplyOutcome, Change};
        let refused = |e: &dyn std::fmt::Display| ApplyError::Refused(e.to_string());
        let mut change = Change {
            outcome: ApplyOutcome::Updated,
            ..Change::unchanged(index)
        };
        match command {
            Command::CreateToken { token, at_unix_ms } => {
                change.more.tokens =
                    plan_create(&self.tokens, token, *at_unix_ms).map_err(|e| refused(&e))?;
                if change.more.tokens.is_empty() {
                    return Ok(Change::unchanged(index));
                }
            }
            Command::UseToken {
                token_id,
                secret_sha256,
                host_id,
                at_unix_ms,
            } => {
                let used =
                    plan_use(&self.tokens, token_id, secret_sha256, *at_unix_ms).map_err(|e| refused(&e))?;
                change.more.tokens.push((used.id.clone(), Some(used)));
                change.more.events.push(crate::state::pool::Event {
                    index,
                    at_unix_ms: *at_unix_ms,
                    pool: String::new(),
                    host_id: host_id.clone(),
                    kind: "host_enrolled".to_owned(),
                    message: format!("host {host_id} enrolled with token {token_id}"),
                    severity: Default::default(),
                    audit: None,
                });
            }
            Command::RevokeToken { token_id, .. } => {
                match plan_revoke(&self.tokens, token_id).map_err(|e| refused(&e))? {
                    Some(revoked) => change.more.tokens.push((revoked.id.clone(), Some(revoked))),
                    None => return Ok(Change::unchanged(index)),
                }
            }
            _ => {
                return Err(ApplyError::Refused(format!(
                    "{} is not a token command",
                    command.kind()
                )));
            }
        }
        Ok(change)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "0123456789abcdef";

    fn record(id: &str, expires: u64, uses: Option<u32>) -> TokenRecord {
        TokenRecord {
            id: id.to_owned(),
            secret_sha256: secret_sha256(SECRET),
            description: "rack 12".to_owned(),
            created_at_unix_ms: 0,
            expires_at_unix_ms: expires,
            uses_left: uses,
            revoked: false,
        }
    }

    fn map(records: &[TokenRecord]) -> BTreeMap<String, TokenRecord> {
        records.iter().map(|r| (r.id.clone(), r.clone())).collect()
    }

    #[test]
    fn tokens_parse_only_in_the_kubeadm_format_and_errors_never_echo_them() {
        let t = parse("enroll.token", "abcdef.0123456789abcdef").unwrap();
        assert_eq!((t.id.as_str(), t.secret()), ("abcdef", SECRET));
        assert!(!format!("{t:?}").contains(SECRET));
        for bad in [
            "",
            "abcdef",
            "abcdef.",
            "abcde.0123456789abcdef",
            "abcdefg.0123456789abcdef",
            "ABCDEF.0123456789abcdef",
            "abcdef.0123456789abcdeF",
            "abcdef.0123456789abcde",
            "abcdef.0123456789abcdef0",
            "abcdef:0123456789abcdef",
            "abc-ef.0123456789abcdef",
        ] {
            let err = parse("enroll.token", bad).unwrap_err();
            let shown = err.to_string();
            assert!(
                shown.starts_with("enroll.token: not a bootstrap token"),
                "{shown}"
            );
            if !bad.is_empty() {
                assert!(!shown.contains(bad), "{shown}");
            }
        }
    }

    #[test]
    fn random_tokens_are_well_formed_and_skip_biased_bytes() {
        let bytes: Vec<u8> = (0..=255u8).cycle().take(64).collect();
        let (id, secret) = from_random(&bytes).unwrap();
        assert!(parse("t", &format!("{id}.{secret}")).is_ok());
        assert_eq!(id, "abcdef");
        // Bytes >= 252 are skipped, not folded onto the first characters.
        let (id, _) = from_random(&[
            252, 253, 254, 255, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21,
        ])
        .unwrap();
        assert_eq!(id, "abcdef");
        assert_eq!(from_random(&[255; 100]), None);
        assert_eq!(from_random(&[1; 21]), None);
    }

    #[test]
    fn hashes_compare_equal_only_when_identical() {
        let h = secret_sha256(SECRET);
        assert_eq!(h.len(), 64);
        assert!(hashes_equal(&h, &secret_sha256(SECRET)));
        assert!(!hashes_equal(&h, &secret_sha256("0123456789abcdee")));
        assert!(!hashes_equal(&h, &h[..63]));
        assert!(!hashes_equal(&h, ""));
    }

    /// Each case: tokens, id, presented secret, time, expected result.
    #[test]
    #[allow(clippy::type_complexity)]
    fn uses_are_accepted_and_refused_as_the_table_says() {
        let revoked = TokenRecord {
            revoked: true,
            ..record("revokd", 1_000, None)
        };
        let tokens = map(&[
            record("active", 1_000, None),
            record("twouse", 1_000, Some(2)),
            record("usedup", 1_000, Some(0)),
            revoked,
        ]);
        let cases: Vec<(&str, &str, &str, u64, Result<Option<u32>, Denied>)> = vec![
            ("unlimited", "active", SECRET, 10, Ok(None)),
            ("counted", "twouse", SECRET, 10, Ok(Some(1))),
            (
                "unknown id",
                "nosuch",
                SECRET,
                10,
                Err(Denied::Invalid("nosuch".into())),
            ),
            (
                "wrong secret",
                "active",
                "0000000000000000",
                10,
                Err(Denied::Invalid("active".into())),
            ),
            (
                "expired at the instant",
                "active",
                SECRET,
                1_000,
                Err(Denied::Expired("active".into())),
            ),
            (
                "expired later",
                "twouse",
                SECRET,
                5_000,
                Err(Denied::Expired("twouse".into())),
            ),
            (
                "used up",
                "usedup",
                SECRET,
                10,
                Err(Denied::UsedUp("usedup".into())),
            ),
            (
                "revoked",
                "revokd",
                SECRET,
                10,
                Err(Denied::Revoked("revokd".into())),
            ),
            // Without the secret nobody learns that a token is revoked.
            (
                "revoked, wrong secret",
                "revokd",
                "0000000000000000",
                10,
                Err(Denied::Invalid("revokd".into())),
            ),
        ];
        for (name, id, secret, at, want) in cases {
            let got = plan_use(&tokens, id, &secret_sha256(secret), at).map(|r| r.uses_left);
            assert_eq!(got, want, "{name}");
            if let Err(e) = got {
                assert!(!e.to_string().contains(SECRET), "{name}: {e}");
            }
        }
    }

    #[test]
    fn a_one_use_token_is_used_once() {
        let mut tokens = map(&[record("oneuse", 1_000, Some(1))]);
        let used = plan_use(&tokens, "oneuse", &secret_sha256(SECRET), 1).unwrap();
        assert_eq!(used.state(1), TokenState::UsedUp);
        tokens.insert(used.id.clone(), used);
        assert_eq!(
            plan_use(&tokens, "oneuse", &secret_sha256(SECRET), 2),
            Err(Denied::UsedUp("oneuse".into()))
        );
    }

    #[test]
    fn revoking_is_idempotent_and_unknown_ids_are_refused() {
        let mut tokens = map(&[record("active", 1_000, None)]);
        let revoked = plan_revoke(&tokens, "active").unwrap().unwrap();
        assert_eq!(revoked.state(0), TokenState::Revoked);
        tokens.insert(revoked.id.clone(), revoked);
        assert_eq!(plan_revoke(&tokens, "active"), Ok(None));
        assert_eq!(
            plan_revoke(&tokens, "nosuch"),
            Err(Refused::Unknown("nosuch".into()))
        );
    }

    #[test]
    fn creating_prunes_tokens_expired_for_a_day_and_refuses_duplicates() {
        let tokens = map(&[record("old000", 1_000, None), record("recent", 50_000, None)]);
        let new = record("new000", 10 * KEEP_DEAD_MS, None);
        let changes = plan_create(&tokens, &new, 1_000 + KEEP_DEAD_MS).unwrap();
        assert_eq!(
            changes,
            vec![
                ("old000".to_owned(), None),
                ("new000".to_owned(), Some(new.clone()))
            ]
        );
        // Another token under an id in use is refused ...
        let other = TokenRecord {
            secret_sha256: secret_sha256("zzzzzzzzzzzzzzzz"),
            ..record("recent", 1, None)
        };
        assert_eq!(
            plan_create(&tokens, &other, 0),
            Err(Refused::Exists("recent".into()))
        );
        // ... the same token again (a retried create) changes nothing.
        assert_eq!(
            plan_create(&tokens, &record("recent", 1, None), 0),
            Ok(Vec::new())
        );
    }

    #[test]
    fn creating_past_the_limit_is_refused() {
        let tokens: BTreeMap<String, TokenRecord> = (0..MAX_TOKENS)
            .map(|i| {
                let r = record(&format!("{i:06}"), u64::MAX, None);
                (r.id.clone(), r)
            })
            .collect();
        assert_eq!(
            plan_create(&tokens, &record("zzzzzz", u64::MAX, None), 0),
            Err(Refused::TooMany(MAX_TOKENS))
        );
    }

    #[test]
    fn the_state_machine_counts_uses_records_an_event_and_refuses_the_second_use() {
        use crate::state::command::Command;
        use crate::state::{ApplyError, State};
        let mut sm = State::new();
        sm.apply(
            1,
            &Command::CreateToken {
                token: record("oneuse", 1_000, Some(1)),
                at_unix_ms: 0,
            },
        )
        .unwrap();
        let use_at = |at| Command::UseToken {
            token_id: "oneuse".into(),
            secret_sha256: secret_sha256(SECRET),
            host_id: "h1".into(),
            at_unix_ms: at,
        };
        sm.apply(2, &use_at(10)).unwrap();
        assert_eq!(sm.tokens()["oneuse"].uses_left, Some(0));
        let event = sm.events().back().unwrap();
        assert_eq!(event.message, "host h1 enrolled with token oneuse");
        assert_eq!(
            (event.kind.as_str(), event.at_unix_ms, event.index),
            ("host_enrolled", 10, 2)
        );
        let before = sm.clone();
        assert_eq!(
            sm.apply(3, &use_at(11)),
            Err(ApplyError::Refused("token oneuse has no uses left".into()))
        );
        assert_eq!(sm, before, "a refused use changes nothing");
        // Revoke, twice: the second is a no-op.
        let revoke = Command::RevokeToken {
            token_id: "oneuse".into(),
            at_unix_ms: 12,
        };
        sm.apply(3, &revoke).unwrap();
        assert!(sm.tokens()["oneuse"].revoked);
        assert_eq!(sm.apply(4, &revoke), Ok(crate::state::ApplyOutcome::Unchanged));
    }

    #[test]
    fn states_order_revoked_over_used_up_over_expired() {
        let mut r = record("t00000", 10, Some(0));
        assert_eq!(r.state(100), TokenState::UsedUp);
        r.revoked = true;
        assert_eq!(r.state(100), TokenState::Revoked);
        assert_eq!(record("t00000", 10, None).state(100), TokenState::Expired);
        assert_eq!(record("t00000", 10, None).state(9), TokenState::Active);
    }
}
