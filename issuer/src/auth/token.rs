//! canopy bearer tokens: made by `canopy-issuer token create`, stored only as a SHA-256
//! hash, bound to one policy, with an expiry. A sign request may take a token seen live
//! a few seconds ago from memory (see the module docs of [`crate::auth`]).

use std::time::{Duration, Instant};

use rand::RngCore;
use sha2::{Digest, Sha256};

use super::{AuthError, Authenticator, Requester};

/// Prefix of canopy bearer tokens (tells them apart from JWTs at a glance).
pub const TOKEN_PREFIX: &str = "cnpy_";

/// A new token: `cnpy_ID.SECRET`. Returns (token, record id, hash).
pub fn new_token() -> (String, String, String) {
    let mut id = [0u8; 6];
    let mut secret = [0u8; 32];
    rand::rng().fill_bytes(&mut id);
    rand::rng().fill_bytes(&mut secret);
    let id = hex::encode(id);
    let token = format!(
        "{TOKEN_PREFIX}{id}.{}",
        base64::Engine::encode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, secret)
    );
    let hash = token_hash(&token);
    (token, id, hash)
}

/// SHA-256 of a token, lowercase hex: what is stored.
pub fn token_hash(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

/// How long a token found live in the database is taken as live before signing
/// without asking again (the commit asks again anyway).
const TOKEN_CACHE_TTL: Duration = Duration::from_secs(10);
/// Tokens cached at most; past this the cache starts over.
const TOKEN_CACHE_MAX: usize = 4096;

/// A token found live in the database: its id and policy, and when it was looked up.
#[derive(Clone, Debug)]
pub(super) struct CachedToken {
    id: String,
    policy: String,
    expires_at: Option<i64>,
    looked_up: Instant,
}

impl Authenticator {
    pub(super) async fn token(&self, token: &str, cached: bool) -> Result<Requester, AuthError> {
        let hash = token_hash(token);
        let now = Instant::now();
        let hit = cached.then(|| self.cached_token(&hash, now)).flatten();
        let found = match hit {
            Some(hit) => hit,
            None => {
                let record = self
                    .store
                    .token_by_hash(&hash)
                    .await?
                    .filter(|t| t.revoked_at.is_none())
                    .ok_or(AuthError::UnknownToken)?;
                let found = CachedToken {
                    id: record.id,
                    policy: record.policy,
                    expires_at: record.expires_at,
                    looked_up: now,
                };
                self.cache_token(hash, found.clone());
                found
            }
        };
        if found
            .expires_at
            .is_some_and(|at| at <= crate::clock::now().unix_timestamp())
        {
            return Err(AuthError::ExpiredToken);
        }
        Ok(Requester::token(&found.id, &found.policy))
    }

    fn cached_token(&self, hash: &str, now: Instant) -> Option<CachedToken> {
        let tokens = self.tokens.lock().unwrap_or_else(|e| e.into_inner());
        tokens
            .get(hash)
            .filter(|t| now.saturating_duration_since(t.looked_up) < TOKEN_CACHE_TTL)
            .cloned()
    }

    fn cache_token(&self, hash: String, token: CachedToken) {
        let mut tokens = self.tokens.lock().unwrap_or_else(|e| e.into_inner());
        if tokens.len() >= TOKEN_CACHE_MAX {
            tokens.clear();
        }
        tokens.insert(hash, token);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_random_and_hashed() {
        let (a, id, hash) = new_token();
        let (b, _, _) = new_token();
        assert_ne!(a, b);
        assert!(a.starts_with(TOKEN_PREFIX) && a.contains(&id));
        assert_eq!(hash, token_hash(&a));
        assert_eq!(hash.len(), 64);
        assert!(!hash.contains(&a));
    }
}
