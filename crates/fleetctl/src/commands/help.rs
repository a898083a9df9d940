//! `fleetctl help [COMMAND]` (also `fleetctl COMMAND --help`): the usage of fleetctl and of each
//! command, laid out as fleetctl 1.0 laid it out (NAME, USAGE, VERSION, COMMANDS, DESCRIPTION,
//! OPTIONS, GLOBAL OPTIONS), and the table commands are resolved through (with fleet's unique
//! prefix matching: `fleetctl list-m`).

use std::io;

use crate::{Io, VERSION};

/// A command: its name, one line about it, its arguments, more about it, its options
/// (`--name=default`, what it does).
pub struct Command {
    pub name: &'static str,
    pub summary: &'static str,
    pub usage: &'static str,
    pub description: &'static str,
    pub options: &'static [(&'static str, &'static str)],
}

const BLOCKING: &[(&str, &str)] = &[
    ("--block-attempts=0", "Wait until the units are in the desired state, polling this many 2-second windows (0: no limit). Unset: up to 10 s for a unit no machine can take, 5 min for any other state; a unit that fails, ends or is refused ends its wait at once."),
    ("--no-block=false", "Do not wait until the units have reached the desired state."),
];

const CREATING: &[(&str, &str)] = &[
    ("--block-attempts=0", "Wait until the units are in the desired state, polling this many 2-second windows (0: no limit). Unset: up to 10 s for a unit no machine can take, 5 min for any other state; a unit that fails, ends or is refused ends its wait at once."),
    ("--no-block=false", "Do not wait until the units have reached the desired state."),
    ("--replace=false", "Replace the units in the cluster with the local unit files."),
];

const TABLE: &[(&str, &str)] = &[
    (
        "--fields=...",
        "Columns to print, comma-separated (see the description).",
    ),
    (
        "-l, --full=false",
        "Do not truncate machine IDs and hashes.",
    ),
    (
        "--no-legend=false",
        "Do not print a legend (column headers).",
    ),
];

