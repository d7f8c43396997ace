//! ServiceAccount tokens: JWTs signed with ES256, with the claims kube-apiserver's token
//! issuer writes (`pkg/serviceaccount/claims.go`): `iss`, `sub`
//! (`system:serviceaccount:<ns>:<name>`), `aud`, `exp`/`iat`/`nbf`, and `kubernetes.io` with
//! the namespace, the ServiceAccount's name and UID, and the pod the token is bound to.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use ring::rand::SystemRandom;
use ring::signature::{
    EcdsaKeyPair, KeyPair as _, UnparsedPublicKey, ECDSA_P256_SHA256_FIXED,
    ECDSA_P256_SHA256_FIXED_SIGNING,
};
use serde::{Deserialize, Serialize};

/// The issuer, and the audience tokens get when the request names none (kube-apiserver's
/// defaults when `--service-account-issuer` is this URL).
pub const ISSUER: &str = "https://kubernetes.default.svc.cluster.local";

/// Why a token cannot be issued or is not accepted.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    /// The signing key is not a P-256 PKCS#8 key.
    #[error("invalid service account signing key: {0}")]
    Key(String),
    /// The token is not a well-formed JWT of ours.
    #[error("malformed token")]
    Malformed,
    /// The signature does not verify.
    #[error("invalid token signature")]
    Signature,
    /// The token expired or is not yet valid.
    #[error("token is expired or not yet valid")]
    Expired,
    /// The token is not for this API server.
    #[error("token audiences do not include {ISSUER}")]
    Audience,
}

/// A ServiceAccount signing key: a P-256 private key, PKCS#8 DER. Its `Debug` shows nothing.
#[derive(Clone)]
pub struct SigningKey(pub Vec<u8>);

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SigningKey(..)")
    }
}

impl SigningKey {
    /// A new random key.
    pub fn generate() -> Result<Self, TokenError> {
        generate_signing_key().map(Self)
    }

    /// The key at `path`, created there (owner-only) when missing, so that tokens stay valid
    /// across restarts.
    pub fn load_or_generate(path: &std::path::Path) -> Result<Self, crate::Error> {
        if let Ok(der) = std::fs::read(path) {
            return Ok(Self(der));
        }
        let key = Self::generate()?;
        crate::serve::write_private_bytes(path, &key.0)?;
        Ok(key)
    }
}

/// The pod (or other object) a token is bound to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BoundRef {
    /// The object's name.
    pub name: String,
    /// The object's UID.
    pub uid: String,
}

/// The ServiceAccount a token stands for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceAccountRef {
    /// The ServiceAccount's name.
    pub name: String,
    /// The ServiceAccount's UID.
    pub uid: String,
}

/// The `kubernetes.io` private claims.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KubeClaims {
    /// The namespace.
    pub namespace: String,
    /// The ServiceAccount.
    pub serviceaccount: ServiceAccountRef,
    /// The pod the token is bound to, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod: Option<BoundRef>,
}

/// A token's claims.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    /// Audiences.
    pub aud: Vec<String>,
    /// Expiry (Unix seconds).
    pub exp: i64,
    /// Issued at.
    pub iat: i64,
    /// Not before.
    pub nbf: i64,
    /// Issuer.
    pub iss: String,
    /// `system:serviceaccount:<ns>:<name>`.
    pub sub: String,
    /// The Kubernetes claims.
    #[serde(rename = "kubernetes.io")]
    pub kubernetes: KubeClaims,
}

/// Signs and verifies ServiceAccount tokens with one P-256 key.
pub struct TokenIssuer {
    key: EcdsaKeyPair,
    kid: String,
    rng: SystemRandom,
}

impl std::fmt::Debug for TokenIssuer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenIssuer")
            .field("kid", &self.kid)
            .finish_non_exhaustive()
    }
}

/// A new P-256 signing key, PKCS#8 DER (keep it to keep tokens valid across restarts).
pub fn generate_signing_key() -> Result<Vec<u8>, TokenError> {
    let doc = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &SystemRandom::new())
        .map_err(|e| TokenError::Key(e.to_string()))?;
    Ok(doc.as_ref().to_vec())
}

