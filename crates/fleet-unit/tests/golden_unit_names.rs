//! Every case of `unit-names.jsonl`: fleet 1.0's `api.ValidateName`, `unit.NewUnitNameInfo`
//! and `unit.RecognizedUnitType`.

mod common;

use common::{bytes, load_jsonl};
use fleet_unit::name::{has_recognized_suffix, validate_name, NameInfo};
use serde_json::Value;

fn check(case: &Value) {
    let raw = bytes(case, "name");
    let label = String::from_utf8_lossy(&raw).into_owned();
    assert_eq!(case["length"].as_u64(), Some(raw.len() as u64), "{label}");

    let result = validate_name(&raw);
    assert_eq!(result.is_ok(), case["valid"] == true, "{label}: validity");
    if let Err(e) = result {
        assert_eq!(
            Some(e.to_string().as_str()),
            case["error"].as_str(),
            "{label}: message"
        );
    }

    // Name info and suffix checks work on text; names that are not UTF-8 are always invalid.
    let Ok(name) = std::str::from_utf8(&raw) else {
        return;
    };
    assert_eq!(
        has_recognized_suffix(name),
        case["recognized_unit_type"] == true,
        "{label}"
    );
    let info = NameInfo::parse(name);
    assert_eq!(
        info.is_none(),
        case["nameinfo_nil"] == true,
        "{label}: info"
    );
    let Some(info) = info else { return };
    assert_eq!(
        info.is_template(),
        case["is_template"] == true,
        "{label}: template?"
    );
    assert_eq!(
        info.is_instance(),
        case["is_instance"] == true,
        "{label}: instance?"
    );
    assert_eq!(
        Some(info.prefix),
        case["prefix"].as_str(),
        "{label}: prefix"
    );
    assert_eq!(
        Some(info.instance),
        case["instance"].as_str(),
        "{label}: instance"
    );
    assert_eq!(
        Some(info.template().as_str()),
        case["template"].as_str(),
        "{label}: template"
    );
    assert_eq!(
        Some(info.name),
        case["name_without_suffix"].as_str(),
        "{label}: name"
    );
}

#[test]
fn every_golden_name_case() {
    let cases = load_jsonl("unit-names.jsonl");
    assert_eq!(cases.len(), 70);
    cases.iter().for_each(check);
}
