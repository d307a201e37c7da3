"""`GenerativeService` (short name `gsvc`): one generative AI service and its compliance posture.

The spec is what a platform team declares, article by article; the status is what hegui found,
and is written only by the operator (through the status subresource), so GitOps tools that own
the spec never undo a suspension.
"""

from __future__ import annotations

from datetime import date
from enum import StrEnum
from typing import Annotated, Literal

from pydantic import AfterValidator, Field

from hegui.api.common import (
    API_VERSION,
    ApiModel,
    ApiObject,
    Article,
    CamelName,
    CelRule,
    Condition,
    ConditionStatus,
    DnsSubdomain,
    Duration,
    Email,
    LabelSelector,
    LocalObjectReference,
    Ratio,
    SecretKeyReference,
    ShortText,
    Timestamp,
    Url,
    WorkloadReference,
    cel_bad_duration,
    cel_rule,
    parse_duration,
)
from hegui.api.filing import (
    ALGORITHM_EXAMPLE,
    ALGORITHM_NUMBER_PATTERN,
    SERVICE_EXAMPLE,
    SERVICE_NUMBER_PATTERN,
    AlgorithmFilingNumber,
    ServiceFilingNumber,
    check_algorithm_filing_number,
    check_service_filing_number,
    parse_algorithm_filing_number,
    parse_service_filing_number,
)

# --- filing (Art.17) ------------------------------------------------------------------------------


def _algorithm_number(value: str) -> str:
    if error := check_algorithm_filing_number(value):
        raise ValueError(error.short)
    return value


def _service_number(value: str) -> str:
    if error := check_service_filing_number(value):
        raise ValueError(error.short)
    return value


AlgorithmNumber = Annotated[str, Field(min_length=1, max_length=64, json_schema_extra={
    "x-kubernetes-validations": [CelRule(
        f"self.matches('^{ALGORITHM_NUMBER_PATTERN}$')",
        f"must be an algorithm filing number (算法备案号): 网信算备, 21 digits, 号, e.g. "
        f"{ALGORITHM_EXAMPLE} (rule filing.algorithmNumber, Art.17)").to_schema()]}),
    AfterValidator(_algorithm_number)]

ServiceNumber = Annotated[str, Field(min_length=1, max_length=96, json_schema_extra={
    "x-kubernetes-validations": [CelRule(
        f"self.matches('^{SERVICE_NUMBER_PATTERN}$')",
        f"must be a generative AI service filing or registration number, Province-ServiceName-"
        f"YYYYMMDD with an optional serial, e.g. {SERVICE_EXAMPLE} or 20251229S0027 as the last "
        "part (rule filing.serviceNumber, Art.17)").to_schema()]}),
    AfterValidator(_service_number)]


class AlgorithmFiling(ApiModel):
    """The algorithm filing (算法备案) of the service's algorithm with the CAC's algorithm filing
    system (互联网信息服务算法备案系统), which Art.17 requires of services with public-opinion
    attributes or social-mobilisation capability."""

    number: AlgorithmNumber = Field(
        description="The algorithm filing number (算法备案号), e.g. "
                    "网信算备110108823483901230031号: 网信算备, a 6-digit region code, a "
                    "7-digit provider code, a 2-digit algorithm serial, the 2-digit year, a "
                    "4-digit serial and 号.")
    name: ShortText | None = Field(
        default=None, description="The algorithm's name as filed (算法名称).")
    filed_on: date | None = Field(
        default=None, description="The date the filing was granted (备案日期), YYYY-MM-DD.")

    def parsed(self) -> AlgorithmFilingNumber:
        return parse_algorithm_filing_number(self.number)


class ServiceFiling(ApiModel):
    """The generative AI service filing (生成式人工智能服务备案) or, for a service that calls a
    filed model through its API, the registration (登记) with the provincial cyberspace office."""

    number: ServiceNumber = Field(
        description="The service filing number (备案号) such as Beijing-YunQue-20230821 or "
                    "Beijing-DeepseekChat-202404280016, or the registration number (上线编号) such "
                    "as Guangdong-Plaud-20251229S0027.")
    model_name: ShortText | None = Field(
        default=None, description="The model name (模型名称) the number was issued for, which the "
                                  "service must display next to the number.")
    filed_on: date | None = Field(
        default=None, description="The date of the filing or registration, YYYY-MM-DD.")

    def parsed(self) -> ServiceFilingNumber:
        return parse_service_filing_number(self.number)


class Filing(ApiModel):
    """Filings (备案) of the service, and whether Art.17 applies to it."""

    public_opinion: bool = Field(
        description="Whether the service has public-opinion attributes or social-mobilisation "
                    "capability (具有舆论属性或者社会动员能力). If true, Art.17 requires an "
                    "algorithm filing and a security assessment, and hegui refuses the "
                    "service's workloads without them.")
    algorithm: AlgorithmFiling | None = Field(
        default=None, description="The algorithm filing (算法备案); required if publicOpinion is "
                                  "true.")
    service: ServiceFiling | None = Field(
        default=None, description="The generative AI service filing or registration "
                                  "(生成式人工智能服务备案/登记).")


# --- assessment (Art.17) --------------------------------------------------------------------------

class AssessmentResult(StrEnum):
    """The outcome of a security assessment."""

    PASS = "Pass"  # noqa: S105 (a verdict, not a password)
    FAIL = "Fail"


class ExternalAssessment(ApiModel):
    """A security assessment (安全评估) run outside hegui, e.g. by an accredited assessor, and
    documented by its report."""

    report_id: ShortText = Field(description="The assessment report's identifier.")
    assessor: ShortText | None = Field(
        default=None, description="Who ran the assessment (the provider itself or an assessor).")
    assessed_on: date = Field(description="The date the assessment was completed, YYYY-MM-DD.")
    expires_on: date = Field(description="The first day the assessment no longer counts, "
                                         "YYYY-MM-DD; must be after assessedOn.")
    result: AssessmentResult = Field(description="Pass or Fail.")
    report_url: Url | None = Field(default=None, description="Where the report can be read.")

    @cel_rule("self.expiresOn > self.assessedOn",
              "expiresOn must be after assessedOn (rule assessment, Art.17)",
              field_path=".expiresOn")
    def _expires_after_assessment(self) -> bool:
        return self.expires_on > self.assessed_on

    def valid_on(self, day: date) -> bool:
        """Whether the report counts on `day`: it passed, was completed by then, and `day` is
        before expiresOn (the first day it no longer counts, as a SafetyAssessment's expiresAt).
        The one place that decides expiry: admission, status, audit and the dossier ask here."""
        return self.result is AssessmentResult.PASS and self.assessed_on <= day < self.expires_on


