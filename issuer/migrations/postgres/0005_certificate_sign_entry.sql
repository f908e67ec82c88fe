-- Each certificate row names its `sign` entry in the audit log (`sign_seq`), written in
-- the same transaction: `audit verify` reads the entry by seq, where it looked it up by
-- target through the `(action, target)` index, which put every new certificate on a
-- random page of its own (issue 16). Rows stored before: their seq from that index
-- (0 where no entry is stored), then the index goes.
ALTER TABLE certificates ADD COLUMN sign_seq BIGINT;
UPDATE certificates c SET sign_seq = COALESCE(
    (SELECT min(a.seq) FROM audit_log a
     WHERE a.action = 'sign' AND a.outcome = 'ok' AND a.target = c.serial), 0);
DROP INDEX audit_log_action_target;
