-- DECNET's baseline schema (Alembic revision 4a914b1d62a0), SQLite dialect:
-- the tables decnet-events reads, plus swarm_hosts (a foreign-key target of
-- topologies), and alembic_version. Written for this project's tests from the
-- facts of DECNET.md §2.3/§2.6 and DECNET's baseline migration
-- (decnet/web/db/migrations/versions/4a914b1d62a0_baseline_schema.py): the
-- table and column names, types as SQLAlchemy renders them for SQLite,
-- nullability, primary keys, foreign keys, unique constraints and index names.
-- No server defaults (DECNET has none). Foreign keys are declared but SQLite
-- does not enforce them (DECNET never sets PRAGMA foreign_keys).

CREATE TABLE campaigns (
    uuid VARCHAR NOT NULL,
    schema_version INTEGER NOT NULL,
    first_seen_at DATETIME,
    last_seen_at DATETIME,
    created_at DATETIME NOT NULL,
    updated_at DATETIME NOT NULL,
    confidence FLOAT,
    identity_count INTEGER NOT NULL,
    ja3_hashes TEXT,
    hassh_hashes TEXT,
    tls_cert_sha256 TEXT,
    payload_simhashes TEXT,
    c2_endpoints TEXT,
    merged_into_uuid VARCHAR,
    notes TEXT,
    PRIMARY KEY (uuid),
    FOREIGN KEY(merged_into_uuid) REFERENCES campaigns (uuid)
);
CREATE INDEX ix_campaigns_created_at ON campaigns (created_at);
CREATE INDEX ix_campaigns_first_seen_at ON campaigns (first_seen_at);
CREATE INDEX ix_campaigns_last_seen_at ON campaigns (last_seen_at);
CREATE INDEX ix_campaigns_merged_into_uuid ON campaigns (merged_into_uuid);
CREATE INDEX ix_campaigns_updated_at ON campaigns (updated_at);

CREATE TABLE attacker_identities (
    uuid VARCHAR NOT NULL,
    schema_version INTEGER NOT NULL,
    campaign_id VARCHAR,
    first_seen_at DATETIME,
    last_seen_at DATETIME,
    created_at DATETIME NOT NULL,
    updated_at DATETIME NOT NULL,
    confidence FLOAT,
    observation_count INTEGER NOT NULL,
    ja3_hashes TEXT,
    hassh_hashes TEXT,
    ja4h_hashes TEXT,
    ja4_quic_hashes TEXT,
    http_versions_seen TEXT,
    tls_cert_sha256 TEXT,
    ipv6_link_local_iids TEXT,
    payload_simhashes TEXT,
    c2_endpoints TEXT,
    kd_digraph_simhash BLOB,
    merged_into_uuid VARCHAR,
    notes TEXT,
    PRIMARY KEY (uuid),
    FOREIGN KEY(campaign_id) REFERENCES campaigns (uuid),
    FOREIGN KEY(merged_into_uuid) REFERENCES attacker_identities (uuid)
);
CREATE INDEX ix_attacker_identities_campaign_id ON attacker_identities (campaign_id);
CREATE INDEX ix_attacker_identities_created_at ON attacker_identities (created_at);
CREATE INDEX ix_attacker_identities_first_seen_at ON attacker_identities (first_seen_at);
CREATE INDEX ix_attacker_identities_kd_digraph_simhash ON attacker_identities (kd_digraph_simhash);
CREATE INDEX ix_attacker_identities_last_seen_at ON attacker_identities (last_seen_at);
CREATE INDEX ix_attacker_identities_merged_into_uuid ON attacker_identities (merged_into_uuid);
CREATE INDEX ix_attacker_identities_updated_at ON attacker_identities (updated_at);

