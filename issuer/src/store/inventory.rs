//! The inventory: pages of certificates by the filters given, each query shape read
//! through the index built for it (checked with EXPLAIN by `query_plans`), and the
//! revoked certificates a CRL lists.

use super::certificates::{CertificateRecord, CertificateRow, CERT_COLUMNS};
use super::{Backend, Store, StoreError};

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

/// The index a query is built for: its name on SQLite or PostgreSQL.
type IndexNames = &'static [&'static str];

const PRIMARY_KEY: IndexNames = &["INTEGER PRIMARY KEY", "certificates_pkey"];
const NOT_AFTER: IndexNames = &["certificates_not_after"];

/// Every query shape the store runs over many rows, by name, with sample values and
/// the index it is built for: what [`Store::query_plans`] explains.
fn planned_queries() -> Vec<(&'static str, String, Vec<Value>, IndexNames)> {
    let after = Some(Cursor {
        not_after: 1_800_000_000,
        id: 1000,
    });
    let mut queries: Vec<_> = inventory_pages()
        .into_iter()
        .map(|(name, filter, index)| {
            let (sql, binds) = inventory_query(&filter, after, 100);
            (name, sql, binds, index)
        })
        .collect();
    queries.push((
        "CRL of an intermediate",
        REVOKED_OF_INTERMEDIATE.to_string(),
        vec![Value::Text("aws".into()), Value::Int(1_800_000_000)],
        &["certificates_crl"],
    ));
    queries.push((
        "retention batch",
        format!(
            "DELETE FROM certificates WHERE id IN ({})",
            super::retention::EXPIRED_BATCH
        ),
        vec![Value::Int(1_800_000_000), Value::Int(1000)],
        NOT_AFTER,
    ));
    queries
}

/// The filters the inventory pages by, by name, with the index each is built for.
fn inventory_pages() -> Vec<(&'static str, CertificateFilter, IndexNames)> {
    let text = |s: &str| Some(s.to_string());
    vec![
        (
            "by serial",
            CertificateFilter {
                serial: text("0a1b"),
                ..Default::default()
            },
            &["sqlite_autoindex_certificates", "certificates_serial_key"],
        ),
        (
            "by SPIFFE ID",
            CertificateFilter {
                spiffe_id: text("spiffe://td/ns/a/sa/b"),
                ..Default::default()
            },
            &["certificates_spiffe_id"],
        ),
        (
            "by requester, unexpired and not revoked (cert-manager retry)",
            CertificateFilter {
                requester: text("certificaterequest:ns/name/uid"),
                expires_after: Some(1_800_000_000),
                revoked: Some(false),
                ..Default::default()
            },
            &["certificates_requester"],
        ),
        (
            "revoked",
            CertificateFilter {
                revoked: Some(true),
                ..Default::default()
            },
            &["certificates_revoked"],
        ),
        (
            "not revoked",
            CertificateFilter {
                revoked: Some(false),
                ..Default::default()
            },
            PRIMARY_KEY,
        ),
        (
            "expiring before",
            CertificateFilter {
                expires_before: Some(1_800_000_000),
                ..Default::default()
            },
            NOT_AFTER,
        ),
        (
            "expiring after",
            CertificateFilter {
                expires_after: Some(1_800_000_000),
                ..Default::default()
            },
            NOT_AFTER,
        ),
        ("everything", CertificateFilter::default(), PRIMARY_KEY),
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

impl Store {
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
                Backend::Sqlite(pool, _) => {
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
                Backend::Postgres(pool, _) => {
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
}
