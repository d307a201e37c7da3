"""A webhook server for the benchmark, in its own process: the real rules or allow-all.

The index is filled from objects made here (no cluster needed): a policy enforcing every
namespace, and `--services` GenerativeServices spread over 10 namespaces, as a busy cluster has.
"""

from __future__ import annotations

import argparse
import asyncio
from pathlib import Path

from prometheus_client import CollectorRegistry

from hegui.admission import review, server
from hegui.admission.mutate import make_mutator
from hegui.admission.validate import make_validator
from hegui.rules.index import ComplianceIndex


def service(namespace: str, index: int) -> dict[str, object]:
    return {"apiVersion": "hegui.io/v1alpha1", "kind": "GenerativeService",
            "metadata": {"name": f"svc-{index}", "namespace": namespace},
            "spec": {"selector": {"matchLabels": {"app": f"model-{index}"}},
                     "filing": {"publicOpinion": True,
                                "algorithm": {"number": "网信算备110108823483901230011号"}},
                     "assessment": {"external": {"reportId": f"R-{index}",
                                                 "assessedOn": "2026-06-01",
                                                 "expiresOn": "2099-06-01", "result": "Pass"}},
                     "labeling": {"modalities": ["text"],
                                  "implicit": {"contentProducer": "Example AI Co."}}}}


def attestation(namespace: str, index: int) -> dict[str, object]:
    """The assessor's record of service `index`'s external report: what makes it count
    (rule assessment, Art.17), so the reviewed Deployment is compliant and admitted."""
    return {"apiVersion": "hegui.io/v1alpha1", "kind": "SafetyAssessment",
            "metadata": {"name": f"external-r-{index}", "namespace": namespace,
                         "generation": 1},
            "spec": {"serviceRef": {"name": f"svc-{index}"}, "questionBanks": [
                {"name": "refuse", "kind": "ShouldRefuse",
                 "configMapRef": {"name": "banks", "key": "refuse.txt"}},
                {"name": "answer", "kind": "ShouldAnswer",
                 "configMapRef": {"name": "banks", "key": "answer.txt"}}]},
            "status": {"verdict": "Pass", "reportId": f"R-{index}", "observedGeneration": 1,
                       "assessor": "Example Assessment Centre",
                       "completedAt": "2026-06-01T00:00:00Z",
                       "expiresAt": "2099-06-01T00:00:00Z"}}


def build_index(services: int) -> ComplianceIndex:
    policy = {"apiVersion": "hegui.io/v1alpha1", "kind": "CompliancePolicy",
              "metadata": {"name": "bench"},
              "spec": {"namespaceSelector": {}, "defaultMode": "Enforce",
                       "sidecar": {"image": "registry.example.cn/hegui/sidecar:0.1.0",
                                   "resources": {"requests": {"cpu": "100m", "memory": "128Mi"},
                                                 "limits": {"cpu": "1", "memory": "512Mi"}}}}}
    return ComplianceIndex.from_objects(
        [policy, *(service(f"ns-{i % 10}", i) for i in range(services)),
         *(attestation(f"ns-{i % 10}", i) for i in range(services))])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--mode", choices=["rules", "allow-all"], required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--cert-file", type=Path, required=True)
    parser.add_argument("--key-file", type=Path, required=True)
    parser.add_argument("--services", type=int, default=200)
    args = parser.parse_args()
    registry = CollectorRegistry()
    index = build_index(args.services)
    allow_all: server.Validator = lambda request: review.Decision(True)  # noqa: E731
    rules = args.mode == "rules"
    app = server.make_app(make_validator(index, registry) if rules else allow_all,
                          mutator=make_mutator(index) if rules else allow_all,
                          registry=registry)
    settle = getattr(server, "settle_heap", None)  # none in an older checkout (--compare-with)
    if settle is not None:
        settle()  # as `server.run` does once the watches have listed everything
    asyncio.run(server.serve(app, host="127.0.0.1", port=args.port, cert_file=args.cert_file,
                             key_file=args.key_file))


if __name__ == "__main__":
    main()
