//! The API's validation of a submitted unit (fleet's `ValidateOptions`): the options must
//! survive a serialize/parse round trip, and their `[X-Fleet]` requirements must be satisfiable.

use std::fmt;

use crate::requirements::{validate_requirements, RequirementsError};
use crate::unit_file::{ParseError, UnitFile, UnitOption};

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InvalidUnit {
    /// The serialized options do not parse back (a line too long, a bad section name, ...).
    RoundTrip(ParseError),
    Requirements(RequirementsError),
}

impl fmt::Display for InvalidUnit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            InvalidUnit::RoundTrip(e) => f.write_str(&e.message()),
            InvalidUnit::Requirements(e) => e.fmt(f),
        }
    }
}

impl std::error::Error for InvalidUnit {}

/// Validates options as fleet's API does before storing a unit.
pub fn validate_options(options: Vec<UnitOption>) -> Result<UnitFile, InvalidUnit> {
    let unit = UnitFile::from_options(options);
    UnitFile::parse(unit.serialize()).map_err(InvalidUnit::RoundTrip)?;
    validate_requirements(&unit).map_err(InvalidUnit::Requirements)?;
    Ok(unit)
}
