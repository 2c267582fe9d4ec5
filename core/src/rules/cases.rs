//! Edge cases of the plan rules (only with the `testing` feature): every
//! way of defining a plan (YAML, admin API) must accept exactly the valid
//! ones. The tests of core (YAML) and admin-api (HTTP) run the same table.

use serde_json::{json, Value};

mod quota;

/// One plan and whether the rules accept it.
#[derive(Debug, Clone)]
pub struct PlanCase {
    /// What the case is about.
    pub what: &'static str,
    /// The plan as the admin API takes it (`name`, `limits`, `concurrency`);
    /// the YAML form is the same object under `plans.<name>`.
    pub plan: Value,
    pub valid: bool,
}

/// One limit, `per` as text.
fn limit(name: &str, rate: Value, per: &str) -> Value {
    json!({ "name": name, "rate": rate, "per": per })
}

fn with(mut limit: Value, field: &str, v: Value) -> Value {
    limit[field] = v;
    limit
}

fn case(what: &'static str, name: &str, limits: Vec<Value>, valid: bool) -> PlanCase {
    PlanCase {
        what,
        plan: json!({ "name": name, "limits": limits }),
        valid,
    }
}

/// The table: names, numbers at and past their bounds, list sizes.
pub fn plan_cases() -> Vec<PlanCase> {
    let m = || limit("m", json!(1), "1s");
    let max_tokens = json!(i64::MAX as u64);
    let past_tokens = json!(i64::MAX as u64 + 1);
    let many = |n: usize| -> Vec<Value> {
        (0..n)
            .map(|i| limit(&format!("l{i}"), json!(1), "1s"))
            .collect()
    };
    let mut cases = vec![
        case("a plain plan", "plain", vec![m()], true),
        case("no limits (unlimited)", "open", vec![], true),
        case("name characters", "a.b_c-D9", vec![m()], true),
        case("a 64-character name", &"p".repeat(64), vec![m()], true),
        case("a 65-character name", &"p".repeat(65), vec![m()], false),
        case("a space in the name", "a b", vec![m()], false),
        case("a colon in the name", "a:b", vec![m()], false),
        case("a non-ASCII name", "pläne", vec![m()], false),
        case(
            "limit name characters",
            "ln",
            vec![limit("a.b_c-D9", json!(1), "1s")],
            true,
        ),
        case(
            "a 64-character limit name",
            "ln64",
            vec![limit(&"l".repeat(64), json!(1), "1s")],
            true,
        ),
        case(
            "a 65-character limit name",
            "ln65",
            vec![limit(&"l".repeat(65), json!(1), "1s")],
            false,
        ),
        case(
            "a quote in a limit name",
            "lq",
            vec![limit("a\"b", json!(1), "1s")],
            false,
        ),
        case(
            "a space in a limit name",
            "ls",
            vec![limit("a b", json!(1), "1s")],
            false,
        ),
        case(
            "an empty limit name",
            "le",
            vec![limit("", json!(1), "1s")],
            false,
        ),
        case("duplicate limit names", "dup", vec![m(), m()], false),
        case(
            "rate 1e9",
            "r9",
            vec![limit("m", json!(1_000_000_000u64), "1s")],
            true,
        ),
        case(
            "rate 1e9 + 1",
            "r9p",
            vec![limit("m", json!(1_000_000_001u64), "1s")],
            false,
        ),
        case("rate 0", "r0", vec![limit("m", json!(0), "1s")], false),
        case(
            "rate 2^64 - 1",
            "rmax",
            vec![limit("m", json!(u64::MAX), "1s")],
            false,
        ),
        case("per 1ms", "p1ms", vec![limit("m", json!(1), "1ms")], true),
        case("per 366d", "p366", vec![limit("m", json!(1), "366d")], true),
        case(
            "per 8784h (366d)",
            "p8784",
            vec![limit("m", json!(1), "8784h")],
            true,
        ),
        case(
            "per 367d",
            "p367",
            vec![limit("m", json!(1), "367d")],
            false,
        ),
        case(
            "per 8785h",
            "p8785",
            vec![limit("m", json!(1), "8785h")],
            false,
        ),
        case("per 0s", "p0", vec![limit("m", json!(1), "0s")], false),
        case(
            "per 1w (unknown unit)",
            "p1w",
            vec![limit("m", json!(1), "1w")],
            false,
        ),
        // Round 10 (black-box): a burst the arithmetic would clamp (its
        // refill from empty past 2^50 µs) is refused, not silently cut.
        case(
            "burst 2^63 - 1 at 1 per second (clamped to 1125899906)",
            "bmax",
            vec![with(m(), "burst", max_tokens.clone())],
            false,
        ),
        case(
            "burst 1125899906 at 1 per second (2^50 µs of tokens)",
            "bfit",
            vec![with(m(), "burst", json!(1_125_899_906u64))],
            true,
        ),
        case(
            "burst 1125899907 at 1 per second",
            "bover",
            vec![with(m(), "burst", json!(1_125_899_907u64))],
            false,
        ),
        case(
            "burst 2^50 at 1e9 per second (1 µs per token in Redis)",
            "bfast",
            vec![with(
                limit("m", json!(1_000_000_000u64), "1s"),
                "burst",
                json!(1u64 << 50),
            )],
            true,
        ),
        case(
            "burst 2^50 + 1 at 1e9 per second",
            "bfastover",
            vec![with(
                limit("m", json!(1_000_000_000u64), "1s"),
                "burst",
                json!((1u64 << 50) + 1),
            )],
            false,
        ),
        case(
            "burst 35 at 1 per 366d",
            "bslow",
            vec![with(limit("m", json!(1), "366d"), "burst", json!(35))],
            true,
        ),
        case(
            "burst 36 at 1 per 366d (36 years to refill)",
            "bslowover",
            vec![with(limit("m", json!(1), "366d"), "burst", json!(36))],
            false,
        ),
        case(
            "burst 2^63",
            "bpast",
            vec![with(m(), "burst", past_tokens.clone())],
            false,
        ),
        case("burst 0", "b0", vec![with(m(), "burst", json!(0))], false),
        case(
            "cost 2^63 - 1 = burst (the burst is clamped)",
            "cmax",
            vec![with(
                with(m(), "burst", max_tokens),
                "cost",
                json!(i64::MAX as u64),
            )],
            false,
        ),
        case(
            "cost = the largest burst",
            "cfit",
            vec![with(
                with(m(), "burst", json!(1_125_899_906u64)),
                "cost",
                json!(1_125_899_906u64),
            )],
            true,
        ),
        case(
            "cost 2^63",
            "cpast",
            vec![with(m(), "cost", past_tokens)],
            false,
        ),
        case("cost 0", "c0", vec![with(m(), "cost", json!(0))], false),
        case(
            "cost above the rate, no burst",
            "crate",
            vec![with(m(), "cost", json!(2))],
            false,
        ),
        case(
            "cost = burst",
            "ceq",
            vec![with(
                with(limit("m", json!(5), "1s"), "burst", json!(3)),
                "cost",
                json!(3),
            )],
            true,
        ),
        case(
            "cost above burst",
            "cgt",
            vec![with(
                with(limit("m", json!(5), "1s"), "burst", json!(3)),
                "cost",
                json!(4),
            )],
            false,
        ),
        case("16 limits", "l16", many(16), true),
        case("17 limits", "l17", many(17), false),
    ];
    for (what, name, c, valid) in [
        ("concurrency 1", "k1", json!(1), true),
        ("concurrency 2^31 - 1", "kmax", json!(i32::MAX), true),
        (
            "concurrency 2^31 (past int32)",
            "k31",
            json!(1u64 << 31),
            false,
        ),
        ("concurrency 0", "k0", json!(0), false),
        (
            "concurrency 2^32",
            "kpast",
            json!(u64::from(u32::MAX) + 1),
            false,
        ),
    ] {
        cases.push(PlanCase {
            what,
            plan: json!({ "name": name, "limits": [m()], "concurrency": c }),
            valid,
        });
    }
    cases.extend(quota::plan_cases());
    cases
}

/// The case as a YAML config (JSON is YAML) defining just that plan.
pub fn as_yaml(case: &PlanCase) -> String {
    let mut plan = case.plan.clone();
    let name = plan["name"].as_str().unwrap_or_default().to_string();
    if let Some(m) = plan.as_object_mut() {
        m.remove("name");
    }
    json!({ "plans": { name: plan } }).to_string()
}
