//! The rows the service reads, one type per DECNET table it touches.
//!
//! Field order is DECNET's model order (DECNET.md §2.6, §3): the snapshot
//! frames serialize these structs as they are, so a field added here shows
//! up on the wire in that position.

use std::time::SystemTime;

use serde::{Serialize, Serializer};

use crate::DbTime;

/// A DECNET attacker (one row of `attackers`; the columns the service reads).
#[derive(Debug, Clone, PartialEq)]
pub struct Attacker {
    /// The attacker's uuid (primary key).
    pub uuid: String,
    /// The source IP it was first seen from.
    pub ip: String,
    /// The identity the attribution engine linked it to, if any.
    pub identity_id: Option<String>,
}

/// One behavioural observation (one row of `observations`).
#[derive(Debug, Clone, PartialEq)]
pub struct Observation {
    /// Row id (primary key); the tie-breaker for equal `ts` (highest wins).
    pub id: String,
    /// Identity reference recorded with the observation, if any.
    pub identity_ref: Option<String>,
    /// The primitive observed, e.g. `motor.input_modality`.
    pub primitive: String,
    /// The observed value: any JSON.
    pub value: serde_json::Value,
    /// Confidence in `[0, 1]`.
    pub confidence: f64,
    /// Start of the observation window, epoch seconds.
    pub window_start_ts: f64,
    /// End of the observation window, epoch seconds.
    pub window_end_ts: f64,
    /// The producer of the observation.
    pub source: String,
    /// Reference to the evidence; unique together with `primitive`.
    pub evidence_ref: String,
    /// Version of the bus envelope it arrived in.
    pub envelope_v: i32,
    /// When it was observed, epoch seconds.
    pub ts: f64,
    /// The attacker it belongs to.
    pub attacker_uuid: String,
}

/// A dashboard user (one row of `users`).
#[derive(Debug, Clone, PartialEq)]
pub struct User {
    /// The user's uuid (primary key), the JWT `uuid` claim.
    pub uuid: String,
    /// Unique login name.
    pub username: String,
    /// Password hash (never used by this service; kept for schema parity).
    pub password_hash: String,
    /// `viewer`, `admin`, or another DECNET role.
    pub role: String,
    /// The user must change their password before using the API.
    pub must_change_password: bool,
    /// Tokens issued (whole seconds) before this instant are revoked. UTC.
    pub tokens_valid_from: Option<SystemTime>,
}

/// Raw bytes rendered as lowercase hex (DECNET's `kd_digraph_simhash`, a
/// `BINARY(8)`; DECNET's own API crashes on it, see DECNET.md §3.3).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HexBytes(pub Vec<u8>);

impl Serialize for HexBytes {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use std::fmt::Write as _;
        let mut hex = String::with_capacity(self.0.len() * 2);
        for byte in &self.0 {
            let _ = write!(hex, "{byte:02x}");
        }
        serializer.serialize_str(&hex)
    }
}

/// One row of `attacker_identities`, every column in DECNET's order.
///
/// The fingerprint lists are JSON documents kept as text, as DECNET returns
/// them (strings, not decoded).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct IdentityRow {
    /// Primary key.
    pub uuid: String,
    /// Row schema version.
    pub schema_version: i64,
    /// The campaign this identity belongs to.
    pub campaign_id: Option<String>,
    /// First activity.
    pub first_seen_at: Option<DbTime>,
    /// Last activity.
    pub last_seen_at: Option<DbTime>,
    /// Row creation.
    pub created_at: DbTime,
    /// Last update (the snapshot's order, newest first).
    pub updated_at: DbTime,
    /// Clustering confidence.
    pub confidence: Option<f64>,
    /// Observations linked.
    pub observation_count: i64,
    /// JSON list text.
    pub ja3_hashes: Option<String>,
    /// JSON list text.
    pub hassh_hashes: Option<String>,
    /// JSON list text.
    pub ja4h_hashes: Option<String>,
    /// JSON list text.
    pub ja4_quic_hashes: Option<String>,
    /// JSON list text.
    pub http_versions_seen: Option<String>,
    /// JSON list text.
    pub tls_cert_sha256: Option<String>,
    /// JSON list text.
    pub ipv6_link_local_iids: Option<String>,
    /// JSON list text.
    pub payload_simhashes: Option<String>,
    /// JSON list text.
    pub c2_endpoints: Option<String>,
    /// The keystroke-digraph SimHash, as hex.
    pub kd_digraph_simhash: Option<HexBytes>,
    /// The identity this one was merged into (always `None` in snapshots).
    pub merged_into_uuid: Option<String>,
    /// Analyst notes.
    pub notes: Option<String>,
}

