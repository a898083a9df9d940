//! The unit-file lexer, with go-systemd's semantics as fleet 1.0 used them.
//!
//! The rules (all pinned by `testdata/golden/unit-parse.jsonl`):
//! - Before the first section header, characters are skipped one at a time: any `[` starts a
//!   section, any `#`/`;` starts a comment, everything else is ignored (we warn about it).
//! - A section name is everything up to the next `]`, verbatim (not trimmed, may span lines);
//!   anything but whitespace after the `]` on that line is an error.
//! - Inside a section, whitespace is skipped, `#`/`;` starts a comment line, `[` a section, and
//!   anything else an option `Name=Value`. Names and values are trimmed (Unicode whitespace).
//! - A value line ending in `\` continues onto the next line; the backslash and the newline are
//!   kept verbatim. A blank line ends the value and leaves a trailing newline in it. Comment
//!   lines inside a continuation are part of the value.
//! - Only `\n` ends a line; a `\r` before it stays in the line (and is trimmed off values), so
//!   CRLF files parse, but a CRLF after a continuation backslash does not continue.
//!
//! Deliberate differences from fleet 1.0 (see `docs/compatibility.md`):
//! - Every line of 2048 bytes or more is rejected. fleet only noticed such a line when it
//!   happened to sit at a certain offset of its 4096-byte read buffer.
//! - A comment line ending in `\` is just a comment. fleet let it swallow the next line, even a
//!   section header; systemd does not.
//! - Input that is not UTF-8, or that holds a NUL byte, is refused. systemd would read such a
//!   file differently from the text fleet stored (it drops invalid assignments and ends lines
//!   at NUL), so the unit would not run as submitted.
//! - The garbage-after-section message quotes the text instead of printing raw byte values, and
//!   running out of input inside an option name says so instead of a bare `EOF`.

use std::fmt;

use crate::go_quote::quote_str;
use crate::unit_file::UnitOption;

/// systemd's LINE_MAX: a line this long or longer would be truncated by systemd.
pub const LINE_MAX: usize = 2048;

/// The result of lexing a unit file: every option that could be read, and every problem found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Parsed {
    pub options: Vec<UnitOption>,
    /// Line number (1-based) where each option starts, parallel to `options`.
    pub option_lines: Vec<usize>,
    /// Problems in file order. Any `Severity::Error` means the text is not a valid unit file.
    pub problems: Vec<Problem>,
}

impl Parsed {
    pub fn errors(&self) -> impl Iterator<Item = &Problem> {
        self.problems
            .iter()
            .filter(|p| p.severity == Severity::Error)
    }

    pub fn has_errors(&self) -> bool {
        self.errors().next().is_some()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Severity {
    Error,
    Warning,
}

impl Severity {
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Error => "error",
            Severity::Warning => "warning",
        }
    }
}

/// One problem in a unit file, with the (1-based) line it was found on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub line: usize,
    pub severity: Severity,
    pub kind: ProblemKind,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProblemKind {
    NotUtf8,
    NulByte,
    LineTooLong,
    UnterminatedSection,
    GarbageAfterSection { section: String, garbage: String },
    NewlineInOptionName,
    EndOfFileInOptionName,
    TextOutsideSection,
}

impl fmt::Display for ProblemKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ProblemKind::NotUtf8 => f.write_str("unit file is not valid UTF-8"),
            ProblemKind::NulByte => f.write_str("unit file contains a NUL byte"),
            ProblemKind::LineTooLong => write!(f, "line too long (max {LINE_MAX} bytes)"),
            ProblemKind::UnterminatedSection => f.write_str("unable to find end of section"),
            ProblemKind::GarbageAfterSection { section, garbage } => write!(
                f,
                "found garbage after section name {}: {}",
                quote_str(section),
                quote_str(garbage)
            ),
            ProblemKind::NewlineInOptionName => {
                f.write_str("unexpected newline encountered while parsing option name")
            }
            ProblemKind::EndOfFileInOptionName => {
                f.write_str("unexpected end of file encountered while parsing option name")
            }
            ProblemKind::TextOutsideSection => {
                f.write_str("text outside of any section is ignored")
            }
        }
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "line {}: {}: {}",
            self.line,
            self.severity.as_str(),
            self.kind
        )
    }
}

