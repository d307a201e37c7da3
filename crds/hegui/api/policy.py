"""`CompliancePolicy` (cluster-scoped): where hegui enforces, how strictly, and its defaults."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import timedelta
from enum import StrEnum
from typing import Annotated, Literal

from pydantic import Field

from hegui.api.articles import Rule
from hegui.api.common import (
    API_VERSION,
    ApiModel,
    ApiObject,
    CamelName,
    Condition,
    DnsLabel,
    DnsSubdomain,
    Duration,
    Image,
    LabelKey,
    LabelSelector,
    Quantity,
    Ratio,
    cel_bad_duration,
    cel_rule,
    parse_duration,
)
from hegui.api.generativeservice import (
    Direction,
    FailureMode,
    LabelPosition,
    ModeratedRoute,
    TritonEndpoint,
)

#: The longest exemption any policy may grant: 90 days. Hard-wired in the CRD (CEL) so that no
#: policy, however written, can grant a standing exemption.
MAX_EXCEPTION_DURATION = "2160h"

#: Namespaces hegui never enforces in, whatever a policy says: the control plane's and its own.
ALWAYS_EXCLUDED_NAMESPACES = ("kube-system", "kube-public", "kube-node-lease", "hegui-system")

#: A dotted path to a field, `[*]` for every item of a list: spec.roles[*].template.
FieldPath = Annotated[str, Field(min_length=1, max_length=128,
                                 pattern=r"^[A-Za-z0-9_]+(\[\*\])?(\.[A-Za-z0-9_]+(\[\*\])?)*$")]
ResourceName = Annotated[str, Field(min_length=1, max_length=253,
                                    pattern=r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?(/[-_.A-Za-z0-9]*)?$")]


class EnforcementMode(StrEnum):
    """What a broken rule does at admission."""

    ENFORCE = "Enforce"  # refuse the workload, naming rule, article and fix
    WARN = "Warn"  # admit it with a warning to the client
    AUDIT = "Audit"  # admit it silently; report in status, events and metrics


_STRICTNESS = {EnforcementMode.AUDIT: 0, EnforcementMode.WARN: 1, EnforcementMode.ENFORCE: 2}


def strictest(modes: list[EnforcementMode]) -> EnforcementMode:
    """Where several policies select one namespace, the strictest mode of a rule applies."""
    return max(modes, key=_STRICTNESS.__getitem__)


class RuleMode(ApiModel):
    """The mode of one rule, overriding the policy's default mode."""

    rule: Rule = Field(description="The rule, e.g. filing (Art.17) or labeling (Art.12).")
    mode: EnforcementMode = Field(description="Enforce, Warn or Audit.")


class ResourceList(ApiModel):
    """CPU and memory, as in a container's requests or limits."""

    cpu: Quantity | None = Field(default=None, description="CPU, e.g. 100m.")
    memory: Quantity | None = Field(default=None, description="Memory, e.g. 128Mi.")


class Resources(ApiModel):
    """Requests and limits of the injected container, so that resource quotas admit the pod."""

    requests: ResourceList = Field(default_factory=ResourceList, description="Requests.")
    limits: ResourceList = Field(default_factory=ResourceList, description="Limits.")


class SidecarOverride(StrEnum):
    """A field of the sidecar container that a pod may set by declaring a container named
    hegui-sidecar itself (as with Istio's istio-proxy); every other field is the policy's."""

    RESOURCES = "resources"  # e.g. more memory for long streams
    ENV = "env"  # more variables; hegui's own (HEGUI_*) are never replaced


class TrafficCapture(StrEnum):
    """How traffic to the model's ports is made to pass through the sidecar (Art.14)."""

    # An init container (hegui-capture, root with NET_ADMIN and NET_RAW, as Istio's istio-init)
    # redirects every inbound TCP connection in the pod's network namespace to the sidecar's
    # port, except the ports the GenerativeService declares open (spec.traffic): a Service that
    # targets the model's port by number reaches the sidecar too.
    REDIRECT = "Redirect"
    # For namespaces whose Pod Security forbids NET_ADMIN (baseline, restricted): the sidecar
    # takes the serving port's name and the NetworkPolicy admits only its port, so a Service
    # that targets the model's port by number is cut (and reported), never moderated.
    PORT_NAME = "PortName"


