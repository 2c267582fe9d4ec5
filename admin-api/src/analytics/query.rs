//! The query strings of the analytics endpoints, their limits and defaults,
//! and the checks a schema cannot state (`from` before `to`, how many points
//! a step gives).

use serde::Deserialize;
use tollgate_core::db::usage::{MAX_SERIES_POINTS, MINUTE_MS};
use utoipa::{IntoParams, ToSchema};

use crate::error::{ApiError, ApiResult};
use crate::extract::{text_filter, QueryIds, QueryInt};

/// The default range: the last hour.
pub const DEFAULT_RANGE_MS: i64 = 3_600_000;
/// Default and largest `limit` of `top-keys`.
pub const DEFAULT_TOP_KEYS: i64 = 10;
pub const MAX_TOP_KEYS: i64 = 100;
/// Default and largest `per_page` of `violations`.
pub const DEFAULT_PER_PAGE: i64 = 50;
pub const MAX_PER_PAGE: i64 = 200;
/// Without `step`, the finest step giving at most this many points.
pub const DEFAULT_MAX_POINTS: i64 = 1_440;
/// The latest instant accepted in `from`/`to` (year 9999).
const MAX_MS: i64 = 253_402_300_799_999;
const MAX_ROUTE_LEN: usize = 200;

/// A Unix ms instant accepted in `from`.
pub type FromMs = QueryInt<0, MAX_MS>;
/// A Unix ms instant accepted in `to`.
pub type ToMs = QueryInt<1, MAX_MS>;

/// `from`/`to` of every analytics endpoint.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct RangeQuery {
    /// Unix ms (default: `to` minus one hour); before `to`.
    #[param(value_type = Option<i64>, minimum = 0, maximum = 253_402_300_799_999.0)]
    pub from: Option<FromMs>,
    /// Unix ms, exclusive (default: now).
    #[param(value_type = Option<i64>, minimum = 1, maximum = 253_402_300_799_999.0)]
    pub to: Option<ToMs>,
}

/// A time series step.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, ToSchema)]
pub enum Step {
    #[serde(rename = "1m")]
    Minute,
    #[serde(rename = "5m")]
    FiveMinutes,
    #[serde(rename = "1h")]
    Hour,
    #[serde(rename = "1d")]
    Day,
}

impl Step {
    /// Finest first.
    pub const ALL: [Step; 4] = [Step::Minute, Step::FiveMinutes, Step::Hour, Step::Day];

    pub fn name(self) -> &'static str {
        match self {
            Step::Minute => "1m",
            Step::FiveMinutes => "5m",
            Step::Hour => "1h",
            Step::Day => "1d",
        }
    }

    pub fn ms(self) -> i64 {
        match self {
            Step::Minute => MINUTE_MS,
            Step::FiveMinutes => 5 * MINUTE_MS,
            Step::Hour => 60 * MINUTE_MS,
            Step::Day => 1_440 * MINUTE_MS,
        }
    }
}

#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct TimeseriesQuery {
    /// Unix ms (default: `to` minus one hour); before `to`.
    #[param(value_type = Option<i64>, minimum = 0, maximum = 253_402_300_799_999.0)]
    pub from: Option<FromMs>,
    /// Unix ms, exclusive (default: now).
    #[param(value_type = Option<i64>, minimum = 1, maximum = 253_402_300_799_999.0)]
    pub to: Option<ToMs>,
    /// `1m`, `5m`, `1h` or `1d` (default: the finest giving at most 1440
    /// points). At most 10000 points.
    #[param(inline)]
    pub step: Option<Step>,
    /// Only this key (0: requests without a key).
    #[param(value_type = Option<i64>, minimum = 0)]
    pub key: Option<QueryInt<0, { i64::MAX }>>,
    /// Only this route.
    #[param(max_length = 200, pattern = "^[^\\u0000-\\u001f\\u007f-\\u009f]*$")]
    pub route: Option<String>,
}

#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct TopKeysQuery {
    /// Unix ms (default: `to` minus one hour); before `to`.
    #[param(value_type = Option<i64>, minimum = 0, maximum = 253_402_300_799_999.0)]
    pub from: Option<FromMs>,
    /// Unix ms, exclusive (default: now).
    #[param(value_type = Option<i64>, minimum = 1, maximum = 253_402_300_799_999.0)]
    pub to: Option<ToMs>,
    /// How many keys (default 10, at most 100).
    #[param(value_type = Option<i64>, minimum = 1, maximum = 100)]
    pub limit: Option<QueryInt<1, MAX_TOP_KEYS>>,
}

