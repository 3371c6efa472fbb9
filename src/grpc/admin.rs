//! `auth.v1.AdminService`: staff administration. The bearer interceptor
//! has verified the token (a user's access token or a service token);
//! whether its bearer may administer, and what, is the application's
//! decision ([`crate::accounts::Actor`]).

use tonic::{Request, Response, Status};

use super::convert::{both, credential_id, public_key, scopes, service_account_id, user_id};
use crate::{
    accounts::{Accounts, Actor, NewAccount, NewServiceAccount, ServiceAccountPageRequest},
    error::Error,
    pb::{self, admin_service_server::AdminService},
    telemetry::{record_service, record_user},
    tokens::DecodedToken,
};

#[derive(Debug, Clone)]
pub(super) struct AdminHandlers {
    pub(super) accounts: Accounts,
}

/// The token the admin bearer interceptor verified; its user id or client
/// id is recorded on the call's log line.
fn caller<T>(request: &mut Request<T>) -> Result<DecodedToken, Error> {
    let decoded = request
        .extensions_mut()
        .remove::<DecodedToken>()
        .ok_or_else(|| Error::internal("reached without AdminBearerAuth"))?;
    match &decoded {
        DecodedToken::User(claims) => record_user(claims.user_id),
        DecodedToken::Service(claims) => record_service(&claims.client_id),
    }
    Ok(decoded)
}

#[tonic::async_trait]
impl AdminService for AdminHandlers {
    async fn get_user(
        &self,
        mut request: Request<pb::GetUserRequest>,
    ) -> Result<Response<pb::User>, Status> {
        let caller = caller(&mut request)?;
        let id = user_id(request.into_inner().id)?;
        let user = self.accounts.get_user(Actor::from(&caller), id).await?;
        Ok(Response::new(user.into()))
    }

    async fn set_user_active(
        &self,
        mut request: Request<pb::SetUserActiveRequest>,
    ) -> Result<Response<pb::User>, Status> {
        let caller = caller(&mut request)?;
        let request = request.into_inner();
        let id = user_id(request.id)?;
        let user = self
            .accounts
            .set_user_active(Actor::from(&caller), id, request.active)
            .await?;
        Ok(Response::new(user.into()))
    }

    async fn set_user_staff(
        &self,
        mut request: Request<pb::SetUserStaffRequest>,
    ) -> Result<Response<pb::User>, Status> {
        let caller = caller(&mut request)?;
        let request = request.into_inner();
        let id = user_id(request.id)?;
        let user = self
            .accounts
            .set_user_staff(Actor::from(&caller), id, request.staff)
            .await?;
        Ok(Response::new(user.into()))
    }

    async fn delete_user(
        &self,
        mut request: Request<pb::DeleteUserRequest>,
    ) -> Result<Response<pb::DeleteUserResponse>, Status> {
        let caller = caller(&mut request)?;
        let id = user_id(request.into_inner().id)?;
        self.accounts.delete_user(Actor::from(&caller), id).await?;
        Ok(Response::new(pb::DeleteUserResponse {}))
    }

    async fn create_user(
        &self,
        mut request: Request<pb::CreateUserRequest>,
    ) -> Result<Response<pb::User>, Status> {
        let caller = caller(&mut request)?;
        // Refused before the fields are looked at: a caller who may not
        // create users learns nothing about what would be valid.
        self.accounts.authorize_admin(Actor::from(&caller)).await?;
        let request = request.into_inner();
        let is_staff = request.is_staff;
        let account = NewAccount::try_from(request)?;
        let user = self
            .accounts
            .create_user(Actor::from(&caller), account, is_staff)
            .await?;
        Ok(Response::new(user.into()))
    }

    async fn issue_password_reset_token(
        &self,
        mut request: Request<pb::IssuePasswordResetTokenRequest>,
    ) -> Result<Response<pb::PasswordResetToken>, Status> {
        let caller = caller(&mut request)?;
        let id = user_id(request.into_inner().id)?;
        let issued = self
            .accounts
            .issue_password_reset_token(Actor::from(&caller), id)
            .await?;
        Ok(Response::new(issued.into()))
    }

    async fn create_service_account(
        &self,
        mut request: Request<pb::CreateServiceAccountRequest>,
    ) -> Result<Response<pb::ServiceAccount>, Status> {
        let caller = caller(&mut request)?;
        // As CreateUser: refused before the fields are looked at.
        self.accounts.authorize_admin(Actor::from(&caller)).await?;
        let new = NewServiceAccount::try_from(request.into_inner())?;
        let account = self
            .accounts
            .create_service_account(Actor::from(&caller), new)
            .await?;
        Ok(Response::new(account.into()))
    }

