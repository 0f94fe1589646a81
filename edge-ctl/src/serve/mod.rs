//! `edge-ctl serve`: a daemon that keeps the configured interfaces filtered by their policy
//! files, hot-swaps a policy when its file changes, serves Prometheus metrics, and forwards the
//! kernel programs' log records. Stopping it leaves the filters attached and counting: they
//! are pinned and never depended on the daemon.
//!
//! config (TOML) -> apply (attach / reload / adopt) -> watch (poll, debounce, apply)
//!                                                  -> metrics (stats -> text) -> http

pub mod apply;
pub mod config;
pub mod http;
pub mod metrics;
pub mod watch;
pub mod web_config;

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use log::{debug, error, info, warn};
use tokio::signal::unix::{SignalKind, signal};

use apply::Applied;
use config::{Config, InterfaceConfig};
use metrics::{InterfaceSample, ReloadCounts};
use watch::{Debouncer, FileWatch, Link, Observation};

use crate::dataplane;

/// What the watcher looks at for one interface: its policy file and the interface itself.
type Watched = (Observation, Link);

/// The configuration `serve` reads when given none.
pub const DEFAULT_CONFIG: &str = "/etc/edge-ctl/serve.toml";
/// Where metrics are served by default: loopback only.
pub const DEFAULT_METRICS: &str = "127.0.0.1:9469";

#[derive(clap::Args, Debug)]
pub struct ServeArgs {
    /// Configuration file (TOML) listing the interfaces to manage.
    #[arg(long, value_name = "FILE", default_value = DEFAULT_CONFIG)]
    pub config: PathBuf,
    /// Address and port of the Prometheus endpoint (/metrics). The default listens on loopback
    /// only; use e.g. 0.0.0.0:9469 to let a remote Prometheus scrape it.
    #[arg(long, value_name = "ADDR", default_value = DEFAULT_METRICS)]
    pub metrics: SocketAddr,
    /// At start, how long to wait for configured interfaces that do not exist yet (a driver
    /// still loading at boot) before telling systemd the daemon is ready, which lets the network
    /// come up. An interface that appears later is attached then.
    #[arg(long, value_name = "SECONDS", default_value_t = 15)]
    pub wait_for_interfaces: u64,
    /// TLS and basic authentication for the metrics endpoint: a YAML file in the format of
    /// Prometheus' exporter-toolkit (node_exporter's flag of the same name), with
    /// tls_server_config (cert_file, key_file, client_auth_type, client_ca_file, min_version) and
    /// basic_auth_users (user: bcrypt hash). Checked at start; without it, plain HTTP and no
    /// authentication.
    #[arg(long = "web.config.file", value_name = "FILE")]
    pub web_config_file: Option<PathBuf>,
}

/// Runs the daemon until SIGTERM or SIGINT.
pub fn run(args: ServeArgs) -> Result<()> {
    let config = config::load(&args.config)?;
    let web = match &args.web_config_file {
        Some(path) => web_config::load(path)?,
        None => web_config::WebConfig::default(),
    };
    dataplane::system::require_privileges()?;
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the tokio runtime")?
        .block_on(daemon(config, args.metrics, web, Duration::from_secs(args.wait_for_interfaces)))
}

/// What the daemon keeps between scrapes.
struct Daemon {
    config: Config,
    reloads: Mutex<HashMap<String, ReloadCounts>>,
    /// Programs whose log records are being forwarded.
    forwarded: Mutex<HashSet<u32>>,
    /// Configured interfaces that did not exist when last looked at.
    absent: Mutex<HashSet<String>>,
}

impl Daemon {
    fn count(&self, iface: &str, ok: bool) {
        let mut all = self.reloads.lock().expect("reload counters");
        let c = all.entry(iface.to_string()).or_default();
        if ok {
            c.successes += 1;
        } else {
            c.failures += 1;
        }
    }
}

