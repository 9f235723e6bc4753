//! The audit trail: who changed what through the admin API.
//!
//! An admin change is proposed as [`Command::Audited`]: the change itself
//! and an [`AuditRecord`] (the caller's certificate identity, the
//! operation, its arguments) in ONE replicated entry. Applying it plans the
//! inner command; only when that fits is an event of kind [`AUDIT`] added
//! to the same [`Change`], with the outcome filled in. So a change never
//! lands without its record, and a refused change (here or before it was
//! proposed) leaves none: it changed nothing, it is answered to the caller
//! with the reason, and the controller logs and counts authorization
//! denials (`api::authz`) — recording refusals in the replicated log would
//! let any admin grow it with calls that do nothing.
//!
//! Arguments never hold secrets: the admin API builds them from names,
//! sizes and ids only (token ids, never token values), and [`check`]
//! refuses keys that name a secret.

use std::collections::BTreeMap;

use rpool_proto::v1;
use serde::{Deserialize, Serialize};

use crate::state::command::Command;
use crate::state::pool::{Event, Severity};
use crate::state::{ApplyError, ApplyOutcome, Change, State};

/// The event kind of audit records.
pub const AUDIT: &str = "audit";

/// Argument keys refused in an audit record (a secret must never be
/// replicated into the event log).
const SECRET_KEYS: [&str; 6] = [
    "token",
    "secret",
    "key",
    "password",
    "kubeconfig",
    "certificate_key",
];

/// One admin change as the trail keeps it (see `rpool.v1.AuditRecord`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditRecord {
    /// The caller's identity URI, e.g. `urn:rpool:admin:alice`.
    pub actor: String,
    /// The controller that forwarded the call to the leader, if one did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub via: Option<u64>,
    /// e.g. `pool create`, `host cordon`.
    pub operation: String,
    /// Names, sizes, ids; never secrets.
    #[serde(default)]
    pub args: BTreeMap<String, String>,
    /// `applied` or `unchanged`; empty until applied.
    #[serde(default)]
    pub outcome: String,
    /// Proposer's clock (Unix ms).
    pub at_unix_ms: u64,
}

impl AuditRecord {
    /// A record of `operation` by `actor` (outcome filled in at apply).
    pub fn new(actor: String, via: Option<u64>, operation: &str, at_unix_ms: u64) -> AuditRecord {
        AuditRecord {
            actor,
            via,
            operation: operation.to_owned(),
            args: BTreeMap::new(),
            outcome: String::new(),
            at_unix_ms,
        }
    }

    /// Adds an argument.
    pub fn arg(mut self, key: &str, value: impl ToString) -> AuditRecord {
        self.args.insert(key.to_owned(), value.to_string());
        self
    }

    /// `command` wrapped with this record.
    pub fn wrap(self, command: Command) -> Command {
        Command::Audited {
            audit: self,
            command: Box::new(command),
        }
    }

    /// "admin alice: pool create web (cores=64, memory_bytes=…): applied".
    pub fn sentence(&self) -> String {
        let who = match v1_identity(&self.actor) {
            Some(readable) => readable,
            None => self.actor.clone(),
        };
        let args: Vec<String> = self.args.iter().map(|(k, v)| format!("{k}={v}")).collect();
        let via = self
            .via
            .map(|id| format!(" via controller {id}"))
            .unwrap_or_default();
        format!(
            "{who}{via}: {} ({}): {}",
            self.operation,
            args.join(", "),
            self.outcome
        )
    }

    /// The wire form.
    pub fn to_proto(&self) -> v1::AuditRecord {
        v1::AuditRecord {
            actor: self.actor.clone(),
            via_controller: self.via.unwrap_or(0),
            operation: self.operation.clone(),
            arguments: self.args.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
            outcome: self.outcome.clone(),
        }
    }

    /// The audit event for this record applied at `index`.
    pub fn event(&self, index: u64, pool: &str, host_id: &str) -> Event {
        Event {
            index,
            at_unix_ms: self.at_unix_ms,
            pool: pool.to_owned(),
            host_id: host_id.to_owned(),
            kind: AUDIT.to_owned(),
            message: self.sentence(),
            severity: Severity::Info,
            audit: Some(self.clone()),
        }
    }
}

/// `urn:rpool:admin:alice` → `admin alice`.
fn v1_identity(uri: &str) -> Option<String> {
    match rpool_proto::pki::Identity::from_uri(uri) {
        Some(Ok(identity)) => Some(identity.to_string()),
        _ => None,
    }
}

/// Refuses a record without an actor or operation, or with an argument
/// key that names a secret.
pub fn check(audit: &AuditRecord) -> Result<(), ApplyError> {
    if audit.actor.is_empty() || audit.operation.is_empty() {
        return Err(ApplyError::Refused(
            "an audit record needs an actor and an operation".to_owned(),
        ));
    }
    if let Some(key) = audit
        .args
        .keys()
        .find(|k| SECRET_KEYS.iter().any(|s| k.as_str() == *s))
    {
        return Err(ApplyError::Refused(format!(
            "audit argument {key:?} names a secret; secrets are never recorded"
        )));
    }
    Ok(())
}

