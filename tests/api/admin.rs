//! AdminService, AUTH_REGISTRATION=closed and `auth-service user …`: who
//! may do what, and that the tokens of deactivated and deleted users are
//! refused at once here and within the cache TTL on another replica.

use std::time::Duration;

use auth_service::{config::Registration, pb};
use sea_orm::ConnectionTrait;
use tonic::{Code, Status};

use crate::{
    child::{CHEAP_HASHING, auth_service, run, stderr, stdout},
    helpers::{
        PASSWORD, SECRET, TestApp, bearer, expect_code, expect_refused, field_violations,
        on_every_backend,
    },
};

const INACTIVE: (&str, &str) = ("User is inactive", "user_inactive");
const NOT_FOUND: (&str, &str) = ("User not found", "user_not_found");
const REVOKED: (&str, &str) = (
    "The user's tokens have been revoked; log in again.",
    "token_revoked",
);

/// Who calls: staff or superuser flags set in the database. No wait: the
/// service reads them afresh for every administration call.
async fn grant(app: &TestApp, user_id: i64, staff: bool, superuser: bool) {
    app.db
        .execute_unprepared(&format!(
            "UPDATE users SET is_staff = {staff}, is_superuser = {superuser} WHERE id = {user_id}"
        ))
        .await
        .unwrap();
}

/// Registers `username` with the given flags and logs in: (id, access token).
async fn account(app: &TestApp, username: &str, staff: bool, superuser: bool) -> (i64, String) {
    let (user, pair) = app.signed_up(username).await;
    grant(app, user.id, staff, superuser).await;
    (user.id, pair.access)
}

async fn get_user(app: &TestApp, access: &str, id: i64) -> Result<pb::User, Status> {
    app.admin_client()
        .get_user(bearer(pb::GetUserRequest { id }, access))
        .await
        .map(tonic::Response::into_inner)
}

async fn set_active(
    app: &TestApp,
    access: &str,
    id: i64,
    active: bool,
) -> Result<pb::User, Status> {
    app.admin_client()
        .set_user_active(bearer(pb::SetUserActiveRequest { id, active }, access))
        .await
        .map(tonic::Response::into_inner)
}

async fn set_staff(app: &TestApp, access: &str, id: i64, staff: bool) -> Result<pb::User, Status> {
    app.admin_client()
        .set_user_staff(bearer(pb::SetUserStaffRequest { id, staff }, access))
        .await
        .map(tonic::Response::into_inner)
}

async fn delete(app: &TestApp, access: &str, id: i64) -> Result<pb::DeleteUserResponse, Status> {
    app.admin_client()
        .delete_user(bearer(pb::DeleteUserRequest { id }, access))
        .await
        .map(tonic::Response::into_inner)
}

async fn create(
    app: &TestApp,
    access: &str,
    username: &str,
    password: &str,
    is_staff: bool,
) -> Result<pb::User, Status> {
    let request = pb::CreateUserRequest {
        email: format!("{username}@example.com"),
        username: username.into(),
        password: password.into(),
        avatar: None,
        is_staff,
    };
    app.admin_client()
        .create_user(bearer(request, access))
        .await
        .map(tonic::Response::into_inner)
}

pub async fn issue_reset(
    app: &TestApp,
    access: &str,
    id: i64,
) -> Result<pb::PasswordResetToken, Status> {
    app.admin_client()
        .issue_password_reset_token(bearer(pb::IssuePasswordResetTokenRequest { id }, access))
        .await
        .map(tonic::Response::into_inner)
}

#[track_caller]
fn expect_denied<T: std::fmt::Debug>(result: Result<T, Status>, message: &str) {
    let status = expect_code(result, Code::PermissionDenied);
    assert_eq!(status.message(), message, "{status:?}");
}

/// Every use of `pair` is refused: the access token with `access_refusal`
/// (the refresh token's message depends on which check comes first).
async fn assert_locked_out(app: &TestApp, pair: &pb::TokenPair, access_refusal: (&str, &str)) {
    let (message, reason) = access_refusal;
    expect_refused(app.get_me(&pair.access).await, message, reason);
    expect_code(app.refresh(&pair.refresh).await, Code::Unauthenticated);
}

