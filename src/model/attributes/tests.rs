//! Both forms of attributes answer lookups alike.

use super::*;
use crate::otlp::tag;

#[test]
fn first_str_skips_missing_and_empty() {
    let attrs = Attributes::from_vec(vec![
        ("peer.service".into(), AttributeValue::String(String::new())),
        (
            "server.address".into(),
            AttributeValue::String("db:5432".into()),
        ),
    ]);
    assert_eq!(
        attrs.first_str(&["peer.service", "server.address"]),
        Some("db:5432")
    );
    assert_eq!(attrs.first_str(&["net.peer.name"]), None);
}

#[test]
fn find_strs_reads_many_keys_in_one_pass_on_both_forms() {
    let owned = Attributes::from_vec(vec![
        ("db.system".into(), AttributeValue::String("redis".into())),
        ("n".into(), AttributeValue::Int(3)),
        ("db.system".into(), AttributeValue::String("ignored".into())),
        (
            "peer.service".into(),
            AttributeValue::String("cache".into()),
        ),
    ]);
    let keys = KeySet::new(["peer.service", "missing", "db.system", "n"]).unwrap();
    let pairs: Vec<_> = owned.iter().map(|(k, v)| (k.to_string(), v)).collect();
    for attrs in [owned, encoded(&pairs)] {
        let mut found = [Some("stale"); 4];
        attrs.find_strs(&keys, &mut found);
        assert_eq!(found, [Some("cache"), None, Some("redis"), None]);
    }
}

#[test]
fn key_set_tells_same_length_and_long_keys_apart() {
    let long_a = "a".repeat(70);
    let long_b = "b".repeat(70);
    let mut keys = KeySet::new(["db.name", "db.user", &long_a]).unwrap();
    assert_eq!(keys.insert("db.name"), Some(0), "repeats keep their index");
    assert_eq!(keys.insert(&long_b), Some(3));
    assert_eq!(keys.len(), 4);
    let attrs = Attributes::from_vec(vec![
        (long_b.clone(), AttributeValue::String("b".into())),
        ("db.user".into(), AttributeValue::String("u".into())),
        ("db.nam".into(), AttributeValue::String("short".into())),
    ]);
    let mut found = [None; 4];
    attrs.find_strs(&keys, &mut found);
    assert_eq!(found, [None, Some("u"), None, Some("b")]);

    let many: Vec<String> = (0..=KeySet::MAX_KEYS).map(|i| format!("k{i}")).collect();
    assert!(KeySet::new(&many[..KeySet::MAX_KEYS]).is_some());
    assert!(KeySet::new(&many).is_none(), "one key too many");
}

fn pairs() -> Vec<(String, AttributeValue)> {
    let text = |s: &str| AttributeValue::String(s.into());
    vec![
        ("peer.service".into(), text("")),
        ("http.response.status_code".into(), AttributeValue::Int(503)),
        ("server.port".into(), text("8080")),
        ("server.address".into(), AttributeValue::Bool(true)),
        ("server.address".into(), text("shadowed")),
        ("net.peer.name".into(), text("db")),
        ("db.system".into(), text("postgresql")),
        ("ratio".into(), AttributeValue::Double(0.25)),
        (
            "nested".into(),
            AttributeValue::Map(Attributes::from_vec(vec![(
                "k".into(),
                AttributeValue::Array(vec![text("a"), AttributeValue::Empty]),
            )])),
        ),
    ]
}

/// The same pairs as OTLP `KeyValue`s under Span field 9, with a span
/// name field in between as an encoder may interleave one.
fn encoded(pairs: &[(String, AttributeValue)]) -> Attributes {
    use opentelemetry_proto::tonic::common::v1::{
        AnyValue, ArrayValue, KeyValue, KeyValueList, any_value::Value,
    };
    fn any(value: &AttributeValue) -> AnyValue {
        let value = match value {
            AttributeValue::String(s) => Some(Value::StringValue(s.clone())),
            AttributeValue::Bool(b) => Some(Value::BoolValue(*b)),
            AttributeValue::Int(i) => Some(Value::IntValue(*i)),
            AttributeValue::Double(d) => Some(Value::DoubleValue(*d)),
            AttributeValue::Bytes(b) => Some(Value::BytesValue(b.clone())),
            AttributeValue::Array(items) => Some(Value::ArrayValue(ArrayValue {
                values: items.iter().map(any).collect(),
            })),
            AttributeValue::Map(map) => Some(Value::KvlistValue(KeyValueList {
                values: map.iter().map(|(k, v)| key_value(k, &v)).collect(),
            })),
            AttributeValue::Empty => None,
        };
        AnyValue { value }
    }
    fn key_value(key: &str, value: &AttributeValue) -> KeyValue {
        KeyValue {
            key: key.into(),
            value: Some(any(value)),
            ..Default::default()
        }
    }
    let mut buf = Vec::new();
    for (i, (key, value)) in pairs.iter().enumerate() {
        prost::encoding::message::encode(tag::SPAN_ATTRIBUTES, &key_value(key, value), &mut buf);
        if i == 1 {
            prost::encoding::string::encode(tag::SPAN_NAME, &"name".to_owned(), &mut buf);
        }
    }
    Attributes::from_encoded(buf.into(), tag::SPAN_ATTRIBUTES, pairs.len())
}