CREATE TABLE attackers (
    uuid VARCHAR NOT NULL,
    ip VARCHAR NOT NULL,
    identity_id VARCHAR,
    first_seen DATETIME NOT NULL,
    last_seen DATETIME NOT NULL,
    event_count INTEGER NOT NULL,
    service_count INTEGER NOT NULL,
    decky_count INTEGER NOT NULL,
    services TEXT NOT NULL,
    deckies TEXT NOT NULL,
    traversal_path TEXT,
    is_traversal BOOLEAN NOT NULL,
    bounty_count INTEGER NOT NULL,
    credential_count INTEGER NOT NULL,
    fingerprints TEXT NOT NULL,
    commands TEXT NOT NULL,
    country_code VARCHAR(2),
    country_source VARCHAR(16),
    asn INTEGER,
    as_name VARCHAR(128),
    bgp_prefix VARCHAR(43),
    asn_source VARCHAR(16),
    rpki_status VARCHAR(16),
    rpki_source VARCHAR(16),
    ptr_record VARCHAR(256),
    rotation_count INTEGER NOT NULL,
    last_rotation_at DATETIME,
    ipv6_leak_count INTEGER NOT NULL,
    last_ipv6_leak_at DATETIME,
    last_ipv6_link_local VARCHAR(45),
    last_ipv6_iid_kind VARCHAR(16),
    last_ipv6_mac_oui VARCHAR(8),
    updated_at DATETIME NOT NULL,
    PRIMARY KEY (uuid),
    FOREIGN KEY(identity_id) REFERENCES attacker_identities (uuid)
);
CREATE INDEX ix_attackers_asn ON attackers (asn);
CREATE INDEX ix_attackers_bgp_prefix ON attackers (bgp_prefix);
CREATE INDEX ix_attackers_country_code ON attackers (country_code);
CREATE INDEX ix_attackers_first_seen ON attackers (first_seen);
CREATE INDEX ix_attackers_identity_id ON attackers (identity_id);
CREATE INDEX ix_attackers_ip ON attackers (ip);
CREATE INDEX ix_attackers_last_ipv6_leak_at ON attackers (last_ipv6_leak_at);
CREATE INDEX ix_attackers_last_rotation_at ON attackers (last_rotation_at);
CREATE INDEX ix_attackers_last_seen ON attackers (last_seen);
CREATE INDEX ix_attackers_updated_at ON attackers (updated_at);

CREATE TABLE observations (
    id VARCHAR NOT NULL,
    identity_ref VARCHAR,
    primitive VARCHAR NOT NULL,
    value JSON NOT NULL,
    confidence FLOAT NOT NULL,
    window_start_ts FLOAT NOT NULL,
    window_end_ts FLOAT NOT NULL,
    source VARCHAR NOT NULL,
    evidence_ref VARCHAR NOT NULL,
    envelope_v INTEGER NOT NULL,
    ts FLOAT NOT NULL,
    attacker_uuid VARCHAR NOT NULL,
    PRIMARY KEY (id),
    CONSTRAINT uq_observations_evidence_primitive UNIQUE (evidence_ref, primitive),
    FOREIGN KEY(attacker_uuid) REFERENCES attackers (uuid)
);
CREATE INDEX ix_observations_attacker_primitive_ts ON observations (attacker_uuid, primitive, ts);
CREATE INDEX ix_observations_attacker_uuid ON observations (attacker_uuid);
CREATE INDEX ix_observations_primitive ON observations (primitive);
CREATE INDEX ix_observations_primitive_ts ON observations (primitive, ts);
CREATE INDEX ix_observations_ts ON observations (ts);

CREATE TABLE orchestrator_events (
    uuid VARCHAR NOT NULL,
    ts DATETIME NOT NULL,
    kind VARCHAR(16) NOT NULL,
    protocol VARCHAR(16) NOT NULL,
    action VARCHAR(64) NOT NULL,
    src_decky_uuid VARCHAR,
    dst_decky_uuid VARCHAR NOT NULL,
    success BOOLEAN NOT NULL,
    payload TEXT NOT NULL,
    PRIMARY KEY (uuid)
);
CREATE INDEX ix_orchestrator_events_dst_decky_uuid ON orchestrator_events (dst_decky_uuid);
CREATE INDEX ix_orchestrator_events_dst_ts ON orchestrator_events (dst_decky_uuid, ts);
CREATE INDEX ix_orchestrator_events_kind ON orchestrator_events (kind);
CREATE INDEX ix_orchestrator_events_protocol ON orchestrator_events (protocol);
CREATE INDEX ix_orchestrator_events_src_decky_uuid ON orchestrator_events (src_decky_uuid);
CREATE INDEX ix_orchestrator_events_success ON orchestrator_events (success);
CREATE INDEX ix_orchestrator_events_ts ON orchestrator_events (ts);

CREATE TABLE revoked_tokens (
    jti VARCHAR NOT NULL,
    user_uuid VARCHAR NOT NULL,
    expires_at DATETIME NOT NULL,
    revoked_at DATETIME NOT NULL,
    PRIMARY KEY (jti)
);
CREATE INDEX ix_revoked_tokens_expires_at ON revoked_tokens (expires_at);
CREATE INDEX ix_revoked_tokens_user_uuid ON revoked_tokens (user_uuid);

CREATE TABLE swarm_hosts (
    uuid VARCHAR NOT NULL,
    name VARCHAR NOT NULL,
    address VARCHAR NOT NULL,
    agent_port INTEGER NOT NULL,
    status VARCHAR NOT NULL,
    last_heartbeat DATETIME,
    client_cert_fingerprint VARCHAR NOT NULL,
    updater_cert_fingerprint VARCHAR,
    cert_bundle_path VARCHAR NOT NULL,
    enrolled_at DATETIME NOT NULL,
    notes TEXT,
    use_ipvlan BOOLEAN NOT NULL,
    PRIMARY KEY (uuid)
);
CREATE UNIQUE INDEX ix_swarm_hosts_name ON swarm_hosts (name);
CREATE INDEX ix_swarm_hosts_status ON swarm_hosts (status);

