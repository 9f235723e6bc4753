//! `rpoolctl events [--pool P] [--kind K] [--follow]`.
//!
//! `--kind audit` lists the audit trail: every admin change with the
//! caller's certificate identity, the operation, its arguments and outcome
//! (in `-o json`, an `audit` object on each such event).
//!
//! Without `--follow`: the newest `--limit` events, oldest first, as a table
//! or a JSON array. With `--follow`: the same, then every new event as it is
//! recorded (`WatchEvents` after the last index seen) until Ctrl-C; when the
//! stream breaks (a controller stops, a failover) it is reopened through the
//! next controller that answers, from the last index seen, so nothing is
//! missed or repeated. JSON with `--follow` is one compact object per line.

use std::ops::ControlFlow;
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use rpool_proto::v1::ListEventsRequest;
use tokio::time::Instant;

use super::pool::parse_pool_name;
use crate::client::{self, Controller};
use crate::clock;
use crate::exit::{self, Failure};
use crate::output::{self, Format, OutputArgs};
use crate::settings::Settings;
use crate::view::EventView;

/// Most events one `WatchEvents` poll may carry (the controller's limit).
const WATCH_LIMIT: u32 = 1000;
/// Reopening a broken stream: pauses grow by this step up to the cap, and
/// the follow gives up after this many breaks in a row without an event.
const RECONNECT_STEP: Duration = Duration::from_millis(200);
const RECONNECT_CAP: Duration = Duration::from_secs(2);
const RECONNECTS_MAX: u32 = 30;
/// A stream that stayed open this long was healthy: its break starts a new count.
const HEALTHY_STREAM: Duration = Duration::from_secs(10);

/// Show what the controllers recorded: pools created, hosts placed, tasks
/// run and failed, phases changed, hosts returned to the fleet.
///
/// TIME is UTC. With --follow, new events are printed as they happen until
/// Ctrl-C; a broken stream is reopened through another controller.
#[derive(Debug, Args)]
#[command(after_help = "\
Examples:
  rpoolctl events
  rpoolctl events --pool web --limit 200
  rpoolctl events --pool web --follow
  rpoolctl events --kind audit
  rpoolctl events --kind audit -o json | jq -r '.[] | [.audit.actor, .audit.operation] | @tsv'
  rpoolctl events --follow -o json | jq -r 'select(.kind == \"task_failed\") | .message'")]
pub struct EventsArgs {
    /// Only this pool's events
    #[arg(long, value_name = "POOL", value_parser = parse_pool_name, add = crate::complete::pools())]
    pub pool: Option<String>,
    /// Only events of this kind, e.g. `audit` (who changed what),
    /// `host_down`, `task_failed`
    #[arg(long, value_name = "KIND", value_parser = parse_kind)]
    pub kind: Option<String>,
    /// Keep printing new events until Ctrl-C
    #[arg(long, short = 'f')]
    pub follow: bool,
    /// How many of the newest events to print first (1..=1000)
    #[arg(long, value_name = "N", default_value_t = 50, value_parser = crate::cli::whole_number::<u32>(1, 1000))]
    pub limit: u32,
    #[command(flatten)]
    pub output: OutputArgs,
}

pub async fn exec(args: EventsArgs, settings: &Settings) -> anyhow::Result<()> {
    let ctl = client::connect(&settings.controllers, settings.timeout()).await?;
    let pool = args.pool.clone().unwrap_or_default();
    let kind = args.kind.clone().unwrap_or_default();
    let events = list_kind(&ctl, &pool, &kind, 0, args.limit).await?;
    let format = args.output.output;
    if !args.follow {
        return match format {
            Format::Json => output::print_json(&events),
            Format::Table if events.is_empty() => output::print("No events.\n"),
            Format::Table => output::print(&EventPrinter::new(format).print(&events)),
        };
    }
    let mut printer = EventPrinter::new(format);
    output::print(&printer.print(&events))?;
    let after = events.last().map_or(0, |e| e.index);
    let mut failed = None;
    follow(
        &ctl,
        &pool,
        &kind,
        after,
        &mut |event| match output::print(&printer.print(std::slice::from_ref(event))) {
            Ok(()) => ControlFlow::Continue(()),
            Err(e) => {
                failed = Some(e);
                ControlFlow::Break(())
            }
        },
        &mut |note| eprintln!("{note}"),
    )
    .await?;
    failed.map_or(Ok(()), Err)
}

/// An event kind as the controller names them: 1 to 64 of `a-z 0-9 _`.
pub fn parse_kind(text: &str) -> Result<String, String> {
    if (1..=64).contains(&text.len())
        && text
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
    {
        Ok(text.to_owned())
    } else {
        Err(format!(
            "{text:?} is not an event kind (accepted 1 to 64 of a-z, 0-9 and _, e.g. audit)"
        ))
    }
}

