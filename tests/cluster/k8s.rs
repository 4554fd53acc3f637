//! The Kubernetes manifests (`deploy/k8s/`) against the real binary: every pod their
//! StatefulSets make is run as a real process with exactly the arguments and
//! environment the manifests give it (`$(VAR)` expanded as the kubelet does, the pod's
//! name and IP from the downward API, the Secrets' keys, each volume mount a directory
//! of its own, a Secret volume holding the Secret's files: certificates from
//! `scripts/make-certs.sh` for every pod, as docs/operations.md makes them), each in a
//! network namespace of its own with the pod's IP on a shared
//! bridge and a hosts file that answers for the headless Service as the cluster's DNS
//! does (`counter-peers`: every pod; `POD.counter-peers`: that pod). So the manifests
//! cannot drift from the program: the cluster must form with every pod under its pod
//! name, with mutual TLS on every link, every probe must answer on the path, port and
//! scheme the manifest gives (HTTPS unverified, as the kubelet asks), the node must
//! fit its resource requests, a pod moved to another IP must come back with its counts,
//! and a stop must end cleanly within the grace period, after the preStop sleep. Each
//! process runs as the pod's `runAsUser` and `runAsGroup` (`setpriv`), owning its
//! volumes as `fsGroup` would have it; the read-only root filesystem and the dropped
//! capabilities are not emulated.
//!
//! Needs root, `ip` (iproute2), `curl` and python3 with PyYAML (to read the manifests);
//! `.ci/run` installs them. Skipped loudly without them, and failing instead where
//! `REQUIRE_NETNS` is set (CI).

use std::collections::HashMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::netns::run;
use crate::util::{lines_with, node_bin, wait_for, Certs};

/// The Secret of the certificates, and what each pod's certificate names besides the
/// pod (as docs/operations.md makes them).
const TLS_SECRET: &str = "counter-tls";
const TLS_SAN: &str = "DNS:{}.counter-peers,DNS:counter-peers,DNS:counter";

/// What the test gives the Secret `counter-secrets`.
const SECRETS: [(&str, &str); 2] = [
    ("cookie", "k8s-test-cookie"),
    ("http-token", "k8s-test-token"),
];

