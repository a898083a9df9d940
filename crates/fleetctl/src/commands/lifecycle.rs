//! The commands that move units through their states, as fleetctl 1.0 did them:
//! `submit`, `load` and `start` create units that are not in the cluster yet (from the file, or
//! from the template of an instance) and set them inactive, loaded or launched; `stop` and
//! `unload` set loaded or inactive; each waits (`--block-attempts`, `--no-block`) and prints
//! what fleetctl printed.

use std::io;

use fleet_unit::name::{mangle, validate_name, NameInfo};
use fleet_unit::UnitFile;
use fleet_wire::client::Client;
use fleet_wire::schema::{wire_options, Unit, UnitState};

use crate::commands::list_units::machine_column;
use crate::commands::progress::Progress;
use crate::commands::waits::{
    poll, wait_active, wait_for, wait_global, wait_placed, Activation, Bound, Placement,
    STATE_BOUND,
};
use crate::{Globals, Io};

/// Where a command takes its units.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    Submit,
    Load,
    Start,
}

impl Target {
    fn state(self) -> &'static str {
        match self {
            Target::Submit => "inactive",
            Target::Load => "loaded",
            Target::Start => "launched",
        }
    }

    fn verb(self) -> &'static str {
        match self {
            Target::Submit => "submit",
            Target::Load => "load",
            Target::Start => "start",
        }
    }
}

/// Flags shared by the blocking commands, and the unit arguments.
struct Blocking {
    block: bool,
    bound: Bound,
    replace: bool,
    names: Vec<String>,
}

/// The flags, or the exit code to end with (after saying why).
fn blocking_flags(args: &[String], io: &mut Io<'_>) -> io::Result<Result<Blocking, i32>> {
    let mut block = true;
    let mut bound = Bound::Default;
    let mut replace = false;
    let mut names = Vec::new();
    let mut rest = args.iter();
    while let Some(arg) = rest.next() {
        let flag = arg.trim_start_matches('-');
        match flag.split_once('=').unwrap_or((flag, "")) {
            ("no-block", _) if arg.starts_with('-') => block = false,
            ("block-attempts", value) if arg.starts_with('-') => {
                let value = match value.is_empty() {
                    true => rest.next().cloned().unwrap_or_default(),
                    false => value.to_owned(),
                };
                match value.parse() {
                    Ok(n) => bound = Bound::Attempts(n),
                    Err(_) => {
                        writeln!(io.err, "invalid --block-attempts {value:?}")?;
                        return Ok(Err(1));
                    }
                }
            }
            ("replace", _) if arg.starts_with('-') => replace = true,
            ("sign", _) if arg.starts_with('-') => {}
            _ => names.push(arg.clone()),
        }
    }
    if names.is_empty() {
        writeln!(io.err, "No units given")?;
        return Ok(Err(0));
    }
    Ok(Ok(Blocking {
        block,
        bound,
        replace,
        names,
    }))
}

/// `submit`, `load`, `start`.
pub fn run(target: Target, args: &[String], globals: &Globals, io: &mut Io<'_>) -> io::Result<i32> {
    let Blocking {
        block,
        bound,
        replace,
        names,
    } = match blocking_flags(args, io)? {
        Ok(flags) => flags,
        Err(code) => return Ok(code),
    };
    let client = globals.client();
    // The names before the first invalid one are worked on; that one is the error, as when
    // fleetctl went one by one.
    let invalid = names
        .iter()
        .position(|arg| validate_name(mangle(arg).as_bytes()).is_err());
    let valid = &names[..invalid.unwrap_or(names.len())];
    let mut started = Vec::new();
    for step in prepare_all(&client, valid, target, replace, bound) {
        io.out.write_all(&step.out)?;
        io.err.write_all(&step.err)?;
        match step.outcome {
            Prepared::Ready(unit) => started.push(*unit),
            Prepared::Skipped => {}
            Prepared::Failed => return Ok(1),
        }
    }
    if let Some(at) = invalid {
        if let Err(e) = validate_name(mangle(&names[at]).as_bytes()) {
            writeln!(io.err, "Error creating units: {e}")?;
        }
        return Ok(1);
    }
    if target == Target::Submit {
        return Ok(0);
    }
    // Every unit is waited for and its outcome told, whatever became of the others.
    let mut code = 0;
    for unit in &started {
        let name = &unit.name;
        let global = unit.is_global();
        if global || !block {
            let kind = if global { "global unit" } else { "unit" };
            writeln!(io.out, "Triggered {kind} {name} {}", target.verb())?;
            // fleet never waited for a global unit; it is told on how many machines it got
            // there (a line after fleet's).
            if global && block && !told_global(&client, unit, target, bound, io)? {
                code = 1;
            }
            continue;
        }
        if !arrive(&client, name, target, bound, io)? {
            code = 1;
        }
    }
    Ok(code)
}

