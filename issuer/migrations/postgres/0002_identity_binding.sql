-- Identity binding (authorization.md): tokens expire, SPIFFE IDs can be kept from
-- renewing, and a certificate remembers which token asked for it without parsing
-- the requester's name back.
ALTER TABLE tokens ADD COLUMN expires_at BIGINT;
ALTER TABLE certificates ADD COLUMN token_id TEXT;

CREATE TABLE denied_identities (
    spiffe_id  TEXT   PRIMARY KEY,
    reason     TEXT   NOT NULL,
    created_at BIGINT NOT NULL
);
