use super::*;

#[test]
fn instants_parse_three_ways_and_refuse_the_rest() {
    assert_eq!(parse_instant("from", "0"), Ok(0));
    assert_eq!(parse_instant("from", "86400000"), Ok(DAY_MS));
    assert_eq!(parse_instant("from", "1970-01-02"), Ok(DAY_MS));
    assert_eq!(parse_instant("from", "1970-01-01T01:00:00Z"), Ok(HOUR_MS));
    assert_eq!(
        parse_instant("from", "1970-01-01T02:00:00+01:00"),
        Ok(HOUR_MS)
    );
    for bad in [
        "",
        "-1",
        "1e9",
        "yesterday",
        "2026-13-01",
        "2026-02-30",
        "99999999999999999999",
        "253402300800001",
        "1969-12-31",
        "2026-12-01T00:00:00",
        "2026-12-01T00:00:60Z",
        "2016-12-31T23:59:60Z",
        "\u{0}",
    ] {
        assert!(parse_instant("from", bad).is_err(), "{bad:?}");
    }
}

#[test]
fn ranges_are_whole_periods_and_bounded() {
    let q = |from, to, step| ExportQuery::new(from, to, ExportGroup::Key, step);
    assert!(q(0, MINUTE_MS, ExportStep::Total).is_ok());
    assert!(q(1, MINUTE_MS, ExportStep::Total).is_err());
    assert!(q(0, MINUTE_MS, ExportStep::Hour).is_err());
    assert!(q(HOUR_MS, 3 * HOUR_MS, ExportStep::Hour).is_ok());
    assert!(q(HOUR_MS, DAY_MS, ExportStep::Day).is_err());
    assert!(q(DAY_MS, 2 * DAY_MS, ExportStep::Day).is_ok());
    assert!(q(MINUTE_MS, MINUTE_MS, ExportStep::Total).is_err());
    assert!(q(2 * MINUTE_MS, MINUTE_MS, ExportStep::Total).is_err());
    assert!(q(0, MAX_EXPORT_RANGE_MS, ExportStep::Day).is_ok());
    assert!(q(0, MAX_EXPORT_RANGE_MS + DAY_MS, ExportStep::Day).is_err());
    assert!(q(0, MAX_INSTANT_MS + DAY_MS, ExportStep::Day).is_err());
}

#[test]
fn parameters_name_their_field() {
    assert_eq!(ExportGroup::parse("identity"), Ok(ExportGroup::Identity));
    assert!(matches!(
        ExportGroup::parse("KEY"),
        Err(ExportError::Invalid {
            field: "group_by",
            ..
        })
    ));
    assert!(ExportFormat::parse("xml").is_err());
    assert_eq!(ExportFormat::parse("ndjson"), Ok(ExportFormat::Json));
    assert!(ExportStep::parse("week").is_err());
}

#[test]
fn csv_fields_are_quoted_and_never_formulas() {
    assert_eq!(csv_field("plain"), "plain");
    assert_eq!(csv_field("a,b"), "\"a,b\"");
    assert_eq!(csv_field("say \"hi\""), "\"say \"\"hi\"\"\"");
    assert_eq!(csv_field("two\nlines"), "\"two\nlines\"");
    assert_eq!(csv_field("=HYPERLINK(1)"), "'=HYPERLINK(1)");
    assert_eq!(csv_field("-1+2"), "'-1+2");
    assert_eq!(csv_field("@a,b"), "\"'@a,b\"");
}

#[test]
fn lines_have_the_header_columns() {
    let row = ExportRow {
        start: 0,
        end: HOUR_MS,
        group: GroupValue::Key {
            id: 7,
            name: Some("acme, inc".into()),
            prefix: None,
        },
        counts: Counts {
            allowed: 3,
            limited: 2,
            ..Counts::default()
        },
    };
    let header = ExportFormat::Csv.header(ExportGroup::Key);
    assert_eq!(
        header,
        "start,end,key_id,key_name,key_prefix,requests,allowed,limited,unauthorized,forbidden,upstream_errors\n"
    );
    assert_eq!(
        ExportFormat::Csv.line(&row),
        "1970-01-01T00:00:00Z,1970-01-01T01:00:00Z,7,\"acme, inc\",,5,3,2,0,0,0\n"
    );
    let v: serde_json::Value =
        serde_json::from_str(ExportFormat::Json.line(&row).trim_end()).expect("json");
    assert_eq!(v["key_id"], 7);
    assert_eq!(v["key_prefix"], serde_json::Value::Null);
    assert_eq!(v["requests"], 5);
    assert_eq!(v["end"], "1970-01-01T01:00:00Z");
    assert_eq!(ExportFormat::Json.header(ExportGroup::Route), "");
}
