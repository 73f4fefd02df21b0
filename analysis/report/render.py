"""One document model, two renderings: a self-contained HTML page (figures as data URIs) and Markdown
(figures as files next to it). A document is a title plus sections; a section holds blocks:

  ("p", text)                     a paragraph
  ("list", [text, ...])           a bullet list
  ("table", rows, columns[, id])  rows are dicts; cells are shown as given (strings or numbers); id: the HTML
                                  table's id (what a browser test measures)
  ("figure", png_path, caption)   the PNG (its SVG sits next to it)
  ("pre", text)                   preformatted text (the winner's TOML)
"""

from __future__ import annotations

import base64
import html
import re
from pathlib import Path
from string import Template

from costlaw.costmodel.core.units import cell

TEMPLATES = Path(__file__).with_name("templates")


def _slug(title: str) -> str:
    return "".join(c if c.isalnum() else "-" for c in title.lower()).strip("-")


def to_html(title: str, subtitle: str, sections: list) -> str:
    body, toc = [], []
    for sec_title, blocks in sections:
        sid = _slug(sec_title)
        toc.append(f'<li><a href="#{sid}">{html.escape(sec_title)}</a></li>')
        body.append(f'<section id="{sid}"><h2>{html.escape(sec_title)}</h2>')
        for b in blocks:
            body.append(_html_block(b))
        body.append("</section>")
    return Template((TEMPLATES / "report.html").read_text()).substitute(
        title=html.escape(title), subtitle=html.escape(subtitle), toc="\n".join(toc), body="\n".join(body))


def _html_block(b) -> str:
    kind = b[0]
    if kind == "p":
        return f"<p>{html.escape(b[1])}</p>"
    if kind == "list":
        return "<ul>" + "".join(f"<li>{html.escape(x)}</li>" for x in b[1]) + "</ul>"
    if kind == "pre":
        return f"<pre>{html.escape(b[1])}</pre>"
    if kind == "table":
        rows, cols = b[1], b[2]
        tid = f' id="{html.escape(b[3])}"' if len(b) > 3 else ""
        head = "".join(f"<th>{html.escape(c)}</th>" for c in cols)
        trs = "".join("<tr>" + "".join(f"<td>{html.escape(_unit_glued(cell(r.get(c))))}</td>" for c in cols)
                      + "</tr>" for r in rows)
        return f'<div class="scroll"><table{tid}><thead><tr>{head}</tr></thead><tbody>{trs}</tbody></table></div>'
    if kind == "figure":
        png, caption = Path(b[1]), b[2]
        data = base64.b64encode(png.read_bytes()).decode()
        return (f'<figure><img src="data:image/png;base64,{data}" alt="{html.escape(caption)}">'
                f"<figcaption>{html.escape(caption)}</figcaption></figure>")
    raise ValueError(f"unknown block {kind!r}")


_UNIT = re.compile(r"(\d) (?=(?:[kMGTP]i?)?B\b|[kMGTP]\b|bytes\b)")


def _unit_glued(text: str) -> str:
    """A number and its unit ("32.7 MiB", "1.15 M") joined by a no-break space: a cell wraps between words,
    never inside a value."""
    return _UNIT.sub("\\1\u00a0", text)


def _md_escape(s: str) -> str:
    return s.replace("|", "\\|")


def to_markdown(title: str, subtitle: str, sections: list, base: Path) -> str:
    out: list[str] = []
    toc = "\n".join(f"- [{t}](#{_slug(t)})" for t, _ in sections)
    for sec_title, blocks in sections:
        out += [f"## {sec_title}", ""]
        for b in blocks:
            kind = b[0]
            if kind == "p":
                out += [b[1], ""]
            elif kind == "list":
                out += [f"- {x}" for x in b[1]] + [""]
            elif kind == "pre":
                out += ["```toml", b[1].rstrip(), "```", ""]
            elif kind == "table":
                rows, cols = b[1], b[2]
                out.append("| " + " | ".join(_md_escape(c) for c in cols) + " |")
                out.append("|" + "|".join("---" for _ in cols) + "|")
                out += ["| " + " | ".join(_md_escape(cell(r.get(c))) for c in cols) + " |" for r in rows]
                out.append("")
            elif kind == "figure":
                png = Path(b[1])
                rel = png.relative_to(base).as_posix()
                svg = png.with_suffix(".svg").relative_to(base).as_posix()
                out += [f"![{b[2]}]({rel})", "", f"*{b[2]}* ([SVG]({svg}))", ""]
    body = "\n".join(out).rstrip()
    text = Template((TEMPLATES / "report.md").read_text()).substitute(title=title, subtitle=subtitle, toc=toc,
                                                                     body=body)
    return text.rstrip() + "\n"