async fn daemon(config: Config, addr: SocketAddr, web: web_config::WebConfig, wait: Duration) -> Result<()> {
    // Installed first, so a signal during start-up is not fatal but ends the daemon after it.
    let mut term = signal(SignalKind::terminate()).context("cannot handle SIGTERM")?;
    let mut int = signal(SignalKind::interrupt()).context("cannot handle SIGINT")?;
    let listener = listen(addr).with_context(|| {
        format!(
            "cannot listen on {addr} for metrics (is another `edge-ctl serve` running? choose \
             another address with --metrics ADDR)"
        )
    })?;
    let daemon = Arc::new(Daemon {
        reloads: Mutex::new(config.interfaces.iter().map(|i| (i.name.clone(), ReloadCounts::default())).collect()),
        config,
        forwarded: Mutex::new(HashSet::new()),
        absent: Mutex::new(HashSet::new()),
    });
    info!("managing {} interface(s) from {}", daemon.config.interfaces.len(), daemon.config.origin);
    let mut watches = Vec::new();
    for iface in &daemon.config.interfaces {
        let mut file = FileWatch::new(&iface.policy);
        let seen = (file.poll(), Link::of(&iface.name));
        // After a transient failure nothing is settled: the watcher tries again shortly.
        let settled = apply_and_log(&daemon, iface).await.then_some(seen);
        watches.push((file, Debouncer::new(watch::QUIET_PERIOD, settled)));
    }
    forward_kernel_logs(&daemon);

    let scraper = daemon.clone();
    let scheme = web.scheme();
    let server = tokio::spawn(http::serve(listener, web, move |format| {
        let d = scraper.clone();
        async move {
            tokio::task::spawn_blocking(move || collect(&d).map(|s| metrics::render(s, format)))
                .await
                .map_err(|e| e.to_string())?
                .map_err(|e| format!("{e:#}"))
        }
    }));
    info!("serving metrics on {scheme}://{addr}/metrics");
    let watcher = tokio::spawn(watch_policies(daemon.clone(), watches));

    // Ready once every configured interface that exists has its filter (or its failure
    // logged): under systemd (Type=notify, Before=network-pre.target) the network comes up only
    // then. Interfaces still missing are waited for a while, then attached whenever they appear.
    let ready = async {
        let deadline = Instant::now() + wait;
        loop {
            let absent: Vec<String> = daemon.absent.lock().expect("absent interfaces").iter().cloned().collect();
            if absent.is_empty() {
                break;
            }
            // An interface that appeared is being attached (loading the programs may take a
            // while): its outcome is waited for. The deadline is for those still missing.
            let missing: Vec<&String> =
                absent.iter().filter(|n| dataplane::system::if_index(n.as_str()).is_err()).collect();
            if Instant::now() >= deadline && !missing.is_empty() {
                let absent: Vec<String> = missing.into_iter().cloned().collect();
                warn!(
                    "{} did not appear within {} s: ready without; each is attached when it appears, \
                     and is not filtered until then",
                    absent.join(", "),
                    wait.as_secs()
                );
                break;
            }
            tokio::time::sleep(watch::POLL_INTERVAL).await;
        }
        notify_ready(&daemon);
        std::future::pending::<()>().await
    };
    let name = tokio::select! {
        _ = term.recv() => "SIGTERM",
        _ = int.recv() => "SIGINT",
        _ = ready => unreachable!("readiness never ends"),
    };
    let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Stopping]);
    info!("{name}: stopping; the filters stay attached and counting");
    server.abort();
    watcher.abort();
    // A reload in progress runs on a blocking thread: the runtime waits for it as it shuts
    // down, so it is never cut short (and a reload is atomic even if it were).
    Ok(())
}

/// The metrics listener. IP_FREEBIND: at boot the daemon starts before the network gives the
/// interfaces their addresses, so `--metrics 192.0.2.10:9469` must bind an address that does
/// not exist yet (as `ip_nonlocal_bind` would allow for every socket of the machine).
fn listen(addr: SocketAddr) -> std::io::Result<tokio::net::TcpListener> {
    let socket = match addr {
        SocketAddr::V4(_) => tokio::net::TcpSocket::new_v4()?,
        SocketAddr::V6(_) => tokio::net::TcpSocket::new_v6()?,
    };
    socket.set_reuseaddr(true)?;
    // IP_FREEBIND covers IPv6 sockets as well (one flag of the inet socket).
    nix::sys::socket::setsockopt(&socket, nix::sys::socket::sockopt::IpFreebind, &true)
        .map_err(std::io::Error::from)?;
    socket.bind(addr)?;
    socket.listen(128)
}