impl TokenIssuer {
    /// An issuer over a PKCS#8 P-256 key.
    pub fn new(pkcs8: &[u8]) -> Result<Self, TokenError> {
        let rng = SystemRandom::new();
        let key = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8, &rng)
            .map_err(|e| TokenError::Key(e.to_string()))?;
        let digest = ring::digest::digest(&ring::digest::SHA256, key.public_key().as_ref());
        let kid = URL_SAFE_NO_PAD.encode(digest.as_ref());
        Ok(Self { key, kid, rng })
    }

    /// Signs `claims` into a compact JWT.
    pub fn issue(&self, claims: &Claims) -> Result<String, TokenError> {
        let header = serde_json::json!({"alg": "ES256", "kid": self.kid});
        let enc = |v: &[u8]| URL_SAFE_NO_PAD.encode(v);
        let head = enc(&serde_json::to_vec(&header).map_err(|_| TokenError::Malformed)?);
        let body = enc(&serde_json::to_vec(claims).map_err(|_| TokenError::Malformed)?);
        let signing = format!("{head}.{body}");
        let sig = self
            .key
            .sign(&self.rng, signing.as_bytes())
            .map_err(|_| TokenError::Signature)?;
        Ok(format!("{signing}.{}", enc(sig.as_ref())))
    }

    /// Verifies a token's signature, times (`now` in Unix seconds) and audience.
    pub fn verify(&self, token: &str, now: i64) -> Result<Claims, TokenError> {
        let mut parts = token.split('.');
        let (Some(head), Some(body), Some(sig), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(TokenError::Malformed);
        };
        let sig = URL_SAFE_NO_PAD
            .decode(sig)
            .map_err(|_| TokenError::Malformed)?;
        UnparsedPublicKey::new(&ECDSA_P256_SHA256_FIXED, self.key.public_key().as_ref())
            .verify(format!("{head}.{body}").as_bytes(), &sig)
            .map_err(|_| TokenError::Signature)?;
        let claims: Claims = URL_SAFE_NO_PAD
            .decode(body)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .ok_or(TokenError::Malformed)?;
        if now >= claims.exp || now < claims.nbf {
            return Err(TokenError::Expired);
        }
        if !claims.aud.iter().any(|a| a == ISSUER) {
            return Err(TokenError::Audience);
        }
        Ok(claims)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claims(exp: i64) -> Claims {
        Claims {
            aud: vec![ISSUER.into()],
            exp,
            iat: 0,
            nbf: 0,
            iss: ISSUER.into(),
            sub: "system:serviceaccount:ns:bot".into(),
            kubernetes: KubeClaims {
                namespace: "ns".into(),
                serviceaccount: ServiceAccountRef {
                    name: "bot".into(),
                    uid: "u".into(),
                },
                pod: None,
            },
        }
    }

    #[test]
    fn tokens_verify_only_unchanged_unexpired_and_with_the_same_key() {
        let key = generate_signing_key().expect("key");
        let issuer = TokenIssuer::new(&key).expect("issuer");
        let token = issuer.issue(&claims(100)).expect("token");
        assert_eq!(issuer.verify(&token, 50).expect("valid"), claims(100));
        assert!(matches!(
            issuer.verify(&token, 100),
            Err(TokenError::Expired)
        ));
        let mut forged = token.clone();
        forged.insert(token.find('.').expect("dot") + 2, 'x');
        assert!(issuer.verify(&forged, 50).is_err());
        let other = TokenIssuer::new(&generate_signing_key().expect("key")).expect("issuer");
        assert!(matches!(
            other.verify(&token, 50),
            Err(TokenError::Signature)
        ));
        assert!(matches!(
            issuer.verify("a.b", 50),
            Err(TokenError::Malformed)
        ));
    }

    proptest::proptest! {
        /// Any bearer string is refused with a typed error, never a panic.
        #[test]
        fn arbitrary_tokens_are_refused(token in "[A-Za-z0-9_.=-]{0,300}") {
            static KEYED: std::sync::OnceLock<TokenIssuer> = std::sync::OnceLock::new();
            let issuer = KEYED.get_or_init(|| {
                TokenIssuer::new(&generate_signing_key().expect("key")).expect("issuer")
            });
            proptest::prop_assert!(issuer.verify(&token, 0).is_err());
        }
    }
}
