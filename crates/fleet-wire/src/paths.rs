//! fleet-rs's own resources beside fleet's API v1 (which lives under `/fleet/v1/`).

use std::time::Duration;

/// A unit's log, from the fleetd of the machine that runs it.
pub const JOURNAL: &str = "/fleet-rs/v1/journal/";

/// The response header naming the machine a followed journal comes from.
pub const JOURNAL_MACHINE_HEADER: &str = "fleet-machine-id";

/// How long a followed journal may be silent before an empty line tells the client the
/// connection still lives (it treats a longer silence as a lost connection).
pub const JOURNAL_HEARTBEAT: Duration = Duration::from_secs(2);

/// What the init system of the machine that runs a unit says of it.
pub const STATUS: &str = "/fleet-rs/v1/status/";

/// A header of the answer to `PUT units/<name>` (ours, one per change): what the change did to
/// the fleet units related to the unit, as `pulled-in NAME STATE`, `created NAME STATE from
/// TEMPLATE` or `stopped-with NAME`. fleet 1.0's fleetctl ignores it.
pub const RELATED_HEADER: &str = "fleet-related";
