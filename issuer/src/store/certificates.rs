//! Issued certificates: the ledger's group commit, revocation and the inventory queries.

use serde::Serialize;

use super::{multi_row_insert, Backend, Store, StoreError, ROWS_PER_INSERT};
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

#[derive(sqlx::FromRow)]
struct CertificateRow {
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

impl CertificateRow {
    fn into_record(self) -> Result<(i64, CertificateRecord), StoreError> {
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

const CERT_COLUMNS: &str = "id, serial, spiffe_id, subject, dns_names, ip_addresses, not_before, \
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

/// Filters for listing certificates; each one given narrows the query, and the
/// query is built from the given ones only, so that each shape has an index.
#[derive(Clone, Debug, Default)]
pub struct CertificateFilter {
    /// Exact SPIFFE ID.
    pub spiffe_id: Option<String>,
    /// Exact serial.
    pub serial: Option<String>,
    /// Exact requester (as recorded: `token:ID`, a SPIFFE ID, a request's name and UID).
    pub requester: Option<String>,
    /// notAfter strictly before (Unix seconds).
    pub expires_before: Option<i64>,
    /// notAfter strictly after (Unix seconds).
    pub expires_after: Option<i64>,
    /// Only revoked (true) or only not revoked (false).
    pub revoked: Option<bool>,
}

/// The order of a page of certificates.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Order {
    /// Issue order (the row id).
    Issued,
    /// By notAfter, then issue order: the order of a query on expiry, which its index
    /// gives without a sort however many rows match.
    Expiry,
}

impl CertificateFilter {
    /// The order pages come in. A query naming one serial, SPIFFE ID or requester, or
    /// asking for revoked certificates, reads few rows through its own index, in issue
    /// order; one on expiry alone reads the notAfter index in its order.
    pub fn order(&self) -> Order {
        let narrow = self.serial.is_some()
            || self.spiffe_id.is_some()
            || self.requester.is_some()
            || self.revoked == Some(true);
        if !narrow && (self.expires_before.is_some() || self.expires_after.is_some()) {
            Order::Expiry
        } else {
            Order::Issued
        }
    }
}

/// How the database runs one query: see [`Store::query_plans`].
#[derive(Clone, Debug)]
pub struct QueryPlan {
    /// What the query is for.
    pub name: &'static str,
    /// The index it is built for: one of these names (SQLite's or PostgreSQL's).
    pub index: &'static [&'static str],
    /// The plan, one line per step.
    pub lines: Vec<String>,
}

impl QueryPlan {
    /// Whether the plan reads the index the query is built for, with no table scan
    /// and no sort.
    pub fn uses_its_index(&self) -> bool {
        let text = self.lines.join("\n");
        let scan =
            self.lines.iter().any(|l| {
                (l.starts_with("SCAN ") && !l.contains("USING")) || l.contains("TEMP B-TREE")
            }) || text.contains("Seq Scan")
                || text.contains("Sort");
        !scan && self.index.iter().any(|i| text.contains(i))
    }
}

/// Where the next page starts: after the row with this id and notAfter (the position
/// in either order).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cursor {
    /// notAfter of the last row returned.
    pub not_after: i64,
    /// Row id of the last row returned.
    pub id: i64,
}

/// A value bound to a placeholder of a built query.
#[derive(Clone, Debug)]
enum Value {
    Int(i64),
    Text(String),
}

