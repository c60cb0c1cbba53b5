-- decnet-events 0001: the DECNET tables the service reads (DESIGN.md,
-- "Repository contract"). Every statement is IF NOT EXISTS: on an existing
-- DECNET database the tables, their extra columns and their rows are left
-- exactly as they are.

CREATE TABLE IF NOT EXISTS users (
    uuid                 text PRIMARY KEY,
    username             text UNIQUE NOT NULL,
    password_hash        text NOT NULL,
    role                 text NOT NULL DEFAULT 'viewer',
    must_change_password boolean NOT NULL DEFAULT false,
    tokens_valid_from    timestamptz NULL
);

CREATE TABLE IF NOT EXISTS revoked_tokens (
    jti        text PRIMARY KEY,
    user_uuid  text NOT NULL,
    expires_at timestamptz NOT NULL,
    revoked_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE IF NOT EXISTS attackers (
    uuid        text PRIMARY KEY,
    ip          text NOT NULL,
    identity_id text NULL,
    first_seen  timestamptz NOT NULL DEFAULT now(),
    last_seen   timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE IF NOT EXISTS observations (
    id              text PRIMARY KEY,
    identity_ref    text NULL,
    primitive       text NOT NULL,
    value           jsonb NOT NULL,
    confidence      double precision NOT NULL,
    window_start_ts double precision NOT NULL,
    window_end_ts   double precision NOT NULL,
    source          text NOT NULL,
    evidence_ref    text NOT NULL,
    envelope_v      integer NOT NULL,
    ts              double precision NOT NULL,
    attacker_uuid   text NOT NULL REFERENCES attackers (uuid),
    UNIQUE (evidence_ref, primitive)
);

-- The index latest-per-primitive walks. A DECNET database usually has it
-- already, under a name of its own ORM's choosing: only build one when no
-- valid, non-partial index on observations starts with
-- (attacker_uuid, primitive, ts), so a live table is not locked to build a
-- duplicate.
DO $$
BEGIN
    IF NOT EXISTS (
        SELECT 1
        FROM pg_index i
        WHERE i.indrelid = 'observations'::regclass
          AND i.indisvalid
          AND i.indpred IS NULL
          AND (
              SELECT array_agg(a.attname::text ORDER BY k.ord)
              FROM unnest(i.indkey::int2[]) WITH ORDINALITY AS k(attnum, ord)
              JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum
              WHERE k.ord <= 3
          ) = ARRAY['attacker_uuid', 'primitive', 'ts']
    ) THEN
        CREATE INDEX IF NOT EXISTS ix_observations_attacker_primitive_ts
            ON observations (attacker_uuid, primitive, ts);
    END IF;
END
$$;
