//! Creating a cluster and handing out its join secrets: `kubeadm init
//! --config F --upload-certs` (`F` from the controller, staged 0600 and
//! removed afterwards) on
//! the first control plane ([`Driver::init`], idempotent: a host that is
//! already that cluster's control plane only reads fresh secrets), and
//! `kubeadm token create` + `kubeadm init phase upload-certs` for the
//! next nodes ([`Driver::refresh_join`]).

use std::path::Path;

use rpool_proto::clock::unix_ms_now;
use tracing::{info, warn};

use super::checks::{check_cidr, check_endpoint, check_join_fields, check_node_name, check_version};
use super::parse::{parse_init_output, parse_join_commands, parse_upload_certs, same_endpoint};
use super::process::strings;
use super::redact::display_command;
use super::staging::{INIT_CONFIG_PREFIX, config_args};
use super::{
    CERTIFICATE_KEY_TTL, Driver, InitOutcome, InitRequest, JoinInfo, KUBELET_CONF, KubeError, TOKEN_TTL,
};

impl Driver {
    /// `kubeadm init` for a new cluster (see the module docs), returning the
    /// join secrets and the admin kubeconfig.
    pub async fn init(&self, req: &InitRequest) -> Result<InitOutcome, KubeError> {
        check_endpoint("control_plane_endpoint", &req.control_plane_endpoint)?;
        check_node_name(&req.node_name)?;
        check_cidr("pod_network_cidr", &req.pod_network_cidr)?;
        check_cidr("service_cidr", &req.service_cidr)?;
        check_version(&req.kubernetes_version)?;
        let endpoint = &req.control_plane_endpoint;

        if let Some(server) = self.kubeconfig_server(&self.admin_kubeconfig)? {
            if same_endpoint(&server, endpoint) {
                info!(endpoint = %endpoint, "kubeadm init already done here; reading fresh join secrets");
                if !req.kube_vip_manifest_after_init.is_empty() {
                    self.write_kube_vip(&req.kube_vip_manifest_after_init)?;
                }
                let join = self.refresh_join(true).await?;
                return Ok(InitOutcome {
                    join,
                    kubeconfig: self.admin_kubeconfig()?,
                    already_done: true,
                });
            }
            return Err(KubeError::Refused(format!(
                "this host is already a control plane of the cluster at {server} ({} exists), not {endpoint}; reset it first",
                self.admin()
            )));
        }
        if let Some(server) = self.kubeconfig_server(Path::new(KUBELET_CONF))? {
            return Err(KubeError::Refused(format!(
                "this host is already a node of the cluster at {server} ({KUBELET_CONF} exists); reset it first"
            )));
        }
        let had_state = self.has_kubeadm_state();
        // The VIP must answer before init can finish (kubeadm talks to the
        // API through the endpoint): kube-vip starts with the control plane.
        if !req.kube_vip_manifest.is_empty() {
            self.write_kube_vip(&req.kube_vip_manifest)?;
        }
        // The controller's file (secrets inside, removed when this call
        // ends), else (an older controller) flags.
        let staged = if req.kubeadm_config.is_empty() {
            None
        } else {
            Some(self.stage_kubeadm_config(INIT_CONFIG_PREFIX, &req.kubeadm_config)?)
        };
        let args = match &staged {
            Some(file) => config_args("init", &file.0, &["--upload-certs"]),
            None => strings(&[
                "init",
                "--control-plane-endpoint",
                endpoint,
                "--upload-certs",
                "--pod-network-cidr",
                &req.pod_network_cidr,
                "--service-cidr",
                &req.service_cidr,
                "--kubernetes-version",
                &req.kubernetes_version,
                "--node-name",
                &req.node_name,
            ]),
        };
        let now = unix_ms_now();
        let out = match self.kubeadm(&args).await {
            Ok(out) => out,
            Err(e) => {
                // A failed init leaves half a control plane behind, and the
                // retry would fail its preflight on it: clean up, unless the
                // leftovers were there before (then they are not ours).
                if !had_state && self.has_kubeadm_state() {
                    match self
                        .kubeadm(&strings(&["reset", "-f", "--cleanup-tmp-dir"]))
                        .await
                    {
                        Ok(_) => info!("cleaned up after the failed kubeadm init (kubeadm reset -f)"),
                        Err(reset) => warn!(error = %reset, "cleanup after the failed kubeadm init failed"),
                    }
                }
                return Err(e);
            }
        };
        drop(staged);
        if !req.kube_vip_manifest_after_init.is_empty() {
            self.write_kube_vip(&req.kube_vip_manifest_after_init)?;
        }
        let cmd = display_command(&self.kubeadm, &args);
        let parsed = parse_init_output(&out.stdout).map_err(|what| KubeError::Output { cmd, what })?;
        let certificate_key_expires_unix_ms = if parsed.certificate_key.is_some() {
            now + CERTIFICATE_KEY_TTL.as_millis() as u64
        } else {
            0
        };
        info!(endpoint = %parsed.endpoint, node = %req.node_name, "kubeadm init done");
        Ok(InitOutcome {
            join: JoinInfo {
                endpoint: parsed.endpoint,
                token: parsed.token,
                ca_cert_hash: parsed.ca_cert_hash,
                certificate_key: parsed.certificate_key,
                token_expires_unix_ms: now + TOKEN_TTL.as_millis() as u64,
                certificate_key_expires_unix_ms,
            },
            kubeconfig: self.admin_kubeconfig()?,
            already_done: false,
        })
    }

    /// Fresh join secrets from this control plane: a new bootstrap token
    /// and, when `certificate_key`, freshly uploaded certificates.
    pub async fn refresh_join(&self, certificate_key: bool) -> Result<JoinInfo, KubeError> {
        let args = strings(&[
            "token",
            "create",
            "--print-join-command",
            "--kubeconfig",
            &self.admin(),
        ]);
        let now = unix_ms_now();
        let out = self.kubeadm(&args).await?;
        let cmd = display_command(&self.kubeadm, &args);
        let join = parse_join_commands(&out.stdout)
            .into_iter()
            .next()
            .ok_or_else(|| KubeError::Output {
                cmd: cmd.clone(),
                what: "no `kubeadm join` command line".to_owned(),
            })?;
        check_join_fields(&join).map_err(|what| KubeError::Output { cmd, what })?;
        let mut info = JoinInfo {
            endpoint: join.endpoint,
            token: join.token,
            ca_cert_hash: join.ca_cert_hash,
            certificate_key: None,
            token_expires_unix_ms: now + TOKEN_TTL.as_millis() as u64,
            certificate_key_expires_unix_ms: 0,
        };
        if certificate_key {
            let args = strings(&[
                "init",
                "phase",
                "upload-certs",
                "--upload-certs",
                "--kubeconfig",
                &self.admin(),
            ]);
            let now = unix_ms_now();
            let out = self.kubeadm(&args).await?;
            let key = parse_upload_certs(&out.stdout).ok_or_else(|| KubeError::Output {
                cmd: display_command(&self.kubeadm, &args),
                what: "no certificate key after \"[upload-certs] Using certificate key:\"".to_owned(),
            })?;
            info.certificate_key = Some(key);
            info.certificate_key_expires_unix_ms = now + CERTIFICATE_KEY_TTL.as_millis() as u64;
        }
        Ok(info)
    }
}
