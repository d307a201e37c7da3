"""Build the dossier of one service: its posture article by article, what hegui found, and what
its records show (Art.19: explain data sources, annotation rules and algorithm mechanisms).

Every section states what is declared; a duty that is not declared says so, with the field that
would declare it, rather than being left out.
"""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from hegui.api.assessment import BankCoverage, SafetyAssessment
from hegui.api.generativeservice import GenerativeService, ServiceConditionType
from hegui.dossier import charts
from hegui.dossier.document import Block, Dossier, Facts, Paragraph, Section, Table
from hegui.dossier.store import Shipped
from hegui.moderation.records import verify
from hegui.sidecar.complaints import COMPLAINT, ComplaintBook, iter_records, load, record_files

#: Record kinds that are incidents (Art.14); labels (Art.12) and complaints are counted apart.
INCIDENT_KINDS = ("block", "mask", "flag", "unmoderated", "stream_cut", "strike", "suspension")


def _d(value: object) -> str:
    if value is None:
        return "-"
    if isinstance(value, datetime):
        return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, list):
        return ", ".join(_d(v) for v in value) or "-"
    return str(value)


def _missing(field: str, article: str) -> Paragraph:
    return Paragraph(f"Not declared: set spec.{field} to declare it ({article}).")


class _Records:
    """What a records directory holds about one service."""

    def __init__(self, where: Path | None, service: str, shipped: Shipped | None = None) -> None:
        self.files: list[Path] = []
        self.events: list[charts.Event] = []
        self.kinds: Counter[str] = Counter()
        self.categories: Counter[str] = Counter()
        self.labels = 0
        self.problems: list[str] = []
        self.integrity: list[list[str]] = []
        self.book = ComplaintBook([], [], [])
        if where is None:
            return
        self.files = record_files(where)
        if shipped is not None:  # verified in the store, against the anchors
            for stream in shipped.report.streams.values():
                self.integrity.append([stream.stream, str(stream.records),
                                       "intact" if stream.first_bad is None
                                       else f"first bad record: {stream.first_bad}"])
            self.problems.extend(shipped.report.problems)
        for path in self.files:
            if shipped is None:  # a pod's file: its own chain is all there is to check
                result = verify(path)
                self.integrity.append([
                    str(path.relative_to(where) if where.is_dir() else path.name),
                    str(result.records), "intact" if result.ok else "; ".join(result.errors[:3])])
            for record in iter_records(path, self.problems):
                if record.get("service") not in (service, None):
                    continue
                kind = str(record.get("kind"))
                time = _time(record.get("time"))
                if kind == "label":
                    self.labels += 1
                elif kind in INCIDENT_KINDS and time is not None:
                    self.kinds[kind] += 1
                    self.events.append(charts.Event(time, kind))
                    for category in record.get("categories") or []:
                        self.categories[str(category)] += 1
        book = load(self.files)
        self.book = ComplaintBook([c for c in book.complaints if c.service in (service, "")],
                                  book.problems, book.files)


def _time(value: Any) -> datetime | None:
    try:
        parsed = datetime.fromisoformat(value) if isinstance(value, str) else None
    except ValueError:
        return None
    if parsed is not None and parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed


def build(service: GenerativeService, assessments: list[SafetyAssessment], *,
          records: Path | None = None, now: datetime | None = None,
          source: str = "", shipped: Shipped | None = None) -> Dossier:
    """`shipped`: the records come from the evidence store (hegui.dossier.store), copied into
    `records`."""
    now = now or datetime.now(UTC)
    ref = f"{service.namespace or 'default'}/{service.name}"
    found = _Records(shipped.directory if shipped else records, ref, shipped)
    spec = service.spec
    title = f"Dossier of {spec.display_name or service.name}"
    sections = [
        _overview(service, ref, shipped.url if shipped else records, now),
        _filing(service),
        _assessment(service, assessments, now),
        _training(service),
        _annotation(service),
        _agreement(service),
        _audience(service),
        _data_protection(service, found),
        _labeling(service, found),
        _moderation(service),
        _stability(service, now),
        _incidents(found, now),
        _complaints(service, found, now),
        _licences(service, now),
        _status(service),
        _integrity(records, found, shipped),
    ]
    return Dossier(title=title, service=ref, generated_at=now, source=source,
                   sections=sections)


