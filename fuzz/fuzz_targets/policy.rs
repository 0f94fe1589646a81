//! Any bytes through the policy parser, the validator, the table compiler for both roles, the
//! checks of `policy check`, `policy show` and the reference model: nothing may panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    edge_ctl::fuzzing::policy_pipeline(data);
});
