"""Render the course as a static book: every lesson executed as a notebook, one HTML page each.

    python tools/build_book.py            the full lessons -> <runs root>/book/index.html
    python tools/build_book.py --smoke    the --smoke runs -> <runs root>/smoke/book/index.html

Each `lessons/NN_*.py` (jupytext percent format) becomes a notebook (jupytext), runs top to
bottom in a fresh IPython kernel whose working directory is the repository root (nbclient), and
is written as HTML (nbconvert's `basic` template inside a page of our own): prose, equations,
code, printed output and figures in place.  Lessons run in file order, so each finds the
checkpoints the previous ones left, exactly as `make lessons` chains them (a checkpoint made
by the same recipe is loaded, a missing one is trained).  The contents page, index.html, lists each
lesson's title (its first markdown heading) and the seconds it took to execute.

The pages work offline: no script, font or stylesheet is fetched.  Figures are embedded as
base64 PNG; equations are converted to MathML (latex2mathml), which the browser renders
natively, or left as their LaTeX text where the converter cannot parse them.

Figures: a hidden first cell (removed from the page) selects matplotlib's non-interactive Agg
backend and makes `Figure.savefig` also display the PNG it wrote, and `plt.show()` display every
open figure.  So each figure appears once, under the cell that saved or showed it, including
figures a lesson closes right after saving them.  The same cell passes --smoke to the lesson
through `sys.argv`, which `minirlhf.paths.lesson_args` parses.
"""

from __future__ import annotations

import argparse
import html
import os
import re
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
LESSON_GLOB = "[0-9][0-9]_*.py"
SETUP_TAG = "book-setup"          # the hidden first cell's tag: removed from the page

# The hidden first cell.  It must not import jax: a lesson may set XLA_FLAGS before its own
# `import jax` (lesson 10 asks for 4 host devices).
SETUP_SOURCE = '''\
import os as _os
import sys as _sys

_sys.argv = {argv!r}
import matplotlib as _mpl

_mpl.use("agg")
import matplotlib.pyplot as _plt
from matplotlib.figure import Figure as _Figure
from IPython.display import Image as _Image, display as _display
import io as _io

_savefig = _Figure.savefig


def _png_bytes(fig):
    buf = _io.BytesIO()
    _savefig(fig, buf, format="png", dpi=120, bbox_inches="tight")
    return buf.getvalue()


def _savefig_and_display(self, fname, *args, **kwargs):
    _savefig(self, fname, *args, **kwargs)
    if isinstance(fname, (str, _os.PathLike)) and str(fname).lower().endswith(".png"):
        _display(_Image(filename=str(fname)))
    else:
        _display(_Image(data=_png_bytes(self)))


def _show(*args, **kwargs):
    for num in _plt.get_fignums():
        _display(_Image(data=_png_bytes(_plt.figure(num))))
    _plt.close("all")


_Figure.savefig = _savefig_and_display
_plt.show = _show
'''


def lesson_paths(only: list[str] | None = None) -> list[Path]:
    """Every lesson in file order; `only` keeps those whose stem starts with one of its items."""
    paths = sorted((REPO / "lessons").glob(LESSON_GLOB))
    if only:
        paths = [p for p in paths if any(p.stem.startswith(o) for o in only)]
    return paths


def lesson_title(nb) -> str:
    """The lesson's one-line summary: the first line of its first markdown cell, without '#'."""
    for cell in nb.cells:
        if cell.cell_type == "markdown":
            for line in cell.source.splitlines():
                if line.strip():
                    return line.lstrip("#").strip()
    return ""


# --- equations: LaTeX -> MathML ------------------------------------------------------------

MATH_RE = re.compile(r"\$\$(.+?)\$\$|(?<![\\$])\$(?!\s)([^$\n]+?)(?<![\s\\])\$", re.DOTALL)


