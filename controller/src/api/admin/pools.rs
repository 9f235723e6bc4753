//! The pool half of `AdminService`: create (with placement), list, show,
//! resize, destroy, kubeconfig, events. Writes run on the leader (the
//! caller forwards); placement reads the state after a ReadIndex barrier.

use rpool_proto::v1::{self, CreatePoolRequest, ResizePoolRequest};
use tonic::Status;

use crate::Shared;
use crate::api::status::{Refusal, propose_status};
use crate::api::validate::{Invalid, dns_label};
use crate::policy::fleet::{candidate, candidates, endpoint};
use crate::policy::placement::{self, Candidate, Request};
use crate::replica::ProposeError;
use crate::state::State;
use crate::state::audit::AuditRecord;
use crate::state::command::{Command, HostRecord, HostState};
use crate::state::pool::{MemberState, PoolRecord, PoolSpec, Role, ZoneMode, ZonePolicy};
use rpool_proto::clock::unix_ms_now;

/// Defaults for fields a `PoolSpec` leaves empty.
pub const DEFAULT_KUBERNETES_VERSION: &str = "v1.32.0";
pub const DEFAULT_POD_NETWORK_CIDR: &str = "10.244.0.0/16";
pub const DEFAULT_SERVICE_CIDR: &str = "10.96.0.0/12";
const POOL_NAME_MAX_CHARS: usize = 40;
const CORES_MAX: u64 = 1_000_000;
const MEMORY_MIN: u64 = 1 << 30;
const MEMORY_MAX: u64 = 64 << 50;
/// Events shown with `GetPool`.
const RECENT_EVENTS: usize = 20;

pub(crate) fn range(field: &str, value: impl std::fmt::Display, accepted: &str) -> Invalid {
    Invalid::new(field, format!("{value} is out of range (accepted {accepted})"))
}

pub fn pool_name(field: &str, name: &str) -> Result<(), Invalid> {
    dns_label(field, name)?;
    if name.len() > POOL_NAME_MAX_CHARS {
        return Err(range(field, format!("{} characters", name.len()), "1..=40"));
    }
    Ok(())
}

fn cidr(field: &str, value: &str) -> Result<(), Invalid> {
    let ok = rpool_proto::kube::cidr::is_cidr(value);
    if ok {
        Ok(())
    } else {
        Err(Invalid::new(
            field,
            format!(
                "{} is not a CIDR (accepted an IPv4 address/0..=32 or IPv6 address/0..=128, e.g. 10.244.0.0/16)",
                crate::api::validate::show(value)
            ),
        ))
    }
}

/// Checks a spec and fills in defaults.
pub fn spec(field: &str, spec: Option<&v1::PoolSpec>) -> Result<PoolSpec, Invalid> {
    let spec = spec.ok_or_else(|| Invalid::new(field, "missing (accepted a PoolSpec)"))?;
    pool_name(&format!("{field}.name"), &spec.name)?;
    if !(1..=CORES_MAX).contains(&spec.cores) {
        return Err(range(&format!("{field}.cores"), spec.cores, "1..=1000000"));
    }
    if !(MEMORY_MIN..=MEMORY_MAX).contains(&spec.memory_bytes) {
        return Err(range(
            &format!("{field}.memory_bytes"),
            spec.memory_bytes,
            "1GiB..=64PiB",
        ));
    }
    if ![1, 3, 5].contains(&spec.control_planes) {
        return Err(range(
            &format!("{field}.control_planes"),
            spec.control_planes,
            "1, 3 or 5",
        ));
    }
    let version = if spec.kubernetes_version.is_empty() {
        DEFAULT_KUBERNETES_VERSION.to_owned()
    } else {
        spec.kubernetes_version.clone()
    };
    let parts: Vec<&str> = version.strip_prefix('v').unwrap_or("").split('.').collect();
    if parts.len() != 3
        || parts
            .iter()
            .any(|p| p.is_empty() || p.len() > 5 || !p.chars().all(|c| c.is_ascii_digit()))
    {
        return Err(Invalid::new(
            format!("{field}.kubernetes_version"),
            format!(
                "{} is not a version (accepted vMAJOR.MINOR.PATCH with 1..=5 digits each, e.g. v1.32.0)",
                crate::api::validate::show(&version)
            ),
        ));
    }
    // The configuration files rpool writes need kubeadm v1.31 or newer.
    crate::kube::versions::parse_supported(&format!("{field}.kubernetes_version"), &version)
        .map_err(|e| Invalid::new(e.field, e.message))?;
    let pod = if spec.pod_network_cidr.is_empty() {
        DEFAULT_POD_NETWORK_CIDR
    } else {
        &spec.pod_network_cidr
    };
    let service = if spec.service_cidr.is_empty() {
        DEFAULT_SERVICE_CIDR
    } else {
        &spec.service_cidr
    };
    cidr(&format!("{field}.pod_network_cidr"), pod)?;
    cidr(&format!("{field}.service_cidr"), service)?;
    let image_repository = spec.image_repository.trim();
    image_repository_check(&format!("{field}.image_repository"), image_repository)?;
    let checked = PoolSpec {
        name: spec.name.clone(),
        cores: spec.cores,
        memory_bytes: spec.memory_bytes,
        control_planes: spec.control_planes,
        kubernetes_version: version,
        pod_network_cidr: pod.to_owned(),
        service_cidr: service.to_owned(),
        vip: spec.vip.trim().to_owned(),
        lb_range: spec.lb_range.trim().to_owned(),
        zones: zone_policy(field, spec)?,
        image_repository: image_repository.to_owned(),
        backup_interval_ms: spec.backup_interval_ms,
        backup_keep: spec.backup_keep,
    };
    crate::state::backups::check_schedule(spec.backup_interval_ms, spec.backup_keep)
        .map_err(|(name, message)| Invalid::new(format!("{field}.{name}"), message))?;
    // The VIP and LB range parse and stay clear of the pool's own networks
    // (the rest of the fleet: [`create`], and again in apply).
    crate::state::pool_apply::network::spec_network(&checked, 1).map_err(|e| field_error(field, e))?;
    Ok(checked)
}

