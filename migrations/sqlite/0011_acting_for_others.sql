-- Acting for others (SPEC §11): people sharing a system, tokens that say who acts for whom,
-- clients that may impersonate, and applications other tenants grant access to.

-- A person shares some of their roles on a system with another person of the tenant.
CREATE TABLE shares (
    id              TEXT    PRIMARY KEY,
    tenant_id       TEXT    NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    system_id       TEXT    NOT NULL REFERENCES systems(id) ON DELETE CASCADE,
    owner_id        TEXT    NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    recipient_id    TEXT    NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    -- The shared roles, a JSON array of {"uuid","name"}.
    roles           TEXT    NOT NULL,
    -- NULL: until revoked.
    expires_at      INTEGER,
    created_at      INTEGER NOT NULL,
    revoked_at      INTEGER
);
CREATE INDEX shares_recipient ON shares (recipient_id, system_id);
CREATE INDEX shares_system ON shares (system_id, owner_id);

-- Who acted for the token's subject (RFC 8693 §4.1), and the share it was minted under.
ALTER TABLE local_api_tokens ADD COLUMN actor_id TEXT;
ALTER TABLE local_api_tokens ADD COLUMN actor_name TEXT;
ALTER TABLE local_api_tokens ADD COLUMN actor_type TEXT;
ALTER TABLE local_api_tokens ADD COLUMN share_id TEXT;
CREATE INDEX local_api_tokens_share ON local_api_tokens (share_id) WHERE share_id IS NOT NULL;
CREATE INDEX local_api_tokens_actor ON local_api_tokens (actor_id) WHERE actor_id IS NOT NULL;

-- The client allowed to exchange this client's tokens without an actor token (`may_act`),
-- and the application (name and version) a confidential client's credentials belong to.
ALTER TABLE clients ADD COLUMN may_act TEXT;
ALTER TABLE clients ADD COLUMN app_name TEXT;
ALTER TABLE clients ADD COLUMN app_version TEXT;
CREATE UNIQUE INDEX clients_application ON clients (tenant_id, app_name, app_version)
    WHERE app_name IS NOT NULL;
-- The token management endpoints find an application's client by its id alone.
CREATE INDEX clients_application_id ON clients (client_id) WHERE app_name IS NOT NULL;

-- A user tenant grants an application of a host tenant access, with these scopes.
CREATE TABLE application_grants (
    tenant_id       TEXT    NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    host_tenant_id  TEXT    NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    app_name        TEXT    NOT NULL,
    app_version     TEXT    NOT NULL,
    scopes          TEXT    NOT NULL,
    -- New at every grant: a technical token names the grant it was issued under, so that a
    -- grant revoked and made again does not bring back the tokens of the one before.
    grant_id        TEXT    NOT NULL,
    granted_at      INTEGER NOT NULL,
    PRIMARY KEY (tenant_id, host_tenant_id, app_name, app_version)
);
CREATE INDEX application_grants_application
    ON application_grants (host_tenant_id, app_name, app_version, tenant_id);

-- The applications scopes are new in the admin catalogue: an admin client that holds every
-- scope of the catalogue before them gets them too. (`lanyard:local-tokens:mint`, new too, is a
-- delegation's alone: nobody is granted it.)
UPDATE clients SET scopes = scopes || ' lanyard:applications:read lanyard:applications:write'
WHERE (' ' || scopes || ' ') LIKE '% lanyard:audit:read %'
  AND (' ' || scopes || ' ') LIKE '% lanyard:clients:read %'
  AND (' ' || scopes || ' ') LIKE '% lanyard:clients:write %'
  AND (' ' || scopes || ' ') LIKE '% lanyard:keys:read %'
  AND (' ' || scopes || ' ') LIKE '% lanyard:keys:write %'
  AND (' ' || scopes || ' ') LIKE '% lanyard:local-tokens:read %'
  AND (' ' || scopes || ' ') LIKE '% lanyard:local-tokens:write %'
  AND (' ' || scopes || ' ') LIKE '% lanyard:roles:read %'
  AND (' ' || scopes || ' ') LIKE '% lanyard:roles:write %'
  AND (' ' || scopes || ' ') LIKE '% lanyard:scopes:read %'
  AND (' ' || scopes || ' ') LIKE '% lanyard:scopes:write %'
  AND (' ' || scopes || ' ') LIKE '% lanyard:systems:read %'
  AND (' ' || scopes || ' ') LIKE '% lanyard:systems:write %'
  AND (' ' || scopes || ' ') LIKE '% lanyard:token-metadata:read %'
  AND (' ' || scopes || ' ') LIKE '% lanyard:token-metadata:write %'
  AND (' ' || scopes || ' ') LIKE '% lanyard:users:read %'
  AND (' ' || scopes || ' ') LIKE '% lanyard:users:write %';
