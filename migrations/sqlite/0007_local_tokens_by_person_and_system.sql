-- A mint counts the person's live tokens on one system against their cap: the index of a
-- person's tokens is ordered by system too, so that count reads that system's rows alone, not
-- every token the person holds. The revocations by person still use its first column.
DROP INDEX local_api_tokens_user;
CREATE INDEX local_api_tokens_user ON local_api_tokens (user_id, system_id);