class RulesPlacement(StrEnum):
    """Where the injected sidecars run the keyword lexicon and personal-information rules."""

    # In the sidecar's own process: no network hop a streamed window, and the lexicon the
    # sidecar image ships (or a provider's own image).
    IN_PROCESS = "InProcess"
    # In Triton's rule models (the posture's Triton model, e.g. `moderation`): the provider's
    # lexicon lives in one place, Triton's model repository, and an update reaches every
    # sidecar when Triton reloads it; each window costs a hop to Triton.
    TRITON = "Triton"


class SidecarLexicon(ApiModel):
    """The provider's keyword lexicon (GB/T 45654-2025 关键词库) for the injected sidecars: kept
    by the compliance group as ConfigMaps in hegui's own namespace (the release namespace, where
    teams hold no rights), rendered by the operator into each covered service's
    hegui-sidecar-<service> ConfigMap, and reloaded by the running sidecars when it changes
    (Art.4(1), Art.14)."""

    config_maps: list[DnsSubdomain] = Field(
        min_length=1, max_length=16,
        description="ConfigMaps in hegui's namespace whose keys are keyword files (*.tsv in "
                    "data, or *.tsv.gz in binaryData: category<TAB>keyword[<TAB>score], "
                    "'# version: V'). A key may appear in one of them only. The whole list, "
                    "gzip-compressed, must fit the 1 MiB of a ConfigMap, else it is not "
                    "rendered, the sidecars keep the list they have and the services report "
                    "it; a larger list runs in Triton (rules: Triton, the chart's "
                    "triton.lexicon.configMaps).",
        json_schema_extra={"x-kubernetes-list-type": "set"})


#: An IPv4 or IPv6 block in CIDR notation, as a NetworkPolicy's ipBlock takes it.
Cidr = Annotated[str, Field(
    min_length=9, max_length=43,
    pattern=r"^((((25[0-5]|2[0-4][0-9]|1?[0-9]?[0-9])\.){3}(25[0-5]|2[0-4][0-9]|1?[0-9]?[0-9])"
            r"/(3[0-2]|[12]?[0-9]))|([0-9a-fA-F]{0,4}:){2,7}[0-9a-fA-F]{0,4}"
            r"/(12[0-8]|1[01][0-9]|[1-9]?[0-9]))$")]


class EgressMode(StrEnum):
    """What the pods of a covered service may dial (Art.14: a model that dials out, a reverse
    tunnel or a queue it pulls prompts from, serves around the sidecar, which sees only what
    comes in)."""

    # Only cluster DNS, hegui's namespace (Triton, the evidence store), the service's own
    # fronted pods on its PodToPod ports, and the destinations the policy names.
    RESTRICTED = "Restricted"
    # Anywhere (Kubernetes' default): hegui governs only what comes in.
    OPEN = "Open"


class EgressPort(ApiModel):
    """A port (or range) a destination is dialled on."""

    port: Annotated[int, Field(ge=1, le=65535)] = Field(description="The port, or the first of "
                                                                    "a range.")
    end_port: Annotated[int, Field(ge=1, le=65535)] | None = Field(
        default=None, description="The last port of a range; absent: one port.")
    protocol: Literal["TCP", "UDP", "SCTP"] = Field(default="TCP", description="TCP, UDP or "
                                                                               "SCTP.")

    @cel_rule("!has(self.endPort) || self.endPort >= self.port",
              "endPort must not be below port (rule injection, Art.14)", field_path=".endPort")
    def _range_ordered(self) -> bool:
        return self.end_port is None or self.end_port >= self.port