/// Zone names rpool accepts: what agents report (`[agent] zone`).
const ZONE_MAX_CHARS: usize = 63;
/// Allowed zones a spec may list.
const ZONES_MAX: usize = 64;

/// The spec's zone policy: mode "any" (zones ignored), "spread" or "pack"
/// ("" is read as any here; [`create`] replaces it with
/// [`default_zone_mode`] of the fleet), and the allowed zones (trimmed,
/// sorted, deduplicated). Whether the fleet has them is [`check_zones`]'s
/// job (it needs the state).
fn zone_policy(field: &str, spec: &v1::PoolSpec) -> Result<ZonePolicy, Invalid> {
    let mode = match spec.zone_policy.trim() {
        "" | "any" => ZoneMode::Any,
        "spread" => ZoneMode::Spread,
        "pack" => ZoneMode::Pack,
        other => {
            return Err(Invalid::new(
                format!("{field}.zone_policy"),
                format!(
                    "{} is not a zone policy (accepted \"any\", \"spread\" or \"pack\")",
                    crate::api::validate::show(other)
                ),
            ));
        }
    };
    if spec.zones.len() > ZONES_MAX {
        return Err(range(
            &format!("{field}.zones"),
            format!("{} zones", spec.zones.len()),
            "0 (every zone) ..=64 zones",
        ));
    }
    let mut allowed: Vec<String> = Vec::with_capacity(spec.zones.len());
    for zone in &spec.zones {
        let zone = zone.trim();
        let ok = !zone.is_empty()
            && zone.len() <= ZONE_MAX_CHARS
            && zone
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
        if !ok {
            return Err(Invalid::new(
                format!("{field}.zones"),
                format!(
                    "{} is not a zone name (accepted 1..=63 of a-z, A-Z, 0-9, -, _ and .)",
                    crate::api::validate::show(zone)
                ),
            ));
        }
        allowed.push(zone.to_owned());
    }
    allowed.sort();
    allowed.dedup();
    Ok(ZonePolicy { mode, allowed })
}

/// The zone mode of a pool created without one: spread when the hosts it
/// may take (free, ready, in its allowed zones) report at least two
/// distinct zones, else any (a host without a zone reports none). Decided
/// once, at creation, and recorded in the spec: healing, resizes and the
/// autoscaler keep it whatever the fleet becomes.
pub fn default_zone_mode(sm: &State, policy: &ZonePolicy) -> ZoneMode {
    let zones: std::collections::BTreeSet<String> = candidates(sm)
        .into_iter()
        .filter(|c| !c.zone.is_empty() && policy.allows(&c.zone))
        .map(|c| c.zone)
        .collect();
    if zones.len() >= 2 {
        ZoneMode::Spread
    } else {
        ZoneMode::Any
    }
}

/// Every allowed zone of `policy` is a zone of a registered host: an
/// unknown one is bad input, named with the zones the fleet has.
pub fn check_zones(sm: &State, policy: &ZonePolicy, field: &str) -> Result<(), Status> {
    let known = crate::policy::fleet::zones(sm);
    let unknown: Vec<&String> = policy.allowed.iter().filter(|z| !known.contains(z)).collect();
    if unknown.is_empty() {
        return Ok(());
    }
    let has: Vec<String> = known
        .iter()
        .map(|z| {
            if z.is_empty() {
                "\"\" (no zone)".to_owned()
            } else {
                z.clone()
            }
        })
        .collect();
    Err(Invalid::new(
        format!("{field}.zones"),
        format!(
            "unknown zone(s) {} (accepted zones of the fleet's hosts: {})",
            unknown.iter().map(|z| z.as_str()).collect::<Vec<_>>().join(", "),
            if has.is_empty() {
                "none, no host is registered".to_owned()
            } else {
                has.join(", ")
            }
        ),
    )
    .into())
}

/// Per-zone totals of workers, wire form.
pub fn zone_totals(workers: &[Candidate]) -> Vec<v1::ZoneTotal> {
    crate::policy::zones::totals(workers)
        .into_iter()
        .map(|(zone, workers, cores, memory_bytes)| v1::ZoneTotal {
            zone,
            workers,
            cores,
            memory_bytes,
        })
        .collect()
}

/// A pool's image repository: "" (the fleet's) or a registry reference
/// as kubeadm's `imageRepository` takes it, lower case.
fn image_repository_check(field: &str, repo: &str) -> Result<(), Invalid> {
    if repo.is_empty()
        || (rpool_proto::kube::kubeadm_check::is_image_repository(repo)
            && !repo.bytes().any(|b| b.is_ascii_uppercase()))
    {
        return Ok(());
    }
    Err(Invalid::new(
        field,
        format!(
            "{} is not an image repository (accepted HOST[:PORT][/PATH] in lower case, no scheme, \
             no tag or digest, at most {} characters, e.g. mirror.example:5000/k8s; \
             empty = the controller's [kube] image_repository)",
            crate::api::validate::show(repo),
            rpool_proto::kube::kubeadm_check::IMAGE_REPOSITORY_MAX_CHARS
        ),
    ))
}

/// A [`crate::kube::KubeFieldError`] under `prefix`, named as the spec
/// names the field.
fn field_error(prefix: &str, e: crate::kube::KubeFieldError) -> Invalid {
    let field = match e.field.as_str() {
        "pod_cidr" => "pod_network_cidr",
        other => other,
    };
    Invalid::new(format!("{prefix}.{field}"), e.message)
}

