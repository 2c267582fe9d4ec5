//! [`Stmt`]: the one builder of dynamic statements (filters, patches,
//! batches), for both databases.
//!
//! Placeholders are written as values are bound: `$N` on PostgreSQL, and on
//! SQLite plain `?` bound in order. (sqlx `Any`'s `QueryBuilder` emits `?`,
//! which PostgreSQL refuses; and SQLite resolves every numbered or named
//! parameter by scanning a list, which is quadratic in a statement of
//! thousands of values.) So each value is bound where it appears in the text,
//! and a value used twice is bound twice.

use std::fmt::Write as _;

use sqlx::any::AnyArguments;
use sqlx::query::Query;
use sqlx::Any;

use super::DbKind;

/// One bound value: borrowed where the caller holds it, owned where the
/// statement makes it (a pattern, JSON text).
#[derive(Debug, Clone)]
pub(crate) enum Arg<'a> {
    Int(i64),
    OptInt(Option<i64>),
    Text(&'a str),
    OptText(Option<&'a str>),
    Owned(Option<String>),
}

/// A statement and its bound values, built in order: every
/// [`Stmt::bind`] writes the next placeholder (`$N` or `?`) and records
/// its value.
pub(crate) struct Stmt<'a> {
    kind: DbKind,
    sql: String,
    args: Vec<Arg<'a>>,
    /// Whether [`Stmt::and_where`] has written its `WHERE`.
    filtered: bool,
}

impl<'a> Stmt<'a> {
    pub(crate) fn new(kind: DbKind) -> Self {
        Self {
            kind,
            sql: String::with_capacity(256),
            args: Vec::new(),
            filtered: false,
        }
    }

    pub(crate) fn push(&mut self, sql: &str) -> &mut Self {
        self.sql.push_str(sql);
        self
    }

    pub(crate) fn bind(&mut self, arg: Arg<'a>) -> &mut Self {
        self.args.push(arg);
        match self.kind {
            DbKind::Postgres => {
                let _ = write!(self.sql, "${}", self.args.len());
            }
            DbKind::Sqlite => self.sql.push('?'),
        }
        self
    }

    pub(crate) fn int(&mut self, v: i64) -> &mut Self {
        self.bind(Arg::Int(v))
    }

    pub(crate) fn text(&mut self, v: &'a str) -> &mut Self {
        self.bind(Arg::Text(v))
    }

    /// `sql` with each `$1` in it replaced by a placeholder bound to `v`
    /// (for a fragment written for a fixed parameter, such as
    /// `keys::next_stamp`).
    pub(crate) fn push_with(&mut self, sql: &str, v: i64) -> &mut Self {
        for (i, part) in sql.split("$1").enumerate() {
            if i > 0 {
                self.int(v);
            }
            self.push(part);
        }
        self
    }

    /// Start the next condition of a filter: ` WHERE ` the first time,
    /// ` AND ` after.
    pub(crate) fn and_where(&mut self) -> &mut Self {
        let word = if self.filtered { " AND " } else { " WHERE " };
        self.filtered = true;
        self.push(word)
    }

    /// The statement, not cached (its text changes with its batch size).
    pub(crate) fn query(&self) -> Query<'_, Any, AnyArguments<'_>> {
        let mut q = sqlx::query(&self.sql).persistent(false);
        for a in &self.args {
            q = match a {
                Arg::Int(v) => q.bind(*v),
                Arg::OptInt(v) => q.bind(*v),
                Arg::Text(v) => q.bind(*v),
                Arg::OptText(v) => q.bind(*v),
                Arg::Owned(v) => q.bind(v.as_deref()),
            };
        }
        q
    }

    /// The text as built (for tests).
    #[cfg(test)]
    pub(crate) fn sql(&self) -> &str {
        &self.sql
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_follow_the_database() {
        for (kind, expected) in [
            (
                DbKind::Postgres,
                "SELECT 1 WHERE a = $1 AND b < $2 AND c = $3 OR $4",
            ),
            (
                DbKind::Sqlite,
                "SELECT 1 WHERE a = ? AND b < ? AND c = ? OR ?",
            ),
        ] {
            let mut s = Stmt::new(kind);
            s.push("SELECT 1");
            s.and_where().push("a = ").int(1);
            s.and_where().push("b < ").text("x");
            s.and_where().push_with("c = $1 OR $1", 7);
            assert_eq!(s.sql(), expected);
            assert_eq!(s.args.len(), 4);
        }
    }
}
