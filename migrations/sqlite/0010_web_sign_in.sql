-- Sign-in on the web (SPEC §9): redirect URIs per client, the requests the hosted page works
-- on, the codes the token endpoint redeems, and the browsers' sign-in sessions. Every secret
-- (the browser cookie, the mailed code and link, the authorization code, the session cookie)
-- is stored as a SHA-256 hash.

-- JSON arrays of exact strings.
ALTER TABLE clients ADD COLUMN redirect_uris TEXT NOT NULL DEFAULT '[]';
ALTER TABLE clients ADD COLUMN post_logout_redirect_uris TEXT NOT NULL DEFAULT '[]';

-- One authorization request a browser is signing in for.
CREATE TABLE authorization_requests (
    id              TEXT    PRIMARY KEY,
    tenant_id       TEXT    NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    client_id       TEXT    NOT NULL,
    redirect_uri    TEXT    NOT NULL,
    -- NULL: no scope was asked for.
    scope           TEXT,
    state           TEXT,
    code_challenge  TEXT    NOT NULL,
    -- The browser that began it (hash of its cookie) and the token its forms carry.
    browser_hash    BLOB    NOT NULL,
    csrf            TEXT    NOT NULL,
    -- Set by the email step.
    email           TEXT,
    code_hash       BLOB,
    link_hash       BLOB,
    attempts        INTEGER  NOT NULL DEFAULT 0,
    done            BOOLEAN NOT NULL DEFAULT FALSE,
    created_at      INTEGER  NOT NULL,
    expires_at      INTEGER  NOT NULL
);
CREATE INDEX authorization_requests_expiry ON authorization_requests (expires_at);

-- Authorization codes: 60 seconds, once. The first redemption records the sign-in family and
-- access token it issues, so that a second one can revoke them.
CREATE TABLE authorization_codes (
    code_hash       BLOB    PRIMARY KEY,
    tenant_id       TEXT    NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    client_id       TEXT    NOT NULL,
    redirect_uri    TEXT    NOT NULL,
    code_challenge  TEXT    NOT NULL,
    user_id         TEXT    NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    scope           TEXT    NOT NULL,
    created_at      INTEGER  NOT NULL,
    expires_at      INTEGER  NOT NULL,
    used            BOOLEAN NOT NULL DEFAULT FALSE,
    family_id       TEXT,
    access_jti      TEXT,
    access_exp      INTEGER
);
CREATE INDEX authorization_codes_expiry ON authorization_codes (expires_at);

-- A signed-in browser.
CREATE TABLE web_sessions (
    token_hash      BLOB    PRIMARY KEY,
    tenant_id       TEXT    NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    user_id         TEXT    NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    created_at      INTEGER  NOT NULL,
    expires_at      INTEGER  NOT NULL
);
CREATE INDEX web_sessions_expiry ON web_sessions (expires_at);

-- Token metadata's scopes are new in the admin catalogue: an admin client that holds every
-- scope of the catalogue before them (as `lanyard bootstrap` makes it) gets them too, so an
-- upgraded tenant's admin can use them and hand them out.
UPDATE clients SET scopes = scopes || ' lanyard:token-metadata:read lanyard:token-metadata:write'
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
  AND (' ' || scopes || ' ') LIKE '% lanyard:users:read %'
  AND (' ' || scopes || ' ') LIKE '% lanyard:users:write %';
