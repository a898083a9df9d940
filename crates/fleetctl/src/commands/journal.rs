//! `fleetctl journal [--lines N] UNIT`: a unit's log. fleet ran journalctl on the unit's machine
//! (over ssh, or locally); here the fleetd of that machine serves the log its unit manager keeps,
//! printed in journalctl's short format (`Nov 21 20:23:14 <machine> <unit>: <text>`).

use std::io;

use fleet_unit::name::mangle;

use crate::{Globals, Io};

pub fn run(args: &[String], globals: &Globals, io: &mut Io<'_>) -> io::Result<i32> {
    let mut lines = 10usize;
    let mut names = Vec::new();
    let mut rest = args.iter();
    while let Some(arg) = rest.next() {
        let flag = arg.trim_start_matches('-');
        let (name, inline) = flag
            .split_once('=')
            .map_or((flag, None), |(n, v)| (n, Some(v.to_owned())));
        match name {
            "lines" | "n" if arg.starts_with('-') => {
                let value = inline.or_else(|| rest.next().cloned()).unwrap_or_default();
                match value.parse() {
                    Ok(n) => lines = n,
                    Err(_) => {
                        writeln!(io.err, "invalid --lines {value:?}")?;
                        return Ok(1);
                    }
                }
            }
            "sudo" | "output" if arg.starts_with('-') => {
                if name == "output" && inline.is_none() {
                    rest.next();
                }
            }
            "follow" | "f" if arg.starts_with('-') => {
                writeln!(io.err, "--follow is not built yet; run journal again, or read the unit's log on its machine")?;
                return Ok(1);
            }
            _ => names.push(arg.clone()),
        }
    }
    let [arg] = names.as_slice() else {
        writeln!(io.err, "One unit file must be provided")?;
        return Ok(1);
    };
    let name = mangle(arg);
    match globals.client().journal(&name, lines) {
        Ok((machine, records)) => {
            let host: String = machine.chars().take(8).collect();
            for record in records {
                writeln!(io.out, "{}", short_format(&record, &host, &name))?;
            }
            Ok(0)
        }
        Err(e) => {
            writeln!(io.err, "Error retrieving the journal of {name}: {e}")?;
            Ok(1)
        }
    }
}

const MONTHS: [&str; 12] = [
    "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
];

/// `2026-11-21T20:23:14.123456Z stdout Hello` → `Nov 21 20:23:14 <host> <unit>: Hello`; the
/// supervisor's own notes are shown as from `fleetd`. Anything else is printed as it is.
pub(crate) fn short_format(record: &str, host: &str, unit: &str) -> String {
    let parse = || -> Option<String> {
        let (stamp, rest) = record.split_once(' ')?;
        let (stream, text) = rest.split_once(' ').unwrap_or((rest, ""));
        let month: usize = stamp.get(5..7)?.parse().ok()?;
        let day = stamp.get(8..10)?;
        let time = stamp.get(11..19)?;
        let who = if stream == "fleetd" { "fleetd" } else { unit };
        Some(format!(
            "{} {day} {time} {host} {who}: {text}",
            MONTHS.get(month.checked_sub(1)?)?
        ))
    };
    parse().unwrap_or_else(|| record.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_in_journalctl_short_format() {
        let rows = [
            (
                "2026-11-21T20:23:14.123456Z stdout Hello, world",
                "Nov 21 20:23:14 3d1219c7 a.service: Hello, world",
            ),
            (
                "2026-01-02T03:04:05.000000Z fleetd Main process exited",
                "Jan 02 03:04:05 3d1219c7 fleetd: Main process exited",
            ),
            ("garbage", "garbage"),
        ];
        for (record, expected) in rows {
            assert_eq!(short_format(record, "3d1219c7", "a.service"), expected);
        }
    }
}