/// The SELECT of a page: only the conditions of the filters given, `$n` placeholders
/// in order, one more row than `limit` (to know whether there is a next page).
fn inventory_query(
    filter: &CertificateFilter,
    after: Option<Cursor>,
    limit: u32,
) -> (String, Vec<Value>) {
    let mut conditions: Vec<String> = Vec::new();
    let mut binds: Vec<Value> = Vec::new();
    let bind = |binds: &mut Vec<Value>, value: Value| {
        binds.push(value);
        format!("${}", binds.len())
    };
    let equal = [
        ("serial", &filter.serial),
        ("spiffe_id", &filter.spiffe_id),
        ("requester", &filter.requester),
    ];
    for (column, value) in equal {
        if let Some(v) = value {
            let p = bind(&mut binds, Value::Text(v.clone()));
            conditions.push(format!("{column} = {p}"));
        }
    }
    if let Some(t) = filter.expires_before {
        let p = bind(&mut binds, Value::Int(t));
        conditions.push(format!("not_after < {p}"));
    }
    if let Some(t) = filter.expires_after {
        let p = bind(&mut binds, Value::Int(t));
        conditions.push(format!("not_after > {p}"));
    }
    match filter.revoked {
        Some(true) => conditions.push("revoked_at IS NOT NULL".into()),
        Some(false) => conditions.push("revoked_at IS NULL".into()),
        None => {}
    }
    let order = filter.order();
    if let Some(c) = after {
        match order {
            Order::Issued => {
                let p = bind(&mut binds, Value::Int(c.id));
                conditions.push(format!("id > {p}"));
            }
            Order::Expiry => {
                let a = bind(&mut binds, Value::Int(c.not_after));
                let i = bind(&mut binds, Value::Int(c.id));
                conditions.push(format!("(not_after, id) > ({a}, {i})"));
            }
        }
    }
    let mut sql = format!("SELECT {CERT_COLUMNS} FROM certificates");
    if !conditions.is_empty() {
        sql.push_str(" WHERE ");
        sql.push_str(&conditions.join(" AND "));
    }
    // A serial names one row at most: nothing to order (its unique index has no id).
    if filter.serial.is_none() {
        sql.push_str(match order {
            Order::Issued => " ORDER BY id",
            Order::Expiry => " ORDER BY not_after, id",
        });
    }
    let p = bind(&mut binds, Value::Int(i64::from(limit) + 1));
    sql.push_str(&format!(" LIMIT {p}"));
    (sql, binds)
}

/// Every query shape the store runs over many rows, by name, with sample values and
/// the index it is built for (its name on SQLite or PostgreSQL): what
/// [`Store::query_plans`] explains.
fn planned_queries() -> Vec<(&'static str, String, Vec<Value>, &'static [&'static str])> {
    const PRIMARY_KEY: &[&str] = &["INTEGER PRIMARY KEY", "certificates_pkey"];
    const NOT_AFTER: &[&str] = &["certificates_not_after"];
    let after = Some(Cursor {
        not_after: 1_800_000_000,
        id: 1000,
    });
    let page = |name, filter: CertificateFilter, index: &'static [&'static str]| {
        let (sql, binds) = inventory_query(&filter, after, 100);
        (name, sql, binds, index)
    };
    let text = |s: &str| Some(s.to_string());
    vec![
        page(
            "by serial",
            CertificateFilter {
                serial: text("0a1b"),
                ..Default::default()
            },
            &["sqlite_autoindex_certificates", "certificates_serial_key"],
        ),
        page(
            "by SPIFFE ID",
            CertificateFilter {
                spiffe_id: text("spiffe://td/ns/a/sa/b"),
                ..Default::default()
            },
            &["certificates_spiffe_id"],
        ),
        page(
            "by requester, unexpired and not revoked (cert-manager retry)",
            CertificateFilter {
                requester: text("certificaterequest:ns/name/uid"),
                expires_after: Some(1_800_000_000),
                revoked: Some(false),
                ..Default::default()
            },
            &["certificates_requester"],
        ),
        page(
            "revoked",
            CertificateFilter {
                revoked: Some(true),
                ..Default::default()
            },
            &["certificates_revoked"],
        ),
        page(
            "not revoked",
            CertificateFilter {
                revoked: Some(false),
                ..Default::default()
            },
            PRIMARY_KEY,
        ),
        page(
            "expiring before",
            CertificateFilter {
                expires_before: Some(1_800_000_000),
                ..Default::default()
            },
            NOT_AFTER,
        ),
        page(
            "expiring after",
            CertificateFilter {
                expires_after: Some(1_800_000_000),
                ..Default::default()
            },
            NOT_AFTER,
        ),
        page("everything", CertificateFilter::default(), PRIMARY_KEY),
        (
            "CRL of an intermediate",
            REVOKED_OF_INTERMEDIATE.to_string(),
            vec![Value::Text("aws".into()), Value::Int(1_800_000_000)],
            &["certificates_crl"],
        ),
        (
            "retention batch",
            format!(
                "DELETE FROM certificates WHERE id IN ({})",
                super::retention::EXPIRED_BATCH
            ),
            vec![Value::Int(1_800_000_000), Value::Int(1000)],
            NOT_AFTER,
        ),
    ]
}

const REVOKED_OF_INTERMEDIATE: &str =
    "SELECT serial, revoked_at, revocation_reason FROM certificates \
     WHERE intermediate = $1 AND revoked_at IS NOT NULL AND not_after > $2";

