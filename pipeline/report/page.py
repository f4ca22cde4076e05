"""The HTML of the reports: one self-contained page, images inline as PNG data URIs.

A small script records on ``<body>`` how many images the page has and how many
the browser decoded (``data-images``, ``data-images-decoded``), so a headless
browser test can check that every plot renders.
"""

from __future__ import annotations

import base64
import html
import io

from pipeline.files import pyplot


def page(title: str, sections: list[tuple[str, str, str]]) -> str:
    """The page: a ``<section id=...>`` per (id, heading, html) entry."""
    body = "".join(f'<section id="{sid}"><h2>{html.escape(name)}</h2>{content}</section>'
                   for sid, name, content in sections)
    return f"""<!doctype html><html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>body{{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;color:#222}}
table{{border-collapse:collapse;margin:.5em 0}}td,th{{border:1px solid #ccc;padding:2px 8px;font-size:13px}}
img{{max-width:100%}}.verdict{{font-size:1.4em;font-weight:bold}}section{{margin-bottom:2em}}</style></head>
<body><h1>{html.escape(title)}</h1>{body}
<script>window.addEventListener("load", () => {{
  const images = [...document.images];
  document.body.dataset.images = images.length;
  document.body.dataset.imagesDecoded = images.filter(i => i.complete && i.naturalWidth > 0).length;
}});</script></body></html>"""


def table(header, rows) -> str:
    head = "".join(f"<th>{html.escape(str(h))}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def img(fig, alt: str) -> str:
    """A matplotlib figure as an inline image (the figure is closed)."""
    plt = pyplot()
    buffer = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buffer, format="png", dpi=80)
    plt.close(fig)
    return img_bytes(buffer.getvalue(), alt)


def img_bytes(png: bytes, alt: str) -> str:
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{base64.b64encode(png).decode()}">'
