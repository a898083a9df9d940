//! Every row of `glob.tsv`: Go's `path.Match` as compiled into fleet (Go 1.19).

mod common;

use common::golden_path;
use fleet_unit::glob::glob_match;

fn check(pattern: &str, name: &str, matched: &str, error: &str) {
    let result = glob_match(pattern, name);
    match error {
        "" => assert_eq!(result, Ok(matched == "true"), "{pattern:?} ~ {name:?}"),
        message => {
            let err = result.expect_err(pattern);
            assert_eq!(err.to_string(), message, "{pattern:?} ~ {name:?}");
            assert_eq!(matched, "false");
        }
    }
}

#[test]
fn every_golden_glob_row() {
    let text = std::fs::read_to_string(golden_path("glob.tsv")).expect("glob.tsv");
    let mut rows = 0;
    for line in text.lines() {
        let fields: Vec<&str> = line.split('\t').collect();
        let [pattern, name, matched, error] = fields[..] else {
            panic!("malformed row {line:?}")
        };
        check(pattern, name, matched, error);
        rows += 1;
    }
    assert_eq!(rows, 90);
}
