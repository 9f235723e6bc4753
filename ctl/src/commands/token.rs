//! `rpoolctl token create|list|revoke`: bootstrap tokens for agent
//! enrollment (like `kubeadm token`).
//!
//! A token is `{id}.{secret}`; `create` is the only time the secret is
//! shown. An agent enrolls with it and the CA pin (`[enroll]` in
//! agent.toml), gets its certificate, and from then on renews it itself.

use std::io::IsTerminal;
use std::time::Duration;

use anyhow::Context;
use clap::{Args, Subcommand};
use rpool_proto::units::format_duration;
use rpool_proto::v1::{
    CreateTokenRequest, CreateTokenResponse, ListTokensRequest, RevokeTokenRequest, TokenInfo,
};
use serde::Serialize;

use crate::client;
use crate::clock::format_utc;
use crate::confirm::{self, Confirmation};
use crate::output::{self, Format, OutputArgs};
use crate::settings::Settings;
use crate::table::Table;

/// Accepted `--ttl` (the controller's range).
const TTL_MIN: Duration = Duration::from_secs(1);
const TTL_MAX: Duration = Duration::from_secs(30 * 86_400);
/// Most `--uses`.
const USES_MAX: u32 = 10_000;
/// Longest `--description` (characters).
const DESCRIPTION_MAX_CHARS: usize = 256;

#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Create a bootstrap token; prints it (once), the CA pin and an [enroll] snippet for agent.toml
    Create(CreateArgs),
    /// List bootstrap tokens (never their secrets)
    List(ListArgs),
    /// Revoke a bootstrap token: agents can no longer enroll with it
    Revoke(RevokeArgs),
}

pub async fn exec(cmd: TokenCommand, settings: &Settings) -> anyhow::Result<()> {
    match cmd {
        TokenCommand::Create(args) => create(args, settings).await,
        TokenCommand::List(args) => list(args, settings).await,
        TokenCommand::Revoke(args) => revoke(args, settings).await,
    }
}

/// Create a bootstrap token for enrolling agents.
///
/// The token is shown only here (the controllers keep a hash of its
/// secret). Give it to agents with the CA pin, in agent.toml's [enroll]
/// section; each enrollment uses it once (--uses), until it expires
/// (--ttl) or is revoked.
#[derive(Debug, Args)]
#[command(after_help = "\
Examples:
  rpoolctl token create                                  # 1 hour, unlimited uses
  rpoolctl token create --ttl 2h --uses 10 --description 'rack 12'
  rpoolctl token create -o json | jq -r .token")]
pub struct CreateArgs {
    /// How long the token is accepted, 1s..=30d (e.g. 30m, 2h, 7d)
    #[arg(long, value_name = "DURATION", default_value = "1h", value_parser = parse_ttl)]
    pub ttl: Duration,
    /// Enrollments allowed, 1..=10000 (default: unlimited until it expires)
    #[arg(long, value_name = "N", value_parser = parse_uses)]
    pub uses: Option<u32>,
    /// What the token is for (at most 256 characters), shown by `token list`
    #[arg(long, value_name = "TEXT", default_value = "", value_parser = parse_description)]
    pub description: String,
    #[command(flatten)]
    pub output: OutputArgs,
}

fn parse_ttl(text: &str) -> Result<Duration, String> {
    let ttl = rpool_proto::units::parse_duration(text).map_err(|e| e.to_string())?;
    if !(TTL_MIN..=TTL_MAX).contains(&ttl) || ttl.subsec_millis() != 0 {
        return Err(format!(
            "{text} is out of range (accepted whole seconds, 1s..=30d)"
        ));
    }
    Ok(ttl)
}

fn parse_uses(text: &str) -> Result<u32, String> {
    match text.parse::<u32>() {
        Ok(n) if (1..=USES_MAX).contains(&n) => Ok(n),
        _ => Err(format!("{text} is out of range (accepted 1..=10000)")),
    }
}

fn parse_description(text: &str) -> Result<String, String> {
    let chars = text.chars().count();
    if chars > DESCRIPTION_MAX_CHARS {
        return Err(format!("{chars} characters is out of range (accepted 0..=256)"));
    }
    if text.chars().any(char::is_control) {
        return Err("contains a control character (accepted printable text)".to_owned());
    }
    Ok(text.to_owned())
}

fn parse_token_id(text: &str) -> Result<String, String> {
    if text.len() == 6 && text.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit()) {
        Ok(text.to_owned())
    } else {
        Err("not a token id (accepted [a-z0-9]{6}, the part of the token before the dot)".to_owned())
    }
}

/// What `token create -o json` prints.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CreatedView {
    pub token: String,
    pub id: String,
    pub expires_at_unix_ms: u64,
    pub ca_pin: String,
    pub controllers: Vec<String>,
}

