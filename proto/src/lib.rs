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

/// Which of `n` places `key` goes to: FNV-1a of the key modulo `n`, stable
/// across processes, builds and releases (the standard library's hash is
/// seeded per process), and even over a fleet of host ids. An agent picks
/// its first controller with it and a leader the follower that relays a
/// host's session, so a host keeps going to the same place. `n` must not
/// be 0.
pub fn spread(key: &str, n: usize) -> usize {
    (fnv1a(key.as_bytes()) % n as u64) as usize
}

fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spread_is_fnv1a_and_even_over_a_fleet_of_host_ids() {
        // The published FNV-1a 64 test vectors: the same on every build.
        assert_eq!(fnv1a(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a(b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(fnv1a(b"foobar"), 0x8594_4171_f739_67e8);
        for n in [1usize, 2, 3, 5] {
            let mut counts = vec![0usize; n];
            for i in 0..10_000 {
                counts[spread(&format!("00000000-0000-4000-8000-{i:012x}"), n)] += 1;
            }
            let even = 10_000 / n;
            assert!(
                counts.iter().all(|c| c.abs_diff(even) <= even / 15),
                "{n} places: {counts:?}"
            );
        }
    }
}
