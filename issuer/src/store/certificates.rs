//! Issued certificates as stored: the ledger's group commit, revocation, one by serial.

use std::sync::{Arc, Mutex, PoisonError};

use serde::Serialize;
use sqlx::PgPool;

use super::{
    audit_log, multi_row_insert, placeholders, Backend, Store, StoreError, Value, Writer,
    ROWS_PER_INSERT,
};
use crate::audit::AuditEvent;

/// A certificate the issuer signed, as stored. Timestamps are Unix seconds.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct CertificateRecord {
    /// Serial, lowercase hex.
    pub serial: String,
    /// The SPIFFE ID in the URI SAN, if any.
    pub spiffe_id: Option<String>,
    /// Subject DN as text.
    pub subject: String,
    /// DNS SANs.
    pub dns_names: Vec<String>,
    /// IP SANs.
    pub ip_addresses: Vec<String>,
    /// notBefore.
    pub not_before: i64,
    /// notAfter.
    pub not_after: i64,
    /// When it was signed.
    pub issued_at: i64,
    /// Identity of whoever asked for it.
    pub requester: String,
    /// How the requester authenticated (mtls, token, kubernetes).
    pub auth_method: String,
    /// Name of the intermediate that signed it.
    pub intermediate: String,
    /// Cluster of the requester, when known.
    pub cluster: Option<String>,
    /// Kubernetes namespace of the requester, when known.
    pub namespace: Option<String>,
    /// Profile it was issued under.
    pub profile: String,
    /// SHA-256 fingerprint of the DER, lowercase hex.
    pub fingerprint: String,
    /// The certificate, DER (served as PEM: [`CertificateRecord::pem`]).
    #[serde(rename = "certificate", serialize_with = "serialize_pem")]
    pub der: Vec<u8>,
    /// When it was revoked.
    pub revoked_at: Option<i64>,
    /// Why it was revoked.
    pub revocation_reason: Option<String>,
    /// The token it was asked for with, if any (checked live when it is recorded).
    pub token_id: Option<String>,
}

crate::store::schema::from_row! {
    pub(super) struct CertificateRow {
        id: i64,
        serial: String,
        spiffe_id: Option<String>,
        subject: String,
        dns_names: String,
        ip_addresses: String,
        not_before: i64,
        not_after: i64,
        issued_at: i64,
        requester: String,
        auth_method: String,
        intermediate: String,
        cluster: Option<String>,
        namespace: Option<String>,
        profile: String,
        fingerprint: String,
        der: Option<Vec<u8>>,
        pem: Option<String>,
        revoked_at: Option<i64>,
        revocation_reason: Option<String>,
        token_id: Option<String>,
    }
}

impl CertificateRow {
    pub(super) fn into_record(self) -> Result<(i64, CertificateRecord), StoreError> {
        let list = |s: &str| -> Result<Vec<String>, StoreError> {
            serde_json::from_str(s).map_err(|e| StoreError::Corrupt(e.to_string()))
        };
        let der = match (self.der, self.pem) {
            (Some(der), _) => der,
            // Written before certificates were stored as DER and not converted yet
            // (SQLite converts them right after migrating: Store::migrate).
            (None, Some(pem)) => legacy_pem_to_der(&pem)?,
            (None, None) => {
                return Err(StoreError::Corrupt(
                    "certificate row without a certificate".into(),
                ))
            }
        };
        Ok((
            self.id,
            CertificateRecord {
                dns_names: list(&self.dns_names)?,
                ip_addresses: list(&self.ip_addresses)?,
                serial: self.serial,
                spiffe_id: self.spiffe_id,
                subject: self.subject,
                not_before: self.not_before,
                not_after: self.not_after,
                issued_at: self.issued_at,
                requester: self.requester,
                auth_method: self.auth_method,
                intermediate: self.intermediate,
                cluster: self.cluster,
                namespace: self.namespace,
                profile: self.profile,
                fingerprint: self.fingerprint,
                der,
                revoked_at: self.revoked_at,
                revocation_reason: self.revocation_reason,
                token_id: self.token_id,
            },
        ))
    }
}

pub(super) const CERT_COLUMNS: &str =
    "id, serial, spiffe_id, subject, dns_names, ip_addresses, not_before, \
     not_after, issued_at, requester, auth_method, intermediate, cluster, namespace, profile, \
     fingerprint, der, pem, revoked_at, revocation_reason, token_id";

