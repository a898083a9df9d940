//! `fleetctl status UNIT...`: fleet ran `systemctl status -l UNIT` on the unit's machine. Here:
//! that machine's fleetd answers (over ssh, `fleetctl status --here`, when it is another
//! machine): with `systemctl status` where systemd runs the unit, else with the unit's state
//! laid out like systemctl's summary and its last log lines. A global unit is shown once per
//! machine it runs on. The exit code is systemctl's (3: a unit not active), as fleet's was.

use std::io;

use fleet_unit::name::mangle;
use fleet_wire::client::{Client, ClientError};
use fleet_wire::schema::UnitStatusText;
use fleet_wire::schema::{Machine, Unit, UnitState};

use super::flags::{self, switch, value, Flag};
use super::journal::{show_log, LogRequest, Output};
use super::list_units::machine_column;
use super::remote::Remote;
use crate::{ssh, Globals, Io};

const FLAGS: &[Flag] = &[value(&["ssh-port"]), value(&["machine"]), switch(&["here"])];

/// Log lines shown under the summary, as systemctl shows.
const LOG_LINES: usize = 10;

pub fn run(args: &[String], globals: &Globals, io: &mut Io<'_>) -> io::Result<i32> {
    let Some(parsed) = flags::or_explain(flags::parse(args, FLAGS, false), io)? else {
        return Ok(1);
    };
    let Some(ssh_port) = flags::or_explain(flags::number(&parsed, "ssh-port", 22), io)? else {
        return Ok(1);
    };
    if parsed.args.is_empty() {
        writeln!(io.err, "No units given")?;
        return Ok(1);
    }
    let client = globals.client();
    // Every unit is checked before anything is shown, as fleet did.
    let mut units = Vec::new();
    for arg in &parsed.args {
        let name = mangle(arg);
        match client.unit(&name) {
            Ok(Some(unit)) if unit.current_state == "inactive" => {
                writeln!(io.err, "Unit {name} does not appear to be loaded.")?;
                if !unit.unplaceable_reason.is_empty() {
                    writeln!(
                        io.err,
                        "Unit {name} cannot be placed: {}",
                        unit.unplaceable_reason
                    )?;
                }
                failures(&unit, &mut *io.err)?;
                return Ok(1);
            }
            Ok(Some(unit)) => units.push(unit),
            Ok(None) => {
                writeln!(io.err, "Unit {name} does not exist.")?;
                return Ok(1);
            }
            Err(e) => {
                writeln!(io.err, "Error retrieving unit: {e}")?;
                return Ok(1);
            }
        }
    }
    let context = Context {
        globals,
        client: &client,
        machines: client.machines().unwrap_or_default(),
        ssh_port,
        here: parsed.is_set("here"),
    };
    let wanted = parsed.value("machine");
    let mut first = true;
    let mut code = 0;
    for unit in &units {
        let states = match client.states_of(&unit.name) {
            Ok(states) => states,
            Err(e) => {
                writeln!(io.err, "Error retrieving the state of {}: {e}", unit.name)?;
                return Ok(1);
            }
        };
        let global = unit.is_global();
        let states: Vec<UnitState> = states
            .into_iter()
            .filter(|s| global || s.machine_id == unit.machine_id)
            .filter(|s| wanted.is_none_or(|w| s.machine_id.starts_with(w)))
            .collect();
        if global && states.is_empty() {
            // fleet printed a blank line and exited 0.
            writeln!(io.err, "{}", super::global_nowhere(unit))?;
            code = if code == 0 { 3 } else { code };
            continue;
        }
        for state in states {
            // The blank line between units matches systemctl status.
            if !std::mem::take(&mut first) {
                writeln!(io.out)?;
            }
            match context.show(unit, &state, io)? {
                // The unit could not be shown at all: nothing more is.
                Shown::Failed(code) => return Ok(code),
                Shown::Status(0) => {}
                Shown::Status(status) => code = if code == 0 { status } else { code },
            }
        }
        failures(unit, &mut *io.out)?;
    }
    Ok(code)
}

/// The unit's failures and what was done about them (ours: absent for a unit that had none),
/// when it is to move, and what its `StartAfter=` waits for.
fn failures(unit: &Unit, out: &mut dyn io::Write) -> io::Result<()> {
    if unit.failures.is_empty() && unit.rescheduling.is_empty() && unit.waiting_for.is_empty() {
        return Ok(());
    }
    writeln!(out)?;
    if !unit.waiting_for.is_empty() {
        let waiting = fleet_unit::requirements::waiting_reason(&unit.waiting_for);
        writeln!(out, "Unit {}: not started yet, {waiting}", unit.name)?;
    }
    if !unit.rescheduling.is_empty() {
        writeln!(out, "Unit {}: {}", unit.name, unit.rescheduling)?;
    }
    if !unit.failures.is_empty() {
        writeln!(out, "Failures of {} (oldest first):", unit.name)?;
    }
    for failure in &unit.failures {
        writeln!(
            out,
            "  {} on {}: {}; {}",
            failure.time,
            machine_column(&failure.machine_id, None, false),
            failure.what,
            failure.action
        )?;
    }
    Ok(())
}

