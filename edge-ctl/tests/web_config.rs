//! The metrics endpoint as a scraper sees it, without BPF: the server of `edge-ctl serve` runs
//! in-process on 127.0.0.1 with a fixed snapshot instead of the kernel's maps, and curl scrapes
//! it, over TLS with a certificate made for the test and basic authentication from a
//! `--web.config.file`, and over plain HTTP without one.

use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use edge_ctl::policy::Role;
use edge_ctl::serve::metrics::{Format, InterfaceSample, ReloadCounts};
use edge_ctl::serve::{http, web_config};

const USER: &str = "prometheus";
const PASSWORD: &str = "correct horse";

/// The server on its own runtime (dropped with it), and the directory of its files.
struct Endpoint {
    addr: SocketAddr,
    dir: PathBuf,
    _runtime: tokio::runtime::Runtime,
}

impl Drop for Endpoint {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// What the daemon would report for one configured interface that is not attached.
fn snapshot() -> Vec<InterfaceSample> {
    vec![InterfaceSample {
        interface: "eth0".into(),
        role: Role::External,
        attached: false,
        stats: None,
        loaded_at: None,
        reloads: Some(ReloadCounts { successes: 3, failures: 1 }),
    }]
}

fn write(path: &Path, text: &str, mode: u32) {
    std::fs::write(path, text).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

/// Starts the server; `web` is the web configuration's YAML, if any. The directory holds
/// ca.pem (the CA that signed the server's certificate for 127.0.0.1), cert.pem, key.pem,
/// and client.pem/client-key.pem (a client certificate from the same CA).
fn start(tag: &str, web: Option<&str>, fail: bool) -> Endpoint {
    let dir = std::env::temp_dir().join(format!("edge-webcfg-it-{}-{tag}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir(&dir).unwrap();
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();

    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca_params.distinguished_name.push(rcgen::DnType::CommonName, "edge-ctl test CA");
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let issuer = rcgen::Issuer::new(ca_params, ca_key);
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = rcgen::CertificateParams::new(vec!["127.0.0.1".to_string()]).unwrap().signed_by(&key, &issuer).unwrap();
    let client_key = rcgen::KeyPair::generate().unwrap();
    let mut client_params = rcgen::CertificateParams::new(vec!["scraper".to_string()]).unwrap();
    client_params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
    let client = client_params.signed_by(&client_key, &issuer).unwrap();
    write(&dir.join("ca.pem"), &ca.pem(), 0o644);
    write(&dir.join("cert.pem"), &cert.pem(), 0o644);
    write(&dir.join("key.pem"), &key.serialize_pem(), 0o600);
    write(&dir.join("client.pem"), &client.pem(), 0o644);
    write(&dir.join("client-key.pem"), &client_key.serialize_pem(), 0o600);

    let web = match web {
        Some(yaml) => {
            let path = dir.join("web.yml");
            write(&path, yaml, 0o644);
            web_config::load(&path).unwrap()
        }
        None => web_config::WebConfig::default(),
    };
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
    let listener = runtime.block_on(tokio::net::TcpListener::bind("127.0.0.1:0")).unwrap();
    let addr = listener.local_addr().unwrap();
    runtime.spawn(http::serve(listener, web, move |format: Format| async move {
        if fail {
            return Err("the maps are unreadable".to_string());
        }
        Ok(edge_ctl::serve::metrics::render(snapshot(), format))
    }));
    Endpoint { addr, dir, _runtime: runtime }
}

/// The users section with a bcrypt hash of PASSWORD (cost 4: the test need not be slow).
fn users() -> String {
    format!("basic_auth_users:\n  {USER}: {}\n", bcrypt::hash(PASSWORD, 4).unwrap())
}

const TLS: &str = "tls_server_config:\n  cert_file: cert.pem\n  key_file: key.pem\n";

/// curl's answer: (exit code, status line and headers, body).
struct Reply {
    code: i32,
    head: String,
    body: String,
}

impl Reply {
    fn status(&self) -> &str {
        self.head.lines().next().unwrap_or("")
    }
    fn header(&self, name: &str) -> Option<&str> {
        self.head.lines().find_map(|l| l.split_once(": ").filter(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v))
    }
}

fn curl(e: &Endpoint, url_path: &str, args: &[&str]) -> Reply {
    let head = e.dir.join(format!("head-{}", rand_tag()));
    let out = Command::new("curl")
        .args(["-sS", "--max-time", "10", "--cacert"])
        .arg(e.dir.join("ca.pem"))
        .arg("-D")
        .arg(&head)
        .args(args)
        .arg(url_path.replace("ADDR", &e.addr.to_string()))
        .output()
        .expect("curl (Debian package curl)");
    let reply = Reply {
        code: out.status.code().unwrap_or(-1),
        head: std::fs::read_to_string(&head).unwrap_or_default().replace('\r', ""),
        body: String::from_utf8_lossy(&out.stdout).into_owned(),
    };
    let _ = std::fs::remove_file(&head);
    reply
}

fn rand_tag() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    N.fetch_add(1, Ordering::Relaxed)
}

const METRICS: &str = "https://ADDR/metrics";
const SAMPLE: &str = "edge_ctl_policy_reloads_total{interface=\"eth0\",role=\"external\"} 3\n";
const OPENMETRICS: &str = "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,\
                           text/plain;version=0.0.4;q=0.5,*/*;q=0.1";

#[test]
fn tls_and_basic_auth() {
    let e = start("auth", Some(&format!("{TLS}{}", users())), false);
    let right = format!("{USER}:{PASSWORD}");

    let r = curl(&e, METRICS, &["-u", &right]);
    assert_eq!((r.code, r.status()), (0, "HTTP/1.1 200 OK"), "{}{}", r.head, r.body);
    assert_eq!(r.header("Content-Type"), Some("text/plain; version=0.0.4; charset=utf-8"), "{}", r.head);
    assert!(r.body.contains("# TYPE edge_ctl_policy_reloads_total counter\n") && r.body.contains(SAMPLE), "{}", r.body);
    assert!(!r.body.contains("# EOF"), "{}", r.body);

    let r = curl(&e, METRICS, &[]);
    assert_eq!(r.status(), "HTTP/1.1 401 Unauthorized", "{}", r.head);
    assert_eq!(r.header("WWW-Authenticate"), Some("Basic"), "{}", r.head);
    assert!(!r.body.contains("edge_ctl_"), "{}", r.body);

    let r = curl(&e, METRICS, &["-u", &format!("{USER}:wrong")]);
    assert_eq!(r.status(), "HTTP/1.1 401 Unauthorized", "{}", r.head);
    assert!(!r.body.contains("edge_ctl_"), "{}", r.body);
    let r = curl(&e, METRICS, &["-u", &format!("someone:{PASSWORD}")]);
    assert_eq!(r.status(), "HTTP/1.1 401 Unauthorized", "{}", r.head);

    // Every path needs the password, the ones that do not exist too.
    let r = curl(&e, "https://ADDR/other", &[]);
    assert_eq!(r.status(), "HTTP/1.1 401 Unauthorized", "{}", r.head);
    let r = curl(&e, "https://ADDR/other", &["-u", &right]);
    assert_eq!(r.status(), "HTTP/1.1 404 Not Found", "{}", r.head);

    // What Prometheus asks for.
    let r = curl(&e, METRICS, &["-u", &right, "-H", &format!("Accept: {OPENMETRICS}")]);
    assert_eq!(r.status(), "HTTP/1.1 200 OK", "{}", r.head);
    assert_eq!(
        r.header("Content-Type"),
        Some("application/openmetrics-text; version=1.0.0; charset=utf-8"),
        "{}",
        r.head
    );
    assert!(r.body.ends_with("\n# EOF\n") && r.body.contains("# TYPE edge_ctl_policy_reloads counter\n"), "{}", r.body);
    assert!(r.body.contains(SAMPLE), "{}", r.body);
}

#[test]
fn plain_http_to_the_tls_port_gets_no_metrics() {
    let e = start("plain", Some(TLS), false);
    let r = curl(&e, "https://ADDR/metrics", &[]);
    assert_eq!(r.status(), "HTTP/1.1 200 OK", "{}", r.head);
    assert!(r.body.contains(SAMPLE), "{}", r.body);
    let r = curl(&e, "http://ADDR/metrics", &[]);
    assert_ne!(r.code, 0, "plain HTTP was answered: {}{}", r.head, r.body);
    assert!(!r.body.contains("edge_ctl_"), "{}", r.body);
}

#[test]
fn client_certificates_when_required() {
    let e = start(
        "mtls",
        Some(&format!("{TLS}  client_auth_type: RequireAndVerifyClientCert\n  client_ca_file: ca.pem\n")),
        false,
    );
    let r = curl(&e, METRICS, &[]);
    assert_ne!(r.code, 0, "answered without a client certificate: {}{}", r.head, r.body);
    assert!(!r.body.contains("edge_ctl_"), "{}", r.body);
    let cert = e.dir.join("client.pem");
    let key = e.dir.join("client-key.pem");
    let r = curl(&e, METRICS, &["--cert", cert.to_str().unwrap(), "--key", key.to_str().unwrap()]);
    assert_eq!((r.code, r.status()), (0, "HTTP/1.1 200 OK"), "{}{}", r.head, r.body);
    assert!(r.body.contains(SAMPLE), "{}", r.body);
}

#[test]
fn plain_http_routes_methods_and_failures() {
    let e = start("routes", None, false);
    let r = curl(&e, "http://ADDR/metrics?x=1", &[]);
    assert_eq!(r.status(), "HTTP/1.1 200 OK", "{}", r.head);
    assert!(r.body.contains(SAMPLE), "{}", r.body);
    let length: usize = r.header("Content-Length").expect("Content-Length").parse().unwrap();
    assert_eq!(length, r.body.len());

    // HEAD: the headers of GET, no body.
    let r = curl(&e, "http://ADDR/metrics", &["-I"]);
    assert_eq!(r.status(), "HTTP/1.1 200 OK", "{}", r.head);
    assert_eq!(r.header("Content-Length").map(|l| l.parse::<usize>().unwrap()), Some(length), "{}", r.head);
    assert!(r.body.trim_start().starts_with("HTTP/1.1 200") || r.body.is_empty(), "{}", r.body);
    assert!(!r.body.contains("edge_ctl_"), "{}", r.body);

    let r = curl(&e, "http://ADDR/", &[]);
    assert_eq!(r.status(), "HTTP/1.1 200 OK", "{}", r.head);
    assert!(r.body.contains("/metrics"), "{}", r.body);
    let r = curl(&e, "http://ADDR/nothing", &[]);
    assert_eq!(r.status(), "HTTP/1.1 404 Not Found", "{}", r.head);
    let r = curl(&e, "http://ADDR/metrics", &["-X", "POST"]);
    assert_eq!(r.status(), "HTTP/1.1 405 Method Not Allowed", "{}", r.head);
    assert_eq!(r.header("Allow"), Some("GET, HEAD"), "{}", r.head);

    let e = start("fail", None, true);
    let r = curl(&e, "http://ADDR/metrics", &[]);
    assert_eq!(r.status(), "HTTP/1.1 500 Internal Server Error", "{}", r.head);
    assert_eq!(r.body, "the maps are unreadable\n");
}
