"""Keyword lexicon matching, in one pass, against evasion (Art.4(1), Art.14).

A lexicon is a set of keywords, each tagged with a risk of GB/T 45654-2025 Appendix A (or one of
its classes, hegui.moderation.categories) and a score. Text and keywords are normalised the same
way (hegui.moderation.normalize: invisible characters, look-alikes, traditional characters,
inflections, pinyin), and every keyword form is matched in one pass of an Aho-Corasick automaton
(pyahocorasick; a pure-Python one where it is missing, see bench/lexicon.py for the measure),
whatever the number of keywords. Every match is mapped back to its span in the original text, so
it can be masked or shown, and says how it matched (`Match.how`):

- `exact`: the keyword as normalised (also through full-width forms, separators, invisible
  characters, traditional characters, look-alike letters, a stray letter between characters);
- `variant`: a Latin keyword written otherwise than as listed, up to case and spaces (an
  inflection, `bombs` for `bomb`; full-width or look-alike letters; invisible characters);
- `pinyin`: a Chinese keyword written (partly) in pinyin, `zha dan` or `制作zha弹`;
- `initials`: a Chinese keyword of 4+ characters by its pinyin initials written as one word,
  `zzzd`;
- `homophone`: other characters read the same, for keywords of HOMOPHONE_MIN_SYLLABLES+
  characters only (two-character homophones collide with everyday words: 色情 and 颜色清楚).

Latin keywords and pinyin match whole words only (`kill` does not fire inside `skill`), Chinese
keywords whole syllables only.

Keyword files (`*.tsv`, UTF-8, e.g. a mounted ConfigMap) hold one keyword a line:
`category<TAB>keyword[<TAB>score]`; `#` starts a comment; a comment `# version: V` names the
file's version. The score defaults to 1.0. A file may be gzip-compressed (`*.tsv.gz`, e.g. a
ConfigMap's binaryData: a ConfigMap holds 1 MiB, and Chinese keywords compress about 3x, see
`pack`). A lexicon's version is the declared versions and a digest of the files (as
uncompressed, under their `.tsv` names), so a status or a dossier can say which list was in
force, and the same list says the same version compressed or not, in a sidecar or in Triton.
`LexiconStore` reloads the files when they change (a ConfigMap update) and swaps the lexicon in
whole, so no request sees a half-built one and none waits for the rebuild; while its directory
holds no keyword file yet (a sidecar started before the operator rendered its ConfigMap) it
runs the shipped list and takes the provider's as soon as it appears.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import gzip
import hashlib
import json
import logging
import sys
import threading
from collections import deque
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hegui.moderation import normalize
from hegui.moderation.categories import (
    CATEGORIES,
    KEYWORD_RISKS,
    RISK_CLASSES,
    is_known,
)

log = logging.getLogger(__name__)

#: The lexicon shipped with hegui: a short, illustrative list, not a real one.
DEFAULT_LEXICON_DIR = Path(__file__).parent / "lexicons"

#: Homophones (other characters, same pinyin) match keywords of at least this many characters.
HOMOPHONE_MIN_SYLLABLES = 3
#: Pinyin initials (zzzd) match keywords of at least this many characters: three-letter
#: initials are English words too (儿童村: etc).
INITIALS_MIN_SYLLABLES = 4

# How a keyword form is matched: a Latin (or other) keyword, a Chinese keyword by its pinyin, by
# its pinyin written as one word (and so stemmed), by its initials written as one word.
_PLAIN, _HAN, _PINYIN_WORD, _INITIALS = 0, 1, 2, 3


@dataclass(frozen=True)
class Keyword:
    text: str
    category: str
    score: float = 1.0


@dataclass(frozen=True)
class Match:
    start: int  # offsets in the original text, end exclusive
    end: int
    keyword: Keyword
    how: str = "exact"  # exact, variant, pinyin, initials, homophone (module docstring)


def normalise(text: str) -> tuple[str, list[int]]:
    """The text to match (Chinese kept as characters) and, for each of its characters, the
    offset it came from. The classifier's features use it too."""
    result = normalize.normalise(text)
    return result.text, result.starts


