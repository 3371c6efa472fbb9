//! Calls on behalf of an authenticated user: their own profile, the list
//! of users, and users by id.

use super::Accounts;
use crate::{
    config::ListUsersAccess,
    domain::{Avatar, MAX_BATCH_IDS, User, UserFilter, UserIds},
    error::{AuthFailure, Error},
    tokens::Claims,
};

const DEFAULT_PAGE_SIZE: u64 = 50;
/// ListUsers' largest page: as many users as one BatchGetUsers takes ids.
const MAX_PAGE_SIZE: u64 = MAX_BATCH_IDS as u64;

/// Which page of ListUsers: as many users as `size` (0: the default) that
/// `filter` lets through, after the position `token` stands for ("": the
/// first page; a token works only with the filter it came with).
#[derive(Debug)]
pub struct PageRequest<'a> {
    pub size: i32,
    pub token: &'a str,
    pub filter: UserFilter,
}

/// The answer to a BatchGetUsers: the users found, and the ids not found,
/// each in request order with duplicates repeated.
#[derive(Debug)]
pub struct UserBatch {
    pub users: Vec<User>,
    pub missing_ids: Vec<i64>,
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
        self.check_may_list_users(caller).await?;
        let page_size = match u64::try_from(page.size) {
            Err(_) => return Err(Error::invalid("page_size", "Must not be negative.")),
            Ok(0) => DEFAULT_PAGE_SIZE,
            Ok(n) => n.min(MAX_PAGE_SIZE),
        };
        let after_id = self.page_tokens.decode(page.token, &page.filter)?;

        // One extra row tells whether another page follows.
        let mut users = self
            .users
            .list_after(after_id, &page.filter, page_size + 1)
            .await?;
        let next_page_token = if users.len() as u64 > page_size {
            users.truncate(page_size as usize);
            users
                .last()
                .map(|u| self.page_tokens.encode(u.id, &page.filter))
                .unwrap_or_default()
        } else {
            String::new()
        };
        Ok(Page {
            users,
            next_page_token,
        })
    }

    /// The users with the ids asked for, for the caller: whoever may list
    /// users may fetch them by id, and sees what ListUsers shows (inactive
    /// users included). Fresh cached profiles are used; the others come
    /// from one query, whatever the number of ids.
    ///
    /// # Errors
    /// As [`Self::list_users`].
    pub async fn batch_get_users(&self, caller: &Claims, ids: UserIds) -> Result<UserBatch, Error> {
        self.check_may_list_users(caller).await?;
        let ids = ids.into_vec();
        let mut distinct = ids.clone();
        distinct.sort_unstable();
        distinct.dedup();
        // Sorted by id, to be found by binary search; each slot is emptied
        // when its user moves into the answer.
        let mut found: Vec<(i64, Option<User>)> = if distinct.is_empty() {
            Vec::new()
        } else {
            let users = self.users.get_many(distinct).await?;
            users
                .into_iter()
                .map(|user| (user.id, Some(user)))
                .collect()
        };
        found.sort_unstable_by_key(|(id, _)| *id);
        let mut batch = UserBatch {
            users: Vec::with_capacity(ids.len()),
            missing_ids: Vec::new(),
        };
        // Where each user went in the answer: a duplicate id gets a copy.
        let mut placed = vec![0; found.len()];
        for id in ids {
            let Ok(at) = found.binary_search_by_key(&id, |(id, _)| *id) else {
                batch.missing_ids.push(id);
                continue;
            };
            let (Some((_, slot)), Some(place)) = (found.get_mut(at), placed.get_mut(at)) else {
                continue;
            };
            match slot.take() {
                Some(user) => {
                    *place = batch.users.len();
                    batch.users.push(user);
                }
                None => {
                    if let Some(copy) = batch.users.get(*place).cloned() {
                        batch.users.push(copy);
                    }
                }
            }
        }
        Ok(batch)
    }

    /// Whether the caller may see the list of users: anyone with a valid
    /// token, or staff only (`AUTH_LIST_USERS=staff`), as their current
    /// row (as cached) says, not the token's age-old view.
    async fn check_may_list_users(&self, caller: &Claims) -> Result<(), Error> {
        let me = self.token_user(caller).await?;
        if self.list_users == ListUsersAccess::Staff && !me.is_staff {
            return Err(Error::PermissionDenied(
                "Listing users requires a staff account on this deployment.",
            ));
        }
        Ok(())
    }
}
