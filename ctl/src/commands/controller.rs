//! `rpoolctl controller ...`: the controllers of the Raft group.
//!
//! Every verb can be sent to any controller: followers forward to the leader.
//! `add`, `remove` and `transfer-leader` print the group as it is after the
//! change (the same table or JSON as `list`).

use std::io::{BufRead, IsTerminal, Write};

use anyhow::Context;
use clap::{Args, Subcommand};
use rpool_proto::v1::{
    AddControllerRequest, ListControllersRequest, ListControllersResponse, RemoveControllerRequest,
    TransferLeaderRequest,
};

use crate::client::{self, Controller};
use crate::exit::{self, Failure};
use crate::output::{self, Format, OutputArgs};
use crate::settings::{Settings, check_address};
use crate::table::Table;
use crate::view::ControllerView;

/// Largest controller id (the proto's 1..=2^63).
pub const MAX_CONTROLLER_ID: u64 = 1 << 63;

#[derive(Debug, Subcommand)]
pub enum ControllerCommand {
    /// List the controllers of the group with their Raft progress
    List(ListArgs),
    /// Add a controller to the group (it catches up from a snapshot)
    Add(AddArgs),
    /// Remove a controller from the group
    Remove(RemoveArgs),
    /// Hand leadership to another voting controller
    #[command(name = "transfer-leader")]
    TransferLeader(TransferArgs),
}

/// List the controllers as the leader sees them, ordered by id.
///
/// TERM, COMMIT and APPLIED are each controller's own view ("-" when the
/// leader could not reach it); MATCH is the highest log index the leader
/// knows is replicated on it, LAG how many entries it is behind the leader.
#[derive(Debug, Args)]
#[command(after_help = "\
Examples:
  rpoolctl controller list
  rpoolctl controller list -o json | jq '.[] | select(.role == \"leader\") | .address'")]
pub struct ListArgs {
    #[command(flatten)]
    pub output: OutputArgs,
}

/// Add a controller to the group. Start it first with an empty data dir and
/// the current members as its peers; it catches up from a snapshot. One
/// membership change at a time.
#[derive(Debug, Args)]
#[command(after_help = "\
Examples:
  rpoolctl controller add 4 10.0.0.4:7443")]
pub struct AddArgs {
    /// Id for the new controller (1..=2^63, not already a member)
    #[arg(value_name = "ID", value_parser = crate::cli::whole_number::<u64>(1, MAX_CONTROLLER_ID))]
    pub id: u64,
    /// Address other controllers, agents and rpoolctl use (host:port)
    #[arg(value_name = "ADDR", value_parser = parse_peer_address)]
    pub address: String,
    #[command(flatten)]
    pub output: OutputArgs,
}

/// Remove a controller from the group. The controller refuses when the
/// remaining group could not keep a quorum with the controllers it can reach.
///
/// Asks for confirmation when stdin is a terminal; otherwise --yes is required.
#[derive(Debug, Args)]
#[command(after_help = "\
Examples:
  rpoolctl controller remove 3
  rpoolctl controller remove 3 --yes -o json")]
pub struct RemoveArgs {
    /// Id of the controller to remove
    #[arg(value_name = "ID", value_parser = crate::cli::whole_number::<u64>(1, MAX_CONTROLLER_ID), add = crate::complete::controllers())]
    pub id: u64,
    /// Do not ask for confirmation (required when stdin is not a terminal)
    #[arg(long, short = 'y')]
    pub yes: bool,
    #[command(flatten)]
    pub output: OutputArgs,
}

/// Hand leadership to another voting controller; returns once it leads.
#[derive(Debug, Args)]
#[command(after_help = "\
Examples:
  rpoolctl controller transfer-leader 2")]
pub struct TransferArgs {
    /// Id of the voter that should lead
    #[arg(value_name = "ID", value_parser = crate::cli::whole_number::<u64>(1, MAX_CONTROLLER_ID), add = crate::complete::controllers())]
    pub id: u64,
    #[command(flatten)]
    pub output: OutputArgs,
}

/// clap value parser for a peer address: `host:port`, no scheme.
pub fn parse_peer_address(text: &str) -> Result<String, String> {
    if text.contains("://") {
        return Err(format!(
            "{text:?} is not a host:port address (give it without a scheme, e.g. 10.0.0.4:7443)"
        ));
    }
    check_address(text)?;
    Ok(text.to_string())
}

