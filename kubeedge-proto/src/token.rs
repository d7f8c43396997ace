//! The join token `keadm gettoken` prints (PROTOCOL.md §3.2): `<caHash>.<JWT>` where caHash is
//! the hex SHA-256 of the CA certificate DER and the JWT is HS256, keyed by the CA private key
//! DER, with only an `exp` claim.

use std::fmt;
use std::str::FromStr;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use hmac::{Hmac, KeyInit, Mac};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::error::{JsonError, TokenError};

/// No real token is anywhere near this long; longer input is refused before any work.
pub const MAX_TOKEN_LEN: usize = 4096;

type HmacSha256 = Hmac<Sha256>;

/// Lowercase hex SHA-256 of a CA certificate in DER, as the token's first part.
pub fn ca_hash(ca_der: &[u8]) -> String {
    hex::encode(Sha256::digest(ca_der))
}

/// The JWT claims upstream issues.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    /// Expiry, Unix seconds.
    pub exp: i64,
}

#[derive(Deserialize)]
struct JwtHeader {
    alg: String,
}

/// An HS256 JWT (`header.claims.signature`), as sent in `Authorization: Bearer …`.
#[derive(Clone, PartialEq, Eq)]
pub struct Jwt(String);

impl fmt::Debug for Jwt {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The token is a credential: never print the signature.
        let shown = self.0.rsplit_once('.').map_or("", |(head, _)| head);
        write!(f, "Jwt({shown}.…)")
    }
}

impl Jwt {
    /// Issue a token valid until `exp` (Unix seconds), signed with the CA key DER.
    pub fn issue(ca_key_der: &[u8], exp: i64) -> Result<Self, TokenError> {
        // golang-jwt writes exactly this header.
        let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"HS256","typ":"JWT"}"#);
        let claims = URL_SAFE_NO_PAD.encode(format!("{{\"exp\":{exp}}}"));
        let signing_input = format!("{header}.{claims}");
        let sig = URL_SAFE_NO_PAD.encode(sign(ca_key_der, signing_input.as_bytes())?);
        Ok(Self(format!("{signing_input}.{sig}")))
    }

    /// The token text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The claims, decoded without checking the signature or expiry.
    pub fn unverified_claims(&self) -> Result<Claims, TokenError> {
        let (header, claims, _sig) = self.parts()?;
        let h: JwtHeader = decode_json(header, "header")?;
        if h.alg != "HS256" {
            return Err(TokenError::Algorithm(h.alg));
        }
        let c: ClaimsIn = decode_json(claims, "claims")?;
        c.exp
            .map(|exp| Claims { exp })
            .ok_or(TokenError::MissingExpiry)
    }

    /// Verify the signature with the CA key DER and that `exp` is not before `now` (Unix
    /// seconds). Returns the claims.
    pub fn verify(&self, ca_key_der: &[u8], now: i64) -> Result<Claims, TokenError> {
        let claims = self.unverified_claims()?;
        let (header, claims_b64, sig) = self.parts()?;
        let sig = URL_SAFE_NO_PAD
            .decode(sig)
            .map_err(|_| TokenError::Base64 { part: "signature" })?;
        let mut mac = mac(ca_key_der)?;
        mac.update(header.as_bytes());
        mac.update(b".");
        mac.update(claims_b64.as_bytes());
        mac.verify_slice(&sig).map_err(|_| TokenError::Signature)?;
        if now > claims.exp {
            return Err(TokenError::Expired {
                exp: claims.exp,
                now,
            });
        }
        Ok(claims)
    }

    fn parts(&self) -> Result<(&str, &str, &str), TokenError> {
        let mut it = self.0.split('.');
        match (it.next(), it.next(), it.next(), it.next()) {
            (Some(h), Some(c), Some(s), None) => Ok((h, c, s)),
            _ => Err(TokenError::PartCount {
                found: self.0.split('.').count(),
                expected: 3,
            }),
        }
    }
}

#[derive(Deserialize)]
struct ClaimsIn {
    #[serde(default)]
    exp: Option<i64>,
}

fn decode_json<T: serde::de::DeserializeOwned>(
    b64: &str,
    part: &'static str,
) -> Result<T, TokenError> {
    let bytes = URL_SAFE_NO_PAD
        .decode(b64)
        .map_err(|_| TokenError::Base64 { part })?;
    serde_json::from_slice(&bytes).map_err(|e| TokenError::Json {
        part,
        source: JsonError::from(e),
    })
}

fn mac(key: &[u8]) -> Result<HmacSha256, TokenError> {
    if key.is_empty() {
        return Err(TokenError::EmptyKey);
    }
    <HmacSha256 as KeyInit>::new_from_slice(key).map_err(|_| TokenError::EmptyKey)
}

fn sign(key: &[u8], input: &[u8]) -> Result<Vec<u8>, TokenError> {
    let mut m = mac(key)?;
    m.update(input);
    Ok(m.finalize().into_bytes().to_vec())
}

impl FromStr for Jwt {
    type Err = TokenError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        check_len(s)?;
        let found = s.split('.').count();
        if found != 3 {
            return Err(TokenError::PartCount { found, expected: 3 });
        }
        Ok(Self(s.to_owned()))
    }
}

