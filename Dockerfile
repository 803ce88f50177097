# syntax=docker/dockerfile:1
#
# The sqsjobs poller image: `sqsjobs work` plus your jobs. See docs/deploy.md.
#
#   docker build --platform linux/amd64 --build-arg APP_DIR=myapp -t myapp-worker .
#   docker run --rm -e SQSJOBS_APP=myapp.jobs -e AWS_REGION=eu-west-1 myapp-worker work --queue high,default
#
# APP_DIR is a top-level package directory of the build context holding your jobs (the module that
# SQSJOBS_APP names); the default is this repository's quick-start jobs. EXTRA_PIP lists any packages
# your jobs need (e.g. "httpx==0.27.2 psycopg[binary]").

ARG PYTHON_VERSION=3.12

FROM python:${PYTHON_VERSION}-slim AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
WORKDIR /src
COPY pyproject.toml README.md ./
COPY sqsjobs ./sqsjobs
COPY lambda_handlers ./lambda_handlers
RUN pip install .
ARG EXTRA_PIP=""
RUN if [ -n "$EXTRA_PIP" ]; then pip install $EXTRA_PIP; fi

FROM python:${PYTHON_VERSION}-slim
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1
RUN groupadd --system --gid 10001 sqsjobs \
 && useradd --system --uid 10001 --gid sqsjobs --home-dir /app --no-create-home --shell /usr/sbin/nologin sqsjobs
COPY --from=build /opt/venv /opt/venv
WORKDIR /app
# `sqsjobs work` imports SQSJOBS_APP from the working directory too, so the jobs package sits here.
ARG APP_DIR=samples
COPY ${APP_DIR} ./${APP_DIR}
USER 10001:10001

# Exec form: `sqsjobs` itself is PID 1 (no shell in between), so the SIGTERM that `docker stop` or ECS
# sends reaches the worker, which stops receiving, returns unstarted messages at once, lets running jobs
# finish and exits 0. A Python process installs its own SIGTERM handler, so running as PID 1 is safe.
# Jobs that start subprocesses should run with an init that reaps them: `docker run --init`, or ECS
# `initProcessEnabled` (infra/template.yaml sets it); the init forwards SIGTERM to sqsjobs.
STOPSIGNAL SIGTERM
ENTRYPOINT ["sqsjobs"]
CMD ["work", "--queue", "high,default", "--concurrency", "4"]
