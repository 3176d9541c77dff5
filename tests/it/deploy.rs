//! Deployment artefacts checked against the code that runs them:
//!
//! - the Grafana dashboards reference only metric names (and labels) that a
//!   running tracemap emits, scraped from `/metrics` after demo traffic
//!   (and from an agent forwarding to it);
//! - every Kubernetes variant renders with `kubectl kustomize` and passes
//!   `kubernetes-validate --strict`;
//! - every ConfigMap's tracemap config passes `tracemap check-config`;
//! - the workloads agree with their configs (ports, probes, config path,
//!   writable data dir, shutdown timeout) and with each other (Service
//!   selectors, the agents' gateway DNS name, HPA and PDB targets), and
//!   keep the security settings;
//! - the IAM policy grants exactly the documented actions.
//!
//! kubectl and kubernetes-validate come from `TRACEMAP_TEST_KUBECTL` and
//! `TRACEMAP_TEST_KUBERNETES_VALIDATE` (scripts/test.sh installs both,
//! pinned); without them those tests skip loudly, and fail under CI.

use crate::support as common;

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::Collector;
use serde::Deserialize;
use serde_json::Value;

/// Kubernetes versions the manifests are validated against: the oldest
/// EKS release they target (native sidecars need 1.29+) and the newest
/// schema kubernetes-validate bundles.
const KUBERNETES_VERSIONS: [&str; 2] = ["1.30.0", "1.37.0"];

/// The variants under deploy/kubernetes that users apply.
const VARIANTS: [&str; 3] = ["daemonset", "gateway", "sidecar"];

fn repo_path(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(rel)
}

/// A tool from `var`; None (with a loud note) when unset, a panic under CI.
fn tool(var: &str, what: &str) -> Option<PathBuf> {
    match std::env::var_os(var) {
        Some(path) if !path.is_empty() => Some(PathBuf::from(path)),
        _ if std::env::var_os("CI").is_some() => {
            panic!("{var} is not set under CI; run scripts/test.sh")
        }
        _ => {
            // Written to stderr directly, past the test harness's capture,
            // so the skip shows even when the test passes.
            let _ = writeln!(
                std::io::stderr(),
                "SKIPPED: {var} is not set, so the {what} test did not run; scripts/test.sh installs it"
            );
            None
        }
    }
}

// ---------------------------------------------------------------------------
// Kubernetes manifests

/// `kubectl kustomize deploy/kubernetes/<variant>` as JSON documents.
fn render(kubectl: &Path, variant: &str) -> (String, Vec<Value>) {
    let dir = repo_path("deploy/kubernetes").join(variant);
    let output = Command::new(kubectl)
        .arg("kustomize")
        .arg(&dir)
        .output()
        .expect("run kubectl");
    assert!(
        output.status.success(),
        "kubectl kustomize {variant} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let text = String::from_utf8(output.stdout).unwrap();
    let docs = serde_yaml_ng::Deserializer::from_str(&text)
        .map(|doc| {
            let yaml = serde_yaml_ng::Value::deserialize(doc).expect("rendered YAML");
            serde_json::to_value(yaml).expect("rendered YAML as JSON")
        })
        .filter(|doc| !doc.is_null())
        .collect::<Vec<_>>();
    assert!(!docs.is_empty(), "{variant} rendered nothing");
    (text, docs)
}

fn kind_name(doc: &Value) -> String {
    format!(
        "{}/{}",
        doc["kind"].as_str().unwrap_or("?"),
        doc["metadata"]["name"].as_str().unwrap_or("?")
    )
}

fn of_kind<'a>(docs: &'a [Value], kind: &'a str) -> impl Iterator<Item = &'a Value> + 'a {
    docs.iter().filter(move |d| d["kind"] == kind)
}

#[test]
fn variants_are_the_documented_ones() {
    let mut found = BTreeSet::new();
    for entry in std::fs::read_dir(repo_path("deploy/kubernetes")).unwrap() {
        let path = entry.unwrap().path();
        if path.join("kustomization.yaml").exists() && !path.ends_with("base") {
            found.insert(path.file_name().unwrap().to_string_lossy().into_owned());
        }
    }
    let expected: BTreeSet<String> = VARIANTS.iter().map(|v| v.to_string()).collect();
    assert_eq!(
        found, expected,
        "deploy/kubernetes variants changed: update VARIANTS and the README"
    );
}

#[test]
fn rendered_manifests_validate_strictly() {
    let Some(kubectl) = tool("TRACEMAP_TEST_KUBECTL", "kubectl kustomize") else {
        return;
    };
    let Some(validate) = tool("TRACEMAP_TEST_KUBERNETES_VALIDATE", "kubernetes-validate") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    for variant in VARIANTS {
        let (text, docs) = render(&kubectl, variant);
        let file = dir.path().join(format!("{variant}.yaml"));
        std::fs::write(&file, &text).unwrap();
        for version in KUBERNETES_VERSIONS {
            let output = Command::new(&validate)
                .args(["--strict", "--kubernetes-version", version])
                .arg(&file)
                .output()
                .expect("run kubernetes-validate");
            let stdout = String::from_utf8_lossy(&output.stdout);
            assert!(
                output.status.success(),
                "{variant} does not validate against Kubernetes {version}:\n{stdout}{}",
                String::from_utf8_lossy(&output.stderr)
            );
            let passed = stdout.matches(" passed for resource ").count();
            assert_eq!(
                passed,
                docs.len(),
                "{variant}: kubernetes-validate passed {passed} of {} resources:\n{stdout}",
                docs.len()
            );
        }
    }
}

