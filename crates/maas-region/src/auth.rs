//! OAuth 1.0a PLAINTEXT as MAAS checks it (section 2 of the spec), node
//! tokens, and password hashing for username/password login.

use std::collections::HashMap;
use std::sync::Mutex;

use argon2::Argon2;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use axum::http::{HeaderMap, header};
use maas_core::SystemId;
use maas_core::account::User;
use maas_core::repo::RepositoryError;
use rand::RngCore;

use crate::Region;
use crate::error::ApiError;

/// Who is calling.
#[derive(Debug, Clone)]
pub(crate) enum Caller {
    /// No credentials.
    Anonymous,
    /// A user's API token.
    User(User),
    /// A machine's node token (metadata service).
    Node(SystemId),
}

impl Caller {
    pub(crate) fn user(&self) -> Option<&User> {
        match self {
            Caller::User(u) => Some(u),
            _ => None,
        }
    }
}

/// The OAuth parameters of an `Authorization: OAuth ...` header, parsed
/// leniently: items split at commas, `realm` skipped, quotes stripped,
/// values percent-decoded (python-libmaas, cloud-init, gomaasapi and MAAS's
/// own hand-built header all parse).
pub(crate) fn parse_oauth_header(value: &str) -> Option<HashMap<String, String>> {
    let rest = value.trim().strip_prefix("OAuth")?.trim_start();
    let mut out = HashMap::new();
    for item in rest.split(',') {
        let Some((k, v)) = item.trim().split_once('=') else {
            continue;
        };
        let k = k.trim();
        if k.contains("realm") {
            continue;
        }
        let v = v.trim().trim_matches('"');
        let v = percent_encoding::percent_decode_str(&v.replace('+', " "))
            .decode_utf8_lossy()
            .into_owned();
        out.insert(k.to_owned(), v);
    }
    Some(out)
}

const REQUIRED: [&str; 6] = [
    "oauth_consumer_key",
    "oauth_token",
    "oauth_signature",
    "oauth_signature_method",
    "oauth_timestamp",
    "oauth_nonce",
];

/// Nonces seen in the timestamp window, per token (one region process; with
/// several regions a replay across regions inside the window is possible,
/// a known limit until nonces move to the database).
#[derive(Default)]
pub(crate) struct NonceCache {
    seen: Mutex<HashMap<(String, String), i64>>,
}

impl NonceCache {
    /// Records `nonce`; false if it was seen for this token already.
    fn fresh(&self, token: &str, nonce: &str, now: i64, window: i64) -> bool {
        let mut seen = self
            .seen
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if seen.len() > 10_000 {
            seen.retain(|_, t| now - *t <= window);
        }
        seen.insert((token.to_owned(), nonce.to_owned()), now)
            .is_none()
    }
}

impl Region {
    /// Authenticates a request from its headers: `Anonymous` without OAuth
    /// parameters, a user or a node for good ones, an error for bad ones
    /// (never a fallback to anonymous).
    pub(crate) async fn authenticate(&self, headers: &HeaderMap) -> Result<Caller, ApiError> {
        let Some(value) = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
        else {
            return Ok(Caller::Anonymous);
        };
        let Some(p) = parse_oauth_header(value) else {
            return Ok(Caller::Anonymous);
        };
        if !REQUIRED.iter().all(|k| p.contains_key(*k)) {
            return Ok(Caller::Anonymous);
        }
        let timestamp: i64 = p["oauth_timestamp"]
            .parse()
            .map_err(|_| ApiError::BadRequest("Invalid oauth_timestamp.".into()))?;
        if p.get("oauth_version").is_some_and(|v| v != "1.0") {
            return Err(ApiError::BadCredentials(
                "OAuth version must be 1.0.".into(),
            ));
        }
        let token = match self.store().token_get_by_key(&p["oauth_token"]).await {
            Ok(t) => t,
            Err(RepositoryError::NotFound { .. }) => {
                return Err(ApiError::BadCredentials(format!(
                    "'Invalid access token: {}'",
                    p["oauth_token"]
                )));
            }
            Err(e) => return Err(e.into()),
        };
        if token.consumer_key != p["oauth_consumer_key"] {
            return Err(ApiError::BadCredentials("Invalid API key.".into()));
        }
        let now = chrono::Utc::now().timestamp();
        let window = self.config().timestamp_window_secs;
        if now - timestamp > window {
            return Err(ApiError::BadCredentials("Expired timestamp.".into()));
        }
        let method = p["oauth_signature_method"].as_str();
        // PLAINTEXT: "<consumer secret>&<token secret>", the consumer
        // secret being empty.
        let expected = format!("&{}", token.token_secret);
        if method != "PLAINTEXT"
            || !constant_time_eq(p["oauth_signature"].as_bytes(), expected.as_bytes())
        {
            return Err(ApiError::BadCredentials("Invalid signature.".into()));
        }
        let nonce = p["oauth_nonce"].as_str();
        if nonce.len() > 255 {
            return Err(ApiError::BadCredentials("The nonce is too long.".into()));
        }
        // This process's cache first (no database round trip for a replay
        // to the same region), then the table every region shares.
        if !self
            .inner
            .nonces
            .fresh(&token.token_key, nonce, now, window)
            || !self
                .store()
                .nonce_claim(&token.token_key, nonce, chrono::Utc::now(), window)
                .await?
        {
            return Err(ApiError::BadCredentials("Nonce already used.".into()));
        }
        if token.user == self.inner.node_user.id {
            let id = token
                .name
                .strip_prefix("node:")
                .and_then(|s| SystemId::parse(s).ok())
                .ok_or_else(|| ApiError::Forbidden("Not authenticated as a known node.".into()))?;
            return Ok(Caller::Node(id));
        }
        let user = self
            .store()
            .user_list()
            .await?
            .into_iter()
            .find(|u| u.id == token.user)
            .ok_or_else(|| ApiError::BadCredentials("the token's user is gone".into()))?;
        Ok(Caller::User(user))
    }

