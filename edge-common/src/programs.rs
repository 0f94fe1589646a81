//! Names of the programs in the eBPF object.

/// The ingress filter.
pub const XDP_FILTER: &str = "edge_xdp";
/// An XDP program that passes everything: the floor of the benchmark harness.
pub const XDP_FLOOR: &str = "edge_xdp_floor";
/// A stateless port matrix (ports only, one lookup, no counters): the benchmark's reference
/// for what any parse-and-lookup program costs on the same harness.
pub const XDP_MATRIX: &str = "edge_xdp_matrix";
/// The egress filter and flow recorder (TC).
pub const TC_EGRESS: &str = "edge_tc_egress";
/// Dry runs of the ingress and egress logic for `edge-ctl explain`: same code, no counters,
/// no connection-table writes, no events; the decision goes to [`super::maps::EXPLAIN`].
pub const EXPLAIN_IN: &str = "edge_explain_in";
pub const EXPLAIN_OUT: &str = "edge_explain_out";
