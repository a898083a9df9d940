//! The API's validation of a submitted unit (fleet's `ValidateOptions`): the options must
//! survive a serialize/parse round trip unchanged, and their `[X-Fleet]` requirements must be
//! satisfiable. fleet only checked that the text parsed again; but a unit is stored as its
//! text and read back by it, so an option that comes back different (a section name with
//! `]` and a line break in it, a line break in a value, a value ending in a backslash) would
//! be a record whose contents no longer match its hash: a poisoned registry.

use std::fmt;

use crate::requirements::{validate_requirements, RequirementsError};
use crate::unit_file::{ParseError, UnitFile, UnitOption};

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InvalidUnit {
    /// The serialized options do not parse back (a line too long, a bad section name, ...).
    RoundTrip(ParseError),
    /// An option that would not read back as it was given, and why.
    NotStorable {
        option: UnitOption,
        why: String,
    },
    Requirements(RequirementsError),
}

impl fmt::Display for InvalidUnit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            InvalidUnit::RoundTrip(e) => f.write_str(&e.message()),
            InvalidUnit::NotStorable { option, why } => write!(
                f,
                "option {:?} in section {:?} cannot be stored in a unit file: {why}",
                option.name, option.section
            ),
            InvalidUnit::Requirements(e) => e.fmt(f),
        }
    }
}

impl std::error::Error for InvalidUnit {}

/// Validates options as fleet's API does before storing a unit.
pub fn validate_options(options: Vec<UnitOption>) -> Result<UnitFile, InvalidUnit> {
    if let Some((option, why)) = options.iter().find_map(|o| not_storable(o).map(|w| (o, w))) {
        return Err(InvalidUnit::NotStorable {
            option: option.clone(),
            why: why.to_owned(),
        });
    }
    let unit = UnitFile::from_options(options);
    let read_back = UnitFile::parse(unit.serialize()).map_err(InvalidUnit::RoundTrip)?;
    if read_back.hash() != unit.hash() {
        // Whatever slipped past the checks above: the first option that reads back otherwise.
        let given = grouped(unit.options());
        let back = read_back.options();
        let option = given
            .iter()
            .enumerate()
            .find(|(i, given)| back.get(*i) != Some(given))
            .map_or_else(|| given[0].clone(), |(_, given)| given.clone());
        return Err(InvalidUnit::NotStorable {
            option,
            why: "it does not read back as it was given".to_owned(),
        });
    }
    validate_requirements(&unit).map_err(InvalidUnit::Requirements)?;
    Ok(unit)
}

/// Why `option` cannot be written as a line of a unit file and read back the same, if so.
fn not_storable(option: &UnitOption) -> Option<&'static str> {
    let breaks = |text: &str| text.contains(['\n', '\r']);
    if breaks(&option.section) || option.section.contains([']', '[']) {
        return Some("a section name cannot contain a line break, \"[\" or \"]\"");
    }
    if option.section.trim() != option.section || option.section.is_empty() {
        return Some("a section name cannot be empty or start or end with a space");
    }
    if breaks(&option.name) || option.name.contains('=') {
        return Some("a name cannot contain a line break or \"=\"");
    }
    if option.name.trim() != option.name || option.name.is_empty() {
        return Some("a name cannot be empty or start or end with a space");
    }
    if option.name.starts_with(['#', ';', '[']) {
        return Some("a name cannot start with \"#\", \";\" or \"[\" (the line would be a comment or a section)");
    }
    // A line break is only kept as a continuation: a backslash right before it.
    let value = &option.value;
    let bare_break = value
        .char_indices()
        .any(|(i, c)| (c == '\n' && !value[..i].ends_with('\\')) || c == '\r');
    if bare_break {
        return Some("a line break in a value must follow a backslash (a continued line)");
    }
    if value.ends_with('\\') {
        return Some("a value cannot end with a backslash (it would continue onto the next line)");
    }
    if value.trim() != value {
        return Some("a value cannot start or end with a space or tab");
    }
    None
}

/// Options in the order a parse gives them back: grouped by section, in order of first
/// appearance (as `serialize` writes them).
pub fn grouped(options: &[UnitOption]) -> Vec<UnitOption> {
    let mut sections: Vec<&str> = Vec::new();
    for option in options {
        if !sections.contains(&option.section.as_str()) {
            sections.push(&option.section);
        }
    }
    sections
        .iter()
        .flat_map(|s| options.iter().filter(move |o| o.section == *s).cloned())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Validates one option `[section] name=value` beside a plain ExecStart=; `refused` is a
    /// part of the message expected, or `None` when it is stored.
    fn check(section: &str, name: &str, value: &str, refused: Option<&str>) {
        let options = vec![
            UnitOption::new("Service", "ExecStart", "/bin/true"),
            UnitOption::new(section, name, value),
        ];
        match (validate_options(options), refused) {
            (Ok(unit), None) => {
                let read_back = UnitFile::parse(unit.serialize()).unwrap();
                assert_eq!(
                    read_back.hash(),
                    unit.hash(),
                    "{section:?} {name:?} {value:?}"
                );
            }
            (Err(e), Some(part)) => {
                let message = e.to_string();
                assert!(message.contains(part), "{message:?} lacks {part:?}");
                assert!(
                    message.contains(&format!("{name:?}")),
                    "{message:?} names no option"
                );
            }
            (verdict, expected) => panic!(
                "[{section:?}] {name:?}={value:?}: {verdict:?}, expected refused: {expected:?}"
            ),
        }
    }

    #[test]
    fn options_that_would_not_read_back_are_refused_naming_the_option() {
        check("Unit", "Description", "web", None);
        check("Service", "ExecStart", "/bin/sh -c 'a \\\n  b'", None);
        check("X-Fleet", "MachineMetadata", "a=b", None);
        // The poisoned registry of the adversarial run: a section that opens another.
        check(
            "Unit]\n[Service",
            "ExecStart",
            "/bin/true",
            Some("section name"),
        );
        check("Unit]", "Description", "x", Some("section name"));
        check(" Unit", "Description", "x", Some("section name"));
        check(
            "Service",
            "ExecStart\nExecStop",
            "/bin/true",
            Some("line break"),
        );
        check("Service", "Exec=Start", "/bin/true", Some("\"=\""));
        check("Service", "", "/bin/true", Some("empty"));
        check("Service", "#ExecStart", "/bin/true", Some("comment"));
        check("Service", "ExecStart ", "/bin/true", Some("space"));
        check("Unit", "Description", "one\ntwo=three", Some("line break"));
        check("Unit", "Description", "one\rtwo", Some("line break"));
        check("Unit", "Description", "swallows\\", Some("backslash"));
        check("Unit", "Description", " padded", Some("space"));
        check("Unit", "Description", "padded\t", Some("space"));
    }
}