class EgressDestination(ApiModel):
    """Somewhere the pods of covered services may dial when egress is Restricted: an address
    block (an object store with model weights, an external Triton) or a namespace."""

    cidr: Cidr | None = Field(default=None, description="An address block, e.g. "
                                                        "10.20.0.0/16.")
    namespace: DnsLabel | None = Field(default=None, description="Every pod of this namespace.")
    ports: list[EgressPort] = Field(default_factory=list, max_length=8,
                                    description="The ports; empty: every port.")
    reason: Annotated[str, Field(min_length=3, max_length=128)] = Field(
        description="What the pods dial there, e.g. model weights from the OSS mirror; shown "
                    "in audits.")

    @cel_rule("has(self.cidr) != has(self.namespace)",
              "name exactly one of cidr and namespace (rule injection, Art.14)")
    def _one_kind(self) -> bool:
        return (self.cidr is None) != (self.namespace is None)


class Egress(ApiModel):
    """What the pods of covered services may dial (Art.14). Kept in the service's NetworkPolicy
    `hegui-<service>` (so only where `networkPolicy` is true) and enforced by the cluster's
    network plugin; the admission guard refuses a team's NetworkPolicy that would widen it."""

    mode: EgressMode = Field(
        default=EgressMode.RESTRICTED,
        description="Restricted (default): cluster DNS, hegui's namespace, the service's own "
                    "fronted pods on its PodToPod ports and the destinations below. Open: "
                    "anywhere; a model that dials out can then serve around the sidecar.")
    to: list[EgressDestination] = Field(
        default_factory=list, max_length=16,
        description="More destinations, for every covered service (the platform's: weights, "
                    "an external Triton or evidence store, NodeLocal DNSCache).")


class Sidecar(ApiModel):
    """The moderation and labeling sidecar injected into every pod of a covered service, as a
    native sidecar (an init container with restartPolicy Always)."""

    image: Image = Field(description="The sidecar's image, by digest in production.")
    resources: Resources = Field(default_factory=Resources,
                                 description="The sidecar's requests and limits.")
    port: Annotated[int, Field(ge=1, le=65535)] = Field(
        default=8443, description="The port the sidecar serves on; it takes over the model's "
                                  "serving port name so traffic cannot bypass it.")
    user_overrides: list[SidecarOverride] = Field(
        default_factory=lambda: [SidecarOverride.RESOURCES], max_length=2,
        description="Fields a pod's own hegui-sidecar container may set (resources, env); the "
                    "others are always the policy's.",
        json_schema_extra={"x-kubernetes-list-type": "set"})
    evict_uninjected: bool = Field(
        default=False, description="Evict running pods of a covered service that lack the "
                                   "sidecar (created while the webhook was down, or before "
                                   "hegui), so their controller recreates them injected; "
                                   "always reported either way (Art.14).")
    network_policy: bool = Field(
        default=True, description="Keep a NetworkPolicy per service that admits ingress to its "
                                  "pods only on the sidecar's port (Art.14: no bypass).")
    capture: TrafficCapture = Field(
        default=TrafficCapture.REDIRECT,
        description="Redirect: an init container (root, NET_ADMIN and NET_RAW, like Istio's "
                    "istio-init) redirects all inbound TCP to the sidecar except the ports the "
                    "GenerativeService declares open, so Services that target the model's port "
                    "by number are moderated too. PortName: for namespaces whose Pod Security "
                    "forbids NET_ADMIN; only the port-name takeover and the NetworkPolicy, "
                    "which cuts traffic to the model's port by number (Art.14).")
    egress: Egress = Field(
        default_factory=Egress,
        description="What the service's pods may dial (Art.14): Restricted by default, kept in "
                    "the service's NetworkPolicy with networkPolicy true.")
    rules: RulesPlacement = Field(
        default=RulesPlacement.IN_PROCESS,
        description="Where the lexicon and personal-information rules run: InProcess (in the "
                    "sidecar, no hop a streamed window, the image's lexicon) or Triton (the "
                    "posture's Triton model, so the provider's lexicon is kept and updated in "
                    "one place, Triton's model repository; Art.14).")
    lexicon: SidecarLexicon | None = Field(
        default=None,
        description="The provider's keyword lexicon, from ConfigMaps in hegui's namespace, for "
                    "sidecars that run the rules in-process (Art.4(1), Art.14); absent: the "
                    "lexicon the sidecar image ships.")