pub async fn exec(cmd: ControllerCommand, settings: &Settings) -> anyhow::Result<()> {
    match cmd {
        ControllerCommand::List(args) => {
            let ctl = client::connect(&settings.controllers, settings.timeout()).await?;
            let list = list(&ctl).await?;
            print_list(&list, args.output.output, None)
        }
        ControllerCommand::Add(args) => {
            let ctl = client::connect(&settings.controllers, settings.timeout()).await?;
            let list = add(&ctl, args.id, &args.address).await?;
            let done = format!("Added controller {} ({}).", args.id, args.address);
            print_list(&list, args.output.output, Some(&done))
        }
        ControllerCommand::Remove(args) => remove(args, settings).await,
        ControllerCommand::TransferLeader(args) => {
            let ctl = client::connect(&settings.controllers, settings.timeout()).await?;
            let list = transfer_leader(&ctl, args.id).await?;
            let done = format!("Controller {} leads now.", list.leader_id);
            print_list(&list, args.output.output, Some(&done))
        }
    }
}

async fn list(ctl: &Controller) -> anyhow::Result<ListControllersResponse> {
    crate::rpc!(ctl, list_controllers, ListControllersRequest {}).context("listing controllers")
}

/// `AddController`.
pub async fn add(ctl: &Controller, id: u64, address: &str) -> anyhow::Result<ListControllersResponse> {
    let request = AddControllerRequest {
        id,
        address: address.to_string(),
    };
    crate::rpc!(ctl, add_controller, request).with_context(|| format!("adding controller {id} ({address})"))
}

/// `RemoveController`.
pub async fn remove_controller(ctl: &Controller, id: u64) -> anyhow::Result<ListControllersResponse> {
    crate::rpc!(ctl, remove_controller, RemoveControllerRequest { id })
        .with_context(|| format!("removing controller {id}"))
}

/// `TransferLeader`.
pub async fn transfer_leader(ctl: &Controller, id: u64) -> anyhow::Result<ListControllersResponse> {
    crate::rpc!(ctl, transfer_leader, TransferLeaderRequest { id })
        .with_context(|| format!("transferring leadership to controller {id}"))
}

/// Whether `remove` may go ahead, must ask, or must refuse.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Confirmation {
    /// `--yes` was given.
    Given,
    /// Ask on the terminal.
    Ask,
}

/// `--yes` skips the question; without it a terminal is needed to ask
/// (exit 64 naming `--yes` otherwise, so scripts never hang or guess).
pub fn confirmation(yes: bool, stdin_is_terminal: bool, id: u64) -> Result<Confirmation, Failure> {
    match (yes, stdin_is_terminal) {
        (true, _) => Ok(Confirmation::Given),
        (false, true) => Ok(Confirmation::Ask),
        (false, false) => Err(Failure::usage(format!(
            "refusing to remove controller {id} without confirmation: stdin is not a terminal; pass --yes"
        ))),
    }
}

/// Writes `question`, reads one line; only `y`/`yes` (any case) is a yes.
/// End of input is a no.
pub fn ask(question: &str, input: &mut impl BufRead, prompt: &mut impl Write) -> std::io::Result<bool> {
    write!(prompt, "{question} ")?;
    prompt.flush()?;
    let mut line = String::new();
    input.read_line(&mut line)?;
    let answer = line.trim().to_ascii_lowercase();
    Ok(answer == "y" || answer == "yes")
}

async fn remove(args: RemoveArgs, settings: &Settings) -> anyhow::Result<()> {
    // Refuse before touching the network: the answer does not depend on it.
    let confirmation = confirmation(args.yes, std::io::stdin().is_terminal(), args.id)?;
    let ctl = client::connect(&settings.controllers, settings.timeout()).await?;
    let mut address = None;
    if confirmation == Confirmation::Ask {
        let current = list(&ctl).await?;
        let Some(target) = current.controllers.iter().find(|c| c.id == args.id) else {
            let members: Vec<String> = current.controllers.iter().map(|c| c.id.to_string()).collect();
            return Err(Failure::new(
                exit::NOT_FOUND,
                format!(
                    "no controller with id {} in the group (members: {})",
                    args.id,
                    members.join(", ")
                ),
            )
            .into());
        };
        let question = format!(
            "Remove controller {} ({}) from the group? [y/N]",
            target.id, target.address
        );
        let yes = ask(&question, &mut std::io::stdin().lock(), &mut std::io::stderr())
            .context("reading the answer")?;
        if !yes {
            return Err(Failure::new(
                exit::UNEXPECTED,
                format!("aborted; controller {} was not removed", args.id),
            )
            .into());
        }
        address = Some(target.address.clone());
    }
    let list = remove_controller(&ctl, args.id).await?;
    let done = match address {
        Some(a) => format!("Removed controller {} ({a}).", args.id),
        None => format!("Removed controller {}.", args.id),
    };
    print_list(&list, args.output.output, Some(&done))
}