/// One row of `campaigns`, every column in DECNET's order.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CampaignRow {
    /// Primary key.
    pub uuid: String,
    /// Row schema version.
    pub schema_version: i64,
    /// First activity.
    pub first_seen_at: Option<DbTime>,
    /// Last activity.
    pub last_seen_at: Option<DbTime>,
    /// Row creation.
    pub created_at: DbTime,
    /// Last update (the snapshot's order, newest first).
    pub updated_at: DbTime,
    /// Clustering confidence.
    pub confidence: Option<f64>,
    /// Identities in the campaign.
    pub identity_count: i64,
    /// JSON list text.
    pub ja3_hashes: Option<String>,
    /// JSON list text.
    pub hassh_hashes: Option<String>,
    /// JSON list text.
    pub tls_cert_sha256: Option<String>,
    /// JSON list text.
    pub payload_simhashes: Option<String>,
    /// JSON list text.
    pub c2_endpoints: Option<String>,
    /// The campaign this one was merged into (always `None` in snapshots).
    pub merged_into_uuid: Option<String>,
    /// Analyst notes.
    pub notes: Option<String>,
}

/// One row of `orchestrator_events`, in DECNET's order.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct OrchestratorEventRow {
    /// Primary key.
    pub uuid: String,
    /// When it happened (the snapshot's order, newest first).
    pub ts: DbTime,
    /// `traffic` or `file`.
    pub kind: String,
    /// Protocol used.
    pub protocol: String,
    /// What was done.
    pub action: String,
    /// Source decky, if any.
    pub src_decky_uuid: Option<String>,
    /// Destination decky.
    pub dst_decky_uuid: String,
    /// Whether it worked.
    pub success: bool,
    /// The stored JSON text, as a string (DECNET does not decode it).
    pub payload: String,
}

/// One row of `topology_mutations`, in DECNET's order.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MutationRow {
    /// Primary key.
    pub id: String,
    /// The topology it changes.
    pub topology_id: String,
    /// `add_lan`, `add_decky`, ...
    pub op: String,
    /// The stored JSON text, as a string.
    pub payload: String,
    /// `pending`, `applying`, `applied` or `failed`.
    pub state: String,
    /// When it was requested.
    pub requested_at: DbTime,
    /// When it was applied (written aware by DECNET's mutator).
    pub applied_at: Option<DbTime>,
    /// Why it failed.
    pub reason: Option<String>,
}

/// What the topology stream's snapshot holds, read in one transaction.
#[derive(Debug, Clone, PartialEq)]
pub struct TopologySnapshot {
    /// `topologies.status`.
    pub status: String,
    /// Pending mutations newest first, then applying ones newest first.
    pub in_flight: Vec<MutationRow>,
}

/// One row of `logs`, in DECNET's order (a `logs` frame of `/stream`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LogRow {
    /// Primary key (the `/stream` cursor).
    pub id: i64,
    /// When the line was logged (naive, whole seconds in practice).
    pub timestamp: DbTime,
    /// The decky that logged it.
    pub decky: String,
    /// The service on the decky.
    pub service: String,
    /// What happened.
    pub event_type: String,
    /// The attacker's address (may be the literal `Unknown`).
    pub attacker_ip: String,
    /// The raw log line.
    pub raw_line: String,
    /// A JSON object as text (a string on the wire).
    pub fields: String,
    /// A human message.
    pub msg: Option<String>,
    /// OpenTelemetry trace id.
    pub trace_id: Option<String>,
    /// OpenTelemetry span id.
    pub span_id: Option<String>,
}

/// The database part of `/stream`'s `stats` frame (DECNET's
/// `get_stats_summary` without the fleet state file).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct LogStats {
    /// `count(*)` of `logs`.
    pub total_logs: i64,
    /// `count(DISTINCT attacker_ip)` of `logs`.
    pub unique_attackers: i64,
    /// `topology_deckies` rows with `state = 'running'`.
    pub running_topology_deckies: i64,
    /// Every `topology_deckies` row, whatever its state.
    pub topology_deckies: i64,
}

/// One non-empty histogram bucket of `/stream`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct HistogramBucket {
    /// The bucket's start, `YYYY-MM-DD HH:MM:SS` (UTC by convention), or
    /// `None` for rows whose timestamp the engine could not read (SQLite).
    pub time: Option<String>,
    /// Rows in the bucket.
    pub count: i64,
}
