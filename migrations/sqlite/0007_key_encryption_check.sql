-- The check value of the key-encryption key the signing keys are sealed with (SPEC §14): one
-- row, recorded by the first start of this version (which checks that the key opens the keys
-- already stored) and replaced only by `lanyard rekey`. A node with another key refuses to
-- start, and a key is stored only while the check value is its own.
CREATE TABLE key_encryption (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    check_value TEXT NOT NULL,
    recorded_at BIGINT NOT NULL
);
