//! Tests of the JSON writer.

use serde_json::Value;

use super::*;

#[test]
fn strings_are_escaped_as_serde_json_escapes_them() {
    let specials: Vec<char> = (0u8..0x20)
        .map(char::from)
        .chain(['"', '\\', '\u{7f}', 'é', '東', '😀'])
        .collect();
    // Every special at every offset around the 8-byte steps.
    for special in specials {
        for before in 0..18 {
            for after in [0, 1, 7, 8, 9] {
                let text = format!("{}{special}{}", "a".repeat(before), "b".repeat(after));
                assert_eq!(
                    json_string(&text).unwrap(),
                    serde_json::to_string(&text).unwrap(),
                    "{text:?}"
                );
            }
        }
    }
    let dense = "\"\\\n\u{1}".repeat(9);
    assert_eq!(
        json_string(&dense).unwrap(),
        serde_json::to_string(&dense).unwrap()
    );
}

proptest::proptest! {
    #[test]
    fn any_string_escapes_as_serde_json(text in proptest::prelude::any::<String>()) {
        let json = serde_json::to_string(&text).unwrap();
        proptest::prop_assert_eq!(json_string(&text).unwrap(), json.as_str());
        // Escaped once more: the JSON above as the body of a string.
        let mut escaped = Vec::new();
        write_json_as(&mut escaped, &text, Output::Escaped).unwrap();
        let twice = serde_json::to_string(&json).unwrap();
        proptest::prop_assert_eq!(String::from_utf8(escaped).unwrap(), &twice[1..twice.len() - 1]);
    }

    #[test]
    fn any_double_reads_back(value in proptest::prelude::any::<f64>()) {
        let json = json_string(&value).unwrap();
        let back: Value = serde_json::from_str(&json).unwrap();
        if value.is_finite() {
            // Valid JSON whose digits give the value back (serde_json's
            // own reader may be an ulp off without `float_roundtrip`).
            proptest::prop_assert!(back.is_number());
            proptest::prop_assert_eq!(json.parse::<f64>().ok(), Some(value));
        } else {
            proptest::prop_assert_eq!(back, Value::Null);
        }
    }

    #[test]
    fn micros_read_back_as_the_seconds(micros in 0u64..4_000_000_000_000_000) {
        let json = json_string(&Micros(micros)).unwrap();
        proptest::prop_assert!(serde_json::from_str::<f64>(&json).is_ok());
        proptest::prop_assert_eq!(json.parse::<f64>().ok(), Some(micros as f64 / 1e6));
    }
}

#[test]
fn numbers_and_times() {
    for (value, json) in [
        (json_string(&0i64), "0"),
        (json_string(&i64::MIN), "-9223372036854775808"),
        (json_string(&u64::MAX), "18446744073709551615"),
        (json_string(&2.0f64), "2.0"),
        (json_string(&-0.5f64), "-0.5"),
        (json_string(&f64::NAN), "null"),
        (json_string(&f64::NEG_INFINITY), "null"),
        (json_string(&Micros(0)), "0.0"),
        (json_string(&Micros(5)), "0.000005"),
        (json_string(&Micros(123_456)), "0.123456"),
        (json_string(&Micros(1_000_000)), "1.0"),
        (json_string(&Micros(1_699_999_999_120_000)), "1699999999.12"),
        (
            json_string(&Micros(1_699_999_999_123_456)),
            "1699999999.123456",
        ),
    ] {
        assert_eq!(value.unwrap(), json);
    }
    for value in [1e300, 1e-7, 123456.789, f64::MIN_POSITIVE] {
        let json = json_string(&value).unwrap();
        assert!(serde_json::from_str::<f64>(&json).is_ok(), "{json}");
        assert_eq!(json.parse::<f64>().ok(), Some(value));
    }
    // Only string map keys exist in JSON.
    let mut numbers = std::collections::BTreeMap::new();
    numbers.insert(1, 2);
    assert!(json_string(&numbers).is_err());
    assert!(json_string(&b"raw"[..].to_vec()).is_ok());
}

/// Strings heavy in what needs escaping: quotes, backslashes, control
/// characters, DEL and multi-byte characters, around the 8-byte steps.
fn awkward_text() -> impl proptest::strategy::Strategy<Value = String> {
    use proptest::prelude::*;
    prop_oneof![any::<String>(), r#"["\\\x00-\x1f\x7f a-zé東😀]{0,24}"#]
}

/// Any JSON value: nested arrays and objects of strings, integers of both
/// signs, finite floats (JSON has no others), bools and null.
fn any_json() -> impl proptest::strategy::Strategy<Value = Value> {
    use proptest::prelude::*;
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(Value::from),
        awkward_text().prop_map(Value::String),
    ];
    leaf.prop_recursive(4, 64, 8, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..8).prop_map(Value::Array),
            proptest::collection::vec((awkward_text(), inner), 0..8)
                .prop_map(|pairs| Value::Object(pairs.into_iter().collect())),
        ]
    })
}

/// Undoes [`Output::Escaped`] once: each backslash escapes the byte after
/// it, as `unescaped_len` counts them.
fn unescape_once(escaped: &[u8]) -> Vec<u8> {
    let mut plain = Vec::with_capacity(escaped.len());
    let mut bytes = escaped.iter();
    while let Some(&byte) = bytes.next() {
        plain.push(if byte == b'\\' {
            *bytes.next().expect("an escape is a pair")
        } else {
            byte
        });
    }
    plain
}

proptest::proptest! {
    #[test]
    fn any_value_reads_back_as_serde_json_writes_it(value in any_json()) {
        let ours = json_string(&value).unwrap();
        let theirs = serde_json::to_string(&value).unwrap();
        let read = |json: &str| serde_json::from_str::<Value>(json).unwrap();
        proptest::prop_assert_eq!(read(&ours), read(&theirs));
        // The request body's form: the same document once unescaped.
        let mut escaped = Vec::new();
        write_json_as(&mut escaped, &value, Output::Escaped).unwrap();
        proptest::prop_assert_eq!(String::from_utf8(unescape_once(&escaped)).unwrap(), ours.as_str());
        proptest::prop_assert!(
            crate::exporter::xray::segment::unescaped_len(&escaped) >= ours.len()
        );
    }
}