async fn create(args: CreateArgs, settings: &Settings) -> anyhow::Result<()> {
    let ctl = client::connect(&settings.controllers, settings.timeout()).await?;
    // Made here, so a retry after a leader change creates nothing twice.
    let (id, secret) = rpool_proto::token::generate().map_err(anyhow::Error::msg)?;
    let request = CreateTokenRequest {
        ttl_seconds: args.ttl.as_secs(),
        uses: args.uses.unwrap_or(0),
        description: args.description.clone(),
        token: format!("{id}.{secret}"),
    };
    let created: CreateTokenResponse = crate::rpc!(ctl, create_token, request).context("creating a token")?;
    let view = CreatedView {
        token: created.token,
        id: created.id,
        expires_at_unix_ms: created.expires_at_unix_ms,
        ca_pin: created.ca_pin,
        controllers: settings.controllers.clone(),
    };
    match args.output.output {
        Format::Json => output::print_json(&view),
        Format::Table => output::print(&render_created(&view, args.uses)),
    }
}

/// The human answer to `token create`: the token, its limits, the pin and
/// a ready-to-paste `[enroll]` section.
pub fn render_created(v: &CreatedView, uses: Option<u32>) -> String {
    let uses = uses.map_or("unlimited uses".to_owned(), |n| {
        format!("{n} use{}", if n == 1 { "" } else { "s" })
    });
    let controllers = v
        .controllers
        .iter()
        .map(|c| format!("{c:?}"))
        .collect::<Vec<_>>()
        .join(", ");
    format!(
        "Token:   {token}\n\
         Id:      {id} ({uses}, expires {expires})\n\
         CA pin:  {pin}\n\
         \n\
         The token is shown only now. For each agent, in /etc/rpool/agent.toml:\n\
         \n\
         controllers = [{controllers}]\n\
         \n\
         [enroll]\n\
         token = \"{token}\"\n\
         ca_pin = \"{pin}\"\n",
        token = v.token,
        id = v.id,
        expires = format_utc(v.expires_at_unix_ms),
        pin = v.ca_pin,
    )
}

/// List bootstrap tokens: id, description, expiry, uses left and state
/// (active, expired, used-up, revoked). Secrets are never shown.
#[derive(Debug, Args)]
#[command(after_help = "\
Examples:
  rpoolctl token list
  rpoolctl token list -o json | jq -r '.[] | select(.state == \"active\") | .id'")]
pub struct ListArgs {
    #[command(flatten)]
    pub output: OutputArgs,
}

/// One token in `token list -o json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TokenView {
    pub id: String,
    pub description: String,
    pub created_at_unix_ms: u64,
    pub expires_at_unix_ms: u64,
    /// `null` when unlimited.
    pub uses_left: Option<u32>,
    pub state: String,
}

impl From<&TokenInfo> for TokenView {
    fn from(t: &TokenInfo) -> Self {
        TokenView {
            id: t.id.clone(),
            description: t.description.clone(),
            created_at_unix_ms: t.created_at_unix_ms,
            expires_at_unix_ms: t.expires_at_unix_ms,
            uses_left: t.uses_left,
            state: t.state.clone(),
        }
    }
}

async fn list(args: ListArgs, settings: &Settings) -> anyhow::Result<()> {
    let ctl = client::connect(&settings.controllers, settings.timeout()).await?;
    let response = crate::rpc!(ctl, list_tokens, ListTokensRequest {}).context("listing tokens")?;
    let tokens: Vec<TokenView> = response.tokens.iter().map(TokenView::from).collect();
    match args.output.output {
        Format::Json => output::print_json(&tokens),
        Format::Table => output::print(&render_list(&tokens, rpool_proto::clock::unix_ms_now())),
    }
}

/// The `token list` table, or `No tokens.`.
pub fn render_list(tokens: &[TokenView], now_ms: u64) -> String {
    if tokens.is_empty() {
        return "No tokens.\n".to_owned();
    }
    let mut table = Table::new(["ID", "DESCRIPTION", "EXPIRES", "USES LEFT", "STATE"]);
    for t in tokens {
        let expires = if t.expires_at_unix_ms > now_ms {
            format!(
                "in {}",
                format_duration(Duration::from_millis(t.expires_at_unix_ms - now_ms))
            )
        } else {
            format_utc(t.expires_at_unix_ms)
        };
        let description = if t.description.is_empty() {
            "-".to_owned()
        } else {
            t.description.clone()
        };
        table.row([
            t.id.clone(),
            description,
            expires,
            t.uses_left.map_or("unlimited".to_owned(), |n| n.to_string()),
            t.state.clone(),
        ]);
    }
    table.render()
}

/// Revoke a bootstrap token. Agents already enrolled keep their
/// certificates; new enrollments with the token are refused.
///
/// Asks on a terminal; otherwise --yes is required (exit 64).
#[derive(Debug, Args)]
#[command(after_help = "\
Examples:
  rpoolctl token revoke abc123
  rpoolctl token revoke abc123 --yes")]