# --- automata -----------------------------------------------------------------------------------

class PythonAutomaton:
    """A hand-written Aho-Corasick automaton: the fallback, and the baseline of the benchmark."""

    def __init__(self, keys: Iterable[str]) -> None:
        self._goto: list[dict[str, int]] = [{}]
        self._fail: list[int] = [0]
        self._out: list[list[int]] = [[]]
        for value, key in enumerate(keys):
            node = 0
            for char in key:
                nxt = self._goto[node].get(char)
                if nxt is None:
                    nxt = len(self._goto)
                    self._goto[node][char] = nxt
                    self._goto.append({})
                    self._fail.append(0)
                    self._out.append([])
                node = nxt
            self._out[node].append(value)
        queue: deque[int] = deque(self._goto[0].values())
        while queue:
            node = queue.popleft()
            for char, child in self._goto[node].items():
                queue.append(child)
                fail = self._fail[node]
                while fail and char not in self._goto[fail]:
                    fail = self._fail[fail]
                target = self._goto[fail].get(char, 0)
                self._fail[child] = target if target != child else 0
                self._out[child] = self._out[child] + self._out[self._fail[child]]

    def iter(self, text: str) -> Iterator[tuple[int, int]]:
        """(index of the last character, key number) of every occurrence of every key."""
        goto, fail, out = self._goto, self._fail, self._out
        node = 0
        for position, char in enumerate(text):
            while node and char not in goto[node]:
                node = fail[node]
            node = goto[node].get(char, 0)
            for value in out[node]:
                yield position, value


class _PyAhoCorasick:
    """pyahocorasick's automaton (C), with the same interface."""

    def __init__(self, keys: Iterable[str]) -> None:
        import ahocorasick

        self._automaton: Any = ahocorasick.Automaton()
        self._empty = True
        for value, key in enumerate(keys):
            self._automaton.add_word(key, value)
            self._empty = False
        if not self._empty:
            self._automaton.make_automaton()

    def iter(self, text: str) -> Iterator[tuple[int, int]]:
        if self._empty or not text:
            return iter(())
        result: Iterator[tuple[int, int]] = self._automaton.iter(text)
        return result


def automaton(keys: list[str], engine: str = "auto") -> PythonAutomaton | _PyAhoCorasick:
    """An automaton over `keys`: `pyahocorasick`, `python`, or `auto` (the first available)."""
    if engine == "python":
        return PythonAutomaton(keys)
    try:
        return _PyAhoCorasick(keys)
    except ImportError:
        if engine == "pyahocorasick":
            raise
        return PythonAutomaton(keys)


# --- the lexicon --------------------------------------------------------------------------------

