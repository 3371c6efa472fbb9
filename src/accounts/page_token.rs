//! Opaque page tokens (AIP-158) of ListUsers and ListServiceAccounts: the
//! last id of the previous page and a hash of the listing and filter it
//! was listed with, authenticated with an HMAC so a tampered or foreign
//! token is refused instead of silently paging from somewhere else, and a
//! token reused with another filter, or in another listing, is refused
//! (AIP-158: the other parameters must match the first call's).

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};

use crate::{domain::UserFilter, error::Error};

type HmacSha256 = Hmac<Sha256>;
const TAG_LEN: usize = 16;
const ID_LEN: usize = 8;
/// The filter's hash in a token: enough to tell filters apart (the HMAC,
/// not this, is what makes a token unforgeable).
const FILTER_LEN: usize = 8;

/// What a page token is bound to: the listing, and its filter.
#[derive(Debug, Clone, Copy)]
pub enum Listing<'a> {
    Users(&'a UserFilter),
    ServiceAccounts,
}

impl<'a> From<&'a UserFilter> for Listing<'a> {
    fn from(filter: &'a UserFilter) -> Self {
        Self::Users(filter)
    }
}

impl Listing<'_> {
    /// One text per listing and filter; a user filter's never starts with
    /// `service_accounts`.
    fn canonical(self) -> String {
        match self {
            Self::Users(filter) => filter.canonical(),
            Self::ServiceAccounts => "service_accounts".to_owned(),
        }
    }

    /// Whether a token without a filter hash, from a replica that predates
    /// filters (which listed every user), pages this listing.
    fn takes_unbound_tokens(self) -> bool {
        matches!(self, Self::Users(filter) if filter.is_empty())
    }
}

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

    /// The token of the page after `last_id` of `listing` (a user filter,
    /// or [`Listing::ServiceAccounts`]).
    pub fn encode<'a>(&self, last_id: i64, listing: impl Into<Listing<'a>>) -> String {
        let mut token = Vec::with_capacity(ID_LEN + FILTER_LEN + TAG_LEN);
        token.extend_from_slice(&last_id.to_be_bytes());
        token.extend_from_slice(&filter_hash(listing.into()));
        let tag = self.tag(&token);
        token.extend_from_slice(&tag[..TAG_LEN]);
        URL_SAFE_NO_PAD.encode(token)
    }

    /// The last id of the previous page; 0 (before every id) for an empty
    /// token.
    ///
    /// # Errors
    /// INVALID_ARGUMENT on `page_token`: not a token of ours, or one issued
    /// for another listing or filter than `listing`.
    pub fn decode<'a>(&self, token: &str, listing: impl Into<Listing<'a>>) -> Result<i64, Error> {
        let listing = listing.into();
        if token.is_empty() {
            return Ok(0);
        }
        let invalid = || Error::invalid("page_token", "Invalid page token.");
        let bytes = URL_SAFE_NO_PAD.decode(token).map_err(|_| invalid())?;
        // Exactly the tag `encode` writes: a shorter truncated tag would be
        // forgeable by guessing (1 byte: 256 tries). Tokens without a
        // filter hash come from replicas that predate filters, which listed
        // everyone.
        let (signed, tag, hash) = match bytes.len() {
            n if n == ID_LEN + FILTER_LEN + TAG_LEN => {
                let (signed, tag) = bytes.split_at(ID_LEN + FILTER_LEN);
                (signed, tag, Some(&signed[ID_LEN..]))
            }
            n if n == ID_LEN + TAG_LEN => {
                let (signed, tag) = bytes.split_at(ID_LEN);
                (signed, tag, None)
            }
            _ => return Err(invalid()),
        };
        let mut mac = self.mac.clone();
        mac.update(signed);
        mac.verify_truncated_left(tag).map_err(|_| invalid())?;
        let issued_for_this_filter = match hash {
            Some(hash) => hash == filter_hash(listing),
            None => listing.takes_unbound_tokens(),
        };
        if !issued_for_this_filter {
            return Err(Error::invalid(
                "page_token",
                "This page token was issued for another filter; \
                 pass the filter of the call that returned it.",
            ));
        }
        let id: [u8; ID_LEN] = signed[..ID_LEN].try_into().map_err(|_| invalid())?;
        Ok(i64::from_be_bytes(id))
    }

    fn tag(&self, signed: &[u8]) -> [u8; 32] {
        let mut mac = self.mac.clone();
        mac.update(signed);
        mac.finalize().into_bytes().into()
    }
}

/// What binds a token to its listing and filter: written in any order or
/// spacing, one filter has one hash.
fn filter_hash(listing: Listing<'_>) -> [u8; FILTER_LEN] {
    let digest = Sha256::digest(listing.canonical().as_bytes());
    let mut hash = [0; FILTER_LEN];
    hash.copy_from_slice(&digest[..FILTER_LEN]);
    hash
}