class PrometheusSource(ApiModel):
    """Where the operator reads the services' stability indicators (Art.13)."""

    url: Annotated[str, Field(min_length=8, max_length=512, pattern=r"^https?://[^\s]+$")] = Field(
        description="The Prometheus base URL, e.g. http://prometheus.monitoring.svc:9090.")
    timeout: Duration = Field(default="5s", description="How long one query may take.")
    min_window: Duration = Field(
        default="1m", description="The shortest window a burn rate is measured over, at least "
                                  "four scrape intervals of this Prometheus; scaled alert "
                                  "windows shorter than this are raised to it.")


class PodShape(StrEnum):
    """What sits at a path of a custom resource."""

    TEMPLATE = "PodTemplateSpec"  # metadata and spec, as in a Deployment's spec.template
    POD_SPEC = "PodSpec"  # a pod spec (labels are the resource's), as KServe components
    CONTAINER = "Container"  # one container and its pod's scheduling fields, as NIMService's spec


class PodPath(ApiModel):
    """One place in a custom resource where pods are described."""

    path: FieldPath = Field(description="Dotted field names; [*] walks every item of a list, "
                                        "e.g. spec.roles[*].template.")
    shape: PodShape = Field(default=PodShape.TEMPLATE,
                            description="PodTemplateSpec (default), PodSpec or Container.")


