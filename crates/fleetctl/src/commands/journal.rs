//! `fleetctl journal [--lines N] [-f|--follow] [--output MODE] [--sudo] UNIT`: a unit's log.
//! fleet ran journalctl on the unit's machine, over ssh or locally. Here the fleetd of the
//! unit's machine serves the log its unit manager keeps: directly when fleetctl talks to that
//! fleetd, else fleetctl runs `fleetctl journal --here` on the machine over ssh. Records print
//! in journalctl's formats (`Nov 21 20:23:14 <machine> <unit>: <text>` by default).

use std::io;

use fleet_unit::name::mangle;
use fleet_wire::client::{Client, ClientError};

use super::flags::{self, switch, value, Flag};
use super::remote::Remote;
use crate::{ssh, Globals, Io};

const FLAGS: &[Flag] = &[
    value(&["lines", "n"]),
    switch(&["follow", "f"]),
    value(&["output", "o"]),
    switch(&["sudo"]),
    value(&["ssh-port"]),
    value(&["machine"]),
    switch(&["here"]),
];

/// What to show of a unit's log.
#[derive(Debug, Clone)]
pub(crate) struct LogRequest {
    pub name: String,
    pub lines: usize,
    pub follow: bool,
    pub output: Output,
    pub sudo: bool,
    pub ssh_port: u16,
}

/// journalctl's `--output` modes that a captured log can be shown in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Output {
    Short,
    ShortIso,
    ShortPrecise,
    Cat,
}

impl Output {
    const ALL: [(&'static str, Output); 4] = [
        ("short", Output::Short),
        ("short-iso", Output::ShortIso),
        ("short-precise", Output::ShortPrecise),
        ("cat", Output::Cat),
    ];

    fn parse(text: &str) -> Result<Output, String> {
        Output::ALL
            .iter()
            .find(|(name, _)| *name == text)
            .map(|(_, output)| *output)
            .ok_or_else(|| {
                let names: Vec<&str> = Output::ALL.iter().map(|(name, _)| *name).collect();
                format!(
                    "unsupported --output {text:?} (one of: {})",
                    names.join(", ")
                )
            })
    }

    fn name(self) -> &'static str {
        Output::ALL
            .iter()
            .find(|(_, output)| *output == self)
            .map_or("short", |(name, _)| name)
    }
}

pub fn run(args: &[String], globals: &Globals, io: &mut Io<'_>) -> io::Result<i32> {
    let Some(parsed) = flags::or_explain(flags::parse(args, FLAGS, false), io)? else {
        return Ok(1);
    };
    let [arg] = parsed.args.as_slice() else {
        writeln!(io.err, "One unit file must be provided.")?;
        return Ok(1);
    };
    let request = || -> Result<LogRequest, String> {
        Ok(LogRequest {
            name: mangle(arg),
            lines: flags::number(&parsed, "lines", 10)?,
            follow: parsed.is_set("follow"),
            output: Output::parse(parsed.value("output").unwrap_or("short"))?,
            sudo: parsed.is_set("sudo"),
            ssh_port: flags::number(&parsed, "ssh-port", 22)?,
        })
    };
    let Some(request) = flags::or_explain(request(), io)? else {
        return Ok(1);
    };
    let name = &request.name;
    let client = globals.client();
    let wanted = parsed.value("machine");
    if parsed.is_set("here") {
        return show_log(globals, &client, &request, wanted, false, io);
    }
    let unit = match client.unit(name) {
        Ok(Some(unit)) => unit,
        Ok(None) => {
            writeln!(io.err, "Unit {name} does not exist.")?;
            return Ok(1);
        }
        Err(e) => {
            writeln!(io.err, "Error retrieving unit {name}: {e}")?;
            return Ok(1);
        }
    };
    let global = unit.is_global();
    let machines: Vec<String> = if global {
        match client.states_of(name) {
            Ok(states) => states.into_iter().map(|s| s.machine_id).collect(),
            Err(e) => {
                writeln!(io.err, "Error retrieving the state of {name}: {e}")?;
                return Ok(1);
            }
        }
    } else if unit.current_state == "inactive" || unit.machine_id.is_empty() {
        writeln!(io.err, "Unit {name} does not appear to be running.")?;
        return Ok(1);
    } else {
        vec![unit.machine_id]
    };
    let machines: Vec<String> = machines
        .into_iter()
        .filter(|m| wanted.is_none_or(|w| m.starts_with(w)))
        .collect();
    if machines.is_empty() {
        writeln!(
            io.err,
            "Unit {name} runs on no machine{}.",
            match wanted {
                Some(w) => format!(" matching {w}"),
                None => String::new(),
            }
        )?;
        return Ok(1);
    }
    if request.follow && machines.len() > 1 {
        writeln!(
            io.err,
            "Global unit {name} runs on {} machines; --follow reads one: add --machine ID.",
            machines.len()
        )?;
        return Ok(1);
    }
    for machine in &machines {
        let code = show_log(globals, &client, &request, Some(machine), true, io)?;
        if code != 0 {
            return Ok(code);
        }
    }
    Ok(0)
}

