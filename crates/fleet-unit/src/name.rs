//! Unit names: fleet's validation rules (which mirror systemd's `unit_name_is_valid`), the
//! parts of template and instance names, and fleetctl's mangling of command-line arguments.

use std::fmt;

use crate::go_quote::{quote_bytes, quote_char};

/// The longest valid unit name, in bytes.
pub const NAME_MAX: usize = 256;

const UNIT_TYPES: &[&str] = &[
    "automount",
    "busname",
    "device",
    "mount",
    "path",
    "scope",
    "service",
    "slice",
    "snapshot",
    "socket",
    "swap",
    "target",
    "timer",
];
const TEMPLATE_TYPES: &[&str] = &["path", "service", "socket", "target", "timer"];
/// The suffixes fleetctl recognises; any other argument gets `.service` appended.
const RECOGNIZED_SUFFIXES: &[&str] = &[
    ".service",
    ".socket",
    ".timer",
    ".path",
    ".device",
    ".mount",
    ".automount",
];

/// Why a unit name is invalid. `Display` gives fleet's exact message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NameError {
    Empty,
    TooLong,
    NoDot,
    EndsInDot,
    /// The suffix after the last dot, as raw bytes.
    InvalidType(Vec<u8>),
    InvalidTemplateType(Vec<u8>),
    InvalidCharacter(char),
    StartsWithAt,
}

impl fmt::Display for NameError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NameError::Empty => f.write_str("unit name cannot be empty"),
            NameError::TooLong => write!(f, "unit name exceeds maximum length ({NAME_MAX})"),
            NameError::NoDot => f.write_str("unit name must contain \".\""),
            NameError::EndsInDot => f.write_str("unit name cannot end in \".\""),
            NameError::InvalidType(t) => write!(f, "invalid unit type: {}", quote_bytes(t)),
            NameError::InvalidTemplateType(t) => {
                write!(f, "invalid unit type for template: {}", quote_bytes(t))
            }
            NameError::InvalidCharacter(c) => {
                write!(f, "invalid character {} in unit name", quote_char(*c))
            }
            NameError::StartsWithAt => f.write_str("unit name cannot start in \"@\""),
        }
    }
}

impl std::error::Error for NameError {}

/// Checks a unit name as fleet's API and fleetctl do, in fleet's order, on raw bytes (a
/// percent-decoded URL path need not be UTF-8). A valid name is a single path component that
/// is neither `.` nor `..`, so it can never escape the directory it is written to.
pub fn validate_name(name: &[u8]) -> Result<(), NameError> {
    if name.is_empty() {
        return Err(NameError::Empty);
    }
    if name.len() > NAME_MAX {
        return Err(NameError::TooLong);
    }
    let Some(dot) = name.iter().rposition(|&b| b == b'.') else {
        return Err(NameError::NoDot);
    };
    let suffix = &name[dot + 1..];
    if suffix.is_empty() {
        return Err(NameError::EndsInDot);
    }
    let is_one_of = |types: &[&str]| types.iter().any(|t| t.as_bytes() == suffix);
    if !is_one_of(UNIT_TYPES) {
        return Err(NameError::InvalidType(suffix.to_vec()));
    }
    if name.contains(&b'@') && !is_one_of(TEMPLATE_TYPES) {
        return Err(NameError::InvalidTemplateType(suffix.to_vec()));
    }
    for chunk in name[..dot].utf8_chunks() {
        if let Some(c) = chunk.valid().chars().find(|&c| !is_name_char(c)) {
            return Err(NameError::InvalidCharacter(c));
        }
        if !chunk.invalid().is_empty() {
            return Err(NameError::InvalidCharacter(char::REPLACEMENT_CHARACTER));
        }
    }
    if name[0] == b'@' {
        return Err(NameError::StartsWithAt);
    }
    Ok(())
}

fn is_name_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, ':' | '_' | '.' | '\\' | '@' | '-')
}

/// A validated unit name.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct UnitName(String);

/// Tables keyed by unit name can be asked with a `&str`: the order is the string's.
impl std::borrow::Borrow<str> for UnitName {
    fn borrow(&self) -> &str {
        &self.0
    }
}

impl UnitName {
    pub fn new(name: impl Into<String>) -> Result<UnitName, NameError> {
        let name = name.into();
        validate_name(name.as_bytes())?;
        Ok(UnitName(name))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn into_string(self) -> String {
        self.0
    }

    pub fn info(&self) -> NameInfo<'_> {
        NameInfo::parse(&self.0).expect("a valid unit name contains a dot")
    }

