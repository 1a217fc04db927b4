//! OpenPGP for SimpleStreams: a keyring of trusted public keys that checks
//! cleartext-signed `.sjson` documents, and a signing key for the stream
//! builder.
//!
//! Only the text the signature covers is ever returned to the caller, so
//! nothing outside the signed block (a forged header, text after the
//! signature) can reach the JSON parser.

use std::path::Path;

use pgp::composed::{
    CleartextSignedMessage, Deserializable, KeyType, SecretKeyParamsBuilder, SignedPublicKey,
    SignedSecretKey,
};
use pgp::crypto::hash::HashAlgorithm;
use pgp::types::{KeyDetails, Password};

use crate::error::ImageError;

const CLEARSIGN_HEADER: &str = "-----BEGIN PGP SIGNED MESSAGE-----";

/// The public keys a stream's signatures are checked against (the
/// equivalent of `ubuntu-cloudimage-keyring.gpg`).
#[derive(Debug, Clone, Default)]
pub struct Keyring {
    keys: Vec<SignedPublicKey>,
}

impl Keyring {
    /// An empty keyring; nothing verifies against it.
    pub fn new() -> Self {
        Self::default()
    }

    /// Reads every public key in `bytes`: ASCII-armored (`gpg --export -a`)
    /// or binary (`gpg --export`, a `.gpg` keyring file). Each key's
    /// self-signatures (bindings) must verify.
    pub fn from_bytes(bytes: &[u8], what: &str) -> Result<Self, ImageError> {
        let key_err = |source| ImageError::Key {
            what: what.to_owned(),
            source,
        };
        let (keys, _) = SignedPublicKey::from_reader_many(bytes).map_err(key_err)?;
        let mut ring = Self::new();
        for key in keys {
            let key = key.map_err(key_err)?;
            key.verify_bindings().map_err(key_err)?;
            ring.keys.push(key);
        }
        if ring.keys.is_empty() {
            return Err(ImageError::InvalidStream {
                path: what.to_owned(),
                reason: "no OpenPGP public key found".into(),
            });
        }
        Ok(ring)
    }

    /// Reads a keyring file (armored or binary).
    pub fn from_file(path: &Path) -> Result<Self, ImageError> {
        let bytes = std::fs::read(path).map_err(|e| ImageError::io(path, e))?;
        Self::from_bytes(&bytes, &path.display().to_string())
    }

    /// Adds one key.
    pub fn add(&mut self, key: SignedPublicKey) {
        self.keys.push(key);
    }

    /// How many primary keys the ring holds.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// Whether the ring holds no key.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// Checks a cleartext-signed document and returns the signed text.
    ///
    /// `path` names the document in errors. A document that is not a
    /// cleartext-signed message is [`ImageError::Unsigned`]; one whose
    /// signatures all fail (changed text, unknown key) is
    /// [`ImageError::BadSignature`].
    pub fn verify(&self, document: &str, path: &str) -> Result<String, ImageError> {
        let msg = parse_clearsigned(document, path)?;
        for key in &self.keys {
            if msg.verify(key).is_ok() {
                return Ok(msg.signed_text());
            }
            for sub in &key.public_subkeys {
                if msg.verify(sub).is_ok() {
                    return Ok(msg.signed_text());
                }
            }
        }
        Err(ImageError::BadSignature {
            path: path.to_owned(),
        })
    }
}

/// The signed text of a cleartext-signed document, without checking the
/// signature (for streams read with no keyring configured).
pub fn clearsigned_text(document: &str, path: &str) -> Result<String, ImageError> {
    Ok(parse_clearsigned(document, path)?.signed_text())
}

fn parse_clearsigned(document: &str, path: &str) -> Result<CleartextSignedMessage, ImageError> {
    if !document.trim_start().starts_with(CLEARSIGN_HEADER) {
        return Err(ImageError::Unsigned {
            path: path.to_owned(),
        });
    }
    match CleartextSignedMessage::from_string(document) {
        Ok((msg, _headers)) => Ok(msg),
        // A signed-message header over a body that does not parse is as
        // good as no signature.
        Err(_) => Err(ImageError::BadSignature {
            path: path.to_owned(),
        }),
    }
}

/// A secret key that signs streams (the builder's).
#[derive(Debug, Clone)]
pub struct StreamSigningKey {
    key: SignedSecretKey,
}

impl StreamSigningKey {
    /// Generates a new Ed25519 signing key with the given user id
    /// (`Name <email>`), no passphrase.
    pub fn generate(user_id: &str) -> Result<Self, ImageError> {
        let key_err = |source| ImageError::Key {
            what: format!("new key {user_id:?}"),
            source,
        };
        let mut params = SecretKeyParamsBuilder::default();
        params
            .key_type(KeyType::Ed25519Legacy)
            .can_certify(true)
            .can_sign(true)
            .primary_user_id(user_id.to_owned())
            .preferred_hash_algorithms([HashAlgorithm::Sha256].into_iter().collect());
        let params = params.build().map_err(|e| ImageError::InvalidName {
            field: "signing key parameters",
            value: e.to_string(),
            reason: "rejected by the OpenPGP key builder",
        })?;
        let key = params.generate(rand::thread_rng()).map_err(key_err)?;
        Ok(Self { key })
    }

    /// Reads an armored secret key (`gpg --export-secret-keys -a`, or
    /// [`StreamSigningKey::to_armored`]). The key must have no passphrase.
    pub fn from_armored(text: &str, what: &str) -> Result<Self, ImageError> {
        let (key, _) = SignedSecretKey::from_string(text).map_err(|source| ImageError::Key {
            what: what.to_owned(),
            source,
        })?;
        Ok(Self { key })
    }

    /// The secret key, ASCII-armored.
    pub fn to_armored(&self) -> Result<String, ImageError> {
        self.key
            .to_armored_string(Default::default())
            .map_err(|source| ImageError::Key {
                what: "secret key".into(),
                source,
            })
    }

    /// The public half, ASCII-armored, for a keyring file.
    pub fn public_armored(&self) -> Result<String, ImageError> {
        self.key
            .to_public_key()
            .to_armored_string(Default::default())
            .map_err(|source| ImageError::Key {
                what: "public key".into(),
                source,
            })
    }

    /// A keyring holding this key's public half.
    pub fn keyring(&self) -> Keyring {
        let mut ring = Keyring::new();
        ring.add(self.key.to_public_key());
        ring
    }

    /// The key's fingerprint, hex.
    pub fn fingerprint(&self) -> String {
        self.key.fingerprint().to_string()
    }

    /// Signs `text` as an OpenPGP cleartext-signed message (an `.sjson`).
    pub fn clearsign(&self, text: &str, path: &str) -> Result<String, ImageError> {
        let sign_err = |source| ImageError::Sign {
            path: path.to_owned(),
            source,
        };
        let msg = CleartextSignedMessage::sign(
            rand::thread_rng(),
            text,
            &self.key.primary_key,
            &Password::empty(),
        )
        .map_err(sign_err)?;
        msg.to_armored_string(Default::default()).map_err(sign_err)
    }
}