def latex_to_html(latex: str, display: bool) -> str:
    """MathML for one equation, or its LaTeX source as code where the converter fails."""
    from latex2mathml.converter import convert
    try:
        return convert(latex.strip(), display="block" if display else "inline")
    except Exception:   # noqa: BLE001 (its parse errors share no base class; the LaTeX stays)
        delims = "$$" if display else "$"
        return f'<code class="tex">{html.escape(delims + latex.strip() + delims)}</code>'


def protect_math(source: str, store: dict[str, str]) -> str:
    """Replace each $...$ / $$...$$ of a markdown source by a placeholder the markdown renderer
    leaves alone; `store` maps placeholders to their MathML (see `restore_math`)."""
    def swap(match: re.Match) -> str:
        key = f"MINIRLHFMATH{len(store)}X"
        display = match.group(1) is not None
        store[key] = latex_to_html(match.group(1) if display else match.group(2), display)
        return f"\n\n{key}\n\n" if display else key
    return MATH_RE.sub(swap, source)


def restore_math(body: str, store: dict[str, str]) -> str:
    """Put back the MathML that `protect_math` swapped out for placeholder keys."""
    for key, mathml in store.items():
        body = body.replace(f"<p>{key}</p>", mathml).replace(key, mathml)
    return body


# --- one lesson ----------------------------------------------------------------------------

def read_lesson(path: Path, smoke: bool):
    """The lesson as a notebook, with the hidden setup cell first."""
    import jupytext
    import nbformat
    nb = jupytext.read(path)
    argv = [str(path.relative_to(REPO))] + (["--smoke"] if smoke else [])
    setup = nbformat.v4.new_code_cell(SETUP_SOURCE.format(argv=argv))
    setup.metadata["tags"] = [SETUP_TAG]
    nb.cells.insert(0, setup)
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3",
                                 "language": "python"}
    return nb


def execute(nb, timeout: int | None) -> float:
    """Run every cell in a fresh kernel with cwd = the repository root; returns seconds."""
    from nbclient import NotebookClient
    client = NotebookClient(nb, timeout=timeout, kernel_name="python3",
                            resources={"metadata": {"path": str(REPO)}})
    start = time.perf_counter()
    client.execute()
    return time.perf_counter() - start


def merge_streams(nb) -> None:
    """Join each cell's consecutive prints to one stream into one output block (the kernel sends
    them in pieces as it flushes; the page should show one block per cell and stream)."""
    for cell in nb.cells:
        merged = []
        for output in cell.get("outputs", []):
            if (output.output_type == "stream" and merged and merged[-1].output_type == "stream"
                    and merged[-1].name == output.name):
                merged[-1].text += output.text
            else:
                merged.append(output)
        if cell.cell_type == "code":
            cell.outputs = merged


def notebook_body(nb) -> str:
    """The cells as HTML (nbconvert's `basic` template: no page, scripts or stylesheets)."""
    from nbconvert import HTMLExporter
    from traitlets.config import Config
    merge_streams(nb)
    store: dict[str, str] = {}
    for cell in nb.cells:
        if cell.cell_type == "markdown":
            cell.source = protect_math(cell.source, store)
    config = Config()
    config.TagRemovePreprocessor.enabled = True
    config.TagRemovePreprocessor.remove_cell_tags = {SETUP_TAG}
    exporter = HTMLExporter(config=config, template_name="basic", exclude_input_prompt=True,
                            exclude_output_prompt=True)
    body, _ = exporter.from_notebook_node(nb)
    return restore_math(body, store)


# --- pages ---------------------------------------------------------------------------------

