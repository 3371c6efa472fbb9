use auth_service::pb;
use std::time::Duration;

use auth_service::config::{ListUsersAccess, Settings};
use tonic::Code;

use crate::helpers::{TestApp, bearer, expect_code, on_every_backend};

async fn update_avatar(
    app: &TestApp,
    access: &str,
    avatar: &str,
) -> Result<pb::User, tonic::Status> {
    app.users
        .clone()
        .update_avatar(bearer(
            pb::UpdateAvatarRequest {
                avatar: avatar.into(),
            },
            access,
        ))
        .await
        .map(tonic::Response::into_inner)
}

#[tokio::test]
async fn get_me_returns_the_caller() {
    on_every_backend(async |backend| {
        let app = TestApp::spawn(&backend).await;
        let (dan, dan_tokens) = app.signed_up("dan").await;
        app.signed_up("eve").await;
        let me = app.get_me(&dan_tokens.access).await.unwrap();
        assert_eq!(me, dan);
        app.stop().await;
    })
    .await;
}

#[tokio::test]
async fn update_avatar_sets_clears_and_validates() {
    on_every_backend(async |backend| {
        let app = TestApp::spawn(&backend).await;
        let (_, pair) = app.signed_up("fay").await;
        let url = "https://cdn.example.com/fay.png";
        let user = update_avatar(&app, &pair.access, url).await.unwrap();
        assert_eq!(user.avatar.as_deref(), Some(url));
        // Setting the same value again is fine (MySQL reports 0 changed rows).
        update_avatar(&app, &pair.access, url).await.unwrap();
        assert_eq!(
            app.get_me(&pair.access)
                .await
                .ok()
                .and_then(|u| u.avatar)
                .as_deref(),
            Some(url)
        );

        let user = update_avatar(&app, &pair.access, "").await.unwrap();
        assert_eq!(user.avatar, None);

        for bad in [
            "not a url",
            "ftp://example.com/a.png",
            &format!("https://example.com/{}", "a".repeat(200)),
        ] {
            let status = expect_code(
                update_avatar(&app, &pair.access, bad).await,
                Code::InvalidArgument,
            );
            assert!(
                status.message().starts_with("avatar:"),
                "{}",
                status.message()
            );
        }
        expect_code(
            update_avatar(&app, "garbage", url).await,
            Code::Unauthenticated,
        );
        app.stop().await;
    })
    .await;
}

/// The avatar GetMe answers for the bearer of `access`.
async fn avatar_seen(app: &TestApp, access: &str) -> Option<String> {
    app.get_me(access).await.unwrap().avatar
}

/// The user cache (`AUTH_USER_CACHE_TTL`): this replica's own writes are
/// seen at once even with a long TTL; another replica's writes and changes
/// made in the database within the TTL.
#[tokio::test]
async fn cached_profiles_follow_own_writes_at_once_and_others_within_the_ttl() {
    on_every_backend(async |backend| {
        let hour = |s: &mut Settings| s.cache.ttl = Duration::from_secs(3600);
        let app = TestApp::spawn_with(&backend, hour).await;
        let (_, pair) = app.signed_up("gil").await;
        app.get_me(&pair.access).await.unwrap();
        let url = "https://cdn.example.com/gil.png";
        update_avatar(&app, &pair.access, url).await.unwrap();
        assert_eq!(
            avatar_seen(&app, &pair.access).await.as_deref(),
            Some(url),
            "own write not seen at once"
        );
        app.stop().await;

        let short = |s: &mut Settings| s.cache.ttl = Duration::from_millis(300);
        let app = TestApp::spawn_with(&backend, short).await;
        let replica = TestApp::spawn_on_with(app.database_url(), short).await;
        let (hal, pair) = app.signed_up("hal").await;
        app.get_me(&pair.access).await.unwrap();
        update_avatar(&replica, &pair.access, url).await.unwrap();
        tokio::time::sleep(app.cache_ttl).await;
        assert_eq!(
            avatar_seen(&app, &pair.access).await.as_deref(),
            Some(url),
            "other replica's write not seen"
        );
        // Deactivated in the database (set_active waits out the TTL).
        app.set_active(hal.id, false).await;
        for server in [&app, &replica] {
            expect_code(server.get_me(&pair.access).await, Code::Unauthenticated);
            expect_code(server.refresh(&pair.refresh).await, Code::Unauthenticated);
        }
        replica.stop().await;
        app.stop().await;
    })
    .await;
}

#[tokio::test]
async fn with_the_user_cache_off_deactivation_is_seen_at_once() {
    on_every_backend(async |backend| {
        let off = |s: &mut Settings| s.cache.ttl = Duration::ZERO;
        let app = TestApp::spawn_with(&backend, off).await;
        assert!(app.cache_ttl.is_zero());
        let (ida, pair) = app.signed_up("ida").await;
        app.get_me(&pair.access).await.unwrap();
        app.set_active(ida.id, false).await;
        expect_code(app.get_me(&pair.access).await, Code::Unauthenticated);
        app.stop().await;
    })
    .await;
}

