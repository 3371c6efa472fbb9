//! The ids one BatchGetUsers asks for.

/// The most ids one BatchGetUsers takes; ListUsers' largest page is as many
/// users.
pub const MAX_BATCH_IDS: usize = 1000;

/// The ids a BatchGetUsers asks for, in its order, duplicates kept: at most
/// [`MAX_BATCH_IDS`], each one a user could have (above 0).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserIds(Vec<i64>);

impl UserIds {
    /// # Errors
    /// A caller-facing description: too many ids, or one no user can have.
    pub fn parse(ids: Vec<i64>) -> Result<Self, String> {
        if ids.len() > MAX_BATCH_IDS {
            return Err(format!(
                "Ensure this field has no more than {MAX_BATCH_IDS} elements (it has {}).",
                ids.len()
            ));
        }
        if let Some((index, id)) = ids.iter().enumerate().find(|(_, id)| **id <= 0) {
            return Err(format!(
                "ids[{index}] is {id}: a valid user id is required."
            ));
        }
        Ok(Self(ids))
    }

    /// The ids, in request order.
    pub fn into_vec(self) -> Vec<i64> {
        self.0
    }
}