/// Prints the unit's log on `machine` (whichever machine the fleetd behind the endpoint is,
/// when `None`): from that fleetd when fleetctl talks to it, else, with `ssh_allowed`, from
/// `fleetctl journal --here` run on the machine over ssh. The exit code.
pub(crate) fn show_log(
    globals: &Globals,
    client: &Client,
    request: &LogRequest,
    machine: Option<&str>,
    ssh_allowed: bool,
    io: &mut Io<'_>,
) -> io::Result<i32> {
    let name = &request.name;
    let mut failed_write = None;
    let mut print = |machine: &str, record: &str| {
        let host: String = machine.chars().take(8).collect();
        let line = format_record(record, request.output, &host, name);
        let written = writeln!(io.out, "{line}").and_then(|_| io.out.flush());
        if let Err(e) = &written {
            failed_write = Some(e.kind());
        }
        written
    };
    let fetched = match request.follow {
        true => client.follow_journal(name, request.lines, machine, &mut print),
        false => client
            .journal(name, request.lines, machine)
            .map(|(machine, records)| {
                // A failed write stops the loop; it is reported below.
                let _ = records.iter().try_for_each(|r| print(&machine, r));
            }),
    };
    // Writing failed (a closed pipe): that, not the journal, is what went wrong.
    if let Some(kind) = failed_write {
        return Err(kind.into());
    }
    match (fetched, machine) {
        (Ok(()), _) => Ok(0),
        (Err(ClientError::Api { code: 409, .. }), Some(machine)) if ssh_allowed => {
            over_ssh(globals, client, request, machine, io)
        }
        (Err(e), _) => {
            writeln!(io.err, "Error retrieving the journal of {name}: {e}")?;
            Ok(1)
        }
    }
}

/// Runs `fleetctl journal --here` for the unit on `machine`, over ssh.
fn over_ssh(
    globals: &Globals,
    client: &Client,
    request: &LogRequest,
    machine: &str,
    io: &mut Io<'_>,
) -> io::Result<i32> {
    let mut command = format!(
        "journal --here --machine {} --lines {} --output {}",
        ssh::quote(machine),
        request.lines,
        request.output.name()
    );
    if request.follow {
        command.push_str(" --follow");
    }
    command.push(' ');
    command.push_str(&ssh::quote(&request.name));
    let remote = Remote {
        machine,
        ssh_port: request.ssh_port,
        sudo: request.sudo,
    };
    remote.fleetctl(globals, client, &command, io)
}

const MONTHS: [&str; 12] = [
    "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
];

/// A record (`2026-11-21T20:23:14.123456Z stdout Hello`) as journalctl's `output` mode shows
/// it: `short` is `Nov 21 20:23:14 <host> <unit>: Hello`. The supervisor's own notes are shown
/// as from `fleetd`. A record that is not one is printed as it is.
pub(crate) fn format_record(record: &str, output: Output, host: &str, unit: &str) -> String {
    let parse = || -> Option<String> {
        let (stamp, rest) = record.split_once(' ')?;
        let (stream, text) = rest.split_once(' ').unwrap_or((rest, ""));
        let month: usize = stamp.get(5..7)?.parse().ok()?;
        let month = MONTHS.get(month.checked_sub(1)?)?;
        let day = stamp.get(8..10)?;
        let time = stamp.get(11..19)?;
        let micros = stamp.get(20..26).unwrap_or("000000");
        let who = if stream == "fleetd" { "fleetd" } else { unit };
        Some(match output {
            Output::Short => format!("{month} {day} {time} {host} {who}: {text}"),
            Output::ShortPrecise => format!("{month} {day} {time}.{micros} {host} {who}: {text}"),
            Output::ShortIso => format!("{}+0000 {host} {who}: {text}", stamp.get(..19)?),
            Output::Cat => text.to_owned(),
        })
    };
    parse().unwrap_or_else(|| record.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_in_journalctl_formats() {
        let rows = [
            (
                "2026-11-21T20:23:14.123456Z stdout Hello, world",
                Output::Short,
                "Nov 21 20:23:14 3d1219c7 a.service: Hello, world",
            ),
            (
                "2026-11-21T20:23:14.123456Z stdout Hello, world",
                Output::ShortPrecise,
                "Nov 21 20:23:14.123456 3d1219c7 a.service: Hello, world",
            ),
            (
                "2026-11-21T20:23:14.123456Z stderr oops",
                Output::ShortIso,
                "2026-11-21T20:23:14+0000 3d1219c7 a.service: oops",
            ),
            (
                "2026-11-21T20:23:14.123456Z stdout just the text",
                Output::Cat,
                "just the text",
            ),
            (
                "2026-01-02T03:04:05.000000Z fleetd Main process exited",
                Output::Short,
                "Jan 02 03:04:05 3d1219c7 fleetd: Main process exited",
            ),
            ("garbage", Output::Short, "garbage"),
        ];
        for (record, output, expected) in rows {
            assert_eq!(
                format_record(record, output, "3d1219c7", "a.service"),
                expected
            );
        }
    }

    #[test]
    fn output_modes() {
        assert_eq!(Output::parse("short-iso"), Ok(Output::ShortIso));
        assert_eq!(
            Output::parse("json"),
            Err(
                "unsupported --output \"json\" (one of: short, short-iso, short-precise, cat)"
                    .into()
            )
        );
        for (name, output) in Output::ALL {
            assert_eq!(output.name(), name);
        }
    }
}