pub struct RevokeArgs {
    /// Token id (the part before the dot)
    #[arg(value_name = "ID", value_parser = parse_token_id)]
    pub id: String,
    /// Do not ask for confirmation (required when stdin is not a terminal)
    #[arg(long, short = 'y')]
    pub yes: bool,
}

async fn revoke(args: RevokeArgs, settings: &Settings) -> anyhow::Result<()> {
    let confirmation = confirm::confirmation(
        args.yes,
        std::io::stdin().is_terminal(),
        &format!("revoke token {}", args.id),
    )?;
    if confirmation == Confirmation::Ask {
        confirm::ask_or_decline(
            &format!(
                "Revoke token {}? Agents will no longer enroll with it. [y/N]",
                args.id
            ),
            &format!("token {} was not revoked", args.id),
        )?;
    }
    let ctl = client::connect(&settings.controllers, settings.timeout()).await?;
    let id = args.id.clone();
    let info = crate::rpc!(ctl, revoke_token, RevokeTokenRequest { id })
        .with_context(|| format!("revoking token {}", args.id))?;
    output::print(&format!("Token {} is {}.\n", info.id, info.state))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_are_checked_with_their_ranges() {
        assert_eq!(parse_ttl("1h"), Ok(Duration::from_secs(3600)));
        assert_eq!(parse_ttl("30d"), Ok(TTL_MAX));
        assert!(
            parse_ttl("31d")
                .unwrap_err()
                .contains("accepted whole seconds, 1s..=30d")
        );
        assert!(parse_ttl("500ms").is_err());
        assert!(parse_ttl("0s").is_err());
        assert_eq!(parse_uses("1"), Ok(1));
        assert_eq!(
            parse_uses("0"),
            Err("0 is out of range (accepted 1..=10000)".to_owned())
        );
        assert!(parse_uses("10001").is_err());
        assert!(
            parse_description(&"x".repeat(257))
                .unwrap_err()
                .contains("accepted 0..=256")
        );
        assert!(parse_description("a\tb").is_err());
        assert_eq!(parse_token_id("abc123"), Ok("abc123".to_owned()));
        assert!(parse_token_id("abc123.0123456789abcdef").is_err());
    }

    #[test]
    fn the_created_token_comes_with_a_pasteable_enroll_section() {
        let v = CreatedView {
            token: "abc123.0123456789abcdef".into(),
            id: "abc123".into(),
            expires_at_unix_ms: 1_700_000_000_000,
            ca_pin: format!("sha256:{}", "ab".repeat(32)),
            controllers: vec!["10.0.0.1:7443".into(), "10.0.0.2:7443".into()],
        };
        let text = render_created(&v, Some(3));
        assert!(
            text.contains("Id:      abc123 (3 uses, expires 2023-11-14T22:13:20Z)"),
            "{text}"
        );
        assert!(
            text.contains("controllers = [\"10.0.0.1:7443\", \"10.0.0.2:7443\"]"),
            "{text}"
        );
        assert!(
            text.contains("[enroll]\ntoken = \"abc123.0123456789abcdef\"\nca_pin = \"sha256:abab"),
            "{text}"
        );
        // The snippet is valid TOML with exactly the agent's keys.
        let snippet = &text[text.find("controllers = ").unwrap()..];
        let parsed: toml::Table = toml::from_str(snippet).unwrap();
        assert_eq!(parsed["enroll"]["ca_pin"].as_str(), Some(v.ca_pin.as_str()));
    }

    #[test]
    fn the_list_shows_state_and_uses_and_never_a_secret() {
        let tokens = vec![
            TokenView {
                id: "abc123".into(),
                description: "rack 12".into(),
                created_at_unix_ms: 0,
                expires_at_unix_ms: 1_000_000 + 3_600_000,
                uses_left: Some(2),
                state: "active".into(),
            },
            TokenView {
                id: "zzz999".into(),
                description: String::new(),
                created_at_unix_ms: 0,
                expires_at_unix_ms: 1_700_000_000_000,
                uses_left: None,
                state: "revoked".into(),
            },
        ];
        let text = render_list(&tokens, 1_000_000);
        let lines: Vec<&str> = text.lines().collect();
        assert!(lines[0].starts_with("ID"), "{text}");
        assert!(
            lines[1].contains("rack 12") && lines[1].contains("in 1h0m") && lines[1].contains("active"),
            "{text}"
        );
        assert!(
            lines[2].contains("unlimited") && lines[2].contains("revoked"),
            "{text}"
        );
        assert_eq!(render_list(&[], 0), "No tokens.\n");
        let json = serde_json::to_value(&tokens).unwrap();
        assert_eq!(json[1]["uses_left"], serde_json::Value::Null);
    }
}
