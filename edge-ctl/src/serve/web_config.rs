//! `--web.config.file`: TLS and basic authentication for the metrics endpoint, in the YAML format
//! of Prometheus' exporter-toolkit (node_exporter's flag of the same name), so one file and one
//! habit serve every exporter on a host. The subset edge-ctl supports is `tls_server_config`
//! (`cert_file`, `key_file`, `client_auth_type`, `client_ca_file`, `min_version`) and
//! `basic_auth_users`; any other key is an error rather than silently ignored, since an ignored
//! security setting is one the admin believes is in force.
//!
//! Everything is read and checked when `serve` starts, before anything is attached: a
//! certificate that does not parse, a key that does not match it or a malformed bcrypt hash stop
//! the daemon instead of surfacing at the first scrape.

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use anyhow::{Context, Result, anyhow, bail};
use base64::Engine;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use serde::Deserialize;

/// The file as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct WebConfigFile {
    tls_server_config: Option<TlsFile>,
    basic_auth_users: Option<BTreeMap<String, String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TlsFile {
    cert_file: PathBuf,
    key_file: PathBuf,
    client_auth_type: Option<String>,
    client_ca_file: Option<PathBuf>,
    min_version: Option<String>,
}

/// The endpoint's security, ready to use.
#[derive(Clone, Debug, Default)]
pub struct WebConfig {
    /// Serve HTTPS only, with this configuration.
    pub tls: Option<Arc<rustls::ServerConfig>>,
    /// Require one of these users on every request.
    pub users: Option<Arc<BasicAuth>>,
}

impl WebConfig {
    /// The URL scheme the endpoint answers on.
    pub fn scheme(&self) -> &'static str {
        if self.tls.is_some() { "https" } else { "http" }
    }
}

/// Reads and checks the web configuration file, and every file it names.
pub fn load(path: &Path) -> Result<WebConfig> {
    let shown = path.display();
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read the web configuration {shown} (--web.config.file)"))?;
    trusted(path, "web configuration")?;
    // exporter-toolkit's relative paths are taken from the file's directory.
    let dir = path.parent().unwrap_or(Path::new("."));
    parse(&text, dir).with_context(|| format!("web configuration {shown}"))
}

/// Parses the YAML text; relative file names are taken from `dir`.
pub fn parse(text: &str, dir: &Path) -> Result<WebConfig> {
    // An empty file means no TLS and no authentication, as in exporter-toolkit.
    let file: WebConfigFile = if text.trim().is_empty() {
        WebConfigFile::default()
    } else {
        serde_yaml_ng::from_str(text).map_err(|e| {
            anyhow!(
                "{e}; edge-ctl supports tls_server_config (cert_file, key_file, client_auth_type, \
                 client_ca_file, min_version) and basic_auth_users: remove or correct the key \
                 (docs/operations.md, \"Web configuration\")"
            )
        })?
    };
    let tls = match file.tls_server_config {
        Some(t) => Some(Arc::new(tls_config(&t, dir)?)),
        None => None,
    };
    let users = match file.basic_auth_users {
        Some(users) if !users.is_empty() => Some(Arc::new(BasicAuth::new(users)?)),
        _ => None,
    };
    Ok(WebConfig { tls, users })
}

/// A file the configuration names, read only if it can be trusted.
fn named_file(dir: &Path, name: &Path, key: &str) -> Result<PathBuf> {
    let path = dir.join(name);
    if !path.is_file() {
        bail!("tls_server_config.{key}: {} does not exist or is not a file; fix the path", path.display());
    }
    trusted(&path, &format!("tls_server_config.{key}"))?;
    Ok(path)
}

/// The trust rule of policy files (crate::trust) for the files that decide who reads the
/// metrics: whoever can write them can let themselves in or impersonate the endpoint.
fn trusted(path: &Path, what: &str) -> Result<()> {
    crate::trust::check(path, what).map_err(|u| {
        anyhow!(
            "{} {} is not safe: {}, so another user could open the metrics endpoint to \
             themselves; fix it with `{}`",
            u.what,
            u.file,
            u.problem,
            u.fix
        )
    })
}

