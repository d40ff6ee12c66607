-- Sign-in codes get `seq`, strictly increasing in the order they were asked for, so the newest
-- code is known even among several asked for within one second (`created_at` counts seconds),
-- and `source`, the address that asked, for the per-source limit. A request naming no usable
-- client is stored with an empty email: it counts against its source, never against an address.
ALTER TABLE otp_codes ADD COLUMN seq INTEGER NOT NULL DEFAULT 0;
UPDATE otp_codes SET seq = rowid;
ALTER TABLE otp_codes ADD COLUMN source TEXT NOT NULL DEFAULT '';
-- The newest code of a person for an app, and the next `seq` (MAX over the whole table).
CREATE INDEX otp_codes_latest ON otp_codes (tenant_id, email, client_id, seq);
CREATE INDEX otp_codes_seq ON otp_codes (seq);
-- The per-source count; the per-address count uses otp_codes_email.
CREATE INDEX otp_codes_source ON otp_codes (source, created_at);