/// Every `*.yaml` key of every ConfigMap: (ConfigMap name, key, text).
fn configmap_configs(docs: &[Value]) -> Vec<(String, String, String)> {
    of_kind(docs, "ConfigMap")
        .flat_map(|cm| {
            let name = cm["metadata"]["name"].as_str().unwrap().to_owned();
            cm["data"]
                .as_object()
                .into_iter()
                .flatten()
                .filter(|(key, _)| key.ends_with(".yaml") || key.ends_with(".yml"))
                .map(move |(key, text)| {
                    (name.clone(), key.clone(), text.as_str().unwrap().to_owned())
                })
        })
        .collect()
}

#[test]
fn every_configmap_config_passes_check_config() {
    let Some(kubectl) = tool("TRACEMAP_TEST_KUBECTL", "ConfigMap check-config") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let mut checked = 0;
    let mut failures = Vec::new();
    for variant in VARIANTS {
        let (_, docs) = render(&kubectl, variant);
        let configs = configmap_configs(&docs);
        assert!(!configs.is_empty(), "{variant} has no tracemap ConfigMap");
        for (name, key, text) in configs {
            let file = dir.path().join(format!("{variant}-{name}-{key}"));
            std::fs::write(&file, &text).unwrap();
            let output = Command::new(env!("CARGO_BIN_EXE_tracemap"))
                .arg("check-config")
                .arg(&file)
                .output()
                .expect("run tracemap check-config");
            checked += 1;
            if !output.status.success() {
                failures.push(format!(
                    "{variant}: ConfigMap {name} key {key}: {}",
                    String::from_utf8_lossy(&output.stderr).trim()
                ));
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {checked} ConfigMap configs fail check-config:\n{}",
        failures.len(),
        failures.join("\n")
    );
    assert!(checked >= 4, "only {checked} configs found");
}

/// The tracemap container of a pod spec (a container or a native sidecar
/// init container named `tracemap`).
fn tracemap_container(pod: &Value) -> Option<&Value> {
    ["containers", "initContainers"]
        .iter()
        .flat_map(|list| pod[list].as_array().into_iter().flatten())
        .find(|c| c["name"] == "tracemap")
}

fn port_of(addr: &str) -> u64 {
    addr.rsplit_once(':')
        .and_then(|(_, port)| port.parse().ok())
        .unwrap_or_else(|| panic!("no port in {addr:?}"))
}

fn host_of(addr: &str) -> &str {
    addr.rsplit_once(':').map(|(host, _)| host).unwrap()
}

/// The container port named `name` (or with that number).
fn container_port<'a>(container: &'a Value, name_or_number: &Value) -> Option<&'a Value> {
    container["ports"].as_array()?.iter().find(|p| {
        if let Some(name) = name_or_number.as_str() {
            p["name"] == name
        } else {
            p["containerPort"] == *name_or_number
        }
    })
}

fn labels_match(selector: &Value, labels: &Value) -> bool {
    let Some(selector) = selector.as_object() else {
        return false;
    };
    !selector.is_empty() && selector.iter().all(|(k, v)| labels[k] == *v)
}

