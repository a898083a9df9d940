//! Any bytes as a unit name: validation must not panic, and an accepted name must be a single
//! path component that is neither `.` nor `..`.
#![no_main]

use fleet_unit::name::{mangle, validate_name, NameInfo};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let valid = validate_name(data).is_ok();
    if let Ok(text) = std::str::from_utf8(data) {
        if valid {
            assert!(!text.contains('/') && text != "." && text != "..");
            let info = NameInfo::parse(text).expect("a valid name has a dot");
            let _ = info.template();
        }
        let _ = mangle(text);
    }
});
