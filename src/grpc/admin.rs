//! `auth.v1.AdminService`: staff administration. The bearer interceptor
//! has verified the access token; whether its user may administer, and
//! what, is the application's decision ([`crate::accounts::Actor`]).

use tonic::{Request, Response, Status};

use super::{convert::user_id, users::caller};
use crate::{
    accounts::{Accounts, Actor, NewAccount},
    pb::{self, admin_service_server::AdminService},
};

#[derive(Debug, Clone)]
pub(super) struct AdminHandlers {
    pub(super) accounts: Accounts,
}

#[tonic::async_trait]
impl AdminService for AdminHandlers {
    async fn get_user(
        &self,
        mut request: Request<pb::GetUserRequest>,
    ) -> Result<Response<pb::User>, Status> {
        let caller = caller(&mut request)?;
        let id = user_id(request.into_inner().id)?;
        let user = self.accounts.get_user(Actor::Caller(&caller), id).await?;
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
            .set_user_active(Actor::Caller(&caller), id, request.active)
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
            .set_user_staff(Actor::Caller(&caller), id, request.staff)
            .await?;
        Ok(Response::new(user.into()))
    }

    async fn delete_user(
        &self,
        mut request: Request<pb::DeleteUserRequest>,
    ) -> Result<Response<pb::DeleteUserResponse>, Status> {
        let caller = caller(&mut request)?;
        let id = user_id(request.into_inner().id)?;
        self.accounts
            .delete_user(Actor::Caller(&caller), id)
            .await?;
        Ok(Response::new(pb::DeleteUserResponse {}))
    }

    async fn create_user(
        &self,
        mut request: Request<pb::CreateUserRequest>,
    ) -> Result<Response<pb::User>, Status> {
        let caller = caller(&mut request)?;
        // Refused before the fields are looked at: a caller who may not
        // create users learns nothing about what would be valid.
        self.accounts
            .authorize_admin(Actor::Caller(&caller))
            .await?;
        let request = request.into_inner();
        let is_staff = request.is_staff;
        let account = NewAccount::try_from(request)?;
        let user = self
            .accounts
            .create_user(Actor::Caller(&caller), account, is_staff)
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
            .issue_password_reset_token(Actor::Caller(&caller), id)
            .await?;
        Ok(Response::new(issued.into()))
    }
}
