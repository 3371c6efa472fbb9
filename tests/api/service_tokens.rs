//! Service tokens at this service (issue 15, part C2): AdminService by
//! service token (`auth.admin`, `auth.admin.read`), with the rights of a
//! staff member who is not a superuser; UserService refusing them;
//! VerifyToken reporting them; and their revocation (deactivation,
//! deletion, removed secret, removed scope), here at once and on another
//! replica within the cache TTL — on every configured backend.

use std::time::Duration;

use auth_service::{
    pb,
    tokens::{TokenCodec, unix_now},
};
use sea_orm::ConnectionTrait;
use tonic::{Code, Status};
use tonic_types::StatusExt;

use crate::{
    helpers::{SECRET, TestApp, bearer, expect_code, expect_refused, on_every_backend},
    service_accounts::{Admin, Answer, admin},
    service_grant::{assertion_claims, sign, with_assertion, with_secret},
};

const WRONG_TYPE: (&str, &str) = ("Token has wrong type", "token_not_valid");
const CREDENTIAL_REVOKED: (&str, &str) = (
    "The credential that obtained this token has been removed.",
    "credential_revoked",
);
const INACTIVE: (&str, &str) = ("Service account is inactive", "service_account_inactive");
const TOKENS_REVOKED: (&str, &str) = (
    "The service account's tokens have been revoked; obtain a new one.",
    "token_revoked",
);
const SCOPE_REVOKED: (&str, &str) = (
    "The token carries a scope its service account no longer has; obtain a new one.",
    "scope_revoked",
);

/// A service token for the account `client_id` with `scopes`, obtained
/// from the real grant (`AuthService/ObtainServiceToken`) with `secret`.
/// The one place this file's tokens come from; [`token_with_key`] is its
/// counterpart for the grant with an assertion, and
/// [`token_with_scopes_never_granted`] the one local signer, for the one
/// token the grant cannot issue.
async fn service_token(
    app: &TestApp,
    client_id: &str,
    secret: &pb::AddServiceAccountSecretResponse,
    scopes: &[&str],
) -> String {
    with_secret(app, client_id, &secret.secret, scopes)
        .await
        .unwrap_or_else(|e| panic!("grant for {client_id} with {scopes:?}: {e:?}"))
        .access
}

/// A service token obtained by the real grant with an assertion signed
/// with the private test key `private_key` (registered as `kid`), carrying
/// every scope the account holds.
async fn token_with_key(app: &TestApp, client_id: &str, kid: &str, private_key: &str) -> String {
    let assertion = sign(private_key, Some(kid), &assertion_claims(client_id));
    with_assertion(app, &assertion)
        .await
        .unwrap_or_else(|e| panic!("grant for {client_id} with key {kid}: {e:?}"))
        .access
}

/// A token carrying `scopes` that the grant would refuse to issue (some
/// were never allowed to the account), signed here with the harness's key
/// (`SECRET`, the servers' HS256 key) and the secret's id as `cid`, exactly
/// as the grant signs: the only way to hold such a token is to have
/// obtained it before the account was narrowed, or to forge it with our key.
fn token_with_scopes_never_granted(
    client_id: &str,
    secret: &pb::AddServiceAccountSecretResponse,
    scopes: &[&str],
) -> String {
    let codec = TokenCodec::new(
        SECRET.as_bytes(),
        Duration::from_secs(60),
        Duration::from_secs(600),
    )
    .unwrap();
    codec
        .issue_service(client_id, scopes, &secret.secret_id, unix_now())
        .unwrap()
        .token
}

/// A service account made by a superuser, with a secret.
struct Service {
    account: pb::ServiceAccount,
    secret: pb::AddServiceAccountSecretResponse,
}

impl Service {
    async fn create(root: &Admin<'_>, name: &str, scopes: &[&str]) -> Service {
        let account = root.create(name, scopes).await.unwrap();
        let secret = root.add_secret(account.id).await.unwrap();
        Service { account, secret }
    }

    /// A token of this account's with `scopes`.
    async fn token(&self, app: &TestApp, scopes: &[&str]) -> String {
        service_token(app, &self.account.name, &self.secret, scopes).await
    }

