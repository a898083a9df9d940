//! The relations between units that systemd reads in `[Unit]`, as fleet-rs acts on them
//! across the cluster: units related by [`PLACED_TOGETHER`] run on one machine (systemd can
//! satisfy them only there), starting a unit pulls in the fleet units it [`PULLS_IN`], and a
//! unit stops with those it [`STOPS_WITH`].

use crate::name::NameInfo;
use crate::requirements::substitute_specifiers;
use crate::unit_file::UnitFile;

/// Relations systemd satisfies only between units of one machine.
pub const PLACED_TOGETHER: &[&str] = &["Requires", "BindsTo", "Wants", "Requisite", "PartOf"];
/// Relations that start the named units with this one.
pub const PULLS_IN: &[&str] = &["Requires", "BindsTo", "Wants"];
/// Relations that stop this unit when the named unit stops.
pub const STOPS_WITH: &[&str] = &["BindsTo", "PartOf"];
/// Relations that make this unit stop when the named unit does not run (systemd stops it
/// with it, or never starts it).
pub const NEEDS: &[&str] = &["Requires", "BindsTo", "Requisite", "PartOf"];

/// The unit names `unit` (submitted as `name`) names in `[Unit]` under `keys`, each value split
/// on whitespace, `%n %N %p %i` resolved, in file order, each once.
pub fn related(unit: &UnitFile, name: &str, keys: &[&str]) -> Vec<String> {
    let info = NameInfo::parse(name);
    let mut names: Vec<String> = Vec::new();
    let options = unit
        .options()
        .iter()
        .filter(|o| o.section == "Unit" && keys.contains(&o.name.as_str()));
    for option in options {
        let value = match &info {
            Some(info) => substitute_specifiers(&option.value, info),
            None => option.value.clone(),
        };
        for other in value.split_whitespace() {
            if other != name && !names.iter().any(|n| n == other) {
                names.push(other.to_owned());
            }
        }
    }
    names
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(text: &str, name: &str, keys: &[&str], expected: &[&str]) {
        let unit = UnitFile::parse(text).unwrap();
        assert_eq!(related(&unit, name, keys), expected, "{text}");
    }

    #[test]
    fn names_are_read_split_resolved_and_kept_once() {
        let sidekick = "[Unit]\nBindsTo=apache@%i.service\nAfter=apache@%i.service\nRequires=docker.service etcd.service\nWants=docker.service\n";
        check(
            sidekick,
            "apache-discovery@80.service",
            PLACED_TOGETHER,
            &["apache@80.service", "docker.service", "etcd.service"],
        );
        check(
            sidekick,
            "apache-discovery@80.service",
            STOPS_WITH,
            &["apache@80.service"],
        );
        check(
            "[Unit]\nPartOf=%p.target\n",
            "web@1.service",
            STOPS_WITH,
            &["web.target"],
        );
        // Itself is no relation; an empty value names nothing.
        check("[Unit]\nRequires=%n\nWants=\n", "a.service", PULLS_IN, &[]);
        check(
            "[Service]\nExecStart=/bin/true\n",
            "a.service",
            PLACED_TOGETHER,
            &[],
        );
    }
}
