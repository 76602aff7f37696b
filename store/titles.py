"""Job-title normalization shared by the directory index and title queries.

A title and a query are both turned into lowercase words with abbreviations
expanded ("CTO" -> "chief technology officer", "VP" -> "vice president")
and filler words dropped, so "VP of Sales", "Vice President, Sales" and the
query "VPs Sales" meet on the same words.
"""

from __future__ import annotations

import re

ABBREVIATIONS: dict[str, str] = {
    "ceo": "chief executive officer",
    "cto": "chief technology officer",
    "cfo": "chief financial officer",
    "coo": "chief operating officer",
    "cmo": "chief marketing officer",
    "cro": "chief revenue officer",
    "cio": "chief information officer",
    "ciso": "chief information security officer",
    "cpo": "chief product officer",
    "cdo": "chief data officer",
    "chro": "chief human resources officer",
    "vp": "vice president",
    "svp": "senior vice president",
    "evp": "executive vice president",
    "avp": "assistant vice president",
    "gm": "general manager",
    "md": "managing director",
    "hr": "human resources",
    "swe": "software engineer",
    "sdr": "sales development representative",
    "bdr": "business development representative",
    "ae": "account executive",
    "pm": "product manager",
    "eng": "engineering",
    "mktg": "marketing",
    "ops": "operations",
    "sr": "senior",
    "jr": "junior",
    "dir": "director",
    "mgr": "manager",
}

FILLER = frozenset({"of", "and", "the", "for", "a", "an", "at", "in"})
# Words whose trailing "s" is not a plural.
NOT_PLURAL = frozenset({"sales", "operations", "analytics", "services", "business", "ops", "hrs"})

_WORD = re.compile(r"[a-z0-9]+")


def _singular(word: str) -> str:
    """Drop a plural "s" (applied to titles and queries alike, so it only
    needs to be consistent, not linguistically right)."""
    if word in NOT_PLURAL or word in ABBREVIATIONS:
        return word
    if word.endswith("ies") and len(word) > 4:
        return word[:-3] + "y"
    plural = word.endswith("s") and not word.endswith("ss")
    if plural and (len(word) > 3 or word[:-1] in ABBREVIATIONS):
        return word[:-1]
    return word


def title_words(text: str) -> list[str]:
    """Normalized words of a title or a title query, abbreviations expanded."""
    words: list[str] = []
    for raw in _WORD.findall(text.lower()):
        word = _singular(raw)
        expanded = ABBREVIATIONS.get(word)
        if expanded:
            words.extend(expanded.split())
        elif word not in FILLER:
            words.append(word)
    return words


def title_key(title: str) -> str:
    """The indexed form of a title: its normalized words between spaces, so a
    query word can be matched as a word prefix with `LIKE '% word%'`."""
    return " " + " ".join(title_words(title)) + " "
