-- The node (a running lanyard process) that made a token row's last change: its mint or its
-- revocation. A node publishes its own changes as it makes them, so its reconciliation reads
-- only the rows changed elsewhere. NULL: changed by a process that does not say which.
ALTER TABLE local_api_tokens ADD COLUMN written_by TEXT;