/// Waits for a unit to reach the target's state (and, for a start, to run); says where it
/// got, or why it cannot get there. `false` when it did not.
fn arrive(
    client: &Client,
    name: &str,
    target: Target,
    bound: Bound,
    io: &mut Io<'_>,
) -> io::Result<bool> {
    let state = target.state();
    match wait_placed(client, name, state, bound, io)? {
        Placement::Reached(unit) => {
            print_placed(client, &unit, io)?;
            if target == Target::Start {
                return active_or_explain(client, name, bound, io);
            }
            Ok(true)
        }
        Placement::Unplaceable(reason) => {
            writeln!(io.err, "Unit {name} cannot be placed: {reason}. It stays in the cluster, desired {state}, and goes to a machine once one can take it (`fleetctl destroy {name}` removes it).")?;
            Ok(false)
        }
        Placement::Refused(refused) => {
            writeln!(
                io.err,
                "Unit {name} failed to start on {}: {}",
                refused.machine_id, refused.reason
            )?;
            Ok(false)
        }
        Placement::TimedOut => {
            writeln!(io.err, "Error waiting for units: timed out waiting for unit {name} to report state {state}")?;
            Ok(false)
        }
    }
}

/// `Unit X launched on N machines` once a global unit got there; `false` after saying why it
/// runs nowhere.
fn told_global(
    client: &Client,
    unit: &Unit,
    target: Target,
    bound: Bound,
    io: &mut Io<'_>,
) -> io::Result<bool> {
    let state = target.state();
    match wait_global(client, unit, state, bound) {
        Some(count) => {
            let machines = if count == 1 { "machine" } else { "machines" };
            writeln!(io.out, "Unit {} {state} on {count} {machines}", unit.name)?;
            Ok(true)
        }
        None => {
            writeln!(io.err, "{}", super::global_nowhere(unit))?;
            Ok(false)
        }
    }
}

/// One unit's step: what it printed, and where it got.
struct Step {
    out: Vec<u8>,
    err: Vec<u8>,
    outcome: Prepared,
}

enum Prepared {
    /// In the cluster at its target state (`submit`: created).
    Ready(Box<Unit>),
    Skipped,
    /// The error is said; the command ends with it.
    Failed,
}

/// [`prepare`] for every name, several at a time (created, compared, set to their target
/// state: a thousand unit files are submitted in seconds, not a thousand round trips after
/// another), in the order given; after a failure no further unit is begun (those under way
/// finish), and the steps after it are left out.
fn prepare_all(
    client: &Client,
    names: &[String],
    target: Target,
    replace: bool,
    bound: Bound,
) -> Vec<Step> {
    let steps = super::in_order::each(
        names,
        |arg| prepare(client, arg, target, replace, bound),
        |step| matches!(step.outcome, Prepared::Failed),
    );
    let mut ordered = Vec::new();
    for step in steps {
        let Some(step) = step else { break };
        let failed = matches!(step.outcome, Prepared::Failed);
        ordered.push(step);
        if failed {
            break;
        }
    }
    ordered
}

/// Brings the unit of `arg` into the cluster (created, or compared with the local file) and
/// to the target's desired state.
fn prepare(client: &Client, arg: &str, target: Target, replace: bool, bound: Bound) -> Step {
    let (mut out, mut err) = (Vec::new(), Vec::new());
    let mut io = Io {
        out: &mut out,
        err: &mut err,
        // Written to memory, shown later: no progress is drawn.
        terminal: false,
    };
    // Writes go to memory and cannot fail.
    let outcome =
        prepare_into(client, arg, target, replace, bound, &mut io).unwrap_or(Prepared::Failed);
    Step { out, err, outcome }
}