    /// AdminService as the bearer of a token with `scopes`.
    async fn admin<'a>(&self, app: &'a TestApp, scopes: &[&str]) -> Admin<'a> {
        Admin {
            app,
            access: self.token(app, scopes).await,
        }
    }
}

async fn get_user(app: &TestApp, token: &str, id: i64) -> Answer<pb::User> {
    app.admin_client()
        .get_user(bearer(pb::GetUserRequest { id }, token))
        .await
        .map(tonic::Response::into_inner)
}

async fn set_user_active(app: &TestApp, token: &str, id: i64, active: bool) -> Answer<pb::User> {
    app.admin_client()
        .set_user_active(bearer(pb::SetUserActiveRequest { id, active }, token))
        .await
        .map(tonic::Response::into_inner)
}

async fn set_user_staff(app: &TestApp, token: &str, id: i64, staff: bool) -> Answer<pb::User> {
    app.admin_client()
        .set_user_staff(bearer(pb::SetUserStaffRequest { id, staff }, token))
        .await
        .map(tonic::Response::into_inner)
}

async fn create_user(app: &TestApp, token: &str, name: &str, staff: bool) -> Answer<pb::User> {
    let request = pb::CreateUserRequest {
        email: format!("{name}@example.com"),
        username: name.into(),
        password: "a long enough passphrase".into(),
        avatar: None,
        is_staff: staff,
    };
    app.admin_client()
        .create_user(bearer(request, token))
        .await
        .map(tonic::Response::into_inner)
}

async fn reset_token(app: &TestApp, token: &str, id: i64) -> Answer<pb::PasswordResetToken> {
    let request = pb::IssuePasswordResetTokenRequest { id };
    app.admin_client()
        .issue_password_reset_token(bearer(request, token))
        .await
        .map(tonic::Response::into_inner)
}

async fn delete_user(app: &TestApp, token: &str, id: i64) -> Answer<pb::DeleteUserResponse> {
    app.admin_client()
        .delete_user(bearer(pb::DeleteUserRequest { id }, token))
        .await
        .map(tonic::Response::into_inner)
}

/// PERMISSION_DENIED naming `scope`, as the verifier crate answers it.
#[track_caller]
fn expect_insufficient_scope<T: std::fmt::Debug>(result: Answer<T>, scope: &str) {
    let status = expect_code(result, Code::PermissionDenied);
    assert_eq!(
        status.message(),
        format!("The token lacks the required scope: {scope}"),
    );
    let details = status.get_error_details();
    let info = details.error_info().expect("an ErrorInfo");
    assert_eq!(info.reason, "insufficient_scope", "{status:?}");
    assert_eq!(
        info.metadata.get("scope").map(String::as_str),
        Some(scope),
        "{status:?}"
    );
}

#[track_caller]
fn expect_denied<T: std::fmt::Debug>(result: Answer<T>, says: &str) {
    let status: Status = expect_code(result, Code::PermissionDenied);
    assert!(status.message().contains(says), "{status:?}");
}

#[tokio::test]
async fn a_token_from_the_grant_administers_and_is_reported_by_verify_token() {
    on_every_backend(async |backend| {
        let app = TestApp::spawn(&backend).await;
        let root = admin(&app, "root", true, true).await;
        let ops = Service::create(&root, "ops", &["auth.admin.read", "orders.read"]).await;
        let granted = with_secret(&app, "ops", &ops.secret.secret, &["auth.admin.read"])
            .await
            .unwrap();
        assert_eq!(granted.scopes, ["auth.admin.read"]);
        let root_id = app.verify(&root.access).await.unwrap().user_id;
        let read = get_user(&app, &granted.access, root_id).await;
        assert_eq!(read.map(|u| u.username).ok().as_deref(), Some("root"));
        expect_code(
            set_user_active(&app, &granted.access, root_id, false).await,
            Code::PermissionDenied,
        );
        let verified = app.verify(&granted.access).await.unwrap();
        assert_eq!(
            (verified.token_type.as_str(), verified.client_id.as_str()),
            ("service", "ops")
        );
        assert_eq!(verified.scopes, ["auth.admin.read"]);
        app.stop().await;
    })
    .await;
}

