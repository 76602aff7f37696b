"""What the first load of the web page (and of the embed widget) transfers.

The page: `static/index.html` plus every stylesheet and script it loads
(`<link rel="stylesheet" href>` and `<script src>` under /static/). The widget:
`widget.js` and what it loads when opened (chat.css, socket.io.min.js and the
chat scripts, as listed in widget.js). Each file is measured raw and gzipped
(level 6, what a compressing server or proxy typically sends); the totals are
the sums.

Run: python bench/page_size.py [--static DIR]
"""

from __future__ import annotations

import argparse
import gzip
import re
from html.parser import HTMLParser
from pathlib import Path

STATIC = Path(__file__).resolve().parent.parent / "static"


class AssetLinks(HTMLParser):
    """Collects the /static/ assets a page loads on its own."""

    def __init__(self) -> None:
        super().__init__()
        self.assets: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = dict(attrs)
        if tag == "script" and values.get("src"):
            self._add(values["src"])
        if tag == "link" and values.get("rel") == "stylesheet" and values.get("href"):
            self._add(values["href"])

    def _add(self, url: str | None) -> None:
        if url and url.startswith("/static/"):
            self.assets.append(url.removeprefix("/static/"))


def page_assets(static: Path) -> list[str]:
    parser = AssetLinks()
    parser.feed((static / "index.html").read_text(encoding="utf-8"))
    return ["index.html", *parser.assets]


def widget_assets(static: Path) -> list[str]:
    """widget.js, then the files it names: `/static/NAME` and the CODE list."""
    source = (static / "widget.js").read_text(encoding="utf-8")
    named = re.findall(r"/static/([\w.-]+\.(?:js|css))", source)
    code = re.search(r"const CODE = \[([^\]]*)\]", source)
    listed = re.findall(r'"([\w.-]+\.js)"', code.group(1)) if code else []
    files = ["widget.js"]
    for name in [*named, *listed]:
        if name not in files:
            files.append(name)
    return files


def sizes(static: Path, files: list[str]) -> list[tuple[str, int, int]]:
    rows = []
    for name in files:
        data = (static / name).read_bytes()
        rows.append((name, len(data), len(gzip.compress(data, compresslevel=6, mtime=0))))
    return rows


def report(title: str, rows: list[tuple[str, int, int]]) -> int:
    print(title)
    for name, raw, packed in rows:
        print(f"  {name:<22} {raw:>8,} B raw {packed:>8,} B gzip")
    raw_total = sum(raw for _, raw, _ in rows)
    gzip_total = sum(packed for _, _, packed in rows)
    print(f"  {'total':<22} {raw_total:>8,} B raw {gzip_total:>8,} B gzip")
    return gzip_total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--static", type=Path, default=STATIC, help="the static folder")
    static = parser.parse_args().static
    page = report(
        "Page first load (index.html and the assets it loads):", sizes(static, page_assets(static))
    )
    widget = report(
        "Widget (widget.js, then what opening it loads):", sizes(static, widget_assets(static))
    )
    print(f"page first load: {page / 1024:.1f} KiB gzip; widget: {widget / 1024:.1f} KiB gzip")


if __name__ == "__main__":
    main()