fn prepare_into(
    client: &Client,
    arg: &str,
    target: Target,
    replace: bool,
    bound: Bound,
    io: &mut Io<'_>,
) -> io::Result<Prepared> {
    let name = mangle(arg);
    let unit = match client.unit(&name) {
        Ok(Some(unit)) => {
            match compare_local(client, arg, &name, unit, target, replace, bound, io)? {
                Local::Proceed(unit) => *unit,
                Local::Skip => return Ok(Prepared::Skipped),
                Local::Fail => return Ok(Prepared::Failed),
            }
        }
        Ok(None) => match create(client, arg, &name, bound, io)? {
            Some(unit) => unit,
            None => return Ok(Prepared::Failed),
        },
        Err(e) => {
            writeln!(io.err, "Error retrieving Unit({name}) from Registry: {e}")?;
            return Ok(Prepared::Failed);
        }
    };
    if target != Target::Submit
        && unit.desired_state != target.state()
        && !set_desired(client, &name, target.state(), io)?
    {
        return Ok(Prepared::Failed);
    }
    if target == Target::Start
        && unit.desired_state == "launched"
        && !unit.is_global()
        && !start_again_if_failed(client, &name, bound, io)?
    {
        return Ok(Prepared::Failed);
    }
    Ok(Prepared::Ready(Box::new(unit)))
}

/// A unit already launched whose run failed (or whose start was refused) is started again,
/// as `systemctl start` starts a failed unit: its desired state goes to loaded, is waited
/// for, and back to launched. `false` after saying why it could not.
fn start_again_if_failed(
    client: &Client,
    name: &str,
    bound: Bound,
    io: &mut Io<'_>,
) -> io::Result<bool> {
    let failed = match client.state(name) {
        Ok(Some(state)) => state.systemd_active_state == "failed" || !state.reason.is_empty(),
        _ => false,
    };
    if !failed {
        return Ok(true);
    }
    if !set_desired(client, name, "loaded", io)? {
        return Ok(false);
    }
    if wait_for(client, name, "loaded", bound).is_none() {
        writeln!(
            io.err,
            "Error waiting for units: timed out waiting for unit {name} to report state loaded"
        )?;
        return Ok(false);
    }
    set_desired(client, name, "launched", io)
}

/// What to do with a unit already in the cluster, given the local file of the same name.
enum Local {
    Proceed(Box<Unit>),
    Skip,
    Fail,
}

/// fleet's `--replace` rules: a differing local file is only warned about without `--replace`;
/// with it, the unit's contents are replaced (it starts over as inactive) when its state allows.
#[allow(clippy::too_many_arguments)]
fn compare_local(
    client: &Client,
    arg: &str,
    name: &str,
    unit: Unit,
    target: Target,
    replace: bool,
    bound: Bound,
    io: &mut Io<'_>,
) -> io::Result<Local> {
    let Ok(bytes) = std::fs::read(arg) else {
        return Ok(Local::Proceed(Box::new(unit)));
    };
    let Ok(local) = UnitFile::parse(&bytes) else {
        return Ok(Local::Proceed(Box::new(unit)));
    };
    let stored = unit.unit_file();
    if local.hash() == stored.hash() {
        if replace {
            writeln!(io.out, "Found same Unit({name}) in Registry, nothing to do")?;
        }
        return Ok(Local::Proceed(Box::new(unit)));
    }
    if !replace {
        writeln!(
            io.err,
            "WARNING: Unit {name} in registry differs from local unit file {arg}. Add --replace to override."
        )?;
        return Ok(Local::Proceed(Box::new(unit)));
    }
    let allowed: &[&str] = match target {
        Target::Submit => &["inactive"],
        Target::Load => &["inactive", "loaded"],
        Target::Start => &["inactive", "loaded", "launched"],
    };
    if !allowed.contains(&unit.desired_state.as_str()) {
        writeln!(
            io.err,
            "Warning: can not replace Unit({name}) in state '{}', use the appropriate command",
            unit.desired_state
        )?;
        return Ok(Local::Skip);
    }
    let replacement = Unit {
        name: name.to_owned(),
        options: wire_options(&local),
        ..Unit::default()
    };
    if let Err(e) = client.put_unit(&replacement) {
        writeln!(io.err, "Error replacing Unit({name}): {e}")?;
        return Ok(Local::Fail);
    }
    match wait_for(client, name, "inactive", bound) {
        Some(unit) => {
            writeln!(io.out, "Unit {name} {}", shown_state(&unit))?;
            Ok(Local::Proceed(Box::new(unit)))
        }
        None => {
            writeln!(io.err, "Error waiting for units: timed out waiting for unit {name} to report state inactive")?;
            Ok(Local::Fail)
        }
    }
}

