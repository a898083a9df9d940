//! Options from arbitrary bytes (fields split at 0xFF, which UTF-8 never holds; three fields
//! an option) must be refused with a reason or read back exactly: the invariant the property
//! test `crates/fleet-unit/tests/roundtrip.rs` checks on generated options.
#![no_main]

#[path = "../../crates/fleet-unit/tests/invariants/mod.rs"]
mod invariants;

use fleet_unit::UnitOption;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let fields: Vec<String> = data
        .split(|b| *b == 0xff)
        .map(|field| String::from_utf8_lossy(field).into_owned())
        .collect();
    let options = fields
        .chunks_exact(3)
        .map(|f| UnitOption::new(f[0].clone(), f[1].clone(), f[2].clone()))
        .collect();
    if let Err(finding) = invariants::check_options(options) {
        panic!("{finding}");
    }
});
