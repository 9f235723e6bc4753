//! `rpoolctl snapshot save|inspect`: backups of the controllers' state.
//!
//! `save` streams a consistent copy from the leader (`SaveSnapshot`: after a
//! ReadIndex round, so it holds every write acknowledged before the call)
//! into `FILE.tmp` (mode 0600), checks its length and SHA-256, fsyncs it and
//! renames it to FILE, then reads FILE back whole. `inspect` checks a file
//! and says what it holds. The format is [`rpool_proto::backup`];
//! `rpool-controller --restore FILE` rebuilds a group from it.

use std::io::Write as _;
use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};

use clap::{Args, Subcommand};
use rpool_proto::backup::{self, BackupError, Counts, Header, Sha256};
use rpool_proto::units::format_size;
use rpool_proto::v1::{SaveSnapshotRequest, SnapshotHeader};
use serde::Serialize;

use crate::client;
use crate::clock::format_utc;
use crate::exit::{self, Failure};
use crate::output::{self, Format, OutputArgs};
use crate::settings::Settings;

/// Progress lines go to stderr for payloads at least this big.
const PROGRESS_MIN_BYTES: u64 = 4 << 20;

#[derive(Debug, Subcommand)]
pub enum SnapshotCommand {
    Save(SaveArgs),
    Inspect(InspectArgs),
}

pub async fn exec(cmd: SnapshotCommand, settings: &Settings) -> anyhow::Result<()> {
    match cmd {
        SnapshotCommand::Save(args) => save(args, settings).await,
        SnapshotCommand::Inspect(args) => inspect(args),
    }
}

/// Save a consistent backup of the controllers' state (hosts, pools, tasks, events, tokens) to FILE
///
/// Taken on the leader after a ReadIndex round, so it holds every write
/// acknowledged before the command started. The file holds secrets (pool
/// kubeconfigs and kubeadm join secrets; bootstrap tokens only as hashes):
/// it is written with mode 0600; keep it like a private key. Restore with
/// `rpool-controller --restore FILE` (README, "Backup and restore").
#[derive(Debug, Args)]
#[command(after_help = "\
Examples:
  rpoolctl snapshot save /root/rpool-$(date +%F).snap
  rpoolctl snapshot save backup.snap --force -o json | jq .applied_index")]
pub struct SaveArgs {
    /// Where to write the backup (written as FILE.tmp, then renamed)
    #[arg(value_name = "FILE")]
    pub file: PathBuf,
    /// Replace FILE if it exists
    #[arg(long)]
    pub force: bool,
    #[command(flatten)]
    pub output: OutputArgs,
}

/// Check a backup file's checksums and show what it holds
#[derive(Debug, Args)]
#[command(after_help = "\
Examples:
  rpoolctl snapshot inspect /root/rpool-2026-12-06.snap
  rpoolctl snapshot inspect backup.snap -o json | jq .counts.hosts")]
pub struct InspectArgs {
    /// The backup file
    #[arg(value_name = "FILE")]
    pub file: PathBuf,
    #[command(flatten)]
    pub output: OutputArgs,
}

/// What `snapshot save -o json` and `snapshot inspect -o json` print.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SnapshotView {
    pub file: String,
    pub applied_index: u64,
    pub term: u64,
    pub controller_id: u64,
    pub voters: Vec<u64>,
    pub created_at_unix_ms: u64,
    pub cluster_id: Option<String>,
    /// Payload bytes (the file is a header line longer).
    pub size_bytes: u64,
    /// SHA-256 of the payload, hex.
    pub sha256: String,
    pub counts: Counts,
}

impl SnapshotView {
    fn new(file: &Path, header: Header, counts: Counts) -> SnapshotView {
        SnapshotView {
            file: file.display().to_string(),
            applied_index: header.applied_index,
            term: header.term,
            controller_id: header.controller_id,
            voters: header.voters,
            created_at_unix_ms: header.created_at_unix_ms,
            cluster_id: header.cluster_id,
            size_bytes: header.payload_bytes,
            sha256: header.payload_sha256,
            counts,
        }
    }
}

