//! The log through the real binary: no secret in any record, the audit
//! records of every security event, JSON lines, no colours into a pipe.

use std::time::Duration;

use auth_service::{
    pb::{
        self, admin_service_client::AdminServiceClient, auth_service_client::AuthServiceClient,
        user_service_client::UserServiceClient,
    },
    tokens::{TokenCodec, unix_now},
};
use serde_json::Value;

use crate::{
    admin::user_command,
    child::{CHEAP_HASHING, ChildServer, create_superuser, stderr},
    helpers::{Backend, SECRET, TestDatabase, bearer},
};

const LOG_KEY: &str = "log-test-signing-key-that-must-never-be-logged";
const PASSWORD: &str = "Secret-Passphrase-4-Logs";
const WRONG_PASSWORD: &str = "Wrong-Passphrase-4-Logs";
const CHANGED_PASSWORD: &str = "Changed-Passphrase-4-Logs";
const ROOT_PASSWORD: &str = "Root-Passphrase-4-Logs";
const VICTIM_PASSWORD: &str = "Victim-Passphrase-4-Logs";
const RESET_PASSWORD: &str = "Reset-Passphrase-4-Logs";
const SET_PASSWORD: &str = "Operator-Set-Passphrase-4-Logs";

/// Every audit event the run below causes, with its outcome.
const AUDITED: &[(&str, &str)] = &[
    ("login", "success"),
    ("login", "failure"),
    ("refresh_token_reuse", "success"),
    ("password_change", "failure"),
    ("password_change", "success"),
    ("logout_all", "success"),
    ("user_created", "success"),
    ("staff_changed", "success"),
    ("user_deactivated", "success"),
    ("user_activated", "success"),
    ("password_reset_issued", "success"),
    ("password_reset", "success"),
    ("user_deleted", "success"),
    ("key_reload", "success"),
    ("superuser_changed", "success"),
    ("password_set", "success"),
    ("service_account_created", "success"),
    ("service_account_secret_added", "success"),
    ("service_account_secret_removed", "success"),
    ("service_account_key_added", "success"),
    ("service_account_key_removed", "success"),
    ("service_account_scopes_changed", "success"),
    ("service_account_deactivated", "success"),
    ("service_account_activated", "success"),
    ("service_account_deleted", "success"),
];

