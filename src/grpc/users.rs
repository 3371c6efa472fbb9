//! `auth.v1.UserService`: calls on behalf of the bearer of an access token.
//! The bearer interceptor has verified the token and left its claims in the
//! request extensions.

use tonic::{Request, Response, Status};

use super::convert::avatar_update;
use crate::{
    accounts::{Accounts, PageRequest},
    error::Error,
    pb::{self, user_service_server::UserService},
    telemetry::record_user,
    tokens::Claims,
};

#[derive(Debug, Clone)]
pub(super) struct UserHandlers {
    pub(super) accounts: Accounts,
}

/// The caller's user id, from the claims the bearer interceptor verified;
/// recorded on the call's log line.
fn caller<T>(request: &Request<T>) -> Result<i64, Error> {
    let claims = request
        .extensions()
        .get::<Claims>()
        .ok_or_else(|| Error::internal("UserService reached without BearerAuth"))?;
    record_user(claims.user_id);
    Ok(claims.user_id)
}

#[tonic::async_trait]
impl UserService for UserHandlers {
    async fn get_me(
        &self,
        request: Request<pb::GetMeRequest>,
    ) -> Result<Response<pb::User>, Status> {
        let user = self.accounts.me(caller(&request)?).await?;
        Ok(Response::new(user.into()))
    }

    async fn update_avatar(
        &self,
        request: Request<pb::UpdateAvatarRequest>,
    ) -> Result<Response<pb::User>, Status> {
        let user_id = caller(&request)?;
        let avatar = avatar_update(&request.into_inner())?;
        let user = self.accounts.update_avatar(user_id, avatar).await?;
        Ok(Response::new(user.into()))
    }

    async fn list_users(
        &self,
        request: Request<pb::ListUsersRequest>,
    ) -> Result<Response<pb::ListUsersResponse>, Status> {
        let user_id = caller(&request)?;
        let request = request.into_inner();
        let page = PageRequest {
            size: request.page_size,
            token: &request.page_token,
        };
        let page = self.accounts.list_users(user_id, page).await?;
        Ok(Response::new(page.into()))
    }
}
