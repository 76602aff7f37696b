"""Reads a sales request into slots: vocabulary -> words -> slots -> intent.

The offline planner's reading of a message. It does not match sentence
templates: it finds a count, job title(s), an industry, a location, a
company and contact requirements anywhere in the text, using the product's
own vocabulary (the directory's titles, industries and cities, with
abbreviations, plurals, aliases and common misspellings), and then decides
what the message asks for from what it found: a title or an industry with
no save/export/lookup wording is a search. Words it does not understand are
kept (`RequestParse.unknown`) and searched as keywords, not dropped.

It is deterministic, and linear in the message: one tokenizing pattern with
possessive runs, then passes over the words in which each position looks up
phrases of at most a few words (`Vocabulary.starts`).
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass, field
from typing import Any

from leadstream.agent.providers.local_directory import INDUSTRY_ALIASES, LOCATION_ALIASES
from leadstream.store.people_generator import CITIES, DEPARTMENTS, IC_TITLES, LEADERSHIP
from leadstream.store.titles import ABBREVIATIONS

# A word (letters/digits, with an inner apostrophe: "CMO's"), or one
# punctuation mark that separates slots. Possessive runs: linear.
TOKEN = re.compile(
    r"\d{1,3}+(?:,\d{3}+)++(?!\d)|[^\W_]++(?:['’`][^\W_]++)?+|[,;]++|[@&+#/]|[^\w\s,;@&+#/'’`-]++"
)
LINKEDIN = re.compile(
    r"(?:https?://)?+(?:[a-z]{2,3}\.)?+linkedin\.com/in/[\w%-]++/?+", re.IGNORECASE
)

# The vocabulary's tables are written as text, the way one reads them: a list
# of words, a list of phrases, or lines of `meaning: phrase, phrase, ...`.


def _words(text: str) -> frozenset[str]:
    """Single words separated by white space."""
    return frozenset(text.split())


def _phrases(text: str) -> tuple[str, ...]:
    """Phrases separated by commas, in order."""
    return tuple(phrase.strip() for phrase in text.split(",") if phrase.strip())


def _meanings(text: str) -> dict[str, str]:
    """Lines `meaning: phrase, phrase, ...` -> {phrase: meaning}; a meaning may
    take several lines."""
    table: dict[str, str] = {}
    for line in text.strip().splitlines():
        meaning, _, phrases = line.partition(":")
        table.update(dict.fromkeys(_phrases(phrases), meaning.strip()))
    return table


# Counts in words (a number in digits is read as one).
NUMBERS = _meanings(
    """
    1: one
    2: two, a couple of, a couple, couple of
    3: three
    4: four
    5: five, a handful of, a handful
    6: six, half a dozen
    7: seven
    8: eight
    9: nine
    10: ten, a few
    11: eleven
    12: twelve, a dozen, dozen
    15: fifteen
    20: twenty
    24: two dozen
    25: twenty five
    30: thirty
    35: thirty five
    40: forty
    45: forty five
    50: fifty
    60: sixty
    70: seventy
    75: seventy five
    80: eighty
    90: ninety
    100: hundred, a hundred, one hundred
    150: a hundred and fifty
    200: two hundred
    """
)

# Title words. Roles are what a title is ("engineer", "CTO"); modifiers and
# functions make it precise ("senior", "sales") but are not titles alone.
ROLES = _words(
    """
    head director manager lead officer president founder cofounder owner partner principal chief
    engineer developer architect scientist analyst designer researcher marketer recruiter
    accountant controller representative rep executive specialist consultant coordinator
    administrator admin strategist buyer counsel lawyer attorney editor writer producer
    programmer advisor adviser associate generalist treasurer chairman chairwoman chair
    superintendent vp vps svp evp avp gm md swe sdr bdr ae pm dev devs
    """
)
MODIFIERS = _words(
    """
    senior sr junior jr staff associate assistant deputy vice general managing executive
    regional global interim group lead co principal
    """
)
FUNCTIONS = _words(
    """
    hr it revenue technology tech legal procurement purchasing qa research support
    communications pr commercial strategy innovation digital ux ui ml ai devops backend frontend
    fullstack full stack cloud web mobile seo content growth customer account accounts software
    machine learning people talent partnerships business development demand generation product
    products sales marketing engineering operations ops finance financial data security
    information infrastructure platform design analytics brand success supply chain accounting
    acquisition human resources science enterprise inside channel solutions solution program
    project technical medical clinical quality risk compliance payroll tax logistics facilities
    office investor relations corporate creative
    """
)
# A function word that also names an industry when it stands alone.
FUNCTION_INDUSTRY = _meanings(
    """
    cybersecurity: security
    saas: software
    legal: legal
    logistics: logistics
    healthcare: medical
    """
)
CONTRACTIONS = _words(
    """
    don't let's who's i'd i'm i'll we'd we're we'll you're what's that's it's how's i've we've
    """
)
# Abbreviations written in capitals in a title ("ctos" is shown as "CTOs").
SHOUTED = {
    a
    for a, full in ABBREVIATIONS.items()
    if full.startswith(("chief", "vice", "senior vice", "executive vice", "human"))
} | {"vp", "svp", "evp", "hr", "sdr", "bdr"}
# Common misspellings of title words (read as the right word, and shown so).
TITLE_SPELLINGS = _meanings(
    """
    engineer: enginer, engeneer, enginner, engineeer
    engineers: enginers, engeneers, enginners
    manager: manger, managr, maneger
    managers: mangers
    director: directer, diretor
    directors: directers
    chief: cheif
    marketing: marketting, markting
    finance: finanace, finace
    recruiter: recuiter, recruter
    recruiters: recuiters, recruters
    developer: devloper, developper
    developers: devlopers, developpers
    scientist: sceintist
    scientists: sceintists
    president: presdient
    operations: opperations, operatons
    engineering: engeneering, enginering
    sales: salse
    software: sofware, softare, sotware
    """
)

# Industries beyond the provider's aliases: plurals, misspellings, nouns for
# the businesses of a sector ("insurers", "law firms", "banks").
INDUSTRY_WORDS = _meanings(
    """
    fintech: fintechs, fintec, fintek, finteck, banks, neobanks, finserv
    saas: sass, saas, b2b software, software companies
    healthcare: helthcare, heathcare, healtcare, hospitals, health tech
    biotech: pharmaceutical, biotec, biotechs, life science, bio tech
    e-commerce: ecomerce, ecommerse, e com, ecom, online retail, d2c, dtc
    cybersecurity: cybersecurty, cyber sec
    edtech: edutech, edu
    logistics: logistic, logisitics, transport
    manufacturing: manufacturers, manufactoring, factories
    insurance: insurers, insurence, insurtechs, insur tech
    media: publishers, ad tech
    energy: solar, climate tech, oil and gas, clean tech
    retail: retailers
    consulting: consultancies
    telecommunications: telecomms, telcos, telecommunication
    legal: legal tech, law firms
    real estate: prop tech
    gaming: game, game studios
    automotive: automakers, car makers, auto
    travel: travel tech, traveltech
    """
)
# Places beyond the directory's cities and countries (display names).
PLACE_WORDS = _meanings(
    """
    New York: ny, newyork, manhattan, brooklyn
    San Francisco: san fran, frisco
    Munich: muenchen
    Zurich: zuerich
    Sydney: sidney
    Sao Paulo: sao paolo
    London: londen, londres
    Berlin: berlim
    Tel Aviv: tlv, tel aviv yafo
    United Kingdom: u k
    United States: u s, u s a, states
    """
)

PHRASES = {
    "search": _phrases(
        """
        find, get, show, search, search for, look for, looking for, give, pull, list, fetch,
        source, need, needs, want, wanted, seeking, hunting for, prospect, prospecting, bring,
        grab, build, compile, who are, track down, dig up, identify, i need, we need
        """
    ),
    "filler": _phrases(
        """
        please, pls, plz, me, i, we, you, can, could, would, will, some, the, a, an, any, all,
        of, for, to, and, or, hey, hi, hello, thanks, thank, ok, okay, am, are, is, be, do,
        have, got, like, let's, lets, us, our, my, your, their, this, that, them, ones, one,
        who, whose, which, what, on, into, about, around, roughly, approximately, approx, maybe,
        ish, or so, up to, at least, at most, max, total, top, new, good, great, best, relevant,
        quality, real, verified, valid, actual, direct, list of, a list of, names, current,
        currently, also, there, here, so, then, but, too, really, very, kindly, asap, quickly,
        quick, real quick, it, work, works, working, based, located, some of, b2b, b2c, focused,
        focus, space, vertical, market, field, world, area, region, across, whole, entire,
        contact, contacts info, contact info, contact details, details, info, information,
        reach, reachable, available, known, listed, that work, who work, employed, employees of,
        role, roles, position, positions, type, kind, sort, requirement, requirements,
        condition, constraint, results, result, list, titles, title, people who, guys who,
        ones who, everyone, somebody, someone, anyone, contactable, reachable by, u, ur,
        ideally, preferably, if possible, possible, mostly, especially, primarily, series a,
        series b, series c, series d, seed, seed stage, pre seed, early stage, late stage,
        growth stage, funded, venture backed, vc backed, well funded, fast growing,
        tech companies, tech firms, tech startups, technology companies, tech company,
        tech scaleups, innovative, leading, large, small, big, mid size, midsize
        """
    )
    + tuple(CONTRACTIONS),
    # Common words that never name a title, a company or a place: understood
    # as nothing, rather than searched as keywords.
    "common": _phrases(
        """
        after, before, both, either, each, every, other, others, else, bump, bump it, up, down,
        out, over, again, still, already, yet, as, if, than, such, via, per, by, into, onto,
        off, only if, exactly, specifically, particularly, basically, actually, literally,
        right, now please, today, tomorrow, soon, later, first, last, send over, share,
        want to reach, reach out, reach out to, talk to, speak to, connect with, sell to,
        selling to, target, targeting, interested in, interested, relevant to, similar,
        similar to, like them, lot, lots, bunch, a bunch of, a lot of, lots of, several, many,
        much, few, handful, also get, should, would be, is there, are there, do you have,
        have you got, i'm after, we're after, on the lookout for, hunt, scrape, pull up,
        more or less, give or take, say, let me see, let me, see, check
        """
    ),
    "generic": _phrases(
        """
        leads, people, persons, person, contacts, prospects, folks, profiles, employees,
        individuals, decision makers, decision-makers, decisionmakers, guys, professionals,
        candidates, accounts, targets, team, teams, leaders, leadership, staff, members,
        team members, lead list
        """
    ),
    "orgnoun": _phrases(
        """
        companies, company, firms, firm, startups, startup, start ups, start up, scaleups,
        scaleup, scale ups, studios, studio, businesses, business, vendors, agencies, agency,
        players, brands, providers, orgs, organizations, organisations, corporates, shops,
        houses, groups, platforms, operators, carriers, makers, manufacturers, companys,
        company's, companies', outfits, enterprises, unicorns, smbs, smes, cos, corps
        """
    ),
    "phone": _phrases(
        """
        phone, phones, phone number, phone numbers, phone no, phone nos, phone #, phone num,
        phone nums, phonenumbers, phone numers, mobile, mobiles, mobile number, mobile numbers,
        mobile no, cell, cells, cell number, cell numbers, cell phone, cell phones, cellphone,
        cellphones, number, numbers, telephone, telephones, tel, direct dial, direct dials,
        dials, phone contacts, callable
        """
    ),
    "email": _phrases(
        """
        email, emails, e mail, e mails, email address, email addresses, e mail address,
        e mail addresses, emial, emials, mail, mails, mail address, work email, work emails,
        business email, business emails, emailable, inbox, inboxes
        """
    ),
    "with": _phrases(
        """
        with, having, that have, who have, that has, who has, incl, including, include, plus, +,
        and their, along with, w
        """
    ),
    "without": _phrases(
        """
        without, no, not, exclude, excluding the, leave out, don't need, dont need, do not need,
        excluding, except, minus, skip, drop, remove, regardless of, whether or not, w o, wo,
        ignore, forget, clear, lose, get rid of, forget about, forget the
        """
    ),
    "in": _phrases("in, based in, located in, near, around, out of, within, inside"),
    "at": _phrases(
        """
        at, @, working at, who work at, works at, employed at, employed by, working for,
        who work for, works for, from
        """
    ),
    "save": _phrases(
        """
        save, saves, keep, add, store, bookmark, put, stash, add them, save them, keep them
        """
    ),
    "export": _phrases(
        """
        export, exports, download, csv, spreadsheet, excel, xlsx, sheet, google sheet, file,
        send me a csv
        """
    ),
    "saved": _phrases(
        """
        saved, my leads, my saved leads, my list, lead list, saved leads, my contacts,
        everything i saved, already saved
        """
    ),
    "lookup": _phrases(
        """
        look up, lookup, look into, enrich, who is, who's, whos, tell me about, profile of,
        profile for, details on, details for, details of, info on, info about, find out about,
        background on, contact details for, contact details of, contact info for
        """
    ),
    "more": _phrases(
        """
        more, next page, next, another, additional, extra, keep going, continue, load more,
        show more, the rest
        """
    ),
    "refine": _phrases(
        """
        only, just, instead, same, same for, same but, make it, make that, now, what about,
        how about, rather, switch to, change to, change it to, narrow, narrow it, filter, those,
        the ones, of them, of those, among them, out of those
        """
    ),
    "decline": _phrases(
        """
        send, write, call, delete, erase, draft, compose, schedule, book, meeting, weather,
        joke, poem, translate, summarize, unsubscribe, sing, story, recipe
        """
    ),
    "slotname": _phrases(
        """
        location, locations, city, country, place, the location, industry filter, industry,
        sector, company, the company, employer, keywords, keyword, the keywords, title,
        seniority, level, filters, all filters, every filter
        """
    ),
    "anywhere": _phrases(
        """
        anywhere, any location, everywhere, worldwide, globally, any city, any country,
        all locations
        """
    ),
    "runs": _phrases(
        """
        who leads, who heads, who runs, who manages, who owns, who handles, who does,
        who looks after, who oversees, handles, looks after, who is in charge of,
        who's in charge of, runs, run, manages, manage, owns, in charge of, responsible for,
        oversees, running, heading, leading, managing
        """
    ),
    "c_level": _phrases(
        """
        c level, c suite, clevel, csuite, c level executives, c suite executives, execs,
        executives, top executives, senior leadership, senior leaders, top management,
        the c suite
        """
    ),
    "vp_level": _phrases("vp level, vice president level, vps and above"),
    "director_level": _phrases("director level, directors and above"),
    "senior_level": _phrases("senior people, senior level, seniors"),
    "junior_level": _phrases("junior people, entry level, juniors, interns"),
}
# What a slot name drops ("drop the location"); "filters" drops all but the title.
SLOT_NAMES = _meanings(
    """
    location: location, locations, city, country, place
    industry: industry, sector
    company: company, employer
    keywords: keywords, keyword
    seniority: seniority, level
    title: title
    filters: filters, filter
    """
)
SENIORITY_KINDS = _meanings(
    """
    c_level: c_level
    vp: vp_level
    director: director_level
    senior: senior_level
    entry: junior_level
    """
)
# How long a value read from free text may be (the tool schemas cap them at
# 200 characters; a real title, company or place is a few words).
MAX_WORDS = {"title": 8, "company": 6, "location": 4, "keyword": 4, "name": 5}
MAX_TITLES = 3
MAX_KEYWORD_RUNS = 4
MAX_UNUSED = 3


@dataclass(frozen=True, slots=True)
class Term:
    """What a phrase of the vocabulary means: its kind and value."""

    kind: str
    value: Any = None


@dataclass(slots=True)
class Word:
    """One word of the message: `key` is folded and spelled right, `text` as typed."""

    key: str
    text: str
    capital: bool
    possessive: bool = False


@dataclass(slots=True)
class Piece:
    """A phrase of the message read as one term (or an unknown word)."""

    kind: str
    value: Any
    first: int  # index of its first word
    end: int  # index after its last word
    text: str  # as typed


class Vocabulary:
    """Phrases of the product's vocabulary (word tuples) and their meaning.

    :param phrases: folded words of a phrase -> its `Term`.
    """

    def __init__(self, phrases: dict[tuple[str, ...], Term]) -> None:
        self.phrases = phrases
        self.starts: dict[str, int] = {}  # first word -> the longest phrase it starts
        for key in phrases:
            self.starts[key[0]] = max(self.starts.get(key[0], 0), len(key))

    @classmethod
    def of_directory(cls) -> Vocabulary:
        """The vocabulary of the local directory and its aliases."""
        phrases: dict[tuple[str, ...], Term] = {}

        def add(phrase: str, term: Term) -> None:
            key = tuple(_words_of(phrase))
            if key and key not in phrases:
                phrases[key] = term

        for kind, entries in PHRASES.items():
            for entry in entries:
                add(entry, Term(kind))
        for phrase, count in NUMBERS.items():
            add(phrase, Term("number", int(count)))
        for phrase, industry in {**INDUSTRY_ALIASES, **INDUSTRY_WORDS}.items():
            add(phrase, Term("industry", industry))
        for city, country, *_ in CITIES:
            add(city, Term("location", city))
            add(country, Term("location", country))
        for alias, place in LOCATION_ALIASES.items():
            add(alias, Term("location", place.title()))
        for alias, place in PLACE_WORDS.items():
            add(alias, Term("location", place))
        roles = ROLES | {a for a, full in ABBREVIATIONS.items() if full.split()[-1] in ROLES}
        for word in _title_vocabulary():
            kind = "role" if word in roles else "modifier" if word in MODIFIERS else "function"
            # a title word is also a plural, and an abbreviation ("cfos", "cmo's")
            for form in {word, _plural(word)}:
                key = (form,)
                was = phrases.get(key, Term("")).kind
                if (
                    was in ("", "filler")
                    or (was == "orgnoun" and form == word)  # "business" development
                    or (was == "industry" and word in FUNCTION_INDUSTRY)
                ):
                    phrases[key] = Term(kind, FUNCTION_INDUSTRY.get(word))
        for phrase in _phrases(
            "vice president, vice presidents, co founder, co founders, general manager,"
            " managing director, account executive, account executives, account manager,"
            " account managers"
        ):
            add(phrase, Term("role"))
        return cls(phrases)

    def read(self, words: list[Word]) -> list[Piece]:
        """The message's words as pieces: at each word the longest known phrase."""
        keys = [w.key for w in words]
        pieces: list[Piece] = []
        i = 0
        while i < len(words):
            # Most words start no phrase: one lookup says how long one may be.
            for size in range(min(self.starts.get(keys[i], 0), len(words) - i), 0, -1):
                term = self.phrases.get(tuple(keys[i : i + size]))
                if term is not None:
                    text = " ".join(w.text for w in words[i : i + size])
                    pieces.append(Piece(term.kind, term.value, i, i + size, text))
                    i += size
                    break
            else:
                word = words[i]
                kind = (
                    "number"
                    if word.key.isdigit()
                    else "word"
                    if word.key[:1].isalnum()
                    else "punct"
                )
                value = int(word.key) if kind == "number" and len(word.key) < 7 else None
                pieces.append(Piece(kind, value, i, i + 1, word.text))
                i += 1
        return pieces