class WorkloadKindPaths(ApiModel):
    """A custom resource that runs model pods, and where in it its pods are described, so that
    `hegui check`, the webhook and the audit judge the resource a person applies rather than
    only the pods its controller creates. Paths are dotted field names; `[*]` walks every item
    of a list (e.g. spec.roles[*].template)."""

    api_version: Annotated[str, Field(
        min_length=3, max_length=253,
        pattern=r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?/[a-z0-9]+$")] = Field(
        description="The resource's group/version, e.g. example.com/v1.")
    kind: Annotated[str, Field(min_length=1, max_length=63, pattern=r"^[A-Z][A-Za-z0-9]*$")] = (
        Field(description="The resource's kind, e.g. ModelServer."))
    plural: DnsLabel = Field(description="The resource's plural name, for the webhook's rules.")
    pods: list[PodPath] = Field(
        min_length=1, max_length=4,
        description="Where the resource describes its pods (at least one place).")


class WorkloadDetection(ApiModel):
    """Signals that mark a generative model workload, in addition to the built-in ones (every
    accelerator hegui knows: NVIDIA, AMD, Intel Gaudi, Huawei Ascend, Cambricon, Hygon, Kunlunxin,
    MetaX, Moore Threads, Iluvatar, Enflame, HAMi and Volcano's virtual GPUs; see `kubectl hegui
    explain coverage`), and serving custom resources in addition to the built-in ones (KServe,
    NIM, LeaderWorkerSet, DisaggregatedSet, KubeRay, RoleBasedGroup). A policy can only add:
    none can make hegui blind to a workload it knows."""

    gpu_resources: list[ResourceName] = Field(
        default_factory=list, max_length=16,
        description="More extended resources that mark a generative workload (e.g. "
                    "example.com/npu); a name ending in '-' or '/' is a prefix.")
    runtime_class_names: list[DnsLabel] = Field(
        default_factory=list, max_length=16,
        description="More runtime classes that mark a generative workload.")
    device_classes: list[DnsSubdomain] = Field(
        default_factory=list, max_length=16,
        description="More DRA device classes or DRA drivers whose claims mark a generative "
                    "workload (a class is matched by the drivers it selects).")
    labels: list[LabelKey] = Field(
        default_factory=list, max_length=8,
        description="More pod labels that mark a generative workload when set to true.")
    workload_kinds: list[WorkloadKindPaths] = Field(
        default_factory=list, max_length=4,
        description="More custom resources that run model pods, with where their pods live.")


class WorkloadFilter(ApiModel):
    """Workloads by kind and pod labels, as in Kyverno's match and exclude. Both given: both
    must hold; neither: the filter matches nothing."""

    kinds: list[Annotated[str, Field(min_length=1, max_length=63,
                                     pattern=r"^[A-Z][A-Za-z0-9]*$")]] = Field(
        default_factory=list, max_length=8,
        description="Kinds, e.g. Job, DaemonSet, RayCluster; a Pod also counts as its direct "
                    "owner's kind (and a ReplicaSet's pod as its Deployment's). Empty: any kind.",
        json_schema_extra={"x-kubernetes-list-type": "set"})
    selector: LabelSelector | None = Field(
        default=None, description="Labels of the workload's pods (its pod template), so a "
                                  "workload and the pods it creates are judged alike.")

    def matches(self, kinds: frozenset[str], label_sets: list[Mapping[str, str]]) -> bool:
        if not self.kinds and self.selector is None:
            return False  # a filter on nothing matches nothing: it cannot leave everything out
        if self.kinds and not kinds & set(self.kinds):
            return False
        return self.selector is None or any(self.selector.matches(labels)
                                            for labels in label_sets)


class WorkloadScope(ApiModel):
    """Which workloads with an accelerator are generative services. A workload is in scope when
    an include filter matches it (or there are none) and no exclude filter does. Workloads left
    out are still reported (audit result skip, `hegui check` "exempted by"), naming the filter, so
    nothing leaves silently: labels are set by the workload's author, so pair a selector with
    kinds where you can, and restrict who may set the label."""

    include: list[WorkloadFilter] = Field(
        default_factory=list, max_length=2,
        description="Filters a workload must match one of; empty (or only filters on "
                    "nothing): every workload.")
    exclude: list[WorkloadFilter] = Field(
        default_factory=list, max_length=3,
        description="Filters that take a workload out, e.g. training Jobs, smoke tests, GPU "
                    "infrastructure DaemonSets such as dcgm-exporter.")

    def left_out_by(self, kinds: frozenset[str],
                    label_sets: list[Mapping[str, str]]) -> str | None:
        """Why the workload is out of scope ("spec.workloads.exclude[1]"), or None if in."""
        include = [f for f in self.include if f.kinds or f.selector is not None]
        if include and not any(f.matches(kinds, label_sets) for f in include):
            return "spec.workloads.include (no filter matches)"
        for index, excluded in enumerate(self.exclude):
            if excluded.matches(kinds, label_sets):
                return f"spec.workloads.exclude[{index}]"
        return None


class Defaults(ApiModel):
    """Defaults for services that leave a setting out."""

    triton: TritonEndpoint | None = Field(default=None,
                                          description="The default moderation model endpoint.")
    label_text: Annotated[str, Field(min_length=1, max_length=64)] = Field(
        default="人工智能生成", description="The default explicit label text (显式标识).")
    label_position: LabelPosition = Field(default=LabelPosition.END,
                                          description="The default explicit label position.")
    moderation_failure_mode: FailureMode = Field(
        default=FailureMode.CLOSED, description="The default behaviour while the moderator is "
                                                "down.")
    routes: list[ModeratedRoute] = Field(
        default_factory=list, max_length=16,
        description="Generation routes every sidecar of the policy's namespaces moderates beyond "
                    "the built-in table, each as its family (Art.14), e.g. a path a platform's "
                    "gateway or serving runtime adds everywhere; a service's own "
                    "moderation.routes entry for the same path wins.",
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["path"]})


