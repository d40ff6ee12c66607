-- What the reconciliation asks every few seconds: the token rows and systems changed since a
-- moment, without reading whole tables. The token index covers the columns it reads.
CREATE INDEX local_api_tokens_changes
    ON local_api_tokens (updated_at, tenant_id, system_id, id, status);
CREATE INDEX systems_created ON systems (created_at);
