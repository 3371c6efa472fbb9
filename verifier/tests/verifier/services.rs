//! Service tokens: `verify_any`, and guards that take services with
//! required scopes (`require_service`) or users and services
//! (`allow_service`), as a client sees them.

use auth_verifier::{Authenticated, Verifier, VerifyError};
use serde_json::json;

use crate::support::{
    Callers, GUARDS, TestKey, access_claims, assert_denied, assert_refused, call_as,
    call_with_token, jwks, now, serve_orders, serve_orders_to, service_claims,
};

async fn verifier_for(key: &TestKey) -> Verifier {
    Verifier::builder()
        .jwks_json(jwks(&[key]).to_string())
        .build()
        .await
        .unwrap()
}

#[tokio::test]
async fn verify_any_tells_users_from_services_and_verify_takes_users_only() {
    let key = TestKey::p256();
    let verifier = verifier_for(&key).await;
    let token = key.service("billing", &["auth.admin", "orders.read"]);

    let Ok(Authenticated::Service(service)) = verifier.verify_any(&token).await else {
        panic!("not a service");
    };
    assert_eq!(service.client_id, "billing");
    assert_eq!(service.scopes, ["auth.admin", "orders.read"]);
    assert_eq!(service.claims.kid, key.kid);
    assert_eq!(service.claims.cid, "0123456789abcdef0123456789abcdef");
    assert_eq!(
        verifier.verify_any_cached(&token),
        Ok(Authenticated::Service(service))
    );

    let user = verifier.verify_any(&key.access(4)).await.unwrap();
    assert_eq!(user.user().map(|u| u.user_id), Some(4));

    // The user-only API is unchanged: a service token has the wrong type.
    assert_eq!(verifier.verify(&token).await, Err(VerifyError::WrongType));
    assert_eq!(verifier.verify_cached(&token), Err(VerifyError::WrongType));

    let mut expired = service_claims("billing", &[]);
    expired["exp"] = json!(now() - 1);
    let mut bad_scope = service_claims("billing", &[]);
    bad_scope["scope"] = json!("a,b");
    let mut refresh = access_claims(4);
    refresh["token_type"] = json!("refresh");
    for (case, claims, expected) in [
        ("expired", expired, VerifyError::Expired),
        ("bad scope", bad_scope, VerifyError::Invalid),
        ("refresh", refresh, VerifyError::WrongType),
    ] {
        assert_eq!(
            verifier.verify_any(&key.sign(&claims)).await,
            Err(expected),
            "{case}"
        );
    }
}

#[tokio::test]
async fn require_service_takes_services_with_the_scopes_only() {
    let key = TestKey::ed25519_a();
    let verifier = verifier_for(&key).await;
    for guard in GUARDS {
        let channel = serve_orders_to(&verifier, guard, Callers::Services(&["orders.read"])).await;

        let reply = call_as(
            &channel,
            &key.service("billing", &["auth.admin", "orders.read"]),
        )
        .await
        .unwrap();
        assert_eq!(
            (reply.user_id, reply.client_id.as_str(), reply.scopes.len()),
            (0, "billing", 2),
            "{guard:?}"
        );

        let lacking: [&[&str]; 3] = [&[], &["orders.write"], &["orders"]];
        for scopes in lacking {
            assert_denied(
                call_as(&channel, &key.service("billing", scopes)).await,
                "insufficient_scope",
                &[("scope", "orders.read")],
            );
        }
        // A valid user token is no service: denied, not unauthenticated,
        // so the client does not go and get a new token.
        assert_denied(
            call_with_token(&channel, &key.access(3)).await,
            "service_token_required",
            &[],
        );
        // A bad token is still UNAUTHENTICATED.
        let mut expired = service_claims("billing", &["orders.read"]);
        expired["exp"] = json!(now() - 1);
        assert_refused(
            call_with_token(&channel, &key.sign(&expired)).await,
            "Token is expired",
            "token_not_valid",
        );
    }

    // Several scopes: each missing one is named.
    let channel = serve_orders_to(
        &verifier,
        crate::support::Guard::ServerLayer,
        Callers::Services(&["orders.read", "orders.write", "audit"]),
    )
    .await;
    let denied = call_as(&channel, &key.service("billing", &["orders.read"])).await;
    let message = denied.as_ref().map_err(|s| s.message().to_owned()).err();
    assert_eq!(
        message.as_deref(),
        Some("The token lacks the required scope: orders.write audit")
    );
    assert_denied(
        denied,
        "insufficient_scope",
        &[("scope", "orders.write audit")],
    );

    // No scope required: any service token.
    let channel = serve_orders_to(
        &verifier,
        crate::support::Guard::Interceptor,
        Callers::Services(&[]),
    )
    .await;
    assert!(
        call_as(&channel, &key.service("billing", &[]))
            .await
            .is_ok()
    );
}

#[tokio::test]
async fn allow_service_takes_users_and_services_with_the_scopes() {
    let key = TestKey::rsa2048();
    let verifier = verifier_for(&key).await;
    for guard in GUARDS {
        let channel = serve_orders_to(
            &verifier,
            guard,
            Callers::UsersAndServices(&["orders.read"]),
        )
        .await;
        assert_eq!(
            call_with_token(&channel, &key.access(8)).await.ok(),
            Some(8),
            "{guard:?}"
        );
        let reply = call_as(&channel, &key.service("billing", &["orders.read"]))
            .await
            .unwrap();
        assert_eq!(reply.client_id, "billing", "{guard:?}");
        assert_denied(
            call_as(&channel, &key.service("billing", &["orders.write"])).await,
            "insufficient_scope",
            &[("scope", "orders.read")],
        );
    }
}

#[tokio::test]
async fn the_default_guards_refuse_service_tokens_as_the_auth_service_does() {
    let key = TestKey::ed25519_a();
    let verifier = verifier_for(&key).await;
    for guard in GUARDS {
        let channel = serve_orders(&verifier, guard).await;
        assert_refused(
            call_with_token(&channel, &key.service("billing", &["orders.read"])).await,
            "Token has wrong type",
            "token_not_valid",
        );
        assert_eq!(
            call_with_token(&channel, &key.access(2)).await.ok(),
            Some(2)
        );
    }
}