#[tokio::test]
async fn list_users_pages_through_everyone_once_in_id_order() {
    on_every_backend(async |backend| {
        let app = TestApp::spawn(&backend).await;
        let (_, pair) = app.signed_up("gus").await;
        app.seed_users(119, |_| false).await; // 120 users in all

        let mut seen = Vec::new();
        let mut token = String::new();
        let mut pages = 0;
        loop {
            let page = app
                .list_users_page(&pair.access, "", 50, &token)
                .await
                .unwrap();
            pages += 1;
            assert!(page.users.len() <= 50);
            seen.extend(page.users.iter().map(|u| u.id));
            if page.next_page_token.is_empty() {
                break;
            }
            token = page.next_page_token;
        }
        assert_eq!(pages, 3);
        assert_eq!(seen.len(), 120);
        assert!(
            seen.windows(2).all(|w| w[0] < w[1]),
            "ordered by id, no duplicates"
        );

        // An exact multiple of the page size ends without an empty extra page.
        let page = app
            .list_users_page(&pair.access, "", 120, "")
            .await
            .unwrap();
        assert_eq!(page.users.len(), 120);
        assert!(page.next_page_token.is_empty());
        app.stop().await;
    })
    .await;
}

#[tokio::test]
async fn list_users_page_size_defaults_clamps_and_validates() {
    on_every_backend(async |backend| {
        let app = TestApp::spawn(&backend).await;
        let (_, pair) = app.signed_up("hal").await;
        app.seed_users(1004, |_| false).await; // 1005 users

        let page = app.list_users_page(&pair.access, "", 0, "").await.unwrap();
        assert_eq!(page.users.len(), 50, "0 means the default");
        let page = app
            .list_users_page(&pair.access, "", 5000, "")
            .await
            .unwrap();
        assert_eq!(page.users.len(), 1000, "clamped to 1000");
        let rest = app
            .list_users_page(&pair.access, "", 5000, &page.next_page_token)
            .await
            .unwrap();
        assert_eq!(rest.users.len(), 5);

        let status = expect_code(
            app.list_users_page(&pair.access, "", -1, "").await,
            Code::InvalidArgument,
        );
        assert!(
            status.message().starts_with("page_size:"),
            "{}",
            status.message()
        );
        let mut tampered = page.next_page_token.clone();
        let last = tampered
            .pop()
            .map_or('A', |c| if c == 'A' { 'B' } else { 'A' });
        tampered.push(last);
        let status = expect_code(
            app.list_users_page(&pair.access, "", 10, &tampered).await,
            Code::InvalidArgument,
        );
        assert!(
            status.message().starts_with("page_token:"),
            "{}",
            status.message()
        );
        expect_code(
            app.list_users_page(&pair.access, "", 10, "not-a-token")
                .await,
            Code::InvalidArgument,
        );
        app.stop().await;
    })
    .await;
}

/// The default, as DRF's AllUsersView (IsAuthenticated): any user lists
/// everyone, emails and staff flags included.
#[tokio::test]
async fn by_default_any_user_may_list_users() {
    on_every_backend(async |backend| {
        let app = TestApp::spawn(&backend).await;
        let (_, pair) = app.signed_up("ivy").await;
        let (jon, _) = app.signed_up("jon").await;
        let page = app.list_users_page(&pair.access, "", 10, "").await.unwrap();
        assert!(page.users.contains(&jon), "{page:?}");
        app.stop().await;
    })
    .await;
}

/// `AUTH_LIST_USERS=staff`: only a caller whose current row is staff may
/// list; a change in the database counts within the cache TTL.
#[tokio::test]
async fn with_staff_only_listing_non_staff_callers_are_denied() {
    on_every_backend(async |backend| {
        let staff_only = |s: &mut Settings| {
            s.accounts.list_users = ListUsersAccess::Staff;
            s.cache.ttl = Duration::from_millis(300);
        };
        let app = TestApp::spawn_with(&backend, staff_only).await;
        let (_, user) = app.signed_up("kim").await;
        let (lee, admin) = app.signed_up("lee").await;
        let status = expect_code(
            app.list_users_page(&user.access, "", 10, "").await,
            Code::PermissionDenied,
        );
        assert!(status.message().contains("staff"), "{}", status.message());
        // Not staff when the token was issued: the row decides, not the token.
        expect_code(
            app.list_users_page(&admin.access, "", 10, "").await,
            Code::PermissionDenied,
        );
        app.set_staff(lee.id, true).await;
        let page = app
            .list_users_page(&admin.access, "", 10, "")
            .await
            .unwrap();
        assert_eq!(page.users.len(), 2);
        // Demoted in the database: refused once the cache TTL has passed.
        app.set_staff(lee.id, false).await;
        expect_code(
            app.list_users_page(&admin.access, "", 10, "").await,
            Code::PermissionDenied,
        );
        app.stop().await;
    })
    .await;
}
