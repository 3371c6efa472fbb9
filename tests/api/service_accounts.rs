//! Service accounts (issue 15, administration): every AdminService call and
//! `auth-service service-account …` command, who may make them, and what is
//! stored — on every configured backend.

use auth_service::{
    domain::{ServiceAccountName, sha256_hex},
    pb,
    persistence::{assertion_ids, db_now},
};
use sea_orm::{ConnectionTrait, Statement};
use tonic::{Code, Status};

use crate::{
    child::{auth_service, run, stderr, stdout},
    helpers::{SECRET, TestApp, bearer, expect_code, field_violations, on_every_backend},
};

const KEYS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/keys");

fn key(name: &str) -> String {
    let path = format!("{KEYS}/{name}");
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// Registers `username`, sets its flags in the database and logs in: its
/// access token. `staff: false` makes an ordinary user.
pub(crate) async fn caller(app: &TestApp, username: &str, staff: bool, superuser: bool) -> String {
    let (user, pair) = app.signed_up(username).await;
    app.db
        .execute_unprepared(&format!(
            "UPDATE users SET is_staff = {staff}, is_superuser = {superuser} WHERE id = {}",
            user.id
        ))
        .await
        .unwrap();
    pair.access
}

/// AdminService's service-account calls, as the holder of `access`.
pub(crate) struct Admin<'a> {
    pub(crate) app: &'a TestApp,
    pub(crate) access: String,
}

pub(crate) type Answer<T> = Result<T, Status>;

impl Admin<'_> {
    pub(crate) async fn create(&self, name: &str, scopes: &[&str]) -> Answer<pb::ServiceAccount> {
        let request = pb::CreateServiceAccountRequest {
            name: name.into(),
            scopes: scopes.iter().map(|s| (*s).to_owned()).collect(),
        };
        let mut client = self.app.admin_client();
        let answer = client
            .create_service_account(bearer(request, &self.access))
            .await;
        answer.map(tonic::Response::into_inner)
    }

    pub(crate) async fn get(&self, id: i64) -> Answer<pb::ServiceAccount> {
        let request = pb::GetServiceAccountRequest { id };
        let mut client = self.app.admin_client();
        let answer = client
            .get_service_account(bearer(request, &self.access))
            .await;
        answer.map(tonic::Response::into_inner)
    }

    pub(crate) async fn list(
        &self,
        page_size: i32,
        page_token: &str,
    ) -> Answer<pb::ListServiceAccountsResponse> {
        let request = pb::ListServiceAccountsRequest {
            page_size,
            page_token: page_token.into(),
        };
        let mut client = self.app.admin_client();
        let answer = client
            .list_service_accounts(bearer(request, &self.access))
            .await;
        answer.map(tonic::Response::into_inner)
    }

    pub(crate) async fn set_active(&self, id: i64, active: bool) -> Answer<pb::ServiceAccount> {
        let request = pb::SetServiceAccountActiveRequest { id, active };
        let mut client = self.app.admin_client();
        let answer = client
            .set_service_account_active(bearer(request, &self.access))
            .await;
        answer.map(tonic::Response::into_inner)
    }

    pub(crate) async fn set_scopes(&self, id: i64, scopes: &[&str]) -> Answer<pb::ServiceAccount> {
        let request = pb::SetServiceAccountScopesRequest {
            id,
            scopes: scopes.iter().map(|s| (*s).to_owned()).collect(),
        };
        let mut client = self.app.admin_client();
        let answer = client
            .set_service_account_scopes(bearer(request, &self.access))
            .await;
        answer.map(tonic::Response::into_inner)
    }

    pub(crate) async fn delete(&self, id: i64) -> Answer<pb::DeleteServiceAccountResponse> {
        let request = pb::DeleteServiceAccountRequest { id };
        let mut client = self.app.admin_client();
        let answer = client
            .delete_service_account(bearer(request, &self.access))
            .await;
        answer.map(tonic::Response::into_inner)
    }

    pub(crate) async fn add_secret(&self, id: i64) -> Answer<pb::AddServiceAccountSecretResponse> {
        let request = pb::AddServiceAccountSecretRequest { id };
        let mut client = self.app.admin_client();
        let answer = client
            .add_service_account_secret(bearer(request, &self.access))
            .await;
        answer.map(tonic::Response::into_inner)
    }

    pub(crate) async fn remove_secret(
        &self,
        id: i64,
        secret_id: &str,
    ) -> Answer<pb::RemoveServiceAccountSecretResponse> {
        let request = pb::RemoveServiceAccountSecretRequest {
            id,
            secret_id: secret_id.into(),
        };
        let mut client = self.app.admin_client();
        let answer = client
            .remove_service_account_secret(bearer(request, &self.access))
            .await;
        answer.map(tonic::Response::into_inner)
    }

    pub(crate) async fn add_key(
        &self,
        id: i64,
        pem: &str,
    ) -> Answer<pb::AddServiceAccountKeyResponse> {
        let request = pb::AddServiceAccountKeyRequest {
            id,
            public_key_pem: pem.into(),
        };
        let mut client = self.app.admin_client();
        let answer = client
            .add_service_account_key(bearer(request, &self.access))
            .await;
        answer.map(tonic::Response::into_inner)
    }

    pub(crate) async fn remove_key(
        &self,
        id: i64,
        kid: &str,
    ) -> Answer<pb::RemoveServiceAccountKeyResponse> {
        let request = pb::RemoveServiceAccountKeyRequest {
            id,
            kid: kid.into(),
        };
        let mut client = self.app.admin_client();
        let answer = client
            .remove_service_account_key(bearer(request, &self.access))
            .await;
        answer.map(tonic::Response::into_inner)
    }
}

