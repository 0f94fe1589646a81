//! Test support for edge-ctl's privileged tests: a network-namespace lab that cleans up after
//! itself, socket probes that run inside namespaces, hand-built frames, and the kernel program
//! loaded for BPF_PROG_TEST_RUN. Everything here needs root.

pub mod bpf;
pub mod compare;
pub mod lab;
pub mod lync;
pub mod net;
pub mod packet;
pub mod scale;
