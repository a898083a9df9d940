//! A unit's environment: `Environment=` assignments and `EnvironmentFile=` files, read as
//! systemd reads them.

use std::collections::BTreeMap;

use super::command::{split_plain_words, CommandError};

/// Whether `name` can be an environment variable name (systemd's rule: not empty, no `=`,
/// no control characters, does not start with a digit).
pub fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && !name.starts_with(|c: char| c.is_ascii_digit())
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// Variables read from an `Environment=` value or a file, with what was wrong and skipped.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Assignments {
    pub values: Vec<(String, String)>,
    pub warnings: Vec<String>,
}

/// Parses one `Environment=` value: space-separated `NAME=value` words, quotes and escapes as
/// in command lines. Returns the assignments and, for each word that is not one, a warning
/// (systemd ignores those too).
pub fn parse_environment(value: &str) -> Result<Assignments, CommandError> {
    let mut assignments = Vec::new();
    let mut warnings = Vec::new();
    for word in split_plain_words(value)? {
        match word.split_once('=') {
            Some((name, value)) if valid_name(name) => {
                assignments.push((name.to_owned(), value.to_owned()));
            }
            _ => warnings.push(format!("invalid environment assignment {word:?}, ignored")),
        }
    }
    Ok(Assignments {
        values: assignments,
        warnings,
    })
}

/// Parses an environment file: `NAME=value` lines; blank lines and lines starting with `#` or
/// `;` are skipped; values may be single- or double-quoted; a backslash escapes the next
/// character, and at the end of a line continues the value on the next.
pub fn parse_env_file(contents: &str) -> Assignments {
    let mut assignments = Vec::new();
    let mut warnings = Vec::new();
    let mut lines = contents.lines().enumerate();
    while let Some((index, line)) = lines.next() {
        let trimmed = line.trim_start();
        if trimmed.is_empty() || trimmed.starts_with('#') || trimmed.starts_with(';') {
            continue;
        }
        let Some((name, raw)) = trimmed.split_once('=') else {
            warnings.push(format!("line {}: not NAME=value, ignored", index + 1));
            continue;
        };
        let name = name.trim();
        if !valid_name(name) {
            warnings.push(format!(
                "line {}: invalid variable name {name:?}, ignored",
                index + 1
            ));
            continue;
        }
        let mut raw = raw.trim_start().to_owned();
        // A value ending in an unescaped backslash (or inside an open quote) goes on.
        while needs_continuation(&raw) {
            match lines.next() {
                Some((_, next)) => {
                    if raw.ends_with('\\') && !in_quote(&raw) {
                        raw.pop();
                    } else {
                        raw.push('\n');
                    }
                    raw.push_str(next);
                }
                None => break,
            }
        }
        assignments.push((name.to_owned(), unquote_value(&raw)));
    }
    Assignments {
        values: assignments,
        warnings,
    }
}

fn in_quote(raw: &str) -> bool {
    let mut quote = None;
    let mut escaped = false;
    for c in raw.chars() {
        match (quote, c, escaped) {
            (_, _, true) => escaped = false,
            (Some('\''), '\'', _) => quote = None,
            (Some('\''), _, _) => {}
            (_, '\\', _) => escaped = true,
            (None, '"' | '\'', _) => quote = Some(c),
            (Some(q), c, _) if c == q => quote = None,
            _ => {}
        }
    }
    quote.is_some()
}

fn needs_continuation(raw: &str) -> bool {
    if in_quote(raw) {
        return true;
    }
    let trailing = raw.chars().rev().take_while(|c| *c == '\\').count();
    trailing % 2 == 1
}

/// Removes quotes and escapes; unquoted trailing whitespace is dropped.
fn unquote_value(raw: &str) -> String {
    let mut out = String::new();
    let mut chars = raw.chars().peekable();
    let mut quote = None;
    let mut pending_space = String::new();
    while let Some(c) = chars.next() {
        match (quote, c) {
            (Some('\''), '\'') => quote = None,
            (Some('\''), c) => out.push(c),
            (Some('"'), '"') => quote = None,
            (Some('"'), '\\') => match chars.next() {
                Some(e @ ('"' | '\\' | '`' | '$')) => out.push(e),
                Some('\n') | None => {}
                Some(other) => {
                    out.push('\\');
                    out.push(other);
                }
            },
            (Some(_), c) => out.push(c),
            (None, '"' | '\'') => {
                out.push_str(&std::mem::take(&mut pending_space));
                quote = Some(c);
            }
            (None, '\\') => {
                out.push_str(&std::mem::take(&mut pending_space));
                if let Some(next) = chars.next() {
                    out.push(next);
                }
            }
            (None, c) if c.is_whitespace() => pending_space.push(c),
            (None, c) => {
                out.push_str(&std::mem::take(&mut pending_space));
                out.push(c);
            }
        }
    }
    out
}

/// Adds `assignments` to `environment`, later ones winning.
pub fn apply(environment: &mut BTreeMap<String, String>, assignments: &[(String, String)]) {
    for (name, value) in assignments {
        environment.insert(name.clone(), value.clone());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs(list: &[(String, String)]) -> Vec<String> {
        list.iter().map(|(k, v)| format!("{k}={v}")).collect()
    }

    fn check_assignments(value: &str, expected: &[&str], warnings: usize) {
        let Assignments {
            values: assignments,
            warnings: found,
        } = parse_environment(value).unwrap();
        assert_eq!(pairs(&assignments), expected, "{value}");
        assert_eq!(found.len(), warnings, "{value}: {found:?}");
    }

    #[test]
    fn environment_assignments() {
        check_assignments("A=1 B=2", &["A=1", "B=2"], 0);
        check_assignments(
            "\"VAR1=word1 word2\" VAR2=word3 \"VAR3=$word 5 6\"",
            &["VAR1=word1 word2", "VAR2=word3", "VAR3=$word 5 6"],
            0,
        );
        check_assignments("EMPTY= X==y", &["EMPTY=", "X==y"], 0);
        check_assignments("noequals 1A=x =v OK=1", &["OK=1"], 3);
        assert!(parse_environment("A=\"open").is_err());
    }

    fn check_file(contents: &str, expected: &[&str], warnings: usize) {
        let Assignments {
            values: assignments,
            warnings: found,
        } = parse_env_file(contents);
        assert_eq!(pairs(&assignments), expected, "{contents:?}");
        assert_eq!(found.len(), warnings, "{contents:?}: {found:?}");
    }

    #[test]
    fn environment_files() {
        check_file("A=1\nB = 2 \n", &["A=1", "B=2"], 0);
        check_file("# comment\n; also\n\nC=x y  \n", &["C=x y"], 0);
        check_file(
            "D=\"quoted  value \" \nE='single $x \\n'\n",
            &["D=quoted  value ", "E=single $x \\n"],
            0,
        );
        check_file("F=\"a\\\"b\\\\c\"\n", &["F=a\"b\\c"], 0);
        check_file(
            "G=one\\\ntwo\nH=\"multi\nline\"\n",
            &["G=onetwo", "H=multi\nline"],
            0,
        );
        check_file("I=a\\ b\n", &["I=a b"], 0);
        check_file("junk\n1X=2\nOK=1\n", &["OK=1"], 2);
        check_file(
            "COREOS_PUBLIC_IPV4=10.0.0.1\nCOREOS_PRIVATE_IPV4=192.168.0.1\n",
            &[
                "COREOS_PUBLIC_IPV4=10.0.0.1",
                "COREOS_PRIVATE_IPV4=192.168.0.1",
            ],
            0,
        );
    }
}
