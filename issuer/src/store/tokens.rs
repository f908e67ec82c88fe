//! Bearer tokens (hashes only) and the deny list of SPIFFE IDs.

use super::{Store, StoreError};
use crate::audit::AuditEvent;

crate::store::schema::from_row! {
    /// A bearer token as stored: only its SHA-256 hash.
    #[derive(Clone, Debug, PartialEq, Eq)]
    pub struct TokenRecord {
        /// Public identifier (shown in audit entries and as the requester).
        pub id: String,
        /// SHA-256 of the token, lowercase hex.
        pub hash: String,
        /// Name of the policy the token is bound to.
        pub policy: String,
        /// Creation time, Unix seconds.
        pub created_at: i64,
        /// Revocation time, Unix seconds.
        pub revoked_at: Option<i64>,
        /// Expiry, Unix seconds (`None`: a token made before tokens expired).
        pub expires_at: Option<i64>,
    }
}

impl Store {
    /// Stores a new token (hash only) and audits its creation.
    pub async fn create_token(
        &self,
        token: &TokenRecord,
        event: AuditEvent,
    ) -> Result<(), StoreError> {
        in_write_tx!(self, tx => {
            sqlx::query(
                "INSERT INTO tokens (id, hash, policy, created_at, revoked_at, expires_at) \
                 VALUES ($1, $2, $3, $4, $5, $6)",
            )
            .bind(&token.id)
            .bind(&token.hash)
            .bind(&token.policy)
            .bind(token.created_at)
            .bind(token.revoked_at)
            .bind(token.expires_at)
            .execute(&mut *tx)
            .await?;
            append_audit!(tx, [&event]);
            tx.commit().await?;
            Ok(())
        })
    }

    /// Revokes a token by id (and audits it); false if there was no such live token.
    pub async fn revoke_token(
        &self,
        id: &str,
        at: i64,
        event: AuditEvent,
    ) -> Result<bool, StoreError> {
        in_write_tx!(self, tx => {
            let done = sqlx::query("UPDATE tokens SET revoked_at = $1 WHERE id = $2 AND revoked_at IS NULL")
                .bind(at)
                .bind(id)
                .execute(&mut *tx)
                .await?
                .rows_affected();
            if done == 0 {
                return Ok(false);
            }
            append_audit!(tx, [&event]);
            tx.commit().await?;
            Ok(true)
        })
    }

    /// Looks a token up by the SHA-256 of its secret.
    pub async fn token_by_hash(&self, hash: &str) -> Result<Option<TokenRecord>, StoreError> {
        let sql = "SELECT id, hash, policy, created_at, revoked_at, expires_at FROM tokens WHERE hash = $1";
        let token = on_pool!(self, pool => {
            sqlx::query_as::<_, TokenRecord>(sql).bind(hash).fetch_optional(pool).await?
        });
        Ok(token)
    }

    /// Every token, newest first (hashes included; callers show ids only).
    pub async fn tokens(&self) -> Result<Vec<TokenRecord>, StoreError> {
        let sql = "SELECT id, hash, policy, created_at, revoked_at, expires_at FROM tokens \
                   ORDER BY created_at DESC, id";
        let tokens = on_pool!(self, pool => {
            sqlx::query_as::<_, TokenRecord>(sql).fetch_all(pool).await?
        });
        Ok(tokens)
    }

    /// Puts a SPIFFE ID on the deny list (and audits it); false if it already was.
    pub async fn deny_identity(
        &self,
        spiffe_id: &str,
        reason: &str,
        at: i64,
        event: AuditEvent,
    ) -> Result<bool, StoreError> {
        in_write_tx!(self, tx => {
            let done = sqlx::query(
                "INSERT INTO denied_identities (spiffe_id, reason, created_at) VALUES ($1, $2, $3) \
                 ON CONFLICT (spiffe_id) DO NOTHING",
            )
            .bind(spiffe_id)
            .bind(reason)
            .bind(at)
            .execute(&mut *tx)
            .await?
            .rows_affected();
            if done == 0 {
                return Ok(false);
            }
            append_audit!(tx, [&event]);
            tx.commit().await?;
            Ok(true)
        })
    }

    /// Takes a SPIFFE ID off the deny list (and audits it); false if it was not on it.
    pub async fn allow_identity(
        &self,
        spiffe_id: &str,
        event: AuditEvent,
    ) -> Result<bool, StoreError> {
        in_write_tx!(self, tx => {
            let done = sqlx::query("DELETE FROM denied_identities WHERE spiffe_id = $1")
                .bind(spiffe_id)
                .execute(&mut *tx)
                .await?
                .rows_affected();
            if done == 0 {
                return Ok(false);
            }
            append_audit!(tx, [&event]);
            tx.commit().await?;
            Ok(true)
        })
    }

    /// Why a SPIFFE ID is on the deny list, if it is.
    pub async fn denied(&self, spiffe_id: &str) -> Result<Option<String>, StoreError> {
        let sql = "SELECT reason FROM denied_identities WHERE spiffe_id = $1";
        let reason = on_pool!(self, pool => {
            sqlx::query_scalar::<_, String>(sql).bind(spiffe_id).fetch_optional(pool).await?
        });
        Ok(reason)
    }

    /// The deny list: (SPIFFE ID, reason, since).
    pub async fn denied_identities(&self) -> Result<Vec<(String, String, i64)>, StoreError> {
        let sql = "SELECT spiffe_id, reason, created_at FROM denied_identities ORDER BY spiffe_id";
        let rows = on_pool!(self, pool => {
            sqlx::query_as::<_, (String, String, i64)>(sql).fetch_all(pool).await?
        });
        Ok(rows)
    }
}