impl CertificateRecord {
    /// The record of `cert`, signed by `intermediate` at `issued_at` (Unix seconds)
    /// for `requester`, who authenticated by `auth_method`, under `profile`. The
    /// SPIFFE ID, cluster, namespace and token are the caller's to fill in.
    pub fn new(
        cert: &canopy::Certificate,
        intermediate: &str,
        profile: &str,
        requester: &str,
        auth_method: &str,
        issued_at: i64,
    ) -> CertificateRecord {
        CertificateRecord {
            serial: cert.serial().to_string(),
            spiffe_id: None,
            subject: cert.subject().to_string(),
            dns_names: cert.dns_names().to_vec(),
            ip_addresses: cert
                .ip_addresses()
                .iter()
                .map(ToString::to_string)
                .collect(),
            not_before: cert.not_before().unix_timestamp(),
            not_after: cert.not_after().unix_timestamp(),
            issued_at,
            requester: requester.to_string(),
            auth_method: auth_method.to_string(),
            intermediate: intermediate.to_string(),
            cluster: None,
            namespace: None,
            profile: profile.to_string(),
            fingerprint: cert.fingerprint_sha256().to_string(),
            der: cert.der().to_vec(),
            revoked_at: None,
            revocation_reason: None,
            token_id: None,
        }
    }

    /// The certificate as PEM.
    pub fn pem(&self) -> String {
        canopy::pem::encode("CERTIFICATE", &self.der)
    }
}

fn serialize_pem<S: serde::Serializer>(der: &[u8], s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&canopy::pem::encode("CERTIFICATE", der))
}

/// The DER of a PEM certificate stored before certificates were stored as DER.
pub(super) fn legacy_pem_to_der(pem: &str) -> Result<Vec<u8>, StoreError> {
    canopy::Certificate::from_pem(pem)
        .map(|c| c.der().to_vec())
        .map_err(|e| StoreError::Corrupt(format!("stored PEM certificate: {e}")))
}

/// One write the ledger commits; several are group-committed in one transaction.
#[derive(Clone, Debug)]
pub enum Write {
    /// A signed certificate and its audit entry.
    Issued(Box<CertificateRecord>, AuditEvent),
    /// An audit entry alone (a denial, a failure).
    Event(AuditEvent),
}

/// Outcome of a revocation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Revocation {
    /// Revoked now.
    Revoked(CertificateRecord),
    /// It was already revoked; nothing changed.
    AlreadyRevoked(CertificateRecord),
}

impl Store {
    /// Commits every write in one transaction: all or nothing.
    ///
    /// A certificate asked for with a token (`auth_method` `token`, requester
    /// `token:ID`) is recorded only if that token is live in this same transaction,
    /// else nothing is and the answer is [`StoreError::RevokedToken`]: a token revoked
    /// by any replica or the CLI gets no certificate from the moment it is revoked,
    /// even when the requester was authenticated from a cache.
    ///
    /// On SQLite the transaction runs on the writer thread ([`super::writer`]).
    pub async fn commit(&self, writes: impl Into<Arc<[Write]>>) -> Result<(), StoreError> {
        let writes = writes.into();
        let now = crate::clock::now().unix_timestamp();
        match &self.backend {
            Backend::Sqlite(_, writer) => writer.commit(writes, now).await,
            Backend::Postgres(pool, last) => {
                commit_postgres(pool, last, &Batch::of(&writes), now).await
            }
        }
    }

    /// On SQLite, the writer thread, which gathers its own batches; None on PostgreSQL,
    /// where the recorder gathers them for [`Store::commit`].
    pub(crate) fn sqlite_writer(&self) -> Option<Arc<Writer>> {
        match &self.backend {
            Backend::Sqlite(_, writer) => Some(writer.clone()),
            Backend::Postgres(..) => None,
        }
    }

    /// Appends audit events on their own.
    pub async fn append_events(&self, events: &[AuditEvent]) -> Result<(), StoreError> {
        let writes: Vec<Write> = events.iter().cloned().map(Write::Event).collect();
        self.commit(writes).await
    }

