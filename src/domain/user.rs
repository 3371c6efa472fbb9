use chrono::NaiveDateTime;

/// A user as the API shows it: the public profile, never the password hash.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    pub id: i64,
    pub email: String,
    pub username: String,
    pub avatar: Option<String>,
    pub is_active: bool,
    pub is_staff: bool,
    pub is_superuser: bool,
    pub last_login: Option<NaiveDateTime>,
    pub date_joined: NaiveDateTime,
}
