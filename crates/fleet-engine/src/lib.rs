//! The engine. [`scheduler::schedule`] decides where units go, from a snapshot alone; the
//! leader's reconciler (with issue 5) feeds it snapshots and writes its decisions.

pub mod invariants;
pub mod presence;
pub mod reconciler;
pub mod rescheduling;
pub mod scheduler;
pub mod start_after;