CREATE TABLE users (
    uuid VARCHAR NOT NULL,
    username VARCHAR NOT NULL,
    password_hash VARCHAR NOT NULL,
    role VARCHAR NOT NULL,
    must_change_password BOOLEAN NOT NULL,
    tokens_valid_from DATETIME,
    PRIMARY KEY (uuid)
);
CREATE UNIQUE INDEX ix_users_username ON users (username);

CREATE TABLE topologies (
    id VARCHAR NOT NULL,
    name VARCHAR NOT NULL,
    mode VARCHAR(16) NOT NULL,
    target_host_uuid VARCHAR,
    config_snapshot TEXT NOT NULL,
    status VARCHAR(32) NOT NULL,
    status_changed_at DATETIME NOT NULL,
    created_at DATETIME NOT NULL,
    version INTEGER NOT NULL,
    needs_resync BOOLEAN NOT NULL,
    email_personas TEXT NOT NULL,
    language_default VARCHAR(8) NOT NULL,
    PRIMARY KEY (id),
    FOREIGN KEY(target_host_uuid) REFERENCES swarm_hosts (uuid)
);
CREATE INDEX ix_topologies_created_at ON topologies (created_at);
CREATE UNIQUE INDEX ix_topologies_name ON topologies (name);
CREATE INDEX ix_topologies_status ON topologies (status);
CREATE INDEX ix_topologies_target_host_uuid ON topologies (target_host_uuid);

CREATE TABLE topology_deckies (
    uuid VARCHAR NOT NULL,
    topology_id VARCHAR NOT NULL,
    name VARCHAR NOT NULL,
    services TEXT NOT NULL,
    decky_config TEXT,
    ip VARCHAR,
    state VARCHAR(32) NOT NULL,
    last_error TEXT,
    compose_hash VARCHAR,
    last_seen DATETIME,
    updated_at DATETIME NOT NULL,
    x FLOAT,
    y FLOAT,
    PRIMARY KEY (uuid),
    CONSTRAINT uq_topology_decky_name UNIQUE (topology_id, name),
    FOREIGN KEY(topology_id) REFERENCES topologies (id)
);
CREATE INDEX ix_topology_deckies_state ON topology_deckies (state);
CREATE INDEX ix_topology_deckies_topology_id ON topology_deckies (topology_id);

CREATE TABLE topology_mutations (
    id VARCHAR NOT NULL,
    topology_id VARCHAR NOT NULL,
    op VARCHAR(32) NOT NULL,
    payload TEXT NOT NULL,
    state VARCHAR(32) NOT NULL,
    requested_at DATETIME NOT NULL,
    applied_at DATETIME,
    reason TEXT,
    PRIMARY KEY (id),
    FOREIGN KEY(topology_id) REFERENCES topologies (id)
);
CREATE INDEX ix_topology_mutations_op ON topology_mutations (op);
CREATE INDEX ix_topology_mutations_requested_at ON topology_mutations (requested_at);
CREATE INDEX ix_topology_mutations_state ON topology_mutations (state);
CREATE INDEX ix_topology_mutations_state_topology ON topology_mutations (state, topology_id);
CREATE INDEX ix_topology_mutations_topology_id ON topology_mutations (topology_id);

CREATE TABLE logs (
    id INTEGER NOT NULL,
    timestamp DATETIME NOT NULL,
    decky VARCHAR NOT NULL,
    service VARCHAR NOT NULL,
    event_type VARCHAR NOT NULL,
    attacker_ip VARCHAR NOT NULL,
    raw_line TEXT NOT NULL,
    fields TEXT NOT NULL,
    msg TEXT,
    trace_id VARCHAR,
    span_id VARCHAR,
    PRIMARY KEY (id)
);
CREATE INDEX ix_logs_attacker_ip ON logs (attacker_ip);
CREATE INDEX ix_logs_decky ON logs (decky);
CREATE INDEX ix_logs_event_type ON logs (event_type);
CREATE INDEX ix_logs_service ON logs (service);
CREATE INDEX ix_logs_timestamp ON logs (timestamp);

CREATE TABLE alembic_version (
    version_num VARCHAR(32) NOT NULL,
    CONSTRAINT alembic_version_pkc PRIMARY KEY (version_num)
);
INSERT INTO alembic_version (version_num) VALUES ('4a914b1d62a0');