class Assessment(ApiModel):
    """The security assessment (安全评估) of the service: a SafetyAssessment that hegui runs, or an
    external report. Exactly one of the two."""

    safety_assessment_ref: LocalObjectReference | None = Field(
        default=None, description="A SafetyAssessment in this namespace whose target is this "
                                  "service; its status carries the verdict and expiry.")
    external: ExternalAssessment | None = Field(
        default=None, description="An assessment run outside hegui, described by its report.")

    @cel_rule("has(self.safetyAssessmentRef) != has(self.external)",
              "set exactly one of safetyAssessmentRef and external (rule assessment, Art.17)")
    def _exactly_one(self) -> bool:
        return (self.safety_assessment_ref is None) != (self.external is None)


# --- labeling (Art.12) ----------------------------------------------------------------------------

class Modality(StrEnum):
    """A kind of generated content (GB 45438-2025 labels each differently)."""

    TEXT = "text"
    IMAGE = "image"
    AUDIO = "audio"
    VIDEO = "video"
    VIRTUAL_SCENE = "virtualScene"


class LabelPosition(StrEnum):
    """Where the explicit label goes: the start or end of text, audio and video, or a corner of
    an image or video frame."""

    START = "Start"
    END = "End"
    START_AND_END = "StartAndEnd"
    TOP_LEFT = "TopLeft"
    TOP_RIGHT = "TopRight"
    BOTTOM_LEFT = "BottomLeft"
    BOTTOM_RIGHT = "BottomRight"


class ExplicitLabel(ApiModel):
    """The explicit label (显式标识) people can see or hear on generated content, per the Measures
    for Labeling AI-Generated Synthetic Content and GB 45438-2025."""

    enabled: bool = Field(default=True, description="Whether the sidecar adds the label.")
    text: Annotated[str, Field(min_length=1, max_length=64)] | None = Field(
        default=None, description="The label's text, e.g. 人工智能生成; absent: the "
                                  "CompliancePolicy's default label text.")
    position: LabelPosition = Field(default=LabelPosition.END,
                                    description="Where the label is placed.")


class ImplicitLabel(ApiModel):
    """The implicit label (隐式标识) written into the metadata of generated files, per GB
    45438-2025: the AIGC metadata field with the label, the producer and a production id."""

    enabled: bool = Field(default=True, description="Whether the sidecar writes the metadata.")
    content_producer: ShortText = Field(
        description="The name or code of the service provider (生成合成服务提供者名称或编码), "
                    "written as ContentProducer.")
    produce_id_prefix: Annotated[str, Field(max_length=32, pattern=r"^[A-Za-z0-9_-]*$")] = Field(
        default="", description="A prefix of the content production id (内容制作编号, ProduceID) "
                                "the sidecar generates for each output.")


class Watermark(ApiModel):
    """An invisible watermark embedded in generated images, audio or video."""

    enabled: bool = Field(default=False, description="Whether the sidecar embeds a watermark.")
    key_secret_ref: SecretKeyReference | None = Field(
        default=None, description="The Secret key holding the watermark key; required if "
                                  "enabled.")

    @cel_rule("!self.enabled || has(self.keySecretRef)",
              "keySecretRef is required when the watermark is enabled (rule labeling, Art.12)",
              field_path=".keySecretRef", reason="FieldValueRequired")
    def _key_when_enabled(self) -> bool:
        return not self.enabled or self.key_secret_ref is not None


class Labeling(ApiModel):
    """How generated content is labeled (Art.12, which points to the deep-synthesis rules)."""

    modalities: list[Modality] = Field(
        min_length=1, max_length=5, description="The kinds of content the service generates.",
        json_schema_extra={"x-kubernetes-list-type": "set"})
    explicit: ExplicitLabel | None = Field(
        default=None, description="The explicit label; absent: the policy's default label text at "
                                  "the end of the content.")
    implicit: ImplicitLabel = Field(description="The implicit metadata label (GB 45438-2025).")
    watermark: Watermark | None = Field(default=None, description="An invisible watermark.")


# --- moderation (Art.4, Art.14) ----------------------------------------------------------------

class TritonProtocol(StrEnum):
    """The protocol Triton Inference Server is called with."""

    GRPC = "grpc"
    HTTP = "http"