impl State {
    /// Plans `command` and, when it fits, adds its audit event to the same
    /// change.
    pub(crate) fn plan_audited(
        &self,
        index: u64,
        audit: &AuditRecord,
        command: &Command,
    ) -> Result<Change, ApplyError> {
        if matches!(command, Command::Audited { .. }) {
            return Err(ApplyError::Refused(
                "an audited command cannot nest another".to_owned(),
            ));
        }
        check(audit)?;
        let mut change = self.plan(index, command)?;
        let mut record = audit.clone();
        record.outcome = match change.outcome {
            ApplyOutcome::Unchanged => "unchanged",
            _ => "applied",
        }
        .to_owned();
        change
            .more
            .events
            .push(record.event(index, command.pool(), command.host_id()));
        Ok(change)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::command::tests::facts;
    use crate::state::command::{HostState, HostState::Cordoned};

    fn register(state: &mut State, id: &str) {
        let index = state.applied_index() + 1;
        state
            .apply(
                index,
                &Command::RegisterHost {
                    host_id: id.to_owned(),
                    agent_version: "0.1.0".to_owned(),
                    facts: facts(id, 16),
                    at_unix_ms: 1,
                },
            )
            .unwrap();
    }

    fn cordon(id: &str, state: HostState) -> Command {
        Command::SetHostState {
            host_id: id.to_owned(),
            state,
            reason: "cordoned by an admin".to_owned(),
            at_unix_ms: 7,
        }
    }

    fn alice(operation: &str) -> AuditRecord {
        AuditRecord::new("urn:rpool:admin:alice".to_owned(), Some(2), operation, 7)
    }

    #[test]
    fn an_audited_change_records_who_did_what_in_the_same_entry() {
        let mut state = State::new();
        register(&mut state, "h1");
        let command = alice("host cordon")
            .arg("host", "h1")
            .wrap(cordon("h1", Cordoned));
        let change = state.plan(2, &command).unwrap();
        assert_eq!(change.record.as_ref().unwrap().state, Cordoned);
        assert_eq!(change.more.events.len(), 1);
        let event = &change.more.events[0];
        assert_eq!(event.kind, AUDIT);
        assert_eq!(event.index, 2);
        assert_eq!(event.host_id, "h1");
        let audit = event.audit.as_ref().unwrap();
        assert_eq!(audit.actor, "urn:rpool:admin:alice");
        assert_eq!(audit.via, Some(2));
        assert_eq!(audit.outcome, "applied");
        assert_eq!(
            event.message,
            "admin alice via controller 2: host cordon (host=h1): applied"
        );
        state.commit(change);
        assert_eq!(state.host("h1").unwrap().state, Cordoned);
        assert_eq!(state.events().back().unwrap().kind, AUDIT);
        // The same change again holds already: recorded as unchanged.
        state.apply(3, &command).unwrap();
        assert_eq!(
            state.events().back().unwrap().audit.as_ref().unwrap().outcome,
            "unchanged"
        );
    }

    #[test]
    fn a_refused_change_leaves_no_audit_record() {
        let mut state = State::new();
        register(&mut state, "h1");
        let before = state.events().len();
        let command = alice("host cordon")
            .arg("host", "nope")
            .wrap(cordon("nope", Cordoned));
        assert_eq!(
            state.apply(2, &command).unwrap_err(),
            ApplyError::UnknownHost("nope".to_owned())
        );
        assert_eq!(state.events().len(), before);
        assert_eq!(state.applied_index(), 1);
    }

    #[test]
    fn records_with_secret_arguments_or_without_an_actor_are_refused() {
        let mut state = State::new();
        register(&mut state, "h1");
        for bad in [
            alice("token create").arg("token", "abcdef.0123456789abcdef"),
            alice("token create").arg("secret", "x"),
            AuditRecord::new(String::new(), None, "host cordon", 7),
        ] {
            let command = bad.wrap(cordon("h1", Cordoned));
            assert!(
                matches!(state.plan(2, &command), Err(ApplyError::Refused(_))),
                "{command:?}"
            );
        }
        let nested = alice("x").wrap(alice("y").wrap(cordon("h1", Cordoned)));
        assert!(matches!(state.plan(2, &nested), Err(ApplyError::Refused(_))));
    }

    #[test]
    fn an_audited_command_survives_a_trip_through_json() {
        let command = alice("pool destroy")
            .arg("pool", "web")
            .wrap(Command::DestroyPool {
                pool: "web".to_owned(),
                at_unix_ms: 7,
            });
        let json = serde_json::to_value(&command).unwrap();
        assert_eq!(json["type"], "audited");
        assert_eq!(json["command"]["type"], "destroy_pool");
        assert_eq!(serde_json::from_value::<Command>(json).unwrap(), command);
        assert_eq!(command.pool(), "web");
        assert_eq!(command.kind(), "destroy_pool");
    }
}
