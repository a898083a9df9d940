//! `fleetctl destroy UNIT...`: removes units from the cluster, as fleetctl 1.0 did (names not
//! in the cluster are skipped; none found is not an error).

use std::io;

use crate::{Globals, Io};

pub fn run(args: &[String], globals: &Globals, io: &mut Io<'_>) -> io::Result<i32> {
    let Some(names) = super::unit_names(args, io)? else {
        return Ok(0);
    };
    let client = globals.client();
    let Some(units) = super::all_units(&client, io)? else {
        return Ok(1);
    };
    let present: Vec<&String> = names
        .iter()
        .filter(|name| units.iter().any(|u| &u.name == *name))
        .collect();
    if present.is_empty() {
        writeln!(io.err, "Units not found in registry")?;
        return Ok(0);
    }
    // Several requests at once (a machine of a thousand units is emptied in a second, not in
    // a thousand round trips), reported in the order given; after a failure no new request
    // is sent, and what was destroyed before it is still said.
    let results = delete_all(&client, &present);
    for (name, result) in present.iter().zip(results) {
        match result {
            Some(Ok(_)) => writeln!(io.out, "Destroyed {name}")?,
            Some(Err(e)) => {
                writeln!(io.err, "Error destroying units: {e}")?;
                return Ok(1);
            }
            None => {}
        }
    }
    Ok(0)
}

/// How many DELETE requests are under way at once.
const CONCURRENT: usize = 8;

/// Deletes `names`, [`CONCURRENT`] at a time; each one's result, `None` for those not tried
/// because an earlier one failed.
fn delete_all(
    client: &fleet_api::client::Client,
    names: &[&String],
) -> Vec<Option<fleet_api::client::Result<bool>>> {
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    use std::sync::Mutex;
    let next = AtomicUsize::new(0);
    let failed = AtomicBool::new(false);
    let results: Mutex<Vec<Option<fleet_api::client::Result<bool>>>> =
        Mutex::new((0..names.len()).map(|_| None).collect());
    std::thread::scope(|scope| {
        for _ in 0..CONCURRENT.min(names.len()) {
            scope.spawn(|| loop {
                if failed.load(Ordering::Acquire) {
                    return;
                }
                let at = next.fetch_add(1, Ordering::AcqRel);
                let Some(name) = names.get(at) else { return };
                let result = client.delete_unit(name);
                if result.is_err() {
                    failed.store(true, Ordering::Release);
                }
                results.lock().unwrap_or_else(|e| e.into_inner())[at] = Some(result);
            });
        }
    });
    results.into_inner().unwrap_or_else(|e| e.into_inner())
}
