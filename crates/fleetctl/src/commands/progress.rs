//! What fleetctl says while it waits for a unit: on a terminal, one line drawn in place (the
//! unit, where it is, for how long), erased when the wait ends; elsewhere plain lines, only once
//! a wait has lasted a while and when what it shows changes, so a quick wait prints exactly
//! what fleet printed.

use std::io::{self, Write};
use std::time::{Duration, Instant};

/// A wait shorter than this says nothing on a pipe (longer than the 2 s a failed unit is
/// watched before fleetctl calls it failed).
const QUIET_FOR: Duration = Duration::from_secs(3);
/// On a pipe, an unchanged phase is told again after this long.
const REPEAT_AFTER: Duration = Duration::from_secs(30);

pub struct Progress {
    unit: String,
    terminal: bool,
    began: Instant,
    /// What was last shown, and when.
    shown: Option<(String, Instant)>,
    /// A terminal line is drawn and must be erased.
    drawn: bool,
}

impl Progress {
    pub fn new(unit: &str, terminal: bool) -> Progress {
        Progress {
            unit: unit.to_owned(),
            terminal,
            began: Instant::now(),
            shown: None,
            drawn: false,
        }
    }

    /// Shows that the unit is in `phase` (`placed on 0123..., activating (start)`) now.
    pub fn at(&mut self, phase: &str, err: &mut dyn Write) -> io::Result<()> {
        self.at_time(phase, Instant::now(), err)
    }

    fn at_time(&mut self, phase: &str, now: Instant, err: &mut dyn Write) -> io::Result<()> {
        let waited = now.saturating_duration_since(self.began);
        let line = format!(
            "Waiting for unit {}: {phase} ({}s)",
            self.unit,
            waited.as_secs()
        );
        if self.terminal {
            // Redrawn at every look: the seconds count up.
            write!(err, "\r\x1b[K{line}")?;
            self.drawn = true;
            return err.flush();
        }
        if waited < QUIET_FOR {
            return Ok(());
        }
        let due = match &self.shown {
            Some((last, at)) => last != phase || now.saturating_duration_since(*at) >= REPEAT_AFTER,
            None => true,
        };
        if due {
            writeln!(err, "{line}")?;
            self.shown = Some((phase.to_owned(), now));
        }
        Ok(())
    }

    /// The wait is over: a terminal's line is erased (what follows is the outcome).
    pub fn done(&mut self, err: &mut dyn Write) -> io::Result<()> {
        if std::mem::take(&mut self.drawn) {
            write!(err, "\r\x1b[K")?;
            err.flush()?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// (seconds into the wait, phase) looks, whether on a terminal, and what is written.
    fn check(terminal: bool, looks: &[(u64, &str)], expected: &str) {
        let mut progress = Progress::new("a.service", terminal);
        let began = progress.began;
        let mut written = Vec::new();
        for (second, phase) in looks {
            progress
                .at_time(phase, began + Duration::from_secs(*second), &mut written)
                .unwrap();
        }
        progress.done(&mut written).unwrap();
        assert_eq!(String::from_utf8(written).unwrap(), expected, "{looks:?}");
    }

    #[test]
    fn a_pipe_gets_lines_a_terminal_one_line_in_place() {
        // A quick wait says nothing on a pipe: fleet's output exactly.
        check(false, &[(0, "placed"), (2, "activating")], "");
        check(
            false,
            &[(0, "placed"), (3, "activating"), (3, "activating"), (4, "active")],
            "Waiting for unit a.service: activating (3s)\nWaiting for unit a.service: active (4s)\n",
        );
        check(
            false,
            &[(3, "activating"), (20, "activating"), (34, "activating")],
            "Waiting for unit a.service: activating (3s)\nWaiting for unit a.service: activating (34s)\n",
        );
        check(
            true,
            &[(0, "placed"), (1, "activating")],
            "\r\x1b[KWaiting for unit a.service: placed (0s)\r\x1b[KWaiting for unit a.service: activating (1s)\r\x1b[K",
        );
        check(true, &[], "");
    }
}
