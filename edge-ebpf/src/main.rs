//! edge-ctl's kernel programs.
//!
//! One module per concern: `parse` (bounded header parsing), `policy` (rule classification),
//! `conntrack` (flows the edge opened), `fragments` (later fragments follow their first),
//! `counters` (per-CPU statistics), `events` (rate-limited
//! drop events), `maps` (the pinned maps), `programs` (the entry points that
//! wire them together).
//!
//! The programs only exist for the BPF target; a host build (e.g. `cargo clippy --workspace`)
//! sees an empty binary. `cargo xtask lint` checks this crate for the BPF target.
#![cfg_attr(target_arch = "bpf", no_std)]
#![cfg_attr(target_arch = "bpf", no_main)]
// Atomic add on a shared map value (conntrack gauge).
#![cfg_attr(target_arch = "bpf", feature(core_intrinsics))]
#![cfg_attr(target_arch = "bpf", allow(internal_features))]
// Index masks the compiler must keep (see `bounds`).
#![cfg_attr(target_arch = "bpf", feature(asm_experimental_arch))]

#[cfg(target_arch = "bpf")]
mod bounds;
#[cfg(target_arch = "bpf")]
mod conntrack;
#[cfg(target_arch = "bpf")]
mod counters;
#[cfg(target_arch = "bpf")]
mod events;
#[cfg(target_arch = "bpf")]
mod fragments;
#[cfg(target_arch = "bpf")]
mod maps;
#[cfg(target_arch = "bpf")]
mod parse;
#[cfg(target_arch = "bpf")]
mod policy;
#[cfg(target_arch = "bpf")]
mod programs;

#[cfg(not(target_arch = "bpf"))]
fn main() {}
