# syntax=docker/dockerfile:1
# hegui's webhook and operator: one image, two commands (`hegui webhook serve`,
# `hegui operator run`), as the chart runs them. Build from the repository root:
#
#   docker build -f images/hegui.Dockerfile -t registry.example.cn/hegui/hegui:0.1.0 .
#
# Bases are pinned by exact version; pin them by digest too in your registry mirror
# (FROM python:3.11.13-slim-bookworm@sha256:...). tests/unit/test_chart.py checks the structure.

# Build: a virtual environment with hegui and its runtime dependencies (no dev, ml or triton
# extras: the webhook and operator need neither torch nor tritonserver).
FROM python:3.11.13-slim-bookworm AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PYTHONDONTWRITEBYTECODE=1
WORKDIR /src
COPY pyproject.toml README.md ./
COPY operator/hegui operator/hegui
COPY admission/hegui admission/hegui
COPY crds/hegui crds/hegui
COPY sidecars/hegui sidecars/hegui
RUN python -m venv /opt/hegui \
 && /opt/hegui/bin/pip install . \
 && /opt/hegui/bin/hegui --help > /dev/null

# Runtime: the same base without build leftovers; non-root (65532, as the chart's
# securityContext), read-only root filesystem friendly (nothing written outside /tmp).
FROM python:3.11.13-slim-bookworm AS runtime
COPY --from=build /opt/hegui /opt/hegui
ENV PATH=/opt/hegui/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HOME=/tmp
USER 65532:65532
EXPOSE 9443 8080 8081
ENTRYPOINT ["hegui"]
CMD ["--help"]
