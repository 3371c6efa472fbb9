"""Verifies one of our access tokens with real Python clients of our JWKS.

Usage: check_token.py JWKS_URL ALG TOKEN USER_ID

- PyJWT's PyJWKClient fetches the key named by the token's kid from our
  /.well-known/jwks.json and verifies the token with it (every algorithm).
- For RS256 and ES256 (simplejwt 5.5.1 has no EdDSA), a DRF view guarded by
  djangorestframework-simplejwt's JWTAuthentication, configured with
  ALGORITHM and JWK_URL only (no shared key), accepts the token as the user.

Exits non-zero with a message on the first failure. Run by
tests/api/interop.rs, which starts the real server.
"""

import sys

import jwt

SIMPLEJWT_ALGORITHMS = {"RS256", "ES256"}


def check_pyjwt(url: str, alg: str, token: str, user_id: str) -> None:
    client = jwt.PyJWKClient(url)
    key = client.get_signing_key_from_jwt(token)
    claims = jwt.decode(token, key.key, algorithms=[alg])
    assert claims["user_id"] == user_id, claims
    assert claims["token_type"] == "access", claims
    # The key that signed is not enough for another algorithm.
    try:
        jwt.decode(token, key.key, algorithms=["HS256"])
    except jwt.InvalidTokenError:
        pass
    else:
        raise AssertionError("PyJWT accepted the token as HS256")


def check_simplejwt(url: str, alg: str, token: str, user_id: str) -> None:
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
        SIMPLE_JWT={"ALGORITHM": alg, "JWK_URL": url},
    )
    django.setup()

    from django.contrib.auth.models import User
    from django.core.management import call_command
    from django.test import Client
    from django.urls import path
    from rest_framework.response import Response
    from rest_framework.views import APIView

    class Me(APIView):
        def get(self, request):
            return Response({"id": request.user.id})

    global urlpatterns
    urlpatterns = [path("me", Me.as_view())]

    call_command("migrate", verbosity=0)
    User.objects.create(id=int(user_id), username="interop")
    client = Client()
    ok = client.get("/me", HTTP_AUTHORIZATION=f"Bearer {token}")
    assert ok.status_code == 200, (ok.status_code, ok.content)
    assert ok.json() == {"id": int(user_id)}, ok.content
    tampered = token[:-4] + ("AAAA" if not token.endswith("AAAA") else "BBBB")
    refused = client.get("/me", HTTP_AUTHORIZATION=f"Bearer {tampered}")
    assert refused.status_code == 401, (refused.status_code, refused.content)


urlpatterns = []


def main() -> None:
    url, alg, token, user_id = sys.argv[1:5]
    check_pyjwt(url, alg, token, user_id)
    if alg in SIMPLEJWT_ALGORITHMS:
        check_simplejwt(url, alg, token, user_id)
    print(f"{alg}: PyJWT" + (" and simplejwt" if alg in SIMPLEJWT_ALGORITHMS else "") + " accept the token")


if __name__ == "__main__":
    main()
