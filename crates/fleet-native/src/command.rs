//! `Exec*=` command lines as systemd reads them (`systemd.service(5)`, "Command lines"):
//! prefixes `-@:+!`, words split on whitespace with quotes and C escapes, several commands
//! separated by a lone `;`, and at run time `${VAR}` (one word) and `$VAR` (split into words).

use std::collections::BTreeMap;
use std::fmt;

/// One command of an `Exec*=` line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecCommand {
    /// The program, as written (absolute, or searched in the default PATH at start).
    pub path: String,
    /// The argument vector, `argv[0]` included.
    pub argv: Vec<String>,
    /// `-`: a failure is logged and ignored.
    pub ignore_failure: bool,
    /// `:`: no environment variable expansion.
    pub no_expand: bool,
    /// `+` or `!`: runs without the `User=`/`Group=` switch.
    pub privileged: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CommandError {
    Empty,
    UnterminatedQuote,
    BadEscape(String),
    UnknownPrefix(char),
    MissingArgv0,
}

impl fmt::Display for CommandError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CommandError::Empty => f.write_str("empty command line"),
            CommandError::UnterminatedQuote => f.write_str("unterminated quote"),
            CommandError::BadEscape(e) => write!(f, "invalid escape sequence {e:?}"),
            CommandError::UnknownPrefix(c) => write!(f, "unsupported command prefix {c:?}"),
            CommandError::MissingArgv0 => f.write_str("'@' prefix without an argv[0] word"),
        }
    }
}

impl std::error::Error for CommandError {}

/// Parses one `Exec*=` value (specifiers already resolved) into its commands.
pub fn parse_exec(value: &str) -> Result<Vec<ExecCommand>, CommandError> {
    let words = split_words(value)?;
    let mut commands = Vec::new();
    for group in words.split(|w| matches!(w, Word::Separator)) {
        let words: Vec<String> = group
            .iter()
            .map(|w| match w {
                Word::Text(t) => t.clone(),
                Word::Separator => unreachable!("split on separators"),
            })
            .collect();
        if !words.is_empty() {
            commands.push(command(words)?);
        }
    }
    if commands.is_empty() {
        return Err(CommandError::Empty);
    }
    Ok(commands)
}

fn command(mut words: Vec<String>) -> Result<ExecCommand, CommandError> {
    let first = words.remove(0);
    let mut rest = first.as_str();
    let (mut ignore_failure, mut no_expand, mut privileged, mut own_argv0) =
        (false, false, false, false);
    while let Some(c) = rest.chars().next().filter(|c| "-@:+!|".contains(*c)) {
        match c {
            '-' => ignore_failure = true,
            '@' => own_argv0 = true,
            ':' => no_expand = true,
            '+' | '!' => privileged = true,
            other => return Err(CommandError::UnknownPrefix(other)),
        }
        rest = &rest[1..];
    }
    let path = rest.to_owned();
    if path.is_empty() {
        return Err(CommandError::Empty);
    }
    let argv = if own_argv0 {
        if words.is_empty() {
            return Err(CommandError::MissingArgv0);
        }
        words
    } else {
        let mut argv = vec![path.clone()];
        argv.extend(words);
        argv
    };
    Ok(ExecCommand {
        path,
        argv,
        ignore_failure,
        no_expand,
        privileged,
    })
}