CSS = """
:root { --fg: #1d1f21; --muted: #5c6166; --code-bg: #f5f7f9; --out-bg: #fff; --rule: #d8dde2;
        --accent: #0b5cad; }
* { box-sizing: border-box; }
body { margin: 0; color: var(--fg); background: #fff; font: 17px/1.6 Georgia, "DejaVu Serif",
       "Times New Roman", serif; }
main, nav.top, nav.bottom { max-width: 56rem; margin: 0 auto; padding: 0 1.25rem; }
nav { font: 14px/1.4 system-ui, "DejaVu Sans", Arial, sans-serif; color: var(--muted); }
nav.top { padding-top: 1rem; padding-bottom: .5rem; border-bottom: 1px solid var(--rule); }
nav.bottom { padding-top: .75rem; padding-bottom: 2rem; border-top: 1px solid var(--rule);
             margin-top: 2rem; }
nav a { color: var(--accent); text-decoration: none; margin-right: 1.25rem; }
a { color: var(--accent); }
h1, h2, h3 { font-family: system-ui, "DejaVu Sans", Arial, sans-serif; line-height: 1.25; }
h1 { font-size: 1.9rem; margin: 1.5rem 0 1rem; }
h2 { font-size: 1.4rem; margin: 2rem 0 .75rem; }
h3 { font-size: 1.15rem; }
.anchor-link { display: none; }
pre, code { font-family: "DejaVu Sans Mono", Menlo, Consolas, monospace; font-size: 13px; }
code { background: var(--code-bg); padding: .05em .25em; border-radius: 3px; }
pre code, .highlight code { background: none; padding: 0; }
pre { margin: 0; padding: .7rem .9rem; overflow-x: auto; line-height: 1.45; }
.text_cell_render pre { background: var(--code-bg); border-radius: 4px; margin: .75rem 0; }
.input_area, .jp-InputArea-editor { background: var(--code-bg); border: 1px solid var(--rule);
                                     border-radius: 4px; margin: 1rem 0 .25rem; }
.input_area .highlight, .input_area pre { background: none; }
.output_area pre, .output_subarea pre { background: var(--out-bg); color: #24292e;
  border-left: 3px solid var(--rule); padding: .4rem .9rem; font-size: 13px; }
@media (min-width: 50rem) {   /* wide screens wrap long printed lines; phones scroll (tables) */
  .output_area pre, .output_subarea pre { white-space: pre-wrap; overflow-wrap: anywhere; } }
.output_stderr pre { border-left-color: #e0b252; color: #6b5520; }
.output_png, .output_subarea img { text-align: center; }
img { max-width: 100%; height: auto; }
.output_area img { display: block; margin: .5rem auto 1rem; }
.prompt { display: none; }
table { border-collapse: collapse; margin: 1rem 0; font-size: 15px; }
th, td { border: 1px solid var(--rule); padding: .3rem .6rem; text-align: left; }
th { background: var(--code-bg); }
math[display="block"] { display: block; margin: 1rem 0; padding: .4em 0; overflow-x: auto;
                        overflow-y: hidden; font-size: 1.1em; }
math { font-size: 1.05em; }
blockquote { border-left: 3px solid var(--rule); margin: 1rem 0; padding: 0 1rem;
             color: var(--muted); }
table.contents { width: 100%; }
table.contents td { border: none; border-bottom: 1px solid var(--rule); padding: .5rem .6rem; }
table.contents td.time { text-align: right; white-space: nowrap; color: var(--muted);
  font: 14px system-ui, "DejaVu Sans", Arial, sans-serif; }
p.note { color: var(--muted); font-size: 15px; }
"""


def page(title: str, body: str, nav: str) -> str:
    """A whole offline HTML page: inlined CSS (ours and the code highlighter's), no scripts."""
    from pygments.formatters import HtmlFormatter
    highlight = HtmlFormatter(style="default").get_style_defs(".highlight")
    return (f'<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
            f'<meta name="viewport" content="width=device-width, initial-scale=1">\n'
            f"<title>{html.escape(title)}</title>\n<style>{CSS}\n{highlight}\n</style>\n"
            f'</head>\n<body>\n<nav class="top">{nav}</nav>\n<main>\n{body}\n</main>\n'
            f'<nav class="bottom">{nav}</nav>\n</body>\n</html>\n')


