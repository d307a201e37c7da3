"""The dossier as a neutral document: sections of paragraphs, facts, tables and figures, built
once and rendered as Markdown, HTML and PDF (`hegui.dossier.render`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime


@dataclass(frozen=True)
class Paragraph:
    text: str


@dataclass(frozen=True)
class Facts:
    """Label: value pairs."""

    items: list[tuple[str, str]]


@dataclass(frozen=True)
class Table:
    header: list[str]
    rows: list[list[str]]
    empty: str = "none"  # what the table says when it has no rows


@dataclass(frozen=True)
class Figure:
    name: str  # a file-name-safe id, e.g. slo-suspensions
    caption: str
    svg: str  # inline in HTML
    png: bytes  # in the PDF, and beside the Markdown


Block = Paragraph | Facts | Table | Figure


@dataclass
class Section:
    title: str
    article: str  # every section cites its article(s), e.g. Art.17
    blocks: list[Block] = field(default_factory=list)

    @property
    def heading(self) -> str:
        return f"{self.title} ({self.article})"


@dataclass
class Dossier:
    title: str
    service: str  # namespace/name
    generated_at: datetime
    source: str
    sections: list[Section]

    @property
    def slug(self) -> str:
        return "dossier-" + self.service.replace("/", "-")