def _overview(service: GenerativeService, ref: str, records: Path | str | None,
              now: datetime) -> Section:
    spec = service.spec
    compliant = service.condition(ServiceConditionType.COMPLIANT)
    return Section("Service and this dossier", "Art.19", [
        Paragraph("This dossier explains the service as Art.19 asks a provider to when the "
                  "authorities inspect it: its filings and security assessment, the sources and "
                  "annotation of its training data, how its output is moderated and labeled, its "
                  "stability, and the incidents and complaints it handled. Each section cites "
                  "the article it answers to; everything is as declared in the service's "
                  "GenerativeService and found by hegui."),
        Facts([("Service", ref), ("Name shown to users", _d(spec.display_name)),
               ("Generation", _d(service.metadata.generation)),
               ("Compliant", f"{compliant.status.value}: {compliant.message or compliant.reason}"
                if compliant else "not evaluated by the operator yet"),
               ("Records examined", str(records) if records
                else "none given (--store or --records)"),
               ("Generated", _d(now))]),
    ])


def _filing(service: GenerativeService) -> Section:
    filing = service.spec.filing
    blocks: list[Block] = [Facts([
        ("Public-opinion attributes or social mobilisation", _d(filing.public_opinion)),
        ("Algorithm filing (算法备案)", _d(filing.algorithm.number if filing.algorithm else None)),
        ("Algorithm name", _d(filing.algorithm.name if filing.algorithm else None)),
        ("Algorithm filed on", _d(filing.algorithm.filed_on if filing.algorithm else None)),
        ("Service filing or registration", _d(filing.service.number if filing.service else None)),
        ("Model name as filed", _d(filing.service.model_name if filing.service else None)),
        ("Service filed on", _d(filing.service.filed_on if filing.service else None)),
    ])]
    if filing.public_opinion and filing.algorithm is None:
        blocks.append(Paragraph("Missing: a service with public-opinion attributes needs an "
                                "algorithm filing (spec.filing.algorithm, Art.17)."))
    return Section("Filing", "Art.17", blocks)