/// The most ids `GET /api/analytics/keys` takes.
pub const MAX_BATCH_KEYS: usize = 100;

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct KeysUsageQuery {
    /// Unix ms (default: `to` minus one hour); before `to`.
    #[param(value_type = Option<i64>, minimum = 0, maximum = 253_402_300_799_999.0)]
    pub from: Option<FromMs>,
    /// Unix ms, exclusive (default: now).
    #[param(value_type = Option<i64>, minimum = 1, maximum = 253_402_300_799_999.0)]
    pub to: Option<ToMs>,
    /// The keys: 1 to 100 comma-separated ids.
    #[param(
        value_type = String,
        pattern = "^[1-9][0-9]{0,17}(,[1-9][0-9]{0,17}){0,99}$",
        example = "1,2,3"
    )]
    pub ids: QueryIds<MAX_BATCH_KEYS>,
}

#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ViolationsQuery {
    /// Unix ms (default: `to` minus one hour); before `to`.
    #[param(value_type = Option<i64>, minimum = 0, maximum = 253_402_300_799_999.0)]
    pub from: Option<FromMs>,
    /// Unix ms, exclusive (default: now).
    #[param(value_type = Option<i64>, minimum = 1, maximum = 253_402_300_799_999.0)]
    pub to: Option<ToMs>,
    /// Only this key (0: requests without a known key).
    #[param(value_type = Option<i64>, minimum = 0)]
    pub key: Option<QueryInt<0, { i64::MAX }>>,
    /// Only this route.
    #[param(max_length = 200, pattern = "^[^\\u0000-\\u001f\\u007f-\\u009f]*$")]
    pub route: Option<String>,
    /// 1-based page number (default 1).
    #[param(value_type = Option<i64>, minimum = 1, maximum = 1_000_000)]
    pub page: Option<QueryInt<1, 1_000_000>>,
    /// Violations per page (default 50, at most 200).
    #[param(value_type = Option<i64>, minimum = 1, maximum = 200)]
    pub per_page: Option<QueryInt<1, MAX_PER_PAGE>>,
}

/// `from`/`to`, defaulted and checked (`from < to`).
pub(super) fn range(from: Option<FromMs>, to: Option<ToMs>) -> ApiResult<(i64, i64)> {
    let to = to.map_or_else(tollgate_core::now_ms, QueryInt::get);
    let from = from.map_or((to - DEFAULT_RANGE_MS).max(0), QueryInt::get);
    if from >= to {
        return Err(ApiError::validation("from", "must be before to"));
    }
    Ok((from, to))
}

pub(super) fn route_filter(v: Option<String>) -> ApiResult<Option<String>> {
    text_filter("route", v, MAX_ROUTE_LEN)
}

fn points(from: i64, to: i64, step_ms: i64) -> i64 {
    let first = from - from.rem_euclid(step_ms);
    (to - first + step_ms - 1) / step_ms
}

/// The step named in the query, or the finest one giving at most
/// [`DEFAULT_MAX_POINTS`] points; never more than [`MAX_SERIES_POINTS`].
pub(super) fn step(v: Option<Step>, from: i64, to: i64) -> ApiResult<Step> {
    let Some(s) = v else {
        let s = Step::ALL
            .into_iter()
            .find(|s| points(from, to, s.ms()) <= DEFAULT_MAX_POINTS)
            .unwrap_or(Step::Day);
        if points(from, to, s.ms()) > MAX_SERIES_POINTS {
            return Err(ApiError::validation(
                "from",
                format!(
                    "the range is too long for a time series (at most {MAX_SERIES_POINTS} days)"
                ),
            ));
        }
        return Ok(s);
    };
    let n = points(from, to, s.ms());
    if n > MAX_SERIES_POINTS {
        return Err(ApiError::validation(
            "step",
            format!("{} gives {n} points over this range, at most {MAX_SERIES_POINTS} are served: use a coarser step", s.name()),
        ));
    }
    Ok(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_steps_keep_series_short() {
        let day = 86_400_000;
        let pick = |span: i64| step(None, 10 * day, 10 * day + span).map(Step::name).ok();
        assert_eq!(pick(3_600_000), Some("1m"));
        assert_eq!(pick(day), Some("1m"));
        assert_eq!(pick(2 * day), Some("5m"));
        assert_eq!(pick(30 * day), Some("1h"));
        assert_eq!(pick(365 * day), Some("1d"));
        assert!(step(None, 0, 20_000 * day).is_err());
        assert!(step(Some(Step::Minute), 0, 7 * day).is_err());
        assert!(crate::extract::parse_query::<TimeseriesQuery>("step=2m").is_err());
    }
}