/// A unit's currentState, as `Unit X <state>` shows it; a global unit has none (fleet printed
/// `Unit X ` and nothing more): its desired state, said to be global.
fn shown_state(unit: &Unit) -> String {
    match unit.is_global() {
        true => format!("{} (global)", unit.desired_state),
        false => unit.current_state.clone(),
    }
}

/// `Unit X <state> on <machine>`, as the blocking waits printed it.
fn print_placed(client: &Client, unit: &Unit, io: &mut Io<'_>) -> io::Result<()> {
    let machines = client.machines().unwrap_or_default();
    let ip = machines
        .iter()
        .find(|m| m.id == unit.machine_id)
        .map(|m| m.primary_ip.as_str());
    match unit.machine_id.is_empty() {
        true => writeln!(io.out, "Unit {} {}", unit.name, unit.current_state),
        false => writeln!(
            io.out,
            "Unit {} {} on {}",
            unit.name,
            unit.current_state,
            machine_column(&unit.machine_id, ip, false)
        ),
    }
}

/// `restart`: a launched unit goes to loaded and back to launched, a loaded one to launched,
/// each step waited for (fleet 1.0 waited for "launched" after setting "loaded" and could hang).
pub fn run_restart(args: &[String], globals: &Globals, io: &mut Io<'_>) -> io::Result<i32> {
    let Blocking { bound, names, .. } = match blocking_flags(args, io)? {
        Ok(flags) => flags,
        Err(code) => return Ok(code),
    };
    let client = globals.client();
    let Some(units) = super::all_units(&client, io)? else {
        return Ok(1);
    };
    // Every unit is restarted and told, whatever became of the others.
    let mut code = 0;
    for arg in &names {
        let name = mangle(arg);
        let restarted = match units.iter().find(|u| u.name == name) {
            Some(unit) if unit.is_global() => restart_global(&client, unit, bound, io)?,
            Some(unit) => restart(&client, unit, bound, io)?,
            None => {
                writeln!(io.err, "Unit {name} not found")?;
                false
            }
        };
        if !restarted {
            code = 1;
        }
    }
    Ok(code)
}

/// Restarts a unit that is not global; `false` after saying why it did not come back.
fn restart(client: &Client, unit: &Unit, bound: Bound, io: &mut Io<'_>) -> io::Result<bool> {
    let name = &unit.name;
    let steps: &[&str] = match unit.current_state.as_str() {
        "launched" => &["loaded", "launched"],
        "loaded" => &["launched"],
        other => {
            writeln!(io.err, "Unable to restart unit {name} in state {other}")?;
            return Ok(false);
        }
    };
    let mut stopped = Vec::new();
    for state in steps {
        let Some(with) = set_desired_telling(client, name, state, io)? else {
            return Ok(false);
        };
        stopped.extend(with);
        match wait_for(client, name, state, bound) {
            Some(unit) => print_placed(client, &unit, io)?,
            None => {
                writeln!(io.err, "Error waiting for units: timed out waiting for unit {name} to report state {state}")?;
                return Ok(false);
            }
        }
    }
    Ok(
        start_again_with(client, name, &stopped, io)?
            && active_or_explain(client, name, bound, io)?,
    )
}

/// Restarts a global unit on every machine at once: fleet ran `systemctl restart` on each over
/// ssh; here its desired state goes to loaded until no machine reports it active, then back
/// to launched until every machine that runs it does. `false` after saying why not.
fn restart_global(client: &Client, unit: &Unit, bound: Bound, io: &mut Io<'_>) -> io::Result<bool> {
    let name = &unit.name;
    if unit.desired_state != "launched" {
        writeln!(
            io.err,
            "Unable to restart global unit {name}: it is {}, not launched",
            unit.desired_state
        )?;
        return Ok(false);
    }
    let mut machines = 0;
    let mut stopped = Vec::new();
    for (state, running) in [("loaded", false), ("launched", true)] {
        let Some(with) = set_desired_telling(client, name, state, io)? else {
            return Ok(false);
        };
        stopped.extend(with);
        let settled = poll(bound.limit(STATE_BOUND), || {
            let states = client.states_of(name).ok()?;
            let active = |s: &UnitState| s.systemd_active_state == "active";
            let done = match running {
                false => !states.iter().any(active),
                true => !states.is_empty() && states.iter().all(active),
            };
            done.then_some(states.len())
        });
        match settled {
            Some(count) => machines = count,
            None => {
                let want = if running { "active" } else { "stopped" };
                writeln!(io.err, "Error waiting for unit states: timed out waiting for global unit {name} to be {want} on every machine")?;
                return Ok(false);
            }
        }
    }
    writeln!(
        io.out,
        "Restarted global unit {name} on {machines} machines"
    )?;
    start_again_with(client, name, &stopped, io)
}