pub(crate) async fn admin<'a>(
    app: &'a TestApp,
    username: &str,
    staff: bool,
    superuser: bool,
) -> Admin<'a> {
    Admin {
        app,
        access: caller(app, username, staff, superuser).await,
    }
}

/// The (field, description) pairs of an INVALID_ARGUMENT, which must name
/// `field` first.
#[track_caller]
fn expect_invalid<T: std::fmt::Debug>(result: Answer<T>, field: &str) -> Vec<(String, String)> {
    let status = expect_code(result, Code::InvalidArgument);
    let violations = field_violations(&status);
    assert!(
        violations.first().is_some_and(|(f, _)| f == field),
        "{field}: {status:?}"
    );
    violations
}

#[track_caller]
fn expect_denied<T: std::fmt::Debug>(result: Answer<T>, says: &str) {
    let status = expect_code(result, Code::PermissionDenied);
    assert!(status.message().contains(says), "{status:?}");
}

/// Rows of `sql`'s single string column.
async fn strings(app: &TestApp, sql: &str, column: &str) -> Vec<String> {
    let rows = app
        .db
        .query_all_raw(Statement::from_string(app.db.get_database_backend(), sql))
        .await
        .unwrap();
    rows.iter()
        .map(|row| row.try_get::<String>("", column).unwrap())
        .collect()
}

#[tokio::test]
async fn staff_create_read_change_and_delete_service_accounts() {
    on_every_backend(async |backend| {
        let app = TestApp::spawn(&backend).await;
        let staff = admin(&app, "staff", true, false).await;

        let created = staff
            .create("billing", &["orders:read", "invoices/write", "orders:read"])
            .await
            .unwrap();
        assert!(created.id > 0 && created.is_active);
        assert_eq!(created.name, "billing");
        assert_eq!(created.scopes, ["invoices/write", "orders:read"]);
        assert!(created.created_at.is_some() && created.last_used_at.is_none());
        assert!(created.secrets.is_empty() && created.keys.is_empty());
        assert_eq!(staff.get(created.id).await.unwrap(), created);

        let changed = staff.set_active(created.id, false).await.unwrap();
        assert!(!changed.is_active);
        assert!(staff.set_active(created.id, true).await.unwrap().is_active);
        let changed = staff
            .set_scopes(created.id, &["b", "a", "a"])
            .await
            .unwrap();
        assert_eq!(changed.scopes, ["a", "b"]);
        assert!(
            staff
                .set_scopes(created.id, &[])
                .await
                .unwrap()
                .scopes
                .is_empty()
        );

        let other = staff.create("reports", &[]).await.unwrap();
        let listed = staff.list(0, "").await.unwrap();
        let names: Vec<&str> = listed
            .service_accounts
            .iter()
            .map(|a| a.name.as_str())
            .collect();
        assert_eq!(names, ["billing", "reports"]);
        assert!(listed.next_page_token.is_empty());

        staff.delete(other.id).await.unwrap();
        expect_code(staff.get(other.id).await, Code::NotFound);
        expect_code(staff.delete(other.id).await, Code::NotFound);
        app.stop().await;
    })
    .await;
}