class ExceptionLimits(ApiModel):
    """Limits on ComplianceExceptions in the namespaces this policy selects."""

    max_duration: Duration = Field(
        default=MAX_EXCEPTION_DURATION,
        description="The longest duration an exception may have, at most 2160h (90 days).")

    @cel_rule(f"{cel_bad_duration('maxDuration')} || "
              f"duration(self.maxDuration) <= duration('{MAX_EXCEPTION_DURATION}')",
              f"maxDuration must be at most {MAX_EXCEPTION_DURATION} (90 days): an exemption is a "
              "window to correct, not a standing waiver (Art.21)", field_path=".maxDuration")
    def _bounded(self) -> bool:
        return parse_duration(self.max_duration) <= parse_duration(MAX_EXCEPTION_DURATION)

    @property
    def max_timedelta(self) -> timedelta:
        return parse_duration(self.max_duration)


class ModerationFloor(ApiModel):
    """The least moderation every GenerativeService in the policy's namespaces must declare
    (rule moderation, Art.14). A team writes its own posture; this is what it cannot go below:
    the webhook refuses a GenerativeService under the floor when it is applied, and the operator's
    status, the audit and `hegui check` report it."""

    directions: list[Direction] = Field(
        default_factory=lambda: [Direction.INPUT, Direction.OUTPUT], max_length=2,
        description="The sides that must be moderated (moderation.input/output.enabled).",
        json_schema_extra={"x-kubernetes-list-type": "set", "default": ["input", "output"]})
    block_categories: list[CamelName] = Field(
        default_factory=list, max_length=16,
        description="Categories every service must score with action Block, on every direction "
                    "above, e.g. subversion, terrorismExtremism.",
        json_schema_extra={"x-kubernetes-list-type": "set"})
    max_block_threshold: Ratio = Field(
        default=0.9, description="The highest threshold a blockCategories entry may have: a "
                                 "threshold no score reaches blocks nothing.")
    failure_mode: FailureMode = Field(
        default=FailureMode.CLOSED,
        description="Closed: services must fail closed (nothing unmoderated leaves a pod while "
                    "the moderator is down). Open: the service chooses.")
    triton_endpoints: list[TritonEndpoint] = Field(
        default_factory=list, max_length=16,
        description="The moderation endpoints (address, protocol, model) a service may use; "
                    "empty: only defaults.triton when the policy sets it, else any.")
    labels: bool = Field(
        default=True, description="Explicit and implicit labels stay enabled on everything the "
                                  "service generates (Art.12); a service cannot turn them off.")
    image_classifier: bool = Field(
        default=False,
        description="A service that generates images (labeling.modalities image, or a route of "
                    "family images) must declare spec.moderation.images, the classifier that "
                    "scores its pictures (Art.4, Art.14); without one its sidecar refuses image "
                    "requests in fail mode Closed and serves them unmoderated in Open. Off by "
                    "default, so an upgrade refuses nothing already admitted.")

    def allowed_endpoints(self, default: TritonEndpoint | None) -> list[TritonEndpoint]:
        return list(self.triton_endpoints) or ([default] if default is not None else [])


