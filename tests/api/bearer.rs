//! The UserService bearer check, exercised through GetMe.

use auth_service::pb;
use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use tonic::{Code, Request};

use crate::helpers::{
    HS256_HEADER, SECRET, TestApp, bearer, expect_code, forge, hs256_signature, on_every_backend,
    simplejwt_claims, with_authorization,
};

async fn get_me(
    app: &TestApp,
    request: Request<pb::GetMeRequest>,
) -> Result<pb::User, tonic::Status> {
    app.users
        .clone()
        .get_me(request)
        .await
        .map(tonic::Response::into_inner)
}

#[tokio::test]
async fn bad_bearer_credentials_are_unauthenticated() {
    on_every_backend(async |backend| {
        let app = TestApp::spawn(&backend).await;
        let (user, pair) = app.signed_up("yvonne").await;
        let id = user.id;

        let unsigned = format!(
            "{}.{}.",
            URL_SAFE_NO_PAD.encode(r#"{"alg":"none","typ":"JWT"}"#),
            URL_SAFE_NO_PAD.encode(simplejwt_claims("access", id, 600).to_string())
        );
        let mut tampered_claims = simplejwt_claims("access", id, 600);
        let honest = forge(HS256_HEADER, &tampered_claims, SECRET);
        tampered_claims["user_id"] = serde_json::json!("999999");
        let forged_payload = forge(HS256_HEADER, &tampered_claims, SECRET);
        // The tampered payload with the honest token's signature.
        let tampered = {
            let honest_sig = honest.rsplit('.').next().unwrap_or_default();
            let (unsigned_part, _) = forged_payload.rsplit_once('.').unwrap_or_default();
            format!("{unsigned_part}.{honest_sig}")
        };

        let cases: Vec<(&str, Request<pb::GetMeRequest>, &str)> = vec![
            (
                "no metadata",
                Request::new(pb::GetMeRequest {}),
                "Authentication credentials were not provided.",
            ),
            (
                "Basic scheme",
                with_authorization(pb::GetMeRequest {}, "Basic dXNlcjpwYXNz"),
                "Authentication credentials were not provided.",
            ),
            (
                "three parts",
                with_authorization(
                    pb::GetMeRequest {},
                    &format!("Bearer {} extra", pair.access),
                ),
                "Authorization header must contain two space-delimited values",
            ),
            (
                "bare Bearer",
                with_authorization(pb::GetMeRequest {}, "Bearer"),
                "Authorization header must contain two space-delimited values",
            ),
            (
                "garbage",
                bearer(pb::GetMeRequest {}, "garbage"),
                "Token is invalid",
            ),
            (
                "expired",
                bearer(
                    pb::GetMeRequest {},
                    &forge(HS256_HEADER, &simplejwt_claims("access", id, -5), SECRET),
                ),
                "Token is expired",
            ),
            (
                "wrong signature",
                bearer(
                    pb::GetMeRequest {},
                    &forge(
                        HS256_HEADER,
                        &simplejwt_claims("access", id, 600),
                        "not the key",
                    ),
                ),
                "Token is invalid",
            ),
            (
                "tampered payload",
                bearer(pb::GetMeRequest {}, &tampered),
                "Token is invalid",
            ),
            (
                "refresh token",
                bearer(pb::GetMeRequest {}, &pair.refresh),
                "Token has wrong type",
            ),
            (
                "alg none",
                bearer(pb::GetMeRequest {}, &unsigned),
                "Token is invalid",
            ),
            (
                "HS512",
                bearer(
                    pb::GetMeRequest {},
                    &forge(
                        r#"{"alg":"HS512","typ":"JWT"}"#,
                        &simplejwt_claims("access", id, 600),
                        SECRET,
                    ),
                ),
                "Invalid algorithm specified",
            ),
        ];
        for (case, request, message) in cases {
            let status = expect_code(get_me(&app, request).await, Code::Unauthenticated);
            assert_eq!(status.message(), message, "case {case}");
        }
        // The honest forged token is fine: the cases above fail for their own reason.
        get_me(&app, bearer(pb::GetMeRequest {}, &honest))
            .await
            .unwrap();
        app.stop().await;
    })
    .await;
}

#[tokio::test]
async fn tokens_of_deleted_or_deactivated_users_stop_working() {
    on_every_backend(async |backend| {
        let app = TestApp::spawn(&backend).await;
        let (zoe, zoe_tokens) = app.signed_up("zoe").await;
        let (amy, amy_tokens) = app.signed_up("amy").await;
        app.set_active(zoe.id, false).await;
        app.delete_user(amy.id).await;
        let status = expect_code(app.get_me(&zoe_tokens.access).await, Code::Unauthenticated);
        assert_eq!(status.message(), "User is inactive");
        let status = expect_code(app.get_me(&amy_tokens.access).await, Code::Unauthenticated);
        assert_eq!(status.message(), "User not found");
        // Reactivation restores access: nothing was revoked, only refused.
        app.set_active(zoe.id, true).await;
        app.get_me(&zoe_tokens.access).await.unwrap();
        app.stop().await;
    })
    .await;
}

#[tokio::test]
async fn tokens_from_django_are_accepted() {
    on_every_backend(async |backend| {
        let app = TestApp::spawn(&backend).await;
        let (user, _) = app.signed_up("bella").await;
        // simplejwt 5.5.1 (string user_id) and older versions (integer user_id),
        // with either header key order PyJWT has produced.
        let mut old_style = simplejwt_claims("access", user.id, 600);
        old_style["user_id"] = serde_json::json!(user.id);
        for token in [
            forge(
                HS256_HEADER,
                &simplejwt_claims("access", user.id, 600),
                SECRET,
            ),
            forge(r#"{"typ":"JWT","alg":"HS256"}"#, &old_style, SECRET),
        ] {
            let me = app.get_me(&token).await.unwrap();
            assert_eq!(me.id, user.id);
        }
        app.stop().await;
    })
    .await;
}

#[tokio::test]
async fn our_tokens_carry_a_signature_any_hs256_implementation_accepts() {
    on_every_backend(async |backend| {
        let app = TestApp::spawn(&backend).await;
        let (_, pair) = app.signed_up("carl").await;
        for token in [&pair.access, &pair.refresh] {
            // Re-sign the token's own header and payload by hand: same signature.
            let (signing_input, signature) = token.rsplit_once('.').unwrap_or_default();
            assert_eq!(hs256_signature(signing_input, SECRET), signature);
        }
        app.stop().await;
    })
    .await;
}