class TritonEndpoint(ApiModel):
    """A moderation model served by Triton Inference Server."""

    address: Annotated[str, Field(min_length=3, max_length=261,
                                  pattern=r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?:[0-9]{1,5}$")] = Field(
        description="host:port of Triton, e.g. triton.hegui-system.svc:8001.")
    protocol: TritonProtocol = Field(default=TritonProtocol.GRPC, description="grpc or http.")
    model: Annotated[str, Field(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9_.-]+$")] = (
        Field(description="The Triton model that scores content, e.g. moderation."))
    model_version: Annotated[str, Field(max_length=16, pattern=r"^[0-9]*$")] = Field(
        default="", description="The model version; empty: Triton's version policy decides.")


class ModerationAction(StrEnum):
    """What happens to content that scores at or above a category's threshold."""

    BLOCK = "Block"  # stop generation and transmission (停止生成、停止传输)
    MASK = "Mask"  # replace the offending span, e.g. personal information
    FLAG = "Flag"  # let it through, record it


class Direction(StrEnum):
    """Which side of the model a check applies to."""

    INPUT = "input"
    OUTPUT = "output"


class ModerationCategory(ApiModel):
    """A category of content the moderation model scores, with the action at its threshold."""

    name: CamelName = Field(description="The category, as the moderation model names it, e.g. "
                                        "violence, discrimination, personalInformation.")
    threshold: Ratio = Field(description="The score, 0..1, at or above which the action applies.")
    action: ModerationAction = Field(description="Block, Mask or Flag.")
    directions: list[Direction] = Field(
        default_factory=lambda: [Direction.INPUT, Direction.OUTPUT], min_length=1, max_length=2,
        description="Whether the category applies to inputs, outputs or both.",
        json_schema_extra={"x-kubernetes-list-type": "set", "default": ["input", "output"]})
    article: Article | None = Field(
        default=None, description="The clause the category serves, e.g. Art.4(1) for prohibited "
                                  "content, Art.4(4) for personal information.")


class ModerationCheck(ApiModel):
    """Moderation of one side of the model."""

    enabled: bool = Field(default=True, description="Whether this side is moderated.")


class StreamingMode(StrEnum):
    """How a streamed answer is moderated on its way to the user (Art.14)."""

    HOLD = "Hold"  # nothing leaves before it is moderated; tokens are held in windows
    # Tokens go out as they arrive, moderation runs alongside; a violation stops generation and
    # transmission and tells the client to withdraw what it showed (停止生成、停止传输、消除).
    STREAM_THEN_RETRACT = "StreamThenRetract"


class OutputStreaming(ApiModel):
    """Streamed answers (server-sent events): the mode and its windows."""

    mode: StreamingMode = Field(
        default=StreamingMode.HOLD,
        description="Hold: nothing unmoderated is sent, windows start at firstWindowTokens and "
                    "double up to streamWindowTokens. StreamThenRetract: tokens are sent as they "
                    "arrive and moderated alongside; on a violation the stream ends with a "
                    "withdrawal event the front end must act on (README, streaming modes).")
    first_window_tokens: Annotated[int, Field(ge=1, le=4096)] = Field(
        default=4, description="Hold: the first window, so the first token is not late; each "
                               "next window doubles, up to streamWindowTokens.")
    merge_tokens: bool = Field(
        default=False, description="Send each moderated window as one chunk instead of the "
                                   "model's own per-token chunks.")


class OutputModeration(ModerationCheck):
    """Moderation of the model's output, streamed or not."""

    stream_window_tokens: Annotated[int, Field(ge=1, le=4096)] = Field(
        default=64, description="For streamed responses, the largest number of tokens scored "
                                "together (Hold: the window it grows to; StreamThenRetract: how "
                                "much the neural classifier scores at once).")
    streaming: OutputStreaming = Field(
        default_factory=OutputStreaming, description="How streamed answers are moderated.",
        json_schema_extra={"default": OutputStreaming().to_dict()})


class FailureMode(StrEnum):
    """What the sidecar does while the moderator is unreachable."""

    CLOSED = "Closed"  # refuse requests: nothing unmoderated leaves the pod
    OPEN = "Open"  # serve unmoderated, record every such response and raise a metric


class IdentitySource(StrEnum):
    """Where the sidecar takes the user's id from (strikes, records, complaints; Art.14)."""

    HEADER = "Header"  # a header the gateway sets (overwriting any the client sent)
    JWT = "JWT"  # the bearer token's claim, verified by the sidecar with jwtKeySecretRef


class UserIdentity(ApiModel):
    """The source of the user's id the sidecar trusts (`hegui.sidecar.identity`): a verified JWT
    claim, or a header only the gateway can set; never both, so a client header cannot override
    a verified claim (Art.14)."""

    source: IdentitySource = Field(default=IdentitySource.HEADER,
                                   description="Header: the header the gateway sets. JWT: the "
                                               "bearer token, verified by the sidecar.")
    header: Annotated[str, Field(min_length=1, max_length=128,
                                 pattern=r"^[A-Za-z0-9][A-Za-z0-9-]*$")] = Field(
        default="x-hegui-user", description="The header the gateway sets (source Header).")
    jwt_claim: Annotated[str, Field(min_length=1, max_length=128)] = Field(
        default="sub", description="The claim naming the user (source JWT).")
    jwt_issuer: ShortText | None = Field(default=None, description="The iss the token must "
                                                                   "carry, if any.")
    jwt_audience: ShortText | None = Field(default=None, description="An aud the token must "
                                                                     "carry, if any.")
    jwt_key_secret_ref: SecretKeyReference | None = Field(
        default=None, description="The key that verifies tokens (source JWT): a PEM public key "
                                  "of the identity provider or gateway (RS*, PS*, ES*, EdDSA) "
                                  "or a shared secret (HS*).")

    @cel_rule("self.source != 'JWT' || has(self.jwtKeySecretRef)",
              "source JWT needs jwtKeySecretRef: an unverified claim is whatever the client "
              "wrote (rule moderation, Art.14)", field_path=".jwtKeySecretRef")
    def _jwt_has_key(self) -> bool:
        return self.source is not IdentitySource.JWT or self.jwt_key_secret_ref is not None


class UserMeasures(ApiModel):
    """What happens to a user who keeps sending prohibited content: warning, limited functions,
    suspension of service (警示、限制功能、暂停或者终止向其提供服务, Art.14). Each blocked input
    is a strike; strikes older than `strikeDecay` no longer count."""

    warn_at: Annotated[int, Field(ge=1, le=100)] = Field(
        default=1, description="Strikes after which the user is warned.")
    limit_at: Annotated[int, Field(ge=1, le=100)] = Field(
        default=3, description="Strikes after which the user is rate-limited.")
    suspend_at: Annotated[int, Field(ge=1, le=100)] = Field(
        default=5, description="Strikes after which the user is suspended.")
    limited_per_minute: Annotated[int, Field(ge=1, le=10000)] = Field(
        default=6, description="Requests per minute a rate-limited user may send.")
    strike_decay: Duration = Field(default="24h", description="How long a strike counts.")
    suspension: Duration = Field(default="168h", description="How long a user's suspension "
                                                             "lasts.")
    identity: UserIdentity | None = Field(
        default=None, description="Where the user's id comes from (default: the x-hegui-user "
                                  "header the gateway sets).")

    @cel_rule("self.warnAt <= self.limitAt && self.limitAt <= self.suspendAt",
              "warnAt <= limitAt <= suspendAt: measures escalate (rule moderation, Art.14)",
              field_path=".limitAt")
    def _escalates(self) -> bool:
        return self.warn_at <= self.limit_at <= self.suspend_at


class RouteFamily(StrEnum):
    """The API families the sidecar moderates (`hegui.sidecar.families`)."""

    CHAT = "chat"  # OpenAI chat completions
    COMPLETIONS = "completions"  # OpenAI completions
    RESPONSES = "responses"  # OpenAI Responses API
    MESSAGES = "messages"  # Anthropic messages
    TGI = "tgi"  # TGI (and SGLang) /generate, /generate_stream
    OLLAMA_CHAT = "ollama_chat"
    OLLAMA_GENERATE = "ollama_generate"
    TRITON_GENERATE = "triton_generate"  # Triton's generate extension
    TRITON_INFER = "triton_infer"  # KServe v2 infer with JSON tensors
    INVOCATIONS = "invocations"  # SageMaker-style, by body shape
    IMAGES = "images"  # OpenAI image generation (the prompt)


class ModeratedRoute(ApiModel):
    """A generation route the model serves at a path of its own, moderated as its family."""

    path: Annotated[str, Field(min_length=2, max_length=256,
                               pattern=r"^(/[A-Za-z0-9_~:@-][A-Za-z0-9._~:@-]*)+$")] = Field(
        description="The canonical path (no dot segments, no trailing, repeated or encoded "
                    "slashes), e.g. /v1/chat/completions-custom.")
    family: RouteFamily = Field(description="The API family whose requests and answers the "
                                            "path carries.")


class ImageModeration(ApiModel):
    """The image classifier that scores the pictures a service generates (Art.4, Art.14),
    served by the same Triton as the text moderation model (spec.moderation.triton, or the
    policy's default endpoint)."""

    model: Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.-]+$")] = (
        Field(description="The Triton model of hegui's image classifier contract (input IMAGE, "
                          "uint8 [batch, size, size, 3]; output FINDINGS), e.g. "
                          "image_classifier. Every b64_json picture of an images answer is "
                          "scored in one call with the categories, thresholds and actions of "
                          "spec.moderation.categories (Mask blocks a picture: it has no span to "
                          "mask); a blocked picture withholds the whole answer (Art.14). A "
                          "picture the sidecar cannot see (a url) is refused in fail mode "
                          "Closed: clients ask response_format b64_json."))
    model_version: Annotated[str, Field(max_length=16, pattern=r"^[0-9]*$")] = Field(
        default="", description="The model version; empty: Triton's version policy decides.")