#[tokio::test]
async fn secrets_are_shown_once_and_stored_as_their_sha256_only() {
    on_every_backend(async |backend| {
        let app = TestApp::spawn(&backend).await;
        let staff = admin(&app, "staff", true, false).await;
        let account = staff.create("billing", &["orders"]).await.unwrap();

        let first = staff.add_secret(account.id).await.unwrap();
        let second = staff.add_secret(account.id).await.unwrap();
        for issued in [&first, &second] {
            assert_eq!(issued.secret.len(), 43, "256 bits, base64url: {issued:?}");
            assert!(
                issued
                    .secret
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
            );
            assert_eq!(issued.secret_id.len(), 32);
        }
        assert_ne!(first.secret, second.secret);

        // Get and List show the ids, never a secret.
        let shown = staff.get(account.id).await.unwrap();
        let ids: Vec<&str> = shown.secrets.iter().map(|s| s.secret_id.as_str()).collect();
        assert_eq!(ids.len(), 2);
        assert!(
            ids.contains(&first.secret_id.as_str()) && ids.contains(&second.secret_id.as_str())
        );
        let listed = staff.list(0, "").await.unwrap();
        for answer in [format!("{shown:?}"), format!("{listed:?}")] {
            for issued in [&first, &second] {
                assert!(!answer.contains(&issued.secret), "{answer}");
                assert!(!answer.contains(&sha256_hex(&issued.secret)), "{answer}");
            }
        }

        // The table holds the hex SHA-256 of each secret, and nothing else of it.
        let mut stored = strings(
            &app,
            "SELECT secret_hash FROM service_account_secrets",
            "secret_hash",
        )
        .await;
        stored.sort();
        let mut expected = vec![sha256_hex(&first.secret), sha256_hex(&second.secret)];
        expected.sort();
        assert_eq!(stored, expected);

        // Two at most: rotate by removing one first.
        let status = expect_code(staff.add_secret(account.id).await, Code::FailedPrecondition);
        assert!(status.message().contains("remove one"), "{status:?}");
        staff
            .remove_secret(account.id, &first.secret_id)
            .await
            .unwrap();
        expect_code(
            staff.remove_secret(account.id, &first.secret_id).await,
            Code::NotFound,
        );
        let third = staff.add_secret(account.id).await.unwrap();
        let ids: Vec<String> = staff
            .get(account.id)
            .await
            .unwrap()
            .secrets
            .into_iter()
            .map(|s| s.secret_id)
            .collect();
        assert_eq!(ids.len(), 2);
        assert!(ids.contains(&second.secret_id) && ids.contains(&third.secret_id));
        app.stop().await;
    })
    .await;
}

#[tokio::test]
async fn concurrent_secrets_never_exceed_two() {
    on_every_backend(async |backend| {
        let app = TestApp::spawn(&backend).await;
        let staff = admin(&app, "staff", true, false).await;
        let account = staff.create("racer", &[]).await.unwrap();
        let adds = (0..6).map(|_| staff.add_secret(account.id));
        let answers = futures::future::join_all(adds).await;
        let added = answers.iter().filter(|a| a.is_ok()).count();
        assert_eq!(added, 2, "{answers:?}");
        for refused in answers.into_iter().filter(Result::is_err) {
            expect_code(refused, Code::FailedPrecondition);
        }
        assert_eq!(app.count("service_account_secrets").await, 2);
        app.stop().await;
    })
    .await;
}

