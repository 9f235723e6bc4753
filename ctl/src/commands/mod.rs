//! One file per subcommand, each with its clap struct and an `exec`.
//!
//! `host`, `pool` and `sandbox` are nouns whose verbs live in `host_*.rs`,
//! `pool_*.rs` and `sandbox_*.rs` (`pool_wait.rs` is the `--wait` shared by
//! pool verbs); `controller` keeps its verbs in `controller.rs`.

pub mod completions;
pub mod controller;
pub mod dashboard;
pub mod demo;
pub mod demo_fleet;
pub mod events;
pub mod host;
pub mod host_label;
pub mod host_list;
pub mod host_maintenance;
pub mod host_show;
pub mod pki;
pub mod pki_controller_cert;
pub mod pool;
pub mod pool_autoscale;
pub mod pool_backup;
pub mod pool_backups;
pub mod pool_create;
pub mod pool_destroy;
pub mod pool_kubeconfig;
pub mod pool_list;
pub mod pool_renew_certs;
pub mod pool_resize;
pub mod pool_set_backup;
pub mod pool_show;
pub mod pool_upgrade;
pub mod pool_wait;
pub mod pool_zones;
pub mod sandbox;
pub mod sandbox_controller;
pub mod sandbox_down;
pub mod sandbox_host;
pub mod sandbox_kube;
pub mod sandbox_load;
pub mod sandbox_status;
pub mod sandbox_up;
pub mod snapshot;
pub mod status;
pub mod token;
pub mod what_if;

use clap::Subcommand;

use crate::settings::{Env, Settings};

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Show the controller: id, version, Raft role, leader, indexes, hosts by state
    Status(status::StatusArgs),
    /// Inspect hosts (servers running rpool-agent)
    #[command(subcommand)]
    Host(host::HostCommand),
    /// Create, inspect, resize and destroy pools (Kubernetes clusters sized in cores and memory)
    #[command(subcommand)]
    Pool(pool::PoolCommand),
    /// Show what the controllers recorded (pool steps, task failures), or follow it
    Events(events::EventsArgs),
    /// Inspect and change the controllers of the Raft group
    #[command(subcommand)]
    Controller(controller::ControllerCommand),
    /// Run three local controllers with simulated hosts, for trying rpool
    #[command(subcommand)]
    Sandbox(sandbox::SandboxCommand),
    /// Walk through a pool's life on the running fleet: create, resize up, heal a killed host, autoscale under load, resize down, destroy
    Demo(demo::DemoArgs),
    /// Create, list and revoke bootstrap tokens that agents enroll with
    #[command(subcommand)]
    Token(token::TokenCommand),
    /// Ask what rpool would do if hosts, a zone or controllers went down now (changes nothing)
    #[command(name = "what-if")]
    WhatIf(what_if::WhatIfArgs),
    /// Save a consistent backup of the controllers' state to a file, or check one
    #[command(subcommand)]
    Snapshot(snapshot::SnapshotCommand),
    /// Create the CA and certificates for controllers and admins; print the CA pin
    #[command(subcommand)]
    Pki(pki::PkiCommand),
    /// Print a shell completion script
    Completions(completions::CompletionsArgs),
    /// Serve a read-only web dashboard of the fleet on 127.0.0.1 (hosts by zone, pools, controllers, live events)
    Dashboard(dashboard::DashboardArgs),
    /// Check ctl.toml and the admin TLS files (key matches certificate, chain to the CA, validity, key not readable by all), print "config ok": exit 0 if valid, 64 if not
    #[command(long_flag = "check-config")]
    CheckConfig,
}

pub async fn exec(command: Command, settings: &Settings, env: &Env) -> anyhow::Result<()> {
    match command {
        Command::Status(args) => status::exec(args, settings).await,
        Command::Host(cmd) => host::exec(cmd, settings).await,
        Command::Pool(cmd) => pool::exec(cmd, settings).await,
        Command::Events(args) => events::exec(args, settings).await,
        Command::Demo(args) => demo::exec(args, settings, env).await,
        Command::Controller(cmd) => controller::exec(cmd, settings).await,
        Command::Sandbox(cmd) => sandbox::exec(cmd, settings, env).await,
        Command::Token(cmd) => token::exec(cmd, settings).await,
        Command::Snapshot(cmd) => snapshot::exec(cmd, settings).await,
        Command::WhatIf(args) => what_if::exec(args, settings).await,
        Command::Pki(cmd) => pki::exec(cmd),
        Command::Completions(args) => completions::exec(args),
        Command::Dashboard(args) => dashboard::exec(args, settings).await,
        Command::CheckConfig => crate::settings::check_config(settings),
    }
}