/// rustls with *ring*: aws-lc-rs, rustls' default, needs cmake and a C toolchain to build. ring
/// lacks the post-quantum key exchange (rustls deprecates its provider for that): acceptable for
/// counters that say which rules matched, read by a scraper on the management network.
#[allow(deprecated)]
fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn tls_config(t: &TlsFile, dir: &Path) -> Result<rustls::ServerConfig> {
    let provider = provider();
    let versions: &[&rustls::SupportedProtocolVersion] = match t.min_version.as_deref() {
        None | Some("TLS12") => &[&rustls::version::TLS13, &rustls::version::TLS12],
        Some("TLS13") => &[&rustls::version::TLS13],
        Some(v @ ("TLS10" | "TLS11")) => {
            bail!(
                "tls_server_config.min_version: {v} is not supported (TLS 1.0 and 1.1 are obsolete); use TLS12 or TLS13"
            )
        }
        Some(v) => bail!("tls_server_config.min_version: unknown version {v:?}; use TLS12 or TLS13"),
    };
    let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(versions)
        .context("the TLS provider does not support these TLS versions")?;

    let verify = match t.client_auth_type.as_deref() {
        None | Some("NoClientCert") => None,
        Some("VerifyClientCertIfGiven") => Some(false),
        Some("RequireAndVerifyClientCert") => Some(true),
        Some(v @ ("RequestClientCert" | "RequireAnyClientCert")) => bail!(
            "tls_server_config.client_auth_type: {v} is not supported (it accepts client \
             certificates nobody verifies); use RequireAndVerifyClientCert or \
             VerifyClientCertIfGiven with client_ca_file"
        ),
        Some(v) => bail!(
            "tls_server_config.client_auth_type: unknown value {v:?}; use NoClientCert, \
             VerifyClientCertIfGiven or RequireAndVerifyClientCert"
        ),
    };
    let builder = match (verify, &t.client_ca_file) {
        (None, None) => builder.with_no_client_auth(),
        (None, Some(_)) => bail!(
            "tls_server_config.client_ca_file is set but client certificates are not verified; \
             set client_auth_type: RequireAndVerifyClientCert (or VerifyClientCertIfGiven), or \
             remove client_ca_file"
        ),
        (Some(_), None) => bail!(
            "tls_server_config.client_auth_type {} needs client_ca_file, the CA certificates \
             client certificates must chain to",
            t.client_auth_type.as_deref().unwrap_or_default()
        ),
        (Some(required), Some(ca)) => {
            let ca = named_file(dir, ca, "client_ca_file")?;
            let mut roots = rustls::RootCertStore::empty();
            for cert in certificates(&ca, "client_ca_file")? {
                roots
                    .add(cert)
                    .with_context(|| format!("tls_server_config.client_ca_file {}: unusable CA", ca.display()))?;
            }
            let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider);
            let verifier = if required { verifier } else { verifier.allow_unauthenticated() };
            builder.with_client_cert_verifier(
                verifier.build().with_context(|| format!("tls_server_config.client_ca_file {}", ca.display()))?,
            )
        }
    };

    let cert = named_file(dir, &t.cert_file, "cert_file")?;
    let key = named_file(dir, &t.key_file, "key_file")?;
    let chain = certificates(&cert, "cert_file")?;
    let key_der = PrivateKeyDer::from_pem_file(&key).map_err(|e| {
        anyhow!("tls_server_config.key_file {}: no usable private key ({e}); give a PEM private key", key.display())
    })?;
    let mut config = builder.with_single_cert(chain, key_der).map_err(|e| {
        anyhow!(
            "tls_server_config: the key {} does not go with the certificate {} ({e}); give the \
             key the certificate was issued for",
            key.display(),
            cert.display()
        )
    })?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

/// The PEM certificates of a file; at least one.
fn certificates(path: &Path, key: &str) -> Result<Vec<CertificateDer<'static>>> {
    let bad = |e: &dyn std::fmt::Display| {
        anyhow!("tls_server_config.{key} {}: unreadable certificate ({e}); give PEM certificates", path.display())
    };
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| bad(&e))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| bad(&e))?;
    if certs.is_empty() {
        return Err(bad(&"no CERTIFICATE block"));
    }
    Ok(certs)
}

/// `basic_auth_users`: user -> bcrypt hash of the password.
#[derive(Debug)]
pub struct BasicAuth {
    users: BTreeMap<String, String>,
    /// SHA-256 of Authorization headers that bcrypt accepted: bcrypt is slow on purpose (tens of
    /// milliseconds at the usual cost), and a scraper sends the same header every 15 s.
    accepted: Mutex<HashSet<[u8; 32]>>,
}