/// The spec a pool is created with: `spec` with a VIP from the fleet's
/// `[kube] vip_range` when it has several control planes and none was
/// given (the lowest free address, chosen here on the leader and carried
/// by the command, so every replica stores the same one), checked against
/// the other pools and the hosts. `field` prefixes error fields.
pub fn with_vip(
    sm: &State,
    spec: &PoolSpec,
    vip_range: Option<&rpool_proto::kube::cidr::IpRange>,
    max_nodes: u32,
    field: &str,
) -> Result<PoolSpec, Status> {
    let mut spec = spec.clone();
    if spec.vip.is_empty() && spec.control_planes > 1 {
        let Some(range) = vip_range else {
            return Err(Invalid::new(
                format!("{field}.vip"),
                format!(
                    "missing for a pool of {} control planes, which needs a virtual IP for its API endpoint \
                     (accepted an IP address, e.g. --vip 192.0.2.10, or set [kube] vip_range in controller.toml \
                     so the controller picks one)",
                    spec.control_planes
                ),
            )
            .into());
        };
        let own = crate::state::pool_apply::network::spec_network(&spec, max_nodes)
            .map_err(|e| Status::from(field_error(field, e)))?;
        let vip = crate::state::pool_apply::network::FleetAddresses::of(sm, &spec.name)
            .with(|fleet| crate::kube::network::allocate_vip(range, Some(&own), fleet))
            .map_err(|e| Status::failed_precondition(format!("kube.{e}")))?;
        spec.vip = vip.to_string();
    }
    sm.check_pool_addresses(&spec, max_nodes)
        .map_err(|e| Status::failed_precondition(field_error(field, e).to_string()))?;
    Ok(spec)
}

/// `VIP:6443` when the pool has a VIP.
pub fn vip_endpoint(spec: &PoolSpec) -> Option<String> {
    spec.vip
        .parse::<std::net::IpAddr>()
        .ok()
        .map(crate::kube::kubeadm::endpoint)
}

/// A host as a (would-be) pool member with `role` in `state` ("" when not
/// applicable): dry runs, hosts added or released by a resize or a drain.
fn host_as_member(host: &HostRecord, role: Role, state: &str) -> v1::PoolMember {
    v1::PoolMember {
        host_id: host.host_id.clone(),
        hostname: host.facts.hostname.clone(),
        zone: host.facts.zone.clone(),
        role: role.as_str().to_owned(),
        node_name: crate::state::pool_apply::node_name(host),
        state: state.to_owned(),
        cores: host.facts.inventory.logical_cores,
        memory_bytes: host.facts.inventory.memory_total_bytes,
        last_error: String::new(),
        ..Default::default()
    }
}

/// [`host_as_member`] for each known host of `ids`.
fn hosts_as_members(sm: &State, ids: &[String], role: Role, state: &str) -> Vec<v1::PoolMember> {
    ids.iter()
        .filter_map(|id| sm.host(id))
        .map(|h| host_as_member(h, role, state))
        .collect()
}

fn member_view(state: &State, m: &crate::state::pool::Member) -> v1::PoolMember {
    let host = state.host(&m.host_id);
    v1::PoolMember {
        host_id: m.host_id.clone(),
        hostname: host.map(|h| h.facts.hostname.clone()).unwrap_or_default(),
        zone: host.map(|h| h.facts.zone.clone()).unwrap_or_default(),
        role: m.role.as_str().to_owned(),
        node_name: m.node_name.clone(),
        state: m.state.as_str().to_owned(),
        cores: host.map(|h| h.facts.inventory.logical_cores).unwrap_or_default(),
        memory_bytes: host
            .map(|h| h.facts.inventory.memory_total_bytes)
            .unwrap_or_default(),
        last_error: m.last_error.clone(),
        ..Default::default()
    }
}

/// The events of this pool's current incarnation: a pool re-created under
/// an old name does not show the previous pool's `pool_deleting` and
/// `pool_destroyed`. The incarnation starts at its latest `pool_created`
/// event (by Raft index) and, should that have been dropped from the kept
/// events, at its creation time.
pub fn this_incarnation<'a>(
    events: impl Iterator<Item = &'a crate::state::pool::Event>,
    name: &str,
    created_at_unix_ms: u64,
) -> Vec<&'a crate::state::pool::Event> {
    let mine: Vec<&crate::state::pool::Event> = events.filter(|e| e.pool == name).collect();
    let born = mine
        .iter()
        .rposition(|e| e.kind == "pool_created")
        .unwrap_or_else(|| {
            mine.iter()
                .position(|e| e.at_unix_ms >= created_at_unix_ms)
                .unwrap_or(mine.len())
        });
    mine[born..].to_vec()
}

/// The wire form of a pool (never with secrets).
pub fn pool_view(state: &State, pool: &PoolRecord, events: bool) -> v1::Pool {
    let mut members: Vec<&crate::state::pool::Member> = pool.members.values().collect();
    members.sort_by_key(|m| (m.role, m.order));
    let (worker_cores, worker_memory_bytes) = crate::policy::planner::worker_totals(state, pool);
    let recent_events = if events {
        let mine = this_incarnation(state.events().iter(), &pool.spec.name, pool.created_at_unix_ms);
        mine[mine.len().saturating_sub(RECENT_EVENTS)..]
            .iter()
            .map(|e| e.to_proto())
            .collect()
    } else {
        Vec::new()
    };
    let mut view = v1::Pool {
        spec: Some(pool.spec.to_proto()),
        phase: pool.phase.as_str().to_owned(),
        phase_reason: pool.phase_reason.clone(),
        members: members.into_iter().map(|m| member_view(state, m)).collect(),
        worker_cores,
        worker_memory_bytes,
        control_plane_endpoint: pool.control_plane_endpoint.clone(),
        created_at_unix_ms: pool.created_at_unix_ms,
        recent_events,
        autoscale: pool
            .autoscale
            .policy
            .map(|p| p.to_proto(pool.autoscale.last_scaled_at_unix_ms)),
        autoscale_status: None,
        zone_totals: zone_totals(&crate::policy::fleet::workers(state, pool)),
        ..crate::api::admin::upgrade::pool_fields(pool)
    };
    crate::api::admin::upgrade::fill_versions(pool, &mut view);
    crate::api::admin::certs::fill(state, pool, &mut view, rpool_proto::clock::unix_ms_now());
    view
}

