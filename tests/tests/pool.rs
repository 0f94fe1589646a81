//! A pool of two edge nodes watched by a real Prometheus (Debian's `prometheus` package): each
//! node runs `edge-ctl serve` with the same policy in its own namespace, and the Prometheus in
//! a third namespace scrapes both as one job with the rules of `contrib/prometheus`. After
//! traffic, a PromQL query summing a rule over the pool returns what was sent; a policy change
//! rolled out to one node fires the policy-differs alert, which clears once the second node has
//! it too. The rules are loaded as shipped but for their `for:` durations (5 minutes in the file,
//! 2 seconds here; `promtool test rules` checks them at their real length). Needs root.

use std::net::{SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use edge_tests::lab::{KillOnDrop, Lab};
use edge_tests::net::{http_get, in_netns};

const PROM: &str = "198.51.100.1";
const NODES: [&str; 2] = ["198.51.100.11", "198.51.100.12"];
const PATIENCE: Duration = Duration::from_secs(60);
/// The scrape credentials of the pool's Prometheus (basic auth over TLS).
const SCRAPE_USER: &str = "prometheus";
const SCRAPE_PASSWORD: &str = "pool-scrape-secret";

/// The pool's policy: the external role allows UDP 6000 from anywhere and the metrics port from
/// the Prometheus host; `extra` adds a rule (the change rolled out).
fn policy(extra: bool) -> String {
    let mut p = format!(
        "[sets]\nme = [\"@interface\"]\nprometheus = [\"{PROM}\"]\n\n\
         [[rule]]\nname = \"udp-6000\"\nrole = \"external\"\ndirection = \"inbound\"\nprotocol = \"udp\"\n\
         ports = 6000\nlocal = \"me\"\n\n\
         [[rule]]\nname = \"metrics\"\nrole = \"external\"\ndirection = \"inbound\"\nprotocol = \"tcp\"\n\
         ports = 9469\nlocal = \"me\"\nremote = \"prometheus\"\n"
    );
    if extra {
        p += "\n[[rule]]\nname = \"udp-6001\"\nrole = \"external\"\ndirection = \"inbound\"\nprotocol = \"udp\"\n\
              ports = 6001\nlocal = \"me\"\n";
    }
    p
}

/// Percent-encodes a PromQL query for a URL.
fn encode(q: &str) -> String {
    q.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// GET from inside a namespace: the body of a 200 answer.
fn get(ns: &str, addr: SocketAddr, path: &str) -> std::io::Result<String> {
    let (head, body) = http_get(ns, addr, path)?;
    if !head.starts_with("HTTP/1.1 200") && !head.starts_with("HTTP/1.0 200") {
        return Err(std::io::Error::other(format!("{head}\n{body}")));
    }
    Ok(body)
}

/// Fields drop in order: the processes before the lab that holds their namespaces.
struct Pool {
    _prometheus: KillOnDrop,
    _daemons: Vec<KillOnDrop>,
    prom: String,
    dir: PathBuf,
    _lab: Lab,
}

impl Pool {
    fn try_query(&self, q: &str) -> Result<serde_json::Value, String> {
        let path = format!("/api/v1/query?query={}", encode(q));
        let body = get(&self.prom, ([127, 0, 0, 1], 9090).into(), &path).map_err(|e| e.to_string())?;
        let v: serde_json::Value = serde_json::from_str(&body).map_err(|e| e.to_string())?;
        if v["status"] != "success" {
            return Err(v.to_string());
        }
        Ok(v["data"]["result"].clone())
    }

    fn query(&self, q: &str) -> serde_json::Value {
        self.try_query(q).unwrap_or_else(|e| panic!("query {q}: {e}\n{}", self.logs()))
    }

    /// Polls a query until `done` holds for its result (Prometheus may still be starting);
    /// panics with the last answer.
    fn wait(&self, what: &str, q: &str, done: impl Fn(&serde_json::Value) -> bool) -> serde_json::Value {
        let start = Instant::now();
        loop {
            let r = self.try_query(q);
            if let Ok(r) = &r
                && done(r)
            {
                return r.clone();
            }
            assert!(start.elapsed() < PATIENCE, "timed out waiting for {what}: {q} gives {r:?}\n{}", self.logs());
            std::thread::sleep(Duration::from_millis(500));
        }
    }

    fn logs(&self) -> String {
        let mut out = String::new();
        for entry in std::fs::read_dir(&self.dir).unwrap().flatten() {
            let p = entry.path();
            if p.extension().is_some_and(|e| e == "log") {
                out += &format!("--- {}\n{}\n", p.display(), std::fs::read_to_string(&p).unwrap_or_default());
            }
        }
        out
    }

    fn send_udp(&self, node: usize, port: u16, count: usize) {
        let to: SocketAddr = format!("{}:{port}", NODES[node]).parse().unwrap();
        in_netns(&self.prom, move || {
            let sock = UdpSocket::bind("0.0.0.0:0").unwrap();
            for i in 0..count {
                sock.send_to(format!("datagram {i}").as_bytes(), to).unwrap();
            }
        });
    }
}

fn spawn_logged(mut cmd: std::process::Command, log: &Path) -> Child {
    cmd.stdin(Stdio::null()).stdout(Stdio::null()).stderr(std::fs::File::create(log).unwrap()).spawn().unwrap()
}

fn build() -> Pool {
    let mut lab = Lab::new("pool");
    let prom = lab.netns("prom");
    let nodes: Vec<String> = (1..=2).map(|n| lab.netns(&format!("node{n}"))).collect();
    lab.ip(&prom, &["link", "add", "br0", "type", "bridge"]);
    lab.ip(&prom, &["link", "set", "br0", "up"]);
    lab.addr(&prom, "br0", &format!("{PROM}/24"));
    for (i, ns) in nodes.iter().enumerate() {
        let far = format!("p-n{}", i + 1);
        lab.veth((ns, "edge0"), (&prom, &far));
        lab.ip(&prom, &["link", "set", &far, "master", "br0"]);
        lab.addr(ns, "edge0", &format!("{}/24", NODES[i]));
    }
    let config =
        lab.file("serve.toml", "[[interface]]\nname = \"edge0\"\nrole = \"external\"\npolicy = \"policy.toml\"\n");
    let dir = config.parent().unwrap().to_path_buf();
    // The endpoints leave loopback, so as an admin would: TLS with a certificate of the pool's
    // CA for each node's address, and basic auth (--web.config.file, node_exporter's format).
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca_params.distinguished_name.push(rcgen::DnType::CommonName, "edge pool test CA");
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let issuer = rcgen::Issuer::new(ca_params, ca_key);
    let ca_file = lab.file("ca.pem", &ca.pem());
    let hash = bcrypt::hash(SCRAPE_PASSWORD, 4).unwrap();
    // One directory per node: the same policy file, distributed (as configuration management
    // would) by copying.
    let mut daemons = Vec::new();
    for (i, ns) in nodes.iter().enumerate() {
        let node_dir = dir.join(format!("node{}", i + 1));
        std::fs::create_dir_all(&node_dir).unwrap();
        std::fs::write(node_dir.join("policy.toml"), policy(false)).unwrap();
        std::fs::copy(&config, node_dir.join("serve.toml")).unwrap();
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec![NODES[i].to_string()]).unwrap().signed_by(&key, &issuer).unwrap();
        std::fs::write(node_dir.join("node.pem"), cert.pem()).unwrap();
        std::fs::write(node_dir.join("node.key"), key.serialize_pem()).unwrap();
        std::fs::set_permissions(node_dir.join("node.key"), std::os::unix::fs::PermissionsExt::from_mode(0o600))
            .unwrap();
        std::fs::write(
            node_dir.join("web.yml"),
            format!(
                "tls_server_config:\n  cert_file: node.pem\n  key_file: node.key\n\
                 basic_auth_users:\n  {SCRAPE_USER}: {hash}\n"
            ),
        )
        .unwrap();
        let mut cmd = lab.edge_ctl_command(
            ns,
            &[
                "serve",
                "--config",
                node_dir.join("serve.toml").to_str().unwrap(),
                "--metrics",
                &format!("{}:9469", NODES[i]),
                "--web.config.file",
                node_dir.join("web.yml").to_str().unwrap(),
            ],
        );
        cmd.env("RUST_LOG", "info");
        daemons.push(KillOnDrop(spawn_logged(cmd, &dir.join(format!("serve-node{}.log", i + 1)))));
    }
    // The rules as shipped, with the alerts' `for:` shortened.
    let rules = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../edge-ctl/contrib/prometheus/edge-ctl.rules.yml"),
    )
    .unwrap();
    assert!(rules.contains("for: 5m"), "the policy-differs alert waits 5 minutes in the file");
    let rules = rules.replace("for: 5m", "for: 2s").replace("for: 1m", "for: 2s");
    let rules_file = lab.file("edge-ctl.rules.yml", &rules);
    let targets: Vec<String> = NODES.iter().map(|n| format!("\"{n}:9469\"")).collect();
    let prom_config = lab.file(
        "prometheus.yml",
        &format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n\
             rule_files:\n  - {}\n\
             scrape_configs:\n\
             \x20 - job_name: edge\n    scheme: https\n    tls_config:\n      ca_file: {}\n\
             \x20   basic_auth:\n      username: {SCRAPE_USER}\n      password: {SCRAPE_PASSWORD}\n\
             \x20   static_configs:\n      - targets: [{}]\n\
             \x20 - job_name: edge-without-credentials\n    scheme: https\n    tls_config:\n      ca_file: {}\n\
             \x20   static_configs:\n      - targets: [{}]\n",
            rules_file.display(),
            ca_file.display(),
            targets.join(", "),
            ca_file.display(),
            targets.join(", ")
        ),
    );
    let tsdb = dir.join("tsdb");
    let mut cmd = std::process::Command::new("nsenter");
    cmd.arg(format!("--net=/run/netns/{prom}")).args([
        "prometheus",
        &format!("--config.file={}", prom_config.display()),
        &format!("--storage.tsdb.path={}", tsdb.display()),
        "--web.listen-address=127.0.0.1:9090",
    ]);
    let prometheus = KillOnDrop(spawn_logged(cmd, &dir.join("prometheus.log")));
    let pool = Pool { _prometheus: prometheus, _daemons: daemons, prom, dir, _lab: lab };
    // Both nodes scraped (over TLS, with credentials) and attached; without credentials, neither.
    pool.wait("both nodes up", "sum(up{job=\"edge\"})", |r| r[0]["value"][1] == "2");
    pool.wait("no scrape without credentials", "sum(up{job=\"edge-without-credentials\"})", |r| {
        r[0]["value"][1] == "0"
    });
    assert_eq!(
        pool.query("count(edge_ctl_interface_attached{job=\"edge-without-credentials\"})"),
        serde_json::json!([]),
        "no sample came through without credentials"
    );
    pool.wait("both filters attached", "sum(edge_ctl_interface_attached{job=\"edge\"})", |r| r[0]["value"][1] == "2");
    pool
}

