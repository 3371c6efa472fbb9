//! The verifier crate in a consuming tonic service, end to end against the
//! real auth-service binary: tokens it issues are accepted with the right
//! user, bad ones refused; a key rotation (SIGHUP) reaches the consumer
//! without a restart; with the auth service gone, the consumer keeps
//! verifying with the keys it has. Service tokens signed with the service's
//! key reach a consumer that takes services, and not UserService.

use std::{path::PathBuf, time::Duration};

use auth_service::pb::{
    self,
    admin_service_client::AdminServiceClient,
    user_service_client::UserServiceClient,
    user_service_server::{UserService, UserServiceServer},
};
use auth_service::tokens::{KeyRing, TokenCodec, unix_now};
use auth_verifier::{Algorithm, Authenticated, AuthenticatedUser, Verifier, VerifierLayer};
use tokio::net::TcpListener;
use tonic::{
    Code, Request, Response, Status,
    transport::{Channel, Server, server::TcpIncoming},
};

use tonic_types::StatusExt;

use crate::{
    child::{ChildServer, create_superuser, stderr},
    helpers::{Backend, PASSWORD, TestDatabase, bearer, claims, error_reason, register_request},
};

fn key(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/keys")
        .join(name)
}

/// The consumer: a service that answers with the caller the verifier
/// found: a user's id, or a service's client id as the username.
struct Consumer;

#[tonic::async_trait]
impl UserService for Consumer {
    async fn get_me(
        &self,
        request: Request<pb::GetMeRequest>,
    ) -> Result<Response<pb::User>, Status> {
        let extensions = request.extensions();
        let caller = extensions
            .get::<Authenticated>()
            .ok_or_else(|| Status::internal("no Authenticated"))?;
        let user = match caller {
            Authenticated::User(user) => {
                if extensions.get::<AuthenticatedUser>() != Some(user) {
                    return Err(Status::internal("no AuthenticatedUser"));
                }
                pb::User {
                    id: user.user_id,
                    ..pb::User::default()
                }
            }
            Authenticated::Service(service) => pb::User {
                username: service.client_id.clone(),
                ..pb::User::default()
            },
        };
        Ok(Response::new(user))
    }

    async fn update_avatar(
        &self,
        _: Request<pb::UpdateAvatarRequest>,
    ) -> Result<Response<pb::User>, Status> {
        Err(Status::unimplemented("not the consumer's"))
    }

    async fn list_users(
        &self,
        _: Request<pb::ListUsersRequest>,
    ) -> Result<Response<pb::ListUsersResponse>, Status> {
        Err(Status::unimplemented("not the consumer's"))
    }

    async fn batch_get_users(
        &self,
        _: Request<pb::BatchGetUsersRequest>,
    ) -> Result<Response<pb::BatchGetUsersResponse>, Status> {
        Err(Status::unimplemented("not the consumer's"))
    }

    async fn change_password(
        &self,
        _: Request<pb::ChangePasswordRequest>,
    ) -> Result<Response<pb::TokenPair>, Status> {
        Err(Status::unimplemented("not the consumer's"))
    }

    async fn logout_all(
        &self,
        _: Request<pb::LogoutAllRequest>,
    ) -> Result<Response<pb::LogoutAllResponse>, Status> {
        Err(Status::unimplemented("not the consumer's"))
    }
}

/// Serves [`Consumer`] behind `verifier`'s layer; a client for it.
async fn consumer(verifier: &Verifier) -> UserServiceClient<Channel> {
    consumer_behind(verifier.layer()).await
}

/// Serves [`Consumer`] behind `layer`; a client for it.
async fn consumer_behind(layer: VerifierLayer) -> UserServiceClient<Channel> {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let service = UserServiceServer::new(Consumer);
    tokio::spawn(async move {
        Server::builder()
            .layer(layer)
            .add_service(service)
            .serve_with_incoming(TcpIncoming::from(listener))
            .await
    });
    let channel = Channel::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect_lazy();
    UserServiceClient::new(channel)
}

async fn me(client: &UserServiceClient<Channel>, token: &str) -> Result<i64, Status> {
    let answer = client
        .clone()
        .get_me(bearer(pb::GetMeRequest {}, token))
        .await?;
    Ok(answer.into_inner().id)
}

/// A token signed with the test key `file`, under `kid`.
fn sign(alg: Algorithm, file: &str, kid: &str, payload: &serde_json::Value) -> String {
    let pem = std::fs::read(key(file)).unwrap();
    let key = match alg {
        Algorithm::EdDSA => jsonwebtoken::EncodingKey::from_ed_pem(&pem),
        Algorithm::ES256 => jsonwebtoken::EncodingKey::from_ec_pem(&pem),
        _ => jsonwebtoken::EncodingKey::from_rsa_pem(&pem),
    }
    .unwrap();
    let mut header = jsonwebtoken::Header::new(alg);
    header.kid = Some(kid.to_owned());
    jsonwebtoken::encode(&header, payload, &key).unwrap()
}