/// A failed proposal of an admin pool call.
pub(crate) fn refused(e: ProposeError) -> Status {
    propose_status(e, Refusal::Precondition)
}

/// Placements tried when a concurrent change takes a chosen host first.
const CREATE_ATTEMPTS: usize = 3;

pub(crate) async fn create(
    shared: &Shared,
    request: CreatePoolRequest,
    audit: &AuditRecord,
) -> Result<v1::CreatePoolResponse, Status> {
    let spec = spec("create_pool.spec", request.spec.as_ref())?;
    // No zone policy given: the fleet's default, decided on the state the
    // placement below sees (see `default_zone_mode`).
    let zone_default = request
        .spec
        .as_ref()
        .is_some_and(|s| s.zone_policy.trim().is_empty());
    let mut attempt = 0;
    loop {
        attempt += 1;
        let (placement, chosen, pool) = shared.node.read(|sm| {
            if sm.pools().contains_key(&spec.name) {
                return Err(Status::already_exists(format!(
                    "pool {} already exists",
                    spec.name
                )));
            }
            check_zones(sm, &spec.zones, "create_pool.spec")?;
            let mut spec = spec.clone();
            if zone_default {
                spec.zones.mode = default_zone_mode(sm, &spec.zones);
            }
            let placement = placement::place(
                &candidates(sm),
                &Request {
                    cores: spec.cores,
                    memory_bytes: spec.memory_bytes,
                    control_planes: spec.control_planes as usize,
                },
                &spec.zones,
            )
            .map_err(|e| Status::failed_precondition(e.to_string()))?;
            let size =
                u32::try_from(placement.control_planes.len() + placement.workers.len()).unwrap_or(u32::MAX);
            let spec = with_vip(
                sm,
                &spec,
                shared.config.kube.vip_range().as_ref(),
                size,
                "create_pool.spec",
            )?;
            let first = sm.host(&placement.control_planes[0]).expect("placed hosts exist");
            let endpoint = vip_endpoint(&spec).unwrap_or_else(|| endpoint(first));
            let preview = preview(sm, &spec, &placement, endpoint);
            Ok((placement, spec, preview))
        })?;
        if request.dry_run {
            return Ok(v1::CreatePoolResponse { pool: Some(pool) });
        }
        let audit = audit
            .clone()
            .arg("pool", &spec.name)
            .arg("cores", spec.cores)
            .arg("memory", rpool_proto::units::format_size(spec.memory_bytes))
            .arg("control_planes", spec.control_planes)
            .arg("kubernetes_version", &chosen.kubernetes_version)
            .arg("vip", &chosen.vip)
            .arg("lb_range", &chosen.lb_range)
            .arg("zone_policy", chosen.zones.mode.as_str())
            .arg("zones", chosen.zones.allowed.join(","))
            .arg("image_repository", &chosen.image_repository)
            .arg(
                "hosts",
                placement
                    .control_planes
                    .iter()
                    .chain(&placement.workers)
                    .cloned()
                    .collect::<Vec<_>>()
                    .join(","),
            );
        let command = audit.wrap(Command::CreatePool {
            spec: chosen,
            control_planes: placement.control_planes,
            workers: placement.workers,
            control_plane_endpoint: pool.control_plane_endpoint.clone(),
            at_unix_ms: unix_ms_now(),
        });
        match shared.node.propose(command).await {
            Ok(_) => break,
            // Another pool (or a host going down) took a chosen host between
            // placement and commit: place again on the new state.
            Err(ProposeError::Rejected(crate::state::ApplyError::Refused(_)))
                if attempt < CREATE_ATTEMPTS =>
            {
                continue;
            }
            Err(e) => return Err(refused(e)),
        }
    }
    let pool = shared
        .node
        .read(|sm| sm.pools().get(&spec.name).map(|p| pool_view(sm, p, true)))
        .ok_or_else(|| Status::internal("the pool vanished right after its creation"))?;
    Ok(v1::CreatePoolResponse { pool: Some(pool) })
}

/// What a pool would look like with `placement` (dry run).
fn preview(sm: &State, spec: &PoolSpec, placement: &placement::Placement, endpoint: String) -> v1::Pool {
    let joining = MemberState::Joining.as_str();
    v1::Pool {
        spec: Some(spec.to_proto()),
        phase: "provisioning".to_owned(),
        phase_reason: "dry run: nothing was changed".to_owned(),
        members: hosts_as_members(sm, &placement.control_planes, Role::ControlPlane, joining)
            .into_iter()
            .chain(hosts_as_members(sm, &placement.workers, Role::Worker, joining))
            .collect(),
        worker_cores: placement.worker_cores,
        worker_memory_bytes: placement.worker_memory_bytes,
        control_plane_endpoint: endpoint,
        created_at_unix_ms: 0,
        recent_events: Vec::new(),
        autoscale: None,
        autoscale_status: None,
        zone_totals: zone_totals(
            &placement
                .workers
                .iter()
                .filter_map(|id| sm.host(id))
                .map(candidate)
                .collect::<Vec<_>>(),
        ),
        ..Default::default()
    }
}