pub const COMMANDS: &[Command] = &[
    Command { name: "cat", summary: "Output the contents of a submitted unit", usage: "UNIT", description: "Outputs the unit file of a unit in the cluster, as submitted.", options: &[] },
    Command { name: "destroy", summary: "Destroy one or more units in the cluster", usage: "UNIT...", description: "Stops units, removes them from their machines and from the cluster.\n\nDestroy a unit:\n\tfleetctl destroy foo.service", options: BLOCKING },
    Command { name: "fd-forward", summary: "Proxy stdin and stdout to a unix domain socket", usage: "SOCKET", description: "Joins stdin and stdout to a unix socket: what --tunnel runs on the bastion.", options: &[] },
    Command { name: "help", summary: "Show a list of commands or help for one command", usage: "[COMMAND]", description: "Shows a list of commands, or detailed help for one command.", options: &[] },
    Command { name: "journal", summary: "Print the journal of a unit in the cluster to stdout", usage: "[--lines=N] [-f|--follow] [--output=MODE] UNIT", description: "Outputs the log of a unit, from the machine it runs on (over ssh when it is not\nthe machine of the fleetd fleetctl talks to). A global unit's log is shown for\neach machine, or one (--machine).\n\nRead the last 10 lines:\n\tfleetctl journal foo.service\n\nRead the last 100 lines and follow new ones:\n\tfleetctl journal --lines 100 -f foo.service", options: &[
        ("-n, --lines=10", "Number of recent log lines to show."),
        ("-f, --follow=false", "Continuously print new entries as they are appended to the log."),
        ("-o, --output=short", "How records are shown: short, short-iso, short-precise or cat."),
        ("--sudo=false", "Run the remote command with sudo."),
        ("--ssh-port=22", "Connect to a remote machine's sshd on this port."),
        ("--machine=", "A global unit: the machine (ID prefix) whose log to show."),
        ("--here=false", "Read the log from the fleetd of --endpoint only, never over ssh."),
    ] },
    Command { name: "list-dependencies", summary: "Show the fleet units a unit is related to, as a tree", usage: "[-l|--full] UNIT", description: "Shows the fleet units a unit names in Requires=, BindsTo=, Wants=, Requisite=,\nPartOf= (ours: fleet ignored them) and [X-Fleet] StartAfter=, and theirs, as a tree:\neach with its desired state, its state and the machine it runs on. Related units run\non one machine.\n\nShow what apache@8888.service pulls in:\n\tfleetctl list-dependencies apache@8888.service", options: &[("-l, --full=false", "Do not truncate machine IDs.")] },
    Command { name: "list-machines", summary: "Enumerate the current hosts in the cluster", usage: "[-l|--full] [--no-legend] [--fields=...]", description: "Lists the machines in the cluster.\n\nFields: machine, ip, metadata (default: machine,ip,metadata).", options: TABLE },
    Command { name: "list-unit-files", summary: "List the units that exist in the cluster.", usage: "[--full] [--no-legend] [--fields=...]", description: "Lists the units in the cluster, with their desired and current states.\n\nFields: desc, dstate, global, hash, state, target, unit\n(default: unit,hash,dstate,state,target).", options: TABLE },
    Command { name: "list-units", summary: "List the current state of units in the cluster", usage: "[-l|--full] [--no-legend] [--fields=...]", description: "Lists the state of the units on each machine, as their init system reports it.\n\nFields: active, hash, load, machine, sub, unit (default: unit,machine,active,sub).", options: TABLE },
    Command { name: "load", summary: "Schedule one or more units in the cluster, first submitting them if necessary.", usage: "[--no-block|--block-attempts=N] UNIT...", description: "Places units on machines of the cluster without starting them, submitting them first\nif needed (from a file, or from a template in the cluster or next to the file).\n\nLoad a unit file:\n\tfleetctl load foo.service", options: CREATING },
    Command { name: "restart", summary: "Instruct systemd to restart one or more units in the cluster.", usage: "[--no-block|--block-attempts=N] UNIT...", description: "Stops and starts units again. A global unit is restarted on every machine.\n\nRestart a unit:\n\tfleetctl restart foo.service", options: BLOCKING },
    Command { name: "ssh", summary: "Open interactive shell on a machine in the cluster", usage: "[-A|--forward-agent] [--machine|--unit] {MACHINE|UNIT} [COMMAND...]", description: "Opens a shell, or runs a command, on a machine of the cluster: given by a prefix of\nits ID, or by a unit that runs there. It uses the system's ssh (user --ssh-username,\nhost keys in --known-hosts-file).\n\nOpen a shell on the machine of a unit, through a bastion:\n\tfleetctl --tunnel 10.10.10.10 ssh foo.service\n\nRun a command:\n\tfleetctl ssh 2444264c -- ls -l /", options: &[
        ("-m, --machine=", "Connect to the machine with this ID (prefix)."),
        ("-u, --unit=", "Connect to the machine running this unit."),
        ("-A, --forward-agent=false", "Forward the local ssh-agent to the machine."),
        ("--ssh-port=22", "Connect to sshd on this port."),
    ] },
    Command { name: "start", summary: "Instruct systemd to start one or more units in the cluster, first submitting and loading if necessary.", usage: "[--no-block|--block-attempts=N] UNIT...", description: "Starts units, submitting and loading them first if needed. When a unit cannot be\nplaced, the reason is printed, and fleetctl stops waiting for it after 10 s (or\n--block-attempts); it stays in the cluster. A unit that runs and ends (a oneshot)\nhas started; one that fails, or whose start is refused, is told with the reason.\nEvery unit's outcome is told; the exit code is 1 if any did not start.\n\nStart a unit:\n\tfleetctl start foo.service\n\nStart every unit file of a directory:\n\tfleetctl start myservice/*", options: CREATING },
    Command { name: "status", summary: "Output the status of one or more units in the cluster", usage: "UNIT...", description: "Outputs the status of units from the machines they run on (a global unit: from every\nmachine): `systemctl status` where systemd runs them, else their state and last log lines.\n\nShow the status of a unit:\n\tfleetctl status foo.service", options: &[("--ssh-port=22", "Connect to a remote machine's sshd on this port."), ("--machine=", "Only the machine with this ID (a global unit's copy there)."), ("--here=false", "Ask the fleetd of --endpoint only, never over ssh.")] },
    Command { name: "stop", summary: "Instruct systemd to stop one or more units in the cluster.", usage: "[--no-block|--block-attempts=N] UNIT...", description: "Stops units, which stay loaded on their machines.\n\nStop a unit:\n\tfleetctl stop foo.service", options: BLOCKING },
    Command { name: "submit", summary: "Upload one or more units to the cluster without starting them", usage: "UNIT...", description: "Uploads unit files to the cluster, without placing or starting them.\n\nSubmit a unit file:\n\tfleetctl submit foo.service", options: &[("--replace=false", "Replace the units in the cluster with the local unit files.")] },
    Command { name: "unload", summary: "Unschedule one or more units in the cluster.", usage: "[--no-block|--block-attempts=N] UNIT...", description: "Stops units and removes them from their machines; they stay in the cluster.\n\nUnload a unit:\n\tfleetctl unload foo.service", options: BLOCKING },
    Command { name: "verify", summary: "Check unit files for problems, with line numbers", usage: "UNIT_FILE...", description: "Reads unit files and reports what fleet or the init system would refuse or ignore,\nwith line numbers. Nothing is sent to the cluster.", options: &[] },
    Command { name: "version", summary: "Print the version and exit", usage: "", description: "Prints the version of fleetctl.", options: &[] },
];

