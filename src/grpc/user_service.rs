//! `auth.v1.UserService`: calls on behalf of the bearer of an access token.
//! [`super::BearerAuth`] has verified the token and left its claims in the
//! request extensions.

use tonic::{Request, Response, Status};

use super::{AppState, record_user};
use crate::{
    config::ListUsersAccess,
    domain::Avatar,
    error::Error,
    pb::{self, user_service_server::UserService},
    persistence::users,
    tokens::Claims,
};

const DEFAULT_PAGE_SIZE: u64 = 50;
const MAX_PAGE_SIZE: u64 = 1000;

#[derive(Debug, Clone)]
pub struct UserApi {
    state: AppState,
}

impl UserApi {
    pub fn new(state: AppState) -> Self {
        Self { state }
    }

    async fn update_avatar(
        &self,
        user_id: i64,
        req: pb::UpdateAvatarRequest,
    ) -> Result<pb::User, Error> {
        let avatar = match req.avatar.trim() {
            "" => None,
            url => Some(Avatar::parse(url).map_err(|e| Error::invalid("avatar", e))?),
        };
        self.state.active_users.get(user_id).await?;
        let db = self.state.db.clone();
        let stored = async move { users::set_avatar(&db, user_id, avatar).await };
        let user = self
            .state
            .active_users
            .write(user_id, stored)
            .await?
            .ok_or_else(Error::user_not_found)?;
        Ok(user.into())
    }

    async fn list_users(
        &self,
        user_id: i64,
        req: pb::ListUsersRequest,
    ) -> Result<pb::ListUsersResponse, Error> {
        // The caller's current row (as cached), not the token's age-old view.
        let me = self.state.active_users.get(user_id).await?;
        if self.state.list_users == ListUsersAccess::Staff && !me.is_staff {
            return Err(Error::PermissionDenied(
                "Listing users requires a staff account on this deployment.",
            ));
        }
        let page_size = match u64::try_from(req.page_size) {
            Err(_) => return Err(Error::invalid("page_size", "Must not be negative.")),
            Ok(0) => DEFAULT_PAGE_SIZE,
            Ok(n) => n.min(MAX_PAGE_SIZE),
        };
        let after_id = self.state.page_tokens.decode(&req.page_token)?;

        // One extra row tells whether another page follows.
        let mut page = users::list_after(&self.state.db, after_id, page_size + 1).await?;
        let next_page_token = if page.len() as u64 > page_size {
            page.truncate(page_size as usize);
            page.last()
                .map(|u| self.state.page_tokens.encode(u.id))
                .unwrap_or_default()
        } else {
            String::new()
        };
        Ok(pb::ListUsersResponse {
            users: page.into_iter().map(Into::into).collect(),
            next_page_token,
        })
    }
}

/// The caller's verified claims, put there by the bearer interceptor.
fn caller<T>(request: &Request<T>) -> Result<i64, Error> {
    let claims = request.extensions().get::<Claims>().ok_or_else(|| {
        Error::Internal(anyhow::anyhow!("UserService reached without BearerAuth"))
    })?;
    record_user(claims.user_id);
    Ok(claims.user_id)
}

#[tonic::async_trait]
impl UserService for UserApi {
    async fn get_me(
        &self,
        request: Request<pb::GetMeRequest>,
    ) -> Result<Response<pb::User>, Status> {
        let user_id = caller(&request)?;
        Ok(Response::new(self.state.active_users.get(user_id).await?))
    }

    async fn update_avatar(
        &self,
        request: Request<pb::UpdateAvatarRequest>,
    ) -> Result<Response<pb::User>, Status> {
        let user_id = caller(&request)?;
        Ok(Response::new(
            self.update_avatar(user_id, request.into_inner()).await?,
        ))
    }

    async fn list_users(
        &self,
        request: Request<pb::ListUsersRequest>,
    ) -> Result<Response<pb::ListUsersResponse>, Status> {
        let user_id = caller(&request)?;
        Ok(Response::new(
            self.list_users(user_id, request.into_inner()).await?,
        ))
    }
}