    /// Marks a certificate revoked (and audits it) unless it already is.
    pub async fn revoke(
        &self,
        serial: &str,
        reason: Option<&str>,
        at: i64,
        event: AuditEvent,
    ) -> Result<Revocation, StoreError> {
        in_write_tx!(self, tx => {
            let sql = format!("SELECT {CERT_COLUMNS} FROM certificates WHERE serial = $1");
            let row: Option<CertificateRow> = sqlx::query_as(&sql)
                .bind(serial)
                .fetch_optional(&mut *tx)
                .await?;
            let Some(row) = row else {
                return Err(StoreError::NotFound);
            };
            let (_, mut record) = row.into_record()?;
            if record.revoked_at.is_some() {
                return Ok(Revocation::AlreadyRevoked(record));
            }
            sqlx::query(
                "UPDATE certificates SET revoked_at = $1, revocation_reason = $2 \
                 WHERE serial = $3 AND revoked_at IS NULL",
            )
            .bind(at)
            .bind(reason)
            .bind(serial)
            .execute(&mut *tx)
            .await?;
            append_audit!(tx, [&event]);
            tx.commit().await?;
            record.revoked_at = Some(at);
            record.revocation_reason = reason.map(str::to_string);
            Ok(Revocation::Revoked(record))
        })
    }

    /// One certificate by serial.
    pub async fn certificate(&self, serial: &str) -> Result<CertificateRecord, StoreError> {
        let sql = format!("SELECT {CERT_COLUMNS} FROM certificates WHERE serial = $1");
        let row: Option<CertificateRow> = on_pool!(self, pool => {
            sqlx::query_as(&sql).bind(serial).fetch_optional(pool).await?
        });
        Ok(row.ok_or(StoreError::NotFound)?.into_record()?.1)
    }

    /// Whether the certificate with this serial is recorded as revoked.
    pub async fn is_revoked(&self, serial: &str) -> Result<bool, StoreError> {
        let sql = "SELECT revoked_at FROM certificates WHERE serial = $1";
        let revoked: Option<Option<i64>> = on_pool!(self, pool => {
            sqlx::query_scalar(sql).bind(serial).fetch_optional(pool).await?
        });
        Ok(matches!(revoked, Some(Some(_))))
    }
}

/// The audit head (seq, hash) this process's last group commit on PostgreSQL left.
#[derive(Debug, Default)]
pub(super) struct LastHead(Mutex<Option<(i64, String)>>);