#[tokio::test]
async fn staff_read_users_and_nobody_else_may_call() {
    on_every_backend(async |backend| {
        let app = TestApp::spawn(&backend).await;
        let (_, staff) = account(&app, "sally", true, false).await;
        let (bob_id, bob) = account(&app, "bob", false, false).await;

        let found = get_user(&app, &staff, bob_id).await.unwrap();
        assert_eq!((found.id, found.username.as_str()), (bob_id, "bob"));
        let status = expect_code(get_user(&app, &staff, 987_654).await, Code::NotFound);
        assert_eq!(status.message(), "No user with that id.");
        let status = expect_code(get_user(&app, &staff, 0).await, Code::InvalidArgument);
        assert_eq!(field_violations(&status)[0].0, "id");

        // Not staff: every call is refused, before any work.
        let refusal = "This call requires a staff account.";
        expect_denied(get_user(&app, &bob, bob_id).await, refusal);
        expect_denied(set_active(&app, &bob, bob_id, false).await, refusal);
        expect_denied(delete(&app, &bob, bob_id).await, refusal);
        expect_denied(issue_reset(&app, &bob, bob_id).await, refusal);
        expect_denied(create(&app, &bob, "eve", PASSWORD, false).await, refusal);
        // Even with fields that would be invalid: refused before they are read.
        expect_denied(create(&app, &bob, "eve", "123", false).await, refusal);
        // No token at all.
        let anonymous = app
            .admin_client()
            .get_user(pb::GetUserRequest { id: bob_id })
            .await;
        expect_code(anonymous, Code::Unauthenticated);
        app.stop().await;
    })
    .await;
}

/// "Currently staff": the database row decides, not the token or a cache,
/// so a demotion ends administration with the very next call.
#[tokio::test]
async fn staff_demoted_in_the_database_are_refused_at_once() {
    on_every_backend(async |backend| {
        let app = TestApp::spawn_with(&backend, |s| s.cache.ttl = Duration::from_secs(3600)).await;
        let (staff_id, staff) = account(&app, "sally", true, false).await;
        let (bob_id, _) = account(&app, "bob", false, false).await;
        get_user(&app, &staff, bob_id).await.unwrap();
        grant(&app, staff_id, false, false).await;
        expect_denied(
            get_user(&app, &staff, bob_id).await,
            "This call requires a staff account.",
        );
        app.stop().await;
    })
    .await;
}

#[tokio::test]
async fn deactivation_refuses_every_token_at_once_and_reactivation_revives_none() {
    on_every_backend(async |backend| {
        let app = TestApp::spawn_with(&backend, |s| s.cache.ttl = Duration::from_secs(3600)).await;
        let (_, staff) = account(&app, "sally", true, false).await;
        let (bob, pair) = app.signed_up("bob").await;
        app.get_me(&pair.access).await.unwrap(); // cached
        issue_reset(&app, &staff, bob.id).await.unwrap();

        let user = set_active(&app, &staff, bob.id, false).await.unwrap();
        assert!(!user.is_active);
        assert_locked_out(&app, &pair, INACTIVE).await;
        app.try_login("bob", PASSWORD).await.unwrap_err();
        // A pending reset token is dropped with the rest.
        assert_eq!(app.count("password_reset_tokens").await, 0);

        let user = set_active(&app, &staff, bob.id, true).await.unwrap();
        assert!(user.is_active);
        assert_locked_out(&app, &pair, REVOKED).await;
        let fresh = app.login("bob").await;
        app.get_me(&fresh.access).await.unwrap();
        app.stop().await;
    })
    .await;
}

