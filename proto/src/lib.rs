//! The contract between rpool's binaries.
//!
//! - [`v1`]: messages and gRPC services generated from `rpool/v1/*.proto`
//!   (`AgentService`: one bidirectional stream per agent; `AdminService`: what
//!   `rpoolctl` calls). The `.proto` files document every field and unit.
//!   Their codec is [`codec::SmallBufferCodec`] (1 KiB stream buffers).
//! - [`config`]: what every binary's config shares: [`config::FieldError`]
//!   (the field and what is accepted), the `[metrics]` section, `[tls]` paths.
//! - [`backup`]: the backup file (`rpoolctl snapshot save`): header,
//!   checksums, reading and checking it whole.
//! - [`clock`]: wall-clock milliseconds since the Unix epoch, read in one
//!   place.
//! - [`units`]: parsing and printing of sizes (`64GiB`) and durations (`10m`)
//!   the way users type them, shared by configs and the CLI.
//! - [`pki`]: the rpool CA, certificates whose identity is a
//!   `urn:rpool:<role>:<name>` URI SAN, CSR signing, CA pins.
//! - [`tls`]: mutual-TLS server/client configs and endpoints from those
//!   files (checked on load: chain, validity, key matches certificate; and
//!   for `--check-config` key file mode), and the peer identity of a request.
//! - [`pinned`]: a TLS client that trusts a controller only through a CA
//!   pin (`sha256:<hex>` of its SubjectPublicKeyInfo), for enrollment.
//! - [`kube`]: the kubeadm configuration and CNI manifest checks the
//!   controller and kubesim share (YAML reader/emitter, CIDR arithmetic).
//! - [`metrics`]: Prometheus counters, gauges and histograms
//!   (`prometheus-client`), the text exposition format 0.0.4, and a bounded
//!   `GET /metrics` server (axum router on hyper).

pub mod backup;
pub mod clock;
pub mod codec;
pub mod config;
pub mod kube;
pub mod logging;
pub mod metrics;
pub mod pinned;
pub mod pki;
pub mod sim;
pub mod tls;
pub mod token;
pub mod units;

/// Generated code for package `rpool.v1`.
pub mod v1 {
    #![allow(clippy::all, missing_docs)]
    tonic::include_proto!("rpool.v1");
}

/// Version of this build, reported by every binary and in `Hello`.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// gRPC metadata key of a controller's retry hint, in milliseconds, on an
/// `UNAVAILABLE` answer to `AgentService.Session` when it admits no more
/// new sessions for now (see `agent.proto`).
pub const RETRY_AFTER_MS: &str = "retry-after-ms";