/// The list as a table (after an optional one-line summary) or as JSON.
fn print_list(list: &ListControllersResponse, format: Format, done: Option<&str>) -> anyhow::Result<()> {
    let views: Vec<ControllerView> = list.controllers.iter().map(ControllerView::from).collect();
    match format {
        Format::Json => output::print_json(&views),
        Format::Table => {
            let mut text = done.map(|d| format!("{d}\n")).unwrap_or_default();
            text.push_str(&render(&views));
            output::print(&text)
        }
    }
}

/// The `controller list` table, or `No controllers.`.
pub fn render(controllers: &[ControllerView]) -> String {
    if controllers.is_empty() {
        return "No controllers.\n".to_string();
    }
    let mut table = Table::new([
        "ID", "ADDRESS", "ROLE", "TERM", "COMMIT", "APPLIED", "MATCH", "LAG",
    ]);
    for c in controllers {
        // Its own view is unknown when the leader could not ask it.
        let own = |v: u64| {
            if c.role == "unreachable" {
                "-".to_string()
            } else {
                v.to_string()
            }
        };
        table.row([
            c.id.to_string(),
            c.address.clone(),
            c.role.clone(),
            own(c.term),
            own(c.commit_index),
            own(c.applied_index),
            c.match_index.to_string(),
            c.lag.to_string(),
        ]);
    }
    table.render()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::Cli;
    use crate::commands::Command;
    use clap::Parser;

    fn parse(args: &[&str]) -> Result<ControllerCommand, clap::Error> {
        let mut argv = vec!["rpoolctl", "controller"];
        argv.extend_from_slice(args);
        match Cli::try_parse_from(argv)?.command {
            Command::Controller(cmd) => Ok(cmd),
            other => panic!("parsed as {other:?}"),
        }
    }

    fn view(id: u64, role: &str, lag: u64) -> ControllerView {
        ControllerView {
            id,
            address: format!("127.0.0.1:{}", 7439 + id),
            role: role.into(),
            term: 3,
            commit_index: 40,
            applied_index: 40 - lag,
            match_index: 40 - lag,
            lag,
        }
    }

    #[test]
    fn the_table_has_the_documented_columns_and_hides_unknown_views() {
        let mut gone = view(3, "unreachable", 12);
        gone.term = 0;
        gone.commit_index = 0;
        gone.applied_index = 0;
        let text = render(&[view(1, "leader", 0), view(2, "follower", 1), gone]);
        assert_eq!(
            text,
            "ID  ADDRESS         ROLE         TERM  COMMIT  APPLIED  MATCH  LAG\n\
             1   127.0.0.1:7440  leader       3     40      40       40     0\n\
             2   127.0.0.1:7441  follower     3     40      39       39     1\n\
             3   127.0.0.1:7442  unreachable  -     -       -        28     12\n"
        );
        assert_eq!(render(&[]), "No controllers.\n");
    }

    #[test]
    fn the_verbs_parse_with_their_arguments() {
        assert!(
            matches!(parse(&["list", "-o", "json"]).unwrap(), ControllerCommand::List(a) if a.output.output == Format::Json)
        );
        match parse(&["add", "4", "10.0.0.4:7443"]).unwrap() {
            ControllerCommand::Add(a) => assert_eq!((a.id, a.address.as_str()), (4, "10.0.0.4:7443")),
            other => panic!("{other:?}"),
        }
        match parse(&["remove", "3", "--yes"]).unwrap() {
            ControllerCommand::Remove(a) => assert!(a.id == 3 && a.yes),
            other => panic!("{other:?}"),
        }
        match parse(&["remove", "3"]).unwrap() {
            ControllerCommand::Remove(a) => assert!(!a.yes),
            other => panic!("{other:?}"),
        }
        match parse(&["transfer-leader", "2", "-o", "json"]).unwrap() {
            ControllerCommand::TransferLeader(a) => assert_eq!(a.id, 2),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn bad_ids_and_addresses_are_usage_errors_naming_the_argument() {
        for args in [
            &["add", "0", "10.0.0.4:7443"][..],
            &["add", "x", "10.0.0.4:7443"],
            &["add", "9223372036854775809", "10.0.0.4:7443"],
            &["remove", "-1"],
            &["transfer-leader", "0"],
        ] {
            let err = parse(args).unwrap_err();
            assert_eq!(crate::clap_exit_code(err.kind()), exit::USAGE, "{args:?}");
            assert!(err.to_string().contains("<ID>"), "{args:?}: {err}");
        }
        assert!(
            parse(&["add", "9223372036854775808", "a:1"]).is_ok(),
            "2^63 is accepted"
        );
        for bad in ["10.0.0.4", "10.0.0.4:0", "http://10.0.0.4:7443", ":7443"] {
            let err = parse(&["add", "4", bad]).unwrap_err();
            assert_eq!(crate::clap_exit_code(err.kind()), exit::USAGE, "{bad}");
            assert!(err.to_string().contains("<ADDR>"), "{bad}: {err}");
        }
        let err = parse(&["add", "4"]).unwrap_err();
        assert_eq!(crate::clap_exit_code(err.kind()), exit::USAGE);
    }

    #[test]
    fn remove_without_a_terminal_needs_yes() {
        assert_eq!(confirmation(true, false, 3), Ok(Confirmation::Given));
        assert_eq!(confirmation(true, true, 3), Ok(Confirmation::Given));
        assert_eq!(confirmation(false, true, 3), Ok(Confirmation::Ask));
        let err = confirmation(false, false, 3).unwrap_err();
        assert_eq!(err.code, exit::USAGE);
        assert!(err.message.contains("--yes"), "{}", err.message);
        assert!(err.message.contains("controller 3"), "{}", err.message);
    }

    #[test]
    fn only_y_or_yes_confirms() {
        let q = "Remove controller 3 (127.0.0.1:7442) from the group? [y/N]";
        for (input, want) in [
            ("y\n", true),
            ("YES\n", true),
            (" yes \n", true),
            ("\n", false),
            ("n\n", false),
            ("yep\n", false),
            ("", false),
        ] {
            let mut prompt = Vec::new();
            let got = ask(q, &mut input.as_bytes(), &mut prompt).unwrap();
            assert_eq!(got, want, "{input:?}");
            assert_eq!(String::from_utf8(prompt).unwrap(), format!("{q} "));
        }
    }

    mod against_a_fake_controller {
        use super::super::*;
        use crate::testing::{Fake, Seen};

        fn members() -> Vec<rpool_proto::v1::Controller> {
            (1..=3)
                .map(|id| rpool_proto::v1::Controller {
                    id,
                    address: format!("127.0.0.1:{}", 7439 + id),
                    role: if id == 1 { "leader" } else { "follower" }.into(),
                    ..Default::default()
                })
                .collect()
        }

        #[tokio::test]
        async fn each_verb_sends_its_request_and_returns_the_group() {
            let fake = Fake {
                controllers: members(),
                ..Fake::default()
            };
            let seen = fake.seen.clone();
            let ctl = fake.serve().await;
            assert_eq!(list(&ctl).await.unwrap().controllers.len(), 3);
            assert_eq!(add(&ctl, 4, "127.0.0.1:7443").await.unwrap().leader_id, 1);
            remove_controller(&ctl, 3).await.unwrap();
            transfer_leader(&ctl, 2).await.unwrap();
            assert_eq!(
                *seen.lock().unwrap(),
                [
                    Seen::ListControllers,
                    Seen::Add(AddControllerRequest {
                        id: 4,
                        address: "127.0.0.1:7443".into()
                    }),
                    Seen::Remove(RemoveControllerRequest { id: 3 }),
                    Seen::Transfer(TransferLeaderRequest { id: 2 }),
                ]
            );
        }

        #[tokio::test]
        async fn a_refused_change_exits_65_with_the_servers_message() {
            let message = "removing controller 3 would leave 1 of 2 voters reachable; no quorum";
            let ctl = Fake {
                fail: Some(tonic::Status::failed_precondition(message)),
                ..Fake::default()
            }
            .serve()
            .await;
            let err = remove_controller(&ctl, 3).await.unwrap_err();
            assert_eq!(exit::code_of(&err), exit::REJECTED);
            assert_eq!(format!("{err:#}"), format!("removing controller 3: {message}"));

            let ctl = Fake {
                fail: Some(tonic::Status::invalid_argument(
                    "id: 0 is out of range (accepted 1..=2^63)",
                )),
                ..Fake::default()
            }
            .serve()
            .await;
            let err = add(&ctl, 4, "a:1").await.unwrap_err();
            assert_eq!(exit::code_of(&err), exit::REJECTED);

            let ctl = Fake {
                fail: Some(tonic::Status::not_found("no controller 9")),
                ..Fake::default()
            }
            .serve()
            .await;
            let err = transfer_leader(&ctl, 9).await.unwrap_err();
            assert_eq!(exit::code_of(&err), exit::NOT_FOUND);
        }
    }
}