#[tokio::test]
async fn deletion_refuses_every_token_at_once_and_leaves_nothing_behind() {
    on_every_backend(async |backend| {
        let app = TestApp::spawn_with(&backend, |s| s.cache.ttl = Duration::from_secs(3600)).await;
        let (_, staff) = account(&app, "sally", true, false).await;
        let (bob, pair) = app.signed_up("bob").await;
        app.get_me(&pair.access).await.unwrap(); // cached
        app.try_login("bob", "wrong password").await.unwrap_err(); // a throttle row
        issue_reset(&app, &staff, bob.id).await.unwrap();
        let before = (
            app.count("outstanding_tokens").await,
            app.count("login_attempts").await,
        );

        delete(&app, &staff, bob.id).await.unwrap();
        assert_locked_out(&app, &pair, NOT_FOUND).await;
        expect_code(get_user(&app, &staff, bob.id).await, Code::NotFound);
        expect_code(delete(&app, &staff, bob.id).await, Code::NotFound);
        // Bob's refresh token, throttle row and reset token went with him.
        assert_eq!(app.count("outstanding_tokens").await, before.0 - 1);
        assert_eq!(app.count("login_attempts").await, before.1 - 1);
        assert_eq!(app.count("password_reset_tokens").await, 0);

        // Ids are never reused: bob's tokens cannot come to name another user.
        let next = app.register("bobby").await;
        assert!(next.id > bob.id, "id {} reused after {}", next.id, bob.id);
        expect_refused(app.get_me(&pair.access).await, NOT_FOUND.0, NOT_FOUND.1);
        app.stop().await;
    })
    .await;
}

/// Another replica caches users for up to AUTH_CACHE_TTL: it refuses a
/// deactivated or deleted user's tokens within that, as documented.
#[tokio::test]
async fn another_replica_refuses_deactivated_and_deleted_users_within_the_ttl() {
    on_every_backend(async |backend| {
        let ttl = Duration::from_millis(500);
        let app = TestApp::spawn_with(&backend, |s| s.cache.ttl = ttl).await;
        let replica = TestApp::spawn_on_with(app.database_url(), |s| s.cache.ttl = ttl).await;
        let (_, staff) = account(&app, "sally", true, false).await;
        let (bob, bobs) = app.signed_up("bob").await;
        let (carol, carols) = app.signed_up("carol").await;
        // Cached on the replica.
        replica.get_me(&bobs.access).await.unwrap();
        replica.get_me(&carols.access).await.unwrap();

        set_active(&app, &staff, bob.id, false).await.unwrap();
        delete(&app, &staff, carol.id).await.unwrap();
        tokio::time::sleep(ttl + Duration::from_millis(100)).await;
        // Revoked before deactivated: either refusal is right, within the TTL.
        let status = expect_code(replica.get_me(&bobs.access).await, Code::Unauthenticated);
        assert!(
            [INACTIVE.0, REVOKED.0].contains(&status.message()),
            "{status:?}"
        );
        expect_code(replica.refresh(&bobs.refresh).await, Code::Unauthenticated);
        assert_locked_out(&replica, &carols, NOT_FOUND).await;
        replica.stop().await;
        app.stop().await;
    })
    .await;
}

#[tokio::test]
async fn only_superusers_change_staff_status_and_nobody_their_own() {
    on_every_backend(async |backend| {
        let app = TestApp::spawn(&backend).await;
        let (root_id, root) = account(&app, "root", true, true).await;
        let (staff_id, staff) = account(&app, "sally", true, false).await;
        let (bob_id, _) = account(&app, "bob", false, false).await;

        let only_superusers = "Only a superuser may change staff status.";
        expect_denied(set_staff(&app, &staff, bob_id, true).await, only_superusers);
        expect_denied(
            set_staff(&app, &staff, staff_id, false).await,
            only_superusers,
        );
        let user = set_staff(&app, &root, bob_id, true).await.unwrap();
        assert!(user.is_staff && !user.is_superuser);
        let own = "You cannot change your own staff status.";
        expect_denied(set_staff(&app, &root, root_id, false).await, own);
        let user = set_staff(&app, &root, staff_id, false).await.unwrap();
        assert!(!user.is_staff);
        // Demoted: no longer an administrator.
        expect_denied(
            get_user(&app, &staff, bob_id).await,
            "This call requires a staff account.",
        );
        app.stop().await;
    })
    .await;
}

