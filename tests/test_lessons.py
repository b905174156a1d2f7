"""Every lesson runs top to bottom with --smoke (tiny configs), and the rendered course shows it.

The smoke book (tools/build_book.py --smoke) executes every lesson once as a notebook, in file
order, in a runs root of its own (a temp dir passed as MINIRLHF_RUNS), so a later lesson loads the
smoke checkpoints an earlier one wrote, exactly as `make lessons` chains the real runs; a lesson
that raises fails the build.  Each lesson's page must then hold its prose, its code, its printed
output and its figures as embedded PNG images, and fetch nothing.  The checks read the lesson's
source with jupytext, independently of the build.  One lesson also runs as a script from the
command line (`python lessons/01_toy_worlds.py --smoke`), the way `make lessons` starts them.
"""

import base64
import html
import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

# The build runs in a subprocess; here the tools are only looked up, not imported: an imported
# ipykernel would make paths.lesson_args believe this process is a kernel (for the other tests
# of this worker process).  They are part of the dev extra, so a missing one is an error.
MISSING = [m for m in ("nbclient", "nbconvert", "ipykernel", "latex2mathml", "jupytext")
           if importlib.util.find_spec(m) is None]
assert not MISSING, f"{MISSING} not installed: pip install -e '.[dev]' (or '.[book]')"
import jupytext

REPO = Path(__file__).resolve().parents[1]
LESSONS = sorted((REPO / "lessons").glob("[0-9][0-9]_*.py"))
PNG_DATA_URI = re.compile(r'<img[^>]+src="data:image/png;base64,([A-Za-z0-9+/=\s]+)"')
# a line of plain prose: letters and light punctuation, no markdown or math
PROSE_LINE = re.compile(r"^[A-Za-z][A-Za-z ,.;:'()-]{40,}$")
# a top-level print starting with a string literal: its text up to the first {, quote or escape
PRINT_PREFIX = re.compile(r"""^print\(\s*f?(["'])([^"'{}\\\n]{6,})""", re.MULTILINE)
STREAM_PRE = re.compile(r'<div class="[^"]*output_stream[^"]*">\s*<pre>(.*?)</pre>', re.DOTALL)


def squash(text: str) -> str:
    return " ".join(text.split())


def page_text(markup: str) -> str:
    """The visible text of an HTML fragment: tags removed, entities decoded, spaces squashed."""
    return squash(html.unescape(re.sub(r"<[^>]+>", "", markup)))


@pytest.fixture(scope="module")
def book(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("book")
    env = {**os.environ, "MPLBACKEND": "Agg", "MINIRLHF_RUNS": str(out / "runs")}
    proc = subprocess.run([sys.executable, str(REPO / "tools" / "build_book.py"), "--smoke",
                           "--out", str(out / "html")], cwd=REPO, env=env, check=False,
                          capture_output=True, text=True, timeout=1800)
    assert proc.returncode == 0, (f"build_book.py --smoke exited with {proc.returncode}\n"
                                  f"--- stdout ---\n{proc.stdout[-3000:]}\n"
                                  f"--- stderr ---\n{proc.stderr[-6000:]}")
    return out / "html"


def cells(lesson: Path, kind: str) -> list[str]:
    return [c.source for c in jupytext.read(lesson).cells if c.cell_type == kind]


def test_lessons_exist():
    assert LESSONS, f"no lessons found in {REPO / 'lessons'}"


def test_a_lesson_runs_as_a_script_with_smoke(tmp_path):
    """The command-line path: `python lessons/01_toy_worlds.py --smoke` exits 0."""
    env = {**os.environ, "MPLBACKEND": "Agg", "MINIRLHF_RUNS": str(tmp_path)}
    lesson = REPO / "lessons" / "01_toy_worlds.py"
    proc = subprocess.run([sys.executable, str(lesson), "--smoke"], cwd=REPO, env=env,
                          check=False, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, (f"{lesson.name} --smoke exited with {proc.returncode}\n"
                                  f"--- stdout (tail) ---\n{proc.stdout[-2000:]}\n"
                                  f"--- stderr (tail) ---\n{proc.stderr[-4000:]}")


@pytest.mark.parametrize("lesson", LESSONS, ids=[p.stem for p in LESSONS])
def test_page_holds_prose_code_output_and_figures(book, lesson):
    markup = (book / f"{lesson.stem}.html").read_text(encoding="utf-8")
    text = page_text(markup)

    prose = [line.strip().lstrip("#").strip() for src in cells(lesson, "markdown")
             for line in src.splitlines()]
    plain = [line for line in prose if PROSE_LINE.match(line)]
    assert plain, f"{lesson.name}: no plain prose line to look for"
    for line in plain[:5]:
        assert squash(line) in text, f"prose missing from the page: {line!r}"

    code = cells(lesson, "code")
    for src in code:
        assert squash(src) in text, f"code cell missing from the page:\n{src[:300]}"

    printed = page_text("\n".join(STREAM_PRE.findall(markup)))
    assert printed, f"{lesson.name}: no printed output on the page"
    prefixes = [m.group(2) for src in code for m in PRINT_PREFIX.finditer(src)]
    for prefix in prefixes:
        assert squash(prefix) in printed, f"output of print({prefix!r}...) missing from the page"

    n_figures = sum(src.count(".savefig(") + src.count("plt.show(") for src in code)
    images = PNG_DATA_URI.findall(markup)
    assert len(images) >= n_figures, (f"{lesson.name} makes {n_figures} figures, the page embeds "
                                      f"{len(images)}")
    for data in images:
        assert base64.b64decode("".join(data.split()))[:8] == b"\x89PNG\r\n\x1a\n"

    # offline: nothing fetched (no scripts, stylesheets, fonts or images from elsewhere)
    assert not re.search(r"<script|<link|@import|url\(|src=\"(?!data:)", markup), (
        f"{lesson.name}'s page loads an external resource")


def test_index_lists_every_lesson_with_title_and_time(book):
    index = (book / "index.html").read_text(encoding="utf-8")
    for lesson in LESSONS:
        title = next(line for line in cells(lesson, "markdown")[0].splitlines() if line.strip())
        title = title.lstrip("#").strip()
        row = re.search(rf'<a href="{lesson.stem}\.html">(.*?)</a></td>\s*'
                        rf'<td class="time">(\d+) s</td>', index)
        assert row, f"{lesson.stem} missing from the contents page"
        assert html.unescape(row.group(1)) == title


def test_equations_become_mathml_or_stay_latex():
    """$...$ and $$...$$ in prose become inline / block MathML (rendered by the browser, offline);
    LaTeX the converter rejects stays as its own text; a lone dollar is left alone."""
    spec = importlib.util.spec_from_file_location("build_book", REPO / "tools" / "build_book.py")
    build_book = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(build_book)
    store: dict[str, str] = {}
    source = "Cost $6N$ per token, $$\\frac{a}{b^2}$$ costs $5, and $\\frac{1}{$ is broken."
    body = build_book.restore_math(f"<p>{build_book.protect_math(source, store)}</p>", store)
    inline, block = re.findall(r'<math[^>]*display="(\w+)"', body)
    assert (inline, block) == ("inline", "block")
    assert "<mn>6</mn><mi>N</mi>" in body
    assert re.search(r"<mfrac>.*<mi>a</mi>.*<msup>.*<mi>b</mi>.*<mn>2</mn>", body)
    assert "costs $5, and" in body
    assert "$\\frac{1}{$</code>" in body
