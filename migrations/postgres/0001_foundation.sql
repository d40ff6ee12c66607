-- Tenants, signing keys, systems, clients, custom scopes and the access-token revocation list.
-- Times are Unix seconds (INTEGER on SQLite, BIGINT on PostgreSQL), ids are canonical text UUIDs: the same SQL text runs on both
-- databases and comparisons on time columns are numeric.

CREATE TABLE tenants (
    id          TEXT    PRIMARY KEY,
    slug        TEXT    NOT NULL UNIQUE,
    name        TEXT    NOT NULL,
    created_at  BIGINT NOT NULL
);

CREATE TABLE signing_keys (
    kid                 TEXT    PRIMARY KEY,
    tenant_id           TEXT    NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    status              TEXT    NOT NULL CHECK (status IN ('PENDING', 'ACTIVE', 'RETIRED', 'INVALIDATED')),
    public_n            TEXT    NOT NULL,
    public_e            TEXT    NOT NULL,
    sealed_private_key  BYTEA   NOT NULL,
    created_at          BIGINT NOT NULL,
    -- When it starts (PENDING) or started (ACTIVE) signing.
    activates_at        BIGINT,
    -- RETIRED: access tokens it signed are all expired after this time.
    publish_until       BIGINT,
    updated_at          BIGINT NOT NULL
);
-- Exactly one signer and at most one key waiting to sign, whatever several nodes do at once.
CREATE UNIQUE INDEX signing_keys_one_active ON signing_keys (tenant_id) WHERE status = 'ACTIVE';
CREATE UNIQUE INDEX signing_keys_one_pending ON signing_keys (tenant_id) WHERE status = 'PENDING';

CREATE TABLE systems (
    id          TEXT    PRIMARY KEY,
    tenant_id   TEXT    NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    name        TEXT    NOT NULL,
    created_at  BIGINT NOT NULL
);
CREATE INDEX systems_tenant ON systems (tenant_id);

CREATE TABLE scopes (
    tenant_id   TEXT    NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    name        TEXT    NOT NULL,
    description TEXT,
    created_at  BIGINT NOT NULL,
    PRIMARY KEY (tenant_id, name)
);

CREATE TABLE clients (
    client_id    TEXT    PRIMARY KEY,
    tenant_id    TEXT    NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    name         TEXT    NOT NULL,
    is_public    BOOLEAN NOT NULL,
    -- SHA-256 of the 256-bit secret; NULL for public clients.
    secret_hash  BYTEA,
    scopes       TEXT    NOT NULL,
    grant_types  TEXT    NOT NULL,
    system_id    TEXT    REFERENCES systems(id) ON DELETE CASCADE,
    metadata     TEXT    NOT NULL DEFAULT '{}',
    created_at   BIGINT NOT NULL,
    secret_rotated_at BIGINT NOT NULL
);
CREATE INDEX clients_tenant ON clients (tenant_id);

CREATE TABLE revoked_tokens (
    jti         TEXT    PRIMARY KEY,
    tenant_id   TEXT    NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    -- The token's own exp: the row can go once the token has expired anyway.
    expires_at  BIGINT NOT NULL,
    revoked_at  BIGINT NOT NULL
);
CREATE INDEX revoked_tokens_expiry ON revoked_tokens (expires_at);