#[tokio::test]
async fn credentials_given_without_the_power_of_auth_scopes_never_gain_it() {
    on_every_backend(async |backend| {
        let app = TestApp::spawn(&backend).await;
        let staff = admin(&app, "staff", true, false).await;
        let root = admin(&app, "root", true, true).await;

        // In turn: a secret a staff member added blocks the grant until it
        // is removed.
        let bot = staff.create("metrics-bot", &["metrics"]).await.unwrap();
        let secret = staff.add_secret(bot.id).await.unwrap();
        let refused = expect_code(
            root.set_scopes(bot.id, &["metrics", "auth.admin.read"])
                .await,
            Code::FailedPrecondition,
        );
        assert!(refused.message().contains("remove them"), "{refused:?}");
        assert_eq!(staff.get(bot.id).await.unwrap().scopes, ["metrics"]);
        root.remove_secret(bot.id, &secret.secret_id).await.unwrap();
        root.set_scopes(bot.id, &["metrics", "auth.admin.read"])
            .await
            .unwrap();
        // Scopes it already holds do not count as granted again.
        let own = root.add_secret(bot.id).await.unwrap();
        root.set_scopes(bot.id, &["auth.admin.read"]).await.unwrap();
        root.remove_secret(bot.id, &own.secret_id).await.unwrap();

        // At once: a staff member adding a secret while a superuser grants
        // `auth.admin` ends with one of the two refused, never both done.
        for trial in 0..12 {
            let account = staff.create(&format!("race-{trial}"), &[]).await.unwrap();
            let (added, granted) = tokio::join!(
                staff.add_secret(account.id),
                root.set_scopes(account.id, &["auth.admin"]),
            );
            assert!(
                added.is_err() || granted.is_err(),
                "trial {trial}: {added:?} {granted:?}"
            );
            let scopes = staff.get(account.id).await.unwrap().scopes;
            let secrets = strings(
                &app,
                &format!(
                    "SELECT secret_id FROM service_account_secrets WHERE account_id = {}",
                    account.id
                ),
                "secret_id",
            )
            .await;
            assert!(
                scopes.is_empty() || secrets.is_empty(),
                "trial {trial}: {scopes:?} with {secrets:?}"
            );
        }
        app.stop().await;
    })
    .await;
}

#[tokio::test]
async fn keys_of_each_algorithm_are_registered_and_bad_ones_refused() {
    on_every_backend(async |backend| {
        let app = TestApp::spawn(&backend).await;
        let staff = admin(&app, "staff", true, false).await;
        let account = staff.create("signer", &[]).await.unwrap();

        let mut kids = Vec::new();
        for (file, algorithm) in [
            ("service-ed25519.pub.pem", "EdDSA"),
            ("service-p256.pub.pem", "ES256"),
            ("service-rsa.pub.pem", "RS256"),
        ] {
            let kid = staff.add_key(account.id, &key(file)).await.unwrap().kid;
            assert_eq!(kid.len(), 32);
            let shown = staff.get(account.id).await.unwrap();
            let registered = shown.keys.iter().find(|k| k.kid == kid).unwrap();
            assert_eq!(registered.algorithm, algorithm, "{file}");
            kids.push(kid);
        }
        // The PEM is stored as the key alone.
        let stored = strings(
            &app,
            &format!(
                "SELECT public_key_pem FROM service_account_keys WHERE kid = '{}'",
                kids[1]
            ),
            "public_key_pem",
        )
        .await;
        assert_eq!(stored, [key("service-p256.pub.pem")]);

        for (pem, says) in [
            (key("service-rsa-1024.pub.pem"), "2048 to 4096 bits"),
            (key("service-p384.pub.pem"), "Unsupported elliptic curve"),
            (key("service-ed25519.pem"), "private key"),
            ("not a key".to_owned(), "Expected a PEM public key"),
            (String::new(), "may not be blank"),
        ] {
            let violations =
                expect_invalid(staff.add_key(account.id, &pem).await, "public_key_pem");
            assert!(violations[0].1.contains(says), "{violations:?}");
            if let Some(body) = pem.lines().nth(1) {
                assert!(
                    !violations[0].1.contains(body),
                    "the key is echoed: {violations:?}"
                );
            }
        }

        // Four at most.
        staff
            .add_key(account.id, &key("service-rsa-4096.pub.pem"))
            .await
            .unwrap();
        let status = expect_code(
            staff
                .add_key(account.id, &key("service-ed25519.pub.pem"))
                .await,
            Code::FailedPrecondition,
        );
        assert!(status.message().contains("remove one"), "{status:?}");
        staff.remove_key(account.id, &kids[0]).await.unwrap();
        expect_code(staff.remove_key(account.id, &kids[0]).await, Code::NotFound);
        let left: Vec<String> = staff
            .get(account.id)
            .await
            .unwrap()
            .keys
            .into_iter()
            .map(|k| k.kid)
            .collect();
        assert_eq!(left.len(), 3);
        assert!(!left.contains(&kids[0]));
        app.stop().await;
    })
    .await;
}

