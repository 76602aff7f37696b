"""How sales people actually ask: a table of phrasings and the tool calls
they must produce (issue 13).

Each row is a message, whether it follows an earlier search in the
conversation (`AFTER`: 50 CTOs in fintech, all found), and what the
offline planner must do: the tool calls with their exact arguments, or an
answer containing the given words. Every row runs against the parser and
planner; a sample runs through the real server over Socket.IO.
`bench/planner_eval.py` reports the share of rows handled and the parse time.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson
import pytest

from leadstream.agent.planner import THIS_TURNS_SEARCH, EarlierSearch, plan_request
from leadstream.agent.tools import parse_arguments

# A save/export of the search made in the same message.
THIS_SEARCH = {"searchId": THIS_TURNS_SEARCH}

EARLIER = EarlierSearch({"title": "CTOs", "industry": "fintech", "limit": 50}, "sr_1", 50)
AFTER = True
Steps = list[tuple[str, dict[str, Any]]]


@dataclass(frozen=True)
class Row:
    """One phrasing: `expect` is the tool steps, or words the answer must contain."""

    text: str
    expect: Steps | str
    after: bool = False


def S(**args: Any) -> Steps:
    """One search_leads call with these arguments."""
    return [("search_leads", args)]


def R(**changes: Any) -> Steps:
    """The earlier search refined: its arguments with `changes` (None drops one)."""
    args = {**EARLIER.args, **changes}
    return S(**{k: v for k, v in args.items() if v is not None})


SAVE = [("save_leads", {"searchId": "sr_1"})]
EXPORT = [("export_leads", {"searchId": "sr_1"})]
HELP = "OPENAI_API_KEY"
ASK = "who to look for"

SEARCH_ROWS = [
    # no command verb
    Row(
        "We need 40 heads of product at gaming studios in Warsaw",
        S(title="heads of product", industry="gaming", location="Warsaw", limit=40),
    ),
    Row("looking for insurance company CTOs", S(title="CTOs", industry="insurance")),
    Row("30 CFOs in logistics please", S(title="CFOs", industry="logistics", limit=30)),
    Row(
        "who runs sales at edtech startups in Madrid?",
        S(title="Head of sales", industry="edtech", location="Madrid"),
    ),
    Row("CTOs at fintech firms", S(title="CTOs", industry="fintech")),
    Row("insurance company CEOs", S(title="CEOs", industry="insurance")),
    Row(
        "marketing directors in the healthcare space",
        S(title="marketing directors", industry="healthcare"),
    ),
    Row("founders of biotech startups", S(title="founders", industry="biotech")),
    Row("CFOs, logistics, Chicago", S(title="CFOs", industry="logistics", location="Chicago")),
    Row("a list of 60 CMOs in telco", S(title="CMOs", industry="telecommunications", limit=60)),
    Row(
        "a dozen VPs of engineering in ecommerce",
        S(title="VPs of engineering", industry="e-commerce", limit=12),
    ),
    Row("top 25 CMO's with phone no.", S(title="CMOs", hasPhone=True, limit=25)),
    Row("cell numbers for CTOs in SaaS", S(title="CTOs", industry="saas", hasPhone=True)),
    Row("I need data scientists in Berlin", S(title="data scientists", location="Berlin")),
    Row("any heads of growth at edtech companies?", S(title="heads of growth", industry="edtech")),
    Row("Recruiters in Toronto", S(title="Recruiters", location="Toronto")),
    Row(
        "product managers, saas, london",
        S(title="product managers", industry="saas", location="London"),
    ),
    Row("CISOs at banks in New York", S(title="CISOs", industry="fintech", location="New York")),
    Row("20 COOs in manufacturing", S(title="COOs", industry="manufacturing", limit=20)),
    Row("HR business partners in retail", S(title="HR business partners", industry="retail")),
    Row("sales reps at insurers", S(title="sales reps", industry="insurance")),
    Row(
        "devops engineers in Amsterdam with emails",
        S(title="devops engineers", location="Amsterdam", hasEmail=True),
    ),
    # with a verb
    Row(
        "Find 100 CTOs in fintech with phone numbers",
        S(title="CTOs", industry="fintech", hasPhone=True, limit=100),
    ),
    Row("get 20 VP Sales at Novapay", S(title="VP Sales", company="Novapay", limit=20)),
    Row(
        "show me 50 heads of marketing in SaaS in Berlin with emails",
        S(title="heads of marketing", industry="saas", location="Berlin", hasEmail=True, limit=50),
    ),
    Row(
        "Please find ten CFOs in healthcare companies in the UK with phones and emails",
        S(
            title="CFOs",
            industry="healthcare",
            location="United Kingdom",
            hasPhone=True,
            hasEmail=True,
            limit=10,
        ),
    ),
    Row("find a hundred CTOs", S(title="CTOs", limit=100)),
    Row("find me a CTO at Stripe in London", S(title="CTO", company="Stripe", location="London")),
    Row("search for 30 people in Germany", S(location="Germany", limit=30)),
    Row(
        "list 25 data scientists in biotech startups",
        S(title="data scientists", industry="biotech", limit=25),
    ),
    Row(
        "Get 40 software engineers in payments",
        S(title="software engineers", industry="fintech", limit=40),
    ),
    Row(
        "can you pull 15 account executives in cybersecurity",
        S(title="account executives", industry="cybersecurity", limit=15),
    ),
    Row("could you get me some COOs in logistics?", S(title="COOs", industry="logistics")),
    Row(
        "give me 75 sales managers in Paris", S(title="sales managers", location="Paris", limit=75)
    ),
    Row(
        "Pull a list of 60 directors of engineering at SaaS companies",
        S(title="directors of engineering", industry="saas", limit=60),
    ),
    Row("find 5 CFOs", S(title="CFOs", limit=5)),
    Row("find 3 CTOs", S(title="CTOs", limit=3)),
    Row("show 200 engineers", S(title="engineers", limit=200)),
    Row("find fifty CMOs", S(title="CMOs", limit=50)),
    Row(
        "get twenty-five VPs of Sales in fintech",
        S(title="VPs of Sales", industry="fintech", limit=25),
    ),
    Row("find half a dozen CEOs in Dublin", S(title="CEOs", location="Dublin", limit=6)),
    Row("I want a couple of CTOs in Zurich", S(title="CTOs", location="Zurich", limit=2)),
    Row("find 1,000 CTOs", S(title="CTOs", limit=200)),
    # industries in other shapes
    Row("CTOs at fintechs", S(title="CTOs", industry="fintech")),
    Row("CEOs of insurtech startups", S(title="CEOs", industry="insurance")),
    Row("CFOs in the health care sector", S(title="CFOs", industry="healthcare")),
    Row("CTOs at e-commerce companies", S(title="CTOs", industry="e-commerce")),
    Row("CMOs in e commerce", S(title="CMOs", industry="e-commerce")),
    Row(
        "heads of sales at cyber security firms",
        S(title="heads of sales", industry="cybersecurity"),
    ),
    Row("CTOs in medtech", S(title="CTOs", industry="healthcare")),
    Row("CEOs in pharma", S(title="CEOs", industry="biotech")),
    Row("CTOs in crypto", S(title="CTOs", industry="fintech")),
    Row("VPs of product in ed tech", S(title="VPs of product", industry="edtech")),
    Row("CFOs in real estate", S(title="CFOs", industry="real estate")),
    Row("CFOs in proptech", S(title="CFOs", industry="real estate")),
    Row("general counsel at law firms", S(title="general counsel", industry="legal")),
    Row("COOs at shipping companies", S(title="COOs", industry="logistics")),
    Row("CTOs at game studios", S(title="CTOs", industry="gaming")),
    Row("CMOs at car makers", S(title="CMOs", industry="automotive")),
    Row("heads of marketing in hospitality", S(title="heads of marketing", industry="travel")),
    Row("CEOs in renewables", S(title="CEOs", industry="energy")),
    Row("CTOs in telecoms", S(title="CTOs", industry="telecommunications")),
    Row("editors in media", S(title="editors", industry="media")),
    Row(
        "consultants at consultancies in Boston",
        S(title="consultants", industry="consulting", location="Boston"),
    ),
    Row("engineers in the automotive industry", S(title="engineers", industry="automotive")),
    Row("security engineers in Tel Aviv", S(title="security engineers", location="Tel Aviv")),
    Row("CTOs in security", S(title="CTOs", industry="cybersecurity")),
    Row("CTOs at software companies", S(title="CTOs", industry="saas")),
    # misspellings and aliases
    Row("CTOs in fintec", S(title="CTOs", industry="fintech")),
    Row("CFOs in helthcare", S(title="CFOs", industry="healthcare")),
    Row("CTOs in sass", S(title="CTOs", industry="saas")),
    Row("sofware enginers in Berlin", S(title="software engineers", location="Berlin")),
    Row("marketting managers in London", S(title="marketing managers", location="London")),
    Row("CTOs in NYC", S(title="CTOs", location="New York")),
    Row("CTOs in SF", S(title="CTOs", location="San Francisco")),
    Row("CFOs in the bay area", S(title="CFOs", location="San Francisco")),
    Row("CEOs in Munchen", S(title="CEOs", location="Munich")),
    Row("CTOs in São Paulo", S(title="CTOs", location="Sao Paulo")),
    Row("engineers in Bengaluru", S(title="engineers", location="Bangalore")),
    Row("CEOs in the US", S(title="CEOs", location="United States")),
    Row("CEOs in Holland", S(title="CEOs", location="Netherlands")),
    Row("heads of product in Lisbon", S(title="heads of product", location="Lisbon")),
    Row("CTOs with mobile numbers", S(title="CTOs", hasPhone=True)),
    Row("CFOs with e-mail addresses", S(title="CFOs", hasEmail=True)),
    Row(
        "VPs of sales with direct dials and emails",
        S(title="VPs of sales", hasPhone=True, hasEmail=True),
    ),
    Row("CTOs w/ phone #", S(title="CTOs", hasPhone=True)),
    # companies
    Row("engineers at Acme", S(title="engineers", company="Acme")),
    Row("Stripe's CTO", S(title="CTO", company="Stripe")),
    Row("the CTO of Cloudly", S(title="CTO", company="Cloudly")),
    Row("who is the CEO of Acme", S(title="CEO", company="Acme")),
    Row("people working at Novapay in London", S(company="Novapay", location="London")),
    Row("find leads at Acme Inc.", S(company="Acme Inc")),
    Row("sales managers @ Ledgerly", S(title="sales managers", company="Ledgerly")),
    # several titles, seniority, keywords
    Row(
        "CTOs and CIOs in insurance",
        [
            ("search_leads", {"title": "CTOs", "industry": "insurance"}),
            ("search_leads", {"title": "CIOs", "industry": "insurance"}),
        ],
    ),
    Row(
        "VP of Sales and Marketing in Paris",
        [
            ("search_leads", {"title": "VP of Sales", "location": "Paris"}),
            ("search_leads", {"title": "VP of Marketing", "location": "Paris"}),
        ],
    ),
    Row("c-level execs in fintech", S(seniority="c_level", industry="fintech")),
    Row("c-suite in Berlin", S(seniority="c_level", location="Berlin")),
    Row("senior people in biotech", S(seniority="senior", industry="biotech")),
    Row("find CTOs with a beard in fintech", S(title="CTOs", industry="fintech", keywords="beard")),
    Row("blockchain architects", S(title="architects", industry="fintech")),
    Row(
        "Salesforce admins in Chicago", S(title="admins", location="Chicago", keywords="Salesforce")
    ),
    Row("decision makers in logistics", S(industry="logistics")),
    Row("people in cybersecurity in Lisbon", S(industry="cybersecurity", location="Lisbon")),
    Row("who leads marketing at gaming companies", S(title="Head of marketing", industry="gaming")),
    # search, then act on it
    Row(
        "find 20 CTOs in fintech and save them",
        [
            ("search_leads", {"title": "CTOs", "industry": "fintech", "limit": 20}),
            ("save_leads", THIS_SEARCH),
        ],
    ),
    Row(
        "find 20 CTOs in fintech, and then save them",
        [
            ("search_leads", {"title": "CTOs", "industry": "fintech", "limit": 20}),
            ("save_leads", THIS_SEARCH),
        ],
    ),
    Row(
        "find 5 CFOs and save them and export to csv",
        [
            ("search_leads", {"title": "CFOs", "limit": 5}),
            ("save_leads", THIS_SEARCH),
            ("export_leads", THIS_SEARCH),
        ],
    ),
    Row(
        "30 heads of sales in Berlin, export them",
        [
            ("search_leads", {"title": "heads of sales", "location": "Berlin", "limit": 30}),
            ("export_leads", THIS_SEARCH),
        ],
    ),
]

REFINE_ROWS = [
    Row("only the ones in London", R(location="London"), AFTER),
    Row("just those with emails", R(hasEmail=True), AFTER),
    Row("just the ones with phone numbers", R(hasPhone=True), AFTER),
    Row("make it 50", R(limit=50), AFTER),
    Row("make it 20", R(limit=20), AFTER),
    Row("now VPs instead", R(title="VPs"), AFTER),
    Row("CFOs instead", R(title="CFOs"), AFTER),
    Row("same for Berlin", R(location="Berlin"), AFTER),
    Row("same but in insurance", R(industry="insurance"), AFTER),
    Row("what about healthcare?", R(industry="healthcare"), AFTER),
    Row("how about in Paris", R(location="Paris"), AFTER),
    Row("in London", R(location="London"), AFTER),
    Row("only at Novapay", R(company="Novapay"), AFTER),
    Row("with phones", R(hasPhone=True), AFTER),
    Row("without the phone requirement", R(), AFTER),
    Row("anywhere", R(), AFTER),
    Row("more", R(limit=100), AFTER),
    Row("show me more", R(limit=100), AFTER),
    Row("20 more", R(limit=70), AFTER),
    Row("next page", R(limit=100), AFTER),
    Row("100", R(limit=100), AFTER),
    Row("only the senior ones", R(seniority="senior"), AFTER),
    Row("now in SaaS and with emails", R(industry="saas", hasEmail=True), AFTER),
    Row("find 30 CFOs in logistics", S(title="CFOs", industry="logistics", limit=30), AFTER),
    Row("heads of product in gaming", S(title="heads of product", industry="gaming"), AFTER),
]

ACTION_ROWS = [
    Row("save them", SAVE, AFTER),
    Row("Save all", SAVE, AFTER),
    Row("save", SAVE, AFTER),
    Row("ok save those", SAVE, AFTER),
    Row("keep them", SAVE, AFTER),
    Row("add them to my leads", SAVE, AFTER),
    Row(
        "save the ones with phones",
        [("save_leads", {"searchId": "sr_1", "filter": {"hasPhone": True}})],
        AFTER,
    ),
    Row(
        "save those with emails",
        [("save_leads", {"searchId": "sr_1", "filter": {"hasEmail": True}})],
        AFTER,
    ),
    Row(
        "save only the ones with a cell number",
        [("save_leads", {"searchId": "sr_1", "filter": {"hasPhone": True}})],
        AFTER,
    ),
    Row("save them and export to csv", SAVE + EXPORT, AFTER),
    Row("save them", "nothing to save"),
    Row("export them to csv", EXPORT, AFTER),
    Row("Export to CSV", EXPORT, AFTER),
    Row("download them", EXPORT, AFTER),
    Row("can I get a spreadsheet of these?", EXPORT, AFTER),
    Row("export to csv", [("export_leads", {})]),
    Row("export my saved leads", [("export_leads", {})], AFTER),
    Row("export my saved leads with phones", [("export_leads", {"filter": {"hasPhone": True}})]),
    Row(
        "download my saved leads with emails",
        [("export_leads", {"filter": {"hasEmail": True}})],
        AFTER,
    ),
    Row("export my saved leads at Acme", [("export_leads", {"filter": {"company": "Acme"}})]),
    Row(
        "look up Jane Smith at Cloudly",
        [("lookup_profile", {"name": "Jane Smith", "company": "Cloudly"})],
    ),
    Row("lookup John Doe", [("lookup_profile", {"name": "John Doe"})]),
    Row("who is Jane Smith?", [("lookup_profile", {"name": "Jane Smith"})]),
    Row(
        "tell me about Ada Lovelace from Novapay",
        [("lookup_profile", {"name": "Ada Lovelace", "company": "Novapay"})],
    ),
    Row(
        "enrich Piotr Nowak at Ledgerly",
        [("lookup_profile", {"name": "Piotr Nowak", "company": "Ledgerly"})],
    ),
    Row(
        "Jane Smith's email at Cloudly",
        [("lookup_profile", {"name": "Jane Smith", "company": "Cloudly"})],
    ),
    Row(
        "phone number for Marta Silva at Quest Labs",
        [("lookup_profile", {"name": "Marta Silva", "company": "Quest Labs"})],
    ),
    Row(
        "look up https://www.linkedin.com/in/jane-smith-1a",
        [("lookup_profile", {"linkedin": "https://www.linkedin.com/in/jane-smith-1a"})],
    ),
]

DECLINE_ROWS = [
    Row("what's the weather?", HELP),
    Row("write me a poem", HELP),
    Row("hello", HELP),
    Row("hi there", HELP),
    Row("tell me a joke", HELP),
    Row("🙂", HELP),
    Row("thanks!", HELP),
    Row("send them an email", HELP, AFTER),
    Row("delete all my leads", HELP),
    Row("find 100", ASK),
    Row("only the ones in London", ASK),
    Row("with emails", ASK),
    Row("more", "no search to continue"),
    Row("x" * 16000, HELP),
]


# A second round, written after the parser was first done (it was then fixed
# for the misses they showed).
LATER_ROWS = [
    Row(
        "Hey, can I get 35 heads of design at e-commerce companies in Stockholm?",
        S(title="heads of design", industry="e-commerce", location="Stockholm", limit=35),
    ),
    Row(
        "need around 80 engineering managers in Berlin and Munich",
        S(title="engineering managers", location="Berlin", limit=80),
    ),
    Row("Looking for CROs at SaaS scaleups", S(title="CROs", industry="saas")),
    Row(
        "who handles finance at biotech firms in Boston",
        S(title="Head of finance", industry="biotech", location="Boston"),
    ),
    Row(
        "give me customer success managers in Dublin with cell numbers",
        S(title="customer success managers", location="Dublin", hasPhone=True),
    ),
    Row(
        "CEO + CTO of insurtech startups in Paris",
        [
            ("search_leads", {"title": "CEO", "industry": "insurance", "location": "Paris"}),
            ("search_leads", {"title": "CTO", "industry": "insurance", "location": "Paris"}),
        ],
    ),
    Row(
        "fifteen talent acquisition leads in Singapore",
        S(title="talent acquisition leads", location="Singapore", limit=15),
    ),
    Row(
        "Directors of Operations — logistics — Seattle",
        S(title="Directors of Operations", industry="logistics", location="Seattle"),
    ),
    Row(
        "any chief people officers in gaming?", S(title="chief people officers", industry="gaming")
    ),
    Row(
        "Senior software engineers at Cloudly",
        S(title="Senior software engineers", company="Cloudly"),
    ),
    Row(
        "CISOs in banking with emails and phones",
        S(title="CISOs", industry="fintech", hasPhone=True, hasEmail=True),
    ),
    Row(
        "I'd like 10 account executives from media companies in NYC",
        S(title="account executives", industry="media", location="New York", limit=10),
    ),
    Row("ops leaders at retailers", S(title="ops", industry="retail")),
    Row("a few recruiters in Tel Aviv", S(title="recruiters", location="Tel Aviv", limit=10)),
    Row(
        "controllers in manufacturing, Chicago, with phone numbers please",
        S(title="controllers", industry="manufacturing", location="Chicago", hasPhone=True),
    ),
    Row("only CFOs", R(title="CFOs"), AFTER),
    Row("ok now the same in Amsterdam", R(location="Amsterdam"), AFTER),
    Row("drop the location", R(), AFTER),
    Row("give me 25 more", R(limit=75), AFTER),
    Row("those but in healthcare", R(industry="healthcare"), AFTER),
    Row(
        "please save the ones that have emails",
        [("save_leads", {"searchId": "sr_1", "filter": {"hasEmail": True}})],
        AFTER,
    ),
    Row("send me the csv", EXPORT, AFTER),
    Row(
        "can you enrich Tomas Nowak from Quest Labs?",
        [("lookup_profile", {"name": "Tomas Nowak", "company": "Quest Labs"})],
    ),
    Row("what's Priya Sharma's phone number", [("lookup_profile", {"name": "Priya Sharma"})]),
    Row("how does this work?", HELP),
    Row("book a meeting with them", HELP, AFTER),
    Row("what can you do", HELP),
    Row("product people", S(title="product")),
    Row("VP Eng in London", S(title="VP Eng", location="London")),
    Row(
        "heads of growth at fintech cos in Berlin",
        S(title="heads of growth", industry="fintech", location="Berlin"),
    ),
]

ROWS: list[Row] = SEARCH_ROWS + REFINE_ROWS + ACTION_ROWS + DECLINE_ROWS + LATER_ROWS

# Written last, run once, never tuned against: `bench/planner_eval.py` reports
# their share apart, the closer guess of how requests nobody tried fare.
# Only the validity of their calls is tested.
UNSEEN_ROWS = [
    Row(
        "Can you grab me 45 VPs of Operations in the logistics sector?",
        S(title="VPs of Operations", industry="logistics", limit=45),
    ),
    Row("hiring managers at fintech startups", S(title="hiring managers", industry="fintech")),
    Row("I'm after marketing heads in Madrid", S(title="marketing heads", location="Madrid")),
    Row(
        "CFOs at mid-size manufacturing companies in Germany",
        S(title="CFOs", industry="manufacturing", location="Germany"),
    ),
    Row("show me 12 UX researchers", S(title="UX researchers", limit=12)),
    Row(
        "Find heads of IT in insurance with emails",
        S(title="heads of IT", industry="insurance", hasEmail=True),
    ),
    Row("get me the COO of Cartly", S(title="COO", company="Cartly")),
    Row(
        "40 SDRs in SaaS, London or Manchester",
        S(title="SDRs", industry="saas", location="London", limit=40),
    ),
    Row(
        "data analysts in Sao Paulo with phone numbers and emails",
        S(title="data analysts", location="Sao Paulo", hasPhone=True, hasEmail=True),
    ),
    Row("Who's the CMO at Pixelplay?", S(title="CMO", company="Pixelplay")),
    Row("people in charge of security at banks", S(title="Head of security", industry="fintech")),
    Row("Give me all the founders in Stockholm", S(title="founders", location="Stockholm")),
    Row("top 50 directors in retail", S(title="directors", industry="retail", limit=50)),
    Row(
        "frontend engineers, Berlin, 20", S(title="frontend engineers", location="Berlin", limit=20)
    ),
    Row("GC's at legal firms", S(title="GCs", industry="legal")),
    Row(
        "I want to reach heads of partnerships at travel companies",
        S(title="heads of partnerships", industry="travel"),
    ),
    Row(
        "machine learning engineers in Toronto",
        S(title="machine learning engineers", location="Toronto"),
    ),
    Row("chief executives in energy", S(title="chief executives", industry="energy")),
    Row(
        "need contacts for 30 procurement heads in automotive",
        S(title="procurement heads", industry="automotive", limit=30),
    ),
    Row(
        "VPs of Sales in Miami and their phone numbers",
        S(title="VPs of Sales", location="Miami", hasPhone=True),
    ),
    Row("narrow it to Paris", R(location="Paris"), AFTER),
    Row("only ones with both phone and email", R(hasPhone=True, hasEmail=True), AFTER),
    Row("switch to insurance", R(industry="insurance"), AFTER),
    Row("can you do the same for CMOs?", R(title="CMOs"), AFTER),
    Row("bump it to 150", R(limit=150), AFTER),
    Row("next 50", R(limit=100), AFTER),
    Row("exclude the ones without emails", R(hasEmail=True), AFTER),
    Row("save all of them", SAVE, AFTER),
    Row("save these to my list", SAVE, AFTER),
    Row("export the list", EXPORT, AFTER),
    Row("download everything I saved as csv", [("export_leads", {})], AFTER),
    Row("look up Hannah Weber", [("lookup_profile", {"name": "Hannah Weber"})]),
    Row(
        "find the email for Lucas Martin at Shieldly",
        [("lookup_profile", {"name": "Lucas Martin", "company": "Shieldly"})],
    ),
    Row("who are you?", HELP),
    Row("summarize this conversation", HELP),
    Row("what's the price?", HELP),
    Row("thanks, that's all", HELP),
    Row("how many leads do I have saved?", HELP),
    Row("Find me someone", ASK),
    Row("call the first one", HELP, AFTER),
]


def planned(row: Row) -> Steps | str:
    """What the planner does with the row's message: its steps, or its answer."""
    plan = plan_request(
        row.text,
        last_search_id="sr_1" if row.after else None,
        last_search=EARLIER if row.after else None,
        search_max=200,
    )
    return plan.steps if plan.text is None else plan.text