def _joined(pieces: list[Piece], most: int) -> str:
    """The text of the first `most` pieces."""
    return " ".join(p.text for p in pieces[:most])


def _title_vocabulary() -> set[str]:
    """Every word of the directory's titles, their abbreviations and the title lists above."""
    titles = [t for names, *_ in LEADERSHIP for t in names]
    titles += [t for group in IC_TITLES.values() for t in group]
    titles += [d for group in DEPARTMENTS.values() for d in group]
    titles += ["VP", "Head", "Director", "Manager", "Lead", "Senior", "Vice President"]
    words = {w for title in titles for w in _words_of(title)}
    words |= set(ABBREVIATIONS) | ROLES | MODIFIERS | FUNCTIONS
    return words - {"of", "and", "the", "a", "an", "fp", "co"}


def _plural(word: str) -> str:
    if word.endswith(("s", "x", "ch", "sh")):
        return word + "es" if not word.endswith("s") or len(word) <= 3 else word
    if word.endswith("y") and word[-2:-1] not in "aeiou":
        return word[:-1] + "ies"
    return word + "s"


def _fold(text: str) -> str:
    """Lowercase without accents ("São" -> "sao")."""
    if text.isascii():
        return text.lower()
    decomposed = unicodedata.normalize("NFKD", text.casefold())
    return "".join(ch for ch in decomposed if not unicodedata.combining(ch))


