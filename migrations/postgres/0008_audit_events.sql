-- Audit events (SPEC §14): each written in the transaction of the change it records. `seq`
-- orders them and is the cursor of the GraphQL listing; `time` is what retention prunes by.
CREATE TABLE audit_events (
    seq BIGSERIAL PRIMARY KEY,
    time BIGINT NOT NULL,
    tenant_id TEXT NOT NULL,
    actor TEXT NOT NULL,
    action TEXT NOT NULL,
    target TEXT NOT NULL,
    outcome TEXT NOT NULL
);
CREATE INDEX audit_events_tenant ON audit_events (tenant_id, seq);
CREATE INDEX audit_events_time ON audit_events (time);