#[tokio::test]
async fn nobody_deactivates_or_deletes_themselves() {
    on_every_backend(async |backend| {
        let app = TestApp::spawn(&backend).await;
        let (root_id, root) = account(&app, "root", true, true).await;
        expect_denied(
            set_active(&app, &root, root_id, false).await,
            "You cannot deactivate your own account.",
        );
        expect_denied(
            delete(&app, &root, root_id).await,
            "You cannot delete your own account.",
        );
        app.get_me(&root).await.unwrap();
        app.stop().await;
    })
    .await;
}

/// A staff member who is not a superuser cannot lock out or take over an
/// administrator: no deactivation, deletion or reset token for staff or
/// superuser accounts. A superuser can.
#[tokio::test]
async fn staff_who_are_not_superusers_cannot_manage_administrators() {
    on_every_backend(async |backend| {
        let app = TestApp::spawn(&backend).await;
        let (root_id, root) = account(&app, "root", true, true).await;
        let (_, staff) = account(&app, "sally", true, false).await;
        let (other_id, _) = account(&app, "steve", true, false).await;
        let refusal = "Only a superuser may manage a staff or superuser account.";
        for target in [root_id, other_id] {
            expect_denied(set_active(&app, &staff, target, false).await, refusal);
            expect_denied(delete(&app, &staff, target).await, refusal);
            expect_denied(issue_reset(&app, &staff, target).await, refusal);
        }
        get_user(&app, &staff, root_id).await.unwrap();
        issue_reset(&app, &root, other_id).await.unwrap();
        set_active(&app, &root, other_id, false).await.unwrap();
        delete(&app, &root, other_id).await.unwrap();
        app.stop().await;
    })
    .await;
}

/// A reset token that staff issued for an ordinary user does not survive the
/// user's promotion: else it would hand that staff member an administrator.
#[tokio::test]
async fn a_promotion_drops_pending_reset_tokens() {
    on_every_backend(async |backend| {
        let app = TestApp::spawn(&backend).await;
        let (_, root) = account(&app, "root", true, true).await;
        let (_, staff) = account(&app, "sally", true, false).await;
        let (target, _) = account(&app, "tom", false, false).await;
        issue_reset(&app, &staff, target).await.unwrap();
        assert_eq!(app.count("password_reset_tokens").await, 1);
        set_staff(&app, &root, target, true).await.unwrap();
        assert_eq!(app.count("password_reset_tokens").await, 0);
        app.stop().await;
    })
    .await;
}

/// With AUTH_REGISTRATION=closed, only staff create users; staff accounts
/// need a superuser; Register's rules apply to CreateUser.
#[tokio::test]
async fn registration_closed_leaves_account_creation_to_staff() {
    on_every_backend(async |backend| {
        let open = TestApp::spawn(&backend).await;
        let (_, root) = account(&open, "root", true, true).await;
        let (_, staff) = account(&open, "sally", true, false).await;
        let app = TestApp::spawn_on_with(open.database_url(), |s| {
            s.accounts.registration = Registration::Closed;
        })
        .await;

        expect_denied(
            app.try_register("eve", "eve@example.com", PASSWORD).await,
            "Registration is closed; ask an administrator for an account.",
        );
        let user = create(&app, &staff, "dave", PASSWORD, false).await.unwrap();
        assert!(user.is_active && !user.is_staff && !user.is_superuser);
        app.login("dave").await;
        expect_denied(
            create(&app, &staff, "steve", PASSWORD, true).await,
            "Only a superuser may create staff accounts.",
        );
        let user = create(&app, &root, "steve", PASSWORD, true).await.unwrap();
        assert!(user.is_staff && !user.is_superuser);

        expect_code(
            create(&app, &staff, "dave", PASSWORD, false).await,
            Code::AlreadyExists,
        );
        let bad = pb::CreateUserRequest {
            email: "not an email".into(),
            username: "weak".into(),
            password: "123".into(),
            avatar: None,
            is_staff: false,
        };
        let status = expect_code(
            app.admin_client().create_user(bearer(bad, &staff)).await,
            Code::InvalidArgument,
        );
        let fields: Vec<String> = field_violations(&status).into_iter().map(|v| v.0).collect();
        assert!(fields.contains(&"email".to_owned()), "{status:?}");
        assert!(fields.contains(&"password".to_owned()), "{status:?}");
        app.stop().await;
        open.stop().await;
    })
    .await;
}

