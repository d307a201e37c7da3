"""The dossier as Markdown (pictures as PNG files beside it), self-contained HTML (inline SVG)
and PDF (reportlab, pictures as PNG).

The PDF's text is set in STSong-Light, one of the standard CJK fonts every PDF reader provides
(reportlab refers to it, no font file is embedded), so Chinese names and filing numbers read
as they are declared; Latin-only text is set in Helvetica.
"""

from __future__ import annotations

import html
import io
from pathlib import Path

from hegui.dossier.document import Block, Dossier, Facts, Figure, Paragraph, Table

# --- Markdown -------------------------------------------------------------------------------------


def _md_cell(text: str) -> str:
    return " ".join(text.split()).replace("|", "\\|") or "-"


def _md_table(header: list[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(_md_cell(h) for h in header) + " |",
             "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(_md_cell(c) for c in row) + " |" for row in rows]
    return lines


def markdown(dossier: Dossier, picture_prefix: str = "") -> str:
    """Pictures are referenced as `<picture_prefix><slug>-<name>.png`."""
    out = [f"# {dossier.title}", "",
           f"Service `{dossier.service}`, generated {_when(dossier)} from {dossier.source or '-'}"
           " by `hegui dossier` (Art.19).", ""]
    out += ["## Contents", ""]
    out += [f"{n}. {s.heading}" for n, s in enumerate(dossier.sections, start=1)] + [""]
    for number, section in enumerate(dossier.sections, start=1):
        out += [f"## {number}. {section.heading}", ""]
        for block in section.blocks:
            if isinstance(block, Paragraph):
                out += [block.text, ""]
            elif isinstance(block, Facts):
                out += [*_md_table(["", ""], [[f"**{k}**", v] for k, v in block.items]), ""]
            elif isinstance(block, Table):
                out += (_md_table(block.header, block.rows) if block.rows
                        else [f"_{block.empty}_"]) + [""]
            else:
                out += [f"![{block.caption}]({picture_prefix}{dossier.slug}-{block.name}.png)",
                        "", f"_{block.caption}_", ""]
    return "\n".join(out)


def _when(dossier: Dossier) -> str:
    return dossier.generated_at.strftime("%Y-%m-%d %H:%M %Z")


# --- HTML -----------------------------------------------------------------------------------------

_CSS = """
body{font-family:system-ui,-apple-system,"Noto Sans CJK SC","Microsoft YaHei",sans-serif;
max-width:60rem;margin:2rem auto;padding:0 1rem;color:#222;line-height:1.45}
h1{border-bottom:2px solid #c0392b;padding-bottom:.3rem}
h2{margin-top:2rem;border-bottom:1px solid #ddd}
.article{color:#c0392b;font-weight:normal;font-size:.8em}
table{border-collapse:collapse;margin:.6rem 0;width:100%;font-size:.9rem}
th,td{border:1px solid #ddd;padding:.25rem .5rem;text-align:left;vertical-align:top}
th{background:#f6f6f6} table.facts th{width:30%}
figure{margin:1rem 0} figure svg{max-width:100%;height:auto}
figcaption{color:#555;font-size:.85rem}
.empty{color:#777;font-style:italic}
@media print{h2{page-break-after:avoid} figure,table{page-break-inside:avoid}}
"""


def _html_block(block: Block) -> str:
    e = html.escape
    if isinstance(block, Paragraph):
        return f"<p>{e(block.text)}</p>"
    if isinstance(block, Facts):
        rows = "".join(f"<tr><th>{e(k)}</th><td>{e(v)}</td></tr>" for k, v in block.items)
        return f'<table class="facts">{rows}</table>'
    if isinstance(block, Table):
        if not block.rows:
            return f'<p class="empty">{e(block.empty)}</p>'
        head = "".join(f"<th>{e(h)}</th>" for h in block.header)
        body = "".join("<tr>" + "".join(f"<td>{e(c)}</td>" for c in row) + "</tr>"
                       for row in block.rows)
        return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"
    return (f'<figure id="{e(block.name)}" role="img" aria-label="{e(block.caption)}">'
            f"{block.svg}<figcaption>{e(block.caption)}</figcaption></figure>")


def to_html(dossier: Dossier) -> str:
    e = html.escape
    toc = "".join(f'<li><a href="#s{n}">{e(s.heading)}</a></li>'
                  for n, s in enumerate(dossier.sections, start=1))
    parts = [
        "<!DOCTYPE html>", '<html lang="zh-CN"><head><meta charset="utf-8">',
        f"<title>{e(dossier.title)}</title><style>{_CSS}</style></head><body>",
        f"<h1>{e(dossier.title)}</h1>",
        f"<p>Service <code>{e(dossier.service)}</code>, generated {e(_when(dossier))} from "
        f"{e(dossier.source or '-')} by <code>hegui dossier</code> (Art.19).</p>",
        f"<nav><h2>Contents</h2><ol>{toc}</ol></nav>"]
    for number, section in enumerate(dossier.sections, start=1):
        parts.append(f'<section id="s{number}"><h2>{number}. {e(section.title)} '
                     f'<span class="article">({e(section.article)})</span></h2>')
        parts += [_html_block(block) for block in section.blocks]
        parts.append("</section>")
    parts.append("</body></html>")
    return "\n".join(parts)


# --- PDF ------------------------------------------------------------------------------------------

_CJK = "STSong-Light"


def _latin(text: str) -> bool:
    return all(ord(ch) < 0x250 or ch in "≥≤…" for ch in text)


def to_pdf(dossier: Dossier) -> bytes:
    from reportlab.lib import colors
    from reportlab.lib.pagesizes import A4
    from reportlab.lib.styles import ParagraphStyle, getSampleStyleSheet
    from reportlab.lib.units import cm
    from reportlab.pdfbase import pdfmetrics
    from reportlab.pdfbase.cidfonts import UnicodeCIDFont
    from reportlab.platypus import (
        Flowable,
        Image,
        PageBreak,
        SimpleDocTemplate,
        Spacer,
        TableStyle,
    )
    from reportlab.platypus import Paragraph as P
    from reportlab.platypus import Table as T

    if _CJK not in pdfmetrics.getRegisteredFontNames():
        pdfmetrics.registerFont(UnicodeCIDFont(_CJK))
    sheet = getSampleStyleSheet()
    body = ParagraphStyle("body", parent=sheet["BodyText"], fontSize=9, leading=12)
    cell = ParagraphStyle("cell", parent=body, fontSize=7.5, leading=9.5)
    head = ParagraphStyle("head", parent=cell, fontName="Helvetica-Bold")
    h1 = ParagraphStyle("h1", parent=sheet["Title"], fontName=_CJK)
    h2 = ParagraphStyle("h2", parent=sheet["Heading2"], textColor=colors.HexColor("#222222"),
                        keepWithNext=1)

    def para(text: str, style: ParagraphStyle) -> P:
        escaped = html.escape(text, quote=False)
        if not _latin(text):  # Helvetica has no CJK glyphs
            style = ParagraphStyle(style.name + "-cjk", parent=style, fontName=_CJK)
        return P(escaped, style)

    width = A4[0] - 3.6 * cm
    grid = TableStyle([("GRID", (0, 0), (-1, -1), 0.4, colors.HexColor("#cccccc")),
                       ("VALIGN", (0, 0), (-1, -1), "TOP"),
                       ("BACKGROUND", (0, 0), (-1, 0), colors.HexColor("#f2f2f2"))])
    facts_grid = TableStyle([("GRID", (0, 0), (-1, -1), 0.4, colors.HexColor("#cccccc")),
                             ("VALIGN", (0, 0), (-1, -1), "TOP"),
                             ("BACKGROUND", (0, 0), (0, -1), colors.HexColor("#f2f2f2"))])
    story: list[Flowable] = [
        para(dossier.title, h1),
        para(f"Service {dossier.service}, generated {_when(dossier)} from "
             f"{dossier.source or '-'} by hegui dossier (Art.19).", body),
        Spacer(1, 0.4 * cm), para("Contents", h2)]
    story += [para(f"{n}. {s.heading}", body) for n, s in enumerate(dossier.sections, start=1)]
    story.append(PageBreak())
    for number, section in enumerate(dossier.sections, start=1):
        story.append(para(f"{number}. {section.heading}", h2))
        for block in section.blocks:
            if isinstance(block, Paragraph):
                story.append(para(block.text, body))
            elif isinstance(block, Facts):
                rows = [[para(k, head), para(v, cell)] for k, v in block.items]
                story.append(T(rows, colWidths=[0.32 * width, 0.68 * width], style=facts_grid))
            elif isinstance(block, Table):
                if not block.rows:
                    story.append(para(block.empty, body))
                    continue
                rows = [[para(h, head) for h in block.header]]
                rows += [[para(c, cell) for c in row] for row in block.rows]
                story.append(T(rows, colWidths=[width / len(block.header)] * len(block.header),
                               style=grid, repeatRows=1))
            elif isinstance(block, Figure):
                picture = Image(io.BytesIO(block.png))
                scale = min(1.0, width / picture.drawWidth)
                picture.drawWidth *= scale
                picture.drawHeight *= scale
                story += [picture, para(block.caption, cell)]
            story.append(Spacer(1, 0.2 * cm))
    out = io.BytesIO()
    document = SimpleDocTemplate(out, pagesize=A4, leftMargin=1.8 * cm, rightMargin=1.8 * cm,
                                 topMargin=1.6 * cm, bottomMargin=1.6 * cm,
                                 title=dossier.title, author="hegui dossier",
                                 subject=f"Art.19 dossier of {dossier.service}")
    document.build(story)
    return out.getvalue()


# --- files ----------------------------------------------------------------------------------------

FORMATS = ("md", "html", "pdf")


def write(dossier: Dossier, directory: Path, formats: tuple[str, ...] = FORMATS) -> list[Path]:
    """Write the dossier in the given formats; the paths written."""
    directory.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    if "md" in formats:
        for figure in (b for s in dossier.sections for b in s.blocks if isinstance(b, Figure)):
            path = directory / f"{dossier.slug}-{figure.name}.png"
            path.write_bytes(figure.png)
            written.append(path)
        path = directory / f"{dossier.slug}.md"
        path.write_text(markdown(dossier), encoding="utf-8")
        written.append(path)
    if "html" in formats:
        path = directory / f"{dossier.slug}.html"
        path.write_text(to_html(dossier), encoding="utf-8")
        written.append(path)
    if "pdf" in formats:
        path = directory / f"{dossier.slug}.pdf"
        path.write_bytes(to_pdf(dossier))
        written.append(path)
    return written
