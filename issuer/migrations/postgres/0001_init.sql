-- canopy-issuer schema (PostgreSQL). Timestamps are Unix seconds (audit: milliseconds).
CREATE TABLE certificates (
    id                BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    serial            TEXT    NOT NULL UNIQUE,
    spiffe_id         TEXT,
    subject           TEXT    NOT NULL,
    dns_names         TEXT    NOT NULL,
    ip_addresses      TEXT    NOT NULL,
    not_before        BIGINT  NOT NULL,
    not_after         BIGINT  NOT NULL,
    issued_at         BIGINT  NOT NULL,
    requester         TEXT    NOT NULL,
    auth_method       TEXT    NOT NULL,
    intermediate      TEXT    NOT NULL,
    cluster           TEXT,
    namespace         TEXT,
    profile           TEXT    NOT NULL,
    fingerprint       TEXT    NOT NULL,
    certificate       TEXT    NOT NULL,
    revoked_at        BIGINT,
    revocation_reason TEXT
);
CREATE INDEX certificates_spiffe_id ON certificates (spiffe_id);
CREATE INDEX certificates_not_after ON certificates (not_after);
CREATE INDEX certificates_revoked ON certificates (intermediate, revoked_at);

CREATE TABLE tokens (
    id         TEXT    PRIMARY KEY,
    hash       TEXT    NOT NULL UNIQUE,
    policy     TEXT    NOT NULL,
    created_at BIGINT  NOT NULL,
    revoked_at BIGINT 
);

CREATE TABLE audit_log (
    seq       BIGINT  PRIMARY KEY,
    at_ms     BIGINT  NOT NULL,
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
    id   BIGINT  PRIMARY KEY CHECK (id = 1),
    seq  BIGINT  NOT NULL,
    hash TEXT    NOT NULL
);
INSERT INTO audit_head (id, seq, hash) VALUES (1, 0, '0000000000000000000000000000000000000000000000000000000000000000');
