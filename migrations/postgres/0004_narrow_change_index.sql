-- The reconciliation finds changed token rows by updated_at alone: an index of only that column
-- grows at its end and costs a mint far less than one that also copied four columns of the
-- row. The reconciliation reads the few rows changed since its last run from the table.
DROP INDEX local_api_tokens_changes;
CREATE INDEX local_api_tokens_updated ON local_api_tokens (updated_at);
