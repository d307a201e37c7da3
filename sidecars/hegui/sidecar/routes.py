"""The sidecar's route table: an allow-list over canonical paths (Art.14; design lesson 10).

Every request is matched here before anything reaches the model:

1. The raw request target (the bytes on the request line, before any decoding) must be
   canonical: an absolute path of segments made of `A-Z a-z 0-9 - . _ ~ : @`, no empty segment
   (repeated or trailing slash), no `.` or `..` segment, no percent-encoding, no backslash.
   A request whose path would change when canonicalised is refused (400
   `hegui.path_not_canonical`), naming the canonical form: model servers normalise paths, so
   `/v1/./chat/completions` would otherwise reach `/v1/chat/completions` unmoderated.
2. The path must match a route, case-sensitively; one that matches only ignoring case is not
   canonical either. Anything else is refused (404 `hegui.route_not_allowed`) with the fix.
3. The method must be one the route allows (405 `hegui.method_not_allowed`, with `Allow`).
4. The upstream URL is built from the matched route (its upstream path, the captured
   parameters re-quoted), never from the raw path.

Routes are moderated generation (a family in `hegui.sidecar.families`), metadata (model
lists, health, the model server's own metrics: moderated both ways too, since the model server
can write anything there, `hegui.sidecar.metadata`), or non-generative (embeddings, tokenize).
A GenerativeService may declare more generation routes
(`spec.moderation.routes`: path and family), a CompliancePolicy for all its services
(`spec.defaults.routes`, merged in by the operator); neither can declare unmoderated ones.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from enum import StrEnum
from urllib.parse import quote

from hegui.sidecar.families import FAMILIES


class Kind(StrEnum):
    GENERATION = "generation"  # moderated both ways
    # Model lists, health, the model server's metrics: moderated both ways, not labeled
    # (hegui.sidecar.metadata): the model server is the application team's to write.
    METADATA = "metadata"
    NON_GENERATIVE = "nonGenerative"  # relayed: embeddings, tokenize (no text is generated)


#: One segment of a canonical path (and of a captured parameter).
SEGMENT = re.compile(r"[A-Za-z0-9_~:@-][A-Za-z0-9._~:@-]*")
_PARAM = re.compile(r"\{([a-z_]+)\}")
ARTICLE = "Art.14"
FIX = ("if the model serves this API, declare the route and its family in the "
       "GenerativeService's spec.moderation.routes, or for every service in the "
       "CompliancePolicy's spec.defaults.routes (path and family: one of "
       f"{', '.join(sorted(FAMILIES))}); unmoderated routes cannot be declared")


class RouteRefused(Exception):
    """A request the route table refuses: its status, code and message (Art.14)."""

    def __init__(self, status: int, code: str, message: str,
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message
        self.headers = headers or {}


@dataclass(frozen=True)
class Route:
    """`pattern` is a path whose `{name}` segments capture one canonical segment."""

    pattern: str
    kind: Kind
    family: str  # the family (generation) or the metrics label (others)
    methods: frozenset[str] = frozenset({"POST"})
    upstream: str | None = None  # the upstream path pattern; default: `pattern`

    @property
    def segments(self) -> tuple[str, ...]:
        return tuple(self.pattern.split("/")[1:])

    @property
    def action(self) -> str:
        """The route's last fixed segment (e.g. generate_stream): some families stream by
        path."""
        return self.segments[-1]

    def match(self, segments: list[str], *, fold: bool = False) -> dict[str, str] | None:
        mine = self.segments
        if len(mine) != len(segments):
            return None
        params: dict[str, str] = {}
        for expected, actual in zip(mine, segments, strict=True):
            if (name := _PARAM.fullmatch(expected)) is not None:
                params[name.group(1)] = actual
            elif expected != actual and not (fold and expected.lower() == actual.lower()):
                return None
        return params

    def upstream_path(self, params: dict[str, str]) -> str:
        """The path sent to the model server: from the route, never from the request."""
        return _PARAM.sub(lambda m: quote(params[m.group(1)], safe=""),
                          self.upstream or self.pattern)


def _routes(kind: Kind, family: str, patterns: Iterable[str], methods: Iterable[str] = ("POST",),
            ) -> list[Route]:
    return [Route(p, kind, family, frozenset(methods)) for p in patterns]


_TRITON = "/v2/models/{model}"
_TRITON_V = "/v2/models/{model}/versions/{version}"
G, M, N = Kind.GENERATION, Kind.METADATA, Kind.NON_GENERATIVE
_READ = ("GET", "HEAD")

#: The health paths kubelet's probes use on the model's port (captured, so they reach the
#: sidecar): answered with the model's status alone when moderation is down or the service is
#: suspended, so neither restarts the model by failing its liveness probe.
PROBE_PATHS = frozenset({"/health", "/ping", "/v2/health/live", "/v2/health/ready"})

#: The model server's own Prometheus metrics (the sidecar's are on /metrics); also what the
#: sidecar serves on a port declared for Metrics (hegui.sidecar.original_dst).
MODEL_METRICS = Route("/hegui/model/metrics", Kind.METADATA, "metadata", frozenset(_READ),
                      upstream="/metrics")

BUILTIN: tuple[Route, ...] = (
    # --- generation, moderated both ways ----------------------------------------------------
    *_routes(G, "chat", ["/v1/chat/completions"]),
    *_routes(G, "completions", ["/v1/completions"]),
    *_routes(G, "responses", ["/v1/responses"]),
    *_routes(G, "messages", ["/v1/messages"]),
    *_routes(G, "tgi", ["/generate", "/generate_stream"]),
    *_routes(G, "ollama_chat", ["/api/chat"]),
    *_routes(G, "ollama_generate", ["/api/generate"]),
    *_routes(G, "triton_generate", [f"{p}/{a}" for p in (_TRITON, _TRITON_V)
                                    for a in ("generate", "generate_stream")]),
    *_routes(G, "triton_infer", [f"{_TRITON}/infer", f"{_TRITON_V}/infer"]),
    *_routes(G, "invocations", ["/invocations"]),
    *_routes(G, "images", ["/v1/images/generations"]),
    # --- non-generative: no text is generated, relayed ---------------------------------------
    *_routes(N, "embeddings", ["/v1/embeddings", "/api/embed", "/api/embeddings"]),
    *_routes(N, "tokenize", ["/tokenize"]),
    # --- metadata, moderated both ways (hegui.sidecar.metadata) --------------------------------
    *_routes(M, "metadata", ["/v1/models", "/v1/models/{model}", "/health", "/ping", "/version",
                             "/info", "/api/tags", "/api/version", "/api/ps", "/v2",
                             "/v2/health/live", "/v2/health/ready", _TRITON, _TRITON_V,
                             f"{_TRITON}/ready", f"{_TRITON_V}/ready", f"{_TRITON}/config",
                             f"{_TRITON_V}/config", f"{_TRITON}/stats"], _READ),
    *_routes(M, "metadata", ["/api/show"]),  # Ollama's model card: a POST that reads
    MODEL_METRICS,
)


@dataclass(frozen=True)
class Match:
    route: Route
    params: dict[str, str]
    query: str  # the raw query string, re-sent only when it is canonical too
    #: The model server's base URL for this request; empty: the sidecar's --upstream (a port
    #: declared for Metrics is relayed to that port, hegui.sidecar.original_dst).
    upstream: str = ""

    @property
    def upstream_path(self) -> str:
        path = self.route.upstream_path(self.params)
        return f"{path}?{self.query}" if self.query else path


def canonical_path(path: str) -> str:
    """The canonical form of a path: percent-decoded, backslashes as slashes, empty and `.`
    segments removed, `..` applied, no trailing slash."""
    from urllib.parse import unquote

    decoded = path
    for _ in range(4):  # double-encoding (%252F) decodes in steps
        step = unquote(decoded)
        if step == decoded:
            break
        decoded = step
    out: list[str] = []
    for segment in decoded.replace("\\", "/").split("/"):
        if segment in ("", "."):
            continue
        if segment == "..":
            if out:
                out.pop()
            continue
        out.append(segment)
    return "/" + "/".join(out)


_QUERY = re.compile(r"[A-Za-z0-9._~:@!$'()*+,;=/?&%-]*")


@dataclass
class RouteTable:
    routes: tuple[Route, ...] = BUILTIN
    _by_length: dict[int, list[Route]] = field(default_factory=dict, init=False, repr=False)
    _exact: dict[str, list[Route]] = field(default_factory=dict, init=False, repr=False)

    def __post_init__(self) -> None:
        for route in self.routes:
            self._by_length.setdefault(len(route.segments), []).append(route)
            if not _PARAM.search(route.pattern):  # a fixed path is canonical as written
                self._exact.setdefault(route.pattern, []).append(route)

    @classmethod
    def with_declared(cls, declared: Iterable[tuple[str, str]]) -> RouteTable:
        """The built-in routes plus a service's declared generation routes (path, family)."""
        extra = []
        for path, family in declared:
            if family not in FAMILIES:
                raise ValueError(f"route {path}: {family} is not a generation family")
            if canonical_path(path) != path or not all(SEGMENT.fullmatch(s)
                                                       for s in path.split("/")[1:]):
                raise ValueError(f"route {path} is not a canonical path")
            extra.append(Route(path, Kind.GENERATION, family))
        return cls((*BUILTIN, *extra))

    def resolve(self, method: str, target: str) -> Match:
        """The route of a request, from its raw target; RouteRefused says why not."""
        path, _, query = target.partition("?")
        exact = self._exact.get(path)
        if exact is not None and _QUERY.fullmatch(query):  # the common case, one lookup
            for route in exact:
                if method in route.methods:
                    return Match(route, {}, query)
        if not path.startswith("/"):
            raise RouteRefused(400, "hegui.path_not_canonical",
                               f"the request target {target[:200]!r} is not an absolute path "
                               f"(the sidecar routes canonical paths only, {ARTICLE})")
        segments = path.split("/")[1:] if path != "/" else []
        if not all(SEGMENT.fullmatch(s) for s in segments):
            self._not_canonical(path)
        if not _QUERY.fullmatch(query) or "#" in target:
            raise RouteRefused(400, "hegui.query_not_canonical",
                               f"the query string of {path} has characters a URL query may not "
                               f"carry ({ARTICLE})")
        candidates = self._by_length.get(len(segments), [])
        matched = [(r, p) for r in candidates if (p := r.match(segments)) is not None]
        if not matched:
            folded = [r for r in candidates if r.match(segments, fold=True) is not None]
            if folded:
                canonical = "/" + "/".join(
                    actual if _PARAM.fullmatch(expected) else expected
                    for expected, actual in zip(folded[0].segments, segments, strict=True))
                raise RouteRefused(400, "hegui.path_not_canonical",
                                   f"the path {path} differs from the route {canonical} in "
                                   f"case; send {canonical} (the sidecar routes canonical "
                                   f"paths only, {ARTICLE})")
            raise RouteRefused(404, "hegui.route_not_allowed",
                               f"{method} {path} is not on the sidecar's route allow-list, so "
                               f"it is refused: nothing reaches the model unmoderated "
                               f"({ARTICLE}). Fix: {FIX}")
        for route, params in matched:
            if method in route.methods:
                return Match(route, params, query)
        allowed = sorted({m for r, _ in matched for m in r.methods})
        raise RouteRefused(405, "hegui.method_not_allowed",
                           f"{method} is not allowed on {path}; allowed: {', '.join(allowed)} "
                           f"({ARTICLE})", headers={"Allow": ", ".join(allowed)})

    def _not_canonical(self, path: str) -> None:
        canonical = canonical_path(path)
        raise RouteRefused(400, "hegui.path_not_canonical",
                           f"the path {path[:200]!r} is not canonical (dot segments, repeated, "
                           f"trailing or encoded slashes, percent-encoding or characters "
                           f"outside A-Z a-z 0-9 - . _ ~ : @); send {canonical[:200]!r} (the "
                           f"sidecar routes canonical paths only, {ARTICLE})")


__all__ = ["BUILTIN", "FIX", "SEGMENT", "Kind", "Match", "Route", "RouteRefused", "RouteTable",
           "canonical_path"]