#[tokio::test]
async fn an_admin_scope_token_may_make_every_admin_call() {
    on_every_backend(async |backend| {
        let app = TestApp::spawn(&backend).await;
        let root = admin(&app, "root", true, true).await;
        let ops = Service::create(&root, "ops", &["auth.admin"]).await;
        let as_ops = ops.admin(&app, &["auth.admin"]).await;
        let token = as_ops.access.as_str();

        // Users.
        let user = create_user(&app, token, "made-by-ops", false)
            .await
            .unwrap();
        assert_eq!(get_user(&app, token, user.id).await.unwrap().id, user.id);
        let changed = set_user_active(&app, token, user.id, false).await.unwrap();
        assert!(!changed.is_active);
        let issued = reset_token(&app, token, user.id).await.unwrap();
        assert!(!issued.token.is_empty());
        delete_user(&app, token, user.id).await.unwrap();
        expect_code(get_user(&app, token, user.id).await, Code::NotFound);

        // Service accounts without `auth.` scopes.
        let billing = as_ops.create("billing", &["orders.read"]).await.unwrap();
        assert_eq!(as_ops.get(billing.id).await.unwrap().name, "billing");
        let listed = as_ops.list(0, "").await.unwrap();
        let names: Vec<&str> = listed
            .service_accounts
            .iter()
            .map(|a| a.name.as_str())
            .collect();
        assert_eq!(names, ["ops", "billing"]);
        let rescoped = as_ops
            .set_scopes(billing.id, &["orders.read", "orders.write"])
            .await
            .unwrap();
        assert_eq!(rescoped.scopes, ["orders.read", "orders.write"]);
        let secret = as_ops.add_secret(billing.id).await.unwrap();
        as_ops
            .remove_secret(billing.id, &secret.secret_id)
            .await
            .unwrap();
        let pem = std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/keys/service-ed25519.pub.pem"
        ))
        .unwrap();
        let key = as_ops.add_key(billing.id, &pem).await.unwrap();
        as_ops.remove_key(billing.id, &key.kid).await.unwrap();
        let inactive = as_ops.set_active(billing.id, false).await.unwrap();
        assert!(!inactive.is_active);
        as_ops.delete(billing.id).await.unwrap();
        expect_code(as_ops.get(billing.id).await, Code::NotFound);
        app.stop().await;
    })
    .await;
}

/// A service token acts as a staff member who is not a superuser.
#[tokio::test]
async fn an_admin_service_token_has_a_non_superuser_staff_members_rights() {
    on_every_backend(async |backend| {
        let app = TestApp::spawn(&backend).await;
        let root = admin(&app, "root", true, true).await;
        let ops = Service::create(&root, "ops", &["auth.admin"]).await;
        let auditor = root.create("auditor", &["auth.admin.read"]).await.unwrap();
        let as_ops = ops.admin(&app, &["auth.admin"]).await;
        let token = as_ops.access.as_str();
        let (staff, _) = app.signed_up("staffer").await;
        let (plain, _) = app.signed_up("plain").await;
        app.db
            .execute_unprepared(&format!(
                "UPDATE users SET is_staff = TRUE WHERE id = {}",
                staff.id
            ))
            .await
            .unwrap();

        let protected = "Only a superuser may manage a staff or superuser account.";
        expect_denied(
            set_user_active(&app, token, staff.id, false).await,
            protected,
        );
        expect_denied(delete_user(&app, token, staff.id).await, protected);
        expect_denied(reset_token(&app, token, staff.id).await, protected);
        let staff_flag = "Only a superuser may change staff status.";
        expect_denied(
            set_user_staff(&app, token, plain.id, true).await,
            staff_flag,
        );
        expect_denied(
            create_user(&app, token, "new-staff", true).await,
            "Only a superuser may create staff accounts.",
        );
        let reserved = "Only a superuser may grant scopes starting with \"auth.\".";
        expect_denied(as_ops.create("sneaky", &["auth.admin"]).await, reserved);
        let billing = as_ops.create("billing", &["orders.read"]).await.unwrap();
        expect_denied(
            as_ops.set_scopes(billing.id, &["auth.admin.read"]).await,
            reserved,
        );
        // Accounts holding `auth.` scopes, its own included.
        let protected =
            "Only a superuser may manage a service account that holds \"auth.\" scopes.";
        for id in [auditor.id, ops.account.id] {
            expect_denied(as_ops.set_active(id, false).await, protected);
            expect_denied(as_ops.add_secret(id).await, protected);
            expect_denied(as_ops.delete(id).await, protected);
        }
        // An ordinary user is within its rights.
        set_user_active(&app, token, plain.id, false).await.unwrap();
        app.stop().await;
    })
    .await;
}