/// `stop` (to loaded) and `unload` (to inactive): units already in the cluster only.
pub fn run_down(
    unload: bool,
    args: &[String],
    globals: &Globals,
    io: &mut Io<'_>,
) -> io::Result<i32> {
    let Blocking {
        block,
        bound,
        names,
        ..
    } = match blocking_flags(args, io)? {
        Ok(flags) => flags,
        Err(code) => return Ok(code),
    };
    let (state, verb, done) = match unload {
        true => ("inactive", "unload", "unloaded"),
        false => ("loaded", "stop", "stopped"),
    };
    let client = globals.client();
    let Some(units) = super::all_units(&client, io)? else {
        return Ok(1);
    };
    let mut changed = Vec::new();
    for arg in &names {
        let name = mangle(arg);
        let Some(unit) = units.iter().find(|u| u.name == name) else {
            continue;
        };
        let global = unit.is_global();
        if !unload && unit.current_state == "inactive" {
            writeln!(io.err, "Unable to stop unit {name} in state inactive")?;
            return Ok(1);
        }
        if !global && (unit.current_state == state || (!unload && unit.current_state == "loaded")) {
            continue;
        }
        if !set_desired(&client, &name, state, io)? {
            return Ok(1);
        }
        if global {
            writeln!(io.out, "Triggered global unit {name} {verb}")?;
            continue;
        }
        changed.push(name);
    }
    // Every unit is waited for and told; those that got there are listed at the end.
    let mut arrived = Vec::new();
    for name in &changed {
        if !block {
            writeln!(io.out, "Triggered unit {name} {verb}")?;
            arrived.push(name.clone());
            continue;
        }
        match wait_for(&client, name, state, bound) {
            Some(unit) => {
                print_placed(&client, &unit, io)?;
                arrived.push(name.clone());
            }
            None => {
                writeln!(io.err, "Error waiting for units: timed out waiting for unit {name} to report state {state}")?;
            }
        }
    }
    if arrived.len() < changed.len() {
        return Ok(1);
    }
    writeln!(io.err, "Successfully {done} units [{}].", arrived.join(" "))?;
    Ok(0)
}

/// Sets the unit's desired state; `false` after saying why it could not.
fn set_desired(client: &Client, name: &str, state: &str, io: &mut Io<'_>) -> io::Result<bool> {
    Ok(set_desired_telling(client, name, state, io)?.is_some())
}

/// Sets the unit's desired state, printing what that did to related units; the units that
/// stopped with it, or `None` after saying why it could not.
fn set_desired_telling(
    client: &Client,
    name: &str,
    state: &str,
    io: &mut Io<'_>,
) -> io::Result<Option<Vec<String>>> {
    let put = Unit {
        desired_state: state.into(),
        name: name.to_owned(),
        ..Unit::default()
    };
    match client.put_unit_related(&put) {
        Ok(related) => {
            let mut stopped = Vec::new();
            for line in related {
                if let Some(said) = related_line(name, &line) {
                    writeln!(io.out, "{said}")?;
                }
                if let Some(unit) = line.strip_prefix("stopped-with ") {
                    stopped.push(unit.to_owned());
                }
            }
            Ok(Some(stopped))
        }
        Err(e) => {
            writeln!(io.err, "Error setting target state for Unit({name}): {e}")?;
            Ok(None)
        }
    }
}

/// After a restart of `name`: what stopped with it starts again, as systemd propagates a
/// restart to `BindsTo=`/`PartOf=` dependants. `false` after saying why one could not.
fn start_again_with(
    client: &Client,
    name: &str,
    stopped: &[String],
    io: &mut Io<'_>,
) -> io::Result<bool> {
    for unit in stopped {
        if !set_desired(client, unit, "launched", io)? {
            return Ok(false);
        }
        writeln!(io.out, "Unit {unit} started again with {name}")?;
    }
    Ok(true)
}

