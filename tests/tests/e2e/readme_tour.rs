//! The README's "A short tour", run as written: every `$ ` line of its
//! ```console blocks, in order, through `sh -c`, with the real `rpoolctl`
//! first on PATH, in a fresh HOME, against the sandbox the tour's own
//! `rpoolctl sandbox up` starts (given a free `--port`, the one change made
//! to a line, so the test does not collide with anything on 7443).
//!
//! Placeholders (documented in the README above the tour): `<COLUMN>` is
//! the COLUMN cell of the first row of the latest table printed that has
//! that column; `<COLUMN where OTHER=VALUE>` the first row whose OTHER
//! cell is VALUE. A line that fails names its README line number and shows
//! its output.

use std::path::Path;
use std::time::Duration;

use rpool_tests::{binaries, free_port_range};

const TOUR_HEADING: &str = "## A short tour";
/// Longest any one tour line may take (pool creation and heals included).
const STEP_TIMEOUT: Duration = Duration::from_secs(180);

/// One `$ ` command of the tour (continuation lines joined).
#[derive(Debug, Clone, PartialEq, Eq)]
struct Step {
    /// 1-based line number in README.md.
    line: usize,
    command: String,
}

/// The `$ ` commands of the ```console blocks under [`TOUR_HEADING`], up
/// to the next `## ` heading. Lines ending in `\` continue on the next.
fn tour_steps(readme: &str) -> Vec<Step> {
    let mut steps = Vec::new();
    let mut in_tour = false;
    let mut in_block = false;
    let mut pending: Option<Step> = None;
    for (i, line) in readme.lines().enumerate() {
        if line.starts_with("## ") {
            in_tour = line.trim_end() == TOUR_HEADING;
            continue;
        }
        if !in_tour {
            continue;
        }
        if line.trim_start().starts_with("```") {
            in_block = !in_block && line.trim() == "```console";
            continue;
        }
        if !in_block {
            continue;
        }
        if let Some(mut step) = pending.take() {
            let part = line.trim();
            match part.strip_suffix('\\') {
                Some(more) => {
                    step.command.push_str(more);
                    pending = Some(step);
                }
                None => {
                    step.command.push_str(part);
                    steps.push(step);
                }
            }
            continue;
        }
        if let Some(command) = line.strip_prefix("$ ") {
            let step = Step {
                line: i + 1,
                command: String::new(),
            };
            match command.trim_end().strip_suffix('\\') {
                Some(more) => {
                    pending = Some(Step {
                        command: more.to_string(),
                        ..step
                    })
                }
                None => steps.push(Step {
                    command: command.trim_end().to_string(),
                    ..step
                }),
            }
        }
    }
    steps.extend(pending);
    steps
}

/// A table printed by a command: its column names with their start
/// positions (in chars), and its rows.
#[derive(Debug, Clone)]
struct Table {
    columns: Vec<(String, usize)>,
    rows: Vec<Vec<char>>,
}

impl Table {
    fn cell(&self, row: &[char], column: &str) -> Option<String> {
        let at = self.columns.iter().position(|(name, _)| name == column)?;
        let start = self.columns[at].1;
        let end = self
            .columns
            .get(at + 1)
            .map_or(row.len(), |(_, s)| *s)
            .min(row.len());
        (start <= end).then(|| row[start..end].iter().collect::<String>().trim().to_string())
    }
}

/// The column names of a table header line (cells apart by two spaces or
/// more, each upper case: `ID`, `LAST SEEN`, `CPU%`), or None.
fn header(line: &str) -> Option<Vec<(String, usize)>> {
    let chars: Vec<char> = line.chars().collect();
    let mut columns = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        if chars[i] == ' ' {
            i += 1;
            continue;
        }
        let start = i;
        while i < chars.len() && !(chars[i] == ' ' && chars.get(i + 1).is_none_or(|c| *c == ' ')) {
            i += 1;
        }
        let name: String = chars[start..i].iter().collect();
        let upper = name.chars().next().is_some_and(|c| c.is_ascii_uppercase())
            && name
                .chars()
                .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == ' ' || c == '%');
        if !upper {
            return None;
        }
        columns.push((name, start));
    }
    (columns.len() >= 2).then_some(columns)
}