class Moderation(ApiModel):
    """Moderation of inputs and outputs by a Triton model (Art.4, Art.14)."""

    triton: TritonEndpoint | None = Field(
        default=None, description="The moderation model; absent: the policy's default endpoint.")
    categories: list[ModerationCategory] = Field(
        min_length=1, max_length=32, description="Categories scored, with thresholds and actions.",
        json_schema_extra={"x-kubernetes-list-type": "map",
                           "x-kubernetes-list-map-keys": ["name"]})
    input: ModerationCheck = Field(
        default_factory=ModerationCheck, description="Moderation of user inputs.",
        json_schema_extra={"default": ModerationCheck().to_dict()})
    output: OutputModeration = Field(
        default_factory=OutputModeration, description="Moderation of generated outputs.",
        json_schema_extra={"default": OutputModeration().to_dict()})
    failure_mode: FailureMode = Field(
        default=FailureMode.CLOSED, description="Closed refuses requests while the moderator is "
                                                "down; Open serves them unmoderated and records "
                                                "each one.")
    timeout: Duration = Field(default="2s", description="How long one moderation call may take.")
    users: UserMeasures = Field(
        default_factory=UserMeasures, description="Measures against users who keep sending "
                                                  "prohibited content (Art.14).",
        json_schema_extra={"default": UserMeasures().to_dict()})
    routes: list[ModeratedRoute] = Field(
        default_factory=list, max_length=16,
        description="Generation routes the model serves beyond the sidecar's built-in table, "
                    "each moderated as its family (Art.14). Only moderated routes can be "
                    "declared: a path not on the table is refused.",
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["path"]})
    images: ImageModeration | None = Field(
        default=None,
        description="The image classifier for generated pictures (/v1/images/generations and "
                    "routes of family images; Art.4, Art.14). Absent: in fail mode Closed "
                    "image answers are refused (503, nothing unmoderated is served); in fail "
                    "mode Open they are served flagged x-hegui-output: unmoderated and recorded.")

    @cel_rule("self.input.enabled || self.output.enabled",
              "at least one of input and output must be moderated (rule moderation, Art.14)")
    def _one_side_moderated(self) -> bool:
        return self.input.enabled or self.output.enabled


# --- stability and suspension (Art.13, Art.21) ----------------------------------------------------

class AvailabilityObjective(ApiModel):
    """The share of requests that must succeed."""

    objective: Annotated[float, Field(gt=0.0, lt=1.0)] = Field(
        description="The target success ratio over the window, e.g. 0.995.")


class LatencyObjective(ApiModel):
    """The share of requests that must be answered within a threshold."""

    threshold: Duration = Field(description="The latency threshold, e.g. 2s (to the first token "
                                            "for streamed responses).")
    objective: Annotated[float, Field(gt=0.0, lt=1.0)] = Field(
        description="The share of requests faster than the threshold, e.g. 0.95.")


class Slo(ApiModel):
    """Stability objectives (安全、稳定、持续的服务, Art.13) reconciled from live metrics."""

    window: Duration = Field(default="720h", description="The SLO window, e.g. 720h (30 days).")
    availability: AvailabilityObjective | None = Field(default=None,
                                                       description="The availability objective.")
    latency: LatencyObjective | None = Field(default=None, description="The latency objective.")

    @cel_rule("has(self.availability) || has(self.latency)",
              "an SLO needs an availability or a latency objective (rule stability, Art.13)")
    def _has_objective(self) -> bool:
        return self.availability is not None or self.latency is not None


class SuspensionMode(StrEnum):
    """Who suspends the service when it keeps breaking its objectives."""

    AUTO = "Auto"  # the operator suspends, records and alerts
    MANUAL = "Manual"  # the operator reports; a person suspends
    OFF = "Off"  # only report


class SuspensionAction(StrEnum):
    """How a suspended service stops serving, without touching the workloads Git owns."""

    REJECT_REQUESTS = "RejectRequests"  # the sidecar answers 503 with a notice
    ISOLATE_NETWORK = "IsolateNetwork"  # a NetworkPolicy denies all ingress
    # The workloads are scaled to zero through their scale subresource, their replica counts
    # kept in status and restored on resume. GitOps tools that own `replicas` will fight this:
    # prefer RejectRequests unless replicas are left to hegui (or an autoscaler).
    SCALE_TO_ZERO = "ScaleToZero"


class NoDataPolicy(StrEnum):
    """What a missing SLI means for suspension."""

    KEEP = "Keep"  # keep the current state
    SUSPEND = "Suspend"  # treat silence as a violation


