"""Self-contained HTML report: PNG figures embedded as data URIs, no external links."""

from __future__ import annotations

import base64
import html
import io
from dataclasses import dataclass, field


def figure_png(fig) -> bytes:
    """Render a matplotlib figure to PNG bytes and close it."""
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    return buf.getvalue()


@dataclass
class Section:
    """One report section: a title, short paragraphs, key/value rows and PNG figures."""

    title: str
    paragraphs: list[str] = field(default_factory=list)
    rows: list[tuple[str, str]] = field(default_factory=list)
    figures: list[tuple[str, bytes]] = field(default_factory=list)  # (caption, png)


_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Helvetica,Arial,sans-serif;max-width:1100px;
margin:2em auto;padding:0 1em;color:#1d2330;background:#fafbfc}
h1{font-size:1.7em;margin-bottom:.2em}h2{border-bottom:2px solid #dfe3ea;padding-bottom:.2em;margin-top:1.8em}
.sub{color:#5b6474;margin-top:0}table{border-collapse:collapse;margin:.8em 0}
td,th{padding:.3em .9em;border-bottom:1px solid #e4e7ec;text-align:left}
td:last-child{font-variant-numeric:tabular-nums}
figure{margin:1em 0;background:#fff;border:1px solid #e4e7ec;border-radius:6px;padding:.8em;display:inline-block;max-width:100%}
figure img{max-width:100%;height:auto}figcaption{color:#5b6474;font-size:.9em;margin-top:.4em}
"""


def render(title: str, subtitle: str, sections: list[Section]) -> str:
    """The whole report as one HTML string (no external resources)."""
    out = [
        "<!doctype html><html lang='en'><head><meta charset='utf-8'>",
        f"<title>{html.escape(title)}</title><style>{_CSS}</style></head><body>",
        f"<h1>{html.escape(title)}</h1><p class='sub'>{html.escape(subtitle)}</p>",
    ]
    for sec in sections:
        out.append(f"<h2>{html.escape(sec.title)}</h2>")
        out.extend(f"<p>{html.escape(p)}</p>" for p in sec.paragraphs)
        if sec.rows:
            out.append("<table>")
            out.extend(
                f"<tr><th>{html.escape(k)}</th><td>{html.escape(v)}</td></tr>" for k, v in sec.rows
            )
            out.append("</table>")
        for caption, png in sec.figures:
            data = base64.b64encode(png).decode("ascii")
            out.append(
                f"<figure><img alt='{html.escape(caption)}' src='data:image/png;base64,{data}'>"
                f"<figcaption>{html.escape(caption)}</figcaption></figure>"
            )
    out.append("</body></html>")
    return "\n".join(out)
