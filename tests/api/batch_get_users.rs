//! UserService/BatchGetUsers: users by id in one call (AIP-231), with
//! ListUsers' visibility.

use std::time::Duration;

use auth_service::{
    config::{ListUsersAccess, Settings},
    pb,
};
use sea_orm::ConnectionTrait;
use tonic::{Code, Status};

use crate::helpers::{TestApp, bearer, expect_code, field_violations, on_every_backend};

async fn batch_get(
    app: &TestApp,
    access: &str,
    ids: Vec<i64>,
) -> Result<pb::BatchGetUsersResponse, Status> {
    app.users
        .clone()
        .batch_get_users(bearer(pb::BatchGetUsersRequest { ids }, access))
        .await
        .map(tonic::Response::into_inner)
}

async fn list_all(app: &TestApp, access: &str) -> Vec<pb::User> {
    app.users
        .clone()
        .list_users(bearer(
            pb::ListUsersRequest {
                page_size: 1000,
                ..Default::default()
            },
            access,
        ))
        .await
        .unwrap()
        .into_inner()
        .users
}

fn ids(users: &[pb::User]) -> Vec<i64> {
    users.iter().map(|u| u.id).collect()
}

#[tokio::test]
async fn batch_get_users_answers_in_request_order_with_duplicates_and_missing_ids() {
    on_every_backend(async |backend| {
        let app = TestApp::spawn(&backend).await;
        let (amy, pair) = app.signed_up("amy").await;
        let bea = app.register("bea").await;
        let cal = app.register("cal").await;
        // Inactive users are listed by ListUsers, so they are found here too.
        app.set_active(cal.id, false).await;
        let gone = cal.id + 1000;

        let batch = batch_get(
            &app,
            &pair.access,
            vec![cal.id, gone, amy.id, cal.id, bea.id, gone, amy.id, gone + 1],
        )
        .await
        .unwrap();
        assert_eq!(
            ids(&batch.users),
            [cal.id, amy.id, cal.id, bea.id, amy.id],
            "request order, duplicates repeated"
        );
        assert_eq!(batch.missing_ids, [gone, gone, gone + 1]);
        // The fields ListUsers shows, user by user.
        let listed = list_all(&app, &pair.access).await;
        for user in &batch.users {
            let same = listed.iter().find(|u| u.id == user.id);
            assert_eq!(Some(user), same, "as ListUsers shows it");
        }
        assert!(batch.users.iter().any(|u| u.id == cal.id && !u.is_active));

        // Nothing asked, nothing answered.
        let empty = batch_get(&app, &pair.access, Vec::new()).await.unwrap();
        assert!(empty.users.is_empty() && empty.missing_ids.is_empty());
        // Only missing ids.
        let none = batch_get(&app, &pair.access, vec![gone]).await.unwrap();
        assert!(none.users.is_empty());
        assert_eq!(none.missing_ids, [gone]);
        app.stop().await;
    })
    .await;
}

#[tokio::test]
async fn batch_get_users_takes_up_to_1000_valid_ids() {
    on_every_backend(async |backend| {
        let app = TestApp::spawn(&backend).await;
        let (dan, pair) = app.signed_up("dan").await;
        let eve = app.register("eve").await;

        // 1000 ids, two of them users', the rest (over 998 distinct) missing.
        let mut request: Vec<i64> = (0..1000).map(|i| 1_000_000 + i).collect();
        request[0] = eve.id;
        request[999] = dan.id;
        let batch = batch_get(&app, &pair.access, request.clone())
            .await
            .unwrap();
        assert_eq!(ids(&batch.users), [eve.id, dan.id]);
        assert_eq!(batch.missing_ids, request[1..999]);

        request.push(dan.id);
        let status = expect_code(
            batch_get(&app, &pair.access, request).await,
            Code::InvalidArgument,
        );
        let violations = field_violations(&status);
        assert_eq!(violations.len(), 1, "{violations:?}");
        assert_eq!(violations[0].0, "ids");
        assert!(violations[0].1.contains("1000"), "{violations:?}");

        for bad in [0, -7] {
            let status = expect_code(
                batch_get(&app, &pair.access, vec![dan.id, bad]).await,
                Code::InvalidArgument,
            );
            let violations = field_violations(&status);
            assert_eq!(violations.len(), 1, "{violations:?}");
            assert_eq!(violations[0].0, "ids");
            assert!(violations[0].1.contains("ids[1]"), "{violations:?}");
        }
        expect_code(
            batch_get(&app, "not-a-token", vec![dan.id]).await,
            Code::Unauthenticated,
        );
        app.stop().await;
    })
    .await;
}