    /// The machine's node token, made if it has none.
    pub(crate) async fn node_token(
        &self,
        id: &SystemId,
    ) -> Result<maas_core::account::ApiToken, ApiError> {
        let name = format!("node:{id}");
        let node_user = self.inner.node_user.id;
        if let Some(t) = self
            .store()
            .token_list(node_user)
            .await?
            .into_iter()
            .find(|t| t.name == name)
        {
            return Ok(t);
        }
        Ok(self.store().token_create(node_user, &name).await?)
    }

    /// Replaces the machine's node token (on allocate and release, as MAAS
    /// does when the owner changes).
    pub(crate) async fn rotate_node_token(&self, id: &SystemId) -> Result<(), ApiError> {
        let name = format!("node:{id}");
        for t in self.store().token_list(self.inner.node_user.id).await? {
            if t.name == name {
                self.store().token_delete(t.id).await?;
            }
        }
        Ok(())
    }
}

pub(crate) fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// An Argon2id PHC string for `password` (what `User::password_hash` holds).
pub fn hash_password(password: &str) -> String {
    let mut salt = [0u8; 16];
    rand::rng().fill_bytes(&mut salt);
    // Encoding 16 bytes always fits a salt string.
    let salt = SaltString::encode_b64(&salt)
        .unwrap_or_else(|_| SaltString::from_b64("c2FsdHNhbHRzYWx0").expect("constant salt"));
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .unwrap_or_default()
}

/// Whether `password` matches a hash made by [`hash_password`].
pub fn verify_password(password: &str, hash: &str) -> bool {
    PasswordHash::new(hash).is_ok_and(|h| {
        Argon2::default()
            .verify_password(password.as_bytes(), &h)
            .is_ok()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_clients_header_shape_parses() {
        // python-libmaas (oauthlib), gomaasapi (realm "MAAS+API", random
        // order), MAAS's hand-built curtin header (unquoted, literal &).
        for h in [
            r#"OAuth realm="OAuth", oauth_nonce="6561", oauth_timestamp="1795311443", oauth_version="1.0", oauth_signature_method="PLAINTEXT", oauth_consumer_key="CKEY", oauth_token="TKEY", oauth_signature="%26TSECRET""#,
            r#"OAuth oauth_token="TKEY", realm="MAAS+API", oauth_signature="%26TSECRET", oauth_consumer_key="CKEY", oauth_nonce="ab12", oauth_signature_method="PLAINTEXT", oauth_timestamp="1795311443", oauth_version="1.0""#,
            "OAuth oauth_version=1.0, oauth_signature_method=PLAINTEXT, oauth_consumer_key=CKEY, oauth_token=TKEY, oauth_signature=&TSECRET, oauth_nonce=3f1, oauth_timestamp=1795311443",
        ] {
            let p = parse_oauth_header(h).unwrap();
            assert_eq!(p["oauth_consumer_key"], "CKEY", "{h}");
            assert_eq!(p["oauth_token"], "TKEY", "{h}");
            assert_eq!(p["oauth_signature"], "&TSECRET", "{h}");
            assert!(!p.contains_key("realm"));
        }
        assert!(parse_oauth_header("Basic YWRtaW46eA==").is_none());
    }

    #[test]
    fn passwords_hash_and_verify() {
        let h = hash_password("s3cret");
        assert!(h.starts_with("$argon2"));
        assert!(verify_password("s3cret", &h));
        assert!(!verify_password("s3creT", &h));
        assert!(!verify_password("s3cret", "not a hash"));
    }

    #[test]
    fn a_nonce_is_accepted_once_per_token() {
        let c = NonceCache::default();
        assert!(c.fresh("t", "n", 100, 300));
        assert!(!c.fresh("t", "n", 101, 300));
        assert!(c.fresh("u", "n", 101, 300));
    }
}