#[tokio::test]
async fn deleting_an_account_deletes_its_credentials() {
    on_every_backend(async |backend| {
        let app = TestApp::spawn(&backend).await;
        let staff = admin(&app, "staff", true, false).await;
        let doomed = staff.create("doomed", &[]).await.unwrap();
        let kept = staff.create("kept", &[]).await.unwrap();
        for account in [&doomed, &kept] {
            staff.add_secret(account.id).await.unwrap();
            staff
                .add_key(account.id, &key("service-ed25519.pub.pem"))
                .await
                .unwrap();
        }
        staff.delete(doomed.id).await.unwrap();
        assert_eq!(app.count("service_accounts").await, 1);
        assert_eq!(app.count("service_account_secrets").await, 1);
        assert_eq!(app.count("service_account_keys").await, 1);
        expect_code(staff.add_secret(doomed.id).await, Code::NotFound);
        let survivor = staff.get(kept.id).await.unwrap();
        assert_eq!((survivor.secrets.len(), survivor.keys.len()), (1, 1));
        app.stop().await;
    })
    .await;
}

#[tokio::test]
async fn who_may_manage_service_accounts() {
    on_every_backend(async |backend| {
        let app = TestApp::spawn(&backend).await;
        let staff = admin(&app, "staff", true, false).await;
        let root = admin(&app, "root", true, true).await;
        let user = admin(&app, "user", false, false).await;
        let account = staff.create("plain", &["orders"]).await.unwrap();
        let id = account.id;

        // Not staff: every call refused, whatever it names.
        let not_staff = "requires a staff account";
        expect_denied(user.create("mine", &[]).await, not_staff);
        expect_denied(user.create("BAD NAME", &[]).await, not_staff);
        expect_denied(user.get(id).await, not_staff);
        expect_denied(user.list(0, "").await, not_staff);
        expect_denied(user.set_active(id, false).await, not_staff);
        expect_denied(user.set_scopes(id, &["x"]).await, not_staff);
        expect_denied(user.set_scopes(id, &["no spaces"]).await, not_staff);
        expect_denied(user.delete(id).await, not_staff);
        expect_denied(user.add_secret(id).await, not_staff);
        expect_denied(user.remove_secret(id, &"0".repeat(32)).await, not_staff);
        expect_denied(
            user.add_key(id, &key("service-ed25519.pub.pem")).await,
            not_staff,
        );
        expect_denied(user.add_key(id, "not a key").await, not_staff);
        expect_denied(user.remove_key(id, &"0".repeat(32)).await, not_staff);
        assert_eq!(app.count("service_account_secrets").await, 0);

        // Staff may not grant this service's own scopes; a superuser may.
        let reserved = "Only a superuser may grant";
        expect_denied(staff.create("admin-bot", &["auth.admin"]).await, reserved);
        expect_denied(
            staff.set_scopes(id, &["orders", "auth.admin.read"]).await,
            reserved,
        );
        let bot = root.create("admin-bot", &["auth.admin"]).await.unwrap();
        assert_eq!(bot.scopes, ["auth.admin"]);
        root.set_scopes(id, &["auth.admin.read"]).await.unwrap();

        // Nor manage an account that holds one; reading it is fine.
        let protected = "holds \"auth.\" scopes";
        staff.get(bot.id).await.unwrap();
        expect_denied(staff.add_secret(bot.id).await, protected);
        expect_denied(
            staff.add_key(bot.id, &key("service-ed25519.pub.pem")).await,
            protected,
        );
        expect_denied(staff.set_active(bot.id, false).await, protected);
        expect_denied(staff.set_scopes(bot.id, &["orders"]).await, protected);
        expect_denied(staff.delete(bot.id).await, protected);
        let secret = root.add_secret(bot.id).await.unwrap();
        expect_denied(
            staff.remove_secret(bot.id, &secret.secret_id).await,
            protected,
        );
        root.remove_secret(bot.id, &secret.secret_id).await.unwrap();
        root.delete(bot.id).await.unwrap();
        app.stop().await;
    })
    .await;
}

