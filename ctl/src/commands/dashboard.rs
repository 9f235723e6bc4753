//! `rpoolctl dashboard`: serve the read-only web dashboard on loopback.

use std::net::SocketAddr;
use std::sync::Arc;

use clap::Args;

use crate::dashboard::{Source, router};
use crate::exit::Failure;
use crate::settings::Settings;

/// Default listen address: loopback, a port next to the sandbox's.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:7480";

/// Serve a read-only web page of the fleet on this machine: hosts by zone
/// (state, utilization), pools (members and their liveness, totals against
/// the request, phase and why), the controller group (leader, terms,
/// reachable) and the latest events, refreshed every second.
///
/// The page talks only to this rpoolctl, which asks the controllers over
/// gRPC with your admin certificate: the browser never gets the
/// certificate or key. No internet access is needed (nothing is loaded
/// from elsewhere). Stop it with Ctrl-C.
#[derive(Debug, Args)]
#[command(after_help = "\
Examples:
  rpoolctl dashboard                       # http://127.0.0.1:7480/
  rpoolctl dashboard --open                # and open it in the desktop's browser
  rpoolctl dashboard --listen 127.0.0.1:0  # any free port (printed)
  ssh -L 7480:127.0.0.1:7480 admin-box rpoolctl dashboard   # from your laptop

Anyone who can connect to the listen address sees what your certificate
sees; that is why only loopback addresses are accepted unless
--allow-non-loopback is given.")]
pub struct DashboardArgs {
    /// Address to listen on (ip:port; port 0 = any free port)
    #[arg(long, value_name = "IP:PORT", default_value = DEFAULT_LISTEN)]
    pub listen: String,
    /// Open the page with xdg-open once it is served
    #[arg(long)]
    pub open: bool,
    /// Accept a --listen address that is not loopback (anyone who can reach it reads the fleet with your identity)
    #[arg(long)]
    pub allow_non_loopback: bool,
}

/// The socket address to listen on, refusing non-loopback ones unless allowed.
pub fn listen_address(text: &str, allow_non_loopback: bool) -> Result<SocketAddr, Failure> {
    let addr: SocketAddr = text.parse().map_err(|_| {
        Failure::usage(format!(
            "--listen {text:?} is not an IP:PORT address (e.g. 127.0.0.1:7480; port 0..=65535)"
        ))
    })?;
    if !addr.ip().is_loopback() && !allow_non_loopback {
        return Err(Failure::usage(format!(
            "--listen {addr} is not a loopback address: the dashboard reads the fleet with your \
             admin certificate, so anyone reaching it would too; use 127.0.0.1 or [::1], or give \
             --allow-non-loopback to serve it on {} anyway",
            addr.ip()
        )));
    }
    Ok(addr)
}

pub async fn exec(args: DashboardArgs, settings: &Settings) -> anyhow::Result<()> {
    let addr = listen_address(&args.listen, args.allow_non_loopback)?;
    // Fail now, not in the page, when the admin certificate is missing.
    crate::client::tls_material()?;
    let listener = tokio::net::TcpListener::bind(addr).await.map_err(|e| {
        Failure::usage(format!(
            "listening on {addr}: {e} (choose another address with --listen)"
        ))
    })?;
    let bound = listener.local_addr()?;
    let url = format!("http://{bound}/");
    crate::output::print(&format!(
        "Dashboard: {url}\nAsking {} with your admin certificate. Ctrl-C to stop.\n",
        settings.controllers.join(", ")
    ))?;
    if args.open {
        open_in_browser(&url);
    }
    let source = Arc::new(Source::new(settings.controllers.clone(), settings.timeout()));
    let shutdown = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    rpool_proto::metrics::serve_router(listener, router(source), shutdown).await;
    Ok(())
}

/// Starts the desktop's browser on `url`; says so when it cannot.
fn open_in_browser(url: &str) {
    let started = std::process::Command::new("xdg-open")
        .arg(url)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn();
    if let Err(e) = started {
        eprintln!("note: could not start xdg-open ({e}); open {url} yourself");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_loopback_is_served_unless_allowed_and_the_error_names_the_flag() {
        assert!(listen_address("127.0.0.1:7480", false).is_ok());
        assert!(listen_address("[::1]:0", false).is_ok());
        let err = listen_address("0.0.0.0:7480", false).unwrap_err();
        assert_eq!(err.code, crate::exit::USAGE);
        assert!(err.to_string().contains("--allow-non-loopback"), "{err}");
        assert!(listen_address("0.0.0.0:7480", true).is_ok());
        let err = listen_address("localhost", false).unwrap_err();
        assert!(err.to_string().contains("IP:PORT"), "{err}");
    }
}