/// `ListEvents`: the newest `limit` events after `after_index`, oldest first.
pub async fn list(
    ctl: &Controller,
    pool: &str,
    after_index: u64,
    limit: u32,
) -> anyhow::Result<Vec<EventView>> {
    list_kind(ctl, pool, "", after_index, limit).await
}

/// [`list`], only events of `kind` ("" for all).
pub async fn list_kind(
    ctl: &Controller,
    pool: &str,
    kind: &str,
    after_index: u64,
    limit: u32,
) -> anyhow::Result<Vec<EventView>> {
    let request = ListEventsRequest {
        pool: pool.to_string(),
        after_index,
        limit,
        kind: kind.to_string(),
    };
    let response = crate::rpc!(ctl, list_events, request).context("listing events")?;
    Ok(response.events.iter().map(EventView::from).collect())
}

/// Streams events after `after` to `on_event` until it breaks. A broken or
/// ended stream is reopened (through [`Controller::call`], which moves to
/// another controller when this one is unavailable) from the last index
/// seen; `note` hears about each reopening. Gives up (exit 69) after
/// [`RECONNECTS_MAX`] breaks in a row that brought no event.
pub async fn follow(
    ctl: &Controller,
    pool: &str,
    kind: &str,
    mut after: u64,
    on_event: &mut dyn FnMut(&EventView) -> ControlFlow<()>,
    note: &mut dyn FnMut(&str),
) -> anyhow::Result<()> {
    let mut breaks = 0u32;
    loop {
        let request = ListEventsRequest {
            pool: pool.to_string(),
            after_index: after,
            limit: WATCH_LIMIT,
            kind: kind.to_string(),
        };
        let opened = Instant::now();
        let mut stream = crate::rpc!(ctl, watch_events, request).context("following events")?;
        let mut progressed = false;
        let reason = loop {
            match stream.message().await {
                Ok(Some(event)) => {
                    if event.index <= after {
                        continue;
                    }
                    after = event.index;
                    progressed = true;
                    if on_event(&EventView::from(&event)).is_break() {
                        return Ok(());
                    }
                }
                Ok(None) => break "the stream ended".to_string(),
                Err(status) if status.message().is_empty() => break format!("{:?}", status.code()),
                Err(status) => break status.message().to_string(),
            }
        };
        if progressed || opened.elapsed() >= HEALTHY_STREAM {
            breaks = 0;
        }
        breaks += 1;
        if breaks > RECONNECTS_MAX {
            return Err(Failure::new(
                exit::UNAVAILABLE,
                format!(
                    "the event stream broke {RECONNECTS_MAX} times in a row without an event (last: {reason}); \
                     giving up after index {after}"
                ),
            )
            .into());
        }
        note(&format!(
            "event stream from {} broke ({reason}); reopening after index {after}",
            ctl.address()
        ));
        tokio::time::sleep((RECONNECT_STEP * breaks).min(RECONNECT_CAP)).await;
    }
}

/// Prints events as table rows (the header once, columns widened as wider
/// cells come, so a follow stays readable) or as JSON lines.
pub struct EventPrinter {
    format: Format,
    widths: Option<[usize; 3]>,
}

impl EventPrinter {
    pub fn new(format: Format) -> Self {
        Self { format, widths: None }
    }

    /// The text for `events`: table rows (with the header the first time)
    /// or one compact JSON object per line.
    pub fn print(&mut self, events: &[EventView]) -> String {
        if self.format == Format::Json {
            return events
                .iter()
                .map(|e| serde_json::to_string(e).unwrap_or_default() + "\n")
                .collect();
        }
        let cells: Vec<[String; 4]> = events.iter().map(cells).collect();
        let mut text = String::new();
        let mut widths = self.widths.unwrap_or_else(|| {
            let header = ["TIME", "POOL", "KIND", "MESSAGE"].map(String::from);
            let w = ["TIME".len(), "POOL".len(), "KIND".len()];
            text.push_str(&line(&header, &grow(w, &cells)));
            w
        });
        widths = grow(widths, &cells);
        for row in &cells {
            text.push_str(&line(row, &widths));
        }
        self.widths = Some(widths);
        text
    }
}

fn cells(e: &EventView) -> [String; 4] {
    [
        clock::format_utc(e.at_unix_ms),
        if e.pool.is_empty() {
            "-".into()
        } else {
            e.pool.clone()
        },
        e.kind.clone(),
        e.message.clone(),
    ]
}

fn grow(mut widths: [usize; 3], rows: &[[String; 4]]) -> [usize; 3] {
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    widths
}

