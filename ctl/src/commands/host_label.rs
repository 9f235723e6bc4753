//! `rpoolctl host label ID KEY=VALUE... KEY-...`.

use std::collections::BTreeMap;

use anyhow::Context;
use clap::Args;
use rpool_proto::v1::{Host, SetHostLabelsRequest};

use crate::client;
use crate::exit::Failure;
use crate::output::{self, Format, OutputArgs};
use crate::settings::Settings;
use crate::table::Table;
use crate::view::HostView;

/// Longest label key and value, and most admin labels per host (the proto's limits).
pub const MAX_KEY_CHARS: usize = 63;
pub const MAX_VALUE_CHARS: usize = 253;
pub const MAX_LABELS: usize = 64;

/// Set or remove admin labels on a host (kubectl style).
///
/// `KEY=VALUE` sets a label (an empty value is allowed), `KEY-` removes one
/// (removing an absent key is not an error). Keys are 1..=63 characters of
/// [A-Za-z0-9._/-]; values at most 253 characters. Prints the host's labels
/// after the change: the agent's labels merged with the admin labels.
#[derive(Debug, Args)]
#[command(after_help = "\
Examples:
  rpoolctl host label 3f2a rack=r12 gpu=a100
  rpoolctl host label 3f2a gpu-
  rpoolctl host label 3f2a rack=r14 old- -o json | jq .labels")]
pub struct LabelArgs {
    /// Host id, a unique prefix of it (at least 4 characters), or its hostname
    #[arg(value_name = "ID|HOSTNAME", add = crate::complete::hosts())]
    pub id: String,
    /// KEY=VALUE to set, KEY- to remove
    #[arg(value_name = "KEY=VALUE|KEY-", required = true, num_args = 1..)]
    pub changes: Vec<String>,
    #[command(flatten)]
    pub output: OutputArgs,
}

/// What to send in `SetHostLabels`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LabelChanges {
    pub set: BTreeMap<String, String>,
    pub remove: Vec<String>,
}

/// Parses `KEY=VALUE` / `KEY-` arguments. The first bad one is a usage error
/// (exit 64) that quotes it. A key may appear only once.
pub fn parse_changes(args: &[String]) -> Result<LabelChanges, Failure> {
    let mut changes = LabelChanges::default();
    for arg in args {
        let bad = |why: String| Failure::usage(format!("label argument {arg:?}: {why}"));
        let key = if let Some((key, value)) = arg.split_once('=') {
            check_key(key).map_err(bad)?;
            let chars = value.chars().count();
            if chars > MAX_VALUE_CHARS {
                return Err(bad(format!(
                    "the value has {chars} characters (accepted at most {MAX_VALUE_CHARS})"
                )));
            }
            if changes.set.insert(key.to_string(), value.to_string()).is_some()
                || changes.remove.iter().any(|k| k == key)
            {
                return Err(bad(format!("key {key:?} is given more than once")));
            }
            key
        } else if let Some(key) = arg.strip_suffix('-') {
            check_key(key).map_err(bad)?;
            if changes.set.contains_key(key) || changes.remove.iter().any(|k| k == key) {
                return Err(bad(format!("key {key:?} is given more than once")));
            }
            changes.remove.push(key.to_string());
            key
        } else {
            return Err(bad(
                "expected KEY=VALUE to set a label or KEY- to remove one".to_string()
            ));
        };
        debug_assert!(!key.is_empty());
    }
    if changes.set.len() > MAX_LABELS {
        return Err(Failure::usage(format!(
            "{} labels to set is out of range (accepted at most {MAX_LABELS} admin labels per host)",
            changes.set.len()
        )));
    }
    Ok(changes)
}

/// 1..=63 characters of `[A-Za-z0-9._/-]`.
fn check_key(key: &str) -> Result<(), String> {
    let ok = (1..=MAX_KEY_CHARS).contains(&key.len())
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '/' | '-'));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "key {key:?} is invalid (accepted 1..={MAX_KEY_CHARS} characters of [A-Za-z0-9._/-])"
        ))
    }
}

pub async fn exec(args: LabelArgs, settings: &Settings) -> anyhow::Result<()> {
    let changes = parse_changes(&args.changes)?;
    let ctl = client::connect(&settings.controllers, settings.timeout()).await?;
    let id = super::host::resolve_id(&ctl, &args.id).await?;
    let host = set_labels(&ctl, &id, changes).await?;
    let view = HostView::from(&host);
    match args.output.output {
        Format::Json => output::print_json(&view),
        Format::Table => output::print(&render(&view)),
    }
}

/// `SetHostLabels`; answers the host after the change.
pub async fn set_labels(ctl: &client::Controller, id: &str, changes: LabelChanges) -> anyhow::Result<Host> {
    let request = SetHostLabelsRequest {
        host_id: id.to_string(),
        set: changes.set.into_iter().collect(),
        remove: changes.remove,
    };
    crate::rpc!(ctl, set_host_labels, request).with_context(|| format!("labelling host {id}"))
}