impl fmt::Display for Jwt {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

fn check_len(s: &str) -> Result<(), TokenError> {
    if s.len() > MAX_TOKEN_LEN {
        return Err(TokenError::TooLong {
            len: s.len(),
            max: MAX_TOKEN_LEN,
        });
    }
    Ok(())
}

/// A join token `<caHash>.<JWT>`.
#[derive(Clone, PartialEq, Eq)]
pub struct JoinToken {
    ca_hash: String,
    jwt: Jwt,
}

impl fmt::Debug for JoinToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JoinToken")
            .field("ca_hash", &self.ca_hash)
            .field("jwt", &self.jwt)
            .finish()
    }
}

impl JoinToken {
    /// Issue a token for the CA, valid until `exp` (Unix seconds).
    pub fn issue(ca_der: &[u8], ca_key_der: &[u8], exp: i64) -> Result<Self, TokenError> {
        Ok(Self {
            ca_hash: ca_hash(ca_der),
            jwt: Jwt::issue(ca_key_der, exp)?,
        })
    }

    /// The CA hash part.
    pub fn ca_hash(&self) -> &str {
        &self.ca_hash
    }

    /// The JWT part (what the edge sends as the bearer token).
    pub fn jwt(&self) -> &Jwt {
        &self.jwt
    }

    /// Check that `ca_der` (as fetched from `/ca.crt`) is the CA the token names.
    pub fn verify_ca(&self, ca_der: &[u8]) -> Result<(), TokenError> {
        let actual = ca_hash(ca_der);
        if actual != self.ca_hash {
            return Err(TokenError::CaHashMismatch {
                expected: self.ca_hash.clone(),
                actual,
            });
        }
        Ok(())
    }
}

impl FromStr for JoinToken {
    type Err = TokenError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        check_len(s)?;
        let found = s.split('.').count();
        if found != 4 {
            return Err(TokenError::PartCount { found, expected: 4 });
        }
        let (hash, jwt) = s
            .split_once('.')
            .ok_or(TokenError::PartCount { found, expected: 4 })?;
        // Upstream compares against lowercase hex text, so only that form can ever match.
        if hash.len() != 64 || !hash.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
            return Err(TokenError::MalformedCaHash);
        }
        Ok(Self {
            ca_hash: hash.to_owned(),
            jwt: jwt.parse()?,
        })
    }
}

impl fmt::Display for JoinToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.ca_hash, self.jwt)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn issue_parse_verify() {
        let ca = b"ca-der";
        let key = b"key-der";
        let t = JoinToken::issue(ca, key, 2_000).unwrap();
        let text = t.to_string();
        assert_eq!(text.split('.').count(), 4);
        let parsed: JoinToken = text.parse().unwrap();
        assert_eq!(parsed, t);
        parsed.verify_ca(ca).unwrap();
        assert!(matches!(
            parsed.verify_ca(b"other"),
            Err(TokenError::CaHashMismatch { .. })
        ));
        assert_eq!(parsed.jwt().verify(key, 1_999).unwrap().exp, 2_000);
        assert_eq!(
            parsed.jwt().verify(key, 2_001),
            Err(TokenError::Expired {
                exp: 2_000,
                now: 2_001
            })
        );
        assert_eq!(parsed.jwt().verify(b"wrong", 0), Err(TokenError::Signature));
        assert!(!format!("{parsed:?}").contains(&text[text.len() - 10..]));
    }

    #[test]
    fn malformed_tokens() {
        assert!(matches!(
            "a.b.c".parse::<JoinToken>(),
            Err(TokenError::PartCount {
                found: 3,
                expected: 4
            })
        ));
        assert_eq!(
            "zz.b.c.d".parse::<JoinToken>(),
            Err(TokenError::MalformedCaHash)
        );
        let long = "a".repeat(MAX_TOKEN_LEN + 1);
        assert!(matches!(
            long.parse::<JoinToken>(),
            Err(TokenError::TooLong { .. })
        ));
        let jwt: Jwt = "!!.e30.sig".parse().unwrap();
        assert_eq!(
            jwt.verify(b"k", 0),
            Err(TokenError::Base64 { part: "header" })
        );
        let no_exp = format!(
            "{}.{}.x",
            URL_SAFE_NO_PAD.encode(br#"{"alg":"HS256"}"#),
            URL_SAFE_NO_PAD.encode(b"{}")
        );
        assert_eq!(
            no_exp.parse::<Jwt>().unwrap().verify(b"k", 0),
            Err(TokenError::MissingExpiry)
        );
        let none_alg = format!(
            "{}.{}.",
            URL_SAFE_NO_PAD.encode(br#"{"alg":"none"}"#),
            URL_SAFE_NO_PAD.encode(br#"{"exp":1}"#)
        );
        assert_eq!(
            none_alg.parse::<Jwt>().unwrap().verify(b"k", 0),
            Err(TokenError::Algorithm("none".into()))
        );
        assert_eq!(Jwt::issue(b"", 1), Err(TokenError::EmptyKey));
    }
}
