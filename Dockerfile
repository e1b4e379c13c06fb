# syntax=docker/dockerfile:1
# Multi-stage build: wheels are built with the toolchain in the first stage; the final stage has only
# the runtime, runs as a non-root user and works with a read-only root filesystem.
# The build context is limited by .dockerignore to pyproject.toml, README.md and src/.

FROM python:3.11-slim AS build
WORKDIR /build
RUN pip install --no-cache-dir --upgrade pip build
COPY pyproject.toml README.md ./
COPY src ./src
RUN pip wheel --no-cache-dir --wheel-dir /wheels ".[charts]"

FROM python:3.11-slim AS runtime
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    AGENTIC_OBS_CONFIG=/etc/agentic-obs/config.yaml \
    NUMBA_CACHE_DIR=/tmp/numba-cache
RUN groupadd --system --gid 10001 agentic \
 && useradd --system --uid 10001 --gid agentic --no-create-home --shell /usr/sbin/nologin agentic \
 && mkdir -p /var/lib/agentic-obs /etc/agentic-obs \
 && chown agentic:agentic /var/lib/agentic-obs
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir /wheels/*.whl && rm -rf /wheels
USER 10001:10001
WORKDIR /var/lib/agentic-obs
EXPOSE 8000
VOLUME ["/var/lib/agentic-obs"]
HEALTHCHECK --interval=30s --timeout=3s CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/api/v1/health', timeout=2)"]
ENTRYPOINT ["agentic-obs"]
CMD ["serve"]