/// What a run logged: the server's stderr then the operator commands',
/// and every secret that went through it.
struct Run {
    log: String,
    secrets: Vec<(&'static str, String)>,
    root_id: i64,
    user_id: i64,
}

fn ok<T>(result: Result<tonic::Response<T>, tonic::Status>) -> T {
    result.map(tonic::Response::into_inner).unwrap()
}

/// Drives every logged event through the real binary, logging at `debug`
/// in `format`.
async fn every_event(format: &str) -> Run {
    let database = TestDatabase::create(&Backend::Sqlite).await;
    let superuser = create_superuser(&database.url, "root", "root@example.com", ROOT_PASSWORD);
    assert!(superuser.status.success(), "{}", stderr(&superuser));

    // debug: everything our code and the libraries log short of wire traces.
    let server = ChildServer::on(&database.url)
        .envs(&[
            ("AUTH_JWT_SECRET", LOG_KEY),
            ("AUTH_LOG_FORMAT", format),
            ("AUTH_ROTATE_REFRESH_TOKENS", "true"),
            ("AUTH_LOGIN_FAILURE_LIMIT", "3"),
        ])
        .envs(&CHEAP_HASHING)
        .log("debug")
        .start()
        .await;
    let channel = server.channel();
    let mut auth = AuthServiceClient::new(channel.clone());
    let mut users = UserServiceClient::new(channel.clone());
    let mut admin = AdminServiceClient::new(channel);
    let user = ok(auth
        .register(pb::RegisterRequest {
            email: "logs@example.com".into(),
            username: "logs".into(),
            password: PASSWORD.into(),
            avatar: None,
        })
        .await);
    let login = |username: &str, password: &str| pb::ObtainTokenPairRequest {
        username: username.into(),
        password: password.into(),
    };
    let _ = auth.obtain_token_pair(login("Logs", WRONG_PASSWORD)).await;
    // Throttled after three failures.
    for _ in 0..4 {
        let _ = auth
            .obtain_token_pair(login(" Ghost", WRONG_PASSWORD))
            .await;
    }
    let pair = ok(auth.obtain_token_pair(login("logs", PASSWORD)).await);
    let refreshed = ok(auth
        .refresh_token(pb::RefreshTokenRequest {
            refresh: pair.refresh.clone(),
        })
        .await);
    let _ = auth
        .verify_token(pb::VerifyTokenRequest {
            token: pair.access.clone(),
        })
        .await;
    let _ = users
        .get_me(bearer(pb::GetMeRequest {}, &pair.access))
        .await;
    let _ = users
        .get_me(bearer(pb::GetMeRequest {}, "garbage.token.value"))
        .await;
    let _ = users
        .update_avatar(bearer(
            pb::UpdateAvatarRequest {
                avatar: "https://example.com/a.png".into(),
            },
            &pair.access,
        ))
        .await;
    let _ = users
        .list_users(bearer(pb::ListUsersRequest::default(), &pair.access))
        .await;
    // The rotated-out token again: reuse, every refresh token revoked.
    let _ = auth
        .refresh_token(pb::RefreshTokenRequest {
            refresh: pair.refresh.clone(),
        })
        .await;
    let _ = auth
        .logout(pb::LogoutRequest {
            refresh: refreshed.refresh.clone(),
        })
        .await;

    let second = ok(auth.obtain_token_pair(login("logs", PASSWORD)).await);
    let change = |current: &str| pb::ChangePasswordRequest {
        current_password: current.into(),
        new_password: CHANGED_PASSWORD.into(),
    };
    let _ = users
        .change_password(bearer(change(WRONG_PASSWORD), &second.access))
        .await;
    let changed = ok(users
        .change_password(bearer(change(PASSWORD), &second.access))
        .await);
    ok(users
        .logout_all(bearer(pb::LogoutAllRequest {}, &changed.access))
        .await);

    let root = ok(auth.obtain_token_pair(login("root", ROOT_PASSWORD)).await);
    let victim = ok(admin
        .create_user(bearer(
            pb::CreateUserRequest {
                email: "victim@example.com".into(),
                username: "victim".into(),
                password: VICTIM_PASSWORD.into(),
                avatar: None,
                is_staff: false,
            },
            &root.access,
        ))
        .await);
    for staff in [true, false] {
        ok(admin
            .set_user_staff(bearer(
                pb::SetUserStaffRequest {
                    id: victim.id,
                    staff,
                },
                &root.access,
            ))
            .await);
    }
    for active in [false, true] {
        ok(admin
            .set_user_active(bearer(
                pb::SetUserActiveRequest {
                    id: victim.id,
                    active,
                },
                &root.access,
            ))
            .await);
    }
    let reset = ok(admin
        .issue_password_reset_token(bearer(
            pb::IssuePasswordResetTokenRequest { id: victim.id },
            &root.access,
        ))
        .await);
    ok(auth
        .reset_password(pb::ResetPasswordRequest {
            token: reset.token.clone(),
            new_password: RESET_PASSWORD.into(),
        })
        .await);
    ok(admin
        .delete_user(bearer(
            pb::DeleteUserRequest { id: victim.id },
            &root.access,
        ))
        .await);

    let robot = ok(admin
        .create_service_account(bearer(
            pb::CreateServiceAccountRequest {
                name: "robot".into(),
                scopes: vec!["auth.admin".into()],
            },
            &root.access,
        ))
        .await);
    let client_secret = ok(admin
        .add_service_account_secret(bearer(
            pb::AddServiceAccountSecretRequest { id: robot.id },
            &root.access,
        ))
        .await);
    ok(admin
        .remove_service_account_secret(bearer(
            pb::RemoveServiceAccountSecretRequest {
                id: robot.id,
                secret_id: client_secret.secret_id.clone(),
            },
            &root.access,
        ))
        .await);
    let key = ok(admin
        .add_service_account_key(bearer(
            pb::AddServiceAccountKeyRequest {
                id: robot.id,
                public_key_pem: std::fs::read_to_string(concat!(
                    env!("CARGO_MANIFEST_DIR"),
                    "/tests/keys/service-ed25519.pub.pem"
                ))
                .unwrap(),
            },
            &root.access,
        ))
        .await);
    ok(admin
        .remove_service_account_key(bearer(
            pb::RemoveServiceAccountKeyRequest {
                id: robot.id,
                kid: key.kid,
            },
            &root.access,
        ))
        .await);
    ok(admin
        .set_service_account_scopes(bearer(
            pb::SetServiceAccountScopesRequest {
                id: robot.id,
                scopes: vec!["orders".into()],
            },
            &root.access,
        ))
        .await);
    for active in [false, true] {
        ok(admin
            .set_service_account_active(bearer(
                pb::SetServiceAccountActiveRequest {
                    id: robot.id,
                    active,
                },
                &root.access,
            ))
            .await);
    }
    ok(admin
        .delete_service_account(bearer(
            pb::DeleteServiceAccountRequest { id: robot.id },
            &root.access,
        ))
        .await);

    // A service token administering (issue 15): the audit record and the
    // call line name the account, and neither the token nor the secret that
    // obtained it is logged. Signed with the server's key, as the grant
    // signs it.
    let ops = ok(admin
        .create_service_account(bearer(
            pb::CreateServiceAccountRequest {
                name: "ops".into(),
                scopes: vec!["auth.admin".into()],
            },
            &root.access,
        ))
        .await);
    let ops_secret = ok(admin
        .add_service_account_secret(bearer(
            pb::AddServiceAccountSecretRequest { id: ops.id },
            &root.access,
        ))
        .await);
    let service_token = TokenCodec::new(
        LOG_KEY.as_bytes(),
        Duration::from_secs(60),
        Duration::from_secs(600),
    )
    .unwrap()
    .issue_service("ops", &["auth.admin"], &ops_secret.secret_id, unix_now())
    .unwrap()
    .token;
    ok(admin
        .create_service_account(bearer(
            pb::CreateServiceAccountRequest {
                name: "made-by-ops".into(),
                scopes: vec!["orders".into()],
            },
            &service_token,
        ))
        .await);

    server.signal("HUP");
    // The reload is logged by the signal's task: give it a moment.
    tokio::time::sleep(Duration::from_millis(500)).await;

    let db = sea_orm::Database::connect(database.url.as_str())
        .await
        .unwrap();
    let hash = auth_service::persistence::users::find_by_id(&db, user.id)
        .await
        .ok()
        .flatten()
        .map(|u| u.password)
        .expect("no user");
    let hash_digest = hash.rsplit('$').next().unwrap_or_default().to_owned();
    drop(db);

    let output = server.terminate(Duration::from_secs(30)).await;
    assert!(output.status.success(), "{}", stderr(&output));
    let mut log = stderr(&output);

    // The operator's commands, in the same format.
    let env = [
        ("RUST_LOG", "info"),
        ("AUTH_LOG_FORMAT", format),
        ("AUTH_USER_PASSWORD", SET_PASSWORD),
    ];
    for args in [
        &["set-superuser", "logs", "true"][..],
        &["set-password", "logs"][..],
    ] {
        let output = user_command(&database.url, args, &env);
        assert!(output.status.success(), "{}", stderr(&output));
        log.push_str(&stderr(&output));
    }

    let secrets = vec![
        ("password", PASSWORD.to_owned()),
        ("wrong password", WRONG_PASSWORD.to_owned()),
        ("changed password", CHANGED_PASSWORD.to_owned()),
        ("root's password", ROOT_PASSWORD.to_owned()),
        ("created user's password", VICTIM_PASSWORD.to_owned()),
        ("password set by a reset", RESET_PASSWORD.to_owned()),
        ("password set by the operator", SET_PASSWORD.to_owned()),
        ("password hash", hash_digest),
        ("access token", pair.access),
        ("refresh token", pair.refresh),
        ("rotated refresh token", refreshed.refresh),
        ("refreshed access token", refreshed.access),
        ("changed password's token", changed.access),
        ("root's access token", root.access),
        ("password reset token", reset.token),
        ("client secret", client_secret.secret.clone()),
        ("service token", service_token),
        ("ops' client secret", ops_secret.secret.clone()),
        (
            "client secret's digest",
            auth_service::domain::sha256_hex(&client_secret.secret),
        ),
        ("signing key", LOG_KEY.to_owned()),
        ("the commands' signing key", SECRET.to_owned()),
    ];
    Run {
        log,
        secrets,
        root_id: root_id(&database.url).await,
        user_id: user.id,
    }
}

async fn root_id(url: &str) -> i64 {
    let db = sea_orm::Database::connect(url).await.unwrap();
    auth_service::persistence::users::find_by_username(&db, "root")
        .await
        .unwrap()
        .expect("root")
        .id
}

#[track_caller]
fn assert_no_secret(run: &Run) {
    for (what, secret) in &run.secrets {
        assert!(!secret.is_empty());
        assert!(
            !run.log.contains(secret.as_str()),
            "the {what} reached the log"
        );
        // Nor its signature part alone (tokens).
        if let Some((_, signature)) = secret.rsplit_once('.') {
            assert!(
                !run.log.contains(signature),
                "the {what}'s signature reached the log"
            );
        }
    }
}

/// The text log, into a pipe: every audit record, no secret, no colour.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logs_hold_no_password_hash_token_or_key() {
    let run = every_event("text").await;
    let log = &run.log;
    assert!(log.contains("grpc call"), "the call log is missing: {log}");
    assert!(!log.contains("\x1b["), "ANSI escapes in a piped log: {log}");
    for (event, outcome) in AUDITED {
        let found = log.lines().any(|line| {
            line.contains(" audit: ")
                && line.contains("audit=true")
                && line.contains(&format!("event=\"{event}\""))
                && line.contains(&format!("outcome=\"{outcome}\""))
        });
        assert!(found, "no audit record {event} {outcome}: {log}");
    }
    assert_no_secret(&run);
}