/// Lexes unit-file bytes. Never fails and never panics: problems are reported in the result.
pub fn parse(input: &[u8]) -> Parsed {
    let text = match std::str::from_utf8(input) {
        Ok(text) => text,
        Err(e) => {
            let line = line_of(&input[..e.valid_up_to()]);
            return Parsed {
                problems: vec![error(line, ProblemKind::NotUtf8)],
                ..Parsed::default()
            };
        }
    };
    let mut problems = whole_line_problems(text);
    let mut lexer = Lexer {
        text,
        pos: 0,
        line: 1,
        section: None,
        parsed: Parsed::default(),
    };
    lexer.run();
    let mut parsed = lexer.parsed;
    problems.append(&mut parsed.problems);
    // Stable: on the same line, the whole-line problem (found first) stays first.
    problems.sort_by_key(|p| p.line);
    parsed.problems = problems;
    parsed
}

fn error(line: usize, kind: ProblemKind) -> Problem {
    Problem {
        line,
        severity: Severity::Error,
        kind,
    }
}

fn line_of(prefix: &[u8]) -> usize {
    1 + prefix.iter().filter(|&&b| b == b'\n').count()
}

/// Problems that are about a physical line as a whole: its length and NUL bytes.
fn whole_line_problems(text: &str) -> Vec<Problem> {
    let mut problems = Vec::new();
    for (index, line) in text.split('\n').enumerate() {
        // systemd also ends a line at `\r`, so a long run between two `\r` is a long line too.
        if line.split('\r').any(|run| run.len() >= LINE_MAX) {
            problems.push(error(index + 1, ProblemKind::LineTooLong));
        }
        if line.contains('\0') {
            problems.push(error(index + 1, ProblemKind::NulByte));
        }
    }
    problems
}

fn is_comment_start(c: char) -> bool {
    c == '#' || c == ';'
}

struct Lexer<'a> {
    text: &'a str,
    pos: usize,
    line: usize,
    section: Option<String>,
    parsed: Parsed,
}

impl<'a> Lexer<'a> {
    fn run(&mut self) {
        let mut warned_line = 0;
        // Before the first section header.
        while self.section.is_none() {
            let Some(c) = self.next_char() else { return };
            if c == '[' {
                if !self.section_header() {
                    return;
                }
            } else if is_comment_start(c) {
                self.rest_of_line();
            } else if !c.is_whitespace() && warned_line != self.line {
                warned_line = self.line;
                self.warn(ProblemKind::TextOutsideSection);
            }
        }
        // Inside sections.
        while let Some(c) = self.next_char() {
            if c.is_whitespace() {
                continue;
            }
            if c == '[' {
                if !self.section_header() {
                    return;
                }
            } else if is_comment_start(c) {
                self.rest_of_line();
            } else {
                self.pos -= c.len_utf8();
                if !self.option() {
                    return;
                }
            }
        }
    }

    fn next_char(&mut self) -> Option<char> {
        let c = self.text[self.pos..].chars().next()?;
        self.pos += c.len_utf8();
        if c == '\n' {
            self.line += 1;
        }
        Some(c)
    }

    /// Reads up to and including the next `\n`, returning the line without it and whether the
    /// input ended first. Like go-systemd's `toEOL`, a `\r` is only stripped when no `\n` follows.
    fn rest_of_line(&mut self) -> (&'a str, bool) {
        let rest = &self.text[self.pos..];
        match rest.find('\n') {
            Some(end) => {
                self.pos += end + 1;
                self.line += 1;
                (&rest[..end], false)
            }
            None => {
                self.pos = self.text.len();
                (rest.strip_suffix('\r').unwrap_or(rest), true)
            }
        }
    }

    fn fail(&mut self, kind: ProblemKind) {
        self.parsed.problems.push(error(self.line, kind));
    }

    fn warn(&mut self, kind: ProblemKind) {
        self.parsed.problems.push(Problem {
            line: self.line,
            severity: Severity::Warning,
            kind,
        });
    }

    /// Called after a `[`. Returns false when the rest of the input cannot be lexed.
    fn section_header(&mut self) -> bool {
        let rest = &self.text[self.pos..];
        let Some(end) = rest.find(']') else {
            self.fail(ProblemKind::UnterminatedSection);
            self.pos = self.text.len();
            return false;
        };
        let name = &rest[..end];
        self.pos += end + 1;
        let header_line = self.line;
        self.line += name.matches('\n').count();
        let (suffix, _) = self.rest_of_line();
        let garbage = suffix.trim();
        if !garbage.is_empty() {
            self.parsed.problems.push(error(
                header_line,
                ProblemKind::GarbageAfterSection {
                    section: name.to_owned(),
                    garbage: garbage.to_owned(),
                },
            ));
        }
        self.section = Some(name.to_owned());
        true
    }

