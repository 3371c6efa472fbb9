//! `auth.v1.UserService`: calls on behalf of the bearer of an access token.
//! The bearer interceptor has verified the token and left its claims in the
//! request extensions.

use tonic::{Request, Response, Status};

use super::{
    client_address::ClientAddress,
    convert::{avatar_update, user_filter, user_ids},
};
use crate::{
    accounts::{Accounts, PageRequest, PasswordChange},
    error::Error,
    pb::{self, user_service_server::UserService},
    telemetry::record_user,
    tokens::Claims,
};

#[derive(Debug, Clone)]
pub(super) struct UserHandlers {
    pub(super) accounts: Accounts,
    pub(super) client_address: ClientAddress,
}

/// The claims of the caller's access token, which the bearer interceptor
/// verified; the user id is recorded on the call's log line.
pub(super) fn caller<T>(request: &mut Request<T>) -> Result<Claims, Error> {
    let claims = request
        .extensions_mut()
        .remove::<Claims>()
        .ok_or_else(|| Error::internal("reached without BearerAuth"))?;
    record_user(claims.user_id);
    Ok(claims)
}

#[tonic::async_trait]
impl UserService for UserHandlers {
    async fn get_me(
        &self,
        mut request: Request<pb::GetMeRequest>,
    ) -> Result<Response<pb::User>, Status> {
        let user = self.accounts.me(&caller(&mut request)?).await?;
        Ok(Response::new(user.into()))
    }

    async fn update_avatar(
        &self,
        mut request: Request<pb::UpdateAvatarRequest>,
    ) -> Result<Response<pb::User>, Status> {
        let caller = caller(&mut request)?;
        let avatar = avatar_update(&request.into_inner())?;
        let user = self.accounts.update_avatar(&caller, avatar).await?;
        Ok(Response::new(user.into()))
    }

    async fn list_users(
        &self,
        mut request: Request<pb::ListUsersRequest>,
    ) -> Result<Response<pb::ListUsersResponse>, Status> {
        let caller = caller(&mut request)?;
        let request = request.into_inner();
        let page = PageRequest {
            size: request.page_size,
            token: &request.page_token,
            filter: user_filter(&request.filter)?,
        };
        let page = self.accounts.list_users(&caller, page).await?;
        Ok(Response::new(page.into()))
    }

    async fn batch_get_users(
        &self,
        mut request: Request<pb::BatchGetUsersRequest>,
    ) -> Result<Response<pb::BatchGetUsersResponse>, Status> {
        let caller = caller(&mut request)?;
        let ids = user_ids(request.into_inner().ids)?;
        let batch = self.accounts.batch_get_users(&caller, ids).await?;
        Ok(Response::new(batch.into()))
    }

    async fn change_password(
        &self,
        mut request: Request<pb::ChangePasswordRequest>,
    ) -> Result<Response<pb::TokenPair>, Status> {
        let caller = caller(&mut request)?;
        let client = self.client_address.of(&request);
        let change = PasswordChange::try_from(request.into_inner())?;
        let pair = self
            .accounts
            .change_password(&caller, change, client)
            .await?;
        Ok(Response::new(pair.into()))
    }

    async fn logout_all(
        &self,
        mut request: Request<pb::LogoutAllRequest>,
    ) -> Result<Response<pb::LogoutAllResponse>, Status> {
        self.accounts.log_out_all(&caller(&mut request)?).await?;
        Ok(Response::new(pb::LogoutAllResponse {}))
    }
}