/// Applies one interface's policy file, logs what happened and counts it. False when the
/// failure may pass by itself and the file should be tried again.
async fn apply_and_log(daemon: &Arc<Daemon>, iface: &InterfaceConfig) -> bool {
    let job = iface.clone();
    let result = tokio::task::spawn_blocking(move || apply::apply(&job))
        .await
        .unwrap_or_else(|e| Err(anyhow::anyhow!("the apply task failed: {e}")));
    let name = &iface.name;
    if !matches!(result, Ok(Applied::Absent)) {
        daemon.absent.lock().expect("absent interfaces").remove(name);
    }
    let policy = iface.policy.display();
    match result {
        Ok(Applied::Attached(r)) => {
            daemon.count(name, true);
            info!(
                "{name}: attached as {} ({} XDP, {} egress, program {}), policy {policy}, {} rules",
                iface.role, r.mode, r.egress, r.program_id, r.rules
            );
            if let Some(why) = r.fallback {
                info!("{name}: {why}");
            }
            forward_kernel_logs(daemon);
        }
        Ok(Applied::Reloaded(r)) => {
            daemon.count(name, true);
            info!(
                "{name}: reloaded {policy} (sha256 {}) for addresses [{}], generation {} live: {} \
                 added, {} changed, {} removed, {} unchanged",
                &r.policy_hash[..16],
                r.interface_addresses.iter().map(|a| a.to_string()).collect::<Vec<_>>().join(", "),
                r.generation,
                r.added.len(),
                r.changed.len(),
                r.removed.len(),
                r.unchanged
            );
            for n in &r.notes {
                warn!("{name}: {n}");
            }
        }
        Ok(Applied::Absent) => {
            if daemon.absent.lock().expect("absent interfaces").insert(name.clone()) {
                warn!("{name}: no such interface (yet): not filtered; attached when it appears");
            }
            return true;
        }
        Ok(Applied::Unchanged { generation }) => {
            info!(
                "{name}: adopted, the live policy (generation {}) already is {policy}",
                generation.map_or("?".into(), |g| g.to_string())
            );
        }
        Err(e) => {
            let transient = apply::is_transient(&e);
            let stays = match is_attached(name).await {
                true => "the live policy stays",
                false => "the interface stays unfiltered",
            };
            // Logged before it is counted: whoever sees the failure metric finds the reason.
            error!("{name}: policy {policy} not applied, {stays}:\n{e:#}");
            if !transient {
                daemon.count(name, false);
            }
            return !transient;
        }
    }
    true
}

/// Tells systemd (Type=notify) that the configured interfaces are filtered; nothing without
/// $NOTIFY_SOCKET.
fn notify_ready(daemon: &Daemon) {
    let absent = daemon.absent.lock().expect("absent interfaces").len();
    let status = format!(
        "{} configured interface(s), {} present",
        daemon.config.interfaces.len(),
        daemon.config.interfaces.len() - absent
    );
    info!("ready: {status}");
    if let Err(e) = sd_notify::notify(false, &[sd_notify::NotifyState::Ready, sd_notify::NotifyState::Status(&status)])
    {
        warn!("cannot tell systemd the daemon is ready: {e}");
    }
}

async fn is_attached(ifname: &str) -> bool {
    let ifname = ifname.to_string();
    tokio::task::spawn_blocking(move || dataplane::status().is_ok_and(|l| l.iter().any(|s| s.interface == ifname)))
        .await
        .unwrap_or(false)
}