/// The human description of a checked backup.
pub fn render(v: &SnapshotView) -> String {
    let voters: Vec<String> = v.voters.iter().map(u64::to_string).collect();
    let c = &v.counts;
    format!(
        "File:      {file}\n\
         Taken:     {at} by controller {by} (term {term})\n\
         Index:     {index} (every write acknowledged before it was taken)\n\
         Voters:    {voters}\n\
         Size:      {size}\n\
         Checksum:  sha256:{sha} (verified)\n\
         Holds:     {hosts} hosts, {pools} pools, {tasks} tasks, {events} events, {tokens} tokens\n\
         \n\
         It holds secrets (pool kubeconfigs, kubeadm join secrets): keep it 0600, like a private key.\n",
        file = v.file,
        at = format_utc(v.created_at_unix_ms),
        by = v.controller_id,
        term = v.term,
        index = v.applied_index,
        voters = voters.join(", "),
        size = format_size(v.size_bytes),
        sha = v.sha256,
        hosts = c.hosts,
        pools = c.pools,
        tasks = c.tasks,
        events = c.events,
        tokens = c.tokens,
    )
}

fn header_of(h: SnapshotHeader) -> Header {
    Header {
        format_version: h.format_version,
        cluster_id: (!h.cluster_id.is_empty()).then_some(h.cluster_id),
        controller_id: h.controller_id,
        applied_index: h.applied_index,
        term: h.term,
        voters: h.voters,
        created_at_unix_ms: h.created_at_unix_ms,
        payload_bytes: h.payload_bytes,
        payload_sha256: h.payload_sha256,
        header_sha256: String::new(),
    }
}

/// Removes the temporary file unless the save completed.
struct TmpFile {
    path: PathBuf,
    keep: bool,
}