/// `AUTH_LOG_FORMAT=json`: every line one JSON object, the call log's
/// fields and the audit records in it, and still no secret.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_logs_are_one_object_per_line_with_the_audit_records() {
    let run = every_event("json").await;
    assert_no_secret(&run);
    let records: Vec<Value> = run
        .log
        .lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}")))
        .collect();
    for record in &records {
        for field in ["timestamp", "level", "target"] {
            assert!(record.get(field).is_some(), "no {field}: {record}");
        }
    }

    let calls: Vec<&Value> = records
        .iter()
        .filter(|r| r["message"] == "grpc call")
        .collect();
    assert!(!calls.is_empty(), "no call log: {}", run.log);
    for call in &calls {
        assert!(call["code"].is_string(), "{call}");
        assert!(call["latency_us"].is_u64(), "{call}");
        assert!(
            call["method"].as_str().is_some_and(|m| m.starts_with('/')),
            "{call}"
        );
    }
    // The caller's id, once the handler knows it.
    assert!(
        calls.iter().any(|c| {
            c["method"] == "/auth.v1.UserService/GetMe"
                && c["code"] == "Ok"
                && c["user_id"] == run.user_id
        }),
        "no GetMe line with the user id: {}",
        run.log
    );

    let audit: Vec<&Value> = records.iter().filter(|r| r["target"] == "audit").collect();
    for record in &audit {
        assert_eq!(record["audit"], true, "{record}");
        for field in ["event", "outcome", "actor", "message"] {
            assert!(record[field].is_string(), "no {field}: {record}");
        }
    }
    let find = |event: &str, outcome: &str| -> Vec<&Value> {
        audit
            .iter()
            .copied()
            .filter(|r| r["event"] == event && r["outcome"] == outcome)
            .collect()
    };
    for (event, outcome) in AUDITED {
        assert!(
            !find(event, outcome).is_empty(),
            "no audit record {event} {outcome}: {}",
            run.log
        );
    }

    let failures = find("login", "failure");
    let reasons = |username: &str| -> Vec<&str> {
        failures
            .iter()
            .filter(|r| r["username"] == username)
            .filter_map(|r| r["reason"].as_str())
            .collect()
    };
    // The username as given, not as looked up.
    assert_eq!(reasons("Logs"), ["wrong_password"], "{}", run.log);
    assert_eq!(
        reasons(" Ghost"),
        ["unknown_user", "unknown_user", "unknown_user", "throttled"],
        "{}",
        run.log
    );
    for record in &failures {
        assert_eq!(record["client"], "127.0.0.1", "{record}");
        assert_eq!(record["actor"], "self", "{record}");
    }
    let logged_in = find("login", "success");
    assert!(
        logged_in
            .iter()
            .any(|r| r["user_id"] == run.user_id && r["username"] == "logs"),
        "{}",
        run.log
    );
    assert!(logged_in.iter().all(|r| r["client"] == "127.0.0.1"));

    let changes = find("password_change", "failure");
    assert_eq!(
        changes[0]["reason"], "wrong_current_password",
        "{changes:?}"
    );
    assert_eq!(changes[0]["user_id"], run.user_id);

    // Every administrator's action names the acting user.
    let by_root = format!("user {}", run.root_id);
    for event in [
        "user_created",
        "staff_changed",
        "user_deactivated",
        "user_activated",
        "password_reset_issued",
        "user_deleted",
    ] {
        for record in find(event, "success") {
            assert_eq!(record["actor"], by_root.as_str(), "{record}");
        }
    }
    for event in ["superuser_changed", "password_set", "key_reload"] {
        for record in find(event, "success") {
            assert_eq!(record["actor"], "operator", "{record}");
        }
    }
    // A service token's actions name its account, in the audit record and
    // on the call's line.
    let by_ops: Vec<&&Value> = audit
        .iter()
        .filter(|r| r["service_account"] == "made-by-ops")
        .collect();
    assert_eq!(by_ops.len(), 1, "{}", run.log);
    assert_eq!(by_ops[0]["event"], "service_account_created");
    assert_eq!(by_ops[0]["actor"], "service account ops", "{}", run.log);
    assert!(
        calls.iter().any(|c| {
            c["method"] == "/auth.v1.AdminService/CreateServiceAccount"
                && c["code"] == "Ok"
                && c["client_id"] == "ops"
                && c.get("user_id").is_none()
        }),
        "no CreateServiceAccount line with the client id: {}",
        run.log
    );
    let reuse = find("refresh_token_reuse", "success");
    assert_eq!(reuse[0]["user_id"], run.user_id, "{reuse:?}");
    assert_eq!(reuse[0]["level"], "WARN");
}

