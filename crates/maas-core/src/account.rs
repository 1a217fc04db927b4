//! Users, SSH keys and API tokens.

use std::fmt;

use chrono::{DateTime, Utc};
use rand::Rng;
use serde::{Deserialize, Serialize};

use crate::error::ValidationError;
use crate::ids::{SshKeyId, TokenId, UserId};

/// A user of the API.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct User {
    /// Id.
    pub id: UserId,
    /// Unique login name.
    pub username: String,
    /// E-mail address (may be empty).
    pub email: String,
    /// Administrator ("superuser").
    pub is_admin: bool,
    /// Password hash in PHC string format, `None` for API-only users.
    /// Never serialized into API answers: callers map `User` to their own
    /// response type.
    #[serde(skip_serializing)]
    pub password_hash: Option<String>,
    /// Created.
    pub created: DateTime<Utc>,
}

/// Validates a username: 1 to 150 characters of letters, digits and `@.+-_`
/// (Django's rule, which MAAS inherits).
pub fn validate_username(name: &str) -> Result<(), ValidationError> {
    let ok = !name.is_empty()
        && name.len() <= 150
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"@.+-_".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(ValidationError::new(
            "username",
            name,
            "expected 1 to 150 letters, digits or @.+-_",
        ))
    }
}

/// An SSH public key of a user.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SshKey {
    /// Id.
    pub id: SshKeyId,
    /// Owner.
    pub user: UserId,
    /// The `authorized_keys` line.
    pub key: String,
}

const KEY_TYPES: &[&str] = &[
    "ssh-rsa",
    "ssh-dss",
    "ssh-ed25519",
    "ecdsa-sha2-nistp256",
    "ecdsa-sha2-nistp384",
    "ecdsa-sha2-nistp521",
    "sk-ssh-ed25519@openssh.com",
    "sk-ecdsa-sha2-nistp256@openssh.com",
];

/// Checks that `key` looks like one OpenSSH public key line: a known type, a
/// base64 body, an optional comment.
pub fn validate_ssh_key(key: &str) -> Result<(), ValidationError> {
    let err = |why: &str| ValidationError::new("key", key, why.to_owned());
    let t = key.trim();
    if t.contains('\n') {
        return Err(err("one key per line"));
    }
    let mut parts = t.split_whitespace();
    let kind = parts.next().ok_or_else(|| err("empty key"))?;
    if !KEY_TYPES.contains(&kind) {
        return Err(err("unknown key type"));
    }
    let body = parts.next().ok_or_else(|| err("missing key data"))?;
    let b64 = body.len() >= 16
        && body
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'/' | b'='));
    if !b64 {
        return Err(err("key data is not base64"));
    }
    Ok(())
}

/// An OAuth 1.0a API token: `consumer_key:token_key:token_secret` is the API
/// key clients are given. `Debug` redacts the secret.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApiToken {
    /// Id.
    pub id: TokenId,
    /// Owner.
    pub user: UserId,
    /// Label the user gave it.
    pub name: String,
    /// OAuth consumer key.
    pub consumer_key: String,
    /// OAuth token key (unique).
    pub token_key: String,
    /// OAuth token secret.
    pub token_secret: String,
    /// Created.
    pub created: DateTime<Utc>,
}

impl ApiToken {
    /// The API key string clients are configured with.
    pub fn api_key(&self) -> String {
        format!(
            "{}:{}:{}",
            self.consumer_key, self.token_key, self.token_secret
        )
    }
}

impl fmt::Debug for ApiToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ApiToken")
            .field("id", &self.id)
            .field("user", &self.user)
            .field("name", &self.name)
            .field("consumer_key", &self.consumer_key)
            .field("token_key", &self.token_key)
            .field("token_secret", &"<redacted>")
            .finish()
    }
}

/// Fresh random key material for a token, with MAAS's lengths (18, 18, 32).
#[derive(Clone, PartialEq, Eq)]
pub struct TokenKeys {
    /// Consumer key.
    pub consumer_key: String,
    /// Token key.
    pub token_key: String,
    /// Token secret.
    pub token_secret: String,
}

impl TokenKeys {
    /// Generates keys from `rng` (pass a cryptographically secure one, such
    /// as `rand::rng()`).
    pub fn generate<R: Rng + ?Sized>(rng: &mut R) -> Self {
        const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
        let mut word = |n: usize| -> String {
            (0..n)
                .map(|_| ALPHABET[rng.random_range(0..ALPHABET.len())] as char)
                .collect()
        };
        TokenKeys {
            consumer_key: word(18),
            token_key: word(18),
            token_secret: word(32),
        }
    }
}

impl fmt::Debug for TokenKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenKeys")
            .field("consumer_key", &self.consumer_key)
            .field("token_key", &self.token_key)
            .field("token_secret", &"<redacted>")
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_debug_never_shows_the_secret() {
        let keys = TokenKeys::generate(&mut rand::rng());
        assert_eq!(keys.token_secret.len(), 32);
        assert!(!format!("{keys:?}").contains(&keys.token_secret));
        let t = ApiToken {
            id: TokenId(1),
            user: UserId(1),
            name: "cli".into(),
            consumer_key: keys.consumer_key.clone(),
            token_key: keys.token_key.clone(),
            token_secret: keys.token_secret.clone(),
            created: Utc::now(),
        };
        assert!(!format!("{t:?}").contains(&keys.token_secret));
        assert_eq!(t.api_key().split(':').count(), 3);
    }

    #[test]
    fn ssh_keys_and_usernames() {
        assert!(
            validate_ssh_key("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIBsomekeydata user@host").is_ok()
        );
        assert!(validate_ssh_key("ssh-foo AAAAC3NzaC1lZDI1NTE5").is_err());
        assert!(validate_ssh_key("ssh-rsa").is_err());
        assert!(validate_ssh_key("ssh-rsa not*base64*at*all!!").is_err());
        assert!(validate_username("admin").is_ok());
        assert!(validate_username("a b").is_err());
    }
}
