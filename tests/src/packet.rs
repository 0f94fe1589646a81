//! Frame builders for the tests: the library's (`edge-ctl explain` builds its probes with them).
pub use edge_ctl::frame::*;
