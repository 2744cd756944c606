"""Model cards: a version's ``README.md`` rendered from Markdown and sanitized.

markdown-it-py renders CommonMark (tables, strikethrough; raw HTML is allowed because
model cards use it) and nh3 (ammonia) keeps only harmless tags and attributes: no scripts,
no event handlers, no ``style``, only ``http``, ``https`` and ``mailto`` links.  Relative
links and images are resolved to the version's files (:func:`render_card`), which the UI
serves as attachments under a sandboxing CSP (:mod:`modelreg_web.views`), so an SVG or HTML
file a card links to cannot run script in the UI's origin.
"""

from __future__ import annotations

import posixpath
import re
from collections.abc import Callable
from urllib.parse import urlsplit

import nh3
from markdown_it import MarkdownIt

#: The largest README rendered (bytes); a larger one is shown as a download link.
MAX_CARD_BYTES = 512 * 1024

TAGS = {
    "a", "abbr", "b", "blockquote", "br", "code", "dd", "del", "details", "div", "dl", "dt",
    "em", "h1", "h2", "h3", "h4", "h5", "h6", "hr", "i", "img", "kbd", "li", "ol", "p",
    "pre", "s", "span", "strong", "sub", "summary", "sup", "table", "tbody", "td", "th",
    "thead", "tr", "ul",
}
ATTRIBUTES = {
    "a": {"href", "title"},
    "img": {"src", "alt", "title", "width", "height"},
    "td": {"align"},
    "th": {"align"},
    "ol": {"start"},
}

_NO_ALT = re.compile(r"<img (?![^>]*\balt=)")
_markdown = MarkdownIt("commonmark", {"html": True, "linkify": False}).enable(
    ["table", "strikethrough"])


def _resolver(base: str, file_url: Callable[[str], str]) -> Callable[[str, str, str],
                                                                     str | None]:
    """nh3's attribute filter: relative ``href``/``src`` become the version's file URLs."""
    directory = posixpath.dirname(base)

    def resolve(tag: str, attribute: str, value: str) -> str | None:
        if attribute not in ("href", "src"):
            return value
        parts = urlsplit(value)
        if parts.scheme or parts.netloc or value.startswith(("#", "/")) or not parts.path:
            return value  # absolute URLs (nh3 checks their scheme), anchors, site paths
        path = posixpath.normpath(posixpath.join(directory, parts.path))
        if path.startswith("..") or path == ".":
            return None
        return file_url(path) + (f"#{parts.fragment}" if parts.fragment else "")

    return resolve


def render_card(text: str, *, base: str, file_url: Callable[[str], str]) -> str:
    """The sanitized HTML of the Markdown ``text`` of the file ``base`` (``README.md``);
    ``file_url(path)`` is the URL of the version's file ``path``."""
    html = _markdown.render(text)
    clean = nh3.clean(
        html, tags=TAGS, attributes=ATTRIBUTES, url_schemes={"http", "https", "mailto"},
        link_rel="noopener noreferrer nofollow", strip_comments=True,
        attribute_filter=_resolver(base, file_url))
    # An image without alt text is decoration to a screen reader (WCAG 1.1.1): nh3's
    # output is serialized HTML, so every image tag starts with "<img ".
    return _NO_ALT.sub('<img alt="" ', clean)