@contextlib.contextmanager
def _no_collection() -> Iterator[None]:
    """No cyclic garbage collection while a lexicon is built: it makes only acyclic objects, and
    the collector's passes over the growing heap cost 3-4x the build at 100k keywords."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


@dataclass(frozen=True)
class _Form:
    keyword: int  # index in Lexicon.keywords
    kind: int
    literal: str  # the keyword, normalised (Chinese as characters)
    syllables: int
    written: str  # the keyword as written, case-folded, single-spaced


def _written(text: str) -> str:
    return " ".join(text.casefold().split())


class Lexicon:
    """Keywords and their normalised forms, matched in one pass (module docstring)."""

    def __init__(self, keywords: Iterable[Keyword], *, engine: str = "auto", version: str = "",
                 sources: tuple[str, ...] = ()) -> None:
        self.keywords: list[Keyword] = list(keywords)
        self.version = version
        self.sources = sources
        forms: dict[str, list[_Form]] = {}
        with _no_collection():
            for index, keyword in enumerate(self.keywords):
                for key, form in self._forms(index, keyword):
                    forms.setdefault(key, []).append(form)
        self._keys = list(forms)
        self._forms_of = [forms[k] for k in self._keys]
        self._lengths = [len(k) for k in self._keys]
        self._automaton = automaton(self._keys, engine)
        self.engine = type(self._automaton).__name__.strip("_")

    @classmethod
    def unbuilt(cls, keywords: Iterable[Keyword], *, version: str = "",
                sources: tuple[str, ...] = ()) -> Lexicon:
        """The keywords, version and sources without the automaton: enough for `coverage`,
        not for matching (it matches nothing)."""
        lexicon = cls([], version=version, sources=sources)
        lexicon.keywords = list(keywords)
        return lexicon

    @staticmethod
    def _forms(index: int, keyword: Keyword) -> Iterator[tuple[str, _Form]]:
        literal = normalize.literal(keyword.text)
        if not literal:
            raise ValueError(f"keyword {keyword.text!r} is empty once normalised")
        syllables = normalize.syllables(literal)
        kind = _HAN if syllables else _PLAIN
        key = normalize.normalise(keyword.text, phonetic=True).text
        written = _written(keyword.text)
        yield key, _Form(index, kind, literal, syllables, written)
        if syllables == len(literal) and normalize.stem(key) != key:
            # Pinyin written as one word is a Latin word to the normaliser, and stemmed:
            # yinhuiseqing -> yinhuiseq.
            yield normalize.stem(key), _Form(index, _PINYIN_WORD, literal, syllables, written)
        if syllables >= INITIALS_MIN_SYLLABLES and syllables == len(literal):
            yield normalize.initials(literal), _Form(index, _INITIALS, literal, syllables,
                                                     written)

    @property
    def keys(self) -> list[str]:
        """The normalised keyword forms the automaton holds (pinyin, initials, Latin stems)."""
        return list(self._keys)

    @property
    def max_length(self) -> int:
        """The longest keyword form, in normalised characters (pinyin counts a letter each): the
        overlap a streaming window needs to see a keyword cut between two windows."""
        return max(self._lengths, default=0)

    def finditer(self, text: str) -> Iterator[Match]:
        if not text or not self._keys:
            return
        norm = normalize.normalise(text, phonetic=True)
        for last, value in self._automaton.iter(norm.text):
            end = last + 1
            begin = end - self._lengths[value]
            if not norm.aligned(begin, end):
                continue  # inside a word or a syllable
            kinds = norm.kinds(begin, end)
            one_word = kinds == {normalize.LATIN} and norm.piece(begin) == norm.piece(last)
            start, stop = norm.span(begin, end)
            for form in self._forms_of[value]:
                how = self._how(form, kinds, one_word, text[start:stop])
                if how:
                    yield Match(start, stop, self.keywords[form.keyword], how)

    @staticmethod
    def _how(form: _Form, kinds: set[int], one_word: bool, original: str) -> str:
        if form.kind == _INITIALS:
            return "initials" if one_word else ""
        if form.kind == _PINYIN_WORD:
            return "pinyin" if one_word else ""
        if form.kind == _PLAIN:
            if normalize.HAN in kinds:
                return ""  # a Latin keyword spelled by the pinyin of Chinese characters
            return "exact" if _written(original) == form.written else "variant"
        if normalize.literal(original) == form.literal:
            return "exact"
        if normalize.LATIN in kinds:
            return "pinyin"
        return "homophone" if form.syllables >= HOMOPHONE_MIN_SYLLABLES else ""

    def scores(self, text: str) -> dict[str, float]:
        """The highest score of any matching keyword, by category."""
        result: dict[str, float] = {}
        for match in self.finditer(text):
            category = match.keyword.category
            result[category] = max(result.get(category, 0.0), match.keyword.score)
        return result


# --- keyword files ------------------------------------------------------------------------------

def _declared_version(text: str) -> str:
    for raw in text.splitlines():
        line = raw.strip()
        if line.startswith("#") and line[1:].strip().lower().startswith("version:"):
            return line[1:].strip()[len("version:"):].strip()
    return ""


def parse_keywords(text: str, source: str = "<string>") -> list[Keyword]:
    """Keywords from the lines of a keyword file; errors name the file and line."""
    keywords: list[Keyword] = []
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        fields = [f.strip() for f in line.split("\t")]
        if len(fields) not in (2, 3) or not fields[1]:
            raise ValueError(f"{source}:{number}: expected category<TAB>keyword[<TAB>score]")
        category = fields[0]
        if not is_known(category):
            raise ValueError(f"{source}:{number}: unknown category {category!r} (one of the 31 "
                             "risks or 5 classes of GB/T 45654-2025 Appendix A)")
        try:
            score = float(fields[2]) if len(fields) == 3 else 1.0
        except ValueError:
            raise ValueError(f"{source}:{number}: score {fields[2]!r} is not a number") from None
        if not 0.0 <= score <= 1.0:
            raise ValueError(f"{source}:{number}: score {score} is not within 0..1")
        keywords.append(Keyword(fields[1], category, score))
    return keywords


#: Keyword file names: plain, or gzip-compressed.
SUFFIXES = (".tsv", ".tsv.gz")
#: The most a compressed keyword file may expand to (a list of 1M keywords is ~30 MiB): a
#: corrupt or hostile file is refused, not unpacked into the sidecar's memory.
MAX_UNPACKED_BYTES = 256 * 1024 * 1024


def is_keyword_file(name: str) -> bool:
    return name.endswith(SUFFIXES) and not name.startswith(".")


def keyword_files(*paths: Path) -> list[Path]:
    """The keyword files of `paths`: files as given, every `*.tsv` and `*.tsv.gz` of a
    directory (not the `..data` links of a mounted ConfigMap), sorted by name."""
    files: list[Path] = []
    for path in paths or (DEFAULT_LEXICON_DIR,):
        files.extend(sorted((f for f in path.iterdir() if is_keyword_file(f.name)),
                            key=lambda f: f.name) if path.is_dir() else [path])
    return files


def unpack(name: str, data: bytes) -> tuple[str, bytes]:
    """A keyword file's name and bytes as uncompressed: `x.tsv.gz` is gunzipped to `x.tsv`."""
    if not name.endswith(".gz"):
        return name, data
    import zlib

    inflater = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)
    try:
        plain = inflater.decompress(data, MAX_UNPACKED_BYTES)
    except zlib.error as error:
        raise ValueError(f"{name}: not gzip data ({error})") from None
    if inflater.unconsumed_tail:
        raise ValueError(f"{name}: expands beyond {MAX_UNPACKED_BYTES} bytes")
    return name.removesuffix(".gz"), plain


