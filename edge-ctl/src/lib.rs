//! edge-ctl: the controller of an XDP/TC packet filter for Lync Server 2013 / Skype for Business
//! Edge Servers.
//!
//! The data flow, one module per arrow:
//! `policy` (TOML -> validated model) -> `compile` (model -> lookup tables) -> `dataplane`
//! (tables -> pinned BPF maps, attach, counters). `serve` runs that as a daemon: policy files
//! watched and hot-swapped, counters served as Prometheus metrics. `reference` states the
//! policy semantics once as plain code; tests hold the kernel program against it.

pub mod analysis;
pub mod cli;
pub mod compile;
pub mod dataplane;
pub mod frame;
pub mod fuzzing;
pub mod policy;
pub mod profile;
pub mod reference;
pub mod serve;
pub mod session;
pub mod show;
pub mod tomlkeys;
pub mod trust;

/// SHA-256 of some bytes, in hex: identifies policies (`status`, `serve`) and the embedded
/// eBPF object (`upgrade`).
pub fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(bytes).iter().map(|b| format!("{b:02x}")).collect()
}