/// Words as `Environment=` reads them: the same quoting and escapes, `;` not special.
pub(crate) fn split_plain_words(value: &str) -> Result<Vec<String>, CommandError> {
    Ok(split_words(value)?
        .into_iter()
        .map(|w| match w {
            Word::Text(t) => t,
            Word::Separator => ";".to_owned(),
        })
        .collect())
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Word {
    Text(String),
    /// A lone, unquoted `;`.
    Separator,
}

/// systemd's word splitting: whitespace separates, quotes group (anywhere in a word), C escapes.
fn split_words(value: &str) -> Result<Vec<Word>, CommandError> {
    let mut words = Vec::new();
    let mut chars = value.chars().peekable();
    loop {
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        if chars.peek().is_none() {
            return Ok(words);
        }
        let mut word = String::new();
        let mut quoted_or_escaped = false;
        let mut quote: Option<char> = None;
        while let Some(c) = chars.next() {
            match (quote, c) {
                (None, c) if c.is_whitespace() => break,
                (None, '"' | '\'') => {
                    quote = Some(c);
                    quoted_or_escaped = true;
                }
                (Some(q), c) if c == q => quote = None,
                (_, '\\') => {
                    quoted_or_escaped = true;
                    unescape(&mut chars, &mut word)?;
                }
                (_, c) => word.push(c),
            }
        }
        if quote.is_some() {
            return Err(CommandError::UnterminatedQuote);
        }
        if word == ";" && !quoted_or_escaped {
            words.push(Word::Separator);
        } else {
            words.push(Word::Text(word));
        }
    }
}

/// One C escape after a backslash.
fn unescape(
    chars: &mut std::iter::Peekable<std::str::Chars<'_>>,
    out: &mut String,
) -> Result<(), CommandError> {
    let Some(c) = chars.next() else {
        return Err(CommandError::BadEscape("\\".into()));
    };
    let simple = match c {
        'a' => Some('\u{7}'),
        'b' => Some('\u{8}'),
        'f' => Some('\u{c}'),
        'n' => Some('\n'),
        'r' => Some('\r'),
        't' => Some('\t'),
        'v' => Some('\u{b}'),
        's' => Some(' '),
        '\\' | '"' | '\'' | ';' | ' ' | '$' => Some(c),
        _ => None,
    };
    if let Some(s) = simple {
        out.push(s);
        return Ok(());
    }
    let (digits, radix) = match c {
        'x' => (2, 16),
        'u' => (4, 16),
        'U' => (8, 16),
        '0'..='7' => (2, 8),
        _ => return Err(CommandError::BadEscape(format!("\\{c}"))),
    };
    let mut text = String::new();
    if radix == 8 {
        text.push(c);
    }
    for _ in 0..digits {
        match chars.next() {
            Some(d) => text.push(d),
            None => break,
        }
    }
    let shown = match radix {
        8 => format!("\\{text}"),
        _ => format!("\\{c}{text}"),
    };
    let bad = || CommandError::BadEscape(shown.clone());
    let code = u32::from_str_radix(&text, radix).map_err(|_| bad())?;
    let decoded = char::from_u32(code)
        .filter(|c| *c != '\0')
        .ok_or_else(bad)?;
    out.push(decoded);
    Ok(())
}

impl ExecCommand {
    /// The program and argument vector with the environment substituted: `${VAR}` anywhere
    /// becomes the value as it is; `$VAR` as a whole word becomes the value split on
    /// whitespace (zero or more words); `$$` is a `$`. Unset variables are empty.
    pub fn expand(&self, environment: &BTreeMap<String, String>) -> (String, Vec<String>) {
        if self.no_expand {
            return (self.path.clone(), self.argv.clone());
        }
        let mut argv = Vec::with_capacity(self.argv.len());
        for word in &self.argv {
            match whole_word_variable(word) {
                Some(name) => argv.extend(
                    environment
                        .get(name)
                        .map(|v| v.split_whitespace().map(str::to_owned).collect::<Vec<_>>())
                        .unwrap_or_default(),
                ),
                None => argv.push(expand_braced(word, environment)),
            }
        }
        (expand_braced(&self.path, environment), argv)
    }

    /// The line as a user would read it (for logs and states).
    pub fn display(&self) -> String {
        self.argv.join(" ")
    }
}

/// `$NAME` making up a whole word.
fn whole_word_variable(word: &str) -> Option<&str> {
    let name = word.strip_prefix('$')?;
    let valid = !name.is_empty()
        && !name.starts_with(|c: char| c.is_ascii_digit())
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    valid.then_some(name)
}

fn expand_braced(word: &str, environment: &BTreeMap<String, String>) -> String {
    let mut out = String::with_capacity(word.len());
    let mut rest = word;
    while let Some(dollar) = rest.find('$') {
        out.push_str(&rest[..dollar]);
        let after = &rest[dollar + 1..];
        if let Some(tail) = after.strip_prefix('$') {
            out.push('$');
            rest = tail;
        } else if let Some(inner) = after.strip_prefix('{') {
            match inner.find('}') {
                Some(end) => {
                    out.push_str(environment.get(&inner[..end]).map_or("", String::as_str));
                    rest = &inner[end + 1..];
                }
                None => {
                    out.push('$');
                    rest = after;
                }
            }
        } else {
            out.push('$');
            rest = after;
        }
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Each row: the line, then per command "flags|path|argv joined by ¦", or the error.
    fn check(line: &str, expected: Result<&[&str], CommandError>) {
        let parsed = parse_exec(line).map(|commands| {
            commands
                .iter()
                .map(|c| {
                    let flags: String = [
                        (c.ignore_failure, '-'),
                        (c.no_expand, ':'),
                        (c.privileged, '+'),
                    ]
                    .iter()
                    .filter(|(on, _)| *on)
                    .map(|(_, f)| *f)
                    .collect();
                    format!("{flags}|{}|{}", c.path, c.argv.join("¦"))
                })
                .collect::<Vec<_>>()
        });
        let expected = expected.map(|rows| rows.iter().map(|s| s.to_string()).collect());
        assert_eq!(parsed, expected, "{line:?}");
    }

    #[test]
    fn command_lines() {
        let rows: &[(&str, Result<&[&str], CommandError>)] = &[
            (
                "/bin/echo hello world",
                Ok(&["|/bin/echo|/bin/echo¦hello¦world"]),
            ),
            ("  /bin/true  ", Ok(&["|/bin/true|/bin/true"])),
            (
                "-/usr/bin/docker kill busybox1",
                Ok(&["-|/usr/bin/docker|/usr/bin/docker¦kill¦busybox1"]),
            ),
            ("@/bin/sleep mysleep 5", Ok(&["|/bin/sleep|mysleep¦5"])),
            ("-@:/bin/x a", Ok(&["-:|/bin/x|a"])),
            ("+/bin/x", Ok(&["+|/bin/x|/bin/x"])),
            (
                "/bin/sh -c \"while true; do echo hi; sleep 1; done\"",
                Ok(&["|/bin/sh|/bin/sh¦-c¦while true; do echo hi; sleep 1; done"]),
            ),
            (
                "/bin/echo 'a b' c\"d e\"f",
                Ok(&["|/bin/echo|/bin/echo¦a b¦cd ef"]),
            ),
            (
                "/bin/echo a\\tb \\x41 \\101 \\s",
                Ok(&["|/bin/echo|/bin/echo¦a\tb¦A¦A¦ "]),
            ),
            (
                "/bin/echo a ; /bin/echo b",
                Ok(&["|/bin/echo|/bin/echo¦a", "|/bin/echo|/bin/echo¦b"]),
            ),
            ("/bin/echo \\; ';'", Ok(&["|/bin/echo|/bin/echo¦;¦;"])),
            ("/bin/echo a;b", Ok(&["|/bin/echo|/bin/echo¦a;b"])),
            ("", Err(CommandError::Empty)),
            ("-", Err(CommandError::Empty)),
            ("/bin/echo \"open", Err(CommandError::UnterminatedQuote)),
            ("/bin/echo \\q", Err(CommandError::BadEscape("\\q".into()))),
            ("@/bin/sleep", Err(CommandError::MissingArgv0)),
            ("|/bin/x", Err(CommandError::UnknownPrefix('|'))),
        ];
        for (line, expected) in rows {
            check(line, expected.clone());
        }
    }

    #[test]
    fn expansion() {
        let env: BTreeMap<String, String> = [
            ("PORT", "8080"),
            ("OPTS", "  -v   --color=never "),
            ("EMPTY", ""),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        let rows: &[(&str, &[&str])] = &[
            ("/bin/srv --port=${PORT}", &["/bin/srv", "--port=8080"]),
            (
                "/bin/srv $OPTS x",
                &["/bin/srv", "-v", "--color=never", "x"],
            ),
            ("/bin/srv ${OPTS}", &["/bin/srv", "  -v   --color=never "]),
            ("/bin/srv $EMPTY $UNSET end", &["/bin/srv", "end"]),
            (
                "/bin/srv a$PORT $$PORT ${UNSET}x",
                &["/bin/srv", "a$PORT", "$PORT", "x"],
            ),
            ("/bin/srv ${PORT", &["/bin/srv", "${PORT"]),
            (":/bin/srv $PORT ${PORT}", &["/bin/srv", "$PORT", "${PORT}"]),
        ];
        for (line, expected) in rows {
            let command = &parse_exec(line).unwrap()[0];
            let (path, argv) = command.expand(&env);
            assert_eq!(path, "/bin/srv", "{line}");
            assert_eq!(argv, *expected, "{line}");
        }
    }
}