def _assessment(service: GenerativeService, assessments: list[SafetyAssessment],
                now: datetime) -> Section:
    declared = service.spec.assessment
    blocks: list[Block] = []
    if declared is None:
        blocks.append(_missing("assessment", "Art.17"))
    elif declared.external is not None:
        ext = declared.external
        blocks.append(Facts([("Kind", "external report"), ("Report", ext.report_id),
                             ("Assessor", _d(ext.assessor)), ("Assessed on", _d(ext.assessed_on)),
                             ("Expires on", _d(ext.expires_on)), ("Result", ext.result.value),
                             ("Valid today", _d(ext.valid_on(now.date()))),
                             ("Report URL", _d(ext.report_url))]))
    elif declared.safety_assessment_ref is not None:
        blocks.append(Facts([("Kind", "SafetyAssessment run by hegui"),
                             ("Declared", declared.safety_assessment_ref.name)]))
    ordered = sorted(assessments, key=lambda a: (a.status.completed_at if a.status and
                                                 a.status.completed_at else now), reverse=True)
    history = []
    for run in ordered:
        status = run.status
        history.append([run.name, run.spec.standard,
                        status.verdict.value if status else "Pending",
                        _d(status.started_at if status else None),
                        _d(status.completed_at if status else None),
                        _d(status.expires_at if status else None),
                        _d(run.passed_at(now))])
    blocks.append(Paragraph("Assessment history, newest first:"))
    blocks.append(Table(["Assessment", "Standard", "Verdict", "Started", "Completed", "Expires",
                         "Counts now"], history, empty="no SafetyAssessment of this service "
                                                       "was given"))
    for run in ordered:
        thresholds = run.spec.thresholds
        blocks.append(Paragraph(
            f"{run.name}: question banks "
            f"{', '.join(f'{b.name} ({b.kind.value})' for b in run.spec.question_banks)}; "
            "thresholds: generated content pass rate ≥ "
            f"{thresholds.generated_content_pass_rate:g}, "
            f"refusal rate ≥ {thresholds.refusal_rate:g}, over-refusal rate ≤ "
            f"{thresholds.over_refusal_rate:g}; valid for {run.spec.valid_for}."))
        if run.status and run.status.summary:
            blocks.append(Table(
                ["Kind of bank", "Questions", "Passed", "Timed out", "Rate", "Threshold", "Met"],
                [[s.kind.value, str(s.questions), str(s.passed), str(s.timed_out),
                  f"{s.rate:.1%}", f"{s.threshold:.1%}", _d(s.met)]
                 for s in run.status.summary]))
        if run.status and run.status.results:
            blocks.append(Table(["Bank", "Category", "Questions", "Passed", "Pass rate"],
                                [[r.bank, r.category, str(r.questions), str(r.passed),
                                  f"{r.pass_rate:.1%}"] for r in run.status.results]))
        if run.status and run.status.banks:
            blocks.extend(_bank_coverage(run.status.banks))
        if run.status and run.status.message:
            blocks.append(Paragraph(run.status.message))
    return Section("Security assessment", "Art.17", blocks)


def _bank_coverage(banks: list[BankCoverage]) -> list[Block]:
    """The banks' sizes against GB/T 45654-2025 (its test banks and refusal banks), and each
    risk of Appendix A that has fewer questions than the standard asks."""
    blocks: list[Block] = [
        Paragraph("Question banks against the standard's sizes (GB/T 45654-2025):"),
        Table(["Kind of bank", "Questions", "Required", "Risks covered", "At standard size"],
              [[b.kind.value, str(b.questions), str(b.required),
                f"{b.risks_covered} of {b.risks_required}", _d(b.met)] for b in banks])]
    short = [[b.kind.value, s.risk, s.clause, str(s.questions), str(s.required)]
             for b in banks for s in b.short]
    if short:
        blocks.append(Table(["Kind of bank", "Risk", "Clause", "Questions", "Required"], short))
    unknown = sorted({c for b in banks for c in b.unknown_categories})
    if unknown:
        blocks.append(Paragraph("Categories that are none of the 31 risks (not counted): "
                                + ", ".join(unknown) + "."))
    return blocks


def _training(service: GenerativeService) -> Section:
    training = service.spec.training
    if training is None:
        return Section("Training data and base models", "Art.7", [_missing("training", "Art.7")])
    return Section("Training data and base models", "Art.7", [
        Paragraph("Base models (基础模型):"),
        Table(["Model", "Provider", "Filing number", "Licence"],
              [[m.name, m.provider, _d(m.service_filing_number), _d(m.licence)]
               for m in training.base_models], empty="none declared"),
        Paragraph("Training data sources (训练数据来源), with the legal basis for personal "
                  "information (Art.7(3)):"),
        Table(["Source", "Kind", "Licence", "Personal information"],
              [[s.name, s.kind.value, _d(s.licence), s.personal_information.value]
               for s in training.data_sources]),
    ])


def _annotation(service: GenerativeService) -> Section:
    training = service.spec.training
    annotation = training.annotation if training else None
    if annotation is None:
        return Section("Annotation", "Art.8", [Paragraph(
            "No annotation is declared (spec.training.annotation): the provider states that no "
            "data was annotated, or has not declared it (Art.8).")])
    sampling = annotation.latest_sampling
    return Section("Annotation", "Art.8", [Facts([
        ("Annotation rules (标注规则)", annotation.rules_url),
        ("Annotators trained", _d(annotation.annotators_trained)),
        ("Latest quality sampling", _d(sampling.sampled_on if sampling else None)),
        ("Sample size", _d(sampling.sample_size if sampling else None)),
        ("Accuracy", f"{sampling.accuracy:.1%}" if sampling else "-"),
    ])])