/// A revoked certificate as the CRL needs it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Revoked {
    /// Serial, lowercase hex.
    pub serial: String,
    /// Revocation time, Unix seconds.
    pub revoked_at: i64,
    /// Reason given by the revoker.
    pub reason: Option<String>,
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
    pub async fn commit(&self, writes: &[Write]) -> Result<(), StoreError> {
        let mut certificates = Vec::with_capacity(writes.len());
        let mut events = Vec::with_capacity(writes.len());
        let mut tokens: Vec<&str> = Vec::new();
        let mut identities: Vec<&str> = Vec::new();
        let now = crate::clock::now().unix_timestamp();
        for write in writes {
            match write {
                Write::Issued(cert, event) => {
                    if let Some(id) = cert.token_id.as_deref() {
                        if !tokens.contains(&id) {
                            tokens.push(id);
                        }
                    }
                    if let Some(id) = cert.spiffe_id.as_deref() {
                        if !identities.contains(&id) {
                            identities.push(id);
                        }
                    }
                    certificates.push(&**cert);
                    events.push(event);
                }
                Write::Event(event) => events.push(event),
            }
        }
        macro_rules! body {
            ($kind:tt, $pool:expr) => {{
                let mut tx = begin_write!($kind $pool);
                if !tokens.is_empty() {
                    let placeholders: Vec<String> =
                        (2..=tokens.len() + 1).map(|i| format!("${i}")).collect();
                    let sql = format!(
                        "SELECT COUNT(*) FROM tokens WHERE revoked_at IS NULL \
                         AND (expires_at IS NULL OR expires_at > $1) AND id IN ({})",
                        placeholders.join(", ")
                    );
                    let mut query = sqlx::query_scalar::<_, i64>(&sql).bind(now);
                    for id in &tokens {
                        query = query.bind(*id);
                    }
                    let live = query.fetch_one(&mut *tx).await?;
                    if live != tokens.len() as i64 {
                        return Err(StoreError::RevokedToken);
                    }
                }
                if !identities.is_empty() {
                    let placeholders: Vec<String> =
                        (1..=identities.len()).map(|i| format!("${i}")).collect();
                    let sql = format!(
                        "SELECT spiffe_id FROM denied_identities WHERE spiffe_id IN ({}) LIMIT 1",
                        placeholders.join(", ")
                    );
                    let mut query = sqlx::query_scalar::<_, String>(&sql);
                    for id in &identities {
                        query = query.bind(*id);
                    }
                    if let Some(id) = query.fetch_optional(&mut *tx).await? {
                        return Err(StoreError::DeniedIdentity(id));
                    }
                }
                for chunk in certificates.chunks(ROWS_PER_INSERT) {
                    let sql = multi_row_insert(
                        "INSERT INTO certificates (serial, spiffe_id, subject, dns_names, ip_addresses, \
                         not_before, not_after, issued_at, requester, auth_method, intermediate, cluster, \
                         namespace, profile, fingerprint, der, token_id)",
                        17,
                        chunk.len(),
                    );
                    let mut query = sqlx::query(&sql);
                    for c in chunk {
                        query = query
                            .bind(&c.serial)
                            .bind(&c.spiffe_id)
                            .bind(&c.subject)
                            .bind(json_list(&c.dns_names))
                            .bind(json_list(&c.ip_addresses))
                            .bind(c.not_before)
                            .bind(c.not_after)
                            .bind(c.issued_at)
                            .bind(&c.requester)
                            .bind(&c.auth_method)
                            .bind(&c.intermediate)
                            .bind(&c.cluster)
                            .bind(&c.namespace)
                            .bind(&c.profile)
                            .bind(&c.fingerprint)
                            .bind(&c.der)
                            .bind(&c.token_id);
                    }
                    query.execute(&mut *tx).await?;
                }
                append_audit!(tx, events.iter().copied());
                tx.commit().await?;
            }};
        }
        match &self.backend {
            Backend::Sqlite(pool) => body!(sqlite, pool),
            Backend::Postgres(pool) => body!(postgres, pool),
        }
        Ok(())
    }

    /// Appends audit events on their own.
    pub async fn append_events(&self, events: &[AuditEvent]) -> Result<(), StoreError> {
        let writes: Vec<Write> = events.iter().cloned().map(Write::Event).collect();
        self.commit(&writes).await
    }

    /// Marks a certificate revoked (and audits it) unless it already is.
    pub async fn revoke(
        &self,
        serial: &str,
        reason: Option<&str>,
        at: i64,
        event: AuditEvent,
    ) -> Result<Revocation, StoreError> {
        macro_rules! body {
            ($kind:tt, $pool:expr) => {{
                let mut tx = begin_write!($kind $pool);
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
            }};
        }
        match &self.backend {
            Backend::Sqlite(pool) => body!(sqlite, pool),
            Backend::Postgres(pool) => body!(postgres, pool),
        }
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

    /// A page of at most `limit` certificates matching `filter`, after `after`
    /// (exclusive; `None` from the start), in the order [`CertificateFilter::order`]
    /// gives. Returns the records and where the next page starts, if there may be more.
    pub async fn certificates(
        &self,
        filter: &CertificateFilter,
        after: Option<Cursor>,
        limit: u32,
    ) -> Result<(Vec<CertificateRecord>, Option<Cursor>), StoreError> {
        let (sql, binds) = inventory_query(filter, after, limit);
        let rows: Vec<CertificateRow> = on_pool!(self, pool => {
            let mut query = sqlx::query_as(&sql);
            for value in &binds {
                query = match value {
                    Value::Int(v) => query.bind(*v),
                    Value::Text(v) => query.bind(v.as_str()),
                };
            }
            query.fetch_all(pool).await?
        });
        let more = rows.len() > limit as usize;
        let mut records = Vec::with_capacity(rows.len().min(limit as usize));
        let mut last = None;
        for row in rows.into_iter().take(limit as usize) {
            let (id, record) = row.into_record()?;
            last = Some(Cursor {
                not_after: record.not_after,
                id,
            });
            records.push(record);
        }
        Ok((records, if more { last } else { None }))
    }

    /// How the database runs each query the inventory, the CRL and retention make
    /// (EXPLAIN QUERY PLAN on SQLite, EXPLAIN on PostgreSQL), by name. On PostgreSQL
    /// the plan is asked for with sequential scans and sorts priced out, so that a
    /// small table shows the plan a large one gets (a planner rightly scans a table of
    /// ten rows); a query no index serves still shows its `Seq Scan` or `Sort`.
    pub async fn query_plans(&self) -> Result<Vec<QueryPlan>, StoreError> {
        let mut plans = Vec::new();
        for (name, sql, binds, index) in planned_queries() {
            let lines = match &self.backend {
                Backend::Sqlite(pool) => {
                    let sql = format!("EXPLAIN QUERY PLAN {sql}");
                    let mut query = sqlx::query_as::<_, (i64, i64, i64, String)>(&sql);
                    for value in &binds {
                        query = match value {
                            Value::Int(v) => query.bind(*v),
                            Value::Text(v) => query.bind(v.as_str()),
                        };
                    }
                    query
                        .fetch_all(pool)
                        .await?
                        .into_iter()
                        .map(|(_, _, _, detail)| detail)
                        .collect()
                }
                Backend::Postgres(pool) => {
                    let mut tx = pool.begin().await?;
                    sqlx::query("SET LOCAL enable_seqscan = off")
                        .execute(&mut *tx)
                        .await?;
                    sqlx::query("SET LOCAL enable_sort = off")
                        .execute(&mut *tx)
                        .await?;
                    let sql = format!("EXPLAIN {sql}");
                    let mut query = sqlx::query_scalar::<_, String>(&sql);
                    for value in &binds {
                        query = match value {
                            Value::Int(v) => query.bind(*v),
                            Value::Text(v) => query.bind(v.as_str()),
                        };
                    }
                    let lines = query.fetch_all(&mut *tx).await?;
                    tx.rollback().await?;
                    lines
                }
            };
            plans.push(QueryPlan { name, index, lines });
        }
        Ok(plans)
    }

    /// Revoked, not yet expired certificates of one intermediate (for its CRL).
    pub async fn revoked(&self, intermediate: &str, now: i64) -> Result<Vec<Revoked>, StoreError> {
        let rows: Vec<(String, i64, Option<String>)> = on_pool!(self, pool => {
            sqlx::query_as(REVOKED_OF_INTERMEDIATE).bind(intermediate).bind(now).fetch_all(pool).await?
        });
        let mut revoked: Vec<Revoked> = rows
            .into_iter()
            .map(|(serial, revoked_at, reason)| Revoked {
                serial,
                revoked_at,
                reason,
            })
            .collect();
        // The index gives them by notAfter; a CRL lists them in revocation order.
        revoked.sort_by(|a, b| (a.revoked_at, &a.serial).cmp(&(b.revoked_at, &b.serial)));
        Ok(revoked)
    }

    /// Number of certificates stored.
    pub async fn certificate_count(&self) -> Result<i64, StoreError> {
        let n: i64 = on_pool!(self, pool => {
            sqlx::query_scalar("SELECT COUNT(*) FROM certificates").fetch_one(pool).await?
        });
        Ok(n)
    }
}

fn json_list(items: &[String]) -> String {
    serde_json::to_string(items).unwrap_or_else(|_| "[]".to_string())
}
