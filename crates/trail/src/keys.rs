//! The keys digest files are signed with: RSA-2048, SHA256withRSA (PKCS#1 v1.5), as
//! CloudTrail signs them.
//!
//! One key per rotation period (30 days by default): the key of period `n` is valid from
//! `n × rotation` to `(n + 1) × rotation` and is stored, PKCS#8 sealed under the root key, at
//! `trail/keys/<n>.key` in the internal store. The first node to need a period's key makes
//! it (a create-if-absent write; a node that loses the race uses the winner's). The public
//! keys are never stored apart: they are derived from the sealed keys, so no one can swap
//! one in without the root key.
//!
//! A key's fingerprint is the hex of the first 16 bytes of the SHA-256 of its public key
//! (PKCS#1 `RSAPublicKey`, DER): digest files name it, `ListPublicKeys` returns it.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use aws_lc_rs::encoding::AsDer;
use aws_lc_rs::rsa::{KeyPair, KeySize};
use aws_lc_rs::signature::{KeyPair as _, RSA_PKCS1_2048_8192_SHA256, RSA_PKCS1_SHA256};
use futures::TryStreamExt;
use object_store::{ObjectStoreExt, PutMode, PutOptions, PutPayload};

use crate::{Trail, TrailError};

const KEY_AAD: &[u8] = b"vmie trail digest signing key";
/// The signature algorithm digest files name.
pub const ALGORITHM: &str = "SHA256withRSA";

/// A digest signing key.
pub(crate) struct SigningKey {
    pair: KeyPair,
    pub(crate) info: PublicKeyInfo,
}

/// A public key as `ListPublicKeys` returns it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublicKeyInfo {
    /// `RSAPublicKey` (PKCS#1), DER.
    pub der: Vec<u8>,
    /// Hex fingerprint.
    pub fingerprint: String,
    /// Valid from (ms).
    pub start_ms: i64,
    /// Valid until (ms, exclusive).
    pub end_ms: i64,
}

/// Keys opened so far, by period.
#[derive(Default)]
pub(crate) struct KeyCache(Mutex<HashMap<i64, Arc<SigningKey>>>);

/// The fingerprint of a public key.
#[must_use]
pub fn fingerprint(der: &[u8]) -> String {
    let d = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, der);
    hex::encode(&d.as_ref()[..16])
}

/// Whether `signature` (raw bytes) is `der`'s signature of `message`.
#[must_use]
pub fn verifies(der: &[u8], message: &[u8], signature: &[u8]) -> bool {
    aws_lc_rs::signature::UnparsedPublicKey::new(&RSA_PKCS1_2048_8192_SHA256, der)
        .verify(message, signature)
        .is_ok()
}

impl SigningKey {
    /// Signs `message`: hex.
    pub(crate) fn sign(&self, message: &[u8]) -> Result<String, TrailError> {
        let mut sig = vec![0u8; self.pair.public_modulus_len()];
        let rng = aws_lc_rs::rand::SystemRandom::new();
        self.pair
            .sign(&RSA_PKCS1_SHA256, &rng, message, &mut sig)
            .map_err(|e| TrailError::Key(e.to_string()))?;
        Ok(hex::encode(sig))
    }
}

fn period_of(name: &str) -> Option<i64> {
    name.strip_suffix(".key")?.parse().ok()
}

impl Trail {
    fn rotation(&self) -> i64 {
        self.cfg.key_rotation_ms.max(1000)
    }

    fn open_key(&self, period: i64, sealed: &[u8]) -> Result<SigningKey, TrailError> {
        let pkcs8 = self
            .root
            .open(KEY_AAD, sealed)
            .ok_or_else(|| TrailError::Key("it does not open under this root key".into()))?;
        let pair = KeyPair::from_pkcs8(&pkcs8).map_err(|e| TrailError::Key(e.to_string()))?;
        let der = pair.public_key().as_ref().to_vec();
        let r = self.rotation();
        Ok(SigningKey {
            pair,
            info: PublicKeyInfo {
                fingerprint: fingerprint(&der),
                der,
                start_ms: period.saturating_mul(r),
                end_ms: period.saturating_add(1).saturating_mul(r),
            },
        })
    }

    async fn load_key(
        &self,
        period: i64,
        create: bool,
    ) -> Result<Option<Arc<SigningKey>>, TrailError> {
        if let Some(k) = self
            .keys
            .0
            .lock()
            .ok()
            .and_then(|m| m.get(&period).cloned())
        {
            return Ok(Some(k));
        }
        let path = self.internal(&["keys", &format!("{period}.key")]);
        let sealed = match self.objects.get(&path).await {
            Ok(r) => r.bytes().await?.to_vec(),
            Err(object_store::Error::NotFound { .. }) if create => {
                let pkcs8 = tokio::task::spawn_blocking(|| {
                    let pair = KeyPair::generate(KeySize::Rsa2048)?;
                    pair.as_der().map(|d| d.as_ref().to_vec())
                })
                .await
                .map_err(|e| TrailError::Key(e.to_string()))?
                .map_err(|e| TrailError::Key(e.to_string()))?;
                let sealed = self.root.seal(KEY_AAD, &pkcs8);
                let create = PutOptions::from(PutMode::Create);
                match self
                    .objects
                    .put_opts(&path, PutPayload::from(sealed.clone()), create)
                    .await
                {
                    Ok(_) => sealed,
                    // Another node made this period's key first: use theirs.
                    Err(object_store::Error::AlreadyExists { .. }) => {
                        self.objects.get(&path).await?.bytes().await?.to_vec()
                    }
                    Err(e) => return Err(e.into()),
                }
            }
            Err(object_store::Error::NotFound { .. }) => return Ok(None),
            Err(e) => return Err(e.into()),
        };
        let key = Arc::new(self.open_key(period, &sealed)?);
        if let Ok(mut m) = self.keys.0.lock() {
            m.insert(period, key.clone());
        }
        Ok(Some(key))
    }

    /// The key that signs at `now_ms` (made when its period has none yet).
    pub(crate) async fn signing_key(&self, now_ms: i64) -> Result<Arc<SigningKey>, TrailError> {
        let period = now_ms.div_euclid(self.rotation());
        self.load_key(period, true)
            .await?
            .ok_or_else(|| TrailError::Key("the signing key was not made".into()))
    }

    /// Every public key whose validity overlaps `start_ms..=end_ms`, oldest first.
    pub async fn public_keys(
        &self,
        start_ms: i64,
        end_ms: i64,
    ) -> Result<Vec<PublicKeyInfo>, TrailError> {
        let listed: Vec<_> = self
            .objects
            .list(Some(&self.internal(&["keys"])))
            .try_collect()
            .await?;
        let r = self.rotation();
        let mut periods: Vec<i64> = listed
            .iter()
            .filter_map(|m| m.location.filename().and_then(period_of))
            .filter(|p| {
                p.saturating_mul(r) <= end_ms && p.saturating_add(1).saturating_mul(r) > start_ms
            })
            .collect();
        periods.sort_unstable();
        let mut out = Vec::new();
        for p in periods {
            if let Some(k) = self.load_key(p, false).await? {
                out.push(k.info.clone());
            }
        }
        Ok(out)
    }

    /// The public key with `fingerprint`, among every key the deployment made.
    pub(crate) async fn public_key_by_fingerprint(
        &self,
        fp: &str,
    ) -> Result<Option<PublicKeyInfo>, TrailError> {
        Ok(self
            .public_keys(i64::MIN, i64::MAX)
            .await?
            .into_iter()
            .find(|k| k.fingerprint == fp))
    }
}