/// Under concurrent calls the writer threads lose no record and tear none:
/// every call's line and every audit record arrives whole, and SIGTERM
/// writes out what was still queued.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_calls_each_get_one_whole_line_and_every_audit_record() {
    const KEY_READS: usize = 400;
    const FAILED_LOGINS: usize = 40;
    let database = TestDatabase::create(&Backend::Sqlite).await;
    let server = ChildServer::on(&database.url)
        .envs(&[
            ("AUTH_LOG_FORMAT", "json"),
            ("AUTH_LOGIN_FAILURE_LIMIT", "1000"),
            ("AUTH_LOGIN_ADDRESS_FAILURE_LIMIT", "1000"),
            ("AUTH_PASSWORD_HASH_QUEUE", "1000"),
        ])
        .envs(&CHEAP_HASHING)
        .log("info")
        .start()
        .await;
    let channel = server.channel();
    let mut calls = tokio::task::JoinSet::new();
    for i in 0..KEY_READS {
        let mut auth = AuthServiceClient::new(channel.clone());
        calls.spawn(async move {
            auth.get_jwks(pb::GetJwksRequest::default())
                .await
                .map(|_| ())
                .map_err(|e| format!("GetJwks {i}: {e}"))
        });
    }
    for i in 0..FAILED_LOGINS {
        let mut auth = AuthServiceClient::new(channel.clone());
        calls.spawn(async move {
            let refused = auth
                .obtain_token_pair(pb::ObtainTokenPairRequest {
                    username: format!("nobody-{i}"),
                    password: WRONG_PASSWORD.into(),
                })
                .await;
            match refused {
                Err(status) if status.code() == tonic::Code::Unauthenticated => Ok(()),
                other => Err(format!("login {i}: {other:?}")),
            }
        });
    }
    while let Some(call) = calls.join_next().await {
        call.unwrap().unwrap();
    }
    let output = server.terminate(Duration::from_secs(30)).await;
    let log = stderr(&output);
    let records: Vec<Value> = log
        .lines()
        .map(|line| {
            serde_json::from_str(line).unwrap_or_else(|e| panic!("torn line ({e}): {line}"))
        })
        .collect();
    let count = |keep: &dyn Fn(&Value) -> bool| records.iter().filter(|r| keep(r)).count();
    assert_eq!(
        count(&|r| r["message"] == "grpc call" && r["method"] == "/auth.v1.AuthService/GetJwks"),
        KEY_READS,
        "{log}"
    );
    assert_eq!(
        count(&|r| r["message"] == "grpc call"
            && r["method"] == "/auth.v1.AuthService/ObtainTokenPair"),
        FAILED_LOGINS
    );
    assert_eq!(
        count(&|r| r["target"] == "audit" && r["event"] == "login" && r["outcome"] == "failure"),
        FAILED_LOGINS
    );
}
