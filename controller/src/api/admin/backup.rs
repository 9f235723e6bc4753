//! `SaveSnapshot`: a backup of the whole replicated state for `rpoolctl
//! snapshot save`.
//!
//! Served by the leader after a ReadIndex round (a follower relays the
//! leader's stream), so the copy holds every write acknowledged before the
//! call. The state is encoded under one read lock, the format of the
//! controllers' own Raft snapshots ([`SnapshotData`]), and sent as a
//! header ([`rpool_proto::backup`]'s fields) and chunks of [`CHUNK_BYTES`].
//! The payload holds secrets (pool kubeconfigs, kubeadm join secrets):
//! nothing of it is logged.

use std::sync::Arc;

use rpool_proto::v1::{SnapshotChunk, SnapshotHeader};
use tonic::Status;
use tracing::info;

use crate::Shared;
use crate::replica::apply::SnapshotData;

/// Largest payload slice in one message (well under the 4 MiB limit).
pub const CHUNK_BYTES: usize = 1 << 20;

/// The answer's stream.
pub type SnapshotStream =
    std::pin::Pin<Box<dyn tokio_stream::Stream<Item = Result<SnapshotChunk, Status>> + Send>>;

/// Takes the backup from this replica's applied state (the caller ran the
/// barrier) and streams it.
pub(crate) fn save(shared: &Shared, caller: &str) -> SnapshotStream {
    let status = shared.node.status();
    let (applied_index, payload) = shared
        .node
        .read(|sm| (sm.applied_index(), SnapshotData::encode_state(sm)));
    let header = SnapshotHeader {
        format_version: rpool_proto::backup::FORMAT_VERSION,
        applied_index,
        term: status.term,
        controller_id: shared.config.id,
        voters: status.voters.clone(),
        created_at_unix_ms: rpool_proto::clock::unix_ms_now(),
        payload_bytes: payload.len() as u64,
        payload_sha256: rpool_proto::backup::sha256_hex(&payload),
        cluster_id: String::new(),
    };
    info!(
        applied_index,
        term = status.term,
        bytes = payload.len(),
        caller,
        "backup snapshot taken"
    );
    stream(header, payload)
}

/// `header` in the first message, then `payload` in chunks (one message
/// with the header alone for an empty payload).
fn stream(header: SnapshotHeader, payload: Vec<u8>) -> SnapshotStream {
    let payload = Arc::new(payload);
    let chunks = payload.len().div_ceil(CHUNK_BYTES).max(1);
    let mut header = Some(header);
    Box::pin(tokio_stream::iter((0..chunks).map(move |i| {
        let from = i * CHUNK_BYTES;
        let to = (from + CHUNK_BYTES).min(payload.len());
        Ok(SnapshotChunk {
            header: header.take(),
            data: payload[from..to].to_vec(),
        })
    })))
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio_stream::StreamExt as _;

    #[tokio::test]
    async fn the_header_comes_first_and_the_chunks_rebuild_the_payload() {
        let payload: Vec<u8> = (0..(2 * CHUNK_BYTES + 7)).map(|i| (i % 251) as u8).collect();
        let header = SnapshotHeader {
            payload_bytes: payload.len() as u64,
            ..Default::default()
        };
        let chunks: Vec<SnapshotChunk> = stream(header.clone(), payload.clone())
            .map(|c| c.unwrap())
            .collect()
            .await;
        assert_eq!(chunks.len(), 3);
        assert_eq!(chunks[0].header.as_ref(), Some(&header));
        assert!(
            chunks[1..]
                .iter()
                .all(|c| c.header.is_none() && c.data.len() <= CHUNK_BYTES)
        );
        let rebuilt: Vec<u8> = chunks.into_iter().flat_map(|c| c.data).collect();
        assert_eq!(rebuilt, payload);
    }
}
