"""A service token of ours (issue 15) against a stock simplejwt 5.5.1.

Usage: check_service_token.py SIGNING_KEY TOKEN

A DRF view guarded by djangorestframework-simplejwt's JWTAuthentication,
configured with the HS256 key it shares with us and nothing else, must
refuse the token with "Token has wrong type": it is a service's, not a
user's. Its signature, exp and jti are good (UntypedToken, which checks
only those, accepts it), so the type is what refuses it.

Exits non-zero with a message on failure. Run by tests/api/interop.rs.
"""

import sys


def main() -> None:
    signing_key, token = sys.argv[1:3]

    import django
    from django.conf import settings

    settings.configure(
        SECRET_KEY="interop-test-only-not-a-signing-key",
        INSTALLED_APPS=[
            "django.contrib.auth",
            "django.contrib.contenttypes",
            "rest_framework",
            "rest_framework_simplejwt",
        ],
        DATABASES={"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": ":memory:"}},
        ROOT_URLCONF=__name__,
        ALLOWED_HOSTS=["testserver"],
        REST_FRAMEWORK={
            "DEFAULT_AUTHENTICATION_CLASSES": [
                "rest_framework_simplejwt.authentication.JWTAuthentication"
            ],
            "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
        },
        SIMPLE_JWT={"SIGNING_KEY": signing_key},
    )
    django.setup()

    from django.core.management import call_command
    from django.test import Client
    from django.urls import path
    from rest_framework.response import Response
    from rest_framework.views import APIView
    from rest_framework_simplejwt.tokens import UntypedToken

    class Me(APIView):
        def get(self, request):
            return Response({"id": request.user.id})

    global urlpatterns
    urlpatterns = [path("me", Me.as_view())]
    call_command("migrate", verbosity=0)

    UntypedToken(token)
    refused = Client().get("/me", HTTP_AUTHORIZATION=f"Bearer {token}")
    assert refused.status_code == 401, (refused.status_code, refused.content)
    body = refused.json()
    assert body["code"] == "token_not_valid", body
    assert [m["message"] for m in body["messages"]] == ["Token has wrong type"], body
    print("simplejwt refuses the service token: Token has wrong type")


urlpatterns = []


if __name__ == "__main__":
    main()
