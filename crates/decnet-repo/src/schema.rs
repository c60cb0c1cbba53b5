//! What the service reads from a SQL database, and the typed error a
//! backend's `check_schema` returns when something is missing.
//!
//! The list is the contract between this crate's queries and DECNET's
//! schema (DECNET.md §2.6): every table and column a reader touches. Extra
//! tables and columns are fine (DECNET has many); a missing one would make a
//! query fail at run time, so the server checks at start and refuses to
//! serve with a message naming each one.

use std::fmt;

/// Every table the readers query, with the columns they read from it.
pub const REQUIRED_COLUMNS: &[(&str, &[&str])] = &[
    (
        "users",
        &[
            "uuid",
            "username",
            "password_hash",
            "role",
            "must_change_password",
            "tokens_valid_from",
        ],
    ),
    ("revoked_tokens", &["jti"]),
    ("attackers", &["uuid", "ip", "identity_id"]),
    (
        "observations",
        &[
            "id",
            "identity_ref",
            "primitive",
            "value",
            "confidence",
            "window_start_ts",
            "window_end_ts",
            "source",
            "evidence_ref",
            "envelope_v",
            "ts",
            "attacker_uuid",
        ],
    ),
    (
        "attacker_identities",
        &[
            "uuid",
            "schema_version",
            "campaign_id",
            "first_seen_at",
            "last_seen_at",
            "created_at",
            "updated_at",
            "confidence",
            "observation_count",
            "ja3_hashes",
            "hassh_hashes",
            "ja4h_hashes",
            "ja4_quic_hashes",
            "http_versions_seen",
            "tls_cert_sha256",
            "ipv6_link_local_iids",
            "payload_simhashes",
            "c2_endpoints",
            "kd_digraph_simhash",
            "merged_into_uuid",
            "notes",
        ],
    ),
    (
        "campaigns",
        &[
            "uuid",
            "schema_version",
            "first_seen_at",
            "last_seen_at",
            "created_at",
            "updated_at",
            "confidence",
            "identity_count",
            "ja3_hashes",
            "hassh_hashes",
            "tls_cert_sha256",
            "payload_simhashes",
            "c2_endpoints",
            "merged_into_uuid",
            "notes",
        ],
    ),
    (
        "orchestrator_events",
        &[
            "uuid",
            "ts",
            "kind",
            "protocol",
            "action",
            "src_decky_uuid",
            "dst_decky_uuid",
            "success",
            "payload",
        ],
    ),
    ("topologies", &["id", "status"]),
    (
        "topology_mutations",
        &[
            "id",
            "topology_id",
            "op",
            "payload",
            "state",
            "requested_at",
            "applied_at",
            "reason",
        ],
    ),
    ("topology_deckies", &["state"]),
    (
        "logs",
        &[
            "id",
            "timestamp",
            "decky",
            "service",
            "event_type",
            "attacker_ip",
            "raw_line",
            "fields",
            "msg",
            "trace_id",
            "span_id",
        ],
    ),
];

/// One table or column the service reads that the database lacks.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum SchemaItem {
    /// A whole table (its columns are then not listed one by one).
    Table(String),
    /// One column of a table that exists.
    Column {
        /// The table.
        table: String,
        /// The missing column.
        column: String,
    },
}

impl fmt::Display for SchemaItem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SchemaItem::Table(table) => write!(f, "table {table}"),
            SchemaItem::Column { table, column } => write!(f, "column {table}.{column}"),
        }
    }
}

/// The database lacks tables or columns the service reads: the message names
/// every one of them, in [`REQUIRED_COLUMNS`] order.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct SchemaMismatch {
    /// What is missing (never empty).
    pub missing: Vec<SchemaItem>,
}

impl fmt::Display for SchemaMismatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("the database lacks what decnet-events reads: ")?;
        for (n, item) in self.missing.iter().enumerate() {
            if n > 0 {
                f.write_str(", ")?;
            }
            write!(f, "{item}")?;
        }
        Ok(())
    }
}

/// Compare [`REQUIRED_COLUMNS`] with what a database has.
///
/// `columns_of(table)` returns the table's column names (lower case), or
/// `None` when the table does not exist. `Ok(())` when nothing is missing.
#[cfg_attr(
    not(any(feature = "sqlite", feature = "mysql", feature = "postgres")),
    allow(dead_code, reason = "only the SQL backends check a schema")
)]
pub(crate) fn compare(
    mut columns_of: impl FnMut(&str) -> Option<Vec<String>>,
) -> Result<(), SchemaMismatch> {
    let mut missing = Vec::new();
    for (table, columns) in REQUIRED_COLUMNS {
        match columns_of(table) {
            None => missing.push(SchemaItem::Table((*table).to_owned())),
            Some(found) => {
                for column in *columns {
                    if !found.iter().any(|f| f.eq_ignore_ascii_case(column)) {
                        missing.push(SchemaItem::Column {
                            table: (*table).to_owned(),
                            column: (*column).to_owned(),
                        });
                    }
                }
            }
        }
    }
    if missing.is_empty() {
        Ok(())
    } else {
        Err(SchemaMismatch { missing })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_each_missing_table_and_column() {
        let err = compare(|table| match table {
            "users" => Some(vec!["UUID".into(), "username".into()]),
            "logs" => None,
            _ => Some(
                REQUIRED_COLUMNS
                    .iter()
                    .find(|(t, _)| *t == table)
                    .map(|(_, c)| c.iter().map(|c| (*c).to_owned()).collect())
                    .unwrap_or_default(),
            ),
        })
        .expect_err("incomplete");
        let shown = err.to_string();
        assert!(shown.contains("column users.password_hash"), "{shown}");
        assert!(shown.contains("column users.tokens_valid_from"), "{shown}");
        assert!(!shown.contains("users.uuid"), "{shown}");
        assert!(shown.contains("table logs"), "{shown}");
        assert!(!shown.contains("logs.id"), "{shown}");
        assert_eq!(err.missing.len(), 5);
    }

    #[test]
    fn complete_schema_passes() {
        let all = |table: &str| {
            REQUIRED_COLUMNS
                .iter()
                .find(|(t, _)| *t == table)
                .map(|(_, c)| c.iter().map(|c| (*c).to_owned()).collect())
        };
        assert_eq!(compare(all), Ok(()));
    }
}