def handled(row: Row) -> bool:
    """Whether the planner does what the row expects."""
    got = planned(row)
    if isinstance(row.expect, str):
        return isinstance(got, str) and row.expect in got
    return got == row.expect


def test_the_table_covers_each_kind_of_request():
    assert len(ROWS) >= 150
    assert len({row.text for row in ROWS if not row.after}) == len([r for r in ROWS if not r.after])
    assert len(REFINE_ROWS) >= 20 and len(DECLINE_ROWS) >= 10


@pytest.mark.parametrize("row", ROWS, ids=[row.text[:50] for row in ROWS])
def test_phrasing(row: Row):
    assert planned(row) == row.expect if not isinstance(row.expect, str) else handled(row), planned(
        row
    )


@pytest.mark.parametrize("row", ROWS + UNSEEN_ROWS, ids=lambda row: row.text[:50])
def test_every_call_validates_against_the_tool_schema(row: Row):
    """The planner's calls are ones an LLM could make: they pass the same validation."""
    got = planned(row)
    for name, args in [] if isinstance(got, str) else got:
        if args == THIS_SEARCH:
            args = {"searchId": "sr_2"}  # this turn's search, filled in when it returns
        parse_arguments(name, orjson.dumps(args).decode())


# A sample through the real server: the tool calls its chat makes, with arguments.
SERVER_SAMPLE = [
    "We need 40 heads of product at gaming studios in Warsaw",
    "30 CFOs in logistics please",
    "CFOs, logistics, Chicago",
    "top 25 CMO's with phone no.",
    "who runs sales at edtech startups in Madrid?",
    "Stripe's CTO",
    "find 5 CFOs and save them and export to csv",
]