/// Past this many remembered headers the cache starts again, so wrong guesses cannot grow it
/// (only accepted headers are kept, but a user's password may change between restarts of the
/// scraper, not of this process).
const ACCEPTED_CACHE: usize = 64;

impl BasicAuth {
    /// Checks each hash's form now, so a malformed one stops the daemon at start.
    pub fn new(users: BTreeMap<String, String>) -> Result<BasicAuth> {
        for (user, hash) in &users {
            hash.parse::<bcrypt::HashParts>().map_err(|e| {
                anyhow!(
                    "basic_auth_users.{user}: not a bcrypt hash ({e}); make one with \
                     `htpasswd -nBC 10 \"\" | tr -d ':\\n'` and paste it"
                )
            })?;
        }
        Ok(BasicAuth { users, accepted: Mutex::new(HashSet::new()) })
    }

    /// Whether an `Authorization` header value names a user with the right password. Runs bcrypt:
    /// call it off the async threads.
    pub fn check(&self, header: Option<&[u8]>) -> bool {
        let Some(header) = header else { return false };
        let digest: [u8; 32] = {
            use sha2::Digest;
            sha2::Sha256::digest(header).into()
        };
        if self.accepted.lock().expect("auth cache").contains(&digest) {
            return true;
        }
        let Some((user, password)) = parse_basic(header) else { return false };
        let ok = match self.users.get(&user) {
            Some(hash) => bcrypt::verify(&password, hash).unwrap_or(false),
            None => {
                // An unknown user costs as much as a wrong password, so the time taken does not
                // tell which users exist.
                if let Some(hash) = self.users.values().next() {
                    let _ = bcrypt::verify(&password, hash);
                }
                false
            }
        };
        if ok {
            let mut accepted = self.accepted.lock().expect("auth cache");
            if accepted.len() >= ACCEPTED_CACHE {
                accepted.clear();
            }
            accepted.insert(digest);
        }
        ok
    }
}