pub(crate) async fn resize(
    shared: &Shared,
    request: ResizePoolRequest,
    audit: &AuditRecord,
) -> Result<v1::ResizePoolResponse, Status> {
    pool_name("resize_pool.name", &request.name)?;
    if request.cores > CORES_MAX {
        return Err(range("resize_pool.cores", request.cores, "0 (keep) or 1..=1000000").into());
    }
    if request.memory_bytes != 0 && !(MEMORY_MIN..=MEMORY_MAX).contains(&request.memory_bytes) {
        return Err(range(
            "resize_pool.memory_bytes",
            request.memory_bytes,
            "0 (keep) or 1GiB..=64PiB",
        )
        .into());
    }
    let (response, add, release) = shared.node.read(|sm| {
        let pool = sm
            .pools()
            .get(&request.name)
            .ok_or_else(|| Status::not_found(format!("no pool named {}", request.name)))?;
        let cores = if request.cores == 0 {
            pool.spec.cores
        } else {
            request.cores
        };
        let memory = if request.memory_bytes == 0 {
            pool.spec.memory_bytes
        } else {
            request.memory_bytes
        };
        if !request.lb_range.trim().is_empty() {
            let changed = PoolSpec {
                lb_range: request.lb_range.trim().to_owned(),
                ..pool.spec.clone()
            };
            let size = u32::try_from(pool.members.len()).unwrap_or(u32::MAX);
            crate::state::pool_apply::network::spec_network(&changed, size)
                .map_err(|e| Status::from(field_error("resize_pool", e)))?;
            sm.check_pool_addresses(&changed, size)
                .map_err(|e| Status::failed_precondition(field_error("resize_pool", e).to_string()))?;
        }
        // Members drained and restarted one by one must not also be
        // released or joined around: the rollout finishes (or is resumed)
        // first. The autoscaler waits for the same reason.
        if let Some(rollout) = &pool.upgrade
            && (cores, memory) != (pool.spec.cores, pool.spec.memory_bytes)
        {
            return Err(Status::failed_precondition(format!(
                "pool {} is being upgraded from {} to {}: resize it once the upgrade is done \
                 (`rpoolctl pool show {}` shows its progress; a stopped one resumes with \
                 `rpoolctl pool upgrade {} --resume`)",
                request.name, rollout.from, rollout.to, request.name, request.name
            )));
        }
        let workers: Vec<Candidate> = pool
            .members
            .values()
            .filter(|m| m.role == Role::Worker && !matches!(m.state, MemberState::Leaving { .. }))
            .filter_map(|m| sm.host(&m.host_id))
            .map(candidate)
            .collect();
        let have = workers.iter().fold((0u64, 0u64), |(c, m), w| {
            (c + u64::from(w.cores), m + w.memory_bytes)
        });
        let want = Request {
            cores,
            memory_bytes: memory,
            control_planes: 0,
        };
        let (add, release) = if have.0 >= cores && have.1 >= memory {
            let keep = placement::keep(&workers, &want, &pool.spec.zones)
                .map_err(|e| Status::failed_precondition(e.to_string()))?;
            let release: Vec<String> = workers
                .iter()
                .map(|w| w.host_id.clone())
                .filter(|h| !keep.contains(h))
                .collect();
            (Vec::new(), release)
        } else {
            let add = placement::grow(&candidates(sm), &workers, &want, &pool.spec.zones)
                .map_err(|e| Status::failed_precondition(e.to_string()))?;
            (add, Vec::new())
        };
        let adding = hosts_as_members(sm, &add, Role::Worker, "");
        let releasing = hosts_as_members(sm, &release, Role::Worker, "");
        let after = (
            have.0 + adding.iter().map(|m| u64::from(m.cores)).sum::<u64>()
                - releasing.iter().map(|m| u64::from(m.cores)).sum::<u64>(),
            have.1 + adding.iter().map(|m| m.memory_bytes).sum::<u64>()
                - releasing.iter().map(|m| m.memory_bytes).sum::<u64>(),
        );
        let after_workers: Vec<Candidate> = workers
            .iter()
            .filter(|w| !release.contains(&w.host_id))
            .cloned()
            .chain(add.iter().filter_map(|id| sm.host(id)).map(candidate))
            .collect();
        let response = v1::ResizePoolResponse {
            after_zones: zone_totals(&after_workers),
            before_cores: have.0,
            before_memory_bytes: have.1,
            after_cores: after.0,
            after_memory_bytes: after.1,
            adding,
            releasing,
            pool: Some(pool_view(sm, pool, false)),
        };
        Ok::<_, Status>(((response, cores, memory), add, release))
    })?;
    let (mut response, cores, memory) = response;
    // The answer's pool is the pool before the change (the caller compares).
    let lb_range = Some(request.lb_range.trim().to_owned()).filter(|r| !r.is_empty());
    if request.dry_run {
        return Ok(response);
    }
    let audit = audit
        .clone()
        .arg("pool", &request.name)
        .arg("cores", cores)
        .arg("memory", rpool_proto::units::format_size(memory))
        .arg("add", add.join(","))
        .arg("release", release.join(","))
        .arg("lb_range", lb_range.as_deref().unwrap_or(""));
    let command = audit.wrap(Command::ResizePool {
        pool: request.name.clone(),
        cores,
        memory_bytes: memory,
        add,
        release,
        lb_range,
        at_unix_ms: unix_ms_now(),
    });
    shared.node.propose(command).await.map_err(refused)?;
    response.pool = shared
        .node
        .read(|sm| sm.pools().get(&request.name).map(|p| pool_view(sm, p, true)));
    Ok(response)
}