#[test]
fn iter_ref_reads_every_layout_as_owned_attributes_do() {
    let long = "x".repeat(200);
    let mut pairs = pairs();
    pairs.extend([
        (
            "café.name".to_owned(),
            AttributeValue::String("naïve 名前".into()),
        ),
        ("long".to_owned(), AttributeValue::String(long.clone())),
        ("empty".to_owned(), AttributeValue::String(String::new())),
    ]);
    let owned = Attributes::from_vec(pairs.clone());
    let encoded = encoded(&pairs);
    let read = |attrs: &Attributes| -> Vec<(String, ValueRef<'static>)> {
        attrs
            .iter_ref()
            .map(|(key, value)| {
                let value = match value {
                    ValueRef::Str(s) => ValueRef::Decoded(AttributeValue::String(s.into())),
                    ValueRef::Int(i) => ValueRef::Decoded(AttributeValue::Int(i)),
                    ValueRef::Decoded(v) => ValueRef::Decoded(v),
                };
                (key.to_owned(), value)
            })
            .collect()
    };
    assert_eq!(read(&encoded), read(&owned));
    assert_eq!(read(&encoded).len(), 12);

    // Value before key, and a repeated key (the last wins), as a
    // hand-written encoder may lay them out.
    let kv = [
        &[0x12, 0x05, 0x0a, 0x03][..],
        b"val",
        &[0x0a, 0x01, b'a', 0x0a, 0x01, b'k'],
    ]
    .concat();
    let mut message = vec![0x4a, u8::try_from(kv.len()).unwrap()];
    message.extend_from_slice(&kv);
    let odd = Attributes::from_encoded(message.into(), 9, 1);
    let got: Vec<_> = odd.iter_ref().collect();
    assert_eq!(got, [("k", ValueRef::Str("val"))]);
}

#[test]
fn encoded_and_owned_answer_alike() {
    let owned = Attributes::from_vec(pairs());
    let encoded = encoded(&pairs());
    assert_eq!(owned, encoded);
    assert_eq!(format!("{owned:?}"), format!("{encoded:?}"));
    assert_ne!(owned, Attributes::from_vec(pairs()[1..].to_vec()));
    for attrs in [&owned, &encoded] {
        assert_eq!(attrs.len(), 9);
        assert_eq!(attrs.get_str("db.system"), Some("postgresql"));
        assert_eq!(attrs.get_str("http.response.status_code"), None);
        assert_eq!(attrs.get_i64("http.response.status_code"), Some(503));
        assert_eq!(attrs.get_i64("server.port"), Some(8080));
        assert_eq!(attrs.get_i64("db.system"), None);
        assert_eq!(attrs.get("ratio"), Some(AttributeValue::Double(0.25)));
        // The first of duplicated keys wins, even when it is no string.
        assert_eq!(attrs.get_str("server.address"), None);
        assert_eq!(
            attrs.first_str(&["peer.service", "server.address", "net.peer.name"]),
            Some("db")
        );
        assert_eq!(
            attrs.first_str(&["db.system", "net.peer.name"]),
            Some("postgresql")
        );
        assert_eq!(attrs.first_str(&["peer.service", "absent"]), None);
        let Some(AttributeValue::Map(nested)) = attrs.get("nested") else {
            panic!("map expected");
        };
        assert_eq!(
            nested.get("k"),
            Some(AttributeValue::Array(vec![
                AttributeValue::String("a".into()),
                AttributeValue::Empty
            ]))
        );
        let keys: Vec<&str> = attrs.iter().map(|(key, _)| key).collect();
        assert_eq!(
            keys[..3],
            ["peer.service", "http.response.status_code", "server.port"]
        );
    }
    // More keys than the one-pass bookkeeping holds: same answer.
    let mut many: Vec<String> = (0..70).map(|i| format!("k{i}")).collect();
    many.push("net.peer.name".into());
    let many: Vec<&str> = many.iter().map(String::as_str).collect();
    assert_eq!(owned.first_str(&many), Some("db"));
    assert_eq!(encoded.first_str(&many), Some("db"));
    assert!(Attributes::default().is_empty());
    assert_eq!(
        Attributes::default(),
        Attributes::from_encoded(Bytes::new(), 9, 0)
    );
}
