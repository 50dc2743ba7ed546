"""Which parts of a message become links (static/js/linkify.js), run in Chromium against the module the
page loads: only http, https and mailto addresses, without the punctuation that follows them in prose,
and the text as a whole always comes out exactly as it went in."""

from __future__ import annotations

from typing import Any

import pytest

from tests.helpers import Node
from tests.web.support import evaluate_on_client

SCRIPT = """
async (texts) => {
  const { linkify } = await import('/js/linkify.js');
  return texts.map((text) => {
    const parts = linkify(text);
    return {
      text: parts.map((p) => (typeof p === 'string' ? p : p.textContent)).join(''),
      links: parts.filter((p) => typeof p !== 'string')
        .map((a) => ({ tag: a.tagName, href: a.getAttribute('href'), text: a.textContent, target: a.target, rel: a.rel })),
    };
  });
}
"""

CASES: list[tuple[str, list[tuple[str, str]]]] = [  # text, [(href, link text)]
    ("plain words, no address", []),
    ("see http://example.com.", [("http://example.com/", "http://example.com")]),
    ("(docs: https://en.wikipedia.org/wiki/Foo_(bar))",
     [("https://en.wikipedia.org/wiki/Foo_(bar)", "https://en.wikipedia.org/wiki/Foo_(bar)")]),
    ("HTTPS://EXAMPLE.COM/Path?x=1!", [("https://example.com/Path?x=1", "HTTPS://EXAMPLE.COM/Path?x=1")]),
    ("write to mailto:ann@example.com?subject=hi, please",
     [("mailto:ann@example.com?subject=hi", "mailto:ann@example.com?subject=hi")]),
    ("two: https://a.example/1 and https://b.example/2",
     [("https://a.example/1", "https://a.example/1"), ("https://b.example/2", "https://b.example/2")]),
    ("https://example.com/?next=javascript:alert(1)",
     [("https://example.com/?next=javascript:alert(1)", "https://example.com/?next=javascript:alert(1)")]),
    ("<a href='https://x.example/'>x</a>", [("https://x.example/", "https://x.example/")]),
    ("javascript:alert(1)", []),
    ("JavaScript://example.com/%0aalert(1)", []),
    ("data:text/html,<script>alert(1)</script>", []),
    ("vbscript:msgbox(1) file:///etc/passwd ftp://example.com", []),
    ("https:// nothing after the scheme", []),
    ("not a link: xhttps://example.com", []),
]


@pytest.fixture
async def results(node: Node, browser: Any) -> list[dict[str, Any]]:
    return await evaluate_on_client(browser, node.base_url, SCRIPT, [text for text, _ in CASES])


async def test_only_http_https_and_mailto_become_links(results: list[dict[str, Any]]) -> None:
    for (text, expected), result in zip(CASES, results, strict=True):
        assert result["text"] == text, "the text must come out as it went in"
        assert [(link["href"], link["text"]) for link in result["links"]] == expected, text
        for link in result["links"]:
            assert link["tag"] == "A" and link["target"] == "_blank" and link["rel"] == "noopener noreferrer"