/// Every table in a command's output: a header line and the lines after
/// it up to a blank line or a line indented less than the header.
fn tables(output: &str) -> Vec<Table> {
    let lines: Vec<&str> = output.lines().collect();
    let mut found = Vec::new();
    let mut i = 0;
    while i < lines.len() {
        let Some(columns) = header(lines[i]) else {
            i += 1;
            continue;
        };
        let indent = columns[0].1;
        let mut rows = Vec::new();
        i += 1;
        while i < lines.len() {
            let line = lines[i];
            let line_indent = line.chars().take_while(|c| *c == ' ').count();
            if line.trim().is_empty() || line_indent < indent {
                break;
            }
            rows.push(line.chars().collect());
            i += 1;
        }
        found.push(Table { columns, rows });
    }
    found
}

/// Replaces each `<COLUMN>` / `<COLUMN where OTHER=VALUE>` with a cell of
/// the latest matching table (newest last in `seen`).
fn fill(command: &str, seen: &[Table]) -> Result<String, String> {
    let mut out = String::new();
    let mut rest = command;
    while let Some(open) = rest.find('<') {
        let Some(close) = rest[open..].find('>').map(|c| open + c) else {
            break;
        };
        let inside = &rest[open + 1..close];
        let (column, filter) = match inside.split_once(" where ") {
            Some((column, cond)) => (column, cond.split_once('=')),
            None => (inside, None),
        };
        let is_name =
            |s: &str| !s.is_empty() && s.chars().all(|c| c.is_ascii_uppercase() || c == '_' || c == ' ');
        if !is_name(column) || filter.is_some_and(|(other, _)| !is_name(other)) {
            out.push_str(&rest[..=open]);
            rest = &rest[open + 1..];
            continue;
        }
        let value = seen
            .iter()
            .rev()
            .find_map(|t| {
                t.rows.iter().find_map(|row| {
                    let wanted = match filter {
                        Some((other, value)) => t.cell(row, other)? == value,
                        None => true,
                    };
                    if wanted {
                        t.cell(row, column).filter(|v| !v.is_empty())
                    } else {
                        None
                    }
                })
            })
            .ok_or_else(|| format!("no earlier table has a row for <{inside}>"))?;
        out.push_str(&rest[..open]);
        out.push_str(&value);
        rest = &rest[close + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

/// `rpoolctl sandbox up ...` with `--port PORT` added.
fn with_port(command: &str, port: u16) -> String {
    const UP: &str = "rpoolctl sandbox up";
    match command.strip_prefix(UP) {
        Some(rest) => format!("{UP} --port {port}{rest}"),
        None => command.to_string(),
    }
}

fn shell(home: &Path, work: &Path, command: &str) -> std::process::Command {
    let path = format!(
        "{}:{}",
        binaries().display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let mut cmd = std::process::Command::new("sh");
    cmd.arg("-c")
        .arg(command)
        .current_dir(work)
        .env("HOME", home)
        .env("PATH", path)
        .env("NO_COLOR", "1")
        .stdin(std::process::Stdio::null());
    for var in [
        "XDG_CONFIG_HOME",
        "XDG_STATE_HOME",
        "RPOOL_CONTROLLER",
        "RPOOL_CTL_CONFIG",
        "RPOOL_SANDBOX_DIR",
        "RPOOL_TLS_CA",
        "RPOOL_TLS_CERT",
        "RPOOL_TLS_KEY",
    ] {
        cmd.env_remove(var);
    }
    cmd
}

#[tokio::test]
async fn the_readme_tour_runs_as_written() -> anyhow::Result<()> {
    let readme_path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../README.md");
    let readme = std::fs::read_to_string(&readme_path)?;
    let steps = tour_steps(&readme);
    assert!(
        steps
            .first()
            .is_some_and(|s| s.command.starts_with("rpoolctl sandbox up")),
        "the tour must start the sandbox it runs against: {steps:#?}"
    );
    assert!(
        steps
            .last()
            .is_some_and(|s| s.command.starts_with("rpoolctl sandbox down")),
        "the tour must stop its sandbox: {steps:#?}"
    );
    let home = tempfile::tempdir()?;
    let work = tempfile::tempdir()?;
    let port = free_port_range(3);
    // Whatever happens, the detached sandbox processes are stopped.
    struct Down<'a>(&'a Path, &'a Path);
    impl Drop for Down<'_> {
        fn drop(&mut self) {
            let _ = shell(self.0, self.1, "rpoolctl sandbox down").output();
        }
    }
    let _down = Down(home.path(), work.path());

    let mut seen: Vec<Table> = Vec::new();
    for step in &steps {
        let command = fill(&with_port(&step.command, port), &seen)
            .map_err(|e| anyhow::anyhow!("README.md line {}: `{}`: {e}", step.line, step.command))?;
        eprintln!("README.md:{}: $ {command}", step.line);
        let started = std::time::Instant::now();
        let mut child = tokio::process::Command::from(shell(home.path(), work.path(), &command))
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()?;
        let stdout = child.stdout.take();
        let stderr = child.stderr.take();
        let read = |pipe: Option<tokio::process::ChildStdout>| async move {
            let mut text = String::new();
            if let Some(mut p) = pipe {
                let _ = tokio::io::AsyncReadExt::read_to_string(&mut p, &mut text).await;
            }
            text
        };
        let read_err = |pipe: Option<tokio::process::ChildStderr>| async move {
            let mut text = String::new();
            if let Some(mut p) = pipe {
                let _ = tokio::io::AsyncReadExt::read_to_string(&mut p, &mut text).await;
            }
            text
        };
        let run = async { tokio::join!(child.wait(), read(stdout), read_err(stderr)) };
        let Ok((status, out, err)) = tokio::time::timeout(STEP_TIMEOUT, run).await else {
            anyhow::bail!(
                "README.md line {}: `{command}` did not finish within {STEP_TIMEOUT:?}",
                step.line
            );
        };
        let status = status?;
        eprintln!("    exit {status} in {:.1?}", started.elapsed());
        if !status.success() {
            // What the sandbox's pools were doing, to tell a broken command
            // from a tour that did not wait for something.
            let pools = shell(
                home.path(),
                work.path(),
                "rpoolctl pool show web; rpoolctl events --limit 15",
            )
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default();
            anyhow::bail!(
                "README.md line {}: `{command}` no longer works: {status}\nstdout:\n{out}\nstderr:\n{err}\npool web and the last events:\n{pools}",
                step.line
            );
        }
        seen.extend(tables(&out));
    }
    Ok(())
}

#[test]
fn tour_commands_are_read_in_order_with_continuations_and_sample_output_skipped() {
    let readme = "\
# x
## Run it
```console
$ not this one
```
## A short tour
Text.
```console
$ rpoolctl sandbox up     # comment
ID  NAME
1   a
$ rpoolctl pool autoscale web --min-cores 16 \\
      --cooldown 5m
```
```sh
$ not a console block
```
```console
$ rpoolctl sandbox down
```
## Next
```console
$ not this either
```
";
    let steps = tour_steps(readme);
    let commands: Vec<(&str, usize)> = steps.iter().map(|s| (s.command.as_str(), s.line)).collect();
    assert_eq!(
        commands,
        [
            ("rpoolctl sandbox up     # comment", 9),
            ("rpoolctl pool autoscale web --min-cores 16 --cooldown 5m", 12),
            ("rpoolctl sandbox down", 19),
        ]
    );
}

#[test]
fn placeholders_are_filled_from_the_latest_table_with_that_column() {
    let host_list = "\
ID        HOSTNAME  ZONE  STATE  POOL  ROLE    LAST SEEN
3f2a9c1e  sim-a-1   a     ready  -     -       420ms
77aa0000  sim-c-1   c     ready  web   worker  1s
";
    let pool_show = "\
Name:   web
Members:
  ROLE           HOSTNAME  ID
  control-plane  sim-b-1   11110000
  worker         sim-c-2   22220000
Recent events:
  TIME  KIND  MESSAGE
";
    let mut seen = tables(host_list);
    assert_eq!(
        fill("rpoolctl host show <ID>", &seen).unwrap(),
        "rpoolctl host show 3f2a9c1e"
    );
    seen.extend(tables(pool_show));
    assert_eq!(
        fill(
            "rpoolctl sandbox kill-host <HOSTNAME where ROLE=worker> --wait",
            &seen
        )
        .unwrap(),
        "rpoolctl sandbox kill-host sim-c-2 --wait"
    );
    assert_eq!(
        fill("x <ID> > web.kubeconfig", &seen).unwrap(),
        "x 11110000 > web.kubeconfig"
    );
    assert_eq!(
        fill("x <LAST SEEN where HOSTNAME=sim-c-1>", &seen).unwrap(),
        "x 1s"
    );
    assert!(fill("x <PID>", &seen).unwrap_err().contains("<PID>"));
    assert_eq!(
        with_port("rpoolctl sandbox up   # c", 20000),
        "rpoolctl sandbox up --port 20000   # c"
    );
}
