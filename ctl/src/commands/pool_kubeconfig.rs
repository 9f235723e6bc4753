//! `rpoolctl pool kubeconfig NAME`.

use anyhow::Context;
use clap::Args;
use rpool_proto::v1::GetKubeconfigRequest;

use super::pool::parse_pool_name;
use crate::client::{self, Controller};
use crate::output;
use crate::settings::Settings;

/// Print the pool's admin kubeconfig (YAML) to stdout, and nothing else.
///
/// It holds the cluster's admin credentials: store it with care. A pool
/// whose first control plane has not finished `kubeadm init` has none yet
/// (exit 65).
#[derive(Debug, Args)]
#[command(after_help = "\
Examples:
  rpoolctl pool kubeconfig web > web.kubeconfig && chmod 600 web.kubeconfig
  KUBECONFIG=web.kubeconfig kubectl get nodes")]
pub struct KubeconfigArgs {
    /// Pool name
    #[arg(value_name = "NAME", value_parser = parse_pool_name, add = crate::complete::pools())]
    pub name: String,
}

pub async fn exec(args: KubeconfigArgs, settings: &Settings) -> anyhow::Result<()> {
    let ctl = client::connect(&settings.controllers, settings.timeout()).await?;
    output::print(&fetch(&ctl, &args.name).await?)
}

/// `GetKubeconfig`, ending in a newline.
pub async fn fetch(ctl: &Controller, name: &str) -> anyhow::Result<String> {
    let mut content = crate::rpc!(
        ctl,
        get_kubeconfig,
        GetKubeconfigRequest {
            name: name.to_string()
        }
    )
    .with_context(|| format!("fetching the kubeconfig of pool {name}"))?
    .content;
    if !content.is_empty() && !content.ends_with('\n') {
        content.push('\n');
    }
    Ok(content)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::exit;
    use crate::testing::{Fake, Seen};

    #[tokio::test]
    async fn the_kubeconfig_is_returned_as_is_with_a_final_newline() {
        let fake = Fake {
            kubeconfig: "apiVersion: v1\nkind: Config".into(),
            ..Fake::default()
        };
        let ctl = fake.clone().serve().await;
        assert_eq!(
            fetch(&ctl, "web").await.unwrap(),
            "apiVersion: v1\nkind: Config\n"
        );
        assert_eq!(fake.seen(), [Seen::GetKubeconfig("web".into())]);

        let ctl = Fake {
            fail: Some(tonic::Status::failed_precondition(
                "pool web has no kubeconfig yet",
            )),
            ..Fake::default()
        }
        .serve()
        .await;
        let err = fetch(&ctl, "web").await.unwrap_err();
        assert_eq!(exit::code_of(&err), exit::REJECTED);
        assert_eq!(
            format!("{err:#}"),
            "fetching the kubeconfig of pool web: pool web has no kubeconfig yet"
        );
    }
}