#[tokio::test]
async fn bad_requests_name_their_fields_and_unknown_ids_are_not_found() {
    on_every_backend(async |backend| {
        let app = TestApp::spawn(&backend).await;
        let staff = admin(&app, "staff", true, false).await;

        for bad in ["", "Billing", "billing_api", "a b", &"a".repeat(65)] {
            expect_invalid(staff.create(bad, &[]).await, "name");
        }
        let violations = expect_invalid(
            staff.create("ok", &["fine", "not fine", ""]).await,
            "scopes",
        );
        assert_eq!(violations.len(), 2, "{violations:?}");
        assert!(violations[0].1.contains("\"not fine\""), "{violations:?}");
        let many: Vec<String> = (0..33).map(|i| format!("s{i}")).collect();
        let many: Vec<&str> = many.iter().map(String::as_str).collect();
        expect_invalid(staff.create("ok", &many).await, "scopes");
        // Every broken field at once.
        let violations = expect_invalid(staff.create("Bad", &["bad scope"]).await, "name");
        let fields: Vec<&str> = violations.iter().map(|(f, _)| f.as_str()).collect();
        assert_eq!(fields, ["name", "scopes"]);

        let account = staff.create("billing", &[]).await.unwrap();
        let status = expect_code(staff.create("billing", &["x"]).await, Code::AlreadyExists);
        assert_eq!(
            status.message(),
            "a service account with that name already exists"
        );

        expect_invalid(staff.get(0).await, "id");
        expect_invalid(staff.set_scopes(account.id, &["no good"]).await, "scopes");
        let violations = expect_invalid(staff.set_scopes(-1, &["no good"]).await, "id");
        assert_eq!(violations.len(), 2, "{violations:?}");
        expect_invalid(staff.remove_secret(account.id, "nope").await, "secret_id");
        expect_invalid(staff.remove_key(account.id, &"A".repeat(32)).await, "kid");
        expect_invalid(staff.list(-1, "").await, "page_size");
        expect_invalid(staff.list(0, "garbage").await, "page_token");

        let unknown = account.id + 1000;
        let some_id = "0123456789abcdef0123456789abcdef";
        expect_code(staff.get(unknown).await, Code::NotFound);
        expect_code(staff.set_active(unknown, false).await, Code::NotFound);
        expect_code(staff.set_scopes(unknown, &[]).await, Code::NotFound);
        expect_code(staff.delete(unknown).await, Code::NotFound);
        expect_code(staff.add_secret(unknown).await, Code::NotFound);
        expect_code(staff.remove_secret(unknown, some_id).await, Code::NotFound);
        expect_code(
            staff.add_key(unknown, &key("service-p256.pub.pem")).await,
            Code::NotFound,
        );
        expect_code(staff.remove_key(unknown, some_id).await, Code::NotFound);
        expect_code(
            staff.remove_secret(account.id, some_id).await,
            Code::NotFound,
        );
        expect_code(staff.remove_key(account.id, some_id).await, Code::NotFound);
        app.stop().await;
    })
    .await;
}