/// What fleetd's `fleet-related` header says a change of `name` did to a related unit, in
/// words; `None` for what this fleetctl does not know.
pub(super) fn related_line(name: &str, header: &str) -> Option<String> {
    let words: Vec<&str> = header.split_whitespace().collect();
    match words.as_slice() {
        ["pulled-in", unit, state] => Some(format!(
            "Unit {unit} pulled in by {name}, desired state {state}"
        )),
        ["created", unit, state, "from", template] => Some(format!(
            "Unit {unit} created from {template} and pulled in by {name}, desired state {state}"
        )),
        ["stopped-with", unit] => Some(format!(
            "Unit {unit} stops with {name}, desired state loaded"
        )),
        _ => None,
    }
}

/// Creates `name` from the file `arg` or from its template in the cluster; waits until the
/// cluster reports it (inactive). `None` after printing why it could not.
fn create(
    client: &Client,
    arg: &str,
    name: &str,
    bound: Bound,
    io: &mut Io<'_>,
) -> io::Result<Option<Unit>> {
    let options = match std::fs::read(arg) {
        Ok(bytes) => match UnitFile::parse(&bytes) {
            // fleet sent it and was told `unit does not exist and options field empty`,
            // which does not say which file of a `submit dir/*` it was.
            Ok(unit) if unit.options().is_empty() => {
                writeln!(
                    io.err,
                    "Error creating units: error creating unit from file {arg}: it holds no unit options (is it a unit file?)"
                )?;
                return Ok(None);
            }
            Ok(unit) => wire_options(&unit),
            Err(e) => {
                writeln!(
                    io.err,
                    "Error creating units: error creating unit from file {arg}: {}",
                    e.message()
                )?;
                return Ok(None);
            }
        },
        Err(_) => {
            let template = NameInfo::parse(name)
                .filter(|i| i.is_instance())
                .map(|i| i.template());
            match template.map(|t| client.unit(&t)) {
                Some(Ok(Some(template))) => template.options,
                _ => {
                    writeln!(io.err, "Error creating units: unable to find Unit({name}) in Registry or on filesystem")?;
                    return Ok(None);
                }
            }
        }
    };
    let unit = Unit {
        name: name.to_owned(),
        options,
        ..Unit::default()
    };
    if let Err(e) = client.put_unit(&unit) {
        writeln!(io.err, "Error creating units: {e}")?;
        return Ok(None);
    }
    match wait_for(client, name, "inactive", bound) {
        Some(unit) => {
            writeln!(io.out, "Unit {name} {}", shown_state(&unit))?;
            Ok(Some(unit))
        }
        None => {
            writeln!(io.err, "Error waiting for units: timed out waiting for unit {name} to report state inactive")?;
            Ok(None)
        }
    }
}

/// Waits until systemd reports the unit active, or it ran and ended (a oneshot, a command that
/// exits); says why not when it fails, is refused or time runs out. `false` unless it runs or
/// ran.
fn active_or_explain(
    client: &Client,
    name: &str,
    bound: Bound,
    io: &mut Io<'_>,
) -> io::Result<bool> {
    let mut progress = Progress::new(name, io.terminal);
    let activation = wait_active(client, name, bound, &mut progress, io.err);
    progress.done(io.err)?;
    match activation {
        Activation::Active => Ok(true),
        Activation::Ended(state) => {
            writeln!(
                io.out,
                "Unit {name} ran and ended on {}: {} ({})",
                state.machine_id, state.systemd_active_state, state.systemd_sub_state
            )?;
            Ok(true)
        }
        Activation::Failed(state) => {
            let why = match state.reason.is_empty() {
                true => format!("`fleetctl status {name}` shows why"),
                false => state.reason.clone(),
            };
            writeln!(
                io.err,
                "Unit {name} failed to start on {}: {} ({}); {why}",
                state.machine_id, state.systemd_active_state, state.systemd_sub_state
            )?;
            Ok(false)
        }
        // It never ran (a dependency failed) or was stopped for another unit (BindsTo=).
        Activation::Refused(state) => {
            writeln!(
                io.err,
                "Unit {name} is inactive on {}: {}",
                state.machine_id, state.reason
            )?;
            Ok(false)
        }
        Activation::TimedOut => {
            writeln!(io.err, "Error waiting for unit states, exit status: timed out waiting for unit {name} to be active")?;
            Ok(false)
        }
    }
}