def _agreement(service: GenerativeService) -> Section:
    agreement = service.spec.user_agreement
    if agreement is None:
        return Section("Service agreement", "Art.9", [_missing("userAgreement", "Art.9")])
    return Section("Service agreement", "Art.9", [Facts([
        ("Agreement", agreement.url), ("Version", agreement.version),
        ("In effect since", _d(agreement.effective_on)),
        ("Privacy policy", _d(agreement.privacy_policy_url))])])


def _audience(service: GenerativeService) -> Section:
    audience = service.spec.audience
    if audience is None:
        return Section("Audience and minors", "Art.10", [_missing("audience", "Art.10")])
    return Section("Audience and minors", "Art.10", [Facts([
        ("Intended users (适用人群)", _d(audience.intended_users)),
        ("Occasions (场合)", _d(audience.occasions)), ("Uses (用途)", _d(audience.uses)),
        ("Published at", audience.published_at),
        ("Minors allowed", _d(audience.minors.allowed)),
        ("Daily limit for minors", _d(audience.minors.daily_limit))])])


def _data_protection(service: GenerativeService, found: _Records) -> Section:
    protection = service.spec.data_protection
    if protection is None:
        return Section("Personal information and records", "Art.11",
                       [_missing("dataProtection", "Art.11")])
    requests = protection.user_requests
    return Section("Personal information and records", "Art.11", [Facts([
        ("Records kept for", f"{protection.retention_days} days"),
        ("User ids pseudonymised (keyed HMAC)", _d(protection.pseudonymise)),
        ("Pseudonymisation key", f"Secret {protection.pseudonymisation_key_ref.name}, key "
                                 f"{protection.pseudonymisation_key_ref.key}"
         if protection.pseudonymisation_key_ref else "-"),
        ("Personal information collected", _d(protection.personal_information)),
        ("Individuals' requests", f"{requests.channel}, within {requests.deadline_days} days"),
        ("Record files examined", str(len(found.files)))])])


def _labeling(service: GenerativeService, found: _Records) -> Section:
    labeling = service.spec.labeling
    if labeling is None:
        return Section("Labeling of generated content", "Art.12",
                       [_missing("labeling", "Art.12")])
    explicit = labeling.explicit
    watermark = labeling.watermark
    return Section("Labeling of generated content", "Art.12", [Facts([
        ("Modalities", _d([m.value for m in labeling.modalities])),
        ("Explicit label (显式标识)", "off" if explicit and not explicit.enabled else
         f"{explicit.text if explicit and explicit.text else 'the policy default'}, at "
         f"{explicit.position.value if explicit else 'End'}"),
        ("Implicit label (隐式标识, GB 45438-2025)",
         f"{'on' if labeling.implicit.enabled else 'off'}, ContentProducer "
         f"{labeling.implicit.content_producer}, ProduceID prefix "
         f"{labeling.implicit.produce_id_prefix or '-'}"),
        ("Watermark", "on" if watermark and watermark.enabled else "off"),
        ("Labeled outputs in the records", str(found.labels))])])


