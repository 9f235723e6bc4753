//! The Docker testbed from the suite's side: `packaging/testbed/testbed.sh`
//! brings it up and down under the suite's own name and subnet; faults go
//! in with `nsenter` into a container's network namespace (the image has
//! no shell and no tools) and with the docker CLI.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use rpool_proto::tls::{TlsFiles, TlsMaterial};
use rpool_proto::v1::admin_service_client::AdminServiceClient;
use rpool_proto::v1::{GetHostRequest, Host, HostState, ListHostsRequest, StatusRequest, StatusResponse};
use rpool_tests::eventually;
use tonic::transport::Channel;

pub struct Testbed {
    pub name: String,
    /// The first three octets of the /24.
    subnet: String,
    dir: PathBuf,
    image: String,
    script: PathBuf,
    tls: TlsMaterial,
    /// Containers whose network namespace got iptables rules or a qdisc.
    touched: std::sync::Mutex<Vec<String>>,
}

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
}

fn run(cmd: &mut Command) -> Result<String> {
    let out = cmd.output().with_context(|| format!("running {cmd:?}"))?;
    if !out.status.success() {
        bail!(
            "{cmd:?} failed ({}): {}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

impl Testbed {
    /// Builds the image if needed and runs `testbed.sh up`, on
    /// `start_image` when given (the previous release's, for
    /// rolling-upgrade: controllers and agents start on it; everything the
    /// suite starts later runs the suite's image).
    pub fn up(controller_toml: &str, start_image: Option<&str>) -> Result<Testbed> {
        let name = std::env::var("RPOOL_FAULTS_NAME").unwrap_or_else(|_| "rpoolfaults".into());
        let cidr = std::env::var("RPOOL_FAULTS_SUBNET").unwrap_or_else(|_| "172.31.251.0/24".into());
        let subnet = cidr
            .strip_suffix(".0/24")
            .with_context(|| format!("RPOOL_FAULTS_SUBNET must be A.B.C.0/24 (got {cidr})"))?
            .to_string();
        let bins = rpool_tests::binaries();
        let image = match std::env::var("RPOOL_IMAGE") {
            Ok(image) => image,
            Err(_) => {
                let image = format!("rpool:{name}");
                let profile = if bins.ends_with("release") {
                    "release"
                } else {
                    "debug"
                };
                let target = bins.parent().expect("target dir");
                run(Command::new(repo().join("packaging/image.sh"))
                    .args(["--profile", profile, "--tag", &image])
                    .env("CARGO_TARGET_DIR", target))?;
                image
            }
        };
        let dir = std::env::temp_dir().join(format!("{name}-testbed"));
        let script = repo().join("packaging/testbed/testbed.sh");
        let env = |args: &[&str]| script_command(&script, &name, &subnet, &dir, &image, args);
        // Leftovers of an earlier run under this name go first.
        let _ = env(&["down"]).output();
        let started = Instant::now();
        run(env(&["up"])
            .env("RPOOL_TESTBED_CONTROLLER_TOML", controller_toml)
            .env("RPOOL_IMAGE", start_image.unwrap_or(&image)))?;
        eprintln!(
            "faults: testbed {name} up on {} in {:.1?}",
            start_image.unwrap_or(&image),
            started.elapsed()
        );
        let files = TlsFiles::in_dir(&dir.join("pki"), "admin");
        let tls = files.load().context("loading the testbed's admin certificate")?;
        Ok(Testbed {
            name,
            subnet,
            dir,
            image,
            script,
            tls,
            touched: Default::default(),
        })
    }

    fn script_cmd(&self, args: &[&str]) -> Command {
        script_command(
            &self.script,
            &self.name,
            &self.subnet,
            &self.dir,
            &self.image,
            args,
        )
    }

    pub fn down(&self) {
        let _ = self.heal_all();
        for n in 1..=3 {
            let _ = self.docker(&["unpause", &self.ctl_name(n)]);
        }
        match self.script_cmd(&["down"]).output() {
            Ok(out) if out.status.success() => {}
            other => eprintln!("faults: testbed down failed: {other:?}"),
        }
    }

    /// `rpoolctl` against the testbed.
    pub fn ctl(&self, args: &[&str]) -> Result<String> {
        let mut cmd = self.script_cmd(&["ctl"]);
        cmd.args(args);
        run(&mut cmd)
    }

    /// `testbed.sh upgrade KIND N`: the container of controller N (`ctl`)
    /// or agent host N (`host`) stopped and started again from the suite's
    /// image, same volume, config and address.
    pub fn upgrade(&self, kind: &str, n: u64) -> Result<()> {
        run(&mut self.script_cmd(&["upgrade", kind, &n.to_string()]))?;
        Ok(())
    }

    /// What `container` logged (stdout and stderr), newest last.
    pub fn logs(&self, container: &str) -> Result<String> {
        let out = Command::new("docker")
            .args(["logs", container])
            .output()
            .with_context(|| format!("docker logs {container}"))?;
        Ok(format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ))
    }

    pub fn docker(&self, args: &[&str]) -> Result<String> {
        run(Command::new("docker").args(args))
    }

    pub fn ctl_name(&self, n: u64) -> String {
        format!("{}-ctl-{n}", self.name)
    }

    pub fn host_name(&self, hostname: &str) -> String {
        format!("{}-{hostname}", self.name)
    }

    /// The value of an unlabelled metric of controller `n` (its `[metrics]`
    /// endpoint on port 9464, plain HTTP/1.0).
    pub fn metric(&self, n: u64, name: &str) -> Result<f64> {
        use std::io::{Read as _, Write as _};
        let address = format!("{}:9464", self.ctl_ip(n));
        let timeout = Duration::from_secs(5);
        let mut stream = std::net::TcpStream::connect_timeout(&address.parse()?, timeout)
            .with_context(|| format!("metrics of controller {n} at {address}"))?;
        stream.set_read_timeout(Some(timeout))?;
        stream.write_all(b"GET /metrics HTTP/1.0\r\n\r\n")?;
        let mut text = String::new();
        stream.read_to_string(&mut text)?;
        text.lines()
            .find_map(|line| line.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
            .with_context(|| format!("no {name} in the metrics of controller {n}"))
    }

    pub fn ctl_ip(&self, n: u64) -> String {
        format!("{}.{}", self.subnet, 10 + n)
    }

    pub fn ctl_addr(&self, n: u64) -> String {
        format!("{}:7443", self.ctl_ip(n))
    }

    pub fn others(&self, n: u64) -> Vec<u64> {
        (1..=3).filter(|&o| o != n).collect()
    }

    /// An admin client for controller `n`: connects lazily (a controller
    /// that is down fails the call, not the construction), 3 s per call.
    pub fn admin(&self, n: u64) -> Result<AdminServiceClient<Channel>> {
        let channel = self
            .tls
            .endpoint(&self.ctl_addr(n))?
            .connect_timeout(Duration::from_secs(1))
            .timeout(Duration::from_secs(3))
            .connect_lazy();
        Ok(AdminServiceClient::new(channel))
    }

    /// A client for the first controller that answers Status.
    pub async fn admin_any(&self) -> Result<AdminServiceClient<Channel>> {
        for n in 1..=3 {
            let mut client = self.admin(n)?;
            if client.status(StatusRequest {}).await.is_ok() {
                return Ok(client);
            }
        }
        bail!("no controller of {} answers", self.name)
    }

    pub async fn status(&self, n: u64) -> Result<StatusResponse> {
        Ok(self.admin(n)?.status(StatusRequest {}).await?.into_inner())
    }

    /// The controller that says it leads (bounded wait).
    pub async fn leader(&self) -> Result<u64> {
        eventually(Duration::from_secs(30), "a leader", || async {
            let mut seen = Vec::new();
            for n in 1..=3 {
                match self.status(n).await {
                    Ok(s) if s.role == "leader" => return (Some(n), seen),
                    Ok(s) => seen.push(format!("{n}: {} term {}", s.role, s.term)),
                    Err(e) => seen.push(format!("{n}: {e}")),
                }
            }
            (None, seen)
        })
        .await
    }

    /// Every controller answers, one leads, and each has applied the
    /// leader's commit index (bounded: 60 s).
    pub async fn settled(&self) -> Result<()> {
        let leader = self.leader().await?;
        let commit = self.status(leader).await?.commit_index;
        eventually(
            Duration::from_secs(60),
            "every controller applied the leader's commit index",
            || async {
                let mut applied = Vec::new();
                for n in 1..=3 {
                    applied.push(self.status(n).await.map(|s| s.applied_index).ok());
                }
                let all = applied.iter().all(|a| a.is_some_and(|a| a >= commit));
                (all.then_some(()), (commit, applied))
            },
        )
        .await
    }

    pub async fn hosts(&self) -> Result<Vec<Host>> {
        let request = ListHostsRequest::default();
        Ok(self
            .admin_any()
            .await?
            .list_hosts(request)
            .await?
            .into_inner()
            .hosts)
    }

    pub async fn host_id(&self, hostname: &str) -> Result<String> {
        let hosts = self.hosts().await?;
        hosts
            .iter()
            .find(|h| h.facts.as_ref().is_some_and(|f| f.hostname == hostname))
            .map(|h| h.host_id.clone())
            .with_context(|| format!("no host {hostname}"))
    }

    pub async fn get_host(&self, host_id: &str) -> Result<Host> {
        let request = GetHostRequest {
            host_id: host_id.into(),
        };
        Ok(self.admin_any().await?.get_host(request).await?.into_inner())
    }

    /// Waits until every host of `ids` is in `state`; returns how long.
    pub async fn wait_hosts_state(
        &self,
        ids: &[String],
        state: HostState,
        limit: Duration,
    ) -> Result<Duration> {
        let start = Instant::now();
        eventually(limit, &format!("hosts {ids:?} {state:?}"), || async {
            let hosts = self.hosts().await.unwrap_or_default();
            let states: Vec<(String, i32)> = hosts
                .iter()
                .filter(|h| ids.contains(&h.host_id))
                .map(|h| (h.host_id.clone(), h.state))
                .collect();
            let all = states.len() == ids.len() && states.iter().all(|(_, s)| *s == state as i32);
            (all.then_some(()), states)
        })
        .await?;
        Ok(start.elapsed())
    }

    /// Waits until all six hosts are ready; returns how long.
    pub async fn wait_all_hosts_ready(&self, limit: Duration) -> Result<Duration> {
        let start = Instant::now();
        eventually(limit, "all six hosts ready", || async {
            let hosts = self.hosts().await.unwrap_or_default();
            let ready = hosts
                .iter()
                .filter(|h| h.state == HostState::Ready as i32)
                .count();
            (
                (hosts.len() == 6 && ready == 6).then_some(()),
                (hosts.len(), ready),
            )
        })
        .await?;
        Ok(start.elapsed())
    }

    fn pid(&self, container: &str) -> Result<String> {
        let pid = self.docker(&["inspect", "-f", "{{.State.Pid}}", container])?;
        let pid = pid.trim().to_string();
        ensure!(pid != "0" && !pid.is_empty(), "{container} is not running");
        Ok(pid)
    }

    /// Runs a command (iptables, tc: this machine's binaries) inside
    /// `container`'s network namespace.
    pub fn nsenter(&self, container: &str, args: &[&str]) -> Result<String> {
        let pid = self.pid(container)?;
        {
            let mut touched = self.touched.lock().unwrap();
            if !touched.iter().any(|c| c == container) {
                touched.push(container.to_string());
            }
        }
        run(Command::new("nsenter").args(["-t", &pid, "-n"]).args(args))
    }

    /// `container` neither receives from nor sends to `ip`.
    pub fn cut(&self, container: &str, ip: &str) -> Result<()> {
        self.nsenter(container, &["iptables", "-I", "INPUT", "-s", ip, "-j", "DROP"])?;
        self.nsenter(container, &["iptables", "-I", "OUTPUT", "-d", ip, "-j", "DROP"])?;
        Ok(())
    }

    /// Every one of `containers` neither receives from nor sends to any of
    /// `ips`, cut as close to the same moment as this machine allows: the
    /// namespaces are looked up first (a `docker inspect` each, slow on a
    /// loaded machine), then each container's two rules go in from a
    /// thread of its own, so a zone goes dark at once instead of one host
    /// after another seconds apart.
    pub fn cut_together(&self, containers: &[String], ips: &[String]) -> Result<()> {
        let mut pids = Vec::new();
        for c in containers {
            pids.push(self.pid(c)?);
            let mut touched = self.touched.lock().unwrap();
            if !touched.iter().any(|t| t == c) {
                touched.push(c.clone());
            }
        }
        let list = ips.join(",");
        std::thread::scope(|scope| {
            let cuts: Vec<_> = pids
                .iter()
                .map(|pid| {
                    let list = &list;
                    scope.spawn(move || -> Result<()> {
                        for (chain, dir) in [("INPUT", "-s"), ("OUTPUT", "-d")] {
                            run(Command::new("nsenter")
                                .args(["-t", pid, "-n", "iptables", "-I", chain, dir, list, "-j", "DROP"]))?;
                        }
                        Ok(())
                    })
                })
                .collect();
            cuts.into_iter()
                .map(|cut| cut.join().expect("a cut thread panicked"))
                .collect::<Result<Vec<()>>>()
        })?;
        Ok(())
    }

    /// `container` sends to `ip` but drops what comes from it.
    pub fn drop_input(&self, container: &str, ip: &str) -> Result<()> {
        self.nsenter(container, &["iptables", "-I", "INPUT", "-s", ip, "-j", "DROP"])?;
        Ok(())
    }

    /// Packet loss and latency on every controller: `tc netem` when the
    /// kernel has it (delay 50 ms ± 20 ms, loss 10 %), else loss alone
    /// with iptables' statistic match (10 % of incoming packets). Says
    /// which.
    pub fn degrade_controllers(&self) -> Result<String> {
        let mut how = String::new();
        for n in 1..=3 {
            let c = self.ctl_name(n);
            let netem = self.nsenter(
                &c,
                &[
                    "tc", "qdisc", "add", "dev", "eth0", "root", "netem", "delay", "50ms", "20ms", "loss",
                    "10%",
                ],
            );
            match netem {
                Ok(_) => how = "netem delay 50ms±20ms loss 10% on every controller".into(),
                Err(e) if e.to_string().contains("qdisc kind is unknown") => {
                    self.nsenter(
                        &c,
                        &[
                            "iptables",
                            "-I",
                            "INPUT",
                            "-m",
                            "statistic",
                            "--mode",
                            "random",
                            "--probability",
                            "0.1",
                            "-j",
                            "DROP",
                        ],
                    )?;
                    how = "no netem in this kernel: 10% loss (iptables statistic) on every controller, no added latency".into();
                }
                Err(e) => return Err(e),
            }
        }
        Ok(how)
    }

    /// Removes every rule and qdisc the suite put in.
    pub fn heal_all(&self) -> Result<()> {
        let touched = self.touched.lock().unwrap().clone();
        for c in touched {
            let Ok(pid) = self.pid(&c) else { continue };
            run(Command::new("nsenter").args(["-t", &pid, "-n", "iptables", "-F"]))?;
            // No qdisc is not an error worth reporting.
            let _ = Command::new("nsenter")
                .args(["-t", &pid, "-n", "tc", "qdisc", "del", "dev", "eth0", "root"])
                .output();
        }
        Ok(())
    }
}

/// `testbed.sh ARGS` for the testbed `name` on `subnet`.0/24.
fn script_command(
    script: &Path,
    name: &str,
    subnet: &str,
    dir: &Path,
    image: &str,
    args: &[&str],
) -> Command {
    let mut cmd = Command::new(script);
    cmd.args(args)
        .env("RPOOL_TESTBED_NAME", name)
        .env("RPOOL_TESTBED_SUBNET", format!("{subnet}.0/24"))
        .env("RPOOL_TESTBED_DIR", dir)
        .env("RPOOL_IMAGE", image)
        .env("RPOOL_CTL", rpool_tests::bin("rpoolctl"));
    cmd
}
