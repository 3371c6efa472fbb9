//! Where the JWKS comes from: the auth service's `GetJwks` over gRPC, its
//! `GET /.well-known/jwks.json` over plain HTTP, or a fixed set.

use std::time::Duration;

use bytes::Bytes;
use http::{Uri, header};
use http_body_util::{BodyExt, Empty, Limited};
use hyper_util::{
    client::legacy::{Client, connect::HttpConnector},
    rt::TokioExecutor,
};
use serde::Deserialize;
use tonic::transport::Channel;

use crate::{
    error::FetchError,
    keys::jwk_json,
    pb::{GetJwksRequest, auth_service_client::AuthServiceClient},
};

/// The largest JWKS document accepted over HTTP.
const MAX_JWKS_BYTES: usize = 1 << 20;

pub(crate) enum Source {
    Grpc(AuthServiceClient<Channel>),
    /// Boxed: the hyper client is large beside the other variants.
    Http(Box<HttpSource>),
    Static(Vec<serde_json::Value>),
}

pub(crate) struct HttpSource {
    client: Client<HttpConnector, Empty<Bytes>>,
    uri: Uri,
}

/// One fetched JWKS: its keys as JSON, and the HTTP `Cache-Control`
/// max-age if it had one.
pub(crate) struct Fetched {
    pub(crate) keys: Vec<serde_json::Value>,
    pub(crate) max_age: Option<Duration>,
}

#[derive(Deserialize)]
struct JwksDocument {
    keys: Vec<serde_json::Value>,
}

/// The `keys` of an RFC 7517 JWK Set document.
pub(crate) fn parse_jwks(body: &[u8]) -> Result<Vec<serde_json::Value>, serde_json::Error> {
    serde_json::from_slice::<JwksDocument>(body).map(|doc| doc.keys)
}

impl Source {
    pub(crate) fn http(uri: Uri) -> Self {
        let client = Client::builder(TokioExecutor::new()).build_http();
        Self::Http(Box::new(HttpSource { client, uri }))
    }

    /// Whether the keys can change (and are worth fetching again).
    pub(crate) fn is_remote(&self) -> bool {
        !matches!(self, Self::Static(_))
    }

    pub(crate) async fn fetch(&self) -> Result<Fetched, FetchError> {
        match self {
            Self::Grpc(client) => {
                let jwks = client
                    .clone()
                    .get_jwks(GetJwksRequest {})
                    .await
                    .map_err(|status| FetchError::Grpc(Box::new(status)))?
                    .into_inner();
                Ok(Fetched {
                    keys: jwks.keys.iter().map(jwk_json).collect(),
                    max_age: None,
                })
            }
            Self::Http(http) => {
                let HttpSource { client, uri } = &**http;
                let request = http::Request::get(uri.clone())
                    .header(header::ACCEPT, "application/json")
                    .body(Empty::new())
                    .map_err(|e| FetchError::Http(e.to_string()))?;
                let response = client
                    .request(request)
                    .await
                    .map_err(|e| FetchError::Http(e.to_string()))?;
                if response.status() != http::StatusCode::OK {
                    return Err(FetchError::HttpStatus(response.status()));
                }
                let max_age = max_age(response.headers());
                let body = Limited::new(response.into_body(), MAX_JWKS_BYTES)
                    .collect()
                    .await
                    .map_err(|e| FetchError::Http(e.to_string()))?
                    .to_bytes();
                let keys = parse_jwks(&body).map_err(FetchError::Json)?;
                Ok(Fetched { keys, max_age })
            }
            Self::Static(keys) => Ok(Fetched {
                keys: keys.clone(),
                max_age: None,
            }),
        }
    }
}

/// `Cache-Control: max-age=N` (`no-cache`/`no-store` count as 0).
fn max_age(headers: &http::HeaderMap) -> Option<Duration> {
    let mut found = None;
    for value in headers.get_all(header::CACHE_CONTROL) {
        let Ok(value) = value.to_str() else { continue };
        for directive in value.split(',') {
            let directive = directive.trim();
            let (name, argument) = directive
                .split_once('=')
                .map_or((directive, None), |(n, a)| (n.trim(), Some(a.trim())));
            if name.eq_ignore_ascii_case("no-cache") || name.eq_ignore_ascii_case("no-store") {
                return Some(Duration::ZERO);
            }
            if name.eq_ignore_ascii_case("max-age")
                && let Some(seconds) = argument
                    .map(|a| a.trim_matches('"'))
                    .and_then(|a| a.parse::<u64>().ok())
            {
                found = Some(Duration::from_secs(seconds));
            }
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    fn age(values: &[&str]) -> Option<Duration> {
        let mut headers = http::HeaderMap::new();
        for value in values {
            headers.append(header::CACHE_CONTROL, value.parse().unwrap());
        }
        max_age(&headers)
    }

    #[test]
    fn reads_max_age_from_cache_control() {
        assert_eq!(
            age(&["public, max-age=600"]),
            Some(Duration::from_secs(600))
        );
        assert_eq!(age(&["Max-Age=\"60\""]), Some(Duration::from_secs(60)));
        assert_eq!(age(&["public", "max-age=5"]), Some(Duration::from_secs(5)));
        assert_eq!(age(&["max-age=600, no-cache"]), Some(Duration::ZERO));
        assert_eq!(age(&["public"]), None);
        assert_eq!(age(&["max-age=soon"]), None);
        assert_eq!(age(&[]), None);
    }

    #[test]
    fn parses_a_jwks_document() {
        assert_eq!(parse_jwks(br#"{"keys": [{"kid": "a"}]}"#).unwrap().len(), 1);
        assert!(parse_jwks(br#"{"nokeys": []}"#).is_err());
    }
}