class EvidenceStore(ApiModel):
    """An S3-compatible object store with Object Lock (WORM / 合规保留) where sidecars ship their
    records, each segment locked in COMPLIANCE mode (Art.11, Art.19)."""

    endpoint: Annotated[str, Field(min_length=8, max_length=512,
                                   pattern=r"^https?://[A-Za-z0-9.-]+(:[0-9]{1,5})?$")] = Field(
        description="The store's S3 endpoint, http[s]://HOST[:PORT] (path-style).")
    bucket: Annotated[str, Field(min_length=3, max_length=63,
                                 pattern=r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")] = Field(
        description="A bucket created with Object Lock enabled.")
    credentials_secret_name: DnsSubdomain = Field(
        description="A Secret in hegui's namespace with accessKey and secretKey (the sidecars' "
                    "store user: may write, read and list records/, never delete, never write "
                    "anchors/), evidenceKey (from which each service's segment sealing key is "
                    "derived), anchorKey and anchorAccessKey/anchorSecretKey (the operator's "
                    "anchor key and its own store user, the only one that writes anchors/), and "
                    "optionally roleArn and stsEndpoint for the store's STS. None of them "
                    "leaves hegui's namespace: each service's namespace gets a hegui-owned "
                    "Secret with a store session of its own (STS AssumeRole with a session "
                    "policy: its own records/<namespace>/<service>/ only, expiring, rotated by "
                    "the operator) and the service's derived key (Art.11).")
    retention_days: Annotated[int, Field(ge=1, le=3650)] = Field(
        default=180, description="The least number of days every shipped segment and anchor is "
                                 "locked; a service whose dataProtection.retentionDays is longer "
                                 "is locked longer.")
    region: Annotated[str, Field(min_length=1, max_length=64,
                                 pattern=r"^[a-z0-9-]+$")] | None = Field(
        default=None, description="The store's region; absent: us-east-1.")


class Evidence(ApiModel):
    """Where the records of covered services are kept off the pod, and how often the operator
    anchors every stream's head where no pod can write (Art.11, Art.19)."""

    store: EvidenceStore = Field(description="The evidence store.")
    failure_mode: FailureMode | None = Field(
        default=None,
        description="A floor for what sidecars do when records cannot reach the store and their "
                    "bounded buffer is full: Closed makes every covered sidecar refuse service "
                    "(503) then, whatever the service's dataProtection.evidenceFailureMode says, "
                    "so a team cannot drop records by blocking the store (Art.11). Absent: each "
                    "service's own mode.")
    anchor_interval: Duration = Field(
        default="10m", description="How often the operator checkpoints every stream's head "
                                   "(locked in the store and kept in a ConfigMap of hegui's "
                                   "namespace).")

    @cel_rule(f"{cel_bad_duration('anchorInterval')} || "
              "duration(self.anchorInterval) >= duration('1m')",
              "anchorInterval must be at least 1m: each anchor is an object locked for the "
              "retention (rule dataProtection, Art.11)", field_path=".anchorInterval")
    def _interval_bounded(self) -> bool:
        return parse_duration(self.anchor_interval) >= timedelta(minutes=1)


class CompliancePolicySpec(ApiModel):
    """Where hegui enforces the Interim Measures and how strictly."""

    namespace_selector: LabelSelector | None = Field(
        default=None, description="Namespaces whose labels match are enforced; an empty "
                                  "selector matches every namespace.")
    namespaces: list[DnsLabel] = Field(
        default_factory=list, max_length=256,
        description="Namespaces enforced by name, in addition to namespaceSelector.",
        json_schema_extra={"x-kubernetes-list-type": "set"})
    excluded_namespaces: list[DnsLabel] = Field(
        default_factory=list, max_length=256,
        description="Namespaces never enforced; kube-system, kube-public, kube-node-lease and "
                    "hegui-system are always excluded.",
        json_schema_extra={"x-kubernetes-list-type": "set"})
    default_mode: EnforcementMode = Field(
        default=EnforcementMode.WARN,
        description="The mode of rules not listed in rules, except the opt-in declaration "
                    "rules (audience, dataProtection, complaints, userAgreement, training, "
                    "annotation, licences), which are Audit unless listed.")
    rules: list[RuleMode] = Field(
        default_factory=list, max_length=len(Rule),
        description="Modes per rule, overriding defaultMode. Listing an opt-in declaration "
                    "rule (audience, dataProtection, complaints, userAgreement, training, "
                    "licences) also requires every service to declare it.",
        json_schema_extra={"x-kubernetes-list-type": "map",
                           "x-kubernetes-list-map-keys": ["rule"]})
    detection: WorkloadDetection = Field(
        default_factory=WorkloadDetection, description="How generative workloads are recognised.",
        json_schema_extra={"default": WorkloadDetection().to_dict()})
    workloads: WorkloadScope = Field(
        default_factory=WorkloadScope,
        description="Which accelerator workloads are generative services (include and exclude "
                    "by kind and pod labels); absent: all of them.",
        json_schema_extra={"default": {}})
    sidecar: Sidecar | None = Field(default=None,
                                    description="The injected sidecar; absent: no injection.")
    defaults: Defaults = Field(default_factory=Defaults,
                               description="Defaults for services that leave a setting out.",
                               json_schema_extra={"default": Defaults().to_dict()})
    prometheus: PrometheusSource | None = Field(
        default=None, description="Where stability objectives are read from; absent: SLOs are "
                                  "not evaluated and SLOMet reports why (Art.13).")
    moderation: ModerationFloor | None = Field(
        default=None, description="The least moderation and labeling every service must "
                                  "declare (rule moderation, Art.14); absent: no floor.")
    evidence: Evidence | None = Field(
        default=None, description="The evidence store sidecars ship their records to (Art.11, "
                                  "Art.19); absent: records stay in the pods and die with them.")
    exceptions: ExceptionLimits = Field(default_factory=ExceptionLimits,
                                        description="Limits on ComplianceExceptions.",
                                        json_schema_extra={"default": ExceptionLimits().to_dict()})

    @cel_rule("has(self.namespaceSelector) || (has(self.namespaces) && size(self.namespaces) > 0)",
              "select the enforced namespaces with namespaceSelector or namespaces "
              "(rule coverage, Art.17)", field_path=".namespaces")
    def _selects_namespaces(self) -> bool:
        return self.namespace_selector is not None or bool(self.namespaces)

    def names(self, rule: Rule) -> bool:
        """Whether spec.rules names the rule (which turns an opt-in rule on)."""
        return any(r.rule is rule for r in self.rules)

    def mode_for(self, rule: Rule) -> EnforcementMode:
        """The named mode; else defaultMode, except that an opt-in rule (`Rule.opt_in`) not
        named is Audit: reported in status, never refused or warned about."""
        unnamed = EnforcementMode.AUDIT if rule.opt_in else self.default_mode
        return next((r.mode for r in self.rules if r.rule is rule), unnamed)

    def selects_namespace(self, name: str, labels: dict[str, str]) -> bool:
        if name in ALWAYS_EXCLUDED_NAMESPACES or name in self.excluded_namespaces:
            return False
        if name in self.namespaces:
            return True
        return self.namespace_selector is not None and self.namespace_selector.matches(labels)


class CompliancePolicyStatus(ApiModel):
    """What the operator observed about the policy."""

    observed_generation: Annotated[int, Field(ge=0)] | None = Field(
        default=None, description="The .metadata.generation this status describes.")
    conditions: list[Condition] = Field(
        default_factory=list, max_length=8, description="Conditions, e.g. Ready.",
        json_schema_extra={"x-kubernetes-list-type": "map",
                           "x-kubernetes-list-map-keys": ["type"]})
    enforced_namespaces: Annotated[int, Field(ge=0)] | None = Field(
        default=None, description="How many namespaces the policy currently enforces.")
    message: Annotated[str, Field(max_length=1024)] = Field(default="",
                                                            description="A summary.")


class CompliancePolicy(ApiObject):
    """A cluster-wide compliance policy: which namespaces hegui enforces the Interim Measures in,
    the mode of each rule (Enforce, Warn, Audit), the sidecar, and defaults. Where several
    policies select a namespace, each rule takes its strictest mode."""

    api_version: Literal["hegui.io/v1alpha1"] = Field(default=API_VERSION,
                                                      description="hegui.io/v1alpha1")
    kind: Literal["CompliancePolicy"] = Field(default="CompliancePolicy",
                                              description="CompliancePolicy")
    spec: CompliancePolicySpec = Field(
        description="Where hegui enforces, the mode of each rule, the sidecar and defaults.")
    status: CompliancePolicyStatus | None = Field(default=None,
                                                  description="What the operator observed.")

