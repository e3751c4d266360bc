#![allow(clippy::unwrap_used)]

use super::*;

fn field_of(body: &str) -> String {
    match parse_predict(body.as_bytes()) {
        Err(ParseError::Invalid { field, .. }) => field,
        other => panic!("expected Invalid for {body}, got {other:?}"),
    }
}

#[test]
fn the_original_request_parses() {
    let r = parse_predict(
        br#"{"idx": 150000, "features": {"attr_a": 1, "attr_b": "c", "scd_a": 0.55, "scd_b": 3}}"#,
    )
    .unwrap();
    assert_eq!(r.idx, 150000);
    assert_eq!(r.features.attr_b, "c");
    assert_eq!(r.features.scd_a, 0.55);
}

#[test]
fn errors_name_the_field() {
    let ok = r#""attr_a": 1, "attr_b": "c", "scd_a": 0.55, "scd_b": 3"#;
    assert_eq!(field_of(&format!(r#"{{"features": {{{ok}}}}}"#)), "idx");
    assert_eq!(
        field_of(&format!(r#"{{"idx": 1, "x": 2, "features": {{{ok}}}}}"#)),
        "x"
    );
    assert_eq!(
        field_of(r#"{"idx": 1, "features": {"attr_a": 1, "attr_b": "c", "scd_a": 0.5}}"#),
        "features.scd_b"
    );
    assert_eq!(
        field_of(&format!(
            r#"{{"idx": 1, "features": {{{ok}, "extra": 1}}}}"#
        )),
        "features.extra"
    );
    assert_eq!(
        field_of(
            r#"{"idx": 1, "features": {"attr_a": "1", "attr_b": "c", "scd_a": 0.5, "scd_b": 3}}"#
        ),
        "features.attr_a"
    );
    assert_eq!(
        field_of(
            r#"{"idx": 1, "features": {"attr_a": 1.5, "attr_b": "c", "scd_a": 0.5, "scd_b": 3}}"#
        ),
        "features.attr_a"
    );
    assert_eq!(
        field_of(r#"{"idx": 1, "features": {"attr_a": 1, "attr_b": 3, "scd_a": 0.5, "scd_b": 3}}"#),
        "features.attr_b"
    );
    assert_eq!(
        field_of(
            r#"{"idx": 1, "features": {"attr_a": 1, "attr_b": "c", "scd_a": 1e999, "scd_b": 3}}"#
        ),
        "features.scd_a"
    );
    assert_eq!(
        field_of(
            r#"{"idx": 1, "features": {"attr_a": 1, "attr_b": "c", "scd_a": 0.5, "scd_b": 99999999999999999999}}"#
        ),
        "features.scd_b"
    );
    assert_eq!(
        field_of(&format!(r#"{{"idx": 1, "idx": 2, "features": {{{ok}}}}}"#)),
        "idx"
    );
    assert_eq!(field_of(r#"{"idx": 1, "features": []}"#), "features");
    assert_eq!(field_of("[1, 2]"), "(body)");
    assert_eq!(
        field_of(r#"{"idx": null, "features": {}}"#),
        "features.attr_a"
    );
}

#[test]
fn malformed_is_not_invalid() {
    for b in [
        &b"{"[..],
        b"",
        b"   ",
        b"{\"idx\": NaN}",
        b"\xff\xfe",
        b"{} x",
    ] {
        assert!(
            matches!(parse_predict(b), Err(ParseError::Malformed(_))),
            "{b:?}"
        );
    }
}

#[test]
fn batch() {
    let one = r#"{"idx": 1, "features": {"attr_a": 1, "attr_b": "c", "scd_a": 0.5, "scd_b": 3}}"#;
    let body = format!(r#"{{"instances": [{one}, {one}]}}"#);
    assert_eq!(parse_batch(body.as_bytes(), 10).unwrap().len(), 2);
    let bad = format!(
        r#"{{"instances": [{one}, {{"idx": 2, "features": {{"attr_a": 1, "attr_b": "c", "scd_a": "x", "scd_b": 3}}}}]}}"#
    );
    assert_eq!(
        parse_batch(bad.as_bytes(), 10),
        Err(invalid(
            "instances[1].features.scd_a",
            "expected a number, got a string"
        ))
    );
    assert!(matches!(
        parse_batch(body.as_bytes(), 1),
        Err(ParseError::Invalid { field, .. }) if field == "instances"
    ));
    assert!(parse_batch(br#"{"instances": []}"#, 10).is_err());
}

/// The one-pass path never accepts what the thorough path refuses, and returns the
/// same value when it accepts.
fn agree(body: &[u8]) {
    if let Some(r) = fast::predict(body) {
        assert_eq!(
            Ok(r),
            thorough_predict(body),
            "{:?}",
            String::from_utf8_lossy(body)
        );
    }
    for max in [1, 2, 10] {
        if let Some(r) = fast::batch(body, max) {
            assert_eq!(
                Ok(r),
                thorough_batch(body, max),
                "{:?}",
                String::from_utf8_lossy(body)
            );
        }
    }
}

#[test]
fn fast_path_agrees_with_the_thorough_one() {
    let ok = r#""attr_a": 1, "attr_b": "c", "scd_a": 0.55, "scd_b": 3"#;
    let cases = [
        format!(r#"{{"idx": 150000, "features": {{{ok}}}}}"#),
        format!(r#" {{ "features" : {{{ok}}} , "idx" : -3 }} "#),
        format!(r#"{{"id\u0078": 1, "features": {{{ok}}}}}"#),
        r#"{"idx": 1, "features": {"scd_b": 3, "scd_a": -1e-3, "attr_b": "\u00e9\n", "attr_a": 0}}"#.into(),
        format!(r#"{{"idx": 1, "features": {{{ok}}}}} x"#),
        format!(r#"{{"idx": 1, "idx": 1, "features": {{{ok}}}}}"#),
        format!(r#"{{"idx": 1.0, "features": {{{ok}}}}}"#),
        format!(r#"{{"idx": 1, "features": {{{ok}, "attr_a": 1}}}}"#),
        r#"{"idx": 1, "features": {"attr_a": 1, "attr_b": "c", "scd_a": 1e999, "scd_b": 3}}"#.into(),
        format!(r#"{{"instances": [{{"idx": 1, "features": {{{ok}}}}}]}}"#),
        format!(r#"{{"instances": [{{"idx": 1, "features": {{{ok}}}}}, {{"idx": 2, "features": {{{ok}}}}}]}}"#),
        r#"{"instances": []}"#.into(),
        r#"{"instances": {}}"#.into(),
    ];
    for c in &cases {
        agree(c.as_bytes());
    }
    assert!(fast::predict(cases[0].as_bytes()).is_some());
    assert!(fast::predict(cases[1].as_bytes()).is_some());
    assert!(fast::predict(cases[3].as_bytes()).is_some());
    assert!(fast::batch(cases[10].as_bytes(), 2).is_some());
    assert!(fast::batch(cases[10].as_bytes(), 1).is_none());
}

proptest::proptest! {
    #[test]
    fn fast_path_agrees_on_arbitrary_input(
        idx in proptest::sample::select(vec!["1", "-7", "1.5", "1e3", "\"1\"", "null", "99999999999999999999"]),
        a in proptest::sample::select(vec!["0", "2", "1.0", "[]", "true"]),
        b in proptest::sample::select(vec!["\"c\"", "\"\\u0041\"", "3", "{}"]),
        sa in proptest::sample::select(vec!["0.55", "-3", "1e999", "1E2", "\"x\"", "-0"]),
        sb in proptest::sample::select(vec!["3", "3.0", "-1", "18446744073709551616"]),
        extra in proptest::sample::select(vec!["", ", \"attr_a\": 1", ", \"x\": 1"]),
        top in proptest::sample::select(vec!["", ", \"idx\": 2", ", \"y\": {}"]),
        noise in proptest::collection::vec(proptest::num::u8::ANY, 0..4),
        cut in proptest::num::usize::ANY,
    ) {
        let one = format!(
            r#"{{"idx": {idx}{top}, "features": {{"attr_a": {a}, "attr_b": {b}, "scd_a": {sa}, "scd_b": {sb}{extra}}}}}"#
        );
        let batch = format!(r#"{{"instances": [{one}, {one}]}}"#);
        for body in [one.into_bytes(), batch.into_bytes()] {
            agree(&body);
            let mut cut_body = body[..cut % (body.len() + 1)].to_vec();
            agree(&cut_body);
            cut_body.extend_from_slice(&noise);
            agree(&cut_body);
        }
    }
}