/// The tracemap config a workload runs: the ConfigMap key behind its `--config` path.
fn workload_config(workload: &Value, docs: &[Value]) -> Value {
    let what = kind_name(workload);
    let pod = &workload["spec"]["template"]["spec"];
    let container =
        tracemap_container(pod).unwrap_or_else(|| panic!("{what}: no tracemap container"));
    let args: Vec<&str> = container["args"]
        .as_array()
        .unwrap_or_else(|| panic!("{what}: tracemap has no args"))
        .iter()
        .map(|a| a.as_str().unwrap())
        .collect();
    let config_path = args
        .windows(2)
        .find(|w| w[0] == "--config")
        .map(|w| w[1])
        .unwrap_or_else(|| panic!("{what}: no --config in {args:?}"));
    let (dir, key) = config_path.rsplit_once('/').unwrap();
    let mount = container["volumeMounts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["mountPath"] == dir)
        .unwrap_or_else(|| panic!("{what}: nothing mounted at {dir}"));
    let volume = pod["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["name"] == mount["name"])
        .unwrap();
    let cm_name = volume["configMap"]["name"]
        .as_str()
        .unwrap_or_else(|| panic!("{what}: {dir} is not a ConfigMap volume"));
    let cm = of_kind(docs, "ConfigMap")
        .find(|cm| cm["metadata"]["name"] == cm_name)
        .unwrap_or_else(|| panic!("{what}: ConfigMap {cm_name} is not in the render"));
    let text = cm["data"][key]
        .as_str()
        .unwrap_or_else(|| panic!("{what}: ConfigMap {cm_name} has no key {key}"));
    let yaml: serde_yaml_ng::Value = serde_yaml_ng::from_str(text).unwrap();
    serde_json::to_value(yaml).unwrap()
}

/// The listen address at `pointer`, or tracemap's `default` when the config
/// leaves it out; None when that receiver is disabled.
fn listen(config: &Value, pointer: &str, default: &str) -> Option<String> {
    let enabled = config
        .pointer(&pointer.replace("/listen", "/enabled"))
        .and_then(Value::as_bool)
        .unwrap_or(true);
    enabled.then(|| {
        config
            .pointer(pointer)
            .and_then(Value::as_str)
            .unwrap_or(default)
            .to_owned()
    })
}

fn check_workload(workload: &Value, docs: &[Value], problems: &mut Vec<String>) {
    let what = kind_name(workload);
    let mut fail = |problem: String| problems.push(format!("{what}: {problem}"));
    let template = &workload["spec"]["template"];
    let pod = &template["spec"];
    let container = tracemap_container(pod).unwrap();
    let config = workload_config(workload, docs);

    // API: probes and the Prometheus scrape reach api.listen.
    let api = listen(&config, "/api/listen", "127.0.0.1:8080").unwrap();
    if host_of(&api) != "0.0.0.0" {
        fail(format!(
            "api.listen {api} is not reachable by the kubelet's probes"
        ));
    }
    let api_port = port_of(&api);
    for (probe, path) in [("livenessProbe", "/healthz"), ("readinessProbe", "/readyz")] {
        let get = &container[probe]["httpGet"];
        if get["path"] != path {
            fail(format!("{probe} path is {} not {path}", get["path"]));
        }
        match container_port(container, &get["port"]) {
            Some(port) if port["containerPort"] == api_port => {}
            other => fail(format!(
                "{probe} port {} is not api.listen's {api_port} ({other:?})",
                get["port"]
            )),
        }
    }
    let annotations = &template["metadata"]["annotations"];
    if annotations["prometheus.io/scrape"] != "true"
        || annotations["prometheus.io/port"] != api_port.to_string().as_str()
        || annotations["prometheus.io/path"] != "/metrics"
    {
        fail(format!(
            "Prometheus annotations {annotations} do not point at {api_port}/metrics"
        ));
    }

    // Receivers: node agents take spans on the node's IP (hostPort).
    let is_node_agent = workload["kind"] == "DaemonSet";
    for (pointer, default, name) in [
        ("/receivers/otlp/grpc/listen", "0.0.0.0:4317", "otlp-grpc"),
        ("/receivers/otlp/http/listen", "0.0.0.0:4318", "otlp-http"),
    ] {
        let Some(addr) = listen(&config, pointer, default) else {
            if container_port(container, &Value::from(name)).is_some() {
                fail(format!(
                    "port {name} is declared but its receiver is disabled"
                ));
            }
            continue;
        };
        let port = port_of(&addr);
        let declared = container_port(container, &Value::from(name));
        if host_of(&addr) == "127.0.0.1" {
            // Sidecar: only the pod's own containers send; nothing to declare.
            if is_node_agent {
                fail(format!("{pointer} {addr} is loopback on a node agent"));
            }
            continue;
        }
        match declared {
            Some(p) if p["containerPort"] == port => {
                if is_node_agent && p["hostPort"] != port {
                    fail(format!("{name}: hostPort is {} not {port}", p["hostPort"]));
                }
            }
            other => fail(format!(
                "{pointer} {addr} has no matching port {name} ({other:?})"
            )),
        }
    }
    if is_node_agent {
        match container_port(container, &Value::from("xray-udp")) {
            Some(p)
                if p["containerPort"] == 2000
                    && p["hostPort"] == 2000
                    && p["protocol"] == "UDP" => {}
            other => fail(format!(
                "no hostPort 2000/UDP for the X-Ray daemon protocol ({other:?})"
            )),
        }
    }

    // The data dir is writable: an emptyDir mounted at or above it.
    let data_dir = config
        .pointer("/storage/data_dir")
        .and_then(Value::as_str)
        .unwrap_or("./tracemap-data");
    let on_empty_dir = container["volumeMounts"]
        .as_array()
        .into_iter()
        .flatten()
        .any(|m| {
            let path = m["mountPath"].as_str().unwrap();
            let is_empty_dir = pod["volumes"]
                .as_array()
                .unwrap()
                .iter()
                .any(|v| v["name"] == m["name"] && v.get("emptyDir").is_some());
            is_empty_dir && Path::new(data_dir).starts_with(path) && m["readOnly"] != true
        });
    if !on_empty_dir {
        fail(format!(
            "storage.data_dir {data_dir} is not on a writable emptyDir (the root filesystem is read-only)"
        ));
    }

    // Shutdown fits in the grace period.
    let shutdown = config
        .pointer("/shutdown_timeout")
        .and_then(Value::as_str)
        .map(|s| humantime::parse_duration(s).unwrap())
        .unwrap_or(Duration::from_secs(20));
    let grace = pod["terminationGracePeriodSeconds"].as_u64().unwrap_or(30);
    if shutdown >= Duration::from_secs(grace) {
        fail(format!(
            "shutdown_timeout {shutdown:?} is not below terminationGracePeriodSeconds {grace}"
        ));
    }

    // Security settings.
    let sc = &container["securityContext"];
    let psc = &pod["securityContext"];
    if sc["allowPrivilegeEscalation"] != false {
        fail("allowPrivilegeEscalation is not false".into());
    }
    if sc["readOnlyRootFilesystem"] != true {
        fail("readOnlyRootFilesystem is not true".into());
    }
    if sc["capabilities"]["drop"] != serde_json::json!(["ALL"]) {
        fail("capabilities do not drop ALL".into());
    }
    if sc["runAsNonRoot"] != true && psc["runAsNonRoot"] != true {
        fail("runAsNonRoot is not set".into());
    }
    if sc["seccompProfile"]["type"] != "RuntimeDefault"
        && psc["seccompProfile"]["type"] != "RuntimeDefault"
    {
        fail("seccompProfile is not RuntimeDefault".into());
    }
    let resources = &container["resources"];
    for key in ["requests/cpu", "requests/memory", "limits/memory"] {
        if resources.pointer(&format!("/{key}")).is_none() {
            fail(format!("no resources.{}", key.replace('/', ".")));
        }
    }
    if pod["serviceAccountName"].as_str().is_none() {
        fail("no serviceAccountName (IRSA needs one)".into());
    }
    let sa = of_kind(docs, "ServiceAccount")
        .find(|sa| sa["metadata"]["name"] == pod["serviceAccountName"]);
    if sa.is_some_and(|sa| {
        sa["metadata"]["annotations"]["eks.amazonaws.com/role-arn"]
            .as_str()
            .is_none()
    }) {
        fail("ServiceAccount has no eks.amazonaws.com/role-arn annotation".into());
    }
}

fn check_services(docs: &[Value], problems: &mut Vec<String>) {
    let workloads: Vec<&Value> = docs
        .iter()
        .filter(|d| {
            ["DaemonSet", "StatefulSet", "Deployment"].contains(&d["kind"].as_str().unwrap())
        })
        .collect();
    for service in of_kind(docs, "Service") {
        let what = kind_name(service);
        let targets: Vec<&&Value> = workloads
            .iter()
            .filter(|w| {
                labels_match(
                    &service["spec"]["selector"],
                    &w["spec"]["template"]["metadata"]["labels"],
                )
            })
            .collect();
        if targets.len() != 1 {
            problems.push(format!(
                "{what}: selector matches {} workloads",
                targets.len()
            ));
            continue;
        }
        let target = targets[0];
        let container = tracemap_container(&target["spec"]["template"]["spec"]).unwrap();
        for port in service["spec"]["ports"].as_array().unwrap() {
            match container_port(container, &port["targetPort"]) {
                Some(p) if p["protocol"] == port["protocol"] => {}
                other => problems.push(format!(
                    "{what}: targetPort {} is not a {} port of {} ({other:?})",
                    port["targetPort"],
                    port["protocol"],
                    kind_name(target)
                )),
            }
        }
        if target["kind"] == "DaemonSet" && service["spec"]["internalTrafficPolicy"] != "Local" {
            problems.push(format!(
                "{what}: a node agent's Service must be internalTrafficPolicy: Local"
            ));
        }
        if target["kind"] == "StatefulSet"
            && target["spec"]["serviceName"] != service["metadata"]["name"]
        {
            problems.push(format!("{what}: not the StatefulSet's serviceName"));
        }
    }
    for hpa in of_kind(docs, "HorizontalPodAutoscaler") {
        let target = &hpa["spec"]["scaleTargetRef"];
        if !workloads
            .iter()
            .any(|w| w["kind"] == target["kind"] && w["metadata"]["name"] == target["name"])
        {
            problems.push(format!(
                "{}: scaleTargetRef {target} is not in the render",
                kind_name(hpa)
            ));
        }
    }
    for pdb in of_kind(docs, "PodDisruptionBudget") {
        let selector = &pdb["spec"]["selector"]["matchLabels"];
        if !workloads
            .iter()
            .any(|w| labels_match(selector, &w["spec"]["template"]["metadata"]["labels"]))
        {
            problems.push(format!("{}: selector matches no workload", kind_name(pdb)));
        }
    }
}

/// An agent's `exporters.forward.dns` names the headless Service in front
/// of the gateway StatefulSet, with its gRPC port.
fn check_forwarding(docs: &[Value], problems: &mut Vec<String>) {
    for workload in docs.iter().filter(|d| d["kind"] == "DaemonSet") {
        let config = workload_config(workload, docs);
        if config["mode"] != "agent" {
            continue;
        }
        let what = kind_name(workload);
        let Some(dns) = config
            .pointer("/exporters/forward/dns")
            .and_then(Value::as_str)
        else {
            problems.push(format!("{what}: mode agent without exporters.forward.dns"));
            continue;
        };
        let port = port_of(dns);
        let host = host_of(dns);
        let service = of_kind(docs, "Service").find(|s| {
            let ns = s["metadata"]["namespace"].as_str().unwrap_or("default");
            host == format!(
                "{}.{ns}.svc.cluster.local",
                s["metadata"]["name"].as_str().unwrap()
            )
        });
        let Some(service) = service else {
            problems.push(format!(
                "{what}: forward.dns {dns} names no Service in the render"
            ));
            continue;
        };
        if service["spec"]["clusterIP"] != "None" {
            problems.push(format!("{what}: {} is not headless", kind_name(service)));
        }
        if !service["spec"]["ports"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p["port"] == port)
        {
            problems.push(format!("{what}: {} has no port {port}", kind_name(service)));
        }
        let gateway = docs.iter().find(|d| {
            d["kind"] == "StatefulSet"
                && labels_match(
                    &service["spec"]["selector"],
                    &d["spec"]["template"]["metadata"]["labels"],
                )
        });
        match gateway {
            Some(gateway) => {
                let gw_config = workload_config(gateway, docs);
                if gw_config["mode"] != "gateway" {
                    problems.push(format!(
                        "{}: mode is {} not gateway",
                        kind_name(gateway),
                        gw_config["mode"]
                    ));
                }
                let grpc = listen(&gw_config, "/receivers/otlp/grpc/listen", "0.0.0.0:4317");
                if grpc.as_deref().map(port_of) != Some(port) {
                    problems.push(format!(
                        "{}: gRPC receiver {grpc:?} is not on port {port}",
                        kind_name(gateway)
                    ));
                }
            }
            None => problems.push(format!(
                "{what}: {} selects no StatefulSet",
                kind_name(service)
            )),
        }
    }
}

#[test]
fn workloads_agree_with_their_configs_and_each_other() {
    let Some(kubectl) = tool("TRACEMAP_TEST_KUBECTL", "manifest consistency") else {
        return;
    };
    let mut problems = Vec::new();
    let mut workloads = 0;
    for variant in VARIANTS {
        let (_, docs) = render(&kubectl, variant);
        let before = problems.len();
        for workload in docs.iter().filter(|d| {
            ["DaemonSet", "StatefulSet", "Deployment"].contains(&d["kind"].as_str().unwrap())
        }) {
            workloads += 1;
            check_workload(workload, &docs, &mut problems);
        }
        check_services(&docs, &mut problems);
        check_forwarding(&docs, &mut problems);
        for problem in &mut problems[before..] {
            problem.insert_str(0, &format!("{variant}: "));
        }
    }
    assert_eq!(
        workloads, 4,
        "expected the DaemonSet, sidecar Deployment, agent DaemonSet and gateway StatefulSet"
    );
    assert!(
        problems.is_empty(),
        "manifest problems:\n{}",
        problems.join("\n")
    );
}

// ---------------------------------------------------------------------------
// IAM

#[test]
fn iam_policy_grants_exactly_the_exporters_calls() {
    let text =
        std::fs::read_to_string(repo_path("deploy/kubernetes/iam/tracemap-policy.json")).unwrap();
    let policy: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(policy["Version"], "2012-10-17");
    let mut actions = BTreeMap::new();
    for statement in policy["Statement"].as_array().unwrap() {
        assert_eq!(statement["Effect"], "Allow", "{statement}");
        let resources: Vec<String> = match &statement["Resource"] {
            Value::String(r) => vec![r.clone()],
            Value::Array(rs) => rs.iter().map(|r| r.as_str().unwrap().to_owned()).collect(),
            other => panic!("Resource {other}"),
        };
        for action in statement["Action"].as_array().unwrap() {
            let action = action.as_str().unwrap();
            assert!(!action.contains('*'), "wildcard action {action}");
            actions.insert(
                action.to_owned(),
                (resources.clone(), statement["Condition"].clone()),
            );
        }
    }
    let names: BTreeSet<&str> = actions.keys().map(String::as_str).collect();
    assert_eq!(
        names,
        BTreeSet::from([
            "cloudwatch:PutMetricData",
            "logs:CreateLogGroup",
            "logs:CreateLogStream",
            "logs:DescribeLogStreams",
            "logs:PutLogEvents",
            "logs:PutRetentionPolicy",
            "xray:PutTraceSegments",
        ])
    );
    for (action, (resources, _)) in &actions {
        if action.starts_with("logs:") {
            for resource in resources {
                assert!(
                    resource.starts_with("arn:aws:logs:*:ACCOUNT_ID:log-group:/aws/tracemap/"),
                    "{action} on {resource} reaches beyond /aws/tracemap/*"
                );
            }
        }
    }
    let (resources, condition) = &actions["cloudwatch:PutMetricData"];
    assert_eq!(resources, &["*"]);
    assert_eq!(
        condition["StringEquals"]["cloudwatch:namespace"], "TraceMap",
        "PutMetricData must be limited to the TraceMap namespace"
    );
}

// ---------------------------------------------------------------------------
// Grafana dashboards against /metrics

/// Metric and label names one PromQL expression uses.
#[derive(Debug, Default)]
struct PromqlRefs {
    /// Metric name -> label names in its matchers.
    metrics: BTreeMap<String, BTreeSet<String>>,
    /// Label names in `by`/`without`/`on`/`ignoring`/`group_*` clauses.
    grouping: BTreeSet<String>,
    /// Labels the expression creates (label_join / label_replace targets).
    created: BTreeSet<String>,
}

const PROMQL_KEYWORDS: [&str; 14] = [
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
    "and",
    "or",
    "unless",
    "bool",
    "offset",
    "atan2",
    "inf",
    "nan",
];

/// Aggregation operators: `sum by (x) (...)` puts the clause between the
/// name and its parenthesis.
const PROMQL_AGGREGATIONS: [&str; 14] = [
    "sum",
    "min",
    "max",
    "avg",
    "group",
    "stddev",
    "stdvar",
    "count",
    "count_values",
    "bottomk",
    "topk",
    "quantile",
    "limitk",
    "limit_ratio",
];

fn is_ident_start(c: char) -> bool {
    c.is_ascii_alphabetic() || c == '_' || c == ':'
}

fn is_ident(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_' || c == ':'
}

/// A small PromQL scanner: enough to find every metric name, the labels
/// of its matchers, grouping labels and label_join/label_replace targets.
/// (Syntax itself is checked by Prometheus's grammar in check-dashboards.mjs.)
fn promql_refs(expr: &str) -> PromqlRefs {
    let chars: Vec<char> = expr.chars().collect();
    let mut refs = PromqlRefs::default();
    let mut i = 0;
    let skip_ws = |mut j: usize| {
        while j < chars.len() && chars[j].is_whitespace() {
            j += 1;
        }
        j
    };
    let read_string = |j: usize| -> (String, usize) {
        let quote = chars[j];
        let mut k = j + 1;
        let mut s = String::new();
        while k < chars.len() && chars[k] != quote {
            if chars[k] == '\\' {
                k += 1;
            }
            s.push(chars[k]);
            k += 1;
        }
        (s, k + 1)
    };
    // Label names in `( a, b )` starting at j (the '(').
    let read_label_list = |j: usize| -> (Vec<String>, usize) {
        let end = j + chars[j..].iter().position(|&c| c == ')').unwrap();
        let inner: String = chars[j + 1..end].iter().collect();
        let labels = inner
            .split(',')
            .map(|l| l.trim().to_owned())
            .filter(|l| !l.is_empty())
            .collect();
        (labels, end + 1)
    };
    while i < chars.len() {
        let c = chars[i];
        if c == '"' || c == '\'' || c == '`' {
            let (_, next) = read_string(i);
            i = next;
        } else if c == '[' {
            i += chars[i..].iter().position(|&c| c == ']').unwrap() + 1;
        } else if c.is_ascii_digit()
            || (c == '.' && chars.get(i + 1).is_some_and(char::is_ascii_digit))
        {
            while i < chars.len() && (is_ident(chars[i]) || chars[i] == '.') {
                i += 1;
            }
        } else if c == '$' {
            // A Grafana variable outside a string, such as $__rate_interval.
            i += 1;
            while i < chars.len() && (is_ident(chars[i]) || chars[i] == '{' || chars[i] == '}') {
                i += 1;
            }
        } else if is_ident_start(c) {
            let start = i;
            while i < chars.len() && is_ident(chars[i]) {
                i += 1;
            }
            let word: String = chars[start..i].iter().collect();
            let next = skip_ws(i);
            let lower = word.to_ascii_lowercase();
            if [
                "by",
                "without",
                "on",
                "ignoring",
                "group_left",
                "group_right",
            ]
            .contains(&lower.as_str())
            {
                if chars.get(next) == Some(&'(') {
                    let (labels, after) = read_label_list(next);
                    refs.grouping.extend(labels);
                    i = after;
                }
            } else if PROMQL_KEYWORDS.contains(&lower.as_str())
                || PROMQL_AGGREGATIONS.contains(&lower.as_str())
            {
            } else if chars.get(next) == Some(&'(') {
                if word == "label_join" || word == "label_replace" {
                    // The destination label is the first string argument
                    // of the call itself (not of a nested selector).
                    let mut depth = 0;
                    let mut k = next;
                    while k < chars.len() {
                        match chars[k] {
                            '(' | '{' | '[' => depth += 1,
                            ')' | '}' | ']' => depth -= 1,
                            '"' | '\'' if depth == 1 => {
                                refs.created.insert(read_string(k).0);
                                break;
                            }
                            '"' | '\'' => {
                                k = read_string(k).1;
                                continue;
                            }
                            _ => {}
                        }
                        k += 1;
                    }
                }
            } else {
                let mut matchers = BTreeSet::new();
                if chars.get(next) == Some(&'{') {
                    let mut k = next + 1;
                    loop {
                        k = skip_ws(k);
                        if chars[k] == '}' {
                            i = k + 1;
                            break;
                        }
                        let label_start = k;
                        while is_ident(chars[k]) {
                            k += 1;
                        }
                        matchers.insert(chars[label_start..k].iter().collect());
                        k = skip_ws(k);
                        while ['=', '!', '~'].contains(&chars[k]) {
                            k += 1;
                        }
                        k = skip_ws(k);
                        let (_, after) = read_string(k);
                        k = skip_ws(after);
                        if chars[k] == ',' {
                            k += 1;
                        }
                    }
                }
                refs.metrics.entry(word).or_default().extend(matchers);
            }
        } else {
            i += 1;
        }
    }
    refs
}

#[test]
fn promql_scanner_finds_metrics_labels_and_grouping() {
    let refs = promql_refs(
        r#"label_join(topk(10, sum by (client, server, le) (rate(traces_service_graph_request_server_seconds_bucket{client=~"$service", failed="true"}[$__range]))) / on(client) group_left sum(up), "id", " -> ", "client", "server") > 0.5"#,
    );
    assert_eq!(
        refs.metrics.keys().collect::<Vec<_>>(),
        ["traces_service_graph_request_server_seconds_bucket", "up"]
    );
    assert_eq!(
        refs.metrics["traces_service_graph_request_server_seconds_bucket"],
        BTreeSet::from(["client".to_owned(), "failed".to_owned()])
    );
    assert_eq!(
        refs.grouping,
        BTreeSet::from(["client".to_owned(), "le".to_owned(), "server".to_owned()])
    );
    assert_eq!(refs.created, BTreeSet::from(["id".to_owned()]));
}

/// Every PromQL expression of a Grafana dashboard: panel targets (rows'
/// nested panels too) and query variables.
fn dashboard_expressions(dashboard: &Value) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut panels: Vec<&Value> = Vec::new();
    for panel in dashboard["panels"].as_array().into_iter().flatten() {
        panels.push(panel);
        panels.extend(panel["panels"].as_array().into_iter().flatten());
    }
    for panel in panels {
        for target in panel["targets"].as_array().into_iter().flatten() {
            if let Some(expr) = target["expr"].as_str() {
                out.push((
                    format!("panel {:?} {}", panel["title"], target["refId"]),
                    expr.to_owned(),
                ));
            }
        }
    }
    for variable in dashboard["templating"]["list"]
        .as_array()
        .into_iter()
        .flatten()
    {
        if variable["type"] != "query" {
            continue;
        }
        let query = variable["query"]["query"]
            .as_str()
            .or(variable["query"].as_str())
            .unwrap_or_default();
        // label_values(selector, label): the selector is PromQL, the label must exist on it.
        if let Some(inner) = query
            .strip_prefix("label_values(")
            .and_then(|q| q.strip_suffix(')'))
        {
            let (selector, label) = inner.rsplit_once(',').unwrap();
            out.push((
                format!("variable {}", variable["name"]),
                format!("sum by ({}) ({selector})", label.trim()),
            ));
        } else {
            out.push((format!("variable {}", variable["name"]), query.to_owned()));
        }
    }
    out
}

/// The sample names in a `/metrics` scrape, with the label names seen on
/// each. (A family with no sample is not in the text at all.)
fn emitted(text: &str) -> BTreeMap<String, BTreeSet<String>> {
    let mut labels: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for line in text.lines() {
        if !line.starts_with('#') && !line.is_empty() {
            let end = line.find(['{', ' ']).unwrap();
            let name = &line[..end];
            let entry = labels.entry(name.to_owned()).or_default();
            if line[end..].starts_with('{') {
                let close = line.find('}').unwrap();
                // Label values are quoted; names are what precedes each `="`.
                for part in line[end + 1..close].split("\",") {
                    if let Some((label, _)) = part.split_once("=\"") {
                        entry.insert(label.trim_start_matches(',').to_owned());
                    }
                }
            }
        }
    }
    labels
}

fn grafana_dashboards() -> Vec<(String, Value)> {
    let dir = repo_path("dashboards/grafana");
    let mut out: Vec<(String, Value)> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .map(|p| {
            let text = std::fs::read_to_string(&p).unwrap();
            (
                p.file_name().unwrap().to_string_lossy().into_owned(),
                serde_json::from_str(&text).unwrap(),
            )
        })
        .collect();
    out.sort_by(|a, b| a.0.cmp(&b.0));
    assert!(!out.is_empty(), "no dashboards in {}", dir.display());
    out
}

/// Series the demo must have produced before the scrape is complete.
const NEEDED_SAMPLES: [&str; 6] = [
    "traces_service_graph_request_total",
    "traces_service_graph_request_failed_total",
    "traces_service_graph_request_server_seconds_bucket",
    "traces_service_graph_request_client_seconds_bucket",
    "traces_spanmetrics_calls_total",
    "traces_spanmetrics_latency_bucket",
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grafana_dashboards_use_only_emitted_metrics_and_labels() {
    // The demo's shop: real SDK traffic with errors, databases, messaging
    // and uninstrumented peers, so every family has samples; plus one
    // malformed request and one span with an all-zero trace id, so the
    // rejection counters have theirs.
    let demo = Collector::start_command(
        &["demo", "--duration", "60s"],
        "graph:\n  pairing_ttl: 1s\n",
    );
    let client = reqwest::Client::new();
    let malformed = client
        .post(demo.http_url("/v1/traces"))
        .header("content-type", "application/x-protobuf")
        .body(vec![0xff_u8; 16])
        .send()
        .await
        .unwrap();
    assert_eq!(malformed.status(), 400);
    let invalid_id = serde_json::json!({"resourceSpans": [{"resource": {"attributes": [
        {"key": "service.name", "value": {"stringValue": "probe"}}]},
        "scopeSpans": [{"spans": [{"traceId": "00000000000000000000000000000000",
            "spanId": "eee19b7ec3c1b174", "name": "GET /", "kind": "SPAN_KIND_SERVER",
            "startTimeUnixNano": "1700000000000000000", "endTimeUnixNano": "1700000000100000000"}]}]}]});
    let response = client
        .post(demo.http_url("/v1/traces"))
        .json(&invalid_id)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    // An agent forwarding to the demo collector, for the exporter families
    // (`tracemap_exporter_*{exporter="forward"}`) that only agents have.
    let agent = Collector::start_command(
        &["run"],
        &format!(
            "mode: agent\nexporters:\n  forward:\n    endpoints: [\"{}\"]\n",
            demo.grpc
        ),
    );
    let forwarded = serde_json::json!({"resourceSpans": [{"resource": {"attributes": [
        {"key": "service.name", "value": {"stringValue": "probe"}}]},
        "scopeSpans": [{"spans": [{"traceId": "5b8efff798038103d269b633813fc60c",
            "spanId": "eee19b7ec3c1b174", "name": "GET /", "kind": "SPAN_KIND_SERVER",
            "startTimeUnixNano": "1700000000000000000", "endTimeUnixNano": "1700000000100000000"}]}]}]});
    let response = client
        .post(agent.http_url("/v1/traces"))
        .json(&forwarded)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    // A collector sampling for X-Ray (whose endpoint never answers), for
    // `tracemap_sampling_*`: one worker and room for one trace, so the
    // second trace decides the first early, and a late span follows it.
    let sampler = Collector::start_command_env(
        &["run"],
        "pipeline:\n  workers: 1\nexporters:\n  xray:\n    enabled: true\n    region: us-east-1\n    \
         endpoint: http://127.0.0.1:9\n    sampling:\n      enabled: true\n      decision_wait: 1s\n      \
         max_traces: 1\n",
        common::moto::FAKE_AWS_ENV,
    );
    let trace_span = |trace: u128, id: u64| common::span((1_700_000_000u128 << 96) | trace, id, 2);
    common::post_spans(&sampler, "probe", vec![trace_span(1, 1), trace_span(2, 2)]).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    common::post_spans(&sampler, "probe", vec![trace_span(1, 3)]).await;
    let deadline = Instant::now() + Duration::from_secs(45);
    let text = loop {
        let mut text = demo.metrics_text().await;
        let agent_text = agent.metrics_text().await;
        let sampler_text = sampler.metrics_text().await;
        let sampled = sampler_text.contains("tracemap_sampling_late_spans_total{")
            && sampler_text.contains("tracemap_sampling_decided_early_total{");
        text.push_str(&sampler_text);
        let sent = common::series_value(
            &agent_text,
            "tracemap_exporter_sent_total{exporter=\"forward\"}",
        );
        text.push_str(&agent_text);
        let labels = emitted(&text);
        let has_errors = text.contains("status_code=\"STATUS_CODE_ERROR\"");
        let rejections = labels.contains_key("tracemap_receiver_rejected_spans_total")
            && labels.contains_key("tracemap_receiver_rejected_requests_total");
        if NEEDED_SAMPLES.iter().all(|n| labels.contains_key(*n))
            && has_errors
            && rejections
            && sent >= 1.0
            && sampled
        {
            break text;
        }
        assert!(
            Instant::now() < deadline,
            "the demo never produced every needed series; /metrics:\n{text}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    let labels = emitted(&text);

    let mut problems = Vec::new();
    let mut referenced = BTreeSet::new();
    for (file, dashboard) in grafana_dashboards() {
        let expressions = dashboard_expressions(&dashboard);
        assert!(!expressions.is_empty(), "{file}: no PromQL found");
        for (where_, expr) in expressions {
            let refs = promql_refs(&expr);
            if refs.metrics.is_empty() {
                problems.push(format!("{file} {where_}: no metric in {expr:?}"));
            }
            let mut available = refs.created.clone();
            for (metric, matchers) in &refs.metrics {
                referenced.insert(metric.clone());
                let Some(seen) = labels.get(metric) else {
                    problems.push(format!(
                        "{file} {where_}: {metric} is not emitted by tracemap"
                    ));
                    continue;
                };
                available.extend(seen.iter().cloned());
                for label in matchers.difference(seen) {
                    problems.push(format!(
                        "{file} {where_}: {metric} has no label {label} (it has {seen:?})"
                    ));
                }
            }
            for label in refs.grouping.difference(&available) {
                problems.push(format!(
                    "{file} {where_}: groups by {label}, which none of {:?} has",
                    refs.metrics.keys().collect::<Vec<_>>()
                ));
            }
        }
    }
    assert!(
        problems.is_empty(),
        "dashboard problems:\n{}",
        problems.join("\n")
    );
    for needed in NEEDED_SAMPLES {
        assert!(
            referenced.contains(needed),
            "the dashboards never use {needed}; the scanner may be broken: {referenced:?}"
        );
    }
    eprintln!(
        "dashboards reference {} emitted metric names: {referenced:?}",
        referenced.len()
    );
}
