//! Any bytes: the parser must not panic, and whatever it accepts must serialize to text that
//! parses back to a unit with the same serialization, and must validate or fail cleanly.
#![no_main]

use fleet_unit::requirements::Requirements;
use fleet_unit::{validate_options, UnitFile};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let parsed = fleet_unit::parse::parse(data);
    for problem in &parsed.problems {
        let _ = problem.to_string();
    }
    let Ok(unit) = UnitFile::parse(data) else { return };
    let text = unit.serialize();
    if let Ok(again) = UnitFile::parse(&text) {
        // A value ending in a bare backslash at end of input gains a newline once (as in
        // fleet); after that the serialization is a fixed point.
        let text2 = again.serialize();
        let third = UnitFile::parse(&text2).expect("a re-serialization parses");
        assert_eq!(third.serialize(), text2);
    }
    let requirements = Requirements::for_unit(&unit, "fuzz@1.service");
    let _ = requirements.constraints();
    let _ = requirements.unknown_keys();
    let _ = validate_options(unit.into_options());
});
