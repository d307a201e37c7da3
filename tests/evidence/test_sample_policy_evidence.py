"""The sample CompliancePolicy's evidence section (samples/compliance/policy.yaml), commented
out so the demo runs without a store, is a working declaration once uncommented (Art.11)."""

from __future__ import annotations

from pathlib import Path

import yaml

from hegui.api.policy import CompliancePolicy
from hegui.evidence import config

SAMPLE = Path(__file__).parents[2] / "samples" / "compliance" / "policy.yaml"


def _uncommented() -> str:
    """The sample with its `# evidence:` block uncommented, as a reader would."""
    lines = SAMPLE.read_text(encoding="utf-8").splitlines()
    start = lines.index("  # evidence:")
    out = lines[:start]
    for line in lines[start:]:
        if not line.startswith("  # "):
            break
        out.append("  " + line[len("  # "):])
    return "\n".join(out) + "\n"


def test_the_sample_evidence_section_uncommented_is_a_valid_store_for_the_charts_minio() -> None:
    as_shipped = CompliancePolicy.from_dict(yaml.safe_load(SAMPLE.read_text(encoding="utf-8")))
    assert as_shipped.spec.evidence is None  # the demo runs without a store
    policy = CompliancePolicy.from_dict(yaml.safe_load(_uncommented()))
    evidence = policy.spec.evidence
    assert evidence is not None
    assert evidence.store.retention_days == 180 and evidence.anchor_interval == "10m"
    # What the operator renders for the sidecars: the chart's MinIO Service and bucket.
    rendered = yaml.safe_load(config.render(evidence)[config.CONFIG_FILE])
    assert rendered == {"store": "http://hegui-evidence.hegui-system.svc:9000/hegui-evidence",
                        "retentionDays": 180}
    values = yaml.safe_load((SAMPLE.parents[2] / "charts" / "hegui" / "values.yaml")
                            .read_text(encoding="utf-8"))["evidence"]
    assert evidence.store.credentials_secret_name == values["credentialsSecretName"]
    assert evidence.store.bucket == values["objectStore"]["bucket"]
    assert evidence.store.endpoint.split("//")[1].split(".")[0] == \
        values["objectStore"]["serviceName"]