#[tokio::test]
async fn service_accounts_are_listed_page_by_page() {
    on_every_backend(async |backend| {
        let app = TestApp::spawn(&backend).await;
        let staff = admin(&app, "staff", true, false).await;
        for i in 0..5 {
            staff.create(&format!("svc-{i}"), &[]).await.unwrap();
        }
        let mut names = Vec::new();
        let mut token = String::new();
        let mut pages = 0;
        loop {
            let page = staff.list(2, &token).await.unwrap();
            pages += 1;
            assert!(page.service_accounts.len() <= 2);
            names.extend(page.service_accounts.into_iter().map(|a| a.name));
            if page.next_page_token.is_empty() {
                break;
            }
            token = page.next_page_token;
        }
        assert_eq!(pages, 3);
        assert_eq!(names, ["svc-0", "svc-1", "svc-2", "svc-3", "svc-4"]);

        // A ListUsers token does not page service accounts.
        app.register("another").await;
        let users = app.list_users_page(&staff.access, "", 1, "").await.unwrap();
        assert!(!users.next_page_token.is_empty());
        expect_invalid(staff.list(2, &users.next_page_token).await, "page_token");
        app.stop().await;
    })
    .await;
}

/// The assertion grant's replay check, on each backend's primary key.
#[tokio::test]
async fn an_assertion_id_is_used_once_per_client() {
    on_every_backend(async |backend| {
        let app = TestApp::spawn(&backend).await;
        let billing = ServiceAccountName::parse("billing").unwrap();
        let reports = ServiceAccountName::parse("reports").unwrap();
        let now = db_now();
        let expires_at = now + chrono::TimeDelta::minutes(5);
        let long = "j".repeat(2000);
        // Kept past its expiry for the other replicas' clocks, then deleted.
        let just_expired = now - chrono::TimeDelta::minutes(1);
        let margin = chrono::TimeDelta::from_std(assertion_ids::JTI_CLOCK_SKEW_MARGIN).unwrap();
        let expired = now - margin - chrono::TimeDelta::seconds(1);
        for (client, jti, expires_at, fresh) in [
            (&billing, "a", expires_at, true),
            (&billing, "a", expires_at, false), // a replay
            // Case matters (MariaDB's collations fold it), and so does the client.
            (&billing, "A", expires_at, true),
            (&reports, "a", expires_at, true),
            (&billing, long.as_str(), expires_at, true),
            (&billing, "recent", just_expired, true),
            (&billing, "old", expired, true),
        ] {
            let recorded = assertion_ids::record_assertion_jti(&app.db, client, jti, expires_at)
                .await
                .unwrap();
            assert_eq!(recorded, fresh, "{client} {jti}");
        }
        let flushed = assertion_ids::flush_expired_assertion_jtis(&app.db, now)
            .await
            .unwrap();
        assert_eq!(flushed, 1);
        assert_eq!(app.count("service_assertion_jtis").await, 5);
        app.stop().await;
    })
    .await;
}

/// `auth-service service-account …` on `url`: its output.
fn command(url: &str, args: &[&str]) -> std::process::Output {
    let mut command = auth_service(&[&["service-account"], args].concat());
    command
        .env("AUTH_DATABASE_URL", url)
        .env("AUTH_JWT_SECRET", SECRET)
        .env("RUST_LOG", "off");
    run(&mut command)
}

#[track_caller]
fn succeeded(output: &std::process::Output, says: &str) -> String {
    assert!(output.status.success(), "{}", stderr(output));
    let out = stdout(output);
    assert!(out.contains(says), "{out}");
    out
}

#[track_caller]
fn failed(output: &std::process::Output, says: &str) {
    assert_eq!(output.status.code(), Some(1), "{}", stdout(output));
    let err = stderr(output);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains(says), "{err}");
}

