//! Every case of `xfleet.jsonl`: fleet 1.0's `[X-Fleet]` requirement parsing (`job.Job`), the
//! specifier substitution, and the API's `ValidateOptions`.

mod common;

use std::collections::{BTreeMap, BTreeSet};

use common::{load_jsonl, opt_str, str_field, strings};
use fleet_unit::name::validate_name;
use fleet_unit::requirements::Requirements;
use fleet_unit::{validate_options, UnitFile};
use serde_json::Value;

fn requirement_map(value: &Value) -> BTreeMap<String, Vec<String>> {
    value
        .as_object()
        .expect("requirements object")
        .iter()
        .map(|(k, v)| (k.clone(), strings(v)))
        .collect()
}

/// Where fleet's answer depended on Go map order, any of the listed answers is right.
fn one_of(case: &Value, key: &str, got: Option<String>) {
    let name = str_field(case, "name");
    let any_of = case.get(format!("{key}_any_of"));
    match any_of {
        Some(options) => {
            let got = got.unwrap_or_else(|| panic!("{name}: expected one of {options}"));
            assert!(
                strings(options).contains(&got),
                "{name}: {got} not in {options}"
            );
        }
        None => assert_eq!(got.as_deref(), opt_str(case, key), "{name}: {key}"),
    }
}

fn check(case: &Value) {
    let name = str_field(case, "name");
    let unit_name = str_field(case, "unit_name");
    let parsed = UnitFile::parse(str_field(case, "input"));
    if case["parse_ok"] == false {
        let err = parsed.expect_err(name);
        assert_eq!(err.message(), str_field(case, "parse_error"), "{name}");
        return;
    }
    let unit = parsed.unwrap_or_else(|e| panic!("{name}: {e}"));
    assert_eq!(
        unit.hash().to_string(),
        str_field(case, "hash"),
        "{name}: hash"
    );

    let raw = Requirements::raw(&unit);
    assert_eq!(
        raw.as_map(),
        &requirement_map(&case["requirements_unsubstituted"]),
        "{name}"
    );
    let requirements = Requirements::for_unit(&unit, unit_name);
    assert_eq!(
        requirements.as_map(),
        &requirement_map(&case["requirements"]),
        "{name}"
    );
    assert_eq!(
        requirements.peers(),
        strings(&case["peers"]),
        "{name}: peers"
    );
    assert_eq!(
        requirements.conflicts(),
        strings(&case["conflicts"]),
        "{name}: conflicts"
    );
    assert_eq!(
        requirements.replaces(),
        strings(&case["replaces"]),
        "{name}: replaces"
    );
    assert_eq!(
        requirements.is_global(),
        case["global"] == true,
        "{name}: global"
    );
    let target = requirements.required_machine();
    assert_eq!(target, case["required_target"].as_str(), "{name}: target");
    let metadata: BTreeMap<String, BTreeSet<String>> = case["required_metadata"]
        .as_object()
        .expect("metadata")
        .iter()
        .map(|(k, v)| (k.clone(), strings(v).into_iter().collect()))
        .collect();
    assert_eq!(
        requirements.required_metadata(),
        metadata,
        "{name}: metadata"
    );

    let verdict = validate_options(unit.options().to_vec());
    assert_eq!(verdict.is_ok(), case["valid"] == true, "{name}: valid");
    one_of(case, "error", verdict.err().map(|e| e.to_string()));
    one_of(
        case,
        "requirements_warning",
        requirements.unknown_keys().into_iter().next(),
    );
    if let Some(expected) = opt_str(case, "name_error") {
        let err = validate_name(unit_name.as_bytes()).expect_err(name);
        assert_eq!(err.to_string(), expected, "{name}");
    }
}

#[test]
fn every_golden_xfleet_case() {
    let cases = load_jsonl("xfleet.jsonl");
    assert_eq!(cases.len(), 74);
    cases.iter().for_each(check);
}