class BurnRateAlert(ApiModel):
    """A multi-window burn-rate condition (SRE workbook): both windows must burn the error budget
    at least `factor` times faster than the SLO allows."""

    long_window: Duration = Field(description="The long window, e.g. 1h.")
    short_window: Duration = Field(description="The short window, e.g. 5m; shorter than the long "
                                               "one.")
    factor: Annotated[float, Field(gt=0.0, le=1000.0)] = Field(
        description="The burn-rate factor, e.g. 14.4 (2% of a 30-day budget in one hour).")

    @cel_rule(f"{cel_bad_duration('shortWindow')} || {cel_bad_duration('longWindow')} || "
              "duration(self.shortWindow) < duration(self.longWindow)",
              "shortWindow must be shorter than longWindow (rule suspension, Art.21)",
              field_path=".shortWindow")
    def _short_shorter(self) -> bool:
        return parse_duration(self.short_window) < parse_duration(self.long_window)


class Suspension(ApiModel):
    """When and how the service is suspended for sustained violation (责令暂停, Art.21)."""

    mode: SuspensionMode = Field(default=SuspensionMode.MANUAL,
                                 description="Auto, Manual or Off.")
    burn_rates: list[BurnRateAlert] = Field(
        default_factory=list, max_length=4,
        description="Burn-rate conditions, any of which is a violation; empty: 1h/5m at 14.4 and "
                    "6h/30m at 6.")
    sustained_for: Duration = Field(
        default="15m", description="How long a violation must last before it counts.")
    action: SuspensionAction = Field(default=SuspensionAction.REJECT_REQUESTS,
                                     description="RejectRequests or IsolateNetwork.")
    cool_down: Duration | None = Field(
        default=None, description="How long the objectives must hold before the operator "
                                  "resumes the service; absent: only a deliberate action "
                                  "resumes it.")
    no_data: NoDataPolicy = Field(default=NoDataPolicy.KEEP,
                                  description="What missing metrics mean: Keep or Suspend.")
    max_incidents_per_hour: Annotated[float, Field(ge=0.0, le=1_000_000.0)] | None = Field(
        default=None, description="Blocked prohibited content (moderation incidents, Art.14) "
                                  "per hour, averaged over the first burn-rate alert's long "
                                  "window, above which the service is in violation; absent: "
                                  "incidents never suspend.")
    min_requests: Annotated[int, Field(ge=1, le=1_000_000)] = Field(
        default=100, description="Requests the long window must hold for a verdict; fewer: "
                                 "too little traffic to judge, reported, never suspended.")


# --- Art.9, 10, 11, 15 ----------------------------------------------------------------------------

class Minors(ApiModel):
    """Protection of minors against over-reliance and addiction (防范未成年人过度依赖或者沉迷)."""

    allowed: bool = Field(description="Whether minors may use the service.")
    daily_limit: Duration | None = Field(
        default=None, description="Per-user daily usage limit for minors, e.g. 1h; required if "
                                  "minors are allowed.")

    @cel_rule("!self.allowed || has(self.dailyLimit)",
              "dailyLimit is required when minors are allowed (rule audience, Art.10)",
              field_path=".dailyLimit", reason="FieldValueRequired")
    def _limit_for_minors(self) -> bool:
        return not self.allowed or self.daily_limit is not None


class Audience(ApiModel):
    """Who the service is for, published as Art.10 requires (适用人群、场合、用途)."""

    intended_users: list[ShortText] = Field(min_length=1, max_length=16,
                                            description="Intended users (适用人群).")
    occasions: list[ShortText] = Field(default_factory=list, max_length=16,
                                       description="Occasions of use (场合).")
    uses: list[ShortText] = Field(min_length=1, max_length=16, description="Uses (用途).")
    published_at: Url = Field(description="Where this is published to users.")
    minors: Minors = Field(description="Whether minors may use it, and their limits.")


class UserRequests(ApiModel):
    """How individuals access, copy, correct, supplement and delete their personal information
    (查阅、复制、更正、补充、删除)."""

    channel: Url = Field(description="Where requests are made.")
    deadline_days: Annotated[int, Field(ge=1, le=30)] = Field(
        description="Days within which a request is handled.")


class DataProtection(ApiModel):
    """Protection of users' inputs and usage records (Art.11)."""

    retention_days: Annotated[int, Field(ge=0, le=3650)] = Field(
        description="Days inputs and usage records are kept; 0: not kept.")
    pseudonymise: bool = Field(
        default=True, description="Whether user identifiers are pseudonymised in records.")
    pseudonymisation_key_ref: SecretKeyReference | None = Field(
        default=None, description="The Secret key for keyed pseudonymisation (HMAC); required if "
                                  "pseudonymise is true and records are kept.")
    personal_information: list[ShortText] = Field(
        default_factory=list, max_length=32,
        description="Kinds of personal information collected; nothing beyond what the service "
                    "needs (不得收集非必要个人信息).")
    user_requests: UserRequests = Field(description="Handling of individuals' requests.")
    evidence_failure_mode: FailureMode | None = Field(
        default=None,
        description="What the sidecar does when its records cannot reach the evidence store and "
                    "its bounded local buffer is full (Art.11): Closed refuses service (503), so "
                    "nothing is served that cannot be recorded; Open serves, counts every record "
                    "not kept and raises an alert. Absent: moderation.failureMode.")

    @cel_rule("!self.pseudonymise || self.retentionDays == 0 || has(self.pseudonymisationKeyRef)",
              "pseudonymisationKeyRef is required when records are kept and pseudonymised "
              "(rule dataProtection, Art.11)",
              field_path=".pseudonymisationKeyRef", reason="FieldValueRequired")
    def _key_when_kept(self) -> bool:
        return (not self.pseudonymise or self.retention_days == 0
                or self.pseudonymisation_key_ref is not None)


class Complaints(ApiModel):
    """The complaint and report channel (投诉、举报机制) and its published process (Art.15)."""

    url: Url | None = Field(default=None, description="A web form or page for complaints.")
    email: Email | None = Field(default=None, description="An email address for complaints.")
    phone: Annotated[str, Field(min_length=3, max_length=32, pattern=r"^[0-9+() -]+$")] | None = (
        Field(default=None, description="A telephone number for complaints."))
    process_url: Url = Field(description="Where the handling process is published (处理流程).")
    response_deadline: Duration = Field(
        description="The published deadline for feedback (反馈时限), e.g. 72h.")

    @cel_rule("has(self.url) || has(self.email) || has(self.phone)",
              "give at least one complaint channel: url, email or phone (rule complaints, Art.15)")
    def _has_channel(self) -> bool:
        return self.url is not None or self.email is not None or self.phone is not None