/// `Basic base64(user:password)` -> (user, password).
fn parse_basic(header: &[u8]) -> Option<(String, String)> {
    let header = std::str::from_utf8(header).ok()?.trim();
    let (scheme, encoded) = header.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = base64::engine::general_purpose::STANDARD.decode(encoded.trim()).ok()?;
    let decoded = String::from_utf8(decoded).ok()?;
    let (user, password) = decoded.split_once(':')?;
    Some((user.to_string(), password.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A fresh directory (0755) under the system's temporary directory, removed when dropped.
    struct Dir(PathBuf);
    impl Dir {
        fn new(tag: &str) -> Dir {
            use std::os::unix::fs::PermissionsExt;
            let d = std::env::temp_dir().join(format!("edge-webcfg-{}-{tag}", std::process::id()));
            let _ = std::fs::remove_dir_all(&d);
            std::fs::create_dir(&d).unwrap();
            std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o755)).unwrap();
            Dir(d)
        }
        fn write(&self, name: &str, text: &str, mode: u32) -> PathBuf {
            use std::os::unix::fs::PermissionsExt;
            let f = self.0.join(name);
            std::fs::write(&f, text).unwrap();
            std::fs::set_permissions(&f, std::fs::Permissions::from_mode(mode)).unwrap();
            f
        }
        /// A self-signed certificate and its key, as cert.pem and key.pem.
        fn cert(&self) {
            let key = rcgen::KeyPair::generate().unwrap();
            let cert = rcgen::CertificateParams::new(vec!["localhost".to_string()]).unwrap().self_signed(&key).unwrap();
            self.write("cert.pem", &cert.pem(), 0o644);
            self.write("key.pem", &key.serialize_pem(), 0o600);
        }
    }
    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn err(d: &Dir, yaml: &str) -> String {
        let f = d.write("web.yml", yaml, 0o644);
        format!("{:#}", load(&f).expect_err("must be refused"))
    }

    #[test]
    fn tls_with_relative_paths_and_users_loads() {
        let d = Dir::new("ok");
        d.cert();
        let hash = bcrypt::hash("pw", 4).unwrap();
        let f = d.write(
            "web.yml",
            &format!(
                "tls_server_config:\n  cert_file: cert.pem\n  key_file: key.pem\n  min_version: TLS13\n\
                 basic_auth_users:\n  prometheus: {hash}\n"
            ),
            0o644,
        );
        let c = load(&f).unwrap();
        assert_eq!(c.scheme(), "https");
        assert!(c.users.is_some());
        let empty = load(&d.write("empty.yml", "", 0o644)).unwrap();
        assert!(empty.tls.is_none() && empty.users.is_none());
    }

    #[test]
    fn unknown_keys_are_named() {
        let d = Dir::new("keys");
        d.cert();
        let e = err(&d, "tls_server_config:\n  cert_file: cert.pem\n  key_file: key.pem\n  max_version: TLS13\n");
        assert!(e.contains("unknown field `max_version`") && e.contains("remove or correct the key"), "{e}");
        let e = err(&d, "http_server_config:\n  http2: false\n");
        assert!(e.contains("unknown field `http_server_config`"), "{e}");
    }

    #[test]
    fn missing_or_bad_tls_files_are_refused() {
        let d = Dir::new("files");
        let e = err(&d, "tls_server_config:\n  cert_file: cert.pem\n  key_file: key.pem\n");
        assert!(e.contains("tls_server_config.cert_file") && e.contains("cert.pem does not exist"), "{e}");
        d.write("cert.pem", "not a certificate\n", 0o644);
        d.write("key.pem", "", 0o600);
        let e = err(&d, "tls_server_config:\n  cert_file: cert.pem\n  key_file: key.pem\n");
        assert!(e.contains("unreadable certificate"), "{e}");
        // A key that belongs to another certificate.
        d.cert();
        let other = rcgen::KeyPair::generate().unwrap();
        d.write("key.pem", &other.serialize_pem(), 0o600);
        let e = err(&d, "tls_server_config:\n  cert_file: cert.pem\n  key_file: key.pem\n");
        assert!(e.contains("does not go with the certificate"), "{e}");
        let e = err(&d, "tls_server_config:\n  cert_file: cert.pem\n  key_file: key.pem\n  min_version: TLS11\n");
        assert!(e.contains("TLS11 is not supported"), "{e}");
    }

    #[test]
    fn client_auth_needs_a_ca_and_a_ca_needs_client_auth() {
        let d = Dir::new("client");
        d.cert();
        let base = "tls_server_config:\n  cert_file: cert.pem\n  key_file: key.pem\n";
        let e = err(&d, &format!("{base}  client_auth_type: RequireAndVerifyClientCert\n"));
        assert!(e.contains("needs client_ca_file"), "{e}");
        let e = err(&d, &format!("{base}  client_ca_file: cert.pem\n"));
        assert!(e.contains("not verified"), "{e}");
        let e = err(&d, &format!("{base}  client_auth_type: RequireAnyClientCert\n"));
        assert!(e.contains("RequireAnyClientCert is not supported"), "{e}");
        let f = d.write(
            "web.yml",
            &format!("{base}  client_auth_type: RequireAndVerifyClientCert\n  client_ca_file: cert.pem\n"),
            0o644,
        );
        load(&f).unwrap();
    }

    #[test]
    fn bad_hash_and_writable_file_are_refused() {
        let d = Dir::new("hash");
        let e = err(&d, "basic_auth_users:\n  prometheus: secret\n");
        assert!(e.contains("basic_auth_users.prometheus: not a bcrypt hash"), "{e}");
        let e = err(&d, "basic_auth_users:\n  prometheus: [1]\n");
        assert!(e.contains("basic_auth_users"), "{e}");
        let f = d.write("open.yml", "", 0o666);
        let e = format!("{:#}", load(&f).unwrap_err());
        assert!(e.contains("is writable by its group and all users") && e.contains("chmod go-w"), "{e}");
    }

    #[test]
    fn basic_auth_accepts_only_the_right_password() {
        let hash = bcrypt::hash("s3cret:x", 4).unwrap();
        let auth = BasicAuth::new([("prometheus".to_string(), hash)].into()).unwrap();
        let header = |user: &str, pw: &str| {
            format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(format!("{user}:{pw}")))
        };
        // The password may contain a colon; the user name cannot.
        assert!(auth.check(Some(header("prometheus", "s3cret:x").as_bytes())));
        // Remembered, and still right.
        assert!(auth.check(Some(header("prometheus", "s3cret:x").as_bytes())));
        assert!(auth.check(Some(header("prometheus", "s3cret:x").replace("Basic", "basic").as_bytes())));
        assert!(!auth.check(Some(header("prometheus", "wrong").as_bytes())));
        assert!(!auth.check(Some(header("nobody", "s3cret:x").as_bytes())));
        assert!(!auth.check(Some(b"Bearer abc")));
        assert!(!auth.check(Some(b"Basic !!!")));
        assert!(!auth.check(None));
    }
}
