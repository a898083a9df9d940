//! The option round trip's invariant, shared by the property tests and the fuzz target
//! (`fuzz/fuzz_targets/option_round_trip.rs`): options the API's validation accepts read back
//! from the stored text exactly as given (grouped by section) with the same hash; options it
//! refuses are refused with a reason. Never a panic either way.

pub use fleet_unit::validate::grouped;
use fleet_unit::{validate_options, UnitFile, UnitOption};

/// What is wrong with how `options` are validated and stored, if anything.
pub fn check_options(options: Vec<UnitOption>) -> Result<(), String> {
    let unit = match validate_options(options.clone()) {
        Err(refused) if refused.to_string().is_empty() => {
            return Err(format!("{options:?} refused without a reason"))
        }
        Err(_) => return Ok(()),
        Ok(unit) => unit,
    };
    let text = unit.serialize();
    let back = UnitFile::parse(&text)
        .map_err(|e| format!("accepted {options:?}, but its text {text:?} does not parse: {e}"))?;
    let expected = grouped(&options);
    if back.options() != expected.as_slice() {
        return Err(format!(
            "accepted {options:?}, but its text {text:?} reads back as {:?}",
            back.options()
        ));
    }
    if back.hash() != unit.hash() {
        return Err(format!(
            "accepted {options:?}, but its text hashes otherwise"
        ));
    }
    Ok(())
}