    /// `foo@.service`
    pub fn is_template(&self) -> bool {
        self.info().is_template()
    }

    /// `foo@bar.service`
    pub fn is_instance(&self) -> bool {
        self.info().is_instance()
    }
}

impl fmt::Display for UnitName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl AsRef<str> for UnitName {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl std::str::FromStr for UnitName {
    type Err = NameError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        UnitName::new(s)
    }
}

/// The parts of a unit name (fleet's `UnitNameInfo`): for `foo@bar.service`, the name without
/// suffix is `foo@bar`, the prefix `foo`, the instance `bar` and the template `foo@.service`.
/// Works on any name with a dot, valid or not.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NameInfo<'a> {
    pub full: &'a str,
    /// Everything before the last dot (`%N`).
    pub name: &'a str,
    /// Everything after the last dot.
    pub suffix: &'a str,
    /// Before the first `@`, or the whole name when there is none (`%p`).
    pub prefix: &'a str,
    /// Between the first `@` and the last dot (`%i`).
    pub instance: &'a str,
    /// `prefix@.suffix` when the name has an `@`, else empty.
    template: Option<(&'a str, &'a str)>,
}

impl<'a> NameInfo<'a> {
    /// `None` when the name has no dot.
    pub fn parse(full: &'a str) -> Option<NameInfo<'a>> {
        let dot = full.rfind('.')?;
        let name = &full[..dot];
        let suffix = &full[dot + 1..];
        let (prefix, instance, template) = match name.find('@') {
            Some(at) => (
                &name[..at],
                &name[at + 1..],
                Some((&name[..at], &full[dot..])),
            ),
            None => (name, "", None),
        };
        Some(NameInfo {
            full,
            name,
            suffix,
            prefix,
            instance,
            template,
        })
    }

    /// The template this name is an instance of (or is), e.g. `foo@.service`; empty if none.
    pub fn template(&self) -> String {
        match self.template {
            Some((prefix, dotted_suffix)) => format!("{prefix}@{dotted_suffix}"),
            None => String::new(),
        }
    }

    pub fn is_template(&self) -> bool {
        self.template.is_some() && self.instance.is_empty()
    }

    pub fn is_instance(&self) -> bool {
        !self.instance.is_empty()
    }
}

/// Whether fleetctl takes `name` as a unit name as it is, rather than appending `.service`.
pub fn has_recognized_suffix(name: &str) -> bool {
    RECOGNIZED_SUFFIXES.iter().any(|s| name.ends_with(s))
}

/// fleetctl's mapping of a command-line argument (possibly a path to a file) to a unit name:
/// the last path element, with `.service` appended when it has no recognised unit suffix.
pub fn mangle(arg: &str) -> String {
    let base = path_base(arg);
    if has_recognized_suffix(base) {
        base.to_owned()
    } else {
        format!("{base}.service")
    }
}

/// Go's `path.Base`.
fn path_base(path: &str) -> &str {
    if path.is_empty() {
        return ".";
    }
    let trimmed = path.trim_end_matches('/');
    if trimmed.is_empty() {
        return "/";
    }
    match trimmed.rfind('/') {
        Some(slash) => &trimmed[slash + 1..],
        None => trimmed,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(arg: &str, expected: &str) {
        assert_eq!(mangle(arg), expected, "argument {arg:?}");
    }

    #[test]
    fn mangles_arguments_like_fleetctl() {
        check("hello.service", "hello.service");
        check("units/hello.service", "hello.service");
        check("/abs/dir/web@.service", "web@.service");
        check("hello", "hello.service");
        check("foo.bogus", "foo.bogus.service");
        check("dir/", "dir.service");
        check("", "..service");
        check("///", "/.service");
        check("a.timer", "a.timer");
        check("a.target", "a.target.service");
    }

    #[test]
    fn valid_names_stay_in_their_directory() {
        for name in [
            "../x.service",
            "a/b.service",
            "..",
            ".",
            "./x.service",
            "/x.service",
        ] {
            assert!(UnitName::new(name).is_err(), "{name} must be refused");
        }
        for name in ["..service", ".service"] {
            let valid = UnitName::new(name).unwrap();
            assert!(!valid.as_str().contains('/'));
            assert!(valid.as_str() != "." && valid.as_str() != "..");
        }
    }
}