def lesson_nav(stems: list[str], i: int) -> str:
    """Links to the contents page and to lesson i's neighbours."""
    links = ['<a href="index.html">Contents</a>']
    if i > 0:
        links.append(f'<a href="{stems[i - 1]}.html">&larr; {stems[i - 1]}</a>')
    if i + 1 < len(stems):
        links.append(f'<a href="{stems[i + 1]}.html">{stems[i + 1]} &rarr;</a>')
    return " ".join(links)


def index_page(entries: list[tuple[str, str, float]], smoke: bool) -> str:
    """The contents page: each lesson's title, link and execution time."""
    rows = "\n".join(
        f'<tr><td><a href="{stem}.html">{html.escape(title)}</a></td>'
        f'<td class="time">{seconds:.0f} s</td></tr>' for stem, title, seconds in entries)
    mode = ("the <code>--smoke</code> runs (tiny configurations: the numbers and figures show "
            "the mechanics, not the findings)" if smoke else "the full lessons")
    total = sum(seconds for _, _, seconds in entries)
    body = (f"<h1>minirlhf: LLM alignment from scratch in JAX</h1>\n"
            f"<p>The course, each lesson executed top to bottom as a notebook, with its printed "
            f"output and figures in place. Built from {mode}; the time is each lesson's "
            f"execution in the build ({total:.0f} s in all). Each page is also a script: "
            f"<code>python lessons/&lt;lesson&gt;.py</code>.</p>\n"
            f'<table class="contents">\n{rows}\n</table>\n')
    return page("minirlhf: the course", body, '<a href="index.html">Contents</a>')


def build(out: Path, smoke: bool, only: list[str] | None, timeout: int | None) -> None:
    """Execute the lessons in file order and write one page each plus index.html to `out`."""
    lessons = lesson_paths(only)
    if not lessons:
        sys.exit(f"no lessons match {only} in {REPO / 'lessons'}")
    out.mkdir(parents=True, exist_ok=True)
    stems = [p.stem for p in lessons]
    entries = []
    for i, path in enumerate(lessons):
        print(f"=== {path.name}", flush=True)
        nb = read_lesson(path, smoke)
        seconds = execute(nb, timeout)
        title = lesson_title(nb)
        (out / f"{path.stem}.html").write_text(
            page(title, notebook_body(nb), lesson_nav(stems, i)), encoding="utf-8")
        entries.append((path.stem, title, seconds))
        print(f"=== {path.name} executed in {seconds:.0f} s -> {out / path.stem}.html", flush=True)
    (out / "index.html").write_text(index_page(entries, smoke), encoding="utf-8")
    print(f"book: {out / 'index.html'}")


def main(argv: list[str] | None = None) -> None:
    """Command line: --smoke, --out, --only, --timeout."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true",
                        help="run the lessons with --smoke (tiny configurations, seconds each)")
    parser.add_argument("--out", type=Path, default=None,
                        help="output directory (default: <runs root>/book, smoke: "
                             "<runs root>/smoke/book)")
    parser.add_argument("--only", nargs="+", default=None, metavar="NN",
                        help="build only the lessons whose name starts with these, e.g. 03 04")
    parser.add_argument("--timeout", type=int, default=None,
                        help="seconds one cell may run (default: no limit)")
    args = parser.parse_args(argv)
    sys.path.insert(0, str(REPO))
    from minirlhf.paths import SMOKE_ENV_VAR, runs_root
    out = args.out or (runs_root() / "smoke" / "book" if args.smoke else runs_root() / "book")
    os.environ.setdefault("MPLBACKEND", "Agg")
    os.environ[SMOKE_ENV_VAR] = "1" if args.smoke else "0"   # the kernels inherit it: no mix-up
    build(out, args.smoke, args.only, args.timeout)


if __name__ == "__main__":
    main()
