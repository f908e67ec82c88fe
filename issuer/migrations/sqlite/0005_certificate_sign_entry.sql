-- Each certificate row names its `sign` entry in the audit log (`sign_seq`), written in
-- the same transaction: `audit verify` reads the entry by seq, where it looked it up by
-- target through the `(action, target)` index, which put every new certificate on a
-- random page of its own (issue 16). Rows stored before this migration get their seq
-- from that index right after migrating (0 where no entry is stored), a batch per
-- transaction (Store::migrate); then this index and the old one are dropped.
ALTER TABLE certificates ADD COLUMN sign_seq INTEGER;
CREATE INDEX certificates_sign_seq_pending ON certificates (id) WHERE sign_seq IS NULL;