/// The manifests, as JSON documents (PyYAML reads them).
fn manifests() -> Result<Vec<Value>, String> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../deploy/k8s");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .map_err(|e| format!("{}: {e}", dir.display()))?
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .filter(|path| path.extension().is_some_and(|ext| ext == "yaml"))
        .collect();
    files.sort();
    let out = Command::new("python3")
        .args([
            "-c",
            "import json, sys, yaml\n\
             docs = [d for f in sys.argv[1:] for d in yaml.safe_load_all(open(f)) if d]\n\
             print(json.dumps(docs))",
        ])
        .args(&files)
        .output()
        .map_err(|e| format!("cannot run python3: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "python3 cannot read the manifests (is PyYAML installed?): {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    serde_json::from_slice(&out.stdout).map_err(|e| e.to_string())
}

/// `$(VAR)` replaced by `VAR`'s value where `env` has it, as the kubelet expands
/// arguments and later variables.
fn expand(text: &str, env: &[(String, String)]) -> String {
    let mut out = text.to_string();
    for (name, value) in env {
        out = out.replace(&format!("$({name})"), value);
    }
    out
}

/// `25m` → 25 millicores, `1` → 1000.
fn millicores(cpu: &str) -> f64 {
    match cpu.strip_suffix('m') {
        Some(m) => m.parse().unwrap(),
        None => cpu.parse::<f64>().unwrap() * 1000.0,
    }
}

/// `32Mi` → 32, `1Gi` → 1024.
fn mib(memory: &str) -> f64 {
    if let Some(m) = memory.strip_suffix("Mi") {
        m.parse().unwrap()
    } else if let Some(g) = memory.strip_suffix("Gi") {
        g.parse::<f64>().unwrap() * 1024.0
    } else {
        panic!("memory in Mi or Gi expected: {memory}")
    }
}

/// A volume mount: its path in the container, and the Secret it holds, if it is a
/// Secret volume (with the files' mode).
struct Mount {
    path: String,
    secret: Option<(String, u32)>,
}

/// A probe the kubelet (or Prometheus) makes: what, path, port, and whether over HTTPS.
struct Probe {
    what: String,
    path: String,
    port: u16,
    https: bool,
}

/// One pod a StatefulSet makes, as the kubelet would run its one container.
struct PodSpec {
    name: String,
    args: Vec<String>,
    /// With the pod's IP still to be filled in (`$POD_IP`).
    env: Vec<(String, String)>,
    /// Each volume mount.
    mounts: Vec<Mount>,
    /// Named container ports.
    ports: HashMap<String, u16>,
    /// Every httpGet probe, and the Prometheus scrape the pod's annotations ask for.
    probes: Vec<Probe>,
    cpu_request: f64,
    memory_request: f64,
    /// `runAsUser` and `runAsGroup`.
    user: (u32, u32),
    grace: Duration,
    pre_stop: Duration,
}

/// The pods of every StatefulSet, in order.
fn pods(docs: &[Value]) -> Vec<PodSpec> {
    let mut pods = Vec::new();
    for set in docs.iter().filter(|d| d["kind"] == "StatefulSet") {
        let name = set["metadata"]["name"].as_str().unwrap();
        let spec = &set["spec"]["template"]["spec"];
        let containers = spec["containers"].as_array().unwrap();
        assert_eq!(containers.len(), 1, "{name}: one container, the node");
        let c = &containers[0];
        for ordinal in 0..set["spec"]["replicas"].as_u64().unwrap() {
            let pod = format!("{name}-{ordinal}");
            let mut env: Vec<(String, String)> = Vec::new();
            for var in c["env"].as_array().unwrap() {
                let key = var["name"].as_str().unwrap().to_string();
                let value = if let Some(value) = var["value"].as_str() {
                    expand(value, &env)
                } else if let Some(field) = var["valueFrom"]["fieldRef"]["fieldPath"].as_str() {
                    match field {
                        "metadata.name" => pod.clone(),
                        "status.podIP" => "$POD_IP".to_string(),
                        other => panic!("{pod}: field {other} is not emulated"),
                    }
                } else if let Some(key) = var["valueFrom"]["secretKeyRef"]["key"].as_str() {
                    SECRETS
                        .iter()
                        .find(|(k, _)| *k == key)
                        .unwrap_or_else(|| panic!("{pod}: no secret key {key}"))
                        .1
                        .to_string()
                } else {
                    panic!("{pod}: env {key} is not emulated: {var}")
                };
                env.push((key, value));
            }
            let args = c["args"]
                .as_array()
                .unwrap()
                .iter()
                .map(|a| expand(a.as_str().unwrap(), &env))
                .collect();
            let ports: HashMap<String, u16> = c["ports"]
                .as_array()
                .unwrap()
                .iter()
                .map(|p| {
                    (
                        p["name"].as_str().unwrap().to_string(),
                        p["containerPort"].as_u64().unwrap() as u16,
                    )
                })
                .collect();
            let mut probes: Vec<Probe> = ["startupProbe", "readinessProbe", "livenessProbe"]
                .iter()
                .filter(|probe| !c[**probe].is_null())
                .map(|probe| {
                    let get = &c[*probe]["httpGet"];
                    let port = match &get["port"] {
                        Value::String(named) => ports[named],
                        number => number.as_u64().unwrap() as u16,
                    };
                    Probe {
                        what: probe.to_string(),
                        path: get["path"].as_str().unwrap().to_string(),
                        port,
                        https: get["scheme"] == "HTTPS",
                    }
                })
                .collect();
            let scrape = &set["spec"]["template"]["metadata"]["annotations"];
            assert_eq!(scrape["prometheus.io/scrape"], "true", "{name}");
            probes.push(Probe {
                what: "the Prometheus scrape".into(),
                path: scrape["prometheus.io/path"].as_str().unwrap().to_string(),
                port: scrape["prometheus.io/port"]
                    .as_str()
                    .unwrap()
                    .parse()
                    .unwrap(),
                https: scrape["prometheus.io/scheme"] == "https",
            });
            let volumes = spec["volumes"].as_array().cloned().unwrap_or_default();
            let secret_of = |volume: &Value| {
                let v = volumes.iter().find(|v| v["name"] == *volume)?;
                let secret = v["secret"]["secretName"].as_str()?.to_string();
                let mode = v["secret"]["defaultMode"].as_u64().unwrap_or(0o644) as u32;
                Some((secret, mode))
            };
            pods.push(PodSpec {
                name: pod,
                args,
                env,
                mounts: c["volumeMounts"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|m| Mount {
                        path: m["mountPath"].as_str().unwrap().to_string(),
                        secret: secret_of(&m["name"]),
                    })
                    .collect(),
                ports,
                probes,
                cpu_request: millicores(c["resources"]["requests"]["cpu"].as_str().unwrap()),
                memory_request: mib(c["resources"]["requests"]["memory"].as_str().unwrap()),
                user: (
                    spec["securityContext"]["runAsUser"].as_u64().unwrap() as u32,
                    spec["securityContext"]["runAsGroup"].as_u64().unwrap() as u32,
                ),
                grace: Duration::from_secs(spec["terminationGracePeriodSeconds"].as_u64().unwrap()),
                pre_stop: Duration::from_secs(
                    c["lifecycle"]["preStop"]["sleep"]["seconds"]
                        .as_u64()
                        .unwrap_or(0),
                ),
            });
        }
    }
    pods
}

/// The pods' network: a namespace per pod, each with an address on a bridge in a hub
/// namespace, and a hosts file per pod that answers for the headless Service.
struct PodNet {
    hub: String,
    namespaces: Vec<String>,
    /// Each pod's IP (changed by [`PodNet::move_pod`]).
    ips: Vec<String>,
    names: Vec<String>,
    subnet: String,
}

impl PodNet {
    fn create(names: &[String]) -> Result<PodNet, String> {
        let id = std::process::id() % 16_000;
        let mut net = PodNet {
            hub: format!("cck-{id}"),
            namespaces: Vec::new(),
            ips: Vec::new(),
            names: names.to_vec(),
            subnet: format!("10.214.{}", id % 250),
        };
        run(&["ip", "netns", "add", &net.hub])?;
        run(&["ip", "-n", &net.hub, "link", "add", "br0", "type", "bridge"])?;
        run(&["ip", "-n", &net.hub, "link", "set", "br0", "up"])?;
        for (k, _) in names.iter().enumerate() {
            let ns = format!("cck{id}-{k}");
            run(&["ip", "netns", "add", &ns])?;
            net.namespaces.push(ns.clone());
            let hub_end = format!("cck{id}v{k}");
            run(&[
                "ip", "link", "add", &hub_end, "type", "veth", "peer", "name", "eth0", "netns", &ns,
            ])?;
            run(&["ip", "link", "set", &hub_end, "netns", &net.hub])?;
            run(&[
                "ip", "-n", &net.hub, "link", "set", &hub_end, "master", "br0", "up",
            ])?;
            let ip = format!("{}.{}", net.subnet, k + 10);
            add_ip(&ns, &ip)?;
            run(&["ip", "-n", &ns, "link", "set", "eth0", "up"])?;
            run(&["ip", "-n", &ns, "link", "set", "lo", "up"])?;
            net.ips.push(ip);
        }
        net.write_hosts()?;
        Ok(net)
    }

    /// Every pod's hosts file: its own name, every pod under the headless Service, and
    /// the Service itself naming every pod (ready or not: publishNotReadyAddresses).
    /// Rewritten in place, so a running pod's mount shows the new file.
    fn write_hosts(&self) -> Result<(), String> {
        for (k, ns) in self.namespaces.iter().enumerate() {
            let mut hosts = format!("127.0.0.1 localhost\n{} {}\n", self.ips[k], self.names[k]);
            for (ip, name) in self.ips.iter().zip(&self.names) {
                hosts.push_str(&format!("{ip} {name}.counter-peers\n"));
            }
            for ip in &self.ips {
                hosts.push_str(&format!("{ip} counter-peers\n"));
            }
            let dir = PathBuf::from("/etc/netns").join(ns);
            std::fs::create_dir_all(&dir).map_err(|e| format!("/etc/netns: {e}"))?;
            std::fs::write(dir.join("hosts"), hosts).map_err(|e| format!("hosts: {e}"))?;
        }
        Ok(())
    }

    /// Pod `k` gets another IP, as a pod rescheduled elsewhere does, and the DNS says so.
    fn move_pod(&mut self, k: usize) -> Result<(), String> {
        let ns = &self.namespaces[k];
        run(&["ip", "-n", ns, "addr", "flush", "dev", "eth0"])?;
        let ip = format!("{}.{}", self.subnet, k + 100);
        add_ip(ns, &ip)?;
        self.ips[k] = ip;
        self.write_hosts()
    }
}

/// Gives the pod in namespace `ns` the address `ip` on the pods' /24.
fn add_ip(ns: &str, ip: &str) -> Result<(), String> {
    run(&[
        "ip",
        "-n",
        ns,
        "addr",
        "add",
        &format!("{ip}/24"),
        "dev",
        "eth0",
    ])
}

impl Drop for PodNet {
    fn drop(&mut self) {
        for ns in &self.namespaces {
            let _ = run(&["ip", "netns", "del", ns]);
            let _ = std::fs::remove_dir_all(PathBuf::from("/etc/netns").join(ns));
        }
        let _ = run(&["ip", "netns", "del", &self.hub]);
    }
}

/// The files of the Secret `secret`, from `certs` (made for every pod of `pods`).
fn secret_files(secret: &str, certs: &Certs, pods: &[String]) -> Vec<(String, PathBuf)> {
    assert_eq!(secret, TLS_SECRET, "Secret volume {secret} is not emulated");
    let mut files = vec!["ca.pem".to_string()];
    for pod in pods {
        files.push(format!("{pod}.pem"));
        files.push(format!("{pod}-key.pem"));
    }
    files
        .into_iter()
        .map(|f| {
            let path = certs.dir().join(&f);
            (f, path)
        })
        .collect()
}

/// A running pod: its process, log and volumes.
struct Pod {
    spec: PodSpec,
    ns: String,
    child: Child,
    log: PathBuf,
    /// Each volume mount's directory.
    volumes: tempfile::TempDir,
    /// A client's `--tls-*` arguments for this cluster.
    client_tls: Vec<String>,
}

impl Pod {
    /// Starts pod `spec` in namespace `ns` at `ip`; its Secret volumes hold what
    /// `certs` made for `pods`.
    fn start(spec: PodSpec, ns: &str, ip: &str, certs: &Certs, pods: &[String]) -> Pod {
        let volumes = tempfile::tempdir().unwrap();
        let (uid, gid) = spec.user;
        for (k, mount) in spec.mounts.iter().enumerate() {
            let dir = volumes.path().join(format!("volume-{k}"));
            std::fs::create_dir(&dir).unwrap();
            match &mount.secret {
                // The pod's user owns its volumes (as fsGroup makes them writable for it).
                None => std::os::unix::fs::chown(&dir, Some(uid), Some(gid)).unwrap(),
                // A Secret's files belong to root, in the fsGroup, with the volume's mode.
                Some((secret, mode)) => {
                    for (name, from) in secret_files(secret, certs, pods) {
                        let to = dir.join(name);
                        std::fs::copy(&from, &to).unwrap();
                        std::os::unix::fs::chown(&to, Some(0), Some(gid)).unwrap();
                        std::fs::set_permissions(
                            &to,
                            std::os::unix::fs::PermissionsExt::from_mode(*mode),
                        )
                        .unwrap();
                    }
                }
            }
        }
        std::os::unix::fs::chown(volumes.path(), Some(uid), Some(gid)).unwrap();
        let log = volumes.path().join("log");
        let child = launch(&spec, ns, volumes.path(), &log, ip);
        Pod {
            spec,
            ns: ns.to_string(),
            child,
            log,
            volumes,
            client_tls: certs.args("client"),
        }
    }

    /// Starts the container's process again (same volumes), with the pod's IP `ip`.
    fn restart(&mut self, ip: &str) {
        self.child = launch(&self.spec, &self.ns, self.volumes.path(), &self.log, ip);
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    /// `curl` from the pod's own namespace to `ip`, as `probe` asks: the HTTP status.
    /// Over HTTPS the certificate is not checked, as the kubelet does not.
    fn http_status(&self, ip: &str, probe: &Probe) -> String {
        let scheme = if probe.https { "https" } else { "http" };
        let out = Command::new("ip")
            .args([
                "netns",
                "exec",
                &self.ns,
                "curl",
                "-s",
                "-k",
                "-o",
                "/dev/null",
                "-w",
                "%{http_code}",
            ])
            .arg(format!("{scheme}://{ip}:{}{}", probe.port, probe.path))
            .output()
            .expect("cannot run curl");
        String::from_utf8_lossy(&out.stdout).to_string()
    }

    /// `node stats --json` through this pod's own node, from inside its namespace, with
    /// the cookie the Secret gives and a client certificate.
    fn stats(&self) -> Result<Value, String> {
        let out = Command::new("ip")
            .args(["netns", "exec", &self.ns])
            .arg(node_bin())
            .args([
                "stats",
                "--json",
                "--deadline",
                "0.5",
                "--join",
                "127.0.0.1:4697",
            ])
            .args(&self.client_tls)
            .env("NODE_COOKIE", SECRETS[0].1)
            .output()
            .map_err(|e| e.to_string())?;
        if !out.status.success() {
            return Err(String::from_utf8_lossy(&out.stderr).to_string());
        }
        serde_json::from_slice(&out.stdout).map_err(|e| e.to_string())
    }

    /// `node incr` through this pod's node.
    fn incr(&self, counter: &str, by: u64) -> String {
        let out = Command::new("ip")
            .args(["netns", "exec", &self.ns])
            .arg(node_bin())
            .args([
                "incr",
                counter,
                "--by",
                &by.to_string(),
                "--join",
                "127.0.0.1:4697",
            ])
            .args(&self.client_tls)
            .env("NODE_COOKIE", SECRETS[0].1)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }
}

impl Drop for Pod {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!("---- {} ----\n{}", self.spec.name, self.log());
        }
    }
}

/// A mount path of `spec` as a directory under `volumes`.
fn mounted(spec: &PodSpec, volumes: &Path, text: &str) -> String {
    let mut out = text.to_string();
    for (k, mount) in spec.mounts.iter().enumerate() {
        let path = &mount.path;
        if out == *path || out.starts_with(&format!("{path}/")) {
            let dir = volumes.join(format!("volume-{k}"));
            out = format!("{}{}", dir.display(), &out[path.len()..]);
        }
    }
    out
}

/// The container's process, as the kubelet starts it: the arguments and environment
/// of `spec`, the pod's IP `ip`, its mounts under `volumes`, in namespace `ns`.
fn launch(spec: &PodSpec, ns: &str, volumes: &Path, log: &Path, ip: &str) -> Child {
    let args: Vec<String> = spec
        .args
        .iter()
        .map(|a| mounted(spec, volumes, a))
        .collect();
    let env: Vec<(String, String)> = spec
        .env
        .iter()
        .map(|(k, v)| (k.clone(), mounted(spec, volumes, &v.replace("$POD_IP", ip))))
        .collect();
    let stderr = File::options().create(true).append(true).open(log).unwrap();
    let (uid, gid) = (spec.user.0.to_string(), spec.user.1.to_string());
    Command::new("ip")
        .args(["netns", "exec", ns])
        .args([
            "setpriv",
            "--reuid",
            &uid,
            "--regid",
            &gid,
            "--clear-groups",
        ])
        .arg(node_bin())
        .args(&args)
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .envs(env)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(stderr)
        .spawn()
        .expect("cannot start a pod")
}

/// Waits until pod `via`'s collection is complete with exactly the pods `names`.
fn wait_formed(via: &Pod, names: &[String]) -> Value {
    wait_for(
        "every pod in one complete collection",
        Duration::from_secs(30),
        || {
            let s = via.stats()?;
            let seen: Vec<&str> = s["nodes"]
                .as_array()
                .map(|nodes| nodes.iter().filter_map(|n| n["name"].as_str()).collect())
                .unwrap_or_default();
            (s["complete"] == true && seen == names)
                .then(|| s.clone())
                .ok_or_else(|| format!("complete {}, nodes {seen:?}", s["complete"]))
        },
    )
}

fn can_run(test: &str) -> Option<Vec<Value>> {
    let ready = run(&["ip", "netns", "list"])
        .and_then(|()| run(&["curl", "--version"]))
        .and_then(|()| run(&["setpriv", "--version"]))
        .and_then(|()| manifests());
    match ready {
        Ok(docs) => Some(docs),
        Err(why) if std::env::var_os("REQUIRE_NETNS").is_some() => {
            panic!("{test}: cannot run ({why}) and REQUIRE_NETNS is set")
        }
        Err(why) => {
            eprintln!("SKIPPED {test}: {why}; run as root with iproute2, curl and PyYAML, as .ci/run does");
            None
        }
    }
}

#[test]
fn the_manifests_pods_form_the_cluster_answer_their_probes_and_fit_their_requests() {
    let Some(docs) = can_run("k8s manifests") else {
        return;
    };
    let specs = pods(&docs);
    let names: Vec<String> = specs.iter().map(|p| p.name.clone()).collect();
    assert_eq!(
        names,
        [
            "counter-coordinator-0",
            "counter-worker-0",
            "counter-worker-1"
        ],
        "the StatefulSets' pods"
    );
    let mut net = match PodNet::create(&names) {
        Ok(net) => net,
        Err(why) if std::env::var_os("REQUIRE_NETNS").is_none() => {
            eprintln!("SKIPPED k8s manifests: cannot make the pods' network ({why})");
            return;
        }
        Err(why) => panic!("cannot make the pods' network: {why}"),
    };
    let mut made: Vec<&str> = names.iter().map(String::as_str).collect();
    made.push("client");
    let certs = Certs::make_with_san(&made, TLS_SAN);
    let mut pods: Vec<Pod> = specs
        .into_iter()
        .enumerate()
        .map(|(k, spec)| Pod::start(spec, &net.namespaces[k], &net.ips[k], &certs, &names))
        .collect();
    let started = Instant::now();
    wait_formed(&pods[0], &names);
    println!(
        "k8s: {} pods formed in {} ms",
        pods.len(),
        started.elapsed().as_millis()
    );

    // Every probe of every pod answers 200 on the path, port and scheme the manifest
    // gives, at the pod's IP, as the kubelet asks.
    for (k, pod) in pods.iter().enumerate() {
        for probe in &pod.spec.probes {
            let status = wait_for(
                &format!("{}'s {}", pod.spec.name, probe.what),
                Duration::from_secs(10),
                || {
                    let status = pod.http_status(&net.ips[k], probe);
                    (status == "200").then_some(status.clone()).ok_or(status)
                },
            );
            assert_eq!(status, "200");
        }
        // Every link is TLS: the cluster port refuses a plain client.
        let plain = Command::new("ip")
            .args(["netns", "exec", &pod.ns])
            .arg(node_bin())
            .args(["stats", "--json", "--join", "127.0.0.1:4697"])
            .env("NODE_COOKIE", SECRETS[0].1)
            .output()
            .unwrap();
        assert!(
            !plain.status.success()
                && String::from_utf8_lossy(&plain.stderr).contains("requires TLS"),
            "{}: a plain client: {}",
            pod.spec.name,
            String::from_utf8_lossy(&plain.stderr)
        );
        assert!(pod.spec.ports.contains_key("cluster") && pod.spec.ports.contains_key("http"));
    }

    // The footprint against the requests: every pod idle with its peers, the
    // coordinator collecting every 2 s, and a client change a second through each.
    let before: Vec<Duration> = pods
        .iter()
        .map(|p| node::cpu_time(p.pid()).unwrap())
        .collect();
    let window = Instant::now();
    for second in 0..10u64 {
        for pod in &pods {
            let counter = format!("{}/{}", pod.spec.name, second % 4);
            pod.incr(&counter, 1);
        }
        // Paced: one change a second through each pod.
        let next = window + Duration::from_secs(second + 1);
        std::thread::sleep(next.saturating_duration_since(Instant::now()));
    }
    let seconds = window.elapsed().as_secs_f64();
    for (pod, before) in pods.iter().zip(before) {
        let cpu = (node::cpu_time(pod.pid()).unwrap() - before).as_secs_f64() * 1000.0 / seconds;
        let peak = node::status_mib(pod.pid(), "VmHWM");
        println!(
            "k8s: {} used {cpu:.1} ms/s of CPU (request {:.0}m) and {peak:.1} MiB at most (request {:.0} MiB)",
            pod.spec.name, pod.spec.cpu_request, pod.spec.memory_request
        );
        // The requests are for the release build the image holds: a debug build's
        // footprint is several times larger, and .ci/run runs this test in release too.
        if cfg!(debug_assertions) {
            println!("k8s: a debug build: the footprint is checked against the requests in release builds only");
            continue;
        }
        assert!(
            cpu <= pod.spec.cpu_request,
            "{}: {cpu:.1} ms/s over its request",
            pod.spec.name
        );
        assert!(
            peak <= pod.spec.memory_request,
            "{}: {peak:.1} MiB over its request",
            pod.spec.name
        );
    }

    // A pod rescheduled elsewhere: stopped, given another IP, started again with the
    // same volume. It keeps its name and its counts, and the others find it there.
    let before = pods[2].incr("counter-worker-1/0", 1_000);
    pods[2].child.kill().unwrap();
    pods[2].child.wait().unwrap();
    net.move_pod(2).unwrap();
    let ip = net.ips[2].clone();
    pods[2].restart(&ip);
    let s = wait_formed(&pods[0], &names);
    let moved = s["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["name"] == "counter-worker-1")
        .unwrap();
    assert_eq!(
        moved["advertise"], "counter-worker-1.counter-peers:4697",
        "{s}"
    );
    assert_eq!(
        pods[1].incr("counter-worker-1/0", 1),
        (before.parse::<i64>().unwrap() + 1).to_string()
    );
    wait_formed(&pods[1], &names);

    // A stop: the kubelet runs the preStop sleep, then sends SIGTERM and waits out the
    // rest of the grace period. Every node must be gone, cleanly, well within it.
    for pod in &mut pods {
        let signalled = Instant::now();
        run(&["kill", "-TERM", &pod.pid().to_string()]).unwrap();
        let allowed = pod.spec.grace - pod.spec.pre_stop;
        let status = wait_for(&format!("{} to stop", pod.spec.name), allowed, || {
            pod.child
                .try_wait()
                .map_err(|e| e.to_string())?
                .ok_or_else(|| "running".to_string())
        });
        assert!(status.success(), "{}: {status}", pod.spec.name);
        assert_eq!(
            lines_with(&pod.log(), "node stopped"),
            1,
            "{}",
            pod.spec.name
        );
        println!(
            "k8s: {} stopped cleanly in {} ms (grace {}s, preStop {}s)",
            pod.spec.name,
            signalled.elapsed().as_millis(),
            pod.spec.grace.as_secs(),
            pod.spec.pre_stop.as_secs()
        );
    }
}
