-- A store that stays small and fast (issue 18).
--  * Certificates are kept as DER (`der`), not PEM text. SQLite has no base64 in SQL,
--    so rows written before this migration keep their PEM in `pem` until the issuer
--    converts them, in batches, right after migrating (Store::migrate); new rows have
--    `der` only.
--  * Every inventory query has an index that also gives its order (the id, or notAfter
--    then id), so a page never walks the table: see Store::certificates.
--  * Retention deletes rows in batches by notAfter; a lease row lets one replica run it.
CREATE TABLE certificates_v3 (
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
    der               BLOB,
    pem               TEXT,
    revoked_at        INTEGER,
    revocation_reason TEXT,
    token_id          TEXT,
    CHECK (der IS NOT NULL OR pem IS NOT NULL)
);
INSERT INTO certificates_v3 (id, serial, spiffe_id, subject, dns_names, ip_addresses,
    not_before, not_after, issued_at, requester, auth_method, intermediate, cluster,
    namespace, profile, fingerprint, der, pem, revoked_at, revocation_reason, token_id)
SELECT id, serial, spiffe_id, subject, dns_names, ip_addresses, not_before, not_after,
    issued_at, requester, auth_method, intermediate, cluster, namespace, profile,
    fingerprint, NULL, certificate, revoked_at, revocation_reason, token_id
FROM certificates;
DROP TABLE certificates;
ALTER TABLE certificates_v3 RENAME TO certificates;

CREATE INDEX certificates_spiffe_id ON certificates (spiffe_id, id);
CREATE INDEX certificates_requester ON certificates (requester, id);
CREATE INDEX certificates_not_after ON certificates (not_after, id);
CREATE INDEX certificates_revoked ON certificates (id) WHERE revoked_at IS NOT NULL;
CREATE INDEX certificates_crl ON certificates (intermediate, not_after) WHERE revoked_at IS NOT NULL;
-- Rows still to convert from PEM (empty once converted; keeps the check at startup cheap).
CREATE INDEX certificates_legacy_pem ON certificates (id) WHERE pem IS NOT NULL;

CREATE TABLE store_leases (
    name          TEXT    PRIMARY KEY,
    holder        TEXT    NOT NULL,
    expires_at_ms INTEGER NOT NULL
);

-- Operators pause and resume retention from any replica (`canopy-issuer tidy --pause`).
CREATE TABLE retention_state (
    id     INTEGER PRIMARY KEY CHECK (id = 1),
    paused INTEGER NOT NULL
);
INSERT INTO retention_state (id, paused) VALUES (1, 0);
