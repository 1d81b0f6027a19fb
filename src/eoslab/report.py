"""The page a reader opens first: ``figures/<profile>/index.html``, built by the DAG from every figure's JSON.

For each figure of the profile: the image, the paper, every claim with its measured value, band and verdict
(asserted or only reported), the deviations (the JSON's ``"deviations"`` list and the "Deviations" section of
``docs/<figure>.md``), and links to the PDF, the executed notebook (``results/<profile>/notebooks/``) and the docs.

    python -m eoslab.report --profile smoke --out figures/smoke/index.html figures/smoke/*.json
"""

import argparse
import html
import json
import re
from pathlib import Path
from typing import Any

STYLE = """
body { font: 15px/1.45 system-ui, sans-serif; max-width: 72rem; margin: 2rem auto; padding: 0 1rem; color: #222; }
h1 { margin-bottom: .2rem; } h2 { margin-top: 2.5rem; border-bottom: 1px solid #ccc; }
img { max-width: 100%; border: 1px solid #eee; }
table { border-collapse: collapse; margin: .8rem 0; } td, th { border: 1px solid #ddd; padding: .3rem .6rem; }
th { background: #f4f4f4; text-align: left; } td.num { font-variant-numeric: tabular-nums; }
.pass { color: #006d2c; font-weight: 600; } .fail { color: #b30000; font-weight: 600; }
.reported { color: #555; font-style: italic; } .paper { color: #444; } nav a { margin-right: 1rem; }
"""


def fmt(value: Any) -> str:
    """Numbers to 4 significant digits, lists element-wise, None as '–'."""
    if value is None:
        return "–"
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, int | float):
        return f"{value:.4g}"
    if isinstance(value, list | tuple):
        return ", ".join(fmt(v) for v in value)
    return str(value)


def band(b: list | None) -> str:
    """[lo, hi] as an interval, one-sided bands as ≤ / ≥."""
    if not b:
        return "–"
    lo, hi = b
    if lo is None:
        return f"≤ {fmt(hi)}"
    if hi is None:
        return f"≥ {fmt(lo)}"
    return f"[{fmt(lo)}, {fmt(hi)}]"


def verdict(c: dict[str, Any]) -> str:
    word, cls = ("pass", "pass") if c.get("passed") else ("FAIL", "fail")
    if not c.get("asserted", True):
        return f'<span class="reported">{word} (reported, not asserted)</span>'
    return f'<span class="{cls}">{word}</span>'


def deviations(summary: dict[str, Any], doc: Path) -> list[str]:
    """The JSON's "deviations" and the paragraphs of the doc's "Deviations" section (if any)."""
    out = [str(d) for d in summary.get("deviations", [])]
    if doc.exists():
        match = re.search(r"^#+ [^\n]*[Dd]eviation[^\n]*\n(.*?)(?=^#+ |\Z)", doc.read_text(), re.M | re.S)
        if match:
            out += [p.strip() for p in match.group(1).split("\n\n") if p.strip()]
    return out


def section(path: Path, profile: str, root: Path) -> tuple[str, str]:
    """(summary-table row, section) of one figure JSON."""
    summary = json.loads(path.read_text())
    figure = path.stem  # the profile's figure (two figures may share a notebook and its JSON's "figure")
    papers = summary.get("paper") or []
    papers = [papers] if isinstance(papers, str) else papers
    claims = summary.get("claims", [])
    asserted = [c for c in claims if c.get("asserted", True)]
    failed = [c for c in asserted if not c.get("passed")]
    status = "no claims listed" if not claims else f"{len(asserted) - len(failed)}/{len(asserted)} asserted pass"
    cls = "fail" if failed or not claims else "pass"
    row = f'<tr><td><a href="#{figure}">{figure}</a></td><td class="{cls}">{status}</td></tr>'
    e = html.escape
    notebook = f"../../results/{profile}/notebooks/{figure}.ipynb"
    doc = root / "docs" / f"{summary.get('figure', figure)}.md"
    links = [f'<a href="{figure}.pdf">PDF</a>', f'<a href="{notebook}">executed notebook</a>']
    if doc.exists():
        links.append(f'<a href="../../docs/{doc.name}">docs</a>')
    parts = [
        f'<h2 id="{figure}">{e(figure)}</h2>',
        "".join(f'<p class="paper">{e(p)}</p>' for p in papers) or '<p class="paper">(no paper in the JSON)</p>',
        f"<p>{' · '.join(links)}</p>",
        f'<img src="{figure}.png" alt="{e(figure)}">',
    ]
    if claims:
        rows = "".join(
            f"<tr><td>{e(c['claim'])}</td><td class='num'>{e(fmt(c.get('value')))}</td>"
            f"<td class='num'>{e(band(c.get('band')))}</td><td>{verdict(c)}</td></tr>"
            for c in claims
        )
        parts.append(f"<table><tr><th>claim</th><th>measured</th><th>band</th><th>verdict</th></tr>{rows}</table>")
    else:
        parts.append("<p>This figure's JSON lists no claims.</p>")
    devs = deviations(summary, doc)
    if devs:
        parts.append("<h3>Deviations</h3>" + "".join(f"<p>{e(d)}</p>" for d in devs))
    return row, "\n".join(parts)


def build(paths: list[Path], profile: str, root: Path = Path()) -> str:
    """The HTML page for the figure JSONs ``paths`` (in that order)."""
    rows, sections = zip(*(section(p, profile, root) for p in paths), strict=True) if paths else ((), ())
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>eoslab — {profile} profile</title><style>{STYLE}</style></head>
<body>
<h1>eoslab: the edge of stability, reproduced — profile <code>{html.escape(profile)}</code></h1>
<p>Each figure below comes from its notebook run by the pipeline on this profile's runs. Claims are checked on
the measured numbers; "reported" claims are shown but not asserted. Definitions and conventions:
<a href="../../docs/README.md">docs/README.md</a>.</p>
<table><tr><th>figure</th><th>claims</th></tr>{"".join(rows)}</table>
{"".join(sections)}
</body></html>
"""


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Build the report page of a profile from its figure JSONs.")
    parser.add_argument("--profile", required=True)
    parser.add_argument("--out", required=True, type=Path)
    parser.add_argument("json", nargs="+", type=Path)
    args = parser.parse_args(argv)
    args.out.write_text(build(args.json, args.profile))


if __name__ == "__main__":
    main()