fn line(cells: &[String; 4], widths: &[usize; 3]) -> String {
    let mut text = String::new();
    for (cell, w) in cells.iter().zip(widths) {
        text.push_str(&format!("{cell:<w$}  "));
    }
    text.push_str(&cells[3]);
    format!("{}\n", text.trim_end())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::Cli;
    use crate::commands::Command;
    use crate::testing::{Fake, Seen};
    use clap::Parser;
    use rpool_proto::v1::Event;

    fn event(index: u64, pool: &str, kind: &str, message: &str) -> Event {
        Event {
            index,
            at_unix_ms: 1_700_000_000_000 + index * 1000,
            pool: pool.into(),
            host_id: String::new(),
            kind: kind.into(),
            message: message.into(),
            severity: String::new(),
            audit: None,
        }
    }

    #[test]
    fn flags_parse_with_a_bounded_limit() {
        let cli = Cli::try_parse_from([
            "rpoolctl", "events", "--pool", "web", "-f", "--limit", "7", "-o", "json",
        ])
        .unwrap();
        let Command::Events(a) = cli.command else {
            panic!("not events")
        };
        assert_eq!(a.pool.as_deref(), Some("web"));
        assert!(a.follow);
        assert_eq!(a.limit, 7);
        let Command::Events(a) = Cli::try_parse_from(["rpoolctl", "events"]).unwrap().command else {
            panic!("not events")
        };
        assert_eq!((a.pool, a.follow, a.limit), (None, false, 50));
        for bad in ["0", "1001", "x"] {
            let err = Cli::try_parse_from(["rpoolctl", "events", "--limit", bad]).unwrap_err();
            assert_eq!(crate::clap_exit_code(err.kind()), exit::USAGE, "{bad}");
        }
    }

    #[test]
    fn the_table_has_time_pool_kind_message_and_later_rows_keep_the_columns() {
        let mut p = EventPrinter::new(Format::Table);
        let first = [
            EventView::from(&event(1, "web", "pool_created", "pool web created on 3 hosts")),
            EventView::from(&event(2, "", "host_joined", "host sim-a-1 registered")),
        ];
        assert_eq!(
            p.print(&first),
            "TIME                  POOL  KIND          MESSAGE\n\
             2023-11-14T22:13:21Z  web   pool_created  pool web created on 3 hosts\n\
             2023-11-14T22:13:22Z  -     host_joined   host sim-a-1 registered\n"
        );
        assert_eq!(
            p.print(&[EventView::from(&event(3, "web", "task_done", "joined"))]),
            "2023-11-14T22:13:23Z  web   task_done     joined\n"
        );
        let mut p = EventPrinter::new(Format::Table);
        assert_eq!(p.print(&[]), "TIME  POOL  KIND  MESSAGE\n");
    }

    #[test]
    fn json_follow_lines_are_compact_objects_with_the_documented_keys() {
        let mut p = EventPrinter::new(Format::Json);
        let text = p.print(&[EventView::from(&event(3, "web", "task_done", "ok"))]);
        assert_eq!(
            text,
            "{\"index\":3,\"at_unix_ms\":1700000003000,\"pool\":\"web\",\"host_id\":\"\",\
             \"kind\":\"task_done\",\"message\":\"ok\",\"severity\":\"info\"}\n"
        );
    }

    #[tokio::test]
    async fn list_asks_for_the_pool_and_limit() {
        let fake = Fake::default();
        fake.events.lock().unwrap().extend([
            event(1, "web", "a", "1"),
            event(2, "ci", "b", "2"),
            event(3, "web", "c", "3"),
        ]);
        let ctl = fake.clone().serve().await;
        let got = list(&ctl, "web", 0, 1).await.unwrap();
        assert_eq!(got.iter().map(|e| e.index).collect::<Vec<_>>(), [3]);
        assert_eq!(
            fake.seen(),
            [Seen::ListEvents(ListEventsRequest {
                pool: "web".into(),
                after_index: 0,
                limit: 1,
                kind: String::new(),
            })]
        );
    }

    #[tokio::test]
    async fn a_broken_stream_is_reopened_after_the_last_index_seen() {
        let fake = Fake::default();
        fake.events
            .lock()
            .unwrap()
            .extend([event(1, "web", "a", "1"), event(2, "web", "b", "2")]);
        let ctl = fake.clone().serve().await;
        let events = fake.events.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(100)).await;
            events.lock().unwrap().push(event(3, "web", "c", "3"));
        });
        let mut got = Vec::new();
        let mut notes = Vec::new();
        follow(
            &ctl,
            "web",
            "",
            1,
            &mut |e| {
                got.push(e.index);
                if e.index == 3 {
                    ControlFlow::Break(())
                } else {
                    ControlFlow::Continue(())
                }
            },
            &mut |n| notes.push(n.to_string()),
        )
        .await
        .unwrap();
        assert_eq!(got, [2, 3]);
        assert!(!notes.is_empty());
        assert!(
            notes[0].contains("broke (the stream ended); reopening after index 2"),
            "{notes:?}"
        );
        let afters: Vec<u64> = fake
            .seen()
            .iter()
            .filter_map(|s| match s {
                Seen::WatchEvents(r) => Some(r.after_index),
                _ => None,
            })
            .collect();
        assert_eq!(afters[0], 1);
        assert!(afters[1..].iter().all(|a| *a == 2), "{afters:?}");
    }
}
