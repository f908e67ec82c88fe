-- A store that stays small and fast (issue 18).
--  * Certificates are kept as DER (`der`), not PEM text; existing rows are converted here.
--  * Every inventory query has an index that also gives its order (the id, or notAfter
--    then id), so a page never walks the table: see Store::certificates.
--  * Retention deletes rows in batches by notAfter; a lease row lets one replica run it.
ALTER TABLE certificates ADD COLUMN der BYTEA;
UPDATE certificates
   SET der = decode(regexp_replace(certificate, '-----[A-Z0-9 ]+-----|\s', '', 'g'), 'base64');
ALTER TABLE certificates DROP COLUMN certificate;
ALTER TABLE certificates ALTER COLUMN der SET NOT NULL;
-- Both backends read the same columns; PostgreSQL never holds legacy PEM.
ALTER TABLE certificates ADD COLUMN pem TEXT;
ALTER TABLE certificates ADD CONSTRAINT certificates_pem_is_legacy CHECK (pem IS NULL);

DROP INDEX certificates_spiffe_id;
DROP INDEX certificates_not_after;
DROP INDEX certificates_revoked;
CREATE INDEX certificates_spiffe_id ON certificates (spiffe_id, id);
CREATE INDEX certificates_requester ON certificates (requester, id);
CREATE INDEX certificates_not_after ON certificates (not_after, id);
CREATE INDEX certificates_revoked ON certificates (id) WHERE revoked_at IS NOT NULL;
CREATE INDEX certificates_crl ON certificates (intermediate, not_after) WHERE revoked_at IS NOT NULL;

CREATE TABLE store_leases (
    name          TEXT   PRIMARY KEY,
    holder        TEXT   NOT NULL,
    expires_at_ms BIGINT NOT NULL
);

CREATE TABLE retention_state (
    id     INTEGER PRIMARY KEY CHECK (id = 1),
    paused BOOLEAN NOT NULL
);
INSERT INTO retention_state (id, paused) VALUES (1, FALSE);
