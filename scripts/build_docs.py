"""Build the lab's static docs site from the notebooks and their stored outputs: ``make docs``.

Nothing is executed: pages show the outputs committed in ``notebooks/*.ipynb`` (nbval keeps them true).
The site works offline and stays small:

- plotly figures are stored as ``application/vnd.plotly.v1+json``, which nbconvert cannot show (they
  vanish from its HTML). Each one becomes a ``<div>`` plus a ``Plotly.newPlot`` call, and every page
  loads one shared copy of plotly.js, taken from the installed plotly package, from ``assets/``.
  (Inlining it would cost ~4.8 MB per page.)
- ipywidgets need a live kernel, so a widget output becomes a note that says to run the notebook in
  JupyterLab; a finished tqdm progress bar is shown as its text.
- the landing page is ``docs/index.md`` with the README's notebook table (the first markdown table under
  a heading containing "Notebooks") put in place of ``{{ notebook_table }}``; ``docs/instructors.md``
  (the instructor guide) becomes ``instructors.html``, linked from the landing page.

Usage: python scripts/build_docs.py [--out _build/docs]
"""
from __future__ import annotations

import argparse
import html
import re
import shutil
import sys
from pathlib import Path

import mistune
import nbformat
import plotly
import plotly.io as pio
from nbconvert import HTMLExporter
from nbconvert.preprocessors import Preprocessor

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
PLOTLY_MIME = "application/vnd.plotly.v1+json"
WIDGET_MIME = "application/vnd.jupyter.widget-view+json"
TABLE_MARKER = "{{ notebook_table }}"
# tqdm.auto shows a widget bar in Jupyter; its text/plain is the finished bar, e.g. "100%|███| 5/5 [...]".
TQDM_TEXT = re.compile(r"^\s*\d+%\|")

_markdown = mistune.create_markdown(escape=False, plugins=["table", "strikethrough", "url"])


def notebook_paths(notebooks: Path) -> list[Path]:
    """The lab's notebooks, in order: ``notebooks/NN_*.ipynb``."""
    return sorted(notebooks.glob("[0-9][0-9]_*.ipynb"))


def notebook_table(readme: str) -> str | None:
    """The markdown text of the first table under a heading that contains "Notebooks", or None."""
    if not isinstance(readme, str):
        raise TypeError(f"readme must be the README's text (str), got {type(readme).__name__}")
    lines = readme.splitlines()
    for i, line in enumerate(lines):
        heading = re.match(r"^(#{1,6})\s+(.*)$", line)
        if not heading or "notebooks" not in heading.group(2).lower():
            continue
        level = len(heading.group(1))
        table: list[str] = []
        for line in lines[i + 1:]:
            deeper = re.match(r"^(#{1,6})\s", line)
            if deeper and len(deeper.group(1)) <= level:
                break  # the section ended before any table
            if line.lstrip().startswith("|"):
                table.append(line)
            elif table:
                break  # the table ended
        if len(table) >= 2:
            return "\n".join(table)
    return None


def link_notebooks(fragment: str, stems: list[str]) -> str:
    """Point links and `code` mentions of ``NN_name(.ipynb)`` at the site's ``NN_name.html`` pages."""
    for stem in stems:
        fragment = re.sub(rf'href="[^"]*?{re.escape(stem)}\.ipynb"', f'href="{stem}.html"', fragment)
        fragment = re.sub(rf"(<a [^>]*>)?<code>((?:notebooks/)?{re.escape(stem)}(?:\.ipynb)?)</code>",
                          lambda m, stem=stem: m.group(0) if m.group(1) else f'<a href="{stem}.html">{m.group(0)}</a>',
                          fragment)
    return fragment


def figure_html(figure: dict, div_id: str) -> str:
    """A plotly figure (its stored JSON) as a div drawn by the page's shared plotly.js."""
    if not isinstance(figure, dict) or "data" not in figure:
        raise ValueError(f"figure {div_id} must be plotly JSON with a 'data' key, got {type(figure).__name__}")
    return pio.to_html(figure, include_plotlyjs=False, full_html=False, div_id=div_id, validate=False)


def widget_html(plain: str) -> str:
    """What a static page shows instead of a live widget."""
    if TQDM_TEXT.match(plain):
        return f'<pre class="lab-progress">{html.escape(plain)}</pre>'
    kind = re.match(r"^(\w+)\(", plain)
    name = f" (<code>{html.escape(kind.group(1))}</code>)" if kind else ""
    return (f'<div class="lab-widget-note">Interactive widget{name}: it needs a running kernel. '
            "Run this notebook in JupyterLab (<code>make lab</code>) to use it.</div>")


class StaticOutputs(Preprocessor):
    """Make stored plotly and widget outputs displayable in static HTML; fix links between notebooks."""

    def __init__(self, stem: str, stems: list[str], **kw):
        super().__init__(**kw)
        self.stem, self.stems, self.figures = stem, stems, 0

    def preprocess_cell(self, cell, resources, index):
        if cell.cell_type == "markdown":
            for stem in self.stems:
                cell.source = re.sub(rf"\]\((?:[./]*notebooks/)?{re.escape(stem)}\.ipynb",
                                     f"]({stem}.html", cell.source)
        for output in cell.get("outputs", []):
            data = output.get("data", {})
            if PLOTLY_MIME in data:
                self.figures += 1
                figure = data.pop(PLOTLY_MIME)
                output["data"] = {"text/html": figure_html(figure, f"{self.stem}-figure-{self.figures}")}
            elif WIDGET_MIME in data:
                output["data"] = {"text/html": widget_html(data.get("text/plain", ""))}
        return cell, resources


