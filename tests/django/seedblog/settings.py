"""Settings of a minimal Django project with the seed blog's user model, for
the import-django test (tests/api/django_import.rs). Everything comes from
the environment:

- DJANGO_DATABASE_URL: sqlite:///path, postgres://user:pw@host:port/name or
  mysql://user:pw@host:port/name;
- DJANGO_USER_MODEL: "seed" (users.UserProfile, the default) or "stock"
  (django.contrib.auth's auth_user);
- DJANGO_SIGNING_KEY: simplejwt's HS256 key (the service's under test).
"""

import os
from urllib.parse import unquote, urlsplit

SECRET_KEY = os.environ.get("DJANGO_SIGNING_KEY", "not-a-secret")
DEBUG = False
USE_TZ = True
TIME_ZONE = "UTC"
# As projects started before Django 3.2 have it: 32-bit ids.
DEFAULT_AUTO_FIELD = "django.db.models.AutoField"

SEED_MODEL = os.environ.get("DJANGO_USER_MODEL", "seed") == "seed"

INSTALLED_APPS = [
    "django.contrib.contenttypes",
    "django.contrib.auth",
    "rest_framework",
    "rest_framework_simplejwt",
]
if SEED_MODEL:
    # Only then: beside auth.User, the model's PermissionsMixin relations clash.
    INSTALLED_APPS.append("users")
    AUTH_USER_MODEL = "users.UserProfile"

SIMPLE_JWT = {
    "ALGORITHM": "HS256",
    "SIGNING_KEY": SECRET_KEY,
    "USER_ID_FIELD": "id",
    "USER_ID_CLAIM": "user_id",
}


def _database(url):
    parts = urlsplit(url)
    if parts.scheme == "sqlite":
        # sqlite:///tmp/x.db (absolute path), as SeaORM spells it.
        return {"ENGINE": "django.db.backends.sqlite3", "NAME": unquote(parts.path)}
    engine = {
        "postgres": "django.db.backends.postgresql",
        "postgresql": "django.db.backends.postgresql",
        "mysql": "django.db.backends.mysql",
    }[parts.scheme]
    database = {
        "ENGINE": engine,
        "NAME": unquote(parts.path.lstrip("/")),
        "USER": unquote(parts.username or ""),
        "PASSWORD": unquote(parts.password or ""),
        "HOST": parts.hostname or "",
        "PORT": str(parts.port or ""),
    }
    if parts.scheme == "mysql":
        database["OPTIONS"] = {"charset": "utf8mb4"}
    return database


DATABASES = {"default": _database(os.environ["DJANGO_DATABASE_URL"])}

if DATABASES["default"]["ENGINE"].endswith("mysql"):
    # PyMySQL stands in for mysqlclient (which needs a C toolchain); Django
    # checks the mysqlclient version it claims to be.
    import pymysql

    pymysql.version_info = (2, 2, 1, "final", 0)
    pymysql.install_as_MySQLdb()
