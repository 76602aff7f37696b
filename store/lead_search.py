"""What `q` searches: the words of a lead's name, company, title, emails and
phones, matched as word prefixes ("ada lov" finds Ada Lovelace; "415555"
finds +1 415 555 0123). Every backend indexes `search_text` and matches
`query_terms` the same way, so search behaves alike on each.
"""

from __future__ import annotations

import re
import unicodedata

from leadstream.store.records import Lead

# Letters and digits; "_" and punctuation separate words, as in SQLite FTS5.
_WORD = re.compile(r"[^\W_]+")
_NOT_DIGIT = re.compile(r"\D")


def _fold(text: str) -> str:
    """Lowercase without accents ("Émile" -> "emile"), so every search path agrees."""
    if text.isascii():  # most text: nothing to decompose (and 20x faster)
        return text.lower()
    decomposed = unicodedata.normalize("NFKD", text.casefold())
    return "".join(ch for ch in decomposed if not unicodedata.combining(ch))


def query_terms(q: str) -> list[str]:
    """The words of a search query, folded; each must prefix a word of the lead."""
    return _WORD.findall(_fold(q))


def lead_search_text(lead: Lead) -> str:
    """The lead's searchable words, space separated, with a leading space so
    `' ' + term` marks a word start. Phones also contribute their whole
    digits, and the last 10 and 7 of them, so a number typed without its
    country code or spacing is found."""
    words = _WORD.findall(
        _fold(" ".join([lead.name, lead.company, lead.title, *lead.emails, *lead.phones]))
    )
    for phone in lead.phones:
        digits = _NOT_DIGIT.sub("", phone)
        words.extend({digits, digits[-10:], digits[-7:]})
    return " " + " ".join(words)
