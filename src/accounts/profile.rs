//! Calls on behalf of an authenticated user: their own profile, and the
//! list of users.

use super::Accounts;
use crate::{
    config::ListUsersAccess,
    domain::{Avatar, User},
    error::{AuthFailure, Error},
    persistence::users,
    tokens::Claims,
};

const DEFAULT_PAGE_SIZE: u64 = 50;
const MAX_PAGE_SIZE: u64 = 1000;

/// Which page of ListUsers: as many users as `size` (0: the default), after
/// the position `token` stands for ("": the first page).
#[derive(Debug)]
pub struct PageRequest<'a> {
    pub size: i32,
    pub token: &'a str,
}

/// One page of users, and the token of the next page ("" after the last).
#[derive(Debug)]
pub struct Page {
    pub users: Vec<User>,
    pub next_page_token: String,
}

impl Accounts {
    /// The profile of the caller, who holds the access token `caller`.
    ///
    /// # Errors
    /// The user is gone, inactive, or revoked the token.
    pub async fn me(&self, caller: &Claims) -> Result<User, Error> {
        self.token_user(caller).await
    }

    /// Sets (`Some`) or clears (`None`) the caller's avatar.
    ///
    /// # Errors
    /// As [`Self::me`].
    pub async fn update_avatar(
        &self,
        caller: &Claims,
        avatar: Option<Avatar>,
    ) -> Result<User, Error> {
        let user_id = self.token_user(caller).await?.id;
        self.users
            .set_avatar(user_id, avatar)
            .await?
            .ok_or(Error::Unauthenticated(AuthFailure::UserNotFound))
    }

    /// A page of users by id, for the caller.
    ///
    /// # Errors
    /// As [`Self::me`], or not staff where only staff may list; a negative
    /// size or a page token that is not ours.
    pub async fn list_users(&self, caller: &Claims, page: PageRequest<'_>) -> Result<Page, Error> {
        // The caller's current row (as cached), not the token's age-old view.
        let me = self.token_user(caller).await?;
        if self.list_users == ListUsersAccess::Staff && !me.is_staff {
            return Err(Error::PermissionDenied(
                "Listing users requires a staff account on this deployment.",
            ));
        }
        let page_size = match u64::try_from(page.size) {
            Err(_) => return Err(Error::invalid("page_size", "Must not be negative.")),
            Ok(0) => DEFAULT_PAGE_SIZE,
            Ok(n) => n.min(MAX_PAGE_SIZE),
        };
        let after_id = self.page_tokens.decode(page.token)?;

        // One extra row tells whether another page follows.
        let mut rows = users::list_after(&self.db, after_id, page_size + 1).await?;
        let next_page_token = if rows.len() as u64 > page_size {
            rows.truncate(page_size as usize);
            rows.last()
                .map(|u| self.page_tokens.encode(u.id))
                .unwrap_or_default()
        } else {
            String::new()
        };
        Ok(Page {
            users: rows.into_iter().map(User::from).collect(),
            next_page_token,
        })
    }
}