#[test]
fn prometheus_sums_the_pool_and_sees_a_half_done_rollout() {
    let pool = build();
    let sum = "sum(edge_ctl_rule_packets_total{job=\"edge\",rule=\"udp-6000\"})";
    pool.wait("the counters at zero", sum, |r| r[0]["value"][1] == "0");
    pool.send_udp(0, 6000, 50);
    pool.send_udp(1, 6000, 30);
    pool.wait("80 packets over the pool", sum, |r| r[0]["value"][1] == "80");
    // The recording rule sums the pool too (a rate: only that it sees both nodes' traffic).
    pool.wait("the recording rule", "job_role_rule_direction:edge_ctl_rule_packets:rate5m{rule=\"udp-6000\"}", |r| {
        r.as_array().is_some_and(|a| a.len() == 1) && r[0]["value"][1].as_str().is_some_and(|v| v != "0")
    });

    let firing = "ALERTS{alertname=\"EdgeCtlPolicyDiffersInPool\",alertstate=\"firing\"}";
    assert_eq!(pool.query(firing), serde_json::json!([]), "one policy in the pool: no alert");
    // The change reaches node 1 only: its serve reloads, the pool holds two policies.
    std::fs::write(pool.dir.join("node1/policy.toml"), policy(true)).unwrap();
    let r = pool.wait("the alert firing", firing, |r| r.as_array().is_some_and(|a| !a.is_empty()));
    assert_eq!(r[0]["metric"]["role"], "external", "{r}");
    assert_eq!(
        pool.query("count(count by (sha256) (edge_ctl_policy_info{job=\"edge\"}))")[0]["value"][1],
        "2",
        "two policy hashes"
    );
    // Then node 2: one policy again, the alert clears.
    std::fs::write(pool.dir.join("node2/policy.toml"), policy(true)).unwrap();
    pool.wait("the alert cleared", firing, |r| r.as_array().is_some_and(|a| a.is_empty()));
    pool.wait("one policy hash", "count(count by (sha256) (edge_ctl_policy_info{job=\"edge\"}))", |r| {
        r[0]["value"][1] == "1"
    });
}