def _moderation(service: GenerativeService) -> Section:
    moderation = service.spec.moderation
    if moderation is None:
        return Section("Content moderation", "Art.4, Art.14", [_missing("moderation", "Art.14")])
    triton = moderation.triton
    return Section("Content moderation", "Art.4, Art.14", [
        Facts([("Moderation model", f"{triton.model} at {triton.address} ({triton.protocol.value})"
                if triton else "the CompliancePolicy's default"),
               ("Inputs moderated", _d(moderation.input.enabled)),
               ("Outputs moderated", _d(moderation.output.enabled)),
               ("Stream window", f"{moderation.output.stream_window_tokens} tokens"),
               ("When the moderator is down", moderation.failure_mode.value),
               ("Timeout", moderation.timeout)]),
        Table(["Category", "Threshold", "Action", "Applies to", "Article"],
              [[c.name, f"{c.threshold:g}", c.action.value,
                ", ".join(d.value for d in c.directions), _d(c.article)]
               for c in moderation.categories]),
    ])


def _stability(service: GenerativeService, now: datetime) -> Section:
    spec = service.spec
    blocks: list[Block] = []
    if spec.slo is None:
        blocks.append(_missing("slo", "Art.13"))
    else:
        slo = spec.slo
        blocks.append(Facts([
            ("Window", slo.window),
            ("Availability objective", f"{slo.availability.objective:.2%}"
             if slo.availability else "-"),
            ("Latency objective", f"{slo.latency.objective:.0%} within {slo.latency.threshold}"
             if slo.latency else "-")]))
    suspension = spec.suspension
    if suspension is not None:
        rates = ", ".join(f"{r.long_window}/{r.short_window} at {r.factor:g}x"
                          for r in suspension.burn_rates) or "1h/5m at 14.4x, 6h/30m at 6x"
        blocks.append(Facts([("Suspension", suspension.mode.value), ("Burn rates", rates),
                             ("Sustained for", suspension.sustained_for),
                             ("Action", suspension.action.value),
                             ("Cool-down", _d(suspension.cool_down)),
                             ("Missing metrics", suspension.no_data.value)]))
    state = service.status.suspension if service.status else None
    history = state.history if state else []
    slo_condition = service.condition(ServiceConditionType.SLO_MET)
    blocks.append(Facts([
        ("SLO now", f"{slo_condition.status.value} since "
                    f"{_d(slo_condition.last_transition_time)}: {slo_condition.message}"
         if slo_condition else "not reported by the operator yet"),
        ("Suspended now", f"yes, since {_d(state.since)}: {state.reason}"
         if state and state.suspended else "no")]))
    spans = [charts.Span(r.suspended_at, r.resumed_at or now, r.trigger.value) for r in history]
    start = charts.window([s.start for s in spans] + ([slo_condition.last_transition_time]
                                                      if slo_condition else []),
                          now, timedelta(days=30))
    met = None if slo_condition is None else slo_condition.status.value == "True"
    if slo_condition is not None and slo_condition.status.value == "Unknown":
        met = None
    blocks.append(charts.slo_suspensions(spans, met, slo_condition.last_transition_time
                                         if slo_condition else None, start, now))
    blocks.append(Table(["Suspended at", "By", "Reason", "Resumed at", "Resumed by"],
                        [[_d(r.suspended_at), r.trigger.value, r.reason, _d(r.resumed_at),
                          _d(r.resumed_by)] for r in history],
                        empty="no suspensions recorded in the status"))
    return Section("Stability and suspension", "Art.13, Art.21", blocks)


def _incidents(found: _Records, now: datetime) -> Section:
    complaint_events = [charts.Event(c.received, COMPLAINT, c.state(now))
                        for c in found.book.complaints]
    events = found.events + complaint_events
    start = charts.window([e.time for e in events], now, timedelta(days=7))
    blocks: list[Block] = [
        charts.incident_timeline(events, start, now),
        Table(["Record kind", "Count"], [[k, str(n)] for k, n in sorted(found.kinds.items())],
              empty="no incident records" + ("" if found.files else " (no --records given)")),
    ]
    if found.categories:
        blocks.append(Table(["Blocked category", "Count"],
                            [[k, str(n)] for k, n in found.categories.most_common()]))
    return Section("Incidents", "Art.14", blocks)


