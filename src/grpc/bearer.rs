//! The `authorization: Bearer <access token>` check in front of UserService.
//!
//! It only verifies the JWT (no I/O, so a synchronous interceptor suffices)
//! and hands the claims to the handler through the request extensions; the
//! handler then checks that the user still exists and is active.

use std::sync::Arc;

use tonic::{Request, Status, metadata::MetadataMap, service::Interceptor};

use crate::{
    error::{AuthFailure, Error},
    tokens::{Claims, TokenCodec, TokenType, unix_now},
};

#[derive(Debug, Clone)]
pub struct BearerAuth {
    tokens: Arc<TokenCodec>,
}

impl BearerAuth {
    pub fn new(tokens: Arc<TokenCodec>) -> Self {
        Self { tokens }
    }

    fn authenticate(&self, metadata: &MetadataMap) -> Result<Claims, Error> {
        let header = metadata
            .get("authorization")
            .ok_or(AuthFailure::NotProvided)?;
        let header = header
            .to_str()
            .map_err(|_| AuthFailure::BadAuthorizationHeader)?;
        let mut parts = header.split_whitespace();
        // Like simplejwt, another scheme (`Basic …`) means "no credentials".
        if parts.next() != Some("Bearer") {
            return Err(AuthFailure::NotProvided.into());
        }
        let (Some(token), None) = (parts.next(), parts.next()) else {
            return Err(AuthFailure::BadAuthorizationHeader.into());
        };
        Ok(self
            .tokens
            .decode(token, Some(TokenType::Access), unix_now())?)
    }
}

impl Interceptor for BearerAuth {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
        let claims = self.authenticate(request.metadata())?;
        request.extensions_mut().insert(claims);
        Ok(request)
    }
}
