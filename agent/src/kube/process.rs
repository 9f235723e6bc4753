//! The process runner: every `kubeadm`/`kubectl` the agent starts goes
//! through [`Driver::run`], which spawns the tool in its own process group
//! with the agent's environment (plus [`Driver::with_env`]), captures
//! stdout and stderr, and kills the whole group when the timeout expires or
//! the calling future is dropped. Failures carry the redacted tail of the
//! output.

use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use tracing::{debug, warn};

use super::redact::{display_command, redact};
use super::{Driver, ERROR_TAIL_LINES, KubeError};

/// Captured result of one finished process.
#[derive(Debug)]
pub(super) struct Output {
    pub(super) code: i32,
    pub(super) stdout: String,
    pub(super) stderr: String,
}

impl Driver {
    /// Runs one command line; `Ok` only for exit code 0.
    pub(super) async fn run(
        &self,
        program: &Path,
        args: &[String],
        timeout: Duration,
    ) -> Result<Output, KubeError> {
        let cmd = display_command(program, args);
        let started = Instant::now();
        let mut command = tokio::process::Command::new(program);
        command
            .args(args)
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .process_group(0);
        let child = command.spawn().map_err(|source| KubeError::Spawn {
            cmd: cmd.clone(),
            source,
        })?;
        // Kills the whole group if this future is dropped (timeout, task
        // deadline, shutdown) before the process is reaped.
        let mut group = GroupKill(child.id());
        debug!(cmd = %cmd, "running");
        let waited = tokio::time::timeout(timeout, child.wait_with_output()).await;
        let output = match waited {
            Err(_) => {
                drop(group);
                warn!(cmd = %cmd, timeout_s = timeout.as_secs(), "killed after the timeout");
                return Err(KubeError::Timeout {
                    cmd,
                    secs: timeout.as_secs(),
                });
            }
            Ok(Err(source)) => return Err(KubeError::Spawn { cmd, source }),
            Ok(Ok(output)) => {
                group.0 = None;
                output
            }
        };
        let out = Output {
            code: output.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        };
        let elapsed_ms = started.elapsed().as_millis() as u64;
        if out.code == 0 {
            debug!(cmd = %cmd, elapsed_ms, "done");
            return Ok(out);
        }
        let tail = error_tail(&out);
        warn!(cmd = %cmd, code = out.code, elapsed_ms, error = %tail, "failed");
        Err(KubeError::Failed {
            cmd,
            code: out.code,
            tail,
        })
    }

    pub(super) async fn kubeadm(&self, args: &[String]) -> Result<Output, KubeError> {
        self.run(&self.kubeadm, args, self.timeout).await
    }

    pub(super) async fn kubectl(&self, args: &[String]) -> Result<Output, KubeError> {
        self.run(&self.kubectl, args, self.timeout).await
    }

    /// `kubectl --kubeconfig A ARGS...`.
    pub(super) fn kubectl_args(&self, args: &[&str]) -> Vec<String> {
        let mut v = vec!["--kubeconfig".to_owned(), self.admin()];
        v.extend(args.iter().map(|s| s.to_string()));
        v
    }
}

/// Kills a process group when dropped (unless disarmed with `None`).
struct GroupKill(Option<u32>);

impl Drop for GroupKill {
    fn drop(&mut self) {
        if let Some(pid) = self.0.take()
            && let Ok(pid) = i32::try_from(pid)
            && pid > 0
        {
            // SAFETY: kill(2) has no memory-safety preconditions; the group
            // is the child's own (process_group(0)).
            unsafe {
                libc::kill(-pid, libc::SIGKILL);
            }
        }
    }
}

/// Owned arguments for a command line.
pub(super) fn strings(args: &[&str]) -> Vec<String> {
    args.iter().map(|s| s.to_string()).collect()
}

/// The last lines of a failed tool's output (stderr, else stdout), redacted.
fn error_tail(out: &Output) -> String {
    let text = if out.stderr.trim().is_empty() {
        &out.stdout
    } else {
        &out.stderr
    };
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    let tail = &lines[lines.len().saturating_sub(ERROR_TAIL_LINES)..];
    if tail.is_empty() {
        return "(no output)".to_owned();
    }
    redact(&tail.join("\n"))
}
