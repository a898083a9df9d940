//! Properties: any options fleet's format can represent survive serialize -> parse unchanged
//! (up to the grouping of sections), and serialization is a fixed point; and any options at all,
//! however hostile, are either refused by the API's validation with a reason or read back
//! exactly as given.

mod invariants;

use fleet_unit::{UnitFile, UnitOption};
use invariants::{check_options, grouped};
use proptest::prelude::*;

fn section() -> impl Strategy<Value = String> {
    "[A-Za-z0-9][A-Za-z0-9 _.-]{0,11}"
}

fn name() -> impl Strategy<Value = String> {
    "[A-Za-z0-9_][A-Za-z0-9_.:@ \\[-]{0,15}".prop_map(|s| s.trim_end().to_owned())
}

/// A value line: any text without line breaks, NULs or a trailing backslash, trimmed.
fn line() -> impl Strategy<Value = String> {
    "[^\n\r\u{0}\\\\]{0,40}".prop_map(|s| s.trim().to_owned())
}

/// A value: one line, or several joined by continuation backslashes (indentation kept).
fn value() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => line(),
        1 => (line(), proptest::collection::vec(("[ \t]{0,3}", line()), 1..4)).prop_map(
            |(first, rest)| {
                let mut value = first;
                for (indent, text) in rest {
                    if text.is_empty() {
                        continue;
                    }
                    value.push_str("\\\n");
                    value.push_str(&indent);
                    value.push_str(&text);
                }
                value
            }
        ),
    ]
}

fn options() -> impl Strategy<Value = Vec<UnitOption>> {
    let sections = proptest::collection::vec(section(), 1..4);
    sections.prop_flat_map(|sections| {
        let option = (0..sections.len(), name(), value())
            .prop_map(move |(i, n, v)| UnitOption::new(sections[i].clone(), n, v));
        proptest::collection::vec(option, 0..12)
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn parse_of_serialize_is_identity(options in options()) {
        let unit = UnitFile::from_options(options.clone());
        let text = unit.serialize();
        let parsed = UnitFile::parse(&text)
            .map_err(|e| TestCaseError::fail(format!("{e} in {text:?}")))?;
        let expected = grouped(&options);
        prop_assert_eq!(parsed.options(), expected.as_slice());
        prop_assert_eq!(parsed.serialize(), text);
        prop_assert_eq!(parsed.hash(), unit.hash());
    }
}

/// Text made of what breaks unit files: brackets, `=`, backslashes, line breaks, comment
/// starters, quotes, padding, NULs, non-ASCII, between ordinary characters.
fn hostile() -> impl Strategy<Value = String> {
    let piece = prop_oneof![
        6 => "[A-Za-z0-9]{1,3}",
        1 => prop::sample::select(vec![
            "[", "]", "=", "\\", "\n", "\r", " ", "\t", "#", ";", "\"", "'", "%", "\u{0}",
            "é", "\u{2028}", "\\\n", "]\n[", "$", "@", "X-Fleet",
        ])
        .prop_map(str::to_owned),
    ];
    proptest::collection::vec(piece, 0..10).prop_map(|pieces| pieces.concat())
}

fn hostile_options() -> impl Strategy<Value = Vec<UnitOption>> {
    let section = prop_oneof![
        2 => prop::sample::select(vec!["Unit", "Service", "X-Fleet", "Install"]).prop_map(str::to_owned),
        1 => hostile(),
    ];
    let name = prop_oneof![
        2 => prop::sample::select(vec!["ExecStart", "Description", "MachineOf", "Conflicts", "Global"])
            .prop_map(str::to_owned),
        1 => hostile(),
    ];
    let option = (section, name, hostile()).prop_map(|(s, n, v)| UnitOption::new(s, n, v));
    proptest::collection::vec(option, 0..8)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(5000))]

    #[test]
    fn hostile_options_are_refused_or_read_back_exactly(options in hostile_options()) {
        check_options(options).map_err(TestCaseError::fail)?;
    }
}