def _started(client: Any) -> list[tuple[str, dict[str, Any]]]:
    return [(t["name"], t["args"]) for t in client.log.of("chat:tool") if t["status"] == "started"]


def _reply(client: Any) -> str:
    return "".join(d["text"] for d in client.log.of("chat:delta"))


@pytest.mark.parametrize("text", SERVER_SAMPLE)
async def test_the_server_runs_the_planned_calls(server, connect, token, text):
    row = next(row for row in ROWS if row.text == text)
    client = await connect(server, token("acme", "alice"))
    done = await client.chat(text)
    assert done["stopped"] is False
    started = _started(client)
    # Save/export follow-ups get this turn's searchId, filled in by the planner.
    assert [(n, a) for n, a in started if n == "search_leads"][: len(row.expect)] == [
        (n, a)
        for n, a in row.expect
        if n == "search_leads"  # type: ignore[union-attr]
    ]
    summaries = [t.get("summary", "") for t in client.log.of("chat:tool") if t["status"] == "done"]
    if summaries[0].startswith("found 0 "):
        # Nothing found: one broader search (the same, one requirement fewer), then the answer.
        first, broader = started[0][1], started[1][1]
        assert len(started) == 2 and broader.items() < first.items()
        assert "I found no " in _reply(client) and "there are" in _reply(client)
    else:
        assert [name for name, _ in started] == [name for name, _ in row.expect]  # type: ignore[union-attr]
        assert "I found " in _reply(client)