#[tokio::test]
async fn a_read_scope_token_may_only_read() {
    on_every_backend(async |backend| {
        let app = TestApp::spawn(&backend).await;
        let root = admin(&app, "root", true, true).await;
        let auditor = Service::create(&root, "auditor", &["auth.admin.read"]).await;
        let as_auditor = auditor.admin(&app, &["auth.admin.read"]).await;
        let token = as_auditor.access.as_str();
        let (user, _) = app.signed_up("reader-target").await;

        assert_eq!(get_user(&app, token, user.id).await.unwrap().id, user.id);
        let found = as_auditor.get(auditor.account.id).await.unwrap();
        assert_eq!(found.name, "auditor");
        let listed = as_auditor.list(0, "").await.unwrap();
        assert_eq!(listed.service_accounts.len(), 1);

        expect_insufficient_scope(
            set_user_active(&app, token, user.id, false).await,
            "auth.admin",
        );
        expect_insufficient_scope(delete_user(&app, token, user.id).await, "auth.admin");
        expect_insufficient_scope(reset_token(&app, token, user.id).await, "auth.admin");
        expect_insufficient_scope(create_user(&app, token, "nope", false).await, "auth.admin");
        expect_insufficient_scope(as_auditor.create("nope", &[]).await, "auth.admin");
        expect_insufficient_scope(
            as_auditor.add_secret(auditor.account.id).await,
            "auth.admin",
        );
        // Nothing changed.
        assert!(get_user(&app, token, user.id).await.unwrap().is_active);
        app.stop().await;
    })
    .await;
}

#[tokio::test]
async fn a_token_without_an_admin_scope_is_refused_naming_the_scope() {
    on_every_backend(async |backend| {
        let app = TestApp::spawn(&backend).await;
        let root = admin(&app, "root", true, true).await;
        // The account may hold auth.admin; this token does not carry it.
        let ops = Service::create(&root, "ops", &["auth.admin", "orders.read"]).await;
        let token = ops.token(&app, &["orders.read"]).await;
        let (user, _) = app.signed_up("target").await;
        expect_insufficient_scope(get_user(&app, &token, user.id).await, "auth.admin.read");
        expect_insufficient_scope(
            set_user_active(&app, &token, user.id, false).await,
            "auth.admin",
        );
        // A token with no scope at all: the grant gives one to an account
        // allowed none (empty scopes ask for every allowed one).
        let bare = Service::create(&root, "bare", &[]).await;
        let none = bare.token(&app, &[]).await;
        assert_eq!(crate::helpers::claims(&none)["scope"], "");
        expect_insufficient_scope(get_user(&app, &none, user.id).await, "auth.admin.read");
        app.stop().await;
    })
    .await;
}

#[tokio::test]
async fn user_service_refuses_service_tokens_and_admin_service_refresh_tokens() {
    on_every_backend(async |backend| {
        let app = TestApp::spawn(&backend).await;
        let root = admin(&app, "root", true, true).await;
        let ops = Service::create(&root, "ops", &["auth.admin"]).await;
        let token = ops.token(&app, &["auth.admin"]).await;
        expect_refused(app.get_me(&token).await, WRONG_TYPE.0, WRONG_TYPE.1);
        // AdminService still takes a user's access token only, not a refresh token.
        let (user, pair) = app.signed_up("someone").await;
        expect_refused(
            get_user(&app, &pair.refresh, user.id).await,
            WRONG_TYPE.0,
            WRONG_TYPE.1,
        );
        // And the service token works where it should.
        get_user(&app, &token, user.id).await.unwrap();
        app.stop().await;
    })
    .await;
}

