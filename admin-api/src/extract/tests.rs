use super::*;
use serde::Deserialize;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
struct Inner {
    rate: u64,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
struct Body {
    name: String,
    limits: Option<Vec<Inner>>,
}

fn err(body: &[u8]) -> ApiError {
    match parse_json::<Body>(body) {
        Ok(v) => panic!("accepted: {v:?}"),
        Err(e) => e,
    }
}

fn field(e: ApiError) -> (u16, String) {
    match e {
        ApiError::Validation { field, .. } => (422, field),
        ApiError::Malformed { .. } => (400, String::new()),
        other => panic!("{other:?}"),
    }
}

#[test]
fn errors_name_the_field() {
    let e = err(br#"{"name":"a","id":3}"#);
    assert_eq!(field(e), (422, "id".into()));
    let e = err(br#"{"limits":[]}"#);
    assert_eq!(field(e), (422, "name".into()));
    let e = err(br#"{"name":"a","limits":[{"rate":-1}]}"#);
    assert_eq!(field(e), (422, "limits[0].rate".into()));
    let e = err(br#"{"name":"a","limits":[{"rate":1,"x":1}]}"#);
    assert_eq!(field(e), (422, "limits[0].x".into()));
    let e = err(br#"{"name":"a""#);
    assert_eq!(field(e).0, 400);
    let e = err(br#"5"#);
    assert_eq!(field(e), (422, "body".into()));
    let e = err(br#"{"name":"a"} x"#);
    assert_eq!(field(e).0, 400);
}

#[derive(Debug, Deserialize, IntoParams)]
#[allow(dead_code)]
struct Query {
    #[param(value_type = Option<i64>)]
    page: Option<QueryInt<1, 10>>,
    #[param(value_type = Option<bool>)]
    on: Option<QueryBool>,
    name: Option<String>,
}

fn query_field(raw: &str) -> String {
    match parse_query::<Query>(raw) {
        Ok(q) => panic!("accepted {raw:?}: {q:?}"),
        Err(ApiError::Validation { field, .. }) => field,
        Err(other) => panic!("{other:?}"),
    }
}

#[test]
fn query_values_are_typed_and_given_once() {
    let q = parse_query::<Query>("page=3&on=1&name=").expect("valid");
    assert_eq!(q.page, Some(QueryInt(3)));
    assert_eq!(q.on, Some(QueryBool(true)));
    assert_eq!(q.name.as_deref(), Some(""));
    assert!(parse_query::<Query>("").is_ok_and(|q| q.page.is_none()));
    for raw in [
        "page=",
        "page=0",
        "page=11",
        "page=x",
        "page=1&page=1",
        "page=%2B1%00",
    ] {
        assert_eq!(query_field(raw), "page", "{raw}");
    }
    for raw in ["on=", "on=yes", "on=true&on=false"] {
        assert_eq!(query_field(raw), "on", "{raw}");
    }
    assert_eq!(query_field("name=a&name=a"), "name");
    // A parameter the type does not take: 400 naming it.
    for (raw, name) in [("other=x", "other"), ("page=1&Page=2", "Page"), ("=1", "")] {
        match parse_query::<Query>(raw) {
            Err(ApiError::Malformed { field, detail }) => {
                assert_eq!(field.as_deref(), Some(name), "{raw}");
                assert!(detail.contains("page, on, name"), "{detail}");
            }
            other => panic!("{raw}: {other:?}"),
        }
    }
    assert_eq!(text_filter("f", Some(String::new()), 3).ok(), Some(None));
    assert!(text_filter("f", Some("abcd".into()), 3).is_err());
    assert!(text_filter("f", Some("a\u{0}".into()), 3).is_err());
}

#[test]
fn ids_must_be_positive_integers() {
    assert_eq!(parse_id("12").ok(), Some(12));
    assert!(parse_id("x").is_err());
    assert!(parse_id("-1").is_err());
    for bad in [
        "",
        "0",
        "+1",
        "01",
        "%31",
        "1 ",
        "１",
        "9223372036854775808",
    ] {
        assert!(parse_id(bad).is_err(), "{bad}");
    }
    assert_eq!(parse_id("9223372036854775807").ok(), Some(i64::MAX));
}
