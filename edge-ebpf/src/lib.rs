//! Empty library target: edge-ctl's build script depends on it so cargo rebuilds the eBPF object
//! when this crate changes. The programs are in `main.rs` and its modules.
#![no_std]
