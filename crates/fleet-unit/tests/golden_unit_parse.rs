//! Every case of `unit-parse.jsonl` (fleet 1.0's `unit.NewUnitFile`, `Bytes`, `Hash`,
//! `Description`, `Contents`, and the API's re-parse) against our parser and serializer.

mod common;

use std::collections::BTreeMap;

use common::{bytes, load_jsonl, opt_str, str_field, strings};
use fleet_unit::{UnitFile, UnitOption};
use serde_json::Value;

/// Cases where we deliberately differ from fleet 1.0 (docs/compatibility.md explains each).
enum Ours {
    Error(&'static str),
    Options(&'static [(&'static str, &'static str, &'static str)]),
}

const DEVIATIONS: &[(&str, Ours)] = &[
    // A line of 2048+ bytes is always refused; fleet missed it at some buffer offsets.
    (
        "line-3000-at-offset-2079",
        Ours::Error("line too long (max 2048 bytes)"),
    ),
    (
        "line-3000-at-offset-3479",
        Ours::Error("line too long (max 2048 bytes)"),
    ),
    // A comment ending in a backslash is only a comment (as in systemd).
    (
        "comment-with-continuation",
        Ours::Options(&[("Unit", "A", "b"), ("Unit", "C", "d")]),
    ),
    (
        "comment-continuation-chain",
        Ours::Options(&[("Unit", "B", "1 \\\nC=2"), ("Unit", "D", "3")]),
    ),
    (
        "options-before-section-with-hash",
        Ours::Options(&[("Unit", "A", "1")]),
    ),
    // Readable messages instead of Go byte slices and a bare "EOF".
    (
        "section-comment-after",
        Ours::Error(r##"found garbage after section name "Unit": "# comment""##),
    ),
    (
        "section-nested-brackets",
        Ours::Error(r#"found garbage after section name "[Unit": "]""#),
    ),
    (
        "cr-only-line-endings",
        Ours::Error(r#"found garbage after section name "Unit": "A=1\rB=2""#),
    ),
    (
        "key-without-equals-eof",
        Ours::Error("unexpected end of file encountered while parsing option name"),
    ),
    // systemd would read these differently from what fleet stored: refuse them.
    ("invalid-utf8", Ours::Error("unit file is not valid UTF-8")),
    ("nul-in-value", Ours::Error("unit file contains a NUL byte")),
    ("nul-in-key", Ours::Error("unit file contains a NUL byte")),
    (
        "nul-before-section",
        Ours::Error("unit file contains a NUL byte"),
    ),
];

fn golden_options(value: &Value) -> Vec<UnitOption> {
    value
        .as_array()
        .expect("options array")
        .iter()
        .map(|o| {
            let text =
                |k: &str| String::from_utf8(bytes(o, k)).expect("UTF-8 option in an ok case");
            UnitOption::new(text("section"), text("name"), text("value"))
        })
        .collect()
}

fn golden_contents(value: &Value) -> BTreeMap<String, BTreeMap<String, Vec<String>>> {
    value
        .as_object()
        .expect("contents object")
        .iter()
        .map(|(section, names)| {
            let names = names
                .as_object()
                .expect("names object")
                .iter()
                .map(|(name, values)| (name.clone(), strings(values)))
                .collect();
            (section.clone(), names)
        })
        .collect()
}

fn check(case: &Value) {
    let name = str_field(case, "name");
    let input = bytes(case, "input");
    let result = UnitFile::parse(&input);

    match DEVIATIONS
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, ours)| ours)
    {
        Some(Ours::Error(message)) => {
            let err = result.expect_err(name);
            assert_eq!(err.message(), *message, "{name}");
            return;
        }
        Some(Ours::Options(expected)) => {
            let unit = result.unwrap_or_else(|e| panic!("{name}: {e}"));
            let expected: Vec<UnitOption> = expected
                .iter()
                .map(|(s, n, v)| UnitOption::new(*s, *n, *v))
                .collect();
            assert_eq!(unit.options(), expected, "{name}");
            return;
        }
        None => {}
    }

    if case["ok"] == false {
        let err = result.expect_err(name);
        assert_eq!(err.message(), str_field(case, "error"), "{name}");
        return;
    }
    let unit = result.unwrap_or_else(|e| panic!("{name}: {e}"));
    assert_eq!(
        unit.options(),
        golden_options(&case["options"]),
        "{name}: options"
    );
    let serialized = unit.serialize();
    assert_eq!(
        serialized.as_bytes(),
        bytes(case, "serialized"),
        "{name}: serialized"
    );
    assert_eq!(
        unit.hash().to_string(),
        str_field(case, "hash"),
        "{name}: hash"
    );
    assert_eq!(
        unit.hash().short(),
        str_field(case, "short_hash"),
        "{name}: short hash"
    );
    assert_eq!(
        unit.description().unwrap_or(""),
        str_field(case, "description"),
        "{name}"
    );
    assert_eq!(
        unit.contents(),
        golden_contents(&case["contents"]),
        "{name}: contents"
    );

    // What the API does with the options: parse the serialization again.
    let reparse = &case["reparse"];
    let reparsed = UnitFile::parse(serialized.as_bytes());
    if reparse["ok"] == false {
        assert_eq!(
            reparsed.expect_err(name).message(),
            str_field(reparse, "error"),
            "{name}"
        );
    } else {
        let reparsed = reparsed.unwrap_or_else(|e| panic!("{name}: reparse: {e}"));
        let same = reparse["same_options"] == true;
        assert_eq!(
            reparsed.options() == unit.options(),
            same,
            "{name}: same_options"
        );
        if !same {
            assert_eq!(
                reparsed.options(),
                golden_options(&reparse["options"]),
                "{name}"
            );
        }
    }
    assert!(
        opt_str(case, "error").is_none(),
        "{name}: ok case with an error"
    );
}

#[test]
fn every_golden_parse_case() {
    let cases = load_jsonl("unit-parse.jsonl");
    assert_eq!(cases.len(), 112);
    for case in &cases {
        check(case);
    }
    for (name, _) in DEVIATIONS {
        assert!(
            cases.iter().any(|c| c["name"] == *name),
            "deviation {name} names no golden case"
        );
    }
}
