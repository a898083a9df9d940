//! A unit file as fleet sees it: an ordered list of options, its canonical serialization and
//! the hash of that serialization.

use std::collections::BTreeMap;
use std::fmt;

use crate::hash::UnitHash;
use crate::parse::{self, Parsed, Problem, Severity};

/// One `Name=Value` line of a unit file, with the section it is in.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct UnitOption {
    pub section: String,
    pub name: String,
    pub value: String,
}

impl UnitOption {
    pub fn new(
        section: impl Into<String>,
        name: impl Into<String>,
        value: impl Into<String>,
    ) -> Self {
        UnitOption {
            section: section.into(),
            name: name.into(),
            value: value.into(),
        }
    }
}

/// A unit file: its options in file order. Two unit files are the same unit when their
/// serializations, and so their hashes, are equal.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UnitFile {
    options: Vec<UnitOption>,
}

/// Why a text is not a valid unit file: every error found, in file order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseError {
    pub problems: Vec<Problem>,
}

impl ParseError {
    /// The first error's message without its line number: the text fleet 1.0 reported.
    pub fn message(&self) -> String {
        self.problems
            .iter()
            .find(|p| p.severity == Severity::Error)
            .map(|p| p.kind.to_string())
            .unwrap_or_default()
    }
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut errors = self
            .problems
            .iter()
            .filter(|p| p.severity == Severity::Error);
        if let Some(first) = errors.next() {
            write!(f, "line {}: {}", first.line, first.kind)?;
        }
        for more in errors {
            write!(f, "; line {}: {}", more.line, more.kind)?;
        }
        Ok(())
    }
}

impl std::error::Error for ParseError {}

impl UnitFile {
    /// Parses unit-file text; fails with every error found. Warnings are dropped: use
    /// [`parse::parse`] to see them.
    pub fn parse(text: impl AsRef<[u8]>) -> Result<UnitFile, ParseError> {
        let Parsed {
            options, problems, ..
        } = parse::parse(text.as_ref());
        let errors: Vec<Problem> = problems
            .into_iter()
            .filter(|p| p.severity == Severity::Error)
            .collect();
        if errors.is_empty() {
            Ok(UnitFile { options })
        } else {
            Err(ParseError { problems: errors })
        }
    }

    pub fn from_options(options: Vec<UnitOption>) -> UnitFile {
        UnitFile { options }
    }

    pub fn options(&self) -> &[UnitOption] {
        &self.options
    }

    pub fn into_options(self) -> Vec<UnitOption> {
        self.options
    }

    /// The canonical text: options grouped by section in order of each section's first
    /// appearance, a blank line between sections, none at the end. This is what fleet stores,
    /// what `fleetctl cat` prints and what agents write to disk.
    pub fn serialize(&self) -> String {
        let mut sections: Vec<(&str, Vec<&UnitOption>)> = Vec::new();
        for option in &self.options {
            match sections
                .iter_mut()
                .find(|(name, _)| *name == option.section)
            {
                Some((_, options)) => options.push(option),
                None => sections.push((&option.section, vec![option])),
            }
        }
        let mut out = String::new();
        for (index, (section, options)) in sections.iter().enumerate() {
            if index > 0 {
                out.push('\n');
            }
            out.push('[');
            out.push_str(section);
            out.push_str("]\n");
            for option in options {
                out.push_str(&option.name);
                out.push('=');
                out.push_str(&option.value);
                out.push('\n');
            }
        }
        out
    }

    /// SHA-1 of the serialization: fleet's unit hash.
    pub fn hash(&self) -> UnitHash {
        UnitHash::of(self.serialize().as_bytes())
    }

    /// The first `Description=` of the `[Unit]` section.
    pub fn description(&self) -> Option<&str> {
        self.values("Unit", "Description").next()
    }

    /// The values of every option `name` in `section`, in file order.
    pub fn values<'a>(&'a self, section: &'a str, name: &'a str) -> impl Iterator<Item = &'a str> {
        self.options
            .iter()
            .filter(move |o| o.section == section && o.name == name)
            .map(|o| o.value.as_str())
    }

    /// Whether the unit has a section of that name (with at least one option).
    pub fn has_section(&self, section: &str) -> bool {
        self.options.iter().any(|o| o.section == section)
    }

    /// Section -> option name -> values. In `[X-Fleet]`, a value that starts and ends with `"`
    /// holds several values (`MachineMetadata="a=1" "b=2"`) and is split, as fleet does.
    pub fn contents(&self) -> BTreeMap<String, BTreeMap<String, Vec<String>>> {
        let mut contents: BTreeMap<String, BTreeMap<String, Vec<String>>> = BTreeMap::new();
        for option in &self.options {
            let values = contents
                .entry(option.section.clone())
                .or_default()
                .entry(option.name.clone())
                .or_default();
            if option.section == crate::requirements::XFLEET_SECTION {
                values.extend(split_multivalue(&option.value));
            } else {
                values.push(option.value.clone());
            }
        }
        contents
    }
}

/// fleet's `parseMultivalueLine`, applied only to values wrapped in double quotes: quotes are
/// dropped, and each space outside quotes ends a value (so two spaces make an empty value).
pub(crate) fn split_multivalue(value: &str) -> Vec<String> {
    let quoted = value.starts_with('"') && value.ends_with('"');
    if !quoted {
        return vec![value.to_owned()];
    }
    let mut values = Vec::new();
    let mut current = String::new();
    let mut in_quotes = false;
    for c in value.chars() {
        match c {
            '"' => in_quotes = !in_quotes,
            ' ' if !in_quotes => values.push(std::mem::take(&mut current)),
            _ => current.push(c),
        }
    }
    values.push(current);
    values
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(value: &str, expected: &[&str]) {
        assert_eq!(split_multivalue(value), expected, "value {value:?}");
    }

    #[test]
    fn multivalue_split() {
        check(r#""a b" "c""#, &["a b", "c"]);
        check(r#""a"  "b""#, &["a", "", "b"]);
        check(r#"""#, &[""]);
        check(r#""only-start"#, &[r#""only-start"#]);
        check("plain value", &["plain value"]);
    }

    #[test]
    fn serialization_groups_sections_in_first_seen_order() {
        let unit = UnitFile::from_options(vec![
            UnitOption::new("B", "x", "1"),
            UnitOption::new("A", "y", "2"),
            UnitOption::new("B", "z", "3"),
        ]);
        assert_eq!(unit.serialize(), "[B]\nx=1\nz=3\n\n[A]\ny=2\n");
        assert_eq!(UnitFile::default().serialize(), "");
        assert_eq!(
            UnitFile::default().hash().to_string(),
            "da39a3ee5e6b4b0d3255bfef95601890afd80709"
        );
    }
}
