-- canopy-issuer schema (SQLite). Timestamps are Unix seconds (audit: milliseconds).
CREATE TABLE certificates (
    id                INTEGER PRIMARY KEY AUTOINCREMENT,
    serial            TEXT    NOT NULL UNIQUE,
    spiffe_id         TEXT,
    subject           TEXT    NOT NULL,
    dns_names         TEXT    NOT NULL,
    ip_addresses      TEXT    NOT NULL,
    not_before        INTEGER NOT NULL,
    not_after         INTEGER NOT NULL,
    issued_at         INTEGER NOT NULL,
    requester         TEXT    NOT NULL,
    auth_method       TEXT    NOT NULL,
    intermediate      TEXT    NOT NULL,
    cluster           TEXT,
    namespace         TEXT,
    profile           TEXT    NOT NULL,
    fingerprint       TEXT    NOT NULL,
    certificate       TEXT    NOT NULL,
    revoked_at        INTEGER,
    revocation_reason TEXT
);
CREATE INDEX certificates_spiffe_id ON certificates (spiffe_id);
CREATE INDEX certificates_not_after ON certificates (not_after);
CREATE INDEX certificates_revoked ON certificates (intermediate, revoked_at);

CREATE TABLE tokens (
    id         TEXT    PRIMARY KEY,
    hash       TEXT    NOT NULL UNIQUE,
    policy     TEXT    NOT NULL,
    created_at INTEGER NOT NULL,
    revoked_at INTEGER
);

CREATE TABLE audit_log (
    seq       INTEGER PRIMARY KEY,
    at_ms     INTEGER NOT NULL,
    actor     TEXT    NOT NULL,
    action    TEXT    NOT NULL,
    target    TEXT    NOT NULL,
    outcome   TEXT    NOT NULL,
    detail    TEXT    NOT NULL,
    prev_hash TEXT    NOT NULL,
    hash      TEXT    NOT NULL
);

-- The newest entry, updated in the same transaction as every append: it lets
-- `audit verify` notice a removed tail, and its row lock serialises appenders.
CREATE TABLE audit_head (
    id   INTEGER PRIMARY KEY CHECK (id = 1),
    seq  INTEGER NOT NULL,
    hash TEXT    NOT NULL
);
INSERT INTO audit_head (id, seq, hash) VALUES (1, 0, '0000000000000000000000000000000000000000000000000000000000000000');