/// Served from the user cache, which never hides this replica's own writes.
#[tokio::test]
async fn batch_get_users_sees_own_writes_at_once_through_the_cache() {
    on_every_backend(async |backend| {
        let hour = |s: &mut Settings| s.cache.ttl = Duration::from_secs(3600);
        let app = TestApp::spawn_with(&backend, hour).await;
        let (fay, pair) = app.signed_up("fay").await;
        let gil = app.register("gil").await;
        let first = batch_get(&app, &pair.access, vec![fay.id, gil.id])
            .await
            .unwrap();
        assert_eq!(first.users[0].avatar, None);
        let url = "https://cdn.example.com/fay.png";
        app.users
            .clone()
            .update_avatar(bearer(
                pb::UpdateAvatarRequest { avatar: url.into() },
                &pair.access,
            ))
            .await
            .unwrap();
        let again = batch_get(&app, &pair.access, vec![gil.id, fay.id])
            .await
            .unwrap();
        assert_eq!(ids(&again.users), [gil.id, fay.id]);
        assert_eq!(again.users[1].avatar.as_deref(), Some(url));
        app.stop().await;
    })
    .await;
}

/// Administration through this replica is seen at once, even with users
/// cached for an hour: a deleted user is missing, a deactivated one shows
/// `is_active = false` (only other replicas' or the database's own changes
/// wait for AUTH_CACHE_TTL).
#[tokio::test]
async fn batch_get_users_sees_deletion_and_deactivation_at_once_through_the_cache() {
    on_every_backend(async |backend| {
        let hour = |s: &mut Settings| s.cache.ttl = Duration::from_secs(3600);
        let app = TestApp::spawn_with(&backend, hour).await;
        let (sam, staff) = app.signed_up("sam").await;
        app.db
            .execute_unprepared(&format!(
                "UPDATE users SET is_staff = TRUE WHERE id = {}",
                sam.id
            ))
            .await
            .unwrap();
        let hal = app.register("hal").await;
        let ivy = app.register("ivy").await;
        // Both cached, as they are now.
        let before = batch_get(&app, &staff.access, vec![hal.id, ivy.id])
            .await
            .unwrap();
        assert_eq!(ids(&before.users), [hal.id, ivy.id]);
        assert!(before.users.iter().all(|u| u.is_active));

        let mut admin = app.admin_client();
        admin
            .set_user_active(bearer(
                pb::SetUserActiveRequest {
                    id: hal.id,
                    active: false,
                },
                &staff.access,
            ))
            .await
            .unwrap();
        admin
            .delete_user(bearer(pb::DeleteUserRequest { id: ivy.id }, &staff.access))
            .await
            .unwrap();

        let after = batch_get(&app, &staff.access, vec![hal.id, ivy.id])
            .await
            .unwrap();
        assert_eq!(ids(&after.users), [hal.id]);
        assert!(!after.users[0].is_active, "{:?}", after.users[0]);
        assert_eq!(after.missing_ids, [ivy.id]);
        app.stop().await;
    })
    .await;
}

/// `AUTH_LIST_USERS=staff`: BatchGetUsers and filtered ListUsers follow
/// ListUsers' rule (the caller's current row decides).
#[tokio::test]
async fn with_staff_only_listing_batches_and_filters_are_staff_only() {
    on_every_backend(async |backend| {
        let staff_only = |s: &mut Settings| {
            s.accounts.list_users = ListUsersAccess::Staff;
            s.cache.ttl = Duration::from_millis(300);
        };
        let app = TestApp::spawn_with(&backend, staff_only).await;
        let (kim, user) = app.signed_up("kim").await;
        let (lee, admin) = app.signed_up("lee").await;
        let filtered = |access: &str| {
            let request = pb::ListUsersRequest {
                filter: r#"username = "KIM""#.into(),
                ..Default::default()
            };
            let mut users = app.users.clone();
            let request = bearer(request, access);
            async move {
                users
                    .list_users(request)
                    .await
                    .map(tonic::Response::into_inner)
            }
        };
        for access in [&user.access, &admin.access] {
            let status = expect_code(
                batch_get(&app, access, vec![kim.id]).await,
                Code::PermissionDenied,
            );
            assert!(status.message().contains("staff"), "{}", status.message());
            expect_code(filtered(access).await, Code::PermissionDenied);
        }
        app.set_staff(lee.id, true).await;
        let batch = batch_get(&app, &admin.access, vec![kim.id, lee.id])
            .await
            .unwrap();
        assert_eq!(ids(&batch.users), [kim.id, lee.id]);
        let page = filtered(&admin.access).await.unwrap();
        assert_eq!(ids(&page.users), [kim.id]);
        expect_code(
            batch_get(&app, &user.access, vec![kim.id]).await,
            Code::PermissionDenied,
        );
        app.stop().await;
    })
    .await;
}