struct Context<'a> {
    globals: &'a Globals,
    client: &'a Client,
    machines: Vec<Machine>,
    ssh_port: u16,
    /// Only what the fleetd of the endpoint can tell: no ssh.
    here: bool,
}

enum Shown {
    /// Shown, with systemctl's exit code.
    Status(i32),
    /// Not shown, for the reason printed; the exit code.
    Failed(i32),
}

impl Context<'_> {
    /// The status of `unit` on `state`'s machine.
    fn show(&self, unit: &Unit, state: &UnitState, io: &mut Io<'_>) -> io::Result<Shown> {
        let machine = state.machine_id.as_str();
        match self.client.unit_status(&unit.name, Some(machine)) {
            Ok(UnitStatusText {
                text: Some(text),
                exit_code,
                ..
            }) => {
                write!(io.out, "{text}")?;
                Ok(Shown::Status(exit_code))
            }
            // The machine's fleetd runs units without systemd.
            Ok(UnitStatusText { description, .. }) => {
                self.summary(unit, state, description.as_deref(), io)
            }
            Err(ClientError::Api { code: 409, .. }) if !self.here => {
                let command = format!(
                    "status --here --machine {} {}",
                    ssh::quote(machine),
                    ssh::quote(&unit.name)
                );
                let remote = Remote {
                    machine,
                    ssh_port: self.ssh_port,
                    sudo: false,
                };
                // The remote fleetctl's own exit code: systemctl's, or 1 when it failed.
                match remote.fleetctl(self.globals, self.client, &command, io)? {
                    code @ (0 | 3) => Ok(Shown::Status(code)),
                    code => Ok(Shown::Failed(code)),
                }
            }
            // A fleetd without the status endpoint (fleet's own): the summary and the log.
            Err(_) => self.summary(unit, state, None, io),
        }
    }

    /// The state of `unit` laid out like systemctl's summary, then its last log lines. The
    /// description is the machine's (`described`, specifiers resolved) where it said one,
    /// else the unit file's own words.
    fn summary(
        &self,
        unit: &Unit,
        state: &UnitState,
        described: Option<&str>,
        io: &mut Io<'_>,
    ) -> io::Result<Shown> {
        let written = || {
            unit.options
                .iter()
                .rfind(|o| o.section == "Unit" && o.name == "Description")
                .map(|o| o.value.as_str())
        };
        let description = described
            .or_else(written)
            .map(|d| format!(" - {d}"))
            .unwrap_or_default();
        let dot = match state.systemd_active_state.as_str() {
            "active" => "●",
            _ => "○",
        };
        let ip = self
            .machines
            .iter()
            .find(|m| m.id == state.machine_id)
            .map(|m| m.primary_ip.as_str());
        writeln!(io.out, "{dot} {}{description}", unit.name)?;
        writeln!(io.out, "   Loaded: {}", state.systemd_load_state)?;
        writeln!(
            io.out,
            "   Active: {} ({})",
            state.systemd_active_state, state.systemd_sub_state
        )?;
        if !state.reason.is_empty() {
            writeln!(io.out, "   Reason: {}", state.reason)?;
        }
        if !state.health.is_empty() {
            writeln!(io.out, "   Health: {}", health_line(state))?;
        }
        writeln!(
            io.out,
            "  Machine: {}",
            machine_column(&state.machine_id, ip, false)
        )?;
        writeln!(io.out)?;
        let request = LogRequest {
            name: unit.name.clone(),
            lines: LOG_LINES,
            follow: false,
            output: Output::Short,
            sudo: false,
            ssh_port: self.ssh_port,
        };
        let code = show_log(
            self.globals,
            self.client,
            &request,
            Some(&state.machine_id),
            !self.here,
            io,
        )?;
        Ok(match code {
            // systemctl's code for a unit that is not active.
            0 if state.systemd_active_state != "active" => Shown::Status(3),
            0 => Shown::Status(0),
            code => Shown::Failed(code),
        })
    }
}

/// `healthy (HTTP/1.1 200 OK)`: a unit's health and what its checks said.
fn health_line(state: &UnitState) -> String {
    match state.health_output.lines().next() {
        Some(said) if !said.is_empty() => format!("{} ({said})", state.health),
        _ => state.health.clone(),
    }
}