impl Drop for TmpFile {
    fn drop(&mut self) {
        if !self.keep {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

fn write_error(path: &Path, e: std::io::Error) -> Failure {
    Failure::new(exit::UNEXPECTED, format!("writing {}: {e}", path.display()))
}

async fn save(args: SaveArgs, settings: &Settings) -> anyhow::Result<()> {
    let file = args.file;
    if !args.force && file.symlink_metadata().is_ok() {
        return Err(Failure::usage(format!(
            "{} exists: refusing to overwrite it (--force replaces it)",
            file.display()
        ))
        .into());
    }
    let mut tmp_name = file.clone().into_os_string();
    tmp_name.push(".tmp");
    let tmp = TmpFile {
        path: PathBuf::from(tmp_name),
        keep: false,
    };
    let ctl = client::connect(&settings.controllers, settings.timeout()).await?;
    let mut stream = crate::rpc!(ctl, save_snapshot, SaveSnapshotRequest {})?;
    let broken = |what: String| {
        Failure::new(
            exit::UNAVAILABLE,
            format!(
                "the backup stream from the rpool controller at {} {what}; nothing was written to {}",
                ctl.address(),
                file.display()
            ),
        )
    };
    let mut next = async || match tokio::time::timeout(settings.timeout(), stream.message()).await {
        Ok(Ok(message)) => Ok(message),
        Ok(Err(status)) => Err(client::status_failure(&status, &ctl.address())),
        Err(_) => Err(Failure::new(
            exit::TIMED_OUT,
            format!(
                "the rpool controller at {} sent nothing for {} (raise --timeout)",
                ctl.address(),
                rpool_proto::units::format_duration(settings.timeout())
            ),
        )),
    };
    let first = next()
        .await?
        .ok_or_else(|| broken("ended before its header".into()))?;
    let header = header_of(
        first
            .header
            .clone()
            .ok_or_else(|| broken("did not start with a header".into()))?,
    );
    let mut out = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp.path)
        .map_err(|e| write_error(&tmp.path, e))?;
    // An old FILE.tmp keeps its mode through `open`: set it.
    std::fs::set_permissions(&tmp.path, std::fs::Permissions::from_mode(0o600))
        .map_err(|e| write_error(&tmp.path, e))?;
    out.write_all(&header.encode())
        .map_err(|e| write_error(&tmp.path, e))?;
    let total = header.payload_bytes;
    let mut received = 0u64;
    let mut digest = Sha256::default();
    let mut shown_tenths = 0;
    let mut chunk = Some(first);
    while let Some(message) = chunk {
        received += message.data.len() as u64;
        if received > total {
            return Err(broken(format!("sent more than the {total} bytes it announced")).into());
        }
        digest.update(&message.data);
        out.write_all(&message.data)
            .map_err(|e| write_error(&tmp.path, e))?;
        if total >= PROGRESS_MIN_BYTES {
            let tenths = received * 10 / total;
            if tenths > shown_tenths {
                shown_tenths = tenths;
                eprintln!(
                    "snapshot: {} of {} ({}%)",
                    format_size(received),
                    format_size(total),
                    tenths * 10
                );
            }
        }
        chunk = next().await?;
    }
    if received != total {
        return Err(broken(format!("ended after {received} of {total} bytes")).into());
    }
    if digest.finish() != header.payload_sha256 {
        return Err(broken("sent bytes that fail their SHA-256 checksum".into()).into());
    }
    out.sync_all().map_err(|e| write_error(&tmp.path, e))?;
    drop(out);
    std::fs::rename(&tmp.path, &file).map_err(|e| write_error(&file, e))?;
    let parent = file
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    std::fs::File::open(parent)
        .and_then(|d| d.sync_all())
        .map_err(|e| write_error(parent, e))?;
    // Renamed: no temporary file is left to remove.
    let mut tmp = tmp;
    tmp.keep = true;
    // Read back whole: what is on the disk is what will be restored.
    let view = checked(&file)?;
    match args.output.output {
        Format::Json => output::print_json(&view),
        Format::Table => output::print(&format!("Saved.\n{}", render(&view))),
    }
}

/// Reads and checks `file`: exit 65 naming it when damaged, 64 when it
/// cannot be read.
fn checked(file: &Path) -> Result<SnapshotView, Failure> {
    let (header, payload) = backup::read(file).map_err(|e| match e {
        BackupError::Damaged { .. } => Failure::new(exit::REJECTED, e.to_string()),
        BackupError::Io { .. } => Failure::usage(e.to_string()),
    })?;
    let counts = backup::count(&payload).map_err(|detail| {
        Failure::new(
            exit::REJECTED,
            format!(
                "the backup file {} passes its checksums but holds no rpool state: {detail}",
                file.display()
            ),
        )
    })?;
    Ok(SnapshotView::new(file, header, counts))
}

fn inspect(args: InspectArgs) -> anyhow::Result<()> {
    let view = checked(&args.file)?;
    if let Ok(meta) = std::fs::metadata(&args.file)
        && meta.permissions().mode() & 0o077 != 0
    {
        eprintln!(
            "warning: {} can be read by other users (mode {:04o}) and holds secrets: chmod 600 it",
            args.file.display(),
            meta.permissions().mode() & 0o7777
        );
    }
    match args.output.output {
        Format::Json => output::print_json(&view),
        Format::Table => output::print(&render(&view)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn view() -> SnapshotView {
        SnapshotView {
            file: "/root/b.snap".into(),
            applied_index: 412,
            term: 3,
            controller_id: 2,
            voters: vec![1, 2, 3],
            created_at_unix_ms: 0,
            cluster_id: None,
            size_bytes: 2048,
            sha256: "ab".repeat(32),
            counts: Counts {
                applied_index: 412,
                controllers: 3,
                hosts: 6,
                pools: 1,
                tasks: 5,
                events: 40,
                tokens: 2,
            },
        }
    }

    #[test]
    fn the_human_view_names_index_counts_checksum_and_the_secrets_warning() {
        let text = render(&view());
        assert!(text.contains("Index:     412"), "{text}");
        assert!(
            text.contains("6 hosts, 1 pools, 5 tasks, 40 events, 2 tokens"),
            "{text}"
        );
        assert!(
            text.contains(&format!("sha256:{} (verified)", "ab".repeat(32))),
            "{text}"
        );
        assert!(text.contains("holds secrets"), "{text}");
    }

    #[test]
    fn a_damaged_or_missing_file_gets_its_own_exit_code_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("none.snap");
        let err = checked(&missing).unwrap_err();
        assert_eq!(err.code, exit::USAGE);
        assert!(err.message.contains("none.snap"), "{}", err.message);
        let bad = dir.path().join("bad.snap");
        std::fs::write(&bad, b"rpool-backup\n{}\n").unwrap();
        let err = checked(&bad).unwrap_err();
        assert_eq!(err.code, exit::REJECTED);
        assert!(
            err.message.contains("bad.snap") && err.message.contains("damaged"),
            "{}",
            err.message
        );
    }
}