def pack(name: str, data: bytes) -> tuple[str, bytes]:
    """A keyword file as a ConfigMap's binaryData carries it: `x.tsv` gzip-compressed as
    `x.tsv.gz`, the same bytes for the same list (no timestamp), so a rendering that changes
    nothing writes nothing. `unpack` reverses it; the version does not change."""
    plain_name, plain = unpack(name, data)
    return plain_name + ".gz", gzip.compress(plain, compresslevel=9, mtime=0)


def lexicon_from(files: Sequence[tuple[str, bytes]], *, engine: str = "auto",
                 build: bool = True) -> Lexicon:
    """A lexicon from keyword files given as (name, bytes), in order: what `load_lexicon`
    reads from disk, and what the operator reads from ConfigMaps (`build=False`: keywords,
    version and coverage without the automaton). Two files of one name (`x.tsv` and
    `x.tsv.gz`) are refused: which one is in force would depend on the order."""
    keywords: list[Keyword] = []
    digest = hashlib.sha256()
    declared: list[str] = []
    seen: set[str] = set()
    for source, data in files:
        name, plain = unpack(Path(source).name, data)
        if name in seen:
            raise ValueError(f"{source}: a second keyword file named {name}")
        seen.add(name)
        try:
            text = plain.decode("utf-8")
        except UnicodeDecodeError as error:
            raise ValueError(f"{source}: not UTF-8 ({error})") from None
        keywords.extend(parse_keywords(text, source))
        digest.update(name.encode() + b"\0" + plain + b"\0")
        if version := _declared_version(text):
            declared.append(version)
    version = "+".join([*declared, f"sha256:{digest.hexdigest()[:12]}"])
    sources = tuple(source for source, _ in files)
    if not build:
        return Lexicon.unbuilt(keywords, version=version, sources=sources)
    return Lexicon(keywords, engine=engine, version=version, sources=sources)