#[tokio::test]
async fn verify_token_reports_service_tokens() {
    on_every_backend(async |backend| {
        let app = TestApp::spawn(&backend).await;
        let root = admin(&app, "root", true, true).await;
        let billing = Service::create(&root, "billing", &["orders.read", "orders.write"]).await;
        let token = billing.token(&app, &["orders.write", "orders.read"]).await;
        let verified = app.verify(&token).await.unwrap();
        assert_eq!(verified.token_type, "service");
        assert_eq!(verified.user_id, 0);
        assert_eq!(verified.client_id, "billing");
        assert_eq!(verified.scopes, ["orders.read", "orders.write"]);
        let exp = crate::helpers::claims(&token)["exp"].as_i64().unwrap();
        assert_eq!(verified.expires_at.map(|t| t.seconds), Some(exp));

        let (user, pair) = app.signed_up("person").await;
        let verified = app.verify(&pair.access).await.unwrap();
        assert_eq!(
            (verified.token_type.as_str(), verified.user_id),
            ("access", user.id)
        );
        assert!(verified.client_id.is_empty() && verified.scopes.is_empty());

        // The same revocation check as AdminService.
        root.remove_secret(billing.account.id, &billing.secret.secret_id)
            .await
            .unwrap();
        expect_refused(
            app.verify(&token).await,
            CREDENTIAL_REVOKED.0,
            CREDENTIAL_REVOKED.1,
        );
        app.stop().await;
    })
    .await;
}

/// A refused token, at AdminService and at VerifyToken alike.
async fn expect_token_refused(app: &TestApp, token: &str, (message, reason): (&str, &str)) {
    expect_refused(get_user(app, token, 1).await, message, reason);
    expect_refused(app.verify(token).await, message, reason);
}

#[tokio::test]
async fn deactivating_deleting_or_removing_the_secret_refuses_tokens_at_once() {
    on_every_backend(async |backend| {
        let app = TestApp::spawn(&backend).await;
        let root = admin(&app, "root", true, true).await;
        let scopes = ["auth.admin.read"];
        let mut tokens = Vec::new();
        for name in ["deactivated", "deleted", "unsecreted"] {
            let service = Service::create(&root, name, &scopes).await;
            let token = service.token(&app, &scopes).await;
            // Accepted, and so cached.
            get_user(&app, &token, 1).await.unwrap();
            app.verify(&token).await.unwrap();
            tokens.push((service, token));
        }
        let [(deactivated, t1), (deleted, t2), (unsecreted, t3)] = &tokens[..] else {
            unreachable!()
        };
        root.set_active(deactivated.account.id, false)
            .await
            .unwrap();
        root.delete(deleted.account.id).await.unwrap();
        root.remove_secret(unsecreted.account.id, &unsecreted.secret.secret_id)
            .await
            .unwrap();
        expect_token_refused(&app, t1, INACTIVE).await;
        expect_token_refused(&app, t2, CREDENTIAL_REVOKED).await;
        expect_token_refused(&app, t3, CREDENTIAL_REVOKED).await;
        app.stop().await;
    })
    .await;
}

