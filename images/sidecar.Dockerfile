# syntax=docker/dockerfile:1
# hegui's moderation and labeling sidecar: images/sidecar.toml, built by a platform team's own
# pipeline. The same definition and the same builder (images/build.py) as the local build,
# which needs no docker:
#
#   images/build.py sidecar            # .cache/images/sidecar.tar (OCI archive), .spdx.json, .json
#   docker build -f images/sidecar.Dockerfile -t registry.example.cn/hegui/sidecar:0.1.0 .
#
# The build stage extracts Debian's packages with mmdebstrap and installs hegui's wheel and its
# dependencies from PyPI; the image itself starts from scratch: no shell, no package manager.
# tests/unit/test_image_definitions.py keeps this file and images/sidecar.toml in step.
FROM debian:bookworm-20250520-slim AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_BREAK_SYSTEM_PACKAGES=1 PYTHONDONTWRITEBYTECODE=1
RUN apt-get update \
 && apt-get install -y --no-install-recommends mmdebstrap python3 python3-pip ca-certificates \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY pyproject.toml README.md ./
COPY images images
COPY operator/hegui operator/hegui
COPY admission/hegui admission/hegui
COPY crds/hegui crds/hegui
COPY sidecars/hegui sidecars/hegui
RUN python3 images/build.py sidecar --out /cache --rootfs /rootfs

FROM scratch AS sidecar
COPY --from=build /rootfs /
ENV PATH=/opt/hegui/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin PYTHONPATH=/opt/hegui/lib PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 HOME=/tmp
USER 65532:65532
WORKDIR /tmp
EXPOSE 8443
ENTRYPOINT ["/usr/bin/python3.11", "-m", "hegui.sidecar"]
CMD ["--help"]
