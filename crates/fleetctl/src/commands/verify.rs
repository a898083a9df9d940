//! `fleetctl verify UNIT...`: fleet 1.0 only printed a deprecation notice. Ours checks each
//! unit file as the cluster would: the file parses, the name (mangled as for `submit`) is
//! valid, and the `[X-Fleet]` requirements can be met. Every problem is listed with its line.

use std::io;

use fleet_unit::name::{mangle, validate_name};
use fleet_unit::parse::{parse, Severity};
use fleet_unit::requirements::{validate_requirements, Requirements, RequirementsError};
use fleet_unit::UnitFile;

use crate::Io;

pub fn run(args: &[String], io: &mut Io<'_>) -> io::Result<i32> {
    if args.is_empty() {
        writeln!(io.err, "No units given")?;
        return Ok(2);
    }
    let mut failed = false;
    for path in args {
        failed |= !verify_file(path, io)?;
    }
    Ok(if failed { 1 } else { 0 })
}

/// Reports the problems of one file; returns whether it is valid.
fn verify_file(path: &str, io: &mut Io<'_>) -> io::Result<bool> {
    let bytes = match std::fs::read(path) {
        Ok(bytes) => bytes,
        Err(e) => {
            writeln!(io.err, "{path}: error: unable to read file: {e}")?;
            return Ok(false);
        }
    };
    let name = mangle(path);
    let mut valid = true;
    if let Err(e) = validate_name(name.as_bytes()) {
        writeln!(io.err, "{path}: error: unit name {name:?}: {e}")?;
        valid = false;
    }
    let parsed = parse(&bytes);
    for problem in &parsed.problems {
        writeln!(
            io.err,
            "{path}:{}: {}: {}",
            problem.line,
            problem.severity.as_str(),
            problem.kind
        )?;
        valid &= problem.severity != Severity::Error;
    }
    if parsed.has_errors() {
        return Ok(false);
    }
    let unit = UnitFile::from_options(parsed.options);
    for warning in Requirements::raw(&unit).unknown_keys() {
        writeln!(io.err, "{path}: warning: {warning}")?;
    }
    if let Err(e) = validate_requirements(&unit) {
        let line = match &e {
            RequirementsError::Health(invalid) => line_of(&bytes, invalid.key, &invalid.value),
            _ => None,
        };
        match line {
            Some(line) => writeln!(io.err, "{path}:{line}: error: {e}")?,
            None => writeln!(io.err, "{path}: error: {e}")?,
        }
        valid = false;
    }
    Ok(valid)
}

/// The line (from 1) where `key` is set to `value`, the last such line (the one in force).
fn line_of(text: &[u8], key: &str, value: &str) -> Option<usize> {
    let text = String::from_utf8_lossy(text);
    text.lines()
        .enumerate()
        .filter(|(_, line)| {
            line.split_once('=')
                .is_some_and(|(k, v)| k.trim() == key && v.trim() == value)
        })
        .map(|(at, _)| at + 1)
        .last()
}