/// Another replica caches the account for up to AUTH_CACHE_TTL: each
/// revocation reaches it within that.
#[tokio::test]
async fn another_replica_refuses_revoked_service_tokens_within_the_cache_ttl() {
    on_every_backend(async |backend| {
        let ttl = Duration::from_millis(500);
        let app = TestApp::spawn_with(&backend, |s| s.cache.ttl = ttl).await;
        let replica = TestApp::spawn_on_with(app.database_url(), |s| s.cache.ttl = ttl).await;
        let root = admin(&app, "root", true, true).await;
        let scopes = ["auth.admin.read", "orders.read"];
        let mut tokens = Vec::new();
        for name in ["deactivated", "deleted", "unsecreted", "rescoped"] {
            let service = Service::create(&root, name, &scopes).await;
            let token = service.token(&app, &scopes).await;
            // Cached on the replica.
            get_user(&replica, &token, 1).await.unwrap();
            replica.verify(&token).await.unwrap();
            tokens.push((service, token));
        }
        let [
            (deactivated, t1),
            (deleted, t2),
            (unsecreted, t3),
            (rescoped, t4),
        ] = &tokens[..]
        else {
            unreachable!()
        };
        root.set_active(deactivated.account.id, false)
            .await
            .unwrap();
        root.delete(deleted.account.id).await.unwrap();
        root.remove_secret(unsecreted.account.id, &unsecreted.secret.secret_id)
            .await
            .unwrap();
        root.set_scopes(rescoped.account.id, &["auth.admin.read"])
            .await
            .unwrap();
        let expected = [
            (t1, INACTIVE),
            (t2, CREDENTIAL_REVOKED),
            (t3, CREDENTIAL_REVOKED),
            (t4, SCOPE_REVOKED),
        ];
        for (token, refusal) in expected {
            expect_token_refused(&app, token, refusal).await;
        }
        tokio::time::sleep(ttl + Duration::from_millis(100)).await;
        for (token, refusal) in expected {
            expect_token_refused(&replica, token, refusal).await;
        }
        replica.stop().await;
        app.stop().await;
    })
    .await;
}

/// Sleeps into the next second: a token issued after this has a later
/// `iat` (whole seconds) than anything that happened before.
async fn next_second() {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap();
    let into_second = Duration::from_nanos(u64::from(now.subsec_nanos()));
    tokio::time::sleep(Duration::from_secs(1) - into_second + Duration::from_millis(20)).await;
}

#[tokio::test]
async fn reactivation_does_not_revive_tokens_issued_before_the_deactivation() {
    on_every_backend(async |backend| {
        let app = TestApp::spawn(&backend).await;
        let root = admin(&app, "root", true, true).await;
        let scopes = ["auth.admin.read"];
        let service = Service::create(&root, "flaky", &scopes).await;
        let old = service.token(&app, &scopes).await;
        get_user(&app, &old, 1).await.unwrap();
        root.set_active(service.account.id, false).await.unwrap();
        expect_token_refused(&app, &old, INACTIVE).await;
        root.set_active(service.account.id, true).await.unwrap();
        expect_token_refused(&app, &old, TOKENS_REVOKED).await;
        // A token obtained after the deactivation's second works.
        next_second().await;
        let new = service.token(&app, &scopes).await;
        get_user(&app, &new, 1).await.unwrap();
        app.verify(&new).await.unwrap();
        app.stop().await;
    })
    .await;
}

#[tokio::test]
async fn reactivation_revokes_tokens_a_stale_replica_granted_while_inactive() {
    on_every_backend(async |backend| {
        let app = TestApp::spawn(&backend).await;
        // A replica that believes what it read for a minute.
        let stale = TestApp::spawn_on_with(app.database_url(), |s| {
            s.cache.ttl = Duration::from_secs(60);
        })
        .await;
        let root = admin(&app, "root", true, true).await;
        let scopes = ["auth.admin.read"];
        let service = Service::create(&root, "lagging", &scopes).await;
        service.token(&stale, &scopes).await;
        root.set_active(service.account.id, false).await.unwrap();
        next_second().await;
        let granted_while_inactive = service.token(&stale, &scopes).await;
        next_second().await;
        root.set_active(service.account.id, true).await.unwrap();
        expect_token_refused(&app, &granted_while_inactive, TOKENS_REVOKED).await;
        let new = service.token(&app, &scopes).await;
        get_user(&app, &new, 1).await.unwrap();
        stale.stop().await;
        app.stop().await;
    })
    .await;
}