def load_lexicon(*paths: Path, engine: str = "auto") -> Lexicon:
    """A lexicon from keyword files, or from every `*.tsv` (and `*.tsv.gz`) in the
    directories given (default: the shipped, illustrative list)."""
    return lexicon_from([(str(f), f.read_bytes()) for f in keyword_files(*paths)],
                        engine=engine)


@dataclass
class LexiconStore:
    """A lexicon kept in step with its files (a mounted ConfigMap): `reload` rebuilds it when the
    files change and swaps it in whole; readers take `lexicon` once per request and keep it.
    A file that fails to load keeps the lexicon in force and is reported in `error`."""

    paths: tuple[Path, ...] = ()
    engine: str = "auto"
    lexicon: Lexicon = field(init=False)
    error: str = field(default="", init=False)
    _stamp: tuple[tuple[str, int, int], ...] = field(default=(), init=False, repr=False)
    _stop: threading.Event = field(default_factory=threading.Event, init=False, repr=False)
    _coverage: CoverageReport | None = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        self._stamp = self._stat()
        sources = self._sources()
        if sources != self.paths:
            log.warning("no keyword files in %s yet: the shipped lexicon is in force until "
                        "they appear", ", ".join(map(str, self.paths)))
        self.lexicon = load_lexicon(*sources, engine=self.engine)

    def _sources(self) -> tuple[Path, ...]:
        """The paths, or the shipped list while they hold no keyword file (a sidecar whose
        ConfigMap has no lexicon yet): never an empty list, which would stop moderation."""
        try:
            if not self.paths or keyword_files(*self.paths):
                return self.paths
        except OSError:
            pass
        return (DEFAULT_LEXICON_DIR,)

    def _stat(self) -> tuple[tuple[str, int, int], ...]:
        stamp: list[tuple[str, int, int]] = []
        try:
            for file in keyword_files(*self._sources()):
                info = file.stat()  # follows the ..data symlink a ConfigMap update swaps
                stamp.append((str(file), info.st_mtime_ns, info.st_size))
        except OSError:
            return ()
        return tuple(stamp)

    def reload(self) -> bool:
        """Rebuild the lexicon if its files changed; whether a new one is in force."""
        stamp = self._stat()
        if stamp == self._stamp:
            return False
        try:
            fresh = load_lexicon(*self._sources(), engine=self.engine)
            if self.lexicon.keywords and not fresh.keywords:
                raise ValueError(f"{', '.join(fresh.sources) or 'the keyword files'}: no "
                                 "keywords (a list emptied by mistake would stop moderation)")
        except (OSError, ValueError) as error:
            self.error = str(error)
            log.warning("lexicon reload failed, keeping version %s: %s", self.lexicon.version,
                        error)
            return False
        self._stamp, self.error = stamp, ""
        if fresh.version == self.lexicon.version:
            return False
        self.lexicon = fresh  # one reference swap: readers see the old or the new, whole
        log.info("lexicon version %s in force (%d keywords)", fresh.version, len(fresh.keywords))
        return True

    def status(self) -> dict[str, Any]:
        """What a status, an audit record or the dossier says of the list in force: its version,
        files, size, the last refused update and its counts against the standard."""
        lexicon = self.lexicon
        if self._coverage is None or self._coverage.version != lexicon.version:
            self._coverage = coverage(lexicon)
        return {"version": lexicon.version, "sources": list(lexicon.sources),
                "keywords": len(lexicon.keywords), "engine": lexicon.engine,
                "refusedUpdate": self.error, "coverage": self._coverage.to_dict()}

    def watch(self, interval: float = 10.0) -> threading.Thread:
        """Reload every `interval` seconds in a daemon thread, until `stop`."""
        def run() -> None:
            while not self._stop.wait(interval):
                try:
                    self.reload()
                except Exception:  # a watcher must outlive any one bad update
                    log.exception("lexicon reload crashed")
        thread = threading.Thread(target=run, name="lexicon-reload", daemon=True)
        thread.start()
        return thread

    def stop(self) -> None:
        self._stop.set()