def _words_of(text: str) -> list[str]:
    return [w.key for w in _split(text)]


def _split(text: str) -> list[Word]:
    """The words of `text`: folded, apostrophes read, misspelt title words righted."""
    words = []
    for token in TOKEN.findall(text):
        key = _fold(token).replace("’", "'").replace("`", "'")
        if not key[:1].isalnum():  # a run of commas (or dashes, dots) is one separator
            key = token = key[:1] if key[:1] in ",;@&+#/" else "."
        if key[:1].isdigit() and "," in key:  # "1,000"
            key = token = key.replace(",", "")
        possessive = False
        if key.endswith("'s"):
            # "CMO's" is a plural of an abbreviation; "Stripe's" a possessive.
            stem = key[:-2]
            key, possessive = (stem + "s", False) if stem in ABBREVIATIONS else (stem, True)
            token = token[:-2] + ("s" if not possessive else "")
        elif "'" in key and key not in CONTRACTIONS:
            key = key.replace("'", "")
        if token.islower() and (key in SHOUTED or (key[-1:] == "s" and key[:-1] in SHOUTED)):
            token = key.upper() if key in SHOUTED else key[:-1].upper() + "s"  # "ctos" -> "CTOs"
        right = TITLE_SPELLINGS.get(key)
        if right is not None:
            key, token = right.lower(), right
        words.append(Word(key, token, token[:1].isupper(), possessive))
    return words


