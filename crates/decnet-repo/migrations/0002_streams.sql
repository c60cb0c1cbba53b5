-- decnet-events 0002: the other tables DECNET's streams read (DECNET.md §2.6),
-- with DECNET's table and column names, nullability and index names.
-- Datetime columns are naive `timestamp` holding UTC, as in DECNET. Every
-- statement is IF NOT EXISTS, like 0001. DECNET's schema has no server
-- defaults; the defaults here only fill the columns this project's writer
-- (tools, demo, tests) leaves out. Foreign keys are left out: the readers do
-- not need them and DECNET's SQLite does not enforce them either.

CREATE TABLE IF NOT EXISTS campaigns (
    uuid              text PRIMARY KEY,
    schema_version    integer NOT NULL,
    first_seen_at     timestamp NULL,
    last_seen_at      timestamp NULL,
    created_at        timestamp NOT NULL,
    updated_at        timestamp NOT NULL,
    confidence        double precision NULL,
    identity_count    integer NOT NULL,
    ja3_hashes        text NULL,
    hassh_hashes      text NULL,
    tls_cert_sha256   text NULL,
    payload_simhashes text NULL,
    c2_endpoints      text NULL,
    merged_into_uuid  text NULL,
    notes             text NULL
);
CREATE INDEX IF NOT EXISTS ix_campaigns_updated_at ON campaigns (updated_at);
CREATE INDEX IF NOT EXISTS ix_campaigns_merged_into_uuid ON campaigns (merged_into_uuid);

CREATE TABLE IF NOT EXISTS attacker_identities (
    uuid                 text PRIMARY KEY,
    schema_version       integer NOT NULL,
    campaign_id          text NULL,
    first_seen_at        timestamp NULL,
    last_seen_at         timestamp NULL,
    created_at           timestamp NOT NULL,
    updated_at           timestamp NOT NULL,
    confidence           double precision NULL,
    observation_count    integer NOT NULL,
    ja3_hashes           text NULL,
    hassh_hashes         text NULL,
    ja4h_hashes          text NULL,
    ja4_quic_hashes      text NULL,
    http_versions_seen   text NULL,
    tls_cert_sha256      text NULL,
    ipv6_link_local_iids text NULL,
    payload_simhashes    text NULL,
    c2_endpoints         text NULL,
    kd_digraph_simhash   bytea NULL,
    merged_into_uuid     text NULL,
    notes                text NULL
);
CREATE INDEX IF NOT EXISTS ix_attacker_identities_updated_at ON attacker_identities (updated_at);
CREATE INDEX IF NOT EXISTS ix_attacker_identities_merged_into_uuid
    ON attacker_identities (merged_into_uuid);

-- attackers_of_identity (0001 created attackers without it).
CREATE INDEX IF NOT EXISTS ix_attackers_identity_id ON attackers (identity_id);

CREATE TABLE IF NOT EXISTS orchestrator_events (
    uuid           text PRIMARY KEY,
    ts             timestamp NOT NULL,
    kind           text NOT NULL,
    protocol       text NOT NULL,
    action         text NOT NULL,
    src_decky_uuid text NULL,
    dst_decky_uuid text NOT NULL,
    success        boolean NOT NULL,
    payload        text NOT NULL
);
CREATE INDEX IF NOT EXISTS ix_orchestrator_events_ts ON orchestrator_events (ts);
CREATE INDEX IF NOT EXISTS ix_orchestrator_events_dst_ts ON orchestrator_events (dst_decky_uuid, ts);

CREATE TABLE IF NOT EXISTS topologies (
    id                text PRIMARY KEY,
    name              text NOT NULL,
    mode              text NOT NULL DEFAULT 'unihost',
    target_host_uuid  text NULL,
    config_snapshot   text NOT NULL DEFAULT '{}',
    status            text NOT NULL,
    status_changed_at timestamp NOT NULL DEFAULT (now() AT TIME ZONE 'UTC'),
    created_at        timestamp NOT NULL DEFAULT (now() AT TIME ZONE 'UTC'),
    version           integer NOT NULL DEFAULT 1,
    needs_resync      boolean NOT NULL DEFAULT false,
    email_personas    text NOT NULL DEFAULT '[]',
    language_default  text NOT NULL DEFAULT 'en'
);
CREATE UNIQUE INDEX IF NOT EXISTS ix_topologies_name ON topologies (name);

CREATE TABLE IF NOT EXISTS topology_mutations (
    id           text PRIMARY KEY,
    topology_id  text NOT NULL,
    op           text NOT NULL,
    payload      text NOT NULL,
    state        text NOT NULL,
    requested_at timestamp NOT NULL,
    applied_at   timestamp NULL,
    reason       text NULL
);
CREATE INDEX IF NOT EXISTS ix_topology_mutations_state_topology
    ON topology_mutations (state, topology_id);
CREATE INDEX IF NOT EXISTS ix_topology_mutations_topology_id ON topology_mutations (topology_id);

CREATE TABLE IF NOT EXISTS topology_deckies (
    uuid         text PRIMARY KEY DEFAULT gen_random_uuid()::text,
    topology_id  text NOT NULL,
    name         text NOT NULL,
    services     text NOT NULL DEFAULT '[]',
    decky_config text NULL,
    ip           text NULL,
    state        text NOT NULL,
    last_error   text NULL,
    compose_hash text NULL,
    last_seen    timestamp NULL,
    updated_at   timestamp NOT NULL DEFAULT (now() AT TIME ZONE 'UTC'),
    x            double precision NULL,
    y            double precision NULL,
    CONSTRAINT uq_topology_decky_name UNIQUE (topology_id, name)
);
CREATE INDEX IF NOT EXISTS ix_topology_deckies_state ON topology_deckies (state);

CREATE TABLE IF NOT EXISTS logs (
    id          bigint GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
    "timestamp" timestamp NOT NULL,
    decky       text NOT NULL,
    service     text NOT NULL,
    event_type  text NOT NULL,
    attacker_ip text NOT NULL,
    raw_line    text NOT NULL,
    fields      text NOT NULL,
    msg         text NULL,
    trace_id    text NULL,
    span_id     text NULL
);
CREATE INDEX IF NOT EXISTS ix_logs_timestamp ON logs ("timestamp");
CREATE INDEX IF NOT EXISTS ix_logs_decky ON logs (decky);
CREATE INDEX IF NOT EXISTS ix_logs_service ON logs (service);
CREATE INDEX IF NOT EXISTS ix_logs_event_type ON logs (event_type);
CREATE INDEX IF NOT EXISTS ix_logs_attacker_ip ON logs (attacker_ip);
