//! `auth.v1.AuthService`: the public calls (register, login, refresh,
//! verify, logout, password reset, service tokens).

use tonic::{Request, Response, Status};

use super::{client_address::ClientAddress, convert::token_text};
use crate::{
    accounts::{Accounts, NewAccount, PasswordReset, ServiceGrant},
    domain::Credentials,
    pb::{self, auth_service_server::AuthService},
};

#[derive(Debug, Clone)]
pub(super) struct AuthHandlers {
    pub(super) accounts: Accounts,
    pub(super) client_address: ClientAddress,
}

#[tonic::async_trait]
impl AuthService for AuthHandlers {
    async fn register(
        &self,
        request: Request<pb::RegisterRequest>,
    ) -> Result<Response<pb::User>, Status> {
        let account = NewAccount::try_from(request.into_inner())?;
        let user = self.accounts.register(account).await?;
        Ok(Response::new(user.into()))
    }

    async fn obtain_token_pair(
        &self,
        request: Request<pb::ObtainTokenPairRequest>,
    ) -> Result<Response<pb::TokenPair>, Status> {
        let client = self.client_address.of(&request);
        let credentials = Credentials::try_from(request.into_inner())?;
        let pair = self.accounts.log_in(credentials, client).await?;
        Ok(Response::new(pair.into()))
    }

    async fn refresh_token(
        &self,
        request: Request<pb::RefreshTokenRequest>,
    ) -> Result<Response<pb::TokenPair>, Status> {
        let request = request.into_inner();
        let pair = self
            .accounts
            .refresh(token_text("refresh", &request.refresh)?)
            .await?;
        Ok(Response::new(pair.into()))
    }

    async fn verify_token(
        &self,
        request: Request<pb::VerifyTokenRequest>,
    ) -> Result<Response<pb::VerifyTokenResponse>, Status> {
        let request = request.into_inner();
        let verified = self
            .accounts
            .verify(token_text("token", &request.token)?)
            .await?;
        Ok(Response::new(verified.into()))
    }

    async fn logout(
        &self,
        request: Request<pb::LogoutRequest>,
    ) -> Result<Response<pb::LogoutResponse>, Status> {
        let request = request.into_inner();
        self.accounts
            .log_out(token_text("refresh", &request.refresh)?)
            .await?;
        Ok(Response::new(pb::LogoutResponse {}))
    }

    async fn reset_password(
        &self,
        request: Request<pb::ResetPasswordRequest>,
    ) -> Result<Response<pb::ResetPasswordResponse>, Status> {
        let reset = PasswordReset::try_from(request.into_inner())?;
        self.accounts.reset_password(reset).await?;
        Ok(Response::new(pb::ResetPasswordResponse {}))
    }

    async fn obtain_service_token(
        &self,
        request: Request<pb::ObtainServiceTokenRequest>,
    ) -> Result<Response<pb::ObtainServiceTokenResponse>, Status> {
        let grant = ServiceGrant::try_from(request.into_inner())?;
        let token = self.accounts.obtain_service_token(grant).await?;
        Ok(Response::new(token.into()))
    }

    async fn get_jwks(
        &self,
        _request: Request<pb::GetJwksRequest>,
    ) -> Result<Response<pb::Jwks>, Status> {
        Ok(Response::new(self.accounts.public_keys().into()))
    }
}
