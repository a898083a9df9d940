//! The unit-file model of fleet, pure: no I/O, no async, no clock.
//!
//! - [`parse`]: unit-file text to options, with every problem and its line.
//! - [`UnitFile`]: options, canonical serialization, and the fleet hash ([`UnitHash`]).
//! - [`name`]: unit-name validation, templates and instances, fleetctl's name mangling.
//! - [`requirements`]: `[X-Fleet]` requirements and placement [`Constraints`].
//! - [`relations`]: `Requires=`, `BindsTo=`, `Wants=`... between units, across the cluster.
//! - [`health`]: the self-healing keys of `[X-Fleet]` (health checks, rescheduling).
//! - [`timespan`]: systemd time spans.
//! - [`glob`]: Go's `path.Match`, for `Conflicts=` and `Replaces=`.
//! - [`state`], [`machine`]: the domain types the registry, engine and agents share.
//!
//! Compatibility with fleet 1.0 is pinned by the golden vectors in `testdata/golden/`.

pub mod glob;
pub mod go_quote;
pub mod hash;
pub mod health;
pub mod machine;
pub mod name;
pub mod parse;
pub mod relations;
pub mod requirements;
pub mod state;
pub mod timespan;
pub mod timestamp;
pub mod unit_file;
pub mod validate;

pub use hash::UnitHash;
pub use machine::{metadata_satisfies, Machine, MachineId};
pub use name::{NameError, NameInfo, UnitName};
pub use requirements::{Constraints, Requirements};
pub use state::{JobState, SystemdState, UnitState};
pub use unit_file::{ParseError, UnitFile, UnitOption};
pub use validate::{validate_options, InvalidUnit};