class UserAgreement(ApiModel):
    """The service agreement with registered users (服务协议, Art.9)."""

    url: Url = Field(description="Where the agreement is published.")
    version: Annotated[str, Field(min_length=1, max_length=64)] = Field(
        description="The agreement's version.")
    effective_on: date = Field(description="The date the version took effect, YYYY-MM-DD.")
    privacy_policy_url: Url | None = Field(default=None,
                                           description="Where the privacy policy is published.")


# --- training (Art.7, Art.8) and licences (Art.23) ----------------------------------------------

class DataSourceKind(StrEnum):
    """Where training data comes from."""

    PUBLIC = "Public"
    LICENSED = "Licensed"
    SELF_COLLECTED = "SelfCollected"
    USER_GENERATED = "UserGenerated"
    SYNTHETIC = "Synthetic"


class PersonalInformationBasis(StrEnum):
    """The legal basis for personal information in training data (Art.7(3))."""

    NONE = "NoPersonalInformation"
    CONSENT = "Consent"
    OTHER_LAWFUL_BASIS = "OtherLawfulBasis"


class DataSource(ApiModel):
    """A source of training data (训练数据来源)."""

    name: ShortText = Field(description="The source's name.")
    kind: DataSourceKind = Field(description="Public, Licensed, SelfCollected, UserGenerated or "
                                             "Synthetic.")
    licence: ShortText | None = Field(
        default=None, description="The licence or contract the data is used under; required for "
                                  "Licensed sources.")
    personal_information: PersonalInformationBasis = Field(
        description="Whether it holds personal information, and on what basis (Art.7(3)).")

    @cel_rule("self.kind != 'Licensed' || has(self.licence)",
              "licence is required for a Licensed source (rule training, Art.7)",
              field_path=".licence", reason="FieldValueRequired")
    def _licence_for_licensed(self) -> bool:
        return self.kind is not DataSourceKind.LICENSED or self.licence is not None


class FoundationModel(ApiModel):
    """A base model the service is built on (基础模型)."""

    name: ShortText = Field(description="The model's name and version.")
    provider: ShortText = Field(description="Who provides the model.")
    service_filing_number: ServiceNumber | None = Field(
        default=None, description="The model's generative AI service filing number, for a filed "
                                  "third-party model.")
    licence: ShortText | None = Field(default=None, description="The licence the model is used "
                                                               "under.")


class QualitySampling(ApiModel):
    """The latest annotation quality sampling (抽样核验, Art.8)."""

    sampled_on: date = Field(description="The date of the sampling, YYYY-MM-DD.")
    sample_size: Annotated[int, Field(ge=1, le=100_000_000)] = Field(
        description="How many annotations were checked.")
    accuracy: Ratio = Field(description="The share found accurate, 0..1.")


class Annotation(ApiModel):
    """Data annotation (数据标注, Art.8)."""

    rules_url: Url = Field(description="Where the annotation rules (标注规则) are kept.")
    annotators_trained: bool = Field(description="Whether annotators are trained (标注人员培训).")
    latest_sampling: QualitySampling | None = Field(
        default=None, description="The latest quality sampling.")


class Training(ApiModel):
    """Training data and models (Art.7, Art.8), as Art.19 inspections ask them explained."""

    base_models: list[FoundationModel] = Field(default_factory=list, max_length=8,
                                               description="Base models (基础模型).")
    data_sources: list[DataSource] = Field(min_length=1, max_length=32,
                                           description="Training data sources.")
    annotation: Annotation | None = Field(default=None,
                                          description="Annotation rules and quality; absent if "
                                                      "no data was annotated.")


class Licence(ApiModel):
    """An administrative licence (行政许可) the service holds (Art.23)."""

    kind: ShortText = Field(description="The licence, e.g. 增值电信业务经营许可证.")
    number: Annotated[str, Field(min_length=1, max_length=128)] = Field(
        description="The licence number.")
    issuer: ShortText = Field(description="The issuing authority.")
    expires_on: date | None = Field(
        default=None, description="The expiry date, YYYY-MM-DD, if any: the first day the "
                                  "licence no longer counts (rule licences, Art.23).")

    def valid_on(self, day: date) -> bool:
        """Whether the licence is held on `day`: before expiresOn, the first day it no longer
        counts (as an assessment's expiresOn); always where it does not expire."""
        return self.expires_on is None or day < self.expires_on


class PortPurpose(StrEnum):
    """Why a port of the service's pods is left out of the sidecar's capture (Art.14)."""

    # The model server's own Prometheus metrics on a port of their own (Triton's 8002):
    # admitted from namespaces the platform labels hegui.io/metrics-scraper=true.
    METRICS = "Metrics"
    # What serving needs between the service's own pods: NCCL and torch.distributed
    # rendezvous, Ray's GCS, object manager and worker ports, ZMQ/UCX/NIXL transfers between
    # prefill and decode; admitted only from the pods the selector selects.
    POD_TO_POD = "PodToPod"


class OpenPort(ApiModel):
    """A TCP port (or range) of the service's pods that carries no generation to users, left
    out of the capture and admitted by hegui's NetworkPolicy for its purpose."""

    port: Annotated[int, Field(ge=1, le=65535)] = Field(description="The port, or the first of "
                                                                    "a range.")
    end_port: Annotated[int, Field(ge=1, le=65535)] | None = Field(
        default=None, description="The last port of a range (Ray's worker ports); absent: one "
                                  "port.")
    purpose: PortPurpose = Field(description="Metrics or PodToPod.")
    reason: Annotated[str, Field(min_length=1, max_length=64)] = Field(
        description="What uses the port, e.g. NCCL rendezvous; shown in audits.")

    @cel_rule("!has(self.endPort) || self.endPort >= self.port",
              "endPort must not be below port (rule injection, Art.14)", field_path=".endPort")
    def _range_ordered(self) -> bool:
        return self.end_port is None or self.end_port >= self.port

    @property
    def last(self) -> int:
        return self.end_port if self.end_port is not None else self.port


class Traffic(ApiModel):
    """Traffic to the service's pods that does not pass through the sidecar (Art.14). Every
    other inbound TCP connection is redirected to the sidecar (the CompliancePolicy's
    sidecar.capture Redirect), whichever port it was sent to."""

    open_ports: list[OpenPort] = Field(
        default_factory=list, max_length=8,
        description="Ports left out of the capture: the model's own metrics port (Metrics) and "
                    "the ports multi-pod serving needs between the service's pods (PodToPod). "
                    "The model's serving port and the sidecar's port cannot be declared.")