impl LastHead {
    fn get(&self) -> Option<(i64, String)> {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    fn set(&self, head: (i64, String)) {
        *self.0.lock().unwrap_or_else(PoisonError::into_inner) = Some(head);
    }
}

/// [`Store::commit`] on PostgreSQL.
///
/// While the audit head is still the one this process's last commit left (no other
/// replica or writer appended since), one statement in one round trip, a transaction of
/// its own: it moves the head only if it is that one and every check passes, and inserts
/// the rows only if it moved it. Otherwise, or for a batch larger than one statement
/// takes, four round trips: BEGIN; the head locked and read with the token and deny-list
/// checks; the rows and the new head; COMMIT. That path also says which check failed.
async fn commit_postgres(
    pool: &PgPool,
    last: &LastHead,
    batch: &Batch<'_>,
    now: i64,
) -> Result<(), StoreError> {
    if let Some((seq, prev)) = last.get() {
        if let Some(head) = commit_postgres_after(pool, batch, now, seq, prev).await? {
            last.set(head);
            return Ok(());
        }
    }
    let head = commit_postgres_locked(pool, batch, now).await?;
    last.set(head);
    Ok(())
}

/// The one-statement commit, if the head is still `seq`, `prev`: the new head if it was.
async fn commit_postgres_after(
    pool: &PgPool,
    batch: &Batch<'_>,
    now: i64,
    seq: i64,
    prev: String,
) -> Result<Option<(i64, String)>, StoreError> {
    if batch.certificates.len() > ROWS_PER_INSERT || batch.events.len() > ROWS_PER_INSERT {
        return Ok(None);
    }
    let entries = audit_log::chain(seq, prev.clone(), batch.events.iter().copied());
    let Some(head) = entries.last() else {
        return Ok(None);
    };
    let sql = one_statement_sql(
        batch.tokens.len(),
        batch.identities.len(),
        batch.certificates.len(),
        entries.len(),
    );
    let values = [
        Value::Int(head.seq),
        Value::Text(&head.hash),
        Value::Int(seq),
        Value::Text(&prev),
    ]
    .into_iter()
    .chain(check_values(batch, now))
    .chain(
        batch
            .certificates
            .iter()
            .flat_map(|(c, sign)| c.values(seq + sign)),
    )
    .chain(entries.iter().flat_map(audit_log::values));
    let moved: i64 = bind_values!(sqlx::query_scalar(&sql), values)
        .fetch_one(pool)
        .await?;
    Ok((moved == 1).then(|| (head.seq, head.hash.clone())))
}

/// The values the token and deny-list checks bind: now (if there are tokens), the
/// tokens, the SPIFFE IDs.
fn check_values<'a>(batch: &'a Batch<'_>, now: i64) -> impl Iterator<Item = Value<'a>> {
    let now = (!batch.tokens.is_empty()).then_some(Value::Int(now));
    now.into_iter()
        .chain(batch.tokens.iter().map(|id| Value::Text(id)))
        .chain(batch.identities.iter().map(|id| Value::Text(id)))
}

/// The commit as one statement: the head moved (`$1` seq, `$2` hash) only if it is still
/// `$3`, `$4` and the checks pass (now, `tokens` tokens, `identities` SPIFFE IDs), then
/// `certificates` certificate rows and `audit` audit entries inserted only if it moved;
/// it answers 1 if it moved, else 0 (and wrote nothing).
fn one_statement_sql(
    tokens: usize,
    identities: usize,
    certificates: usize,
    audit: usize,
) -> String {
    let checks = Checks::sql(5, tokens, identities);
    let mut conditions = String::new();
    if let Some(live) = checks.live {
        conditions += &format!(" AND ({live}) = {tokens}");
    }
    if let Some(denied) = checks.denied {
        conditions += &format!(" AND NOT EXISTS ({denied})");
    }
    let mut clauses = vec![format!(
        "h AS (UPDATE audit_head SET seq = $1, hash = $2 \
         WHERE id = 1 AND seq = $3 AND hash = $4{conditions} RETURNING 1)"
    )];
    let (inserts, _) = insert_clauses(certificates, audit, checks.next, only_if_moved);
    clauses.extend(inserts);
    format!("WITH {} SELECT COUNT(*) FROM h", clauses.join(", "))
}

/// The token and deny-list checks on [`check_values`] bound from `$first`.
struct Checks {
    /// Counts the batch's tokens live (none if the batch has no token).
    live: Option<String>,
    /// The first of the batch's SPIFFE IDs denied (none if the batch has no SPIFFE ID).
    denied: Option<String>,
    /// The placeholder after the checks' values.
    next: usize,
}

impl Checks {
    fn sql(first: usize, tokens: usize, identities: usize) -> Checks {
        let mut next = first;
        let live = (tokens > 0).then(|| {
            let sql = live_tokens_sql(next, next + 1, tokens);
            next += 1 + tokens;
            sql
        });
        let denied = (identities > 0).then(|| {
            let sql = denied_identity_sql(next, identities);
            next += identities;
            sql
        });
        Checks { live, denied, next }
    }
}

/// The WITH clauses `c` and `a` inserting `certificates` certificate rows and `audit`
/// audit entries, their values from `$first`, each INSERT passed through `wrap`; and the
/// placeholder after them.
fn insert_clauses(
    certificates: usize,
    audit: usize,
    first: usize,
    wrap: fn(String) -> String,
) -> (Vec<String>, usize) {
    let mut clauses = Vec::new();
    let mut next = first;
    if certificates > 0 {
        let insert = insert_certificates_sql(certificates, next);
        clauses.push(format!("c AS ({})", wrap(insert)));
        next += CERTIFICATE_VALUES * certificates;
    }
    if audit > 0 {
        let insert = audit_log::insert_sql(audit, next);
        clauses.push(format!("a AS ({})", wrap(insert)));
        next += audit_log::VALUES * audit;
    }
    (clauses, next)
}

/// `INSERT INTO t (..) VALUES (..), ..` as the INSERT of those rows only if `h` moved the
/// audit head (it runs before anything that reads it).
fn only_if_moved(insert: String) -> String {
    let (into, rows) = insert
        .split_once(" VALUES ")
        .expect("a multi-row INSERT has VALUES");
    format!("{into} SELECT * FROM (VALUES {rows}) AS v WHERE EXISTS (SELECT 1 FROM h)")
}

/// The commit with the audit head locked first, in four round trips; the new head.
async fn commit_postgres_locked(
    pool: &PgPool,
    batch: &Batch<'_>,
    now: i64,
) -> Result<(i64, String), StoreError> {
    let mut tx = pool.begin().await?;
    let sql = head_and_checks_sql(batch.tokens.len(), batch.identities.len());
    let query = sqlx::query_as::<_, (i64, String, i64, Option<String>)>(&sql);
    let (seq, prev, live, denied) = bind_values!(query, check_values(batch, now))
        .fetch_one(&mut *tx)
        .await?;
    if live != batch.tokens.len() as i64 {
        return Err(StoreError::RevokedToken);
    }
    if let Some(id) = denied {
        return Err(StoreError::DeniedIdentity(id));
    }
    let entries = audit_log::chain(seq, prev.clone(), batch.events.iter().copied());
    let certificates: Vec<_> = batch.certificates.chunks(ROWS_PER_INSERT).collect();
    let audit: Vec<_> = entries.chunks(ROWS_PER_INSERT).collect();
    let statements = certificates.len().max(audit.len());
    for i in 0..statements {
        let certificates = certificates.get(i).copied().unwrap_or_default();
        let audit = audit.get(i).copied().unwrap_or_default();
        let head = (i + 1 == statements).then(|| entries.last()).flatten();
        let sql = rows_sql(certificates.len(), audit.len(), head.is_some());
        let values = certificates
            .iter()
            .flat_map(|(c, sign)| c.values(seq + sign))
            .chain(audit.iter().flat_map(audit_log::values))
            .chain(
                head.into_iter()
                    .flat_map(|h| [Value::Int(h.seq), Value::Text(&h.hash)]),
            );
        bind_values!(sqlx::query(&sql), values)
            .execute(&mut *tx)
            .await?;
    }
    tx.commit().await?;
    Ok(entries
        .last()
        .map_or((seq, prev), |h| (h.seq, h.hash.clone())))
}

/// Locks the audit head and reads it (seq, hash) with the number of `tokens` tokens live
/// (`$1` now, then the tokens) and the first of `identities` SPIFFE IDs denied (after
/// them), if any.
fn head_and_checks_sql(tokens: usize, identities: usize) -> String {
    let checks = Checks::sql(1, tokens, identities);
    let live = checks.live.unwrap_or_else(|| "0::bigint".to_string());
    let denied = checks.denied.unwrap_or_else(|| "NULL::text".to_string());
    format!("SELECT seq, hash, ({live}), ({denied}) FROM audit_head WHERE id = 1 FOR UPDATE")
}

/// One statement: `certificates` certificate rows, `audit` audit entries and, if
/// `set_head`, the audit head moved to the last of them (seq, hash), values in that order.
fn rows_sql(certificates: usize, audit: usize, set_head: bool) -> String {
    let (inserts, next) = insert_clauses(certificates, audit, 1, |insert| insert);
    // Data-modifying WITH clauses run to completion whether or not the query reads them.
    let main = if set_head {
        format!(
            "UPDATE audit_head SET seq = ${next}, hash = ${} WHERE id = 1",
            next + 1
        )
    } else {
        "SELECT 1".to_string()
    };
    format!("WITH {} {main}", inserts.join(", "))
}

/// What one group commit holds: the certificates and every audit event, in order, and
/// the tokens and SPIFFE IDs whose standing the transaction checks first.
pub(super) struct Batch<'a> {
    /// Each certificate with the position of its `sign` event in `events` (from 1): its
    /// entry's seq is the audit head's plus that.
    pub(super) certificates: Vec<(&'a CertificateRecord, i64)>,
    pub(super) events: Vec<&'a AuditEvent>,
    pub(super) tokens: Vec<&'a str>,
    pub(super) identities: Vec<&'a str>,
}

impl<'a> Batch<'a> {
    pub(super) fn of(writes: &'a [Write]) -> Self {
        let mut batch = Batch {
            certificates: Vec::with_capacity(writes.len()),
            events: Vec::with_capacity(writes.len()),
            tokens: Vec::new(),
            identities: Vec::new(),
        };
        for write in writes {
            match write {
                Write::Issued(cert, event) => {
                    if let Some(id) = cert.token_id.as_deref() {
                        if !batch.tokens.contains(&id) {
                            batch.tokens.push(id);
                        }
                    }
                    if let Some(id) = cert.spiffe_id.as_deref() {
                        if !batch.identities.contains(&id) {
                            batch.identities.push(id);
                        }
                    }
                    batch.events.push(event);
                    batch
                        .certificates
                        .push((&**cert, batch.events.len() as i64));
                }
                Write::Event(event) => batch.events.push(event),
            }
        }
        batch
    }
}

/// Counts which of `n` tokens (`$first..`) are live at `$now`.
pub(super) fn live_tokens_sql(now: usize, first: usize, n: usize) -> String {
    format!(
        "SELECT COUNT(*) FROM tokens WHERE revoked_at IS NULL \
         AND (expires_at IS NULL OR expires_at > ${now}) AND id IN ({})",
        placeholders(first, n)
    )
}

/// One of `n` SPIFFE IDs (`$first..`) on the deny list, if any.
pub(super) fn denied_identity_sql(first: usize, n: usize) -> String {
    format!(
        "SELECT spiffe_id FROM denied_identities WHERE spiffe_id IN ({}) LIMIT 1",
        placeholders(first, n)
    )
}

/// Values of a certificate row.
const CERTIFICATE_VALUES: usize = 18;

/// The INSERT of `rows` certificates, their [`CertificateRecord::values`] in order from
/// `$first`.
pub(super) fn insert_certificates_sql(rows: usize, first: usize) -> String {
    multi_row_insert(
        "INSERT INTO certificates (serial, spiffe_id, subject, dns_names, ip_addresses, \
         not_before, not_after, issued_at, requester, auth_method, intermediate, cluster, \
         namespace, profile, fingerprint, der, token_id, sign_seq)",
        CERTIFICATE_VALUES,
        rows,
        first,
    )
}

impl CertificateRecord {
    /// The values of one certificate row, in [`insert_certificates_sql`]'s column order;
    /// `sign_seq` is the seq of its `sign` entry, appended in the same transaction.
    pub(super) fn values(&self, sign_seq: i64) -> [Value<'_>; CERTIFICATE_VALUES] {
        [
            Value::Text(&self.serial),
            Value::NullableText(self.spiffe_id.as_deref()),
            Value::Text(&self.subject),
            Value::String(json_list(&self.dns_names)),
            Value::String(json_list(&self.ip_addresses)),
            Value::Int(self.not_before),
            Value::Int(self.not_after),
            Value::Int(self.issued_at),
            Value::Text(&self.requester),
            Value::Text(&self.auth_method),
            Value::Text(&self.intermediate),
            Value::NullableText(self.cluster.as_deref()),
            Value::NullableText(self.namespace.as_deref()),
            Value::Text(&self.profile),
            Value::Text(&self.fingerprint),
            Value::Blob(&self.der),
            Value::NullableText(self.token_id.as_deref()),
            Value::Int(sign_seq),
        ]
    }
}

fn json_list(items: &[String]) -> String {
    serde_json::to_string(items).unwrap_or_else(|_| "[]".to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every value the one-statement commit binds has its placeholder, in order: the
    /// head (4), now and a token, two SPIFFE IDs, three certificates and three entries.
    #[test]
    fn the_one_statement_commit_numbers_every_value() {
        let sql = one_statement_sql(1, 2, 3, 3);
        let bound = 4 + 1 + 1 + 2 + 3 * CERTIFICATE_VALUES + 3 * audit_log::VALUES;
        let mut numbers: Vec<usize> = sql
            .split('$')
            .skip(1)
            .map(|s| {
                let digits: String = s.chars().take_while(char::is_ascii_digit).collect();
                digits.parse().unwrap()
            })
            .collect();
        numbers.sort_unstable();
        numbers.dedup();
        assert_eq!(numbers, (1..=bound).collect::<Vec<_>>(), "{sql}");
        assert!(
            sql.contains("WHERE id = 1 AND seq = $3 AND hash = $4"),
            "{sql}"
        );
        assert_eq!(
            sql.matches("WHERE EXISTS (SELECT 1 FROM h)").count(),
            2,
            "{sql}"
        );
    }
}
