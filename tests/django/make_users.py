"""Creates the Django database the import-django test reads: migrates, then
registers users through Django's own API with each password hasher the
service must verify (and some it must refuse), and prints them as JSON with
simplejwt tokens made for one of them.

Run with tests/django on PYTHONPATH, DJANGO_SETTINGS_MODULE=seedblog.settings
and the variables settings.py reads.
"""

import datetime
import json
import sys

import django

django.setup()

from django.conf import settings  # noqa: E402
from django.contrib.auth import get_user_model  # noqa: E402
from django.contrib.auth.hashers import make_password  # noqa: E402
from django.core.management import call_command  # noqa: E402
from django.test import override_settings  # noqa: E402
from rest_framework_simplejwt.tokens import RefreshToken  # noqa: E402

ARGON2 = ["django.contrib.auth.hashers.Argon2PasswordHasher"]
BCRYPT_SHA256 = ["django.contrib.auth.hashers.BCryptSHA256PasswordHasher"]

User = get_user_model()
seed = settings.SEED_MODEL


def create(username, password, email=None, **extra):
    email = f"{username}@example.com" if email is None else email
    if seed:
        return User.objects.create_user(email, username, password, **extra)
    return User.objects.create_user(username, email, password, **extra)


def main():
    call_command("migrate", verbosity=0, interactive=False)
    users = {}

    def record(user, password):
        users[user.username] = {
            "id": user.id,
            "email": user.email,
            "password": password,
            "hash": user.password.split("$", 1)[0],
        }

    # Django's default hasher: PBKDF2-SHA256, 1,000,000 iterations in 5.2.
    paul = create("paul", "paul-django-pw-1")
    paul.avatar = "https://example.com/paul.png" if seed else None
    paul.last_login = datetime.datetime(2025, 1, 2, 3, 4, 5, 678901, tzinfo=datetime.timezone.utc)
    paul.save()
    record(paul, "paul-django-pw-1")

    with override_settings(PASSWORD_HASHERS=ARGON2):
        record(create("ada", "ada-django-pw-2"), "ada-django-pw-2")
        ivy = create("ivy", "ivy-django-pw-3", is_active=False)
        record(ivy, "ivy-django-pw-3")
    with override_settings(PASSWORD_HASHERS=BCRYPT_SHA256):
        record(create("bea", "bea-django-pw-4"), "bea-django-pw-4")

    # set_password(None): an unusable password ("!" and 40 random characters).
    record(create("uma", None), "uma-django-pw-5")
    # A hasher the service does not support: imported as unusable.
    sam = create("sam", None)
    sam.password = make_password("sam-django-pw-6", hasher="scrypt")
    sam.save()
    record(sam, "sam-django-pw-6")

    if seed:
        root = User.objects.create_superuser("root@example.com", "root", "root-django-pw-7")
    else:
        root = User.objects.create_superuser("root", "root@example.com", "root-django-pw-7")
    record(root, "root-django-pw-7")

    if not seed:
        # auth_user.email may be blank; the service needs an email.
        record(create("blank", "blank-django-pw-8", email=""), "blank-django-pw-8")

    refresh = RefreshToken.for_user(paul)
    json.dump(
        {
            "users": users,
            "tokens": {"user_id": paul.id, "refresh": str(refresh), "access": str(refresh.access_token)},
        },
        sys.stdout,
    )


main()
