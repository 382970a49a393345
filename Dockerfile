# The one Laneway image: `laneway operator` (the Deployment in helm/laneway) and `laneway serve`
# (the router sidecar the webhook injects) are the same program. Build it with `make images`.
#
# Stage 1 installs the package and its pinned dependencies into a virtualenv; stage 2 copies only
# that virtualenv onto a clean base, so no compiler, pip cache or source tree ships. The image
# runs as the unprivileged UID/GID 65532 and needs no writable path except /tmp (the chart mounts
# a memory-backed one because the root filesystem is read-only).

# Pinned by tag. To pin the exact bytes as well, append the digest your registry reports:
#   docker build --build-arg PYTHON_IMAGE=python:3.11.11-slim-bookworm@sha256:... .
ARG PYTHON_IMAGE=python:3.11.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1
RUN python -m venv /opt/laneway
WORKDIR /src
# Only what the distribution needs; .dockerignore keeps tests, docs and local venvs out.
COPY pyproject.toml README.md constraints.txt ./
COPY laneway ./laneway
COPY router_sidecar ./router_sidecar
COPY operator ./operator
# pip also byte-compiles, so nothing needs to write .pyc files at run time.
RUN /opt/laneway/bin/pip install -c constraints.txt .

FROM ${PYTHON_IMAGE}
LABEL org.opencontainers.image.title="laneway" \
      org.opencontainers.image.description="Kubernetes-native LLM routing: operator and router sidecar" \
      org.opencontainers.image.licenses="Apache-2.0"
ENV PATH=/opt/laneway/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1
COPY --from=build /opt/laneway /opt/laneway
# A numeric user, so Kubernetes can verify runAsNonRoot without a passwd lookup.
USER 65532:65532
WORKDIR /tmp
# The sidecar's default port (the operator listens on 8080 for metrics and 9443 for the webhook).
EXPOSE 4000 8080 9443
ENTRYPOINT ["laneway"]
CMD ["--help"]
