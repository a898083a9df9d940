//! Loading of the golden vectors recorded from fleet 1.0 (`testdata/golden/`).
#![allow(dead_code)]

use base64::Engine;
use serde_json::Value;

pub fn golden_path(file: &str) -> String {
    format!(
        "{}/../../testdata/golden/{file}",
        env!("CARGO_MANIFEST_DIR")
    )
}

pub fn load_jsonl(file: &str) -> Vec<Value> {
    let path = golden_path(file);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{path}: {e}: {l}")))
        .collect()
}

/// The exact bytes of field `key`: from `key_b64` when present (the JSON string then holds
/// U+FFFD replacements), else the string itself.
pub fn bytes(object: &Value, key: &str) -> Vec<u8> {
    if let Some(b64) = object.get(format!("{key}_b64")).and_then(Value::as_str) {
        return base64::engine::general_purpose::STANDARD
            .decode(b64)
            .expect("valid base64 in golden data");
    }
    str_field(object, key).as_bytes().to_vec()
}

pub fn str_field<'a>(object: &'a Value, key: &str) -> &'a str {
    object
        .get(key)
        .and_then(Value::as_str)
        .unwrap_or_else(|| panic!("field {key} missing in {object}"))
}

pub fn opt_str<'a>(object: &'a Value, key: &str) -> Option<&'a str> {
    object.get(key).and_then(Value::as_str)
}

pub fn strings(value: &Value) -> Vec<String> {
    value
        .as_array()
        .unwrap_or_else(|| panic!("expected an array: {value}"))
        .iter()
        .map(|v| v.as_str().expect("string").to_owned())
        .collect()
}