#[tokio::test]
async fn a_scope_taken_away_stops_working_in_tokens_that_carry_it() {
    on_every_backend(async |backend| {
        let app = TestApp::spawn(&backend).await;
        let root = admin(&app, "root", true, true).await;
        // Narrowed by removal alone: adding an `auth.` scope to an account
        // holding credentials is a matter of its own.
        let held = ["auth.admin", "auth.admin.read", "orders.read"];
        let service = Service::create(&root, "shrinking", &held).await;
        let admin_token = service.token(&app, &["auth.admin"]).await;
        let orders_token = service.token(&app, &["orders.read"]).await;
        get_user(&app, &admin_token, 1).await.unwrap();
        app.verify(&orders_token).await.unwrap();

        root.set_scopes(service.account.id, &["auth.admin.read", "orders.read"])
            .await
            .unwrap();
        expect_token_refused(&app, &admin_token, SCOPE_REVOKED).await;
        // A token carrying only scopes still allowed stands.
        app.verify(&orders_token).await.unwrap();
        // A scope never allowed (a token issued before the account was
        // narrowed, or forged with our key) is refused the same way.
        let wider = token_with_scopes_never_granted(
            &service.account.name,
            &service.secret,
            &["orders.read", "orders.write"],
        );
        expect_refused(app.verify(&wider).await, SCOPE_REVOKED.0, SCOPE_REVOKED.1);
        app.stop().await;
    })
    .await;
}

fn public_key(file: &str) -> String {
    let path = format!("{}/tests/keys/{file}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// A token obtained with an assertion names the key that signed it as its
/// credential: removing that key refuses the token at once, and only it.
#[tokio::test]
async fn a_token_obtained_with_a_key_stops_working_when_the_key_is_removed() {
    on_every_backend(async |backend| {
        let app = TestApp::spawn(&backend).await;
        let root = admin(&app, "root", true, true).await;
        let scopes = ["auth.admin.read"];
        let signer = Service::create(&root, "signer", &scopes).await;
        let id = signer.account.id;
        let ed25519 = root
            .add_key(id, &public_key("service-ed25519.pub.pem"))
            .await
            .unwrap()
            .kid;
        let p256 = root
            .add_key(id, &public_key("service-p256.pub.pem"))
            .await
            .unwrap()
            .kid;
        let doomed = token_with_key(&app, "signer", &ed25519, "service-ed25519.pem").await;
        assert_eq!(
            crate::helpers::claims(&doomed)["cid"],
            ed25519.as_str(),
            "the key is the token's credential"
        );
        let by_other_key = token_with_key(&app, "signer", &p256, "service-p256.pem").await;
        let by_secret = signer.token(&app, &scopes).await;
        // Accepted, and so cached.
        for token in [&doomed, &by_other_key, &by_secret] {
            get_user(&app, token, 1).await.unwrap();
            app.verify(token).await.unwrap();
        }

        root.remove_key(id, &ed25519).await.unwrap();
        expect_token_refused(&app, &doomed, CREDENTIAL_REVOKED).await;
        // The account's other credentials' tokens stand.
        for token in [&by_other_key, &by_secret] {
            get_user(&app, token, 1).await.unwrap();
            app.verify(token).await.unwrap();
        }
        app.stop().await;
    })
    .await;
}

/// RefreshToken and Logout take a user's refresh token only: a service
/// token is refused as an access token is, and nothing is written (with
/// rotation on, so that a refresh that got through would write).
#[tokio::test]
async fn refresh_and_logout_refuse_a_service_token_and_write_nothing() {
    on_every_backend(async |backend| {
        let app = TestApp::spawn_with(&backend, |s| {
            s.tokens.policy.rotate_refresh_tokens = true;
            s.tokens.policy.blacklist_after_rotation = true;
        })
        .await;
        let root = admin(&app, "root", true, true).await;
        let ops = Service::create(&root, "ops", &["auth.admin"]).await;
        let token = ops.token(&app, &["auth.admin"]).await;
        let tables = ["blacklisted_tokens", "outstanding_tokens"];
        let mut before = Vec::new();
        for table in tables {
            before.push(app.count(table).await);
        }

        expect_refused(app.refresh(&token).await, WRONG_TYPE.0, WRONG_TYPE.1);
        expect_refused(app.logout(&token).await, WRONG_TYPE.0, WRONG_TYPE.1);

        let mut after = Vec::new();
        for table in tables {
            after.push(app.count(table).await);
        }
        assert_eq!(after, before, "rows in {tables:?}");
        // Not blacklisted: the token still works where it should.
        get_user(&app, &token, 1).await.unwrap();
        app.verify(&token).await.unwrap();
        app.stop().await;
    })
    .await;
}
