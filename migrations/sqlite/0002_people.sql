-- People, roles on systems, one-time sign-in codes, refresh tokens and local API tokens.
-- Same conventions as 0001: Unix seconds, text UUIDs, the same SQL text on both databases.

CREATE TABLE users (
    id          TEXT    PRIMARY KEY,
    tenant_id   TEXT    NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    -- Lower-cased; unique in the tenant.
    email       TEXT    NOT NULL,
    name        TEXT    NOT NULL,
    -- Space-separated scopes the user may be granted.
    scopes      TEXT    NOT NULL,
    -- A JSON object; its keys are merged into userinfo.
    metadata    TEXT    NOT NULL DEFAULT '{}',
    created_at  INTEGER NOT NULL,
    UNIQUE (tenant_id, email)
);

CREATE TABLE roles (
    id          TEXT    PRIMARY KEY,
    tenant_id   TEXT    NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    name        TEXT    NOT NULL,
    created_at  INTEGER NOT NULL,
    UNIQUE (tenant_id, name)
);

-- A user holds roles on systems.
CREATE TABLE role_assignments (
    user_id     TEXT    NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    system_id   TEXT    NOT NULL REFERENCES systems(id) ON DELETE CASCADE,
    role_id     TEXT    NOT NULL REFERENCES roles(id) ON DELETE CASCADE,
    created_at  INTEGER NOT NULL,
    PRIMARY KEY (user_id, system_id, role_id)
);
CREATE INDEX role_assignments_system ON role_assignments (system_id);

-- One-time sign-in codes: stored hashed, bound to the client that asked, consumed once.
CREATE TABLE otp_codes (
    id          TEXT    PRIMARY KEY,
    tenant_id   TEXT    NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    email       TEXT    NOT NULL,
    client_id   TEXT    NOT NULL,
    code_hash   BLOB    NOT NULL,
    attempts    INTEGER NOT NULL DEFAULT 0,
    used        BOOLEAN NOT NULL DEFAULT FALSE,
    created_at  INTEGER NOT NULL,
    expires_at  INTEGER NOT NULL
);
CREATE INDEX otp_codes_email ON otp_codes (tenant_id, email, created_at);

-- Refresh tokens: opaque, stored hashed, rotated on every use; reuse of a rotated one revokes
-- its whole family.
CREATE TABLE refresh_tokens (
    token_hash  BLOB    PRIMARY KEY,
    family_id   TEXT    NOT NULL,
    tenant_id   TEXT    NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    user_id     TEXT    NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    client_id   TEXT    NOT NULL,
    scope       TEXT    NOT NULL,
    used        BOOLEAN NOT NULL DEFAULT FALSE,
    revoked     BOOLEAN NOT NULL DEFAULT FALSE,
    created_at  INTEGER NOT NULL,
    expires_at  INTEGER NOT NULL
);
CREATE INDEX refresh_tokens_family ON refresh_tokens (family_id);

-- Local API tokens: minted for a user on a system; listed on the system's retained topic.
CREATE TABLE local_api_tokens (
    id               TEXT    PRIMARY KEY,
    tenant_id        TEXT    NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    system_id        TEXT    NOT NULL REFERENCES systems(id) ON DELETE CASCADE,
    user_id          TEXT    NOT NULL,
    user_name        TEXT    NOT NULL,
    -- The roles at mint time, as a JSON array of {"uuid","name"}.
    roles            TEXT    NOT NULL,
    name             TEXT,
    requested_device TEXT,
    kid              TEXT    NOT NULL,
    -- The token itself (prefix + JWT): the system's devices receive it while it is ACTIVATED.
    token            TEXT    NOT NULL,
    status           TEXT    NOT NULL CHECK (status IN ('ACTIVATED', 'REVOKED')),
    not_before       INTEGER NOT NULL,
    -- NULL: permanent.
    expires_at       INTEGER,
    created_at       INTEGER NOT NULL,
    updated_at       INTEGER NOT NULL
);
CREATE INDEX local_api_tokens_system ON local_api_tokens (system_id, created_at);
CREATE INDEX local_api_tokens_user ON local_api_tokens (user_id);