def page_shell(title: str, body: str) -> str:
    """The landing page's HTML around its rendered markdown."""
    return ("<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\" />\n"
            "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1.0\">\n"
            f"<title>{html.escape(title)}</title>\n<link rel=\"stylesheet\" href=\"assets/site.css\">\n"
            f"</head>\n<body class=\"lab-landing\">\n{body}\n</body>\n</html>\n")


def landing_page(readme: str, stems: list[str], titles: dict[str, str]) -> tuple[str, list[str]]:
    """The landing page's HTML and a list of warnings (missing table, notebooks not in it)."""
    warnings = []
    table = notebook_table(readme)
    if table is None:
        warnings.append("README.md has no markdown table under a heading containing 'Notebooks': "
                        "the landing page lists the notebooks by title instead")
        table_html = ""
    else:
        table_html = link_notebooks(_markdown(table), stems)
    missing = [s for s in stems if f'href="{s}.html"' not in table_html]
    if missing:
        if table is not None:
            warnings.append(f"notebooks missing from the README's table: {', '.join(missing)}")
        items = "".join(f'<li><a href="{s}.html"><code>{s}</code></a>: {html.escape(titles[s])}</li>'
                        for s in missing)
        table_html += f"\n<ul class=\"lab-more\">{items}</ul>"
    source = (DOCS / "index.md").read_text(encoding="utf-8")
    if TABLE_MARKER not in source:
        raise ValueError(f"docs/index.md must contain {TABLE_MARKER} where the notebook table goes")
    before, after = source.split(TABLE_MARKER, 1)
    body = _markdown(before) + table_html + _markdown(after)
    return page_shell("Sparse Models Lab", link_notebooks(body, stems)), warnings


def title_of(nb) -> str:
    """The first markdown heading of a notebook, without its '#'."""
    for cell in nb.cells:
        if cell.cell_type == "markdown":
            for line in cell.source.splitlines():
                if line.startswith("#"):
                    return line.lstrip("#").strip()
    return ""


def build(out: Path, notebooks: Path = ROOT / "notebooks", readme: Path = ROOT / "README.md") -> list[str]:
    """Write the site into ``out`` (replacing it); return the warnings to show."""
    out = Path(out)
    paths = notebook_paths(Path(notebooks))
    if not paths:
        raise ValueError(f"notebooks must hold NN_*.ipynb files; none found in {notebooks}")
    if out.exists():
        shutil.rmtree(out)
    (out / "assets").mkdir(parents=True)
    (out / "notebooks").mkdir()
    shutil.copy(Path(plotly.__file__).parent / "package_data" / "plotly.min.js", out / "assets")
    shutil.copy(DOCS / "site.css", out / "assets")

    stems = [p.stem for p in paths]
    nbs = {p.stem: nbformat.read(p, as_version=4) for p in paths}
    titles = {s: title_of(nb) for s, nb in nbs.items()}
    for i, path in enumerate(paths):
        stem = path.stem
        exporter = HTMLExporter(template_name="labsite", extra_template_basedirs=[str(DOCS / "templates")],
                                theme="light")
        exporter.register_preprocessor(StaticOutputs(stem, stems), enabled=True)

        def neighbour(j: int) -> dict | None:
            return {"href": f"{stems[j]}.html", "name": stems[j]} if 0 <= j < len(stems) else None

        resources = {"metadata": {"name": titles[stem] or stem},
                     "labsite": {"title": "Sparse Models Lab", "notebook": path.name, "prev": neighbour(i - 1),
                                 "next": neighbour(i + 1), "download": f"notebooks/{path.name}"}}
        body, _ = exporter.from_notebook_node(nbs[stem], resources=resources)
        (out / f"{stem}.html").write_text(link_notebooks(body, stems), encoding="utf-8")
        shutil.copy(path, out / "notebooks" / path.name)

    readme_text = Path(readme).read_text(encoding="utf-8") if Path(readme).exists() else ""
    page, warnings = landing_page(readme_text, stems, titles)
    (out / "index.html").write_text(page, encoding="utf-8")
    guide = (DOCS / "instructors.md").read_text(encoding="utf-8")
    (out / "instructors.html").write_text(
        page_shell("Instructor guide - Sparse Models Lab", link_notebooks(_markdown(guide), stems)), encoding="utf-8")
    return warnings


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "_build" / "docs", help="output folder (replaced)")
    args = parser.parse_args(argv)
    for warning in build(args.out):
        print(f"warning: {warning}", file=sys.stderr)
    pages = sorted(p.name for p in args.out.glob("*.html"))
    size = sum(f.stat().st_size for f in args.out.rglob("*") if f.is_file())
    print(f"built {len(pages)} pages ({size / 1e6:.1f} MB) in {args.out}: open {args.out / 'index.html'}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
