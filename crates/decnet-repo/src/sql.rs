//! DECNET's `/stream` filters as SQL, one dialect per engine.
//!
//! Every value is bound, each occurrence separately (DECNET's own fix for
//! shared bind names); only the JSON key is written into the SQL text, and
//! [`crate::LogFilter`] has already reduced it to `[A-Za-z0-9_]`, so it cannot
//! leave its quotes.
//!
//! Semantics per engine (DECNET.md §3.1):
//! - SQLite: DECNET's SQL as it is. `LIKE` folds ASCII case and has no escape
//!   character, `=` is byte equality, `json_extract(fields, '$.key') = ?` only
//!   matches JSON strings (a text bind never equals a number), and the time
//!   bounds compare as text with the stored `YYYY-MM-DD HH:MM:SS.ffffff`
//!   (a purely numeric bound is a number, below every text).
//! - MySQL: DECNET's SQL as it is: `JSON_UNQUOTE(JSON_EXTRACT(...)) = ?`
//!   (numbers match their text, booleans `true`/`false`), the column
//!   collation decides case, `\` is `LIKE`'s escape, the server converts the
//!   bounds to `DATETIME`.
//! - PostgreSQL (this crate's own schema): SQLite's semantics, written out
//!   explicitly so that PostgreSQL, SQLite and the memory backend answer
//!   alike: ASCII-only case folding with `translate` and `LIKE ... ESCAPE ''`,
//!   a JSON-key term that only matches JSON strings (`jsonb_typeof`), bounds
//!   compared with the timestamp rendered as SQLite stores it (`to_char`), and
//!   SQLite's numeric-bound rule applied before the query is built.

use crate::{LogFilter, SearchTerm};

/// Which engine's SQL to write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Dialect {
    /// `?` placeholders, DECNET's SQLite SQL.
    #[cfg(feature = "sqlite")]
    Sqlite,
    /// `?` placeholders, DECNET's MySQL SQL.
    #[cfg(feature = "mysql")]
    Mysql,
    /// `$n` placeholders, SQLite's semantics.
    #[cfg(feature = "postgres")]
    Postgres,
}

/// The conditions of a filter and the text values they bind, in order.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Conditions {
    /// Each condition, to be joined with `AND` (empty: no filter).
    pub(crate) sql: Vec<String>,
    /// The values, in placeholder order.
    pub(crate) binds: Vec<String>,
}

impl Conditions {
    /// ` AND c1 AND c2 ...`, or empty, to append after a `WHERE` clause.
    pub(crate) fn and_clause(&self) -> String {
        self.sql.iter().map(|c| format!(" AND {c}")).collect()
    }

    /// ` WHERE c1 AND c2 ...`, or empty.
    pub(crate) fn where_clause(&self) -> String {
        if self.sql.is_empty() {
            String::new()
        } else {
            format!(" WHERE {}", self.sql.join(" AND "))
        }
    }
}

#[cfg(feature = "postgres")]
const UPPER: &str = "ABCDEFGHIJKLMNOPQRSTUVWXYZ";
#[cfg(feature = "postgres")]
const LOWER: &str = "abcdefghijklmnopqrstuvwxyz";

/// The `WHERE` conditions of `filter` for `dialect`. With PostgreSQL the
/// placeholders start at `$first_param`; the others ignore it.
pub(crate) fn conditions(filter: &LogFilter, dialect: Dialect, first_param: usize) -> Conditions {
    let mut out = Conditions::default();
    let bind = |out: &mut Conditions, value: String| placeholder(dialect, first_param, out, value);

    for (bound, op) in [(&filter.start_time, ">="), (&filter.end_time, "<=")] {
        let Some(bound) = bound else { continue };
        match dialect {
            #[cfg(feature = "postgres")]
            Dialect::Postgres => {
                if crate::search::sqlite_numeric(bound) {
                    // A number sorts below every text: a numeric start keeps
                    // every row, a numeric end none.
                    if op == "<=" {
                        out.sql.push("FALSE".to_owned());
                    }
                    continue;
                }
                let p = bind(&mut out, bound.clone());
                out.sql.push(format!(
                    "to_char(\"timestamp\", 'YYYY-MM-DD HH24:MI:SS.US') {op} {p}"
                ));
            }
            #[allow(unreachable_patterns, reason = "SQLite and MySQL share the SQL text")]
            _ => {
                let p = bind(&mut out, bound.clone());
                out.sql.push(format!("timestamp {op} {p}"));
            }
        }
    }

    for term in &filter.terms {
        match term {
            SearchTerm::Equals { column, value } => {
                let p = bind(&mut out, value.clone());
                out.sql.push(format!("{} = {p}", column.as_sql()));
            }
            SearchTerm::JsonKey { key, value } => {
                let p = bind(&mut out, value.clone());
                out.sql.push(match dialect {
                    #[cfg(feature = "sqlite")]
                    Dialect::Sqlite => format!("json_extract(fields, '$.{key}') = {p}"),
                    #[cfg(feature = "mysql")]
                    Dialect::Mysql => {
                        format!("JSON_UNQUOTE(JSON_EXTRACT(fields, '$.{key}')) = {p}")
                    }
                    #[cfg(feature = "postgres")]
                    Dialect::Postgres => format!(
                        "(jsonb_typeof(fields::jsonb -> '{key}') = 'string' \
                         AND fields::jsonb ->> '{key}' = {p})"
                    ),
                });
            }
            SearchTerm::Text(text) => {
                let columns = ["raw_line", "decky", "service", "attacker_ip"];
                match dialect {
                    #[cfg(feature = "postgres")]
                    Dialect::Postgres => {
                        let p = bind(&mut out, format!("%{}%", text.to_ascii_lowercase()));
                        let ors: Vec<String> = columns
                            .iter()
                            .map(|c| {
                                format!("translate({c}, '{UPPER}', '{LOWER}') LIKE {p} ESCAPE ''")
                            })
                            .collect();
                        out.sql.push(format!("({})", ors.join(" OR ")));
                    }
                    #[allow(unreachable_patterns, reason = "SQLite and MySQL share the SQL text")]
                    _ => {
                        let ors: Vec<String> = columns
                            .iter()
                            .map(|c| {
                                let p = bind(&mut out, format!("%{text}%"));
                                format!("{c} LIKE {p}")
                            })
                            .collect();
                        out.sql.push(format!("({})", ors.join(" OR ")));
                    }
                }
            }
        }
    }
    out
}