# --- the kind -------------------------------------------------------------------------------------

class GenerativeServiceSpec(ApiModel):
    """The compliance posture of one generative AI service, article by article."""

    display_name: ShortText | None = Field(default=None,
                                           description="The service's name as users see it.")
    selector: LabelSelector = Field(
        description="Selects the pods (and, by their pod templates, the workloads) that serve "
                    "this service, in this namespace. Must not be empty.")
    filing: Filing = Field(
        description="Filings (备案) with the Cyberspace Administration of China, and whether the "
                    "service is in Art.17 scope (publicOpinion).")
    assessment: Assessment | None = Field(
        default=None, description="The security assessment (安全评估, Art.17): a SafetyAssessment "
                                  "or an external report; required if filing.publicOpinion is "
                                  "true.")
    labeling: Labeling | None = Field(
        default=None, description="How generated content is labeled (标识, Art.12): explicit "
                                  "label, implicit metadata label (GB 45438-2025), watermark.")
    moderation: Moderation | None = Field(
        default=None, description="Moderation of inputs and outputs by a Triton model, with "
                                  "thresholds and actions per category (Art.4, Art.14).")
    slo: Slo | None = Field(
        default=None, description="Stability objectives (安全、稳定、持续的服务, Art.13): "
                                  "availability and latency over a window.")
    suspension: Suspension | None = Field(
        default=None, description="When and how the service is suspended for sustained "
                                  "violation of its objectives (Art.21).")
    audience: Audience | None = Field(
        default=None, description="Intended users, occasions and uses, published; protection "
                                  "of minors (Art.10).")
    data_protection: DataProtection | None = Field(
        default=None, description="Protection of users' inputs and usage records: retention, "
                                  "pseudonymisation, individuals' requests (Art.11).")
    complaints: Complaints | None = Field(
        default=None, description="The complaint and report channel, its published process and "
                                  "response deadline (Art.15).")
    user_agreement: UserAgreement | None = Field(
        default=None, description="The service agreement with registered users (服务协议, "
                                  "Art.9).")
    training: Training | None = Field(
        default=None, description="Training data sources, base models and annotation "
                                  "(Art.7, Art.8), as Art.19 inspections ask them explained.")
    licences: list[Licence] = Field(
        default_factory=list, max_length=16,
        description="Administrative licences (行政许可) the service holds (Art.23).")
    traffic: Traffic | None = Field(
        default=None, description="Ports of the service's pods that carry no generation and "
                                  "are left out of the sidecar's capture: metrics, and what "
                                  "serving needs between pods (Art.14).")

    @cel_rule("(has(self.selector.matchLabels) && size(self.selector.matchLabels) > 0) || "
              "(has(self.selector.matchExpressions) && size(self.selector.matchExpressions) > 0)",
              "selector must not be empty: an empty selector would claim every pod in the "
              "namespace (rule coverage, Art.17)", field_path=".selector")
    def _selector_not_empty(self) -> bool:
        return not self.selector.is_empty

    @cel_rule("!self.filing.publicOpinion || has(self.filing.algorithm)",
              "filing.algorithm (算法备案) is required when filing.publicOpinion is true "
              "(rule filing, Art.17)", field_path=".filing.algorithm",
              reason="FieldValueRequired")
    def _filed_if_public_opinion(self) -> bool:
        return not self.filing.public_opinion or self.filing.algorithm is not None

    @cel_rule("!self.filing.publicOpinion || has(self.assessment)",
              "assessment (安全评估) is required when filing.publicOpinion is true "
              "(rule assessment, Art.17)", field_path=".assessment", reason="FieldValueRequired")
    def _assessed_if_public_opinion(self) -> bool:
        return not self.filing.public_opinion or self.assessment is not None

    @cel_rule("!has(self.suspension) || self.suspension.mode != 'Auto' || has(self.slo)",
              "slo is required when suspension.mode is Auto: suspension follows the objectives "
              "(rule suspension, Art.13, Art.21)", field_path=".slo", reason="FieldValueRequired")
    def _slo_for_auto_suspension(self) -> bool:
        return (self.suspension is None or self.suspension.mode is not SuspensionMode.AUTO
                or self.slo is not None)


class ServiceConditionType(StrEnum):
    """The conditions of a GenerativeService. `article` names the article each rests on."""

    FILED = "Filed"
    ASSESSED = "Assessed"
    LABELED = "Labeled"
    MODERATED = "Moderated"
    SLO_MET = "SLOMet"
    SUSPENDED = "Suspended"
    COMPLIANT = "Compliant"

    @property
    def article(self) -> str:
        return _CONDITION_ARTICLES[self]


_CONDITION_ARTICLES = {
    ServiceConditionType.FILED: "Art.17",
    ServiceConditionType.ASSESSED: "Art.17",
    ServiceConditionType.LABELED: "Art.12",
    ServiceConditionType.MODERATED: "Art.14",
    ServiceConditionType.SLO_MET: "Art.13",
    ServiceConditionType.SUSPENDED: "Art.21",
    # Compliant sums up every rule; its message names the article of each unmet one.
    ServiceConditionType.COMPLIANT: "Art.7,Art.8,Art.9,Art.10,Art.11,Art.12,Art.13,Art.14,Art.15,"
                                    "Art.17,Art.21,Art.23",
}


class Severity(StrEnum):
    """How serious a finding is."""

    ERROR = "Error"
    WARNING = "Warning"
    INFO = "Info"


class Finding(ApiModel):
    """One thing hegui found wrong or noteworthy, named by rule and article."""

    rule: Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[a-z][A-Za-z0-9.]*$")] = (
        Field(description="The rule, e.g. filing or labeling."))
    article: Article = Field(description="The article the rule rests on, e.g. Art.17.")
    severity: Severity = Field(description="Error, Warning or Info.")
    message: Annotated[str, Field(min_length=1, max_length=512)] = Field(
        description="What was found and how to fix it.")
    workload: WorkloadReference | None = Field(default=None,
                                               description="The workload concerned, if any.")


