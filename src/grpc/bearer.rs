//! The `authorization: Bearer <token>` checks in front of UserService and
//! AdminService.
//!
//! They only verify the JWT (no I/O, so a synchronous interceptor suffices)
//! and hand the claims to the handler through the request extensions; the
//! application then checks that the user still exists and is active, or
//! that a service token still stands.
//! - [`BearerAuth`] (UserService) takes a user's access token only: a
//!   service token is "Token has wrong type", as simplejwt answers it.
//! - [`AdminBearerAuth`] (AdminService) takes a user's access token or a
//!   service token, as a [`DecodedToken`].

use std::sync::Arc;

use tonic::{Request, Status, metadata::MetadataMap, service::Interceptor};

use crate::{
    error::{AuthFailure, Error},
    tokens::{DecodedToken, TokenCodec, TokenError, TokenType, unix_now},
};

#[derive(Debug, Clone)]
pub struct BearerAuth {
    tokens: Arc<TokenCodec>,
}

impl BearerAuth {
    pub fn new(tokens: Arc<TokenCodec>) -> Self {
        Self { tokens }
    }
}

impl Interceptor for BearerAuth {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
        let token = bearer_token(request.metadata())?;
        let claims = self
            .tokens
            .decode(token, Some(TokenType::Access), unix_now())
            .map_err(Error::from)?;
        request.extensions_mut().insert(claims);
        Ok(request)
    }
}

#[derive(Debug, Clone)]
pub struct AdminBearerAuth {
    tokens: Arc<TokenCodec>,
}

impl AdminBearerAuth {
    pub fn new(tokens: Arc<TokenCodec>) -> Self {
        Self { tokens }
    }

    fn authenticate(&self, metadata: &MetadataMap) -> Result<DecodedToken, Error> {
        let token = bearer_token(metadata)?;
        match self.tokens.decode_any(token, unix_now())? {
            DecodedToken::User(claims) if claims.token_type != TokenType::Access => {
                Err(TokenError::WrongType.into())
            }
            decoded => Ok(decoded),
        }
    }
}

impl Interceptor for AdminBearerAuth {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
        let decoded = self.authenticate(request.metadata())?;
        request.extensions_mut().insert(decoded);
        Ok(request)
    }
}

/// The token of an `authorization: Bearer <token>` value.
fn bearer_token(metadata: &MetadataMap) -> Result<&str, Error> {
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
    Ok(token)
}