@dataclass
class SearchSlots:
    """The search a message describes (before it meets the conversation)."""

    titles: list[str] = field(default_factory=list)
    industry: str | None = None
    location: str | None = None
    company: str | None = None
    seniority: str | None = None
    keywords: list[str] = field(default_factory=list)
    has_phone: bool | None = None  # None: not said; False: said not to require
    has_email: bool | None = None
    count: int | None = None
    anywhere: bool = False
    drop: set[str] = field(default_factory=set)  # slots to clear ("drop the location")

    def any_slot(self) -> bool:
        return bool(self.titles or self.industry or self.location or self.company or self.seniority)


@dataclass
class RequestParse:
    """What one message asks for.

    `intent` is one of: search, more, save, export, lookup, ask (some slots
    but not enough to act on), help (nothing understood). A search names
    its `slots`; `refines` says it reads as a change to the previous search
    ("only the ones in London", "make it 50"); `then` lists the tools to run
    on the search's results ("... and save them"). `unused` are understood
    values that could not be used (a second industry), `unknown` the words
    not understood.
    """

    intent: str
    slots: SearchSlots = field(default_factory=SearchSlots)
    refines: bool = False
    complete: bool = False  # names a title or an industry
    asked: bool = False  # says to search ("find", "get") or names people ("leads")
    then: list[str] = field(default_factory=list)
    saved: bool = False  # export/save refers to saved leads
    name: str | None = None
    linkedin: str | None = None
    unused: list[str] = field(default_factory=list)
    unknown: list[str] = field(default_factory=list)