/// `Labels of HOSTNAME (ID):` and a KEY/VALUE table, or `(none)`.
pub fn render(host: &HostView) -> String {
    let mut text = format!("Labels of {} ({}):\n", host.hostname, host.host_id);
    if host.labels.is_empty() {
        text.push_str("  (none)\n");
        return text;
    }
    let mut table = Table::new(["KEY", "VALUE"]);
    for (k, v) in &host.labels {
        table.row([k.clone(), v.clone()]);
    }
    for line in table.render().lines() {
        text.push_str("  ");
        text.push_str(line);
        text.push('\n');
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::Cli;
    use crate::commands::Command;
    use crate::commands::host::HostCommand;
    use crate::exit;
    use clap::Parser;

    fn args(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    fn error(list: &[&str]) -> Failure {
        parse_changes(&args(list)).unwrap_err()
    }

    #[test]
    fn sets_and_removals_are_split_kubectl_style() {
        let got = parse_changes(&args(&[
            "rack=r12",
            "gpu-",
            "note=a=b",
            "empty=",
            "topology.io/zone-",
        ]))
        .unwrap();
        let want = LabelChanges {
            set: [("rack", "r12"), ("note", "a=b"), ("empty", "")]
                .into_iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            remove: vec!["gpu".into(), "topology.io/zone".into()],
        };
        assert_eq!(got, want);
        // A key ending in '-' is removed with one more '-'.
        assert_eq!(parse_changes(&args(&["a--"])).unwrap().remove, ["a-"]);
    }

    #[test]
    fn bad_arguments_are_usage_errors_that_quote_them() {
        for (list, needle) in [
            (&["rack"][..], "expected KEY=VALUE"),
            (&["=v"], "key \"\" is invalid"),
            (&["-"], "key \"\" is invalid"),
            (&["bad key=v"], "key \"bad key\" is invalid"),
            (&["ключ=v"], "is invalid"),
            (&["rack=a", "rack=b"], "more than once"),
            (&["rack=a", "rack-"], "more than once"),
            (&["rack-", "rack=a"], "more than once"),
        ] {
            let err = error(list);
            assert_eq!(err.code, exit::USAGE, "{list:?}");
            assert!(err.message.contains(needle), "{list:?}: {}", err.message);
            assert!(
                err.message
                    .starts_with(&format!("label argument {:?}: ", list.last().unwrap())),
                "{}",
                err.message
            );
        }
    }

    #[test]
    fn key_and_value_lengths_are_bounded() {
        let key63 = "k".repeat(63);
        parse_changes(&args(&[&format!("{key63}=v")])).unwrap();
        let err = error(&[&format!("{}=v", "k".repeat(64))]);
        assert!(err.message.contains("1..=63"), "{}", err.message);

        let v253 = "é".repeat(253);
        parse_changes(&args(&[&format!("k={v253}")])).unwrap();
        let err = error(&[&format!("k={}", "v".repeat(254))]);
        assert!(
            err.message.contains("254 characters (accepted at most 253)"),
            "{}",
            err.message
        );

        let many: Vec<String> = (0..65).map(|i| format!("k{i}=v")).collect();
        let err = parse_changes(&many).unwrap_err();
        assert_eq!(err.code, exit::USAGE);
        assert!(err.message.contains("at most 64"), "{}", err.message);
    }

    #[test]
    fn the_command_line_takes_an_id_and_at_least_one_change() {
        let cli = Cli::try_parse_from([
            "rpoolctl", "host", "label", "3f2a", "rack=r1", "gpu-", "-o", "json",
        ])
        .unwrap();
        let Command::Host(HostCommand::Label(a)) = cli.command else {
            panic!("not host label")
        };
        assert_eq!(a.id, "3f2a");
        assert_eq!(a.changes, ["rack=r1", "gpu-"]);
        assert_eq!(a.output.output, Format::Json);
        let err = Cli::try_parse_from(["rpoolctl", "host", "label", "3f2a"]).unwrap_err();
        assert_eq!(crate::clap_exit_code(err.kind()), exit::USAGE);
    }

    #[test]
    fn labels_render_as_a_table_under_the_host() {
        let mut host = HostView::from(&crate::view::tests::sample_host());
        host.labels.insert("gpu".into(), "a100".into());
        assert_eq!(
            render(&host),
            "Labels of sim-b-2 (3f2a9c1d-0b4e-4c2a-9d7e-1a2b3c4d5e6f):\n\
             \x20 KEY   VALUE\n\
             \x20 gpu   a100\n\
             \x20 rack  r12\n"
        );
        host.labels.clear();
        assert_eq!(
            render(&host),
            "Labels of sim-b-2 (3f2a9c1d-0b4e-4c2a-9d7e-1a2b3c4d5e6f):\n  (none)\n"
        );
    }

    #[tokio::test]
    async fn the_changes_are_sent_and_the_merged_labels_come_back() {
        use crate::testing::{Fake, Seen};
        let fake = Fake {
            host: crate::view::tests::sample_host(),
            ..Fake::default()
        };
        let seen = fake.seen.clone();
        let ctl = fake.serve().await;
        let changes = parse_changes(&args(&["gpu=a100", "old-"])).unwrap();
        let host = set_labels(&ctl, "3f2a", changes).await.unwrap();
        assert_eq!(HostView::from(&host).labels["rack"], "r12");
        let Seen::SetLabels(request) = seen.lock().unwrap()[0].clone() else {
            panic!("not SetHostLabels")
        };
        assert_eq!(request.host_id, "3f2a");
        assert_eq!(request.set.get("gpu").map(String::as_str), Some("a100"));
        assert_eq!(request.set.len(), 1);
        assert_eq!(request.remove, ["old"]);

        let ctl = Fake {
            fail: Some(tonic::Status::not_found("no host with id 3f2a")),
            ..Fake::default()
        }
        .serve()
        .await;
        let err = set_labels(&ctl, "3f2a", LabelChanges::default())
            .await
            .unwrap_err();
        assert_eq!(exit::code_of(&err), exit::NOT_FOUND);
        assert_eq!(format!("{err:#}"), "labelling host 3f2a: no host with id 3f2a");
    }
}
