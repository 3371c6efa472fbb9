//! Opaque ListUsers page tokens (AIP-158): the last id of the previous page,
//! authenticated with an HMAC so a tampered or foreign token is refused
//! instead of silently paging from somewhere else.

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::error::Error;

type HmacSha256 = Hmac<Sha256>;
const TAG_LEN: usize = 16;

#[derive(Clone)]
pub struct PageTokenCodec {
    /// Keyed once; cloned per token.
    mac: HmacSha256,
}

impl std::fmt::Debug for PageTokenCodec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PageTokenCodec")
    }
}

impl PageTokenCodec {
    /// Derives its own key from the signing secret, so a page token can never
    /// double as anything signed with the JWT key.
    ///
    /// # Errors
    /// None in practice: HMAC takes keys of any length.
    pub fn new(secret: &[u8]) -> anyhow::Result<Self> {
        let mut derive = <HmacSha256 as Mac>::new_from_slice(secret)?;
        derive.update(b"auth-service/list-users/page-token/v1");
        let key = derive.finalize().into_bytes();
        Ok(Self {
            mac: <HmacSha256 as Mac>::new_from_slice(&key)?,
        })
    }

    pub fn encode(&self, last_id: i64) -> String {
        let id = last_id.to_be_bytes();
        let mut token = Vec::with_capacity(id.len() + TAG_LEN);
        token.extend_from_slice(&id);
        token.extend_from_slice(&self.tag(&id)[..TAG_LEN]);
        URL_SAFE_NO_PAD.encode(token)
    }

    /// The last id of the previous page; 0 (before every id) for an empty token.
    pub fn decode(&self, token: &str) -> Result<i64, Error> {
        if token.is_empty() {
            return Ok(0);
        }
        let invalid = || Error::invalid("page_token", "Invalid page token.");
        let bytes = URL_SAFE_NO_PAD.decode(token).map_err(|_| invalid())?;
        // Exactly the tag `encode` writes: a shorter truncated tag would be
        // forgeable by guessing (1 byte: 256 tries).
        if bytes.len() != 8 + TAG_LEN {
            return Err(invalid());
        }
        let (id, tag) = bytes.split_at(8);
        let mut mac = self.mac.clone();
        mac.update(id);
        mac.verify_truncated_left(tag).map_err(|_| invalid())?;
        let id: [u8; 8] = id.try_into().map_err(|_| invalid())?;
        Ok(i64::from_be_bytes(id))
    }

    fn tag(&self, id: &[u8]) -> [u8; 32] {
        let mut mac = self.mac.clone();
        mac.update(id);
        mac.finalize().into_bytes().into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn codec(secret: &[u8]) -> PageTokenCodec {
        PageTokenCodec::new(secret).unwrap()
    }

    #[test]
    fn round_trips() {
        let tokens = codec(b"secret");
        assert!(matches!(tokens.decode(&tokens.encode(12_345)), Ok(12_345)));
        assert!(matches!(tokens.decode(""), Ok(0)));
    }

    #[test]
    fn refuses_tampered_and_foreign_tokens() {
        let tokens = codec(b"secret");
        let token = tokens.encode(100);
        let mut bytes = URL_SAFE_NO_PAD.decode(&token).unwrap_or_default();
        bytes[7] ^= 1;
        assert!(tokens.decode(&URL_SAFE_NO_PAD.encode(&bytes)).is_err());
        assert!(tokens.decode("!!!").is_err());
        assert!(
            tokens
                .decode(&URL_SAFE_NO_PAD.encode(100_i64.to_be_bytes()))
                .is_err()
        );
        assert!(codec(b"other").decode(&token).is_err());
        // A prefix of the right tag, or the whole 32-byte MAC, is not a token we made.
        let honest = URL_SAFE_NO_PAD.decode(&token).unwrap_or_default();
        for len in 9..8 + TAG_LEN {
            assert!(
                tokens
                    .decode(&URL_SAFE_NO_PAD.encode(&honest[..len]))
                    .is_err(),
                "{len}"
            );
        }
    }
}
