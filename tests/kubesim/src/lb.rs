//! Services of `type: LoadBalancer` and MetalLB, as far as rpool needs
//! them: while MetalLB's controller (Deployment `controller` in
//! `metallb-system`) is applied, a Service of type LoadBalancer gets
//! `status.loadBalancer.ingress[0].ip` from an `IPAddressPool` that an
//! `L2Advertisement` announces (all pools when it names none, else the
//! ones in `spec.ipAddressPools`), lowest free address first; two Services
//! never share one; when every address is taken the Service stays pending
//! (no ingress), as with MetalLB. An address no pool holds any more (the
//! range was moved) is taken back and the Service assigned anew. The
//! assignment runs after every `kubectl apply` (MetalLB's controller
//! reacts to every change) and is kept in the cluster state (`lb_ips`).

use std::collections::BTreeSet;

use rpool_proto::kube::cidr::{IpRange, from_u128};
use rpool_proto::kube::yaml::Node as Y;
use serde_json::{Value, json};

use crate::state::{Cluster, Env};

const NAMESPACE: &str = "metallb-system";

/// `ns/name` of every applied Service and its document.
pub fn services(c: &Cluster, env: &Env) -> Vec<(String, String, Y)> {
    c.applied
        .iter()
        .filter(|a| a.kind == "Service" && a.api_version == "v1")
        .filter_map(|a| {
            let doc = crate::kubectl::applied_doc(c, env, a)?;
            Some((
                a.namespace.clone().unwrap_or_else(|| "default".into()),
                a.name.clone(),
                doc,
            ))
        })
        .collect()
}

fn is_lb(doc: &Y) -> bool {
    doc.at(&["spec", "type"]).and_then(Y::as_str) == Some("LoadBalancer")
}

/// The address ranges MetalLB hands out now (none without its controller).
fn ranges(c: &Cluster, env: &Env) -> Vec<IpRange> {
    let in_ns = |kind: &'static str| {
        c.applied
            .iter()
            .filter(move |a| a.kind == kind && a.namespace.as_deref() == Some(NAMESPACE))
    };
    if !in_ns("Deployment").any(|a| a.name == "controller") {
        return Vec::new();
    }
    let mut advertised: BTreeSet<String> = BTreeSet::new();
    let mut all = false;
    for a in in_ns("L2Advertisement") {
        match crate::kubectl::applied_doc(c, env, a)
            .as_ref()
            .and_then(|d| d.at(&["spec", "ipAddressPools"]).map(|n| n.items().to_vec()))
        {
            Some(names) if !names.is_empty() => {
                advertised.extend(names.iter().filter_map(|n| n.as_str().map(str::to_owned)))
            }
            _ => all = true,
        }
    }
    let mut out = Vec::new();
    for a in in_ns("IPAddressPool") {
        if !all && !advertised.contains(&a.name) {
            continue;
        }
        let Some(doc) = crate::kubectl::applied_doc(c, env, a) else {
            continue;
        };
        if let Some(list) = doc.at(&["spec", "addresses"]) {
            out.extend(
                list.items()
                    .iter()
                    .filter_map(|n| IpRange::parse(n.as_str()?.trim()).ok()),
            );
        }
    }
    out
}

/// MetalLB's controller pass over every LoadBalancer Service.
pub fn assign(c: &mut Cluster, env: &Env) {
    let ranges = ranges(c, env);
    let lbs: Vec<String> = services(c, env)
        .into_iter()
        .filter(|(_, _, d)| is_lb(d))
        .map(|(ns, n, _)| format!("{ns}/{n}"))
        .collect();
    // Gone services are released; without a running MetalLB nothing else
    // changes (the addresses stay in the services' status).
    c.lb_ips.retain(|key, _| lbs.contains(key));
    if ranges.is_empty() {
        return;
    }
    // Addresses no pool holds any more are taken back.
    c.lb_ips
        .retain(|_, ip| ip.parse().is_ok_and(|ip| ranges.iter().any(|r| r.contains(ip))));
    for key in lbs {
        if c.lb_ips.contains_key(&key) {
            continue;
        }
        let used: BTreeSet<String> = c.lb_ips.values().cloned().collect();
        let free = ranges.iter().find_map(|r| {
            let (first, last) = r.bounds();
            (first..=last)
                .map(|n| from_u128(r.family(), n).to_string())
                .find(|ip| !used.contains(ip))
        });
        if let Some(ip) = free {
            c.lb_ips.insert(key, ip);
        }
    }
}

/// One Service as `kubectl get svc -o json` shows it.
pub fn service_json(c: &Cluster, ns: &str, name: &str, doc: &Y) -> Value {
    let kind = doc
        .at(&["spec", "type"])
        .and_then(Y::as_str)
        .unwrap_or("ClusterIP");
    let ports: Vec<Value> = doc
        .at(&["spec", "ports"])
        .map(|p| p.items().to_vec())
        .unwrap_or_default()
        .iter()
        .map(|p| {
            json!({
                "name": p.get("name").and_then(Y::as_str).unwrap_or(""),
                "port": match p.get("port") {
                    Some(Y::Int(n)) => Some(*n),
                    _ => None,
                },
                "protocol": p.get("protocol").and_then(Y::as_str).unwrap_or("TCP"),
            })
        })
        .collect();
    let ingress = match c.lb_ips.get(&format!("{ns}/{name}")) {
        Some(ip) if kind == "LoadBalancer" => json!({"ingress": [{"ip": ip, "ipMode": "VIP"}]}),
        _ => json!({}),
    };
    json!({
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name, "namespace": ns},
        "spec": {"type": kind, "ports": ports},
        "status": {"loadBalancer": ingress},
    })
}