# --- coverage against the standard --------------------------------------------------------------

#: GB/T 45654-2025 (TC260-003-2024 §8.1, 关键词库): a keyword library of at least 10,000
#: keywords covering at least the 17 risks of A.1 and A.2, at least 200 keywords for each risk
#: of A.1 and at least 100 for each risk of A.2, updated at least weekly.
STANDARD_CLAUSE = "GB/T 45654-2025 (TC260-003-2024 §8.1 关键词库)"
MIN_TOTAL_KEYWORDS = 10_000
MIN_KEYWORDS_PER_RISK = {"A.1": 200, "A.2": 100}


@dataclass(frozen=True)
class RiskCount:
    risk: str
    clause: str  # A.1(a) ...
    keywords: int
    required: int

    @property
    def short(self) -> int:
        return max(self.required - self.keywords, 0)


@dataclass(frozen=True)
class CoverageReport:
    """A lexicon's keyword counts against the standard's minimums (STANDARD_CLAUSE)."""

    version: str
    total: int
    risks: tuple[RiskCount, ...]
    by_class: dict[str, int]  # keywords tagged with a whole class, not one of its risks
    clause: str = STANDARD_CLAUSE

    @property
    def ok(self) -> bool:
        return not self.problems

    @property
    def problems(self) -> list[str]:
        found: list[str] = []
        if self.total < MIN_TOTAL_KEYWORDS:
            found.append(f"the keyword library holds {self.total} keywords, fewer than the "
                         f"{MIN_TOTAL_KEYWORDS} {self.clause} asks")
        found.extend(f"risk {r.risk} ({r.clause}) has {r.keywords} keywords, fewer than the "
                     f"{r.required} {self.clause} asks" for r in self.risks if r.short)
        return found

    def to_dict(self) -> dict[str, Any]:
        return {"version": self.version, "clause": self.clause, "total": self.total,
                "requiredTotal": MIN_TOTAL_KEYWORDS, "ok": self.ok,
                "risks": [{"risk": r.risk, "clause": r.clause, "keywords": r.keywords,
                           "required": r.required} for r in self.risks],
                "byClass": dict(self.by_class), "problems": self.problems}


def coverage(lexicon: Lexicon) -> CoverageReport:
    """Distinct keywords (as normalised) per risk of A.1 and A.2, against the minimums."""
    distinct: dict[str, set[str]] = {}
    for keyword in lexicon.keywords:
        distinct.setdefault(keyword.category, set()).add(normalize.literal(keyword.text))
    total = len({(k.category, normalize.literal(k.text)) for k in lexicon.keywords})
    risks = tuple(RiskCount(name, CATEGORIES[name].tc260, len(distinct.get(name, ())),
                            MIN_KEYWORDS_PER_RISK[CATEGORIES[name].risk_class])
                  for name in KEYWORD_RISKS)
    by_class = {name: len(distinct[name]) for name in RISK_CLASSES if name in distinct}
    return CoverageReport(lexicon.version, total, risks, by_class)


def main(argv: list[str] | None = None) -> int:
    """`python -m hegui.moderation.lexicon coverage [PATH ...]`: the keyword counts of a list
    against the standard, as JSON (for the dossier, an audit or CI); exit 1 when short."""
    parser = argparse.ArgumentParser(prog="python -m hegui.moderation.lexicon")
    commands = parser.add_subparsers(dest="command", required=True)
    check = commands.add_parser("coverage", help=f"keyword counts against {STANDARD_CLAUSE}")
    check.add_argument("paths", nargs="*", type=Path,
                       help="keyword files or directories (default: the shipped list)")
    args = parser.parse_args(argv)
    try:
        report = coverage(load_lexicon(*args.paths))
    except (OSError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(json.dumps(report.to_dict(), ensure_ascii=False, indent=2))
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main())
