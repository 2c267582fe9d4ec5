//! The shared plan table's calendar-quota rows (see [`super`]): the
//! YAML config and the admin API must accept exactly the valid ones.

use serde_json::{json, Value};

use super::PlanCase;
use crate::rules::quotas::MAX_QUOTA;

fn q(extra: Value) -> Value {
    let mut l = json!({ "name": "monthly", "quota": 100, "period": "month" });
    if let (Some(l), Some(extra)) = (l.as_object_mut(), extra.as_object()) {
        for (k, v) in extra {
            l.insert(k.clone(), v.clone());
        }
    }
    l
}

pub fn plan_cases() -> Vec<PlanCase> {
    let bucket = json!({ "name": "second", "rate": 20, "per": "1s" });
    let rows: Vec<(&'static str, Vec<Value>, bool)> = vec![
        ("a monthly quota", vec![q(json!({}))], true),
        (
            "a quota with anchor and time zone",
            vec![q(json!({ "anchor": "15", "time_zone": "Europe/Paris" }))],
            true,
        ),
        (
            "a weekly quota on Fridays",
            vec![q(json!({ "period": "week", "anchor": "friday" }))],
            true,
        ),
        (
            "a yearly quota on Feb 29",
            vec![q(json!({ "period": "year", "anchor": "02-29" }))],
            true,
        ),
        ("a daily quota", vec![q(json!({ "period": "day" }))], true),
        (
            "a quota of 2^50",
            vec![q(json!({ "quota": MAX_QUOTA }))],
            true,
        ),
        ("a quota with a cost", vec![q(json!({ "cost": 100 }))], true),
        (
            "a bucket and a quota",
            vec![bucket.clone(), q(json!({}))],
            true,
        ),
        ("a quota of 0", vec![q(json!({ "quota": 0 }))], false),
        (
            "a quota past 2^50",
            vec![q(json!({ "quota": MAX_QUOTA + 1 }))],
            false,
        ),
        ("a quota with a rate", vec![q(json!({ "rate": 5 }))], false),
        ("a quota with a per", vec![q(json!({ "per": "1s" }))], false),
        (
            "a quota with a burst",
            vec![q(json!({ "burst": 5 }))],
            false,
        ),
        (
            "a quota without a period",
            vec![json!({ "name": "m", "quota": 5 })],
            false,
        ),
        (
            "a period without a quota",
            vec![json!({ "name": "m", "period": "month" })],
            false,
        ),
        (
            "an unknown period",
            vec![q(json!({ "period": "fortnight" }))],
            false,
        ),
        ("anchor 32", vec![q(json!({ "anchor": "32" }))], false),
        ("anchor 0", vec![q(json!({ "anchor": "0" }))], false),
        (
            "an anchor on a daily quota",
            vec![q(json!({ "period": "day", "anchor": "1" }))],
            false,
        ),
        (
            "a year anchor 02-30",
            vec![q(json!({ "period": "year", "anchor": "02-30" }))],
            false,
        ),
        (
            "a weekday that is not",
            vec![q(json!({ "period": "week", "anchor": "funday" }))],
            false,
        ),
        (
            "an unknown time zone",
            vec![q(json!({ "time_zone": "Mars/Olympus" }))],
            false,
        ),
        (
            "a time zone path",
            vec![q(json!({ "time_zone": "../../etc/passwd" }))],
            false,
        ),
        (
            "a cost above the quota",
            vec![q(json!({ "cost": 101 }))],
            false,
        ),
        (
            "a quota named like a bucket",
            vec![bucket, q(json!({ "name": "second" }))],
            false,
        ),
    ];
    rows.into_iter()
        .enumerate()
        .map(|(i, (what, limits, valid))| PlanCase {
            what,
            plan: json!({ "name": format!("quota{i}"), "limits": limits }),
            valid,
        })
        .collect()
}