async def test_a_follow_up_refines_the_last_search_of_the_conversation(server, connect, token):
    client = await connect(server, token("acme", "alice"))
    first = await client.chat("30 CTOs in fintech")
    conversation = first["ack"]["conversationId"]
    for text in (
        "only the ones in London",
        "just those with emails",
        "make it 10",
        "now VPs instead",
        "more",
    ):
        await client.chat(text, conversation)
    assert [args for _, args in _started(client)] == [
        {"title": "CTOs", "industry": "fintech", "limit": 30},
        {"title": "CTOs", "industry": "fintech", "limit": 30, "location": "London"},
        {
            "title": "CTOs",
            "industry": "fintech",
            "limit": 30,
            "location": "London",
            "hasEmail": True,
        },
        {
            "title": "CTOs",
            "industry": "fintech",
            "limit": 10,
            "location": "London",
            "hasEmail": True,
        },
        {
            "title": "VPs",
            "industry": "fintech",
            "limit": 10,
            "location": "London",
            "hasEmail": True,
        },
        {
            "title": "VPs",
            "industry": "fintech",
            "limit": 20,
            "location": "London",
            "hasEmail": True,
        },
    ]
    assert "Here are 10 more" in _reply(client)


async def test_a_search_that_finds_nothing_says_what_it_dropped_and_shows_the_rest(
    server, connect, token
):
    client = await connect(server, token("acme", "alice"))
    await client.chat("20 CTOs in fintech with a beard")
    assert [args for _, args in _started(client)] == [
        {"title": "CTOs", "industry": "fintech", "keywords": "beard", "limit": 20},
        {"title": "CTOs", "industry": "fintech", "limit": 20},
    ]
    reply = _reply(client)
    assert 'I found no CTOs in fintech matching "beard".' in reply
    assert 'Without the keywords "beard" there are at least 20: CTOs in fintech.' in reply
    rows = [row for b in client.log.of("leads:batch") for row in b["leads"]]
    assert len(rows) == 20 and all(row["industry"] == "fintech" for row in rows)