/// Polls every policy file and interface, and applies a policy once its file or its
/// interface (appeared, replaced, addresses changed) has changed and settled.
async fn watch_policies(daemon: Arc<Daemon>, mut watches: Vec<(FileWatch, Debouncer<Watched>)>) {
    let mut tick = tokio::time::interval(watch::POLL_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        for (iface, (file, debouncer)) in daemon.config.interfaces.iter().zip(&mut watches) {
            let seen = (file.poll(), Link::of(&iface.name));
            if !debouncer.observe(&seen, Instant::now()) {
                continue;
            }
            match &seen.0 {
                _ if debouncer.settled().is_some_and(|(f, _)| *f == seen.0) => {
                    let link = &seen.1;
                    match link.index {
                        None => info!("{}: the interface is gone", iface.name),
                        Some(i) => info!(
                            "{}: interface index {i}, addresses [{}]",
                            iface.name,
                            link.addresses.iter().map(|a| a.to_string()).collect::<Vec<_>>().join(", ")
                        ),
                    }
                }
                Observation::Unreadable(why) => info!("{}: policy file {}: {why}", iface.name, iface.policy.display()),
                Observation::Content(..) => info!("{}: policy file {} changed", iface.name, iface.policy.display()),
            }
            if apply_and_log(&daemon, iface).await {
                debouncer.settle(seen);
            } else {
                debouncer.retry_later(Instant::now());
            }
        }
    }
}

/// Reads every counter for a scrape: all attached interfaces of this namespace, plus the
/// configured ones that are not attached.
fn collect(daemon: &Daemon) -> Result<Vec<InterfaceSample>> {
    let reloads = daemon.reloads.lock().expect("reload counters").clone();
    let mut out = Vec::new();
    for s in dataplane::status()? {
        let stats = match dataplane::stats(Some(&s.interface)) {
            Ok(mut v) => v.pop(),
            Err(e) => {
                warn!("{}: counters unreadable: {e}", s.interface);
                None
            }
        };
        let Some(role) = s.role.or(stats.as_ref().map(|st| st.role)) else {
            warn!("{}: attached, but its role is unknown: {:?}", s.interface, s.problem);
            continue;
        };
        out.push(InterfaceSample {
            reloads: reloads.get(&s.interface).copied(),
            interface: s.interface,
            role,
            attached: true,
            stats,
            loaded_at: s.policy_loaded_at,
        });
    }
    for iface in &daemon.config.interfaces {
        if !out.iter().any(|s| s.interface == iface.name) {
            out.push(InterfaceSample {
                interface: iface.name.clone(),
                role: iface.role,
                attached: false,
                stats: None,
                loaded_at: None,
                reloads: reloads.get(&iface.name).copied(),
            });
        }
    }
    Ok(out)
}

/// Forwards the aya-log records of every attached program not forwarded yet to this process's
/// logger. Programs built without aya-log have no log map: that is noted at debug level.
fn forward_kernel_logs(daemon: &Daemon) {
    let Ok(list) = dataplane::status() else {
        return;
    };
    let mut forwarded = daemon.forwarded.lock().expect("forwarded programs");
    for s in list {
        let Some(id) = s.program_id else { continue };
        if !forwarded.insert(id) {
            continue;
        }
        match aya_log::EbpfLogger::init_from_id(id) {
            // SAFETY: the logger owns its ring buffer's fd, which stays open as long as the
            // logger, and as_raw_fd always returns that fd.
            Ok(logger) => {
                match unsafe { tokio::io::unix::AsyncFd::register_with_interest(logger, tokio::io::Interest::READABLE) }
                    .map_err(std::io::Error::from)
                {
                    Ok(fd) => {
                        info!("{}: forwarding log records of program {id}", s.interface);
                        tokio::spawn(forward(fd));
                    }
                    Err(e) => warn!("{}: cannot poll the log of program {id}: {e}", s.interface),
                }
            }
            Err(e) => debug!("{}: program {id} has no log records to forward ({e})", s.interface),
        }
    }
}

async fn forward<T: log::Log>(mut fd: tokio::io::unix::AsyncFd<aya_log::EbpfLogger<T>>) {
    loop {
        match fd.readable_mut().await {
            Ok(mut guard) => {
                guard.get_inner_mut().flush();
                guard.clear_ready();
            }
            Err(e) => {
                warn!("kernel log forwarding stopped: {e}");
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    /// The metrics endpoint can be bound to an address no interface has yet (at boot).
    #[test]
    fn the_metrics_listener_binds_an_address_not_configured_yet() {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(async {
            for addr in ["192.0.2.234:0", "[2001:db8::234]:0"] {
                let l = super::listen(addr.parse().unwrap()).unwrap_or_else(|e| panic!("{addr}: {e}"));
                assert_eq!(l.local_addr().unwrap().ip(), addr.parse::<std::net::SocketAddr>().unwrap().ip());
            }
        });
    }
}