#[cfg(test)]
mod tests {
    use super::*;

    fn codec(secret: &[u8]) -> PageTokenCodec {
        PageTokenCodec::new(secret).unwrap()
    }

    fn all() -> UserFilter {
        UserFilter::default()
    }

    fn filter(text: &str) -> UserFilter {
        UserFilter::parse(text).unwrap()
    }

    #[test]
    fn round_trips() {
        let tokens = codec(b"secret");
        assert!(matches!(
            tokens.decode(&tokens.encode(12_345, &all()), &all()),
            Ok(12_345)
        ));
        assert!(matches!(tokens.decode("", &all()), Ok(0)));
        let staff = filter("is_staff = true");
        assert!(matches!(
            tokens.decode(&tokens.encode(7, &staff), &staff),
            Ok(7)
        ));
        // The same filter written otherwise.
        let token = tokens.encode(9, &filter("is_staff = true AND is_active = false"));
        let same = filter("is_active=false   AND is_staff=true");
        assert!(matches!(tokens.decode(&token, &same), Ok(9)));
    }

    #[test]
    fn a_token_works_only_with_its_filter() {
        let tokens = codec(b"secret");
        let staff = filter("is_staff = true");
        let refused = |token: &str, with: &UserFilter| match tokens.decode(token, with) {
            Err(Error::InvalidArgument(v)) => v[0].description.clone(),
            other => panic!("not refused: {other:?}"),
        };
        assert!(refused(&tokens.encode(5, &staff), &all()).contains("another filter"));
        assert!(refused(&tokens.encode(5, &all()), &staff).contains("another filter"));
        assert!(
            refused(&tokens.encode(5, &staff), &filter("is_staff = false"))
                .contains("another filter")
        );
        // The filter hash is signed: swapping it in is tampering.
        let mut bytes = URL_SAFE_NO_PAD.decode(tokens.encode(5, &all())).unwrap();
        bytes[ID_LEN..ID_LEN + FILTER_LEN].copy_from_slice(&filter_hash((&staff).into()));
        assert_eq!(
            refused(&URL_SAFE_NO_PAD.encode(&bytes), &staff),
            "Invalid page token."
        );
    }

    #[test]
    fn a_token_works_only_in_its_listing() {
        let tokens = codec(b"secret");
        let accounts = tokens.encode(3, Listing::ServiceAccounts);
        assert!(matches!(
            tokens.decode(&accounts, Listing::ServiceAccounts),
            Ok(3)
        ));
        assert!(tokens.decode(&accounts, &all()).is_err());
        assert!(
            tokens
                .decode(&tokens.encode(3, &all()), Listing::ServiceAccounts)
                .is_err()
        );
    }

    #[test]
    fn tokens_from_before_filters_list_everyone() {
        let tokens = codec(b"secret");
        let mut legacy = 100_i64.to_be_bytes().to_vec();
        let tag = tokens.tag(&legacy);
        legacy.extend_from_slice(&tag[..TAG_LEN]);
        let legacy = URL_SAFE_NO_PAD.encode(legacy);
        assert!(matches!(tokens.decode(&legacy, &all()), Ok(100)));
        assert!(tokens.decode(&legacy, &filter("is_active = true")).is_err());
        assert!(tokens.decode(&legacy, Listing::ServiceAccounts).is_err());
    }

    #[test]
    fn refuses_tampered_and_foreign_tokens() {
        let tokens = codec(b"secret");
        let token = tokens.encode(100, &all());
        let mut bytes = URL_SAFE_NO_PAD.decode(&token).unwrap_or_default();
        bytes[7] ^= 1;
        assert!(
            tokens
                .decode(&URL_SAFE_NO_PAD.encode(&bytes), &all())
                .is_err()
        );
        assert!(tokens.decode("!!!", &all()).is_err());
        assert!(
            tokens
                .decode(&URL_SAFE_NO_PAD.encode(100_i64.to_be_bytes()), &all())
                .is_err()
        );
        assert!(codec(b"other").decode(&token, &all()).is_err());
        // A prefix of the right tag, or the whole 32-byte MAC, is not a token we made.
        let honest = URL_SAFE_NO_PAD.decode(&token).unwrap_or_default();
        for len in 9..honest.len() {
            assert!(
                tokens
                    .decode(&URL_SAFE_NO_PAD.encode(&honest[..len]), &all())
                    .is_err(),
                "{len}"
            );
        }
        let mut long = honest.clone();
        long.extend_from_slice(&[0; 16]);
        assert!(
            tokens
                .decode(&URL_SAFE_NO_PAD.encode(&long), &all())
                .is_err()
        );
    }
}