/// `auth-service user …` on `url`: its output.
pub fn user_command(url: &str, args: &[&str], env: &[(&str, &str)]) -> std::process::Output {
    let mut command = auth_service(&[&["user"], args].concat());
    command
        .env("AUTH_DATABASE_URL", url)
        .env("AUTH_JWT_SECRET", SECRET)
        .env("RUST_LOG", "off")
        .envs(CHEAP_HASHING)
        .envs(env.iter().copied());
    run(&mut command)
}

#[track_caller]
fn succeeded(output: &std::process::Output, says: &str) {
    assert!(output.status.success(), "{}", stderr(output));
    let out = stdout(output);
    assert_eq!(out.lines().count(), 1, "{out}");
    assert!(out.contains(says), "{out}");
}

/// The operator's commands, through the real binary: each does what the
/// RPC does, revoking tokens where it would.
#[tokio::test]
async fn the_user_commands_administer_by_username() {
    on_every_backend(async |backend| {
        let app = TestApp::spawn(&backend).await;
        let url = app.database_url().to_owned();
        let (bob, pair) = app.signed_up("bob").await;

        // Each command is another process: this server sees its writes
        // within its cache TTL, as any change made elsewhere.
        let output = user_command(&url, &["set-superuser", "Bob", "true"], &[]);
        succeeded(&output, "is a superuser (and staff) now");
        tokio::time::sleep(app.cache_ttl).await;
        let me = app.get_me(&pair.access).await.unwrap();
        assert!(me.is_superuser && me.is_staff);
        succeeded(
            &user_command(&url, &["set-staff", "bob", "false"], &[]),
            "is no longer staff",
        );
        succeeded(
            &user_command(&url, &["set-superuser", "bob", "false"], &[]),
            "is no longer a superuser",
        );

        let output = user_command(&url, &["set-active", "bob", "false"], &[]);
        succeeded(&output, "deactivated");
        tokio::time::sleep(app.cache_ttl).await;
        expect_code(app.get_me(&pair.access).await, Code::Unauthenticated);
        succeeded(
            &user_command(&url, &["set-active", "bob", "true"], &[]),
            "activated",
        );
        // Reactivation revives no token.
        tokio::time::sleep(app.cache_ttl).await;
        expect_refused(app.get_me(&pair.access).await, REVOKED.0, REVOKED.1);

        let weak = user_command(
            &url,
            &["set-password", "bob"],
            &[("AUTH_USER_PASSWORD", "bob")],
        );
        assert_eq!(weak.status.code(), Some(1));
        assert_eq!(stderr(&weak).lines().count(), 1, "{}", stderr(&weak));
        assert!(stderr(&weak).contains("password:"), "{}", stderr(&weak));
        let new_password = "a brand new passphrase";
        let output = user_command(
            &url,
            &["set-password", "bob"],
            &[("AUTH_USER_PASSWORD", new_password)],
        );
        succeeded(&output, "has a new password");
        app.try_login("bob", new_password).await.unwrap();

        let unknown = user_command(&url, &["delete", "nobody"], &[]);
        assert_eq!(unknown.status.code(), Some(1));
        assert_eq!(
            stderr(&unknown).trim(),
            "auth-service: no user named \"nobody\""
        );
        succeeded(&user_command(&url, &["delete", "bob"], &[]), "deleted");
        tokio::time::sleep(app.cache_ttl).await;
        expect_code(app.get_me(&pair.access).await, Code::Unauthenticated);
        assert!(
            auth_service::persistence::users::find_by_id(&app.db, bob.id)
                .await
                .unwrap()
                .is_none()
        );
        app.stop().await;
    })
    .await;
}
