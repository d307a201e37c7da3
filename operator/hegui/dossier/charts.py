"""The dossier's pictures (matplotlib, headless): SLO state and suspensions over time
(Art.13, Art.21), and the incident and complaint timeline (Art.14, Art.15).

Labels are ASCII on purpose: the PDF and PNG are drawn with matplotlib's own fonts, which carry
no CJK glyphs; names in Chinese stay in the text, where every reader has a font for them.
"""

from __future__ import annotations

import io
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, cast

import matplotlib

matplotlib.use("Agg")  # no display; must precede pyplot

import matplotlib.dates as mdates
import matplotlib.pyplot as plt
from matplotlib.figure import Figure as MplFigure

from hegui.dossier.document import Figure

_num = cast(Callable[[datetime], float], mdates.date2num)  # untyped in matplotlib

# Text as text (the browser has CJK fonts), no date and a fixed salt: same inputs, same SVG.
_SVG: dict[Any, Any] = {"svg.fonttype": "none", "svg.hashsalt": "hegui-dossier"}
_COLOURS = {"Auto": "#c0392b", "Manual": "#e67e22", "Order": "#8e44ad", "met": "#27ae60",
            "broken": "#c0392b", "unknown": "#bdc3c7", "open": "#2980b9", "overdue": "#c0392b",
            "closed": "#27ae60"}


@dataclass(frozen=True)
class Span:
    start: datetime
    end: datetime
    label: str  # Auto, Manual or Order (an authority's)


@dataclass(frozen=True)
class Event:
    time: datetime
    kind: str  # block, mask, unmoderated, stream_cut, strike, suspension, complaint
    detail: str = ""  # for complaints: open, overdue or closed


def _export(figure: MplFigure, name: str, caption: str) -> Figure:
    with plt.rc_context(_SVG):
        svg = io.StringIO()
        figure.savefig(svg, format="svg", bbox_inches="tight", metadata={"Date": None})
    png = io.BytesIO()
    figure.savefig(png, format="png", dpi=120, bbox_inches="tight")
    plt.close(figure)
    text = svg.getvalue()
    text = text[text.index("<svg"):]  # inline in HTML: no XML declaration or DOCTYPE
    return Figure(name=name, caption=caption, svg=text, png=png.getvalue())


def _axis(ax: Any, start: datetime, end: datetime) -> None:
    ax.set_xlim(start, end)
    locator = mdates.AutoDateLocator(maxticks=8)  # type: ignore[no-untyped-call]
    ax.xaxis.set_major_locator(locator)
    ax.xaxis.set_major_formatter(
        mdates.ConciseDateFormatter(locator))  # type: ignore[no-untyped-call]
    ax.grid(axis="x", color="#eeeeee")
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)


def slo_suspensions(spans: list[Span], slo_met: bool | None, slo_since: datetime | None,
                    start: datetime, now: datetime) -> Figure:
    """Two rows over time: the SLO's state (SLOMet) and the service's suspensions."""
    figure, ax = plt.subplots(figsize=(9, 2.4))
    state = "unknown" if slo_met is None else ("met" if slo_met else "broken")
    since = max(slo_since or start, start)
    if since > start:
        ax.broken_barh([(_num(start), _num(since) - _num(start))],
                       (1.1, 0.8), color=_COLOURS["unknown"],
                       label="SLO earlier (not in the status)")
    ax.broken_barh([(_num(since), _num(now) - _num(since))],
                   (1.1, 0.8), color=_COLOURS[state], label=f"SLO {state} (now)")
    for label in ("Auto", "Manual", "Order"):
        bars = [(_num(max(s.start, start)),
                 max(_num(min(s.end, now)) - _num(max(s.start, start)),
                     0.02))
                for s in spans if s.label == label]
        if bars:
            ax.broken_barh(bars, (0.1, 0.8), color=_COLOURS[label], label=f"suspended ({label})")
    if not spans:
        ax.text(_num(start + (now - start) / 2), 0.5, "no suspensions",
                ha="center", va="center", color="#7f8c8d")
    ax.set_ylim(0, 2)
    ax.set_yticks([0.5, 1.5], ["suspended (Art.21)", "SLO (Art.13)"])
    _axis(ax, start, now)
    ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), frameon=False, fontsize=8)
    ax.set_title("Stability objective and suspensions", fontsize=10, loc="left")
    return _export(figure, "slo-suspensions",
                   "SLO state (Art.13) and suspensions of the service (Art.21) over time")


KINDS = ("block", "mask", "unmoderated", "stream_cut", "strike", "suspension", "complaint")


def incident_timeline(events: list[Event], start: datetime, now: datetime) -> Figure:
    """One row per kind of record, a mark per event; complaints coloured by their state."""
    figure, (ax, bars) = plt.subplots(2, 1, figsize=(9, 4.2), sharex=True,
                                      gridspec_kw={"height_ratios": [3, 1.2]})
    rows = [kind for kind in KINDS if any(e.kind == kind for e in events)] or ["block"]
    for index, kind in enumerate(rows):
        marks = [e for e in events if e.kind == kind]
        if kind == "complaint":
            for state in ("open", "overdue", "closed"):
                chosen = [e.time for e in marks if e.detail == state]
                if chosen:
                    ax.scatter(chosen, [index] * len(chosen), marker="D", s=28,
                               color=_COLOURS[state], label=f"complaint {state}", zorder=3)
        elif marks:
            ax.scatter([e.time for e in marks], [index] * len(marks), marker="|", s=120,
                       color="#34495e", zorder=3)
    if not events:
        ax.text(_num(start + (now - start) / 2), 0, "no incidents recorded",
                ha="center", va="center", color="#7f8c8d")
    ax.set_yticks(range(len(rows)), rows)
    ax.set_ylim(-0.7, len(rows) - 0.3)
    ax.set_title("Incidents (Art.14) and complaints (Art.15)", fontsize=10, loc="left")
    if any(e.kind == "complaint" for e in events):
        ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), frameon=False, fontsize=8)
    # Per day, so a burst reads as a height rather than a smudge of marks.
    per_day = Counter(e.time.date() for e in events if e.kind != "complaint")
    days = sorted(per_day)
    bars.bar([datetime(d.year, d.month, d.day, 12, tzinfo=now.tzinfo) for d in days],
             [per_day[d] for d in days], width=0.8, color="#7f8c8d")
    bars.set_ylabel("per day", fontsize=8)
    _axis(ax, start, now)
    _axis(bars, start, now)
    return _export(figure, "incidents", "Incident records (Art.14) and complaints (Art.15) "
                                        "over time, with incidents per day")


def window(times: list[datetime], now: datetime, minimum: timedelta) -> datetime:
    """The picture's start: the first event, at least `minimum` before now."""
    first = min(times, default=now)
    return min(first - (now - first) * 0.03, now - minimum)