VOCABULARY = Vocabulary.of_directory()


def parse_request(text: str, vocabulary: Vocabulary = VOCABULARY) -> RequestParse:
    """Read one message into a `RequestParse`. Deterministic, linear in `text`."""
    if m := LINKEDIN.search(text):
        return RequestParse("lookup", linkedin=m[0])
    words = _split(text)
    pieces = vocabulary.read(words)
    return _Reader(words, pieces).parse()


class _Reader:
    """One pass per slot over the pieces of a message; see `parse_request`."""

    def __init__(self, words: list[Word], pieces: list[Piece]) -> None:
        self.words = words
        self.pieces = pieces
        self.used = [False] * len(pieces)
        self.slots = SearchSlots()
        self.unused: list[str] = []

    def parse(self) -> RequestParse:
        kinds = {p.kind for p in self.pieces}
        self._titles()
        self._contacts()
        self._count()
        self._places_and_companies()
        self._industry()
        self._seniority()
        self._drops()
        slots = self.slots
        slots.anywhere = "anywhere" in kinds
        unknown = self._unknown_runs()
        complete = bool(slots.titles or slots.industry or slots.seniority)
        contacts = slots.has_phone is not None or slots.has_email is not None
        # "look up Jane Smith at Cloudly" (but "who is the CEO of Acme" is a search)
        lookup_at = self._first("lookup")
        if lookup_at is not None and not slots.titles and unknown:
            return self._lookup(lookup_at)
        # "save them", "export my saved leads", "find 20 CTOs and save them"
        if "save" in kinds or "export" in kinds:
            return self._action(kinds, complete, unknown)
        # "write me a poem", "call them"
        if "decline" in kinds and not complete:
            return RequestParse("help", unknown=unknown)
        # "more", "20 more", "next page"
        if "more" in kinds and not slots.titles and not slots.industry:
            return RequestParse("more", slots, refines=True, unknown=unknown)
        # "Jane Smith at Cloudly": a person's name and nothing to search on
        if not complete and self._is_person(unknown) and not slots.location:
            return self._lookup(None)
        # a search (new, or a change to the last one: the planner decides with the history)
        if slots.any_slot() or slots.count is not None or contacts or slots.anywhere or slots.drop:
            slots.keywords = unknown
            return RequestParse(
                "search",
                slots,
                refines="refine" in kinds or not slots.any_slot(),
                complete=complete,
                asked="generic" in kinds or "search" in kinds,
                unused=self.unused,
                unknown=unknown,
            )
        if "refine" in kinds:  # "only those", "same"
            return RequestParse("search", slots, refines=True, unknown=unknown)
        return RequestParse("help", unknown=unknown)

    # -- slots -------------------------------------------------------------

    def _titles(self) -> None:
        """Runs of title words joined by "of", "and", "&", ","; a run needs a role."""
        pieces, i = self.pieces, 0
        while i < len(pieces):
            if pieces[i].kind not in ("role", "modifier", "function"):
                i += 1
                continue
            start = i
            while i < len(pieces):
                kind = pieces[i].kind
                if kind in ("role", "modifier", "function"):
                    i += 1
                elif (  # "chief people officer"
                    pieces[i].text.lower() == "people"
                    and i + 1 < len(pieces)
                    and pieces[i + 1].kind == "role"
                ):
                    pieces[i].kind = "function"
                    i += 1
                elif self._joins(i):
                    i += 1
                else:
                    break
            self._title_run(start, i)

    def _joins(self, i: int) -> bool:
        """Whether the piece at `i` joins two parts of a title ("VP of Sales", "CTOs and CIOs")."""
        pieces = self.pieces
        joiner = pieces[i].text.lower()
        if i + 1 >= len(pieces) or joiner not in ("of", "and", "&", "/", ",", "for"):
            return False
        after = pieces[i + 1]
        if joiner in ("of", "for") and after.kind == "generic" and after.text.lower() == "people":
            after.kind = "function"  # "head of people"
            return True
        if joiner in (",", "/"):
            return after.kind in ("role", "modifier")
        return after.kind in ("role", "modifier", "function")

    def _title_run(self, start: int, end: int) -> None:
        run = self.pieces[start:end]
        before = self.pieces[start - 1] if start else None
        after = self.pieces[end] if end < len(self.pieces) else None
        if not any(p.kind == "role" for p in run):
            if before is not None and before.kind == "runs":
                self.slots.titles.append("Head of " + _joined(run, MAX_WORDS["title"]))
                self.used[start - 1 : end] = [True] * (end - start + 1)
            elif after is not None and after.kind == "generic" and len(run) < 3:
                # "marketing people" (a function), "tech leads" (a title)
                lead = after.text.lower() in ("lead", "leads")
                self.slots.titles.append(_joined(run + ([after] if lead else []), 3))
                self.used[start : end + lead] = [True] * (end + lead - start)
            elif len(run) == 1 and run[0].value:  # "security" alone: an industry
                run[0].kind = "industry"
            elif all(p.kind == "modifier" for p in run) and run[0].text.lower() in ("senior", "sr"):
                self.slots.seniority = "senior"
                self.used[start:end] = [True] * (end - start)
            return
        self.used[start:end] = [True] * (end - start)
        # "CTOs and CIOs": two titles; "VP of Sales and Marketing": the role goes on.
        parts: list[list[Piece]] = [[]]
        for piece in run:
            if piece.text.lower() in ("and", "&", "/", ","):
                parts.append([])
            else:
                parts[-1].append(piece)
        head: list[Piece] = []
        for part in parts:
            if not part:
                continue
            if any(p.kind == "role" for p in part):
                of = next((k for k, p in enumerate(part) if p.text.lower() in ("of", "for")), None)
                head = part[: of + 1] if of is not None else []
                self._title(part)
            elif head:
                self._title(head + part)
            elif self.slots.titles:
                self.slots.titles[-1] += " " + _joined(part, MAX_WORDS["title"])

    def _title(self, pieces: list[Piece]) -> None:
        title = _joined(pieces, MAX_WORDS["title"])
        titles = self.slots.titles
        if len(titles) < MAX_TITLES and title.lower() not in (t.lower() for t in titles):
            self.slots.titles.append(title)

    def _contacts(self) -> None:
        """Phone / email words: required, or (after "without", "no") not."""
        negated = -10
        for k, piece in enumerate(self.pieces):
            if piece.kind == "without":
                negated = k
            elif piece.kind in ("phone", "email"):
                require = k - negated > 3
                if piece.kind == "phone" and not self._number_of_leads(k):
                    self.slots.has_phone = require if self.slots.has_phone is None else True
                elif piece.kind == "email":
                    self.slots.has_email = require if self.slots.has_email is None else True
                else:
                    continue
                self.used[k] = True
                if k - negated <= 3:
                    negated = k  # "no phones or emails": both

    def _number_of_leads(self, k: int) -> bool:
        """ "a number of CTOs": that "number" is not a phone."""
        after = self.pieces[k + 1] if k + 1 < len(self.pieces) else None
        return self.pieces[k].text.lower() == "number" and after is not None and after.text == "of"

    def _count(self) -> None:
        """The first number is the count; later ones are noted as unused."""
        for k, piece in enumerate(self.pieces):
            if piece.kind != "number" or self.used[k] or piece.value is None:
                continue
            if k and self.pieces[k - 1].text.lower() in ("series", "fortune"):  # "Fortune 500"
                continue
            self.used[k] = True
            if self.slots.count is None and piece.value > 0:
                self.slots.count = piece.value
            elif piece.value != self.slots.count and len(self.unused) < MAX_UNUSED:
                self.unused.append(str(piece.value))

    def _places_and_companies(self) -> None:
        """Known places anywhere; "at X" / "X's" / "CEO of X" companies; "in X" unknown places."""
        pieces = self.pieces
        for k, piece in enumerate(pieces):
            if self.used[k]:
                continue
            if piece.kind == "location":
                self.used[k] = True
                self._set("location", piece.value)
                self._more_places(k + 1)
            elif self._company_starts(k):
                start = k + 1 if piece.kind != "word" else k
                end = start
                while end < len(pieces) and pieces[end].kind in ("word", "number", "orgnoun"):
                    if pieces[end].kind == "orgnoun" and end == start:
                        break
                    end += 1
                    if end > start and self.words[pieces[end - 1].first].possessive:
                        break
                if end == start or not any(p.kind == "word" for p in pieces[start:end]):
                    continue
                company = _joined(pieces[start:end], MAX_WORDS["company"]).strip(" .,")
                self.used[start:end] = [True] * (end - start)
                if piece.kind != "word":
                    self.used[k] = True
                self._set("company", company)
            elif piece.kind == "in" and k + 1 < len(pieces):
                # "in Lisbon": a place we do not know, read as a location.
                end = k + 1
                while (
                    end < len(pieces)
                    and pieces[end].kind == "word"
                    and pieces[end].text[:1].isupper()
                ):
                    end += 1
                if end > k + 1 and not self.used[k + 1]:
                    self.used[k + 1 : end] = [True] * (end - k - 1)
                    self._set("location", _joined(pieces[k + 1 : end], MAX_WORDS["location"]))
                    self._more_places(end)

    def _more_places(self, k: int) -> None:
        """ "in Sydney and Melbourne": a capitalised word after "and"/"or" is a place too."""
        pieces = self.pieces
        if k + 1 < len(pieces) and pieces[k].text.lower() in ("and", "or", "&"):
            after = pieces[k + 1]
            if after.kind == "word" and after.text[:1].isupper() and not self.used[k + 1]:
                self.used[k + 1] = True
                self._set("location", after.text)

    def _company_starts(self, k: int) -> bool:
        """ "at Acme", "Acme's CTO", "CTO of Acme" (a capitalised word after a title's "of")."""
        piece = self.pieces[k]
        if piece.kind == "at":
            return True
        if piece.kind == "word":  # "Stripe's CTO" (but "Jane Smith's email" is a person)
            after = self.pieces[k + 1] if k + 1 < len(self.pieces) else None
            return (
                self.words[piece.first].possessive
                and after is not None
                and after.kind in ("role", "modifier", "function", "generic")
            )
        return (
            piece.text.lower() == "of"
            and 0 < k < len(self.pieces) - 1
            and self.used[k - 1]
            and self.pieces[k - 1].kind == "role"
            and self.pieces[k + 1].text[:1].isupper()
        )

    def _industry(self) -> None:
        """The first industry named (also "security" standing alone, not in a title)."""
        for k, piece in enumerate(self.pieces):
            if piece.kind == "industry" and not self.used[k]:
                self.used[k] = True
                self._set("industry", piece.value if piece.value else piece.text.lower())
            elif piece.kind == "function" and not self.used[k] and piece.value:
                self.used[k] = True
                self._set("industry", piece.value)

    def _drops(self) -> None:
        """ "drop the location", "any industry": slots the message clears."""
        for k, piece in enumerate(self.pieces):
            if piece.kind != "slotname":
                continue
            before = [
                p
                for p in self.pieces[max(0, k - 3) : k]
                if p.kind != "filler" or p.text.lower() in ("any", "all", "every", "no")
            ]
            if before and (
                before[-1].kind == "without"
                or before[-1].text.lower() in ("any", "all", "every", "no")
            ):
                slot = SLOT_NAMES.get(piece.text.lower().split()[-1])
                if slot is not None:
                    self.slots.drop.add(slot)

    def _seniority(self) -> None:
        """ "c-level execs", "VP level": the seniority slot."""
        for k, piece in enumerate(self.pieces):
            if piece.kind in SENIORITY_KINDS and not self.used[k]:
                self.used[k] = True
                self._set("seniority", SENIORITY_KINDS[piece.kind])

    def _set(self, slot: str, value: str) -> None:
        """Fill `slot` once; a second, different value is kept as unused."""
        current = getattr(self.slots, slot)
        if current is None:
            setattr(self.slots, slot, value)
        elif (
            current.lower() != value.lower()
            and len(self.unused) < MAX_UNUSED
            and value not in self.unused
        ):
            self.unused.append(value)

    def _unknown_runs(self) -> list[str]:
        """Runs of words not understood (nor used as a company, a place or a title)."""
        runs: list[str] = []
        run: list[str] = []
        for k, piece in enumerate([*self.pieces, Piece("end", None, 0, 0, "")]):
            if piece.kind in ("word", "function", "modifier") and not self.used[k]:
                run.append(piece.text)
            elif run:
                words = " ".join(run[: MAX_WORDS["keyword"]])
                if words not in runs and len(runs) < MAX_KEYWORD_RUNS:
                    runs.append(words)
                run = []
        return runs

    def _first(self, kind: str) -> int | None:
        return next((k for k, p in enumerate(self.pieces) if p.kind == kind), None)

    # -- intents -----------------------------------------------------------

    def _lookup(self, lookup_at: int | None) -> RequestParse:
        """ "look up Jane Smith at Cloudly": the name is the first unknown run."""
        start = 0 if lookup_at is None else lookup_at + 1
        name: list[str] = []
        for k in range(start, len(self.pieces)):
            piece = self.pieces[k]
            if piece.kind == "word" and not self.used[k] and len(name) < MAX_WORDS["name"]:
                name.append(piece.text)
            elif name:
                break
        if not name:
            return RequestParse("help")
        slots = SearchSlots(company=self.slots.company)
        return RequestParse("lookup", slots, name=" ".join(name).strip(" .,?"))

    def _action(self, kinds: set[str], complete: bool, unknown: list[str]) -> RequestParse:
        """Save / export wording: of this message's search, or of earlier results."""
        slots = self.slots
        first_action = min(k for k, p in enumerate(self.pieces) if p.kind in ("save", "export"))
        searched_first = complete and any(
            self.used[k] for k in range(first_action) if self.pieces[k].kind != "number"
        )
        if searched_first:
            then = [
                n
                for n, kind in (("save_leads", "save"), ("export_leads", "export"))
                if kind in kinds
            ]
            slots.keywords = unknown
            return RequestParse(
                "search", slots, complete=True, then=then, unused=self.unused, unknown=unknown
            )
        intent = "save" if "save" in kinds and self._first("save") == first_action else "export"
        parse = RequestParse(intent, slots, saved="saved" in kinds, unknown=unknown)
        if intent == "save" and "export" in kinds:
            parse.then = ["export_leads"]
        return parse

    @staticmethod
    def _is_person(unknown: list[str]) -> bool:
        return any(
            len(run.split()) >= 2 and all(w[:1].isupper() for w in run.split()) for run in unknown
        )
