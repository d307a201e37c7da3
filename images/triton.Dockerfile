# syntax=docker/dockerfile:1
# Triton Inference Server with hegui's moderation models: images/triton.toml, built by a platform team's own
# pipeline. The same definition and the same builder (images/build.py) as the local build,
# which needs no docker:
#
#   images/build.py triton            # .cache/images/triton.tar (OCI archive), .spdx.json, .json
#   docker build -f images/triton.Dockerfile -t registry.example.cn/hegui/triton:0.1.0 .
#
# The build stage extracts Debian's packages with mmdebstrap and installs hegui's wheel and its
# dependencies from PyPI; the image itself starts from scratch: no shell, no package manager.
# tests/unit/test_image_definitions.py keeps this file and images/triton.toml in step.
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
COPY sidecars/triton/models sidecars/triton/models
RUN python3 images/build.py triton --out /cache --rootfs /rootfs

FROM scratch AS triton
COPY --from=build /rootfs /
ENV PATH=/opt/hegui/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin PYTHONPATH=/opt/hegui/lib PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 HOME=/tmp LD_LIBRARY_PATH=/usr/lib/x86_64-linux-gnu:/opt/hegui/lib/nvidia_pytriton.libs HEGUI_TRITON_PYTHONPATH=/opt/hegui/lib
USER 65532:65532
WORKDIR /tmp
EXPOSE 8000 8001 8002
ENTRYPOINT ["/opt/hegui/bin/triton-start", "--cache-directory=/opt/hegui/lib/pytriton/tritonserver/caches", "--allow-sagemaker=false", "--allow-vertex-ai=false", "--exit-on-error=true", "--strict-readiness=true"]
CMD ["--model-repository=/models"]