const GLOBAL_OPTIONS: &[(&str, &str)] = &[
    ("--api-token-file=", "File holding the bearer token for a TCP API that requires one (or set FLEETCTL_API_TOKEN; never on the command line)."),
    ("--ca-file=", "Path to the CA file that signed the API's certificate."),
    ("--cert-file=", "Path to the client certificate for the API."),
    ("--debug=false", "Print out more debug information to stderr."),
    ("--driver=API", "How to reach the cluster: only API is supported."),
    ("--endpoint=unix:///var/run/fleet.sock", "Location of the fleet API (unix:///path or http(s)://host:port)."),
    ("--key-file=", "Path to the client key for the API."),
    ("--known-hosts-file=~/.fleetctl/known_hosts", "File used to store remote machine fingerprints."),
    ("--request-timeout=3", "Timeout in seconds per request to the API."),
    ("--ssh-timeout=10", "Timeout in seconds when establishing an SSH connection."),
    ("--ssh-username=core", "Username to use when connecting to a machine."),
    ("--strict-host-key-checking=true", "Verify host keys presented by remote machines before connecting."),
    ("--tunnel=", "Establish an SSH tunnel through the provided address (host[:port]) for communication with fleet and etcd."),
];

/// The command `word` names: its full name or a prefix of exactly one command.
pub fn resolve(word: &str) -> Option<&'static Command> {
    if let Some(exact) = COMMANDS.iter().find(|c| c.name == word) {
        return Some(exact);
    }
    let mut matching = COMMANDS.iter().filter(|c| c.name.starts_with(word));
    match (matching.next(), matching.next()) {
        (Some(only), None) if !word.is_empty() => Some(only),
        _ => None,
    }
}

pub fn run(args: &[String], io: &mut Io<'_>) -> io::Result<i32> {
    match args.first() {
        None => {
            io.out.write_all(global_usage().as_bytes())?;
            Ok(0)
        }
        Some(word) => match resolve(word) {
            Some(command) => {
                io.out.write_all(command_usage(command).as_bytes())?;
                Ok(0)
            }
            None => {
                writeln!(io.err, "Unrecognized command: {word}")?;
                Ok(1)
            }
        },
    }
}

fn options(list: &[(&str, &str)]) -> String {
    list.iter()
        .map(|(flag, what)| format!("\t{flag}\t{what}\n"))
        .collect()
}

pub fn global_usage() -> String {
    let commands: String = COMMANDS
        .iter()
        .map(|c| format!("\t{}\t{}\n", c.name, c.summary))
        .collect();
    format!(
        "NAME:\n\tfleetctl - fleetctl is a command-line interface to fleet, the cluster-wide CoreOS init system.\n\n\
         USAGE:\n\tfleetctl [global options] <command> [command options] [arguments...]\n\n\
         VERSION:\n\t{VERSION}\n\n\
         COMMANDS:\n{commands}\n\
         GLOBAL OPTIONS:\n{}\n\
         Global options can also be configured via upper-case environment variables prefixed with \"FLEETCTL_\"\n\
         For example, \"some-flag\" => \"FLEETCTL_SOME_FLAG\"\n\n\
         Run \"fleetctl help <command>\" for more details on a specific command.\n",
        options(GLOBAL_OPTIONS)
    )
}

pub fn command_usage(command: &Command) -> String {
    let description: String = command
        .description
        .lines()
        .map(|line| format!("\t{line}\n"))
        .collect();
    let mut text = format!(
        "NAME:\n\tfleetctl {} - {}\n\nUSAGE:\n\tfleetctl {} {}\n\nDESCRIPTION:\n{description}\n",
        command.name, command.summary, command.name, command.usage
    );
    if !command.options.is_empty() {
        text.push_str(&format!("OPTIONS:\n{}\n", options(command.options)));
    }
    text.push_str("For help on global options run \"fleetctl help\"\n");
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixes_resolve_to_one_command() {
        for (word, expected) in [
            ("list-m", Some("list-machines")),
            ("list-units", Some("list-units")),
            ("list-unit", None),
            ("list-unit-", Some("list-unit-files")),
            ("list-d", Some("list-dependencies")),
            ("list", None),
            ("sta", None),
            ("star", Some("start")),
            ("j", Some("journal")),
            ("", None),
            ("bogus", None),
        ] {
            assert_eq!(resolve(word).map(|c| c.name), expected, "{word}");
        }
    }

    #[test]
    fn every_command_has_help() {
        for command in COMMANDS {
            let text = command_usage(command);
            assert!(text.starts_with(&format!("NAME:\n\tfleetctl {} - ", command.name)));
            assert!(global_usage().contains(&format!("\t{}\t{}\n", command.name, command.summary)));
        }
    }
}