/// The operator's commands, through the real binary.
#[tokio::test]
async fn the_service_account_commands_administer_by_name() {
    on_every_backend(async |backend| {
        let app = TestApp::spawn(&backend).await;
        let url = app.database_url().to_owned();
        let staff = admin(&app, "staff", true, false).await;

        // The operator may grant this service's own scopes.
        let out = succeeded(
            &command(&url, &["create", "ops-bot", "auth.admin", "orders:read"]),
            "service account ops-bot (id ",
        );
        assert!(out.contains("\"auth.admin orders:read\""), "{out}");
        failed(&command(&url, &["create", "ops-bot"]), "already exists");
        failed(&command(&url, &["create", "Ops"]), "name: ");
        failed(&command(&url, &["create", "x", "bad scope"]), "scopes: ");

        let out = succeeded(
            &command(&url, &["add-secret", "ops-bot"]),
            "shown this once",
        );
        let secret = out.lines().last().unwrap().trim().to_owned();
        assert_eq!(secret.len(), 43, "{out}");
        let stored = strings(
            &app,
            "SELECT secret_hash FROM service_account_secrets",
            "secret_hash",
        )
        .await;
        assert_eq!(stored, [sha256_hex(&secret)]);
        let secret_id = out.split_whitespace().nth(1).unwrap().to_owned();

        let pem_file = format!("{KEYS}/service-p256.pub.pem");
        let out = succeeded(
            &command(&url, &["add-key", "ops-bot", &pem_file]),
            "(ES256) added",
        );
        let kid = out.split_whitespace().nth(1).unwrap().to_owned();
        failed(
            &command(
                &url,
                &[
                    "add-key",
                    "ops-bot",
                    &format!("{KEYS}/service-p384.pub.pem"),
                ],
            ),
            "Unsupported elliptic curve",
        );
        failed(
            &command(&url, &["add-key", "ops-bot", "/nonexistent.pem"]),
            "cannot read /nonexistent.pem",
        );

        let out = succeeded(
            &command(&url, &["get", "ops-bot"]),
            "active, scopes \"auth.admin orders:read\"",
        );
        assert!(out.contains(&format!("secret {secret_id}")), "{out}");
        assert!(out.contains(&format!("key {kid} ES256")), "{out}");
        assert!(!out.contains(&secret), "{out}");

        // What the server shows (read afresh, no cache in between).
        let id: i64 = staff.list(0, "").await.unwrap().service_accounts[0].id;
        let shown = staff.get(id).await.unwrap();
        assert_eq!(shown.secrets[0].secret_id, secret_id);
        assert_eq!(shown.keys[0].kid, kid);

        succeeded(&command(&url, &["create", "reports"]), "reports");
        let out = succeeded(&command(&url, &["list"]), "ops-bot active");
        assert_eq!(out.lines().count(), 2, "{out}");
        assert!(out.contains("secrets=1 keys=1"), "{out}");

        succeeded(
            &command(&url, &["set-active", "ops-bot", "false"]),
            "deactivated",
        );
        assert!(!staff.get(id).await.unwrap().is_active);
        succeeded(
            &command(&url, &["set-active", "ops-bot", "true"]),
            "activated",
        );
        succeeded(
            &command(&url, &["set-scopes", "ops-bot", "b", "a"]),
            "now has scopes \"a b\"",
        );
        assert_eq!(staff.get(id).await.unwrap().scopes, ["a", "b"]);

        succeeded(
            &command(&url, &["remove-secret", "ops-bot", &secret_id]),
            "removed",
        );
        failed(
            &command(&url, &["remove-secret", "ops-bot", &secret_id]),
            "no secret with that id",
        );
        succeeded(&command(&url, &["remove-key", "ops-bot", &kid]), "removed");
        failed(&command(&url, &["remove-key", "ops-bot", "nope"]), "kid: ");
        succeeded(
            &command(&url, &["delete", "ops-bot"]),
            "deleted with its credentials",
        );
        failed(
            &command(&url, &["get", "ops-bot"]),
            "no service account named \"ops-bot\"",
        );
        expect_code(staff.get(id).await, Code::NotFound);
        app.stop().await;
    })
    .await;
}