def _complaints(service: GenerativeService, found: _Records, now: datetime) -> Section:
    declared = service.spec.complaints
    blocks: list[Block] = []
    if declared is None:
        blocks.append(_missing("complaints", "Art.15"))
    else:
        channels = [v for v in (declared.url, declared.email, declared.phone) if v]
        blocks.append(Facts([("Channels", ", ".join(channels)),
                             ("Process published at", declared.process_url),
                             ("Response deadline", declared.response_deadline)]))
    book = found.book
    states = Counter(c.state(now) for c in book.complaints)
    late = sum(1 for c in book.complaints if c.closed_late)
    blocks.append(Paragraph(f"{len(book.complaints)} complaints: {states['open']} open, "
                            f"{states['overdue']} overdue, {states['closed']} closed "
                            f"({late} after the deadline)."))
    blocks.append(Table(
        ["Reference", "Received", "Category", "State", "Deadline", "Closed", "Outcome"],
        [[c.reference, _d(c.received), c.category, c.state(now), _d(c.deadline),
          _d(c.closed_at) + (" (late)" if c.closed_late else ""), _d(c.resolution)]
         for c in book.complaints], empty="no complaints recorded"))
    return Section("Complaints", "Art.15", blocks)


def _licences(service: GenerativeService, now: datetime) -> Section:
    licences = service.spec.licences
    return Section("Licences", "Art.23", [Table(
        ["Licence", "Number", "Issuer", "Expires", "Current"],
        [[lic.kind, lic.number, lic.issuer, _d(lic.expires_on),
          _d(lic.valid_on(now.date()))] for lic in licences],
        empty="none declared (spec.licences)")])


def _status(service: GenerativeService) -> Section:
    status = service.status
    conditions = status.conditions if status else []
    findings = status.findings if status else []
    return Section("Status and findings", "Art.12, Art.13, Art.14, Art.17, Art.21", [
        Table(["Condition", "Status", "Article", "Since", "Reason", "Message"],
              [[c.type, c.status.value, c.article, _d(c.last_transition_time), c.reason,
                c.message] for c in conditions],
              empty="the operator has not written a status yet"),
        Table(["Rule", "Article", "Severity", "Finding"],
              [[f.rule, f.article, f.severity.value, f.message] for f in findings],
              empty="no findings"),
    ])


def _integrity(records: Path | None, found: _Records, shipped: Shipped | None = None
               ) -> Section:
    if shipped is not None:
        blocks: list[Block] = [Paragraph(
            f"The records were read from the evidence store {shipped.url}, where each sidecar "
            "shipped them as sealed segments locked in COMPLIANCE mode (nobody can delete or "
            "overwrite them before their retention ends). Every segment's seal, every record's "
            "hash and link, and every stream's head against the operator's anchors were "
            "checked (hegui records verify; Art.11, Art.19)"
            + ("." if shipped.keyed else ", except the seals: no evidence key was given."))]
        blocks.append(Table(["Stream (one sidecar's chain)", "Records", "Chain"],
                            found.integrity, empty="no records shipped for this service"))
        if shipped.report.anchors == 0:
            blocks.append(Paragraph("No anchor was found: a stream cut short at its end "
                                    "cannot be told from a complete one."))
    else:
        blocks = [Paragraph(
            "Each record file is a hash chain (every record carries the hash of the one "
            "before) whose head is kept beside it; hegui records verify checks it (Art.11, "
            "Art.14). A file from a pod's volume proves little: whoever can mount the volume "
            "can rewrite it; the evidence store (--store) is what an inspection should read.")]
        blocks.append(Table(["Record file", "Records", "Chain"], found.integrity,
                            empty="no record files" + ("" if records
                                                       else " (no --records given)")))
    problems = list(dict.fromkeys(found.problems + found.book.problems))  # both read each file
    if problems:
        blocks.append(Paragraph(f"{len(problems)} unreadable lines or records, first: "
                                + "; ".join(problems[:5])))
    return Section("Integrity of the records", "Art.11, Art.14", blocks)