    async fn get_service_account(
        &self,
        mut request: Request<pb::GetServiceAccountRequest>,
    ) -> Result<Response<pb::ServiceAccount>, Status> {
        let caller = caller(&mut request)?;
        let id = service_account_id(request.into_inner().id)?;
        let account = self
            .accounts
            .get_service_account(Actor::from(&caller), id)
            .await?;
        Ok(Response::new(account.into()))
    }

    async fn list_service_accounts(
        &self,
        mut request: Request<pb::ListServiceAccountsRequest>,
    ) -> Result<Response<pb::ListServiceAccountsResponse>, Status> {
        let caller = caller(&mut request)?;
        let request = request.into_inner();
        let page = ServiceAccountPageRequest {
            size: request.page_size,
            token: &request.page_token,
        };
        let page = self
            .accounts
            .list_service_accounts(Actor::from(&caller), page)
            .await?;
        Ok(Response::new(page.into()))
    }

    async fn set_service_account_active(
        &self,
        mut request: Request<pb::SetServiceAccountActiveRequest>,
    ) -> Result<Response<pb::ServiceAccount>, Status> {
        let caller = caller(&mut request)?;
        let request = request.into_inner();
        let id = service_account_id(request.id)?;
        let account = self
            .accounts
            .set_service_account_active(Actor::from(&caller), id, request.active)
            .await?;
        Ok(Response::new(account.into()))
    }

    async fn set_service_account_scopes(
        &self,
        mut request: Request<pb::SetServiceAccountScopesRequest>,
    ) -> Result<Response<pb::ServiceAccount>, Status> {
        let caller = caller(&mut request)?;
        // As CreateUser: refused before the scopes are looked at.
        self.accounts.authorize_admin(Actor::from(&caller)).await?;
        let request = request.into_inner();
        let (id, scopes) = both(service_account_id(request.id), scopes(&request.scopes))?;
        let account = self
            .accounts
            .set_service_account_scopes(Actor::from(&caller), id, scopes)
            .await?;
        Ok(Response::new(account.into()))
    }

    async fn delete_service_account(
        &self,
        mut request: Request<pb::DeleteServiceAccountRequest>,
    ) -> Result<Response<pb::DeleteServiceAccountResponse>, Status> {
        let caller = caller(&mut request)?;
        let id = service_account_id(request.into_inner().id)?;
        self.accounts
            .delete_service_account(Actor::from(&caller), id)
            .await?;
        Ok(Response::new(pb::DeleteServiceAccountResponse {}))
    }

    async fn add_service_account_secret(
        &self,
        mut request: Request<pb::AddServiceAccountSecretRequest>,
    ) -> Result<Response<pb::AddServiceAccountSecretResponse>, Status> {
        let caller = caller(&mut request)?;
        let id = service_account_id(request.into_inner().id)?;
        let issued = self
            .accounts
            .add_service_account_secret(Actor::from(&caller), id)
            .await?;
        Ok(Response::new(issued.into()))
    }

    async fn remove_service_account_secret(
        &self,
        mut request: Request<pb::RemoveServiceAccountSecretRequest>,
    ) -> Result<Response<pb::RemoveServiceAccountSecretResponse>, Status> {
        let caller = caller(&mut request)?;
        let request = request.into_inner();
        let parsed = (
            service_account_id(request.id),
            credential_id("secret_id", &request.secret_id),
        );
        let (id, secret_id) = both(parsed.0, parsed.1)?;
        self.accounts
            .remove_service_account_secret(Actor::from(&caller), id, &secret_id)
            .await?;
        Ok(Response::new(pb::RemoveServiceAccountSecretResponse {}))
    }

    async fn add_service_account_key(
        &self,
        mut request: Request<pb::AddServiceAccountKeyRequest>,
    ) -> Result<Response<pb::AddServiceAccountKeyResponse>, Status> {
        let caller = caller(&mut request)?;
        // As CreateUser: refused before the key is looked at.
        self.accounts.authorize_admin(Actor::from(&caller)).await?;
        let request = request.into_inner();
        let parsed = (
            service_account_id(request.id),
            public_key(&request.public_key_pem),
        );
        let (id, key) = both(parsed.0, parsed.1)?;
        let kid = self
            .accounts
            .add_service_account_key(Actor::from(&caller), id, key)
            .await?;
        Ok(Response::new(pb::AddServiceAccountKeyResponse {
            kid: kid.as_str().to_owned(),
        }))
    }

    async fn remove_service_account_key(
        &self,
        mut request: Request<pb::RemoveServiceAccountKeyRequest>,
    ) -> Result<Response<pb::RemoveServiceAccountKeyResponse>, Status> {
        let caller = caller(&mut request)?;
        let request = request.into_inner();
        let parsed = (
            service_account_id(request.id),
            credential_id("kid", &request.kid),
        );
        let (id, kid) = both(parsed.0, parsed.1)?;
        self.accounts
            .remove_service_account_key(Actor::from(&caller), id, &kid)
            .await?;
        Ok(Response::new(pb::RemoveServiceAccountKeyResponse {}))
    }
}