pub(crate) async fn destroy(shared: &Shared, name: &str, audit: &AuditRecord) -> Result<v1::Pool, Status> {
    pool_name("destroy_pool.name", name)?;
    if !shared.node.read(|sm| sm.pools().contains_key(name)) {
        return Err(Status::not_found(format!("no pool named {name}")));
    }
    let command = audit.clone().arg("pool", name).wrap(Command::DestroyPool {
        pool: name.to_owned(),
        at_unix_ms: unix_ms_now(),
    });
    shared.node.propose(command).await.map_err(refused)?;
    shared
        .node
        .read(|sm| sm.pools().get(name).map(|p| pool_view(sm, p, true)))
        .ok_or_else(|| Status::not_found(format!("pool {name} is already gone")))
}

pub fn events(sm: &State, request: &v1::ListEventsRequest) -> Result<Vec<v1::Event>, Status> {
    if !request.pool.is_empty() {
        pool_name("list_events.pool", &request.pool)?;
    }
    if request.limit > 1_000 {
        return Err(range("list_events.limit", request.limit, "0 (100) or 1..=1000").into());
    }
    let kind_ok = request.kind.len() <= 64
        && request
            .kind
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
    if !kind_ok {
        return Err(range(
            "list_events.kind",
            format!("{:?}", request.kind),
            "\"\" (all) or up to 64 of a-z, 0-9 and _, e.g. \"audit\"",
        )
        .into());
    }
    let limit = if request.limit == 0 {
        100
    } else {
        request.limit as usize
    };
    let matching: Vec<v1::Event> = sm
        .events()
        .iter()
        .filter(|e| e.index > request.after_index)
        .filter(|e| request.pool.is_empty() || e.pool == request.pool)
        .filter(|e| request.kind.is_empty() || e.kind == request.kind)
        .map(|e| e.to_proto())
        .collect();
    Ok(matching[matching.len().saturating_sub(limit)..].to_vec())
}

/// Cordons (or uncordons) a host: `Cordoned` is never placed; uncordon
/// makes it `ready` again (liveness takes over from there).
pub(crate) async fn set_cordon(
    shared: &Shared,
    host_id: &str,
    cordon: bool,
    audit: &AuditRecord,
) -> Result<(), Status> {
    let (state, reason) = if cordon {
        (HostState::Cordoned, "cordoned by an admin")
    } else {
        (HostState::Ready, "uncordoned by an admin")
    };
    let current = shared.node.read(|sm| sm.host(host_id).map(|h| h.state));
    match current {
        None => return Err(Status::not_found(format!("no host with id {host_id}"))),
        Some(HostState::Cordoned) if cordon => return Ok(()),
        Some(s) if !cordon && s != HostState::Cordoned => {
            return Err(Status::failed_precondition(format!(
                "host {host_id} is {}, not cordoned",
                s.as_str()
            )));
        }
        Some(_) => {}
    }
    let command = audit.clone().arg("host", host_id).wrap(Command::SetHostState {
        host_id: host_id.to_owned(),
        state,
        reason: reason.to_owned(),
        at_unix_ms: unix_ms_now(),
    });
    shared.node.propose(command).await.map_err(refused)?;
    Ok(())
}

