# syntax=docker/dockerfile:1
# The moderation and labeling sidecar (`python -m hegui.sidecar`), injected by the webhook into
# every pod of a covered service (its image is the CompliancePolicy's spec.sidecar.image), and
# the Triton Inference Server image with hegui's model repository (sidecars/triton/models).
# Build from the repository root:
#
#   docker build -f images/sidecar.Dockerfile --target sidecar -t registry.example.cn/hegui/sidecar:0.1.0 .
#   docker build -f images/sidecar.Dockerfile --target triton  -t registry.example.cn/hegui/triton:0.1.0 .
#
# Bases are pinned by exact version; pin them by digest too in your registry mirror.
# tests/unit/test_chart.py checks the structure.

# The hegui wheel, shared by both images.
FROM python:3.11.13-slim-bookworm AS wheel
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
COPY pyproject.toml README.md ./
COPY operator/hegui operator/hegui
COPY admission/hegui admission/hegui
COPY crds/hegui crds/hegui
COPY sidecars/hegui sidecars/hegui
RUN pip wheel --no-deps --wheel-dir /wheels .

# The sidecar's environment: hegui with the `sidecar` extra (numpy, pillow for image labels).
FROM python:3.11.13-slim-bookworm AS sidecar-build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
COPY --from=wheel /wheels /wheels
RUN python -m venv /opt/hegui \
 && /opt/hegui/bin/pip install "$(ls /wheels/hegui-*.whl)[sidecar]" \
 && /opt/hegui/bin/python -m hegui.sidecar --help > /dev/null

# The models' Python code (hegui.moderation runs inside Triton's Python backend, the same code
# as in the sidecar and the tests), for the Triton image's own Python: 3.12 in 25.01.
FROM python:3.12.11-slim-bookworm AS triton-libs
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
COPY --from=wheel /wheels /wheels
RUN pip install --no-deps --target /opt/hegui-triton /wheels/hegui-*.whl \
 && pip install --target /opt/hegui-triton "numpy>=1.26,<2"

# Triton with hegui's model repository: lexicon, pii and their ensemble `moderation`.
FROM nvcr.io/nvidia/tritonserver:25.01-py3 AS triton
COPY --from=triton-libs /opt/hegui-triton /opt/hegui-triton
COPY sidecars/triton/models /models
# The Python backend stub runs isolated from PYTHONPATH; the models read this instead.
ENV HEGUI_TRITON_PYTHONPATH=/opt/hegui-triton HOME=/tmp
USER 65532:65532
EXPOSE 8000 8001 8002
ENTRYPOINT ["tritonserver"]
CMD ["--model-repository=/models", "--model-control-mode=none", "--strict-readiness=true"]

# The sidecar (last, so the default target): non-root (65532, as the webhook injects it), no
# capabilities, read-only root filesystem friendly (records go to a mounted volume).
FROM python:3.11.13-slim-bookworm AS sidecar
COPY --from=sidecar-build /opt/hegui /opt/hegui
ENV PATH=/opt/hegui/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HOME=/tmp
USER 65532:65532
EXPOSE 8443
ENTRYPOINT ["python", "-m", "hegui.sidecar"]
CMD ["--help"]
