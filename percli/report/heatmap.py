"""The PerContrast heatmap page (`percli contrast`'s contrast.html): each example's response, every token
coloured by its PIR, values on hover, planted tokens underlined. The page is `templates/contrast.html.j2`."""

from __future__ import annotations

import html
from typing import Any

from jinja2 import Environment, FileSystemLoader
from markupsafe import Markup

from percli.paths import TEMPLATES_DIR


def _colour(pir: float, scale: float) -> str:
    """Diverging: red for PIR > 0 (the profile helps), blue for PIR < 0, saturated at |PIR| = scale."""
    a = min(abs(pir) / scale, 1.0)
    rgb = "220,38,38" if pir > 0 else "37,99,235"
    return f"rgba({rgb},{a:.3f})"


def _segments(row: dict) -> list[dict[str, Any]]:
    """The response as text pieces: a token (with its colour, hover title and planted mark) or plain text."""
    out, pos, pieces = row["output"], 0, []
    planted = set(row.get("planted", []))
    for i, t in enumerate(row["tokens"]):
        start, end = max(t["start"], pos), t["end"]
        if start > pos:  # text between tokens (never expected, but the page must show all of output)
            pieces.append({"text": out[pos:start]})
        label = out[start:end] if end > start else (Markup("&#9166;") if t["start"] >= len(out) else "")
        if not label:
            continue  # the rest of a character split over several byte-level tokens
        pieces.append({"text": label, "colour": _colour(t["pir"], row["scale"]), "planted": i in planted,
                       "title": f"PIR {t['pir']:+.3f} | w {t['weight']:.3f} | logp full {t['logp_full']:.3f} | "
                                f"logp free {t['logp_free']:.3f}"})
        pos = max(pos, end)
    if pos < len(out):
        pieces.append({"text": out[pos:]})
    return pieces


def _escape(value: Any) -> Markup:
    """Autoescaping with the standard library's html.escape, so pages stay byte-identical to earlier ones."""
    return value if isinstance(value, Markup) else Markup(html.escape(str(value)))


_TEMPLATES = Environment(loader=FileSystemLoader(TEMPLATES_DIR), autoescape=True, finalize=_escape,
                         keep_trailing_newline=True)


def render_html(rows: list[dict], summary: dict[str, Any]) -> str:
    """One self-contained page: each example's response, every token coloured by PIR, values on hover."""
    scale = float(summary["max_weight"])
    title = (f"PerContrast PIR: {summary['model']} / {summary['task']} / {summary['source']}:{summary['split']}"
             + (" (shuffled profiles)" if summary["shuffle_profiles"] else ""))
    stats = f"{summary['examples']} examples, {summary['tokens']} tokens, mean PIR {summary['pir_mean']:.4f}"
    if "planted" in summary:
        p = summary["planted"]
        stats += (f"; planted-token AUC {p['auc']:.4f}, mean planted PIR {p['mean_pir_planted']:.4f} "
                  "(planted tokens underlined)")
    legend = [(_colour(v, scale), label) for v, label in
              ((-scale, f"PIR -{scale:g}"), (-scale / 2, f"-{scale / 2:g}"), (scale / 2, f"+{scale / 2:g}"),
               (scale, f"+{scale:g}"))]
    sections = [{"id": row["id"], "pieces": _segments({**row, "scale": scale})} for row in rows]
    return _TEMPLATES.get_template("contrast.html.j2").render(title=title, stats=stats, legend=legend,
                                                             sections=sections)
