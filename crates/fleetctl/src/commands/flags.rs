//! Command flags as fleetctl 1.0 took them (`--name value`, `--name=value`, and for
//! one-letter names `-x` too), and the arguments between them.

use std::collections::BTreeMap;

/// A flag a command takes: its names (the first is the one it is known by) and whether it
/// takes a value.
pub struct Flag {
    pub names: &'static [&'static str],
    pub takes_value: bool,
}

pub const fn switch(names: &'static [&'static str]) -> Flag {
    Flag {
        names,
        takes_value: false,
    }
}

pub const fn value(names: &'static [&'static str]) -> Flag {
    Flag {
        names,
        takes_value: true,
    }
}

#[derive(Debug, Default, PartialEq, Eq)]
pub struct Parsed {
    /// By the flag's first name; a switch holds "true" (or the value given with `=`).
    values: BTreeMap<&'static str, String>,
    pub args: Vec<String>,
}

impl Parsed {
    pub fn value(&self, flag: &str) -> Option<&str> {
        self.values.get(flag).map(String::as_str)
    }

    pub fn is_set(&self, flag: &str) -> bool {
        self.value(flag)
            .is_some_and(|v| !matches!(v, "false" | "0" | "f" | "F" | "FALSE" | "False"))
    }
}

/// Parses `args`. `--` ends the flags; with `stop_at_argument`, so does the first argument
/// (what follows is a command for another machine).
pub fn parse(args: &[String], flags: &[Flag], stop_at_argument: bool) -> Result<Parsed, String> {
    let mut parsed = Parsed::default();
    let mut rest = args.iter();
    while let Some(arg) = rest.next() {
        if arg == "--" {
            parsed.args.extend(rest.cloned());
            break;
        }
        let Some(flag) = arg.strip_prefix("--").or_else(|| arg.strip_prefix('-')) else {
            parsed.args.push(arg.clone());
            if stop_at_argument {
                parsed.args.extend(rest.cloned());
                break;
            }
            continue;
        };
        if flag.is_empty() {
            parsed.args.push(arg.clone());
            continue;
        }
        let (name, inline) = match flag.split_once('=') {
            Some((name, value)) => (name, Some(value.to_owned())),
            None => (flag, None),
        };
        // A single dash takes one-letter names only (`-n 5`, `-f`, `-A`).
        let dashes_fit = arg.starts_with("--") || name.len() == 1;
        let Some(known) = flags.iter().find(|f| dashes_fit && f.names.contains(&name)) else {
            return Err(format!("unknown flag: {arg}"));
        };
        let value = match (known.takes_value, inline) {
            (_, Some(value)) => value,
            (false, None) => "true".to_owned(),
            (true, None) => rest
                .next()
                .cloned()
                .ok_or(format!("flag needs an argument: {arg}"))?,
        };
        parsed.values.insert(known.names[0], value);
    }
    Ok(parsed)
}

/// The value of a numeric flag, or the error naming it.
pub fn number<T: std::str::FromStr>(parsed: &Parsed, flag: &str, default: T) -> Result<T, String> {
    match parsed.value(flag) {
        None => Ok(default),
        Some(text) => text
            .parse()
            .map_err(|_| format!("invalid value {text:?} for --{flag}")),
    }
}

/// The value, or `None` after printing the error on stderr (the command then exits 1).
pub fn or_explain<T>(
    result: Result<T, String>,
    io: &mut crate::Io<'_>,
) -> std::io::Result<Option<T>> {
    match result {
        Ok(value) => Ok(Some(value)),
        Err(e) => {
            writeln!(io.err, "{e}")?;
            Ok(None)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FLAGS: &[Flag] = &[
        value(&["lines", "n"]),
        switch(&["follow", "f"]),
        switch(&["sudo"]),
    ];

    /// The flags set and the arguments left, or the error.
    type Expected<'a> = Result<(&'a [(&'a str, &'a str)], &'a [&'a str]), &'a str>;

    fn check(args: &[&str], stop: bool, expected: Expected<'_>) {
        let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
        let got = parse(&args, FLAGS, stop).map(|p| {
            let values: Vec<(String, String)> = p
                .values
                .iter()
                .map(|(k, v)| (k.to_string(), v.clone()))
                .collect();
            (values, p.args)
        });
        let expected = expected
            .map(|(values, rest)| {
                let values = values
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect();
                (values, rest.iter().map(|a| a.to_string()).collect())
            })
            .map_err(str::to_owned);
        assert_eq!(got, expected, "{args:?}");
    }

    #[test]
    fn parsing() {
        check(
            &["--lines", "5", "a.service"],
            false,
            Ok((&[("lines", "5")], &["a.service"])),
        );
        check(
            &["a.service", "--lines=5", "-f"],
            false,
            Ok((&[("follow", "true"), ("lines", "5")], &["a.service"])),
        );
        check(
            &["-n", "3", "--sudo", "x"],
            false,
            Ok((&[("lines", "3"), ("sudo", "true")], &["x"])),
        );
        check(
            &["--follow=false", "x"],
            false,
            Ok((&[("follow", "false")], &["x"])),
        );
        check(&["m1", "ls", "-l"], true, Ok((&[], &["m1", "ls", "-l"])));
        check(
            &["--sudo", "--", "-weird", "--lines"],
            false,
            Ok((&[("sudo", "true")], &["-weird", "--lines"])),
        );
        check(&["--bogus", "x"], false, Err("unknown flag: --bogus"));
        check(&["-sudo"], false, Err("unknown flag: -sudo"));
        check(&["--lines"], false, Err("flag needs an argument: --lines"));
    }
}