    /// Lexes `Name=Value`. Returns false when the rest of the input cannot be lexed.
    fn option(&mut self) -> bool {
        let start_line = self.line;
        let rest = &self.text[self.pos..];
        let Some(end) = rest.find(['=', '\n', '\r']) else {
            self.pos = self.text.len();
            self.fail(ProblemKind::EndOfFileInOptionName);
            return false;
        };
        if rest.as_bytes()[end] != b'=' {
            self.fail(ProblemKind::NewlineInOptionName);
            self.pos += end;
            self.rest_of_line();
            return true;
        }
        let name = rest[..end].trim().to_owned();
        self.pos += end + 1;

        let mut value = String::new();
        loop {
            let (line, eof) = self.rest_of_line();
            if line.trim().is_empty() {
                break;
            }
            value.push_str(line);
            if !line.ends_with('\\') {
                break;
            }
            if !eof {
                value.push('\n');
            }
        }
        // A value that ends in a newline came from a continuation followed by a blank line or
        // the end of input: the newline is part of the value.
        let value = if value.ends_with('\n') {
            format!("{}\n", value.trim())
        } else {
            value.trim().to_owned()
        };
        let section = self.section.clone().unwrap_or_default();
        self.parsed.options.push(UnitOption {
            section,
            name,
            value,
        });
        self.parsed.option_lines.push(start_line);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Renders a parse as one line per option and per problem, for compact expectations.
    fn check(input: &str, expected: &[&str]) {
        let parsed = parse(input.as_bytes());
        let mut got: Vec<String> = parsed
            .options
            .iter()
            .zip(&parsed.option_lines)
            .map(|(o, line)| format!("{line}: [{}] {}={:?}", o.section, o.name, o.value))
            .collect();
        got.extend(parsed.problems.iter().map(|p| p.to_string()));
        assert_eq!(got, expected, "input: {input:?}");
    }

    #[test]
    fn reports_every_problem_with_its_line() {
        check(
            "[Unit]\nA=1\nbogus\n[Service]x\nB=2\nC",
            &[
                "2: [Unit] A=\"1\"",
                "5: [Service] B=\"2\"",
                "line 3: error: unexpected newline encountered while parsing option name",
                "line 4: error: found garbage after section name \"Service\": \"x\"",
                "line 6: error: unexpected end of file encountered while parsing option name",
            ],
        );
    }

    #[test]
    fn long_lines_are_errors_wherever_they_are() {
        let long = "a".repeat(LINE_MAX);
        check(
            &format!("[Unit]\nA=1\n# {long}\nB=2\n"),
            &[
                "2: [Unit] A=\"1\"",
                "4: [Unit] B=\"2\"",
                "line 3: error: line too long (max 2048 bytes)",
            ],
        );
        check(
            &format!("[Unit]\nA={}\n", &long[..LINE_MAX - 3]),
            &[&format!("2: [Unit] A={:?}", &long[..LINE_MAX - 3])],
        );
    }

    #[test]
    fn comment_ending_in_backslash_does_not_continue() {
        check("[Unit]\n# comment \\\nA=b\n", &["3: [Unit] A=\"b\""]);
    }

    #[test]
    fn text_before_first_section_is_a_warning() {
        check(
            "junk\n[Unit]\nA=1\n",
            &[
                "3: [Unit] A=\"1\"",
                "line 1: warning: text outside of any section is ignored",
            ],
        );
    }

    #[test]
    fn rejects_nul_and_invalid_utf8_with_line() {
        check(
            "[Unit]\nA=\0\n",
            &[
                "2: [Unit] A=\"\\0\"",
                "line 2: error: unit file contains a NUL byte",
            ],
        );
        let parsed = parse(b"[Unit]\nA=1\nB=\xff\n");
        assert_eq!(parsed.problems, vec![error(3, ProblemKind::NotUtf8)]);
        assert!(parsed.options.is_empty());
    }

    #[test]
    fn huge_inputs_are_linear_and_bounded() {
        let line = "a".repeat(1 << 20);
        let parsed = parse(format!("[Unit]\nA={line}\n").as_bytes());
        assert_eq!(parsed.errors().count(), 1);
        let many = "[Service]\nExecStart=/bin/true\n".repeat(300_000);
        let parsed = parse(many.as_bytes());
        assert!(!parsed.has_errors());
        assert_eq!(parsed.options.len(), 300_000);
    }
}
