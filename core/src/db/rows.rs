//! Reading the rows the proxies apply (credit adjustments and refills,
//! quota adjustments) one by one: a row that cannot be read (written around
//! Tollgate: an unknown kind, a value of the wrong type) is left out and
//! logged, never the whole set with it (black-box round 4, C3: one bogus
//! credit row made a proxy drop every top-up and spend, so every prepaid key
//! went unlimited).

use sqlx::any::AnyRow;

use super::DbError;

/// Every row `decode` reads; the others are logged (`table`) and left out.
pub(crate) fn readable<T>(
    rows: &[AnyRow],
    table: &str,
    decode: impl Fn(&AnyRow) -> Result<T, DbError>,
) -> Vec<T> {
    rows.iter()
        .filter_map(|row| match decode(row) {
            Ok(v) => Some(v),
            Err(e) => {
                tracing::warn!(table, "an unreadable row was left out: {e}");
                None
            }
        })
        .collect()
}