class SuspensionTrigger(StrEnum):
    """Who suspended the service."""

    AUTO = "Auto"  # the operator, on sustained violation of the objectives
    MANUAL = "Manual"  # a person's SuspensionOrder
    ORDER = "Order"  # an authority's order (责令暂停): only its issuer group lifts it


class SuspensionRecord(ApiModel):
    """One suspension of the service, and its end."""

    suspended_at: Timestamp = Field(description="When the service was suspended.")
    trigger: SuspensionTrigger = Field(
        description="Auto (the operator), Manual (a person's order) or Order (an authority's).")
    reason: Annotated[str, Field(min_length=1, max_length=512)] = Field(
        description="Why, e.g. the burn rate that was exceeded.")
    suspended_by: ShortText | None = Field(
        default=None, description="Who ordered it (the SuspensionOrder's requestedBy), or "
                                  "operator.")
    order: DnsSubdomain | None = Field(
        default=None, description="The SuspensionOrder that suspended it (or was recorded on "
                                  "it), in the service's namespace.")
    authority: Annotated[str, Field(min_length=1, max_length=128)] | None = Field(
        default=None, description="The authority and reference of the order (trigger Order).")
    issuer_group: Annotated[str, Field(min_length=1, max_length=128)] | None = Field(
        default=None, description="Only a member of this group can lift it (trigger Order).")
    resumed_at: Timestamp | None = Field(default=None, description="When it was resumed.")
    resumed_by: ShortText | None = Field(
        default=None, description="Who resumed it, or cool-down when the operator did.")


class ScaledWorkload(ApiModel):
    """A workload a suspension scaled to zero, and its replicas before."""

    api_version: Annotated[str, Field(min_length=1, max_length=96)] = Field(
        default="apps/v1", description="The workload's apiVersion, e.g. apps/v1.")
    kind: Annotated[str, Field(min_length=1, max_length=63, pattern=r"^[A-Z][A-Za-z0-9]*$")] = (
        Field(description="Any kind with a scale subresource: Deployment, StatefulSet, "
                          "ReplicaSet, LeaderWorkerSet..."))
    name: DnsSubdomain = Field(description="The workload's name.")
    replicas: Annotated[int, Field(ge=0, le=100_000)] = Field(
        description="The replicas it had, given back on resume.")


class SuspensionStatus(ApiModel):
    """Whether the service is suspended, and its recent suspensions."""

    suspended: bool = Field(description="Whether the service is suspended now.")
    since: Timestamp | None = Field(default=None, description="When the current state began.")
    reason: Annotated[str, Field(max_length=1024)] = Field(
        default="", description="Why the service is suspended.")
    violating_since: Timestamp | None = Field(
        default=None, description="While the service runs: when the current violation of its "
                                  "objectives began; it is suspended once this has lasted "
                                  "suspension.sustainedFor (Art.21). Absent: no violation.")
    healthy_since: Timestamp | None = Field(
        default=None, description="While suspended: since when its objectives have held; the "
                                  "operator resumes it once this has lasted "
                                  "suspension.coolDown. Absent: not holding.")
    scaled_to_zero: list[ScaledWorkload] = Field(
        default_factory=list, max_length=32,
        description="Workloads scaled to zero by this suspension (action ScaleToZero) and the "
                    "replicas each is given back on resume.")
    history: list[SuspensionRecord] = Field(
        default_factory=list, max_length=10,
        description="The 10 most recent suspensions, newest first; older ones are dropped.")
    consumed_requests: list[Annotated[str, Field(min_length=1, max_length=64)]] = Field(
        default_factory=list, max_length=32,
        description="UIDs of the SuspensionOrders and ResumeRequests the operator has acted on, "
                    "newest first (32 kept): each is acted on once.")


class GenerativeServiceStatus(ApiModel):
    """What hegui found; written by the operator only."""

    observed_generation: Annotated[int, Field(ge=0)] | None = Field(
        default=None, description="The .metadata.generation this status describes.")
    conditions: list[Condition] = Field(
        default_factory=list, max_length=10,
        description="Filed, Assessed, Labeled, Moderated, SLOMet, Suspended and Compliant, each "
                    "citing its article.",
        json_schema_extra={"x-kubernetes-list-type": "map",
                           "x-kubernetes-list-map-keys": ["type"]})
    findings: list[Finding] = Field(default_factory=list, max_length=32,
                                    description="Findings, most severe first; capped at 32.")
    matched_workloads: list[WorkloadReference] = Field(
        default_factory=list, max_length=32,
        description="Workloads the selector matches; capped at 32 (see matchedWorkloadCount).")
    matched_workload_count: Annotated[int, Field(ge=0)] | None = Field(
        default=None, description="How many workloads the selector matches in all.")
    uninjected_pods: Annotated[int, Field(ge=0)] | None = Field(
        default=None, description="Running pods of the service without hegui's sidecar "
                                  "(admitted while the webhook was down, or before hegui); "
                                  "each is also a finding (rule injection, Art.14).")
    assessment_expires_on: date | None = Field(
        default=None, description="When the effective security assessment expires.")
    suspension: SuspensionStatus | None = Field(default=None,
                                                description="Suspension state and history.")


class GenerativeService(ApiObject):
    """A generative AI service (生成式人工智能服务) and its compliance posture under the Interim
    Measures: filings, assessment, labeling, moderation, stability and the duties of Art.7-23."""

    api_version: Literal["hegui.io/v1alpha1"] = Field(default=API_VERSION,
                                                      description="hegui.io/v1alpha1")
    kind: Literal["GenerativeService"] = Field(default="GenerativeService",
                                               description="GenerativeService")
    spec: GenerativeServiceSpec = Field(
        description="The compliance posture the platform team declares, article by article.")
    status: GenerativeServiceStatus | None = Field(
        default=None, description="What hegui found, article by article; written by the "
                                  "operator only.")

    def condition(self, kind: ServiceConditionType) -> Condition | None:
        if self.status is None:
            return None
        return next((c for c in self.status.conditions if c.type == kind), None)

    def condition_is(self, kind: ServiceConditionType, status: ConditionStatus) -> bool:
        found = self.condition(kind)
        return found is not None and found.status is status

    @property
    def is_compliant(self) -> bool:
        return self.condition_is(ServiceConditionType.COMPLIANT, ConditionStatus.TRUE)

    @property
    def is_suspended(self) -> bool:
        return bool(self.status and self.status.suspension and self.status.suspension.suspended)

    @property
    def in_art17_scope(self) -> bool:
        return self.spec.filing.public_opinion