/// Record `value` and return its placeholder.
fn placeholder(
    dialect: Dialect,
    first_param: usize,
    out: &mut Conditions,
    value: String,
) -> String {
    out.binds.push(value);
    match dialect {
        #[cfg(feature = "postgres")]
        Dialect::Postgres => format!("${}", first_param + out.binds.len() - 1),
        #[allow(unreachable_patterns, reason = "only PostgreSQL numbers placeholders")]
        _ => {
            let _ = first_param;
            "?".to_owned()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn filter() -> LogFilter {
        LogFilter::new(
            Some(r#"decky:web01 user:root "50%" port:22"#),
            Some("2026-06-20 12:00:00"),
            Some("2026"),
        )
    }

    #[cfg(feature = "sqlite")]
    #[test]
    fn sqlite_is_decnets_sql_with_every_value_bound() {
        let c = conditions(&filter(), Dialect::Sqlite, 1);
        assert_eq!(
            c.sql,
            [
                "timestamp >= ?",
                "timestamp <= ?",
                "decky = ?",
                "json_extract(fields, '$.user') = ?",
                "(raw_line LIKE ? OR decky LIKE ? OR service LIKE ? OR attacker_ip LIKE ?)",
                "json_extract(fields, '$.port') = ?",
            ]
        );
        assert_eq!(
            c.binds,
            [
                "2026-06-20 12:00:00",
                "2026",
                "web01",
                "root",
                "%50%%",
                "%50%%",
                "%50%%",
                "%50%%",
                "22"
            ]
        );
        assert_eq!(
            LogFilter::default().is_empty(),
            conditions(&LogFilter::default(), Dialect::Sqlite, 1)
                .sql
                .is_empty()
        );
    }

    #[cfg(feature = "mysql")]
    #[test]
    fn mysql_unquotes_the_json_value() {
        let c = conditions(&filter(), Dialect::Mysql, 1);
        assert_eq!(c.sql[3], "JSON_UNQUOTE(JSON_EXTRACT(fields, '$.user')) = ?");
        assert_eq!(c.binds.len(), 9);
    }

    #[cfg(feature = "postgres")]
    #[test]
    fn postgres_numbers_placeholders_and_applies_the_numeric_bound_rule() {
        let c = conditions(&filter(), Dialect::Postgres, 3);
        assert_eq!(
            c.sql[0],
            "to_char(\"timestamp\", 'YYYY-MM-DD HH24:MI:SS.US') >= $3"
        );
        assert_eq!(c.sql[1], "FALSE");
        assert_eq!(c.sql[2], "decky = $4");
        assert!(c.sql[3].contains("jsonb_typeof(fields::jsonb -> 'user') = 'string'"));
        assert!(c.sql[3].ends_with("= $5)"));
        assert_eq!(c.sql[4].matches("LIKE $6 ESCAPE ''").count(), 4);
        assert_eq!(
            c.binds,
            ["2026-06-20 12:00:00", "web01", "root", "%50%%", "22"]
        );
        let numeric_start = LogFilter::new(None, Some(" 7 "), None);
        assert!(
            conditions(&numeric_start, Dialect::Postgres, 1)
                .sql
                .is_empty()
        );
    }
}
