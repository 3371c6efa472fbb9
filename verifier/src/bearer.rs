//! The `authorization: Bearer <token>` rules of the auth service
//! (`src/grpc/bearer.rs` there), so both answer a bad header alike.

use crate::VerifyError;

/// The token of an `authorization` value: `None` if absent, `Err(())` if
/// not visible ASCII. Another scheme (`Basic …`) means "no credentials",
/// as in simplejwt; more or fewer than two parts is a bad header.
pub(crate) fn token(header: Option<Result<&str, ()>>) -> Result<&str, VerifyError> {
    let header = header
        .ok_or(VerifyError::NotProvided)?
        .map_err(|()| VerifyError::BadAuthorizationHeader)?;
    let mut parts = header.split_whitespace();
    if parts.next() != Some("Bearer") {
        return Err(VerifyError::NotProvided);
    }
    let (Some(token), None) = (parts.next(), parts.next()) else {
        return Err(VerifyError::BadAuthorizationHeader);
    };
    Ok(token)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn follows_the_services_rules() {
        assert_eq!(token(Some(Ok("Bearer abc"))), Ok("abc"));
        assert_eq!(token(Some(Ok("  Bearer   abc "))), Ok("abc"));
        assert_eq!(token(None), Err(VerifyError::NotProvided));
        assert_eq!(token(Some(Ok("Basic abc"))), Err(VerifyError::NotProvided));
        assert_eq!(token(Some(Ok("bearer abc"))), Err(VerifyError::NotProvided));
        assert_eq!(token(Some(Ok(""))), Err(VerifyError::NotProvided));
        assert_eq!(
            token(Some(Ok("Bearer"))),
            Err(VerifyError::BadAuthorizationHeader)
        );
        assert_eq!(
            token(Some(Ok("Bearer a b"))),
            Err(VerifyError::BadAuthorizationHeader)
        );
        assert_eq!(
            token(Some(Err(()))),
            Err(VerifyError::BadAuthorizationHeader)
        );
    }
}