#[tokio::test]
async fn a_consuming_service_verifies_our_tokens_through_rotation_and_outage() {
    let cases = [
        (Algorithm::EdDSA, "EdDSA", "ed25519-1.pem", "ed25519-2.pem"),
        (Algorithm::ES256, "ES256", "p256-1.pem", "p256-2.pem"),
        (Algorithm::RS256, "RS256", "rsa-1.pem", "rsa-2.pem"),
    ];
    for (algorithm, alg, first, second) in cases {
        let database = TestDatabase::create(&Backend::Sqlite).await;
        let dir = tempfile::tempdir().unwrap();
        let signing = dir.path().join("signing.pem");
        let verify = dir.path().join("verify.pem");
        std::fs::copy(key(first), &signing).unwrap();
        std::fs::copy(key(first), &verify).unwrap();
        let env = [
            ("AUTH_JWT_ALGORITHM", alg),
            ("AUTH_JWT_PRIVATE_KEY_FILE", signing.to_str().unwrap()),
            ("AUTH_JWT_VERIFY_KEY_FILES", verify.to_str().unwrap()),
        ];
        let auth_server = ChildServer::on(&database.url).envs(&env).start().await;
        let mut auth = auth_server.auth_client();
        let user = auth
            .register(register_request("consumed"))
            .await
            .unwrap()
            .into_inner();
        let login = pb::ObtainTokenPairRequest {
            username: "consumed".into(),
            password: PASSWORD.into(),
        };
        let pair = auth
            .obtain_token_pair(login.clone())
            .await
            .unwrap()
            .into_inner();

        let verifier = Verifier::builder()
            .jwks_grpc(auth_server.channel())
            .algorithms([algorithm])
            .min_refetch_interval(Duration::from_millis(100))
            .build()
            .await
            .unwrap();
        let orders = consumer(&verifier).await;
        assert_eq!(me(&orders, &pair.access).await.unwrap(), user.id, "{alg}");

        // Refused, with the auth service's own messages.
        let kid = crate::helpers::header(&pair.access)["kid"]
            .as_str()
            .unwrap()
            .to_owned();
        let mut expired = claims(&pair.access);
        expired["exp"] = (expired["iat"].as_i64().unwrap() - 10).into();
        let mut tampered = pair.access.clone();
        let last = tampered.pop().unwrap();
        tampered.push(if last == 'A' { 'B' } else { 'A' });
        let payload = claims(&pair.access);
        let refused = [
            (
                "refresh-typed",
                pair.refresh.clone(),
                "Token has wrong type",
            ),
            (
                "expired",
                sign(algorithm, first, &kid, &expired),
                "Token is expired",
            ),
            ("tampered", tampered, "Token is invalid"),
            (
                "another key, our kid",
                sign(algorithm, second, &kid, &payload),
                "Token is invalid",
            ),
            (
                "an unknown kid",
                sign(algorithm, second, "unknown-kid", &payload),
                "Token is invalid",
            ),
        ];
        for (case, token, message) in refused {
            let status = me(&orders, &token).await.unwrap_err();
            assert_eq!(
                (status.code(), status.message()),
                (Code::Unauthenticated, message),
                "{alg}: {case}"
            );
        }

        // Rotation on the auth service, picked up without restarting the consumer.
        std::fs::copy(key(second), &signing).unwrap();
        std::fs::copy(key(first), &verify).unwrap();
        auth_server.signal("HUP");
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            let set = auth
                .get_jwks(pb::GetJwksRequest {})
                .await
                .unwrap()
                .into_inner();
            if set.keys.len() == 2 {
                break;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{alg}: not reloaded"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let rotated = auth.obtain_token_pair(login).await.unwrap().into_inner();
        // The unknown-kid probe above just used up the rate-limited refetch.
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert_ne!(crate::helpers::header(&rotated.access)["kid"], kid.as_str());
        assert_eq!(
            me(&orders, &rotated.access).await.unwrap(),
            user.id,
            "{alg}"
        );
        assert_eq!(me(&orders, &pair.access).await.unwrap(), user.id, "{alg}");

        // The auth service gone: the consumer goes on with the keys it has.
        let output = auth_server.terminate(Duration::from_secs(30)).await;
        assert!(output.status.success());
        assert_eq!(
            me(&orders, &rotated.access).await.unwrap(),
            user.id,
            "{alg}"
        );
        assert_eq!(me(&orders, &pair.access).await.unwrap(), user.id, "{alg}");
    }
}

/// Service tokens (issue 15), before the grant RPC exists: issued here by
/// a `TokenCodec` on the auth service's own key file, for a real account
/// and with a real secret's id as `cid`, so exactly what the service will
/// sign. The auth service's UserService refuses them as a stock simplejwt
/// does; a consumer takes them only where told to, and a service-to-service
/// call behind `require_service` needs the scope: a token without it, or a
/// user's token, is PERMISSION_DENIED with the reason a client can act on.
/// The auth service's VerifyToken sees the token revoked at once when its
/// secret is removed (a consumer verifying on its own sees it at expiry).
#[tokio::test]
async fn service_tokens_signed_with_our_key_reach_consumers_that_take_services_only() {
    let database = TestDatabase::create(&Backend::Sqlite).await;
    let key_file = key("ed25519-1.pem");
    let env = [
        ("AUTH_JWT_ALGORITHM", "EdDSA"),
        ("AUTH_JWT_PRIVATE_KEY_FILE", key_file.to_str().unwrap()),
    ];
    let auth_server = ChildServer::on(&database.url).envs(&env).start().await;
    let superuser = create_superuser(&database.url, "root", "root@example.com", PASSWORD);
    assert!(superuser.status.success(), "{}", stderr(&superuser));
    let mut auth = auth_server.auth_client();
    auth.register(register_request("person")).await.unwrap();
    let login = |username: &str| pb::ObtainTokenPairRequest {
        username: username.into(),
        password: PASSWORD.into(),
    };
    let person = auth.obtain_token_pair(login("person")).await.unwrap();
    let person = person.into_inner();
    let root = auth.obtain_token_pair(login("root")).await.unwrap();
    let root = root.into_inner().access;
    let mut admin = AdminServiceClient::new(auth_server.channel());
    let billing = admin
        .create_service_account(bearer(
            pb::CreateServiceAccountRequest {
                name: "billing".into(),
                scopes: vec!["orders.read".into(), "orders.write".into()],
            },
            &root,
        ))
        .await
        .unwrap()
        .into_inner();
    let secret = admin
        .add_service_account_secret(bearer(
            pb::AddServiceAccountSecretRequest { id: billing.id },
            &root,
        ))
        .await
        .unwrap()
        .into_inner();

    let pem = std::fs::read_to_string(&key_file).unwrap();
    let ring = KeyRing::asymmetric(Algorithm::EdDSA, ("ed25519-1.pem", &pem), &[]).unwrap();
    let codec =
        TokenCodec::with_keys(ring, Duration::from_secs(60), Duration::from_secs(600)).unwrap();
    let service = |scopes: &[&str]| {
        codec
            .issue_service("billing", scopes, &secret.secret_id, unix_now())
            .unwrap()
            .token
    };
    let reader = service(&["orders.read"]);

    let wrong_type = (Code::Unauthenticated, "Token has wrong type");
    let own_user_service = UserServiceClient::new(auth_server.channel());
    let status = own_user_service
        .clone()
        .get_me(bearer(pb::GetMeRequest {}, &reader))
        .await
        .unwrap_err();
    assert_eq!((status.code(), status.message()), wrong_type);

    let verifier = Verifier::builder()
        .jwks_grpc(auth_server.channel())
        .algorithms([Algorithm::EdDSA])
        .build()
        .await
        .unwrap();
    let users_only = consumer(&verifier).await;
    let status = me(&users_only, &reader).await.unwrap_err();
    assert_eq!((status.code(), status.message()), wrong_type);

    // Service to service with a required scope.
    let services_only = consumer_behind(verifier.layer().require_service(["orders.read"])).await;
    let answer = services_only
        .clone()
        .get_me(bearer(pb::GetMeRequest {}, &reader))
        .await
        .unwrap()
        .into_inner();
    assert_eq!((answer.id, answer.username.as_str()), (0, "billing"));
    let status = me(&services_only, &service(&["orders.write"]))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");
    assert_eq!(error_reason(&status), "insufficient_scope", "{status:?}");
    let scope = status
        .get_error_details()
        .error_info()
        .and_then(|info| info.metadata.get("scope").cloned());
    assert_eq!(scope.as_deref(), Some("orders.read"), "{status:?}");
    let status = me(&services_only, &person.access).await.unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");
    assert_eq!(
        error_reason(&status),
        "service_token_required",
        "{status:?}"
    );

    // The auth service itself knows the token, until its secret goes.
    let verify = |token: String| {
        let mut auth = auth_server.auth_client();
        async move { auth.verify_token(pb::VerifyTokenRequest { token }).await }
    };
    let verified = verify(reader.clone()).await.unwrap().into_inner();
    assert_eq!(
        (verified.token_type.as_str(), verified.client_id.as_str()),
        ("service", "billing")
    );
    assert_eq!(verified.scopes, ["orders.read"]);
    admin
        .remove_service_account_secret(bearer(
            pb::RemoveServiceAccountSecretRequest {
                id: billing.id,
                secret_id: secret.secret_id.clone(),
            },
            &root,
        ))
        .await
        .unwrap();
    let status = verify(reader.clone()).await.unwrap_err();
    assert_eq!(status.code(), Code::Unauthenticated, "{status:?}");
    assert_eq!(error_reason(&status), "credential_revoked", "{status:?}");
}
