"""What `q` searches: the words of a lead's name, company, title, emails and
phones, matched as word prefixes ("ada lov" finds Ada Lovelace; "415555"
finds +1 415 555 0123). Every backend indexes `search_text` and matches
`query_terms` the same way, so search behaves alike on each.

What one query may cost is bounded the same way on each backend too
(`QueryBounds`): a query with more distinct terms than allowed, or without
one term long enough to find rows with, is refused (`QueryTooBroad`) before
it reaches the database, and the database work of one query has a time
limit.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass

from leadstream.store.errors import QueryTooBroad
from leadstream.store.records import Lead, LeadFilter

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


def distinct_terms(q: str) -> list[str]:
    """The terms of `q` that each narrow the result, sorted: duplicates go, and
    so does a term that prefixes another ("ac acme" is "acme"), since the word
    the longer one finds starts with the shorter one too."""
    unique = sorted(set(query_terms(q)))
    return [
        term
        for i, term in enumerate(unique)
        if not (i + 1 < len(unique) and unique[i + 1].startswith(term))
    ]


def search_key(q: str) -> str:
    """One spelling per query: "Acme!!", "acme" and " ACME " all give "acme"
    (what a cache of results keys on)."""
    return " ".join(distinct_terms(q))


@dataclass(frozen=True, slots=True)
class SearchTerms:
    """A query's terms as a backend uses them: `indexed` terms (each at least
    the minimum prefix long) find rows; `short` ones only narrow those rows.
    Neither: the query has no words and matches nothing."""

    indexed: tuple[str, ...]
    short: tuple[str, ...]

    @property
    def all(self) -> tuple[str, ...]:
        return self.indexed + self.short


@dataclass(frozen=True, slots=True)
class QueryBounds:
    """What one search `q` may cost, on every backend.

    :param max_terms: distinct terms a query may have (more: `QueryTooBroad`).
    :param min_prefix: characters a term needs to be looked up in an index; a
        shorter term only narrows what the others found, and a query of short
        terms only is `QueryTooBroad` ("a", "0 1 2" would match every lead).
    :param time_ms: database time one query (one page, one count) may take;
        past it the query stops with `QueryTooBroad`.
    """

    max_terms: int = 8
    min_prefix: int = 2
    time_ms: int = 250

    def terms(self, q: str) -> SearchTerms:
        """The terms of `q` to search with, or `QueryTooBroad`."""
        terms = distinct_terms(q)
        if len(terms) > self.max_terms:
            raise QueryTooBroad(f"q has {len(terms)} different words; use at most {self.max_terms}")
        indexed = tuple(term for term in terms if len(term) >= self.min_prefix)
        short = tuple(term for term in terms if len(term) < self.min_prefix)
        if short and not indexed:
            raise QueryTooBroad(
                f"q needs a word of at least {self.min_prefix} characters "
                "(shorter words alone match almost every lead)"
            )
        return SearchTerms(indexed, short)

    def filter_terms(self, lead_filter: LeadFilter) -> SearchTerms | None:
        """The terms of the filter's `q` (None: it has none), or `QueryTooBroad`."""
        return self.terms(lead_filter.q) if lead_filter.q is not None else None

    def too_slow(self) -> QueryTooBroad:
        """The error of a query stopped at the time limit."""
        return QueryTooBroad(
            f"the search took longer than {self.time_ms} ms; use longer or more specific words"
        )


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
