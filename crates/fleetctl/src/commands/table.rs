//! What the list commands share: their flags (`--fields`, `--full`, `--no-legend`), checked with
//! fleetctl 1.0's messages, and the table they print.

use std::io;

use crate::{tabwriter, Io};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableFlags {
    pub fields: Vec<String>,
    pub full: bool,
    pub legend: bool,
}

/// Reads the flags of a list command. `-l` (or `--l`) is `--full` for every list, as the help
/// says (fleet 1.0 refused it for list-unit-files, and `-l` everywhere).
pub fn parse(args: &[String], defaults: &[&str], valid: &[&str]) -> Result<TableFlags, String> {
    let mut flags = TableFlags {
        fields: defaults.iter().map(|f| f.to_string()).collect(),
        full: false,
        legend: true,
    };
    let mut rest = args.iter();
    while let Some(arg) = rest.next() {
        let name = arg.trim_start_matches('-');
        let (name, inline) = match name.split_once('=') {
            Some((name, value)) => (name, Some(value.to_owned())),
            None => (name, None),
        };
        match name {
            "full" => flags.full = true,
            "l" => flags.full = true,
            "no-legend" => flags.legend = false,
            "fields" => {
                let value = match inline {
                    Some(value) => value,
                    None => rest
                        .next()
                        .cloned()
                        .ok_or("flag needs an argument: --fields")?,
                };
                if value.is_empty() {
                    return Err("Must define output format".into());
                }
                let fields: Vec<String> = value.split(',').map(str::to_owned).collect();
                if let Some(bad) = fields.iter().find(|f| !valid.contains(&f.as_str())) {
                    return Err(format!("Invalid key in output format: {bad:?}"));
                }
                flags.fields = fields;
            }
            _ => return Err(format!("unknown flag: {arg}")),
        }
    }
    Ok(flags)
}

/// [`parse`], or `None` after printing what is wrong (the command then exits 1).
pub fn parse_or_explain(
    args: &[String],
    defaults: &[&str],
    valid: &[&str],
    io: &mut Io<'_>,
) -> io::Result<Option<TableFlags>> {
    match parse(args, defaults, valid) {
        Ok(flags) => Ok(Some(flags)),
        Err(e) => {
            writeln!(io.err, "{e}")?;
            Ok(None)
        }
    }
}

/// The table: the upper-cased field names as legend (unless `--no-legend`), then one row per
/// item with `cell(item, field)` for each field.
pub fn render<T>(flags: &TableFlags, items: &[T], cell: impl Fn(&T, &str) -> String) -> String {
    let mut rows = Vec::with_capacity(items.len() + 1);
    if flags.legend {
        rows.push(flags.fields.iter().map(|f| f.to_uppercase()).collect());
    }
    for item in items {
        rows.push(flags.fields.iter().map(|f| cell(item, f)).collect());
    }
    tabwriter::format(&rows)
}

/// `0b8a1f4e...`, or the whole ID with `--full`; `-` for none.
pub fn machine_id(id: &str, full: bool) -> String {
    match (id.is_empty(), full) {
        (true, _) => "-".into(),
        (false, true) => id.to_owned(),
        (false, false) => format!("{}...", id.chars().take(8).collect::<String>()),
    }
}

/// A hash, 7 characters unless `--full`; `-` for none.
pub fn hash(hash: &str, full: bool) -> String {
    match (hash.is_empty(), full) {
        (true, _) => "-".into(),
        (false, true) => hash.to_owned(),
        (false, false) => hash.chars().take(7).collect(),
    }
}

/// A value, or `-` when empty.
pub fn or_dash(value: &str) -> String {
    match value.is_empty() {
        true => "-".into(),
        false => value.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(args: &[&str], expected: Result<(&[&str], bool, bool), &str>) {
        let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
        let parsed = parse(&args, &["unit", "sub"], &["unit", "sub", "load"]);
        let expected = expected
            .map(|(fields, full, legend)| TableFlags {
                fields: fields.iter().map(|f| f.to_string()).collect(),
                full,
                legend,
            })
            .map_err(str::to_owned);
        assert_eq!(parsed, expected, "{args:?}");
    }

    #[test]
    fn flags() {
        check(&[], Ok((&["unit", "sub"], false, true)));
        check(
            &["--full", "--no-legend"],
            Ok((&["unit", "sub"], true, false)),
        );
        check(&["--l"], Ok((&["unit", "sub"], true, true)));
        check(&["-l"], Ok((&["unit", "sub"], true, true)));
        check(
            &["--fields=load,load"],
            Ok((&["load", "load"], false, true)),
        );
        check(&["--fields", "load"], Ok((&["load"], false, true)));
        check(&["--fields="], Err("Must define output format"));
        check(
            &["--fields=unit,"],
            Err("Invalid key in output format: \"\""),
        );
        check(
            &["--fields=UNIT"],
            Err("Invalid key in output format: \"UNIT\""),
        );
        check(&["--bogus"], Err("unknown flag: --bogus"));
    }
}