/// Cordons `host_id` and moves it out of its pool, placing replacement
/// workers first when the pool would fall below its request. Returns the
/// pool it leaves and the replacements.
pub(crate) async fn drain(
    shared: &Shared,
    host_id: &str,
    dry_run: bool,
    audit: &AuditRecord,
) -> Result<(String, Vec<v1::PoolMember>), Status> {
    let plan = shared.node.read(|sm| {
        let host = sm
            .host(host_id)
            .ok_or_else(|| Status::not_found(format!("no host with id {host_id}")))?;
        let Some(name) = host.pool.clone() else {
            return Ok::<_, Status>(None);
        };
        let pool = sm
            .pools()
            .get(&name)
            .ok_or_else(|| Status::internal(format!("host {host_id} names a missing pool {name}")))?;
        let member = pool
            .members
            .get(host_id)
            .ok_or_else(|| Status::internal(format!("host {host_id} is not a member of its pool {name}")))?;
        if matches!(member.state, MemberState::Leaving { .. }) {
            return Ok(Some((name, Vec::new(), true, member.role)));
        }
        if member.role == Role::ControlPlane {
            let add = crate::policy::healing::control_plane_replacement(sm, pool, host)
                .map_err(Status::failed_precondition)?;
            return Ok(Some((name, vec![add], false, Role::ControlPlane)));
        }
        let left: Vec<Candidate> = crate::policy::fleet::workers(sm, pool)
            .into_iter()
            .filter(|w| w.host_id != host.host_id)
            .collect();
        let want = Request {
            cores: pool.spec.cores,
            memory_bytes: pool.spec.memory_bytes,
            control_planes: 0,
        };
        let add = placement::grow(&candidates(sm), &left, &want, &pool.spec.zones)
            .map_err(|e| Status::failed_precondition(format!("no replacement for host {host_id}: {e}")))?;
        Ok(Some((name, add, false, Role::Worker)))
    })?;
    let views = |ids: &[String], role: Role| {
        shared
            .node
            .read(|sm| hosts_as_members(sm, ids, role, MemberState::Joining.as_str()))
    };
    if dry_run {
        return Ok(match plan {
            Some((name, add, _, role)) => (name, views(&add, role)),
            None => (String::new(), Vec::new()),
        });
    }
    set_cordon(shared, host_id, true, &audit.clone().arg("step", "cordon")).await?;
    let Some((name, add, already_leaving, role)) = plan else {
        return Ok((String::new(), Vec::new()));
    };
    if !already_leaving && role == Role::ControlPlane {
        let replacement = add
            .first()
            .cloned()
            .ok_or_else(|| Status::internal("a control-plane drain without a replacement"))?;
        let audit = audit
            .clone()
            .arg("host", host_id)
            .arg("step", "replace control plane")
            .arg("replacement", &replacement);
        let command = audit.wrap(Command::DrainControlPlane {
            pool: name.clone(),
            host_id: host_id.to_owned(),
            replacement,
            at_unix_ms: unix_ms_now(),
        });
        shared.node.propose(command).await.map_err(refused)?;
    } else if !already_leaving {
        let spec = shared
            .node
            .read(|sm| sm.pools().get(&name).map(|p| (p.spec.cores, p.spec.memory_bytes)))
            .ok_or_else(|| Status::not_found(format!("no pool named {name}")))?;
        let audit = audit
            .clone()
            .arg("host", host_id)
            .arg("step", "release worker")
            .arg("add", add.join(","));
        let command = audit.wrap(Command::ResizePool {
            pool: name.clone(),
            cores: spec.0,
            memory_bytes: spec.1,
            add: add.clone(),
            release: vec![host_id.to_owned()],
            lb_range: None,
            at_unix_ms: unix_ms_now(),
        });
        shared.node.propose(command).await.map_err(refused)?;
    }
    Ok((name, views(&add, role)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_version(version: &str) -> v1::PoolSpec {
        v1::PoolSpec {
            name: "web".into(),
            cores: 8,
            memory_bytes: 32 << 30,
            control_planes: 1,
            kubernetes_version: version.into(),
            pod_network_cidr: String::new(),
            service_cidr: String::new(),
            vip: String::new(),
            lb_range: String::new(),
            ..Default::default()
        }
    }

    #[test]
    fn a_recreated_pool_shows_only_its_own_events() {
        let event = |index: u64, at: u64, pool: &str, kind: &str| crate::state::pool::Event {
            index,
            at_unix_ms: at,
            pool: pool.into(),
            host_id: String::new(),
            kind: kind.into(),
            message: String::new(),
            severity: Default::default(),
            audit: None,
        };
        let events = [
            event(1, 100, "web", "pool_created"),
            event(2, 200, "web", "pool_deleting"),
            event(3, 300, "web", "pool_destroyed"),
            event(4, 300, "db", "pool_created"),
            event(5, 300, "web", "pool_created"),
            event(6, 400, "web", "task_done"),
        ];
        let kinds = |got: Vec<&crate::state::pool::Event>| got.iter().map(|e| e.index).collect::<Vec<_>>();
        // Same millisecond as the old pool's last event: the index decides.
        assert_eq!(kinds(this_incarnation(events.iter(), "web", 300)), [5, 6]);
        // Its pool_created dropped from the kept events: the creation time decides.
        assert_eq!(kinds(this_incarnation(events[5..].iter(), "web", 300)), [6]);
        assert_eq!(kinds(this_incarnation(events[1..3].iter(), "web", 250)), [3]);
    }

    #[test]
    fn versions_outside_what_the_configuration_files_need_are_refused_naming_the_range() {
        assert_eq!(
            spec("s", Some(&with_version(""))).unwrap().kubernetes_version,
            "v1.32.0"
        );
        assert_eq!(
            spec("s", Some(&with_version("v1.33.2")))
                .unwrap()
                .kubernetes_version,
            "v1.33.2"
        );
        for bad in ["v1.30.9", "v1.34.0", "v2.0.0"] {
            let message = spec("s", Some(&with_version(bad))).unwrap_err().to_string();
            assert!(message.starts_with("s.kubernetes_version: "), "{message}");
            assert!(message.contains("v1.31.0 to v1.33.x"), "{message}");
        }
        let message = spec("s", Some(&with_version("1.32"))).unwrap_err().to_string();
        assert!(message.contains("is not a version"), "{message}");
    }

    #[test]
    fn a_pools_image_repository_is_a_registry_reference_or_empty_and_a_bad_one_names_the_field() {
        let with_repo = |repo: &str| {
            let mut wire = with_version("");
            wire.image_repository = repo.into();
            spec("create_pool.spec", Some(&wire))
        };
        for (given, kept) in [
            ("", ""),
            ("mirror.example:5000/k8s", "mirror.example:5000/k8s"),
            ("10.0.0.5:5000", "10.0.0.5:5000"),
            (" registry.example/a/b-c ", "registry.example/a/b-c"),
        ] {
            assert_eq!(with_repo(given).unwrap().image_repository, kept, "{given:?}");
        }
        let long = format!("mirror.example/{}", "a".repeat(250));
        for bad in [
            "https://mirror.example/k8s",
            "mirror.example/k8s:v1.32.0",
            "mirror.example/k8s@sha256:0123",
            "Mirror.Example/k8s",
            "mirror.example/K8s",
            "mirror.example/",
            "mirror example",
            long.as_str(),
        ] {
            let message = with_repo(bad).unwrap_err().to_string();
            assert!(
                message.starts_with("create_pool.spec.image_repository: "),
                "{bad:?}: {message}"
            );
            assert!(
                message.contains("accepted HOST[:PORT][/PATH] in lower case"),
                "{message}"
            );
        }
    }

    #[test]
    fn a_pool_recorded_before_image_repositories_replays_with_the_fleets() {
        let old = r#"{"name":"web","cores":8,"memory_bytes":34359738368,"control_planes":1,
            "kubernetes_version":"v1.32.0","pod_network_cidr":"10.244.0.0/16","service_cidr":"10.96.0.0/12"}"#;
        let spec: PoolSpec = serde_json::from_str(old).unwrap();
        assert_eq!(spec.image_repository, "");
        assert_eq!(spec.to_proto().image_repository, "");
    }

    fn ha(vip: &str, lb_range: &str) -> PoolSpec {
        let mut wire = with_version("");
        wire.control_planes = 3;
        wire.vip = vip.into();
        wire.lb_range = lb_range.into();
        spec("create_pool.spec", Some(&wire)).unwrap()
    }

    fn hosts(ids: &[&str]) -> State {
        let mut sm = State::new();
        for id in ids {
            let register = Command::RegisterHost {
                host_id: (*id).to_owned(),
                agent_version: "0.1.0".to_owned(),
                facts: crate::state::command::tests::facts(id, 8),
                at_unix_ms: 1,
            };
            sm.apply(sm.applied_index() + 1, &register).unwrap();
        }
        sm
    }

    #[test]
    fn a_pool_of_several_control_planes_gets_the_lowest_free_vip_or_is_refused_naming_vip_and_the_key() {
        let sm = hosts(&["h1"]);
        let err = with_vip(&sm, &ha("", ""), None, 4, "create_pool.spec").unwrap_err();
        assert_eq!(err.code(), tonic::Code::InvalidArgument);
        assert!(
            err.message()
                .starts_with("create_pool.spec.vip: missing for a pool of 3 control planes")
                && err.message().contains("--vip")
                && err.message().contains("[kube] vip_range in controller.toml"),
            "{}",
            err.message()
        );
        let range = rpool_proto::kube::cidr::IpRange::parse("198.51.100.0/29").unwrap();
        let chosen = with_vip(&sm, &ha("", ""), Some(&range), 4, "s").unwrap();
        assert_eq!(chosen.vip, "198.51.100.1", "the network address is skipped");
        assert_eq!(vip_endpoint(&chosen).as_deref(), Some("198.51.100.1:6443"));
        // The same state gives the same address (every replica stores what
        // the leader proposed, but the leader must not flip-flop either).
        assert_eq!(with_vip(&sm, &ha("", ""), Some(&range), 4, "s").unwrap(), chosen);
        // A VIP given is kept, and one control plane needs none.
        assert_eq!(
            with_vip(&sm, &ha("203.0.113.9", ""), Some(&range), 4, "s")
                .unwrap()
                .vip,
            "203.0.113.9"
        );
        let single = spec("s", Some(&with_version(""))).unwrap();
        assert_eq!(with_vip(&sm, &single, None, 2, "s").unwrap().vip, "");
        // An LB range over the fleet's hosts is a precondition failure
        // naming the field.
        let err = with_vip(&sm, &ha("", "10.0.0.0/24"), Some(&range), 4, "s").unwrap_err();
        assert_eq!(err.code(), tonic::Code::FailedPrecondition);
        assert!(
            err.message().starts_with("s.lb_range: 10.0.0.0/24 holds host"),
            "{}",
            err.message()
        );
    }

    #[test]
    fn without_a_zone_policy_a_pool_spreads_when_the_hosts_it_may_take_are_in_two_zones() {
        let zoned = |hosts: &[(&str, &str)]| {
            let mut sm = State::new();
            for (id, zone) in hosts {
                let mut facts = crate::state::command::tests::facts(id, 8);
                facts.zone = (*zone).to_owned();
                let register = Command::RegisterHost {
                    host_id: (*id).to_owned(),
                    agent_version: "0.1.0".to_owned(),
                    facts,
                    at_unix_ms: 1,
                };
                sm.apply(sm.applied_index() + 1, &register).unwrap();
            }
            sm
        };
        let every = ZonePolicy::default();
        let only = |zones: &[&str]| ZonePolicy {
            mode: ZoneMode::Any,
            allowed: zones.iter().map(|z| (*z).to_owned()).collect(),
        };
        // One zone, or none: any.
        assert_eq!(default_zone_mode(&zoned(&[]), &every), ZoneMode::Any);
        assert_eq!(
            default_zone_mode(&zoned(&[("h1", "a"), ("h2", "a")]), &every),
            ZoneMode::Any
        );
        // Hosts without a zone report none.
        assert_eq!(
            default_zone_mode(&zoned(&[("h1", "a"), ("h2", "")]), &every),
            ZoneMode::Any
        );
        // Two zones: spread, unless the allowed zones keep one.
        let two = zoned(&[("h1", "a"), ("h2", "b"), ("h3", "")]);
        assert_eq!(default_zone_mode(&two, &every), ZoneMode::Spread);
        assert_eq!(default_zone_mode(&two, &only(&["a", "b"])), ZoneMode::Spread);
        assert_eq!(default_zone_mode(&two, &only(&["a"])), ZoneMode::Any);
        // Only hosts placement may take count: b's only host is down.
        let mut down = two.clone();
        let cmd = Command::SetHostState {
            host_id: "h2".to_owned(),
            state: HostState::Down,
            reason: "no heartbeat for 5.0s".to_owned(),
            at_unix_ms: 2,
        };
        down.apply(down.applied_index() + 1, &cmd).unwrap();
        assert_eq!(default_zone_mode(&down, &every), ZoneMode::Any);
    }

    #[test]
    fn a_malformed_vip_or_lb_range_names_the_spec_field() {
        let mut wire = with_version("");
        wire.vip = "vip.example".into();
        let err = spec("create_pool.spec", Some(&wire)).unwrap_err().to_string();
        assert_eq!(err, "create_pool.spec.vip: \"vip.example\" is not an IP address");
        wire.vip = "10.244.1.1".into();
        let err = spec("create_pool.spec", Some(&wire)).unwrap_err().to_string();
        assert!(
            err.starts_with("create_pool.spec.vip: 10.244.1.1 overlaps this pool's pod_cidr"),
            "{err}"
        );
        wire.vip = String::new();
        wire.lb_range = "198.51.100.9-198.51.100.1".into();
        let err = spec("create_pool.spec", Some(&wire)).unwrap_err().to_string();
        assert!(err.starts_with("create_pool.spec.lb_range: "), "{err}");
        assert!(err.ends_with("(accepted FIRST-LAST or ADDRESS/PREFIX)"), "{err}");
    }
}
