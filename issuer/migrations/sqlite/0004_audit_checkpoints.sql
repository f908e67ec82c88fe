-- Signed checkpoints of the audit chain (issuer/src/audit/checkpoint.rs): the head hash
-- at an entry, signed with a key kept outside the database, so the log can be archived
-- and pruned and still be verified from here on.
CREATE TABLE audit_checkpoints (
    seq       INTEGER PRIMARY KEY,
    hash      TEXT    NOT NULL,
    at_ms     INTEGER NOT NULL,
    key_id    TEXT    NOT NULL,
    signature TEXT    NOT NULL
);
CREATE INDEX audit_checkpoints_at_ms ON audit_checkpoints (at_ms);

-- `audit verify` looks up, for a page of certificate rows, their `sign` entries.
CREATE INDEX audit_log_action_target ON audit_log (action, target);
