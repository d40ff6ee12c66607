-- Token status lists and the signed key schedule (SPEC §10).
--
-- Every local API token has an index in its system's status list: given out in order per system
-- and never reused. `status_list_next` is the first index no node has reserved yet; a node
-- reserves a few at a time, so a node that stops leaves a short gap, never a reused index.
ALTER TABLE local_api_tokens ADD COLUMN status_idx BIGINT;
ALTER TABLE systems ADD COLUMN status_list_next BIGINT NOT NULL DEFAULT 0;

-- Tokens minted before the lists existed are numbered in the order they were minted. Their
-- JWTs carry no `status` claim; their bits are in the list all the same.
UPDATE local_api_tokens SET status_idx = numbered.idx
FROM (SELECT id, ROW_NUMBER() OVER (PARTITION BY system_id ORDER BY created_at, id) - 1 AS idx
      FROM local_api_tokens) AS numbered
WHERE numbered.id = local_api_tokens.id;
UPDATE systems SET status_list_next =
    (SELECT COUNT(*) FROM local_api_tokens t WHERE t.system_id = systems.id);

-- A status bit is never cleared: the tokens of a key that is no longer published (invalidated,
-- or deleted) are revoked for good, as invalidating a key now does in its own transaction.
UPDATE local_api_tokens SET status = 'REVOKED', updated_at = EXTRACT(EPOCH FROM now())::BIGINT
WHERE status = 'ACTIVATED' AND NOT EXISTS (
    SELECT 1 FROM signing_keys k
    WHERE k.tenant_id = local_api_tokens.tenant_id AND k.kid = local_api_tokens.kid
      AND k.status <> 'INVALIDATED');

CREATE UNIQUE INDEX local_api_tokens_status_idx ON local_api_tokens (system_id, status_idx);
-- The set bits of a list: read at every change, so only the revoked rows are looked at.
CREATE INDEX local_api_tokens_revoked ON local_api_tokens (system_id, status_idx)
    WHERE status = 'REVOKED';

-- The signed key schedule's sequence number per tenant: every write that changes the tenant's
-- keys (one added, promoted, retired, invalidated, reactivated, deleted) adds one in its own
-- transaction, so every node signs the same number for the same keys, and a device can refuse
-- a schedule older than one it has seen.
ALTER TABLE tenants ADD COLUMN key_schedule_seq BIGINT NOT NULL DEFAULT 1;
