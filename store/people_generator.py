"""The local people directory's content, generated deterministically.

Same seed and size, same people: person `i` is always the same person, so a
directory can be grown (`leadstream seed --people 1000000`) without changing
who is already in it. Companies carry an industry and a home city; people
work at a company, mostly in its city, with a realistic title mix (every
company has a leadership team, then VPs, heads, directors, managers and
individual contributors). About 60% have a phone, 85% an email and 90% a
LinkedIn URL. Phone numbers use reserved fictional ranges where they exist
(e.g. 555-01xx in North America).
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from leadstream.store.records import Person

SOURCE = "directory"

# (industry, weight, name stems). Fintech and SaaS are the demo's favourites.
INDUSTRIES: list[tuple[str, int, tuple[str, ...]]] = [
    ("fintech", 12, ("Pay", "Ledger", "Coin", "Fund", "Vault", "Lend", "Bank", "Mint", "Cash")),
    ("saas", 14, ("Cloud", "Stack", "Flow", "Desk", "Sync", "Base", "Grid", "Hub", "Loop")),
    ("healthcare", 9, ("Care", "Health", "Med", "Vita", "Cura", "Pulse", "Clinic", "Well")),
    ("e-commerce", 8, ("Cart", "Shop", "Market", "Basket", "Store", "Deal", "Buy")),
    ("cybersecurity", 6, ("Shield", "Guard", "Sentinel", "Lock", "Fort", "Armor", "Secure")),
    ("edtech", 5, ("Learn", "Class", "Tutor", "Study", "Skill", "Campus", "Mentor")),
    ("logistics", 6, ("Freight", "Route", "Cargo", "Ship", "Fleet", "Haul", "Dock")),
    ("manufacturing", 6, ("Forge", "Works", "Machina", "Steel", "Fab", "Mill", "Tool")),
    ("insurance", 5, ("Assure", "Cover", "Policy", "Shelter", "Trust", "Safe")),
    ("biotech", 5, ("Gene", "Bio", "Cell", "Thera", "Cyto", "Helix", "Protein")),
    ("media", 4, ("Story", "Press", "Signal", "Studio", "Frame", "Echo")),
    ("energy", 4, ("Volt", "Solar", "Grid", "Watt", "Fusion", "Spark")),
    ("real estate", 4, ("Estate", "Home", "Realty", "Nest", "Place", "Key")),
    ("retail", 4, ("Goods", "Outlet", "Corner", "Aisle", "Brand")),
    ("consulting", 4, ("Advisory", "Partners", "Insight", "Strategy", "Counsel")),
    ("telecommunications", 3, ("Tel", "Link", "Wave", "Net", "Connect", "Fiber")),
    ("gaming", 3, ("Quest", "Pixel", "Arcade", "Level", "Play")),
    ("automotive", 3, ("Motor", "Drive", "Auto", "Torque", "Wheel")),
    ("travel", 3, ("Trip", "Voyage", "Journey", "Stay", "Compass")),
    ("legal", 2, ("Lex", "Brief", "Clause", "Verdict", "Docket")),
]
INDUSTRY_NAMES = tuple(name for name, _, _ in INDUSTRIES)

NAME_ENDINGS = (
    "ly",
    "ify",
    "io",
    "wise",
    "hub",
    "labs",
    "works",
    "base",
    "nova",
    "stack",
    "sphere",
    "point",
    "path",
    "bridge",
    "scale",
    "line",
    "ware",
    "mind",
    "bit",
)
COMPANY_PREFIXES = (
    "",
    "",
    "",
    "",
    "Blue",
    "North",
    "Bright",
    "True",
    "Open",
    "Clear",
    "Swift",
    "Prime",
    "Next",
    "Red",
    "Silver",
    "Green",
    "Alpha",
    "Nova",
)
COMPANY_FORMS = ("", "", "", " Inc.", " GmbH", " Ltd", " Technologies", " Group", " Labs")

# (city, country, phone prefix, phone style, weight)
CITIES: list[tuple[str, str, str, str, int]] = [
    ("New York", "United States", "+1 212", "us", 10),
    ("San Francisco", "United States", "+1 415", "us", 9),
    ("Austin", "United States", "+1 512", "us", 5),
    ("Boston", "United States", "+1 617", "us", 5),
    ("Chicago", "United States", "+1 312", "us", 5),
    ("Seattle", "United States", "+1 206", "us", 4),
    ("Miami", "United States", "+1 305", "us", 3),
    ("Toronto", "Canada", "+1 416", "us", 4),
    ("London", "United Kingdom", "+44 20 7946", "uk", 9),
    ("Manchester", "United Kingdom", "+44 161 496", "uk", 2),
    ("Berlin", "Germany", "+49 30", "eu", 6),
    ("Munich", "Germany", "+49 89", "eu", 3),
    ("Paris", "France", "+33 1", "eu", 5),
    ("Amsterdam", "Netherlands", "+31 20", "eu", 4),
    ("Dublin", "Ireland", "+353 1", "eu", 3),
    ("Stockholm", "Sweden", "+46 8", "eu", 3),
    ("Madrid", "Spain", "+34 91", "eu", 3),
    ("Zurich", "Switzerland", "+41 44", "eu", 2),
    ("Warsaw", "Poland", "+48 22", "eu", 2),
    ("Tel Aviv", "Israel", "+972 3", "eu", 2),
    ("Singapore", "Singapore", "+65 6", "eu", 3),
    ("Sydney", "Australia", "+61 2", "eu", 3),
    ("Bangalore", "India", "+91 80", "eu", 4),
    ("Sao Paulo", "Brazil", "+55 11", "eu", 3),
    ("Tokyo", "Japan", "+81 3", "eu", 2),
]

FIRST_NAMES = [
    "James",
    "Mary",
    "Robert",
    "Patricia",
    "John",
    "Jennifer",
    "Michael",
    "Linda",
    "David",
    "Elizabeth",
    "William",
    "Barbara",
    "Richard",
    "Susan",
    "Joseph",
    "Jessica",
    "Thomas",
    "Sarah",
    "Charles",
    "Karen",
    "Daniel",
    "Lisa",
    "Matthew",
    "Nancy",
    "Anthony",
    "Sandra",
    "Mark",
    "Ashley",
    "Steven",
    "Emily",
    "Andrew",
    "Michelle",
    "Joshua",
    "Amanda",
    "Kevin",
    "Melissa",
    "Brian",
    "Rebecca",
    "Ethan",
    "Laura",
    "Noah",
    "Emma",
    "Liam",
    "Olivia",
    "Lucas",
    "Sophia",
    "Mateo",
    "Isabella",
    "Leon",
    "Mia",
    "Felix",
    "Hannah",
    "Luca",
    "Giulia",
    "Hugo",
    "Chloe",
    "Lars",
    "Ingrid",
    "Sven",
    "Astrid",
    "Pablo",
    "Lucia",
    "Diego",
    "Valentina",
    "Rafael",
    "Camila",
    "Arjun",
    "Priya",
    "Rohan",
    "Ananya",
    "Vikram",
    "Aisha",
    "Omar",
    "Fatima",
    "Yusuf",
    "Leila",
    "Wei",
    "Mei",
    "Hiroshi",
    "Yuki",
    "Kenji",
    "Sakura",
    "Min-jun",
    "Ji-woo",
    "Chen",
    "Lin",
    "Kwame",
    "Amara",
    "Tunde",
    "Zainab",
    "Piotr",
    "Zofia",
    "Jakub",
    "Katarzyna",
    "Noa",
    "Yael",
    "Daniela",
    "Gabriel",
    "Marta",
    "Tomas",
    "Elena",
    "Ivan",
    "Nadia",
    "Oscar",
    "Freya",
    "Aurelien",
    "Margaux",
    "Nils",
    "Elin",
]
LAST_NAMES = [
    "Smith",
    "Johnson",
    "Williams",
    "Brown",
    "Jones",
    "Garcia",
    "Miller",
    "Davis",
    "Rodriguez",
    "Martinez",
    "Hernandez",
    "Lopez",
    "Wilson",
    "Anderson",
    "Thomas",
    "Taylor",
    "Moore",
    "Jackson",
    "Martin",
    "Lee",
    "Thompson",
    "White",
    "Harris",
    "Clark",
    "Lewis",
    "Walker",
    "Hall",
    "Young",
    "King",
    "Wright",
    "Scott",
    "Green",
    "Baker",
    "Adams",
    "Nelson",
    "Carter",
    "Mitchell",
    "Roberts",
    "Muller",
    "Schmidt",
    "Schneider",
    "Fischer",
    "Weber",
    "Wagner",
    "Becker",
    "Hoffmann",
    "Dubois",
    "Laurent",
    "Bernard",
    "Moreau",
    "Rossi",
    "Russo",
    "Bianchi",
    "Romano",
    "Silva",
    "Santos",
    "Oliveira",
    "Costa",
    "Pereira",
    "Nilsson",
    "Larsson",
    "Andersson",
    "Johansson",
    "Kowalski",
    "Nowak",
    "Wisniewski",
    "Patel",
    "Sharma",
    "Gupta",
    "Singh",
    "Kumar",
    "Reddy",
    "Khan",
    "Ahmed",
    "Hassan",
    "Ali",
    "Cohen",
    "Levi",
    "Mizrahi",
    "Wang",
    "Li",
    "Zhang",
    "Liu",
    "Chen",
    "Yang",
    "Tanaka",
    "Suzuki",
    "Sato",
    "Kim",
    "Park",
    "Choi",
    "Nguyen",
    "Tran",
    "Okafor",
    "Mensah",
    "Adeyemi",
    "Murphy",
    "Kelly",
    "Byrne",
    "Walsh",
    "Jansen",
    "DeVries",
    "Bakker",
]

# (title, seniority, department): one leadership team per company, in order of
# how likely a company is to have the role.
LEADERSHIP: list[tuple[tuple[str, ...], str, str, float]] = [
    (("Chief Executive Officer", "CEO", "CEO & Co-Founder"), "c_level", "executive", 0.98),
    (("Chief Technology Officer", "CTO", "CTO & Co-Founder"), "c_level", "engineering", 0.93),
    (("Chief Financial Officer", "CFO"), "c_level", "finance", 0.75),
    (("Chief Operating Officer", "COO"), "c_level", "operations", 0.6),
    (("Chief Marketing Officer", "CMO"), "c_level", "marketing", 0.55),
    (("Chief Revenue Officer", "CRO"), "c_level", "sales", 0.4),
    (("Chief Product Officer", "CPO"), "c_level", "product", 0.4),
    (("Chief Information Security Officer", "CISO"), "c_level", "security", 0.25),
    (("Chief Data Officer",), "c_level", "data", 0.15),
    (("Chief Human Resources Officer", "CHRO"), "c_level", "hr", 0.2),
]
DEPARTMENTS: dict[str, tuple[str, ...]] = {
    "engineering": ("Engineering", "Platform", "Infrastructure", "Software Engineering"),
    "sales": ("Sales", "Enterprise Sales", "Business Development", "Partnerships"),
    "marketing": ("Marketing", "Growth", "Demand Generation", "Brand"),
    "product": ("Product", "Product Management", "Design"),
    "finance": ("Finance", "Accounting", "FP&A"),
    "operations": ("Operations", "Customer Success", "Supply Chain"),
    "hr": ("People", "Talent Acquisition", "Human Resources"),
    "data": ("Data", "Data Science", "Analytics"),
    "security": ("Security", "Information Security"),
}
DEPARTMENT_NAMES = tuple(DEPARTMENTS)
# (pattern, seniority, weight) for everyone below the leadership team.
RANKS: list[tuple[str, str, int]] = [
    ("VP of {d}", "vp", 5),
    ("Vice President, {d}", "vp", 2),
    ("SVP {d}", "vp", 1),
    ("Head of {d}", "head", 6),
    ("Director of {d}", "director", 8),
    ("{d} Director", "director", 3),
    ("{d} Manager", "manager", 14),
    ("Senior {d} Manager", "manager", 5),
    ("{d} Lead", "manager", 6),
]
IC_TITLES: dict[str, tuple[str, ...]] = {
    "engineering": (
        "Software Engineer",
        "Senior Software Engineer",
        "Staff Engineer",
        "DevOps Engineer",
        "Backend Engineer",
        "Frontend Engineer",
    ),
    "sales": (
        "Account Executive",
        "Senior Account Executive",
        "Sales Development Representative",
        "Business Development Representative",
        "Account Manager",
    ),
    "marketing": (
        "Marketing Specialist",
        "Content Marketer",
        "Growth Marketer",
        "Product Marketing Manager",
        "SEO Specialist",
    ),
    "product": ("Product Manager", "Senior Product Manager", "Product Designer", "UX Researcher"),
    "finance": ("Financial Analyst", "Controller", "Accountant"),
    "operations": ("Operations Analyst", "Customer Success Manager", "Project Manager"),
    "hr": ("Recruiter", "HR Business Partner", "People Operations Specialist"),
    "data": ("Data Scientist", "Data Engineer", "Data Analyst", "Machine Learning Engineer"),
    "security": ("Security Engineer", "Security Analyst"),
}
SENIOR_IC = "senior"


@dataclass(frozen=True, slots=True)
class Company:
    name: str
    domain: str
    industry: str
    city: str
    country: str
    phone_prefix: str
    phone_style: str
    size: int


def _weighted(rng: random.Random, items: list[Any], weights: list[int]) -> Any:
    return rng.choices(items, weights=weights, k=1)[0]


class PeopleGenerator:
    """Yields the directory's people in a fixed order for a given seed.

    :param seed: the random seed; the same seed always yields the same people.
    """

    def __init__(self, seed: int = 42) -> None:
        self.seed = seed
        self._industry_weights = [w for _, w, _ in INDUSTRIES]
        self._city_weights = [c[4] for c in CITIES]
        self._rank_weights = [w for _, _, w in RANKS]

    def people(self, count: int) -> Iterator[Person]:
        """The first `count` people of the directory."""
        rng = random.Random(self.seed)
        produced = 0
        company_index = 0
        while produced < count:
            company = self._company(rng, company_index)
            company_index += 1
            for role in range(company.size):
                if produced >= count:
                    return
                yield self._person(rng, company, role, produced)
                produced += 1

    def _company(self, rng: random.Random, index: int) -> Company:
        industry, _, stems = _weighted(rng, INDUSTRIES, self._industry_weights)
        stem = rng.choice(stems)
        base = rng.choice(COMPANY_PREFIXES) + stem + rng.choice(NAME_ENDINGS)
        # Names may repeat across cities, as in life; the domain stays unique.
        name = base + rng.choice(COMPANY_FORMS)
        domain = f"{base.lower()}{index:x}.example"
        city, country, prefix, style, _ = _weighted(rng, CITIES, self._city_weights)
        size = max(3, int(rng.paretovariate(1.6) * 12))
        return Company(name, domain, industry, city, country, prefix, style, min(size, 400))

    def _person(self, rng: random.Random, company: Company, role: int, index: int) -> Person:
        first, last = rng.choice(FIRST_NAMES), rng.choice(LAST_NAMES)
        title, seniority, department = self._title(rng, role)
        if rng.random() < 0.85:
            city, country = company.city, company.country
            phone_prefix, phone_style = company.phone_prefix, company.phone_style
        else:
            city, country, phone_prefix, phone_style, _ = _weighted(rng, CITIES, self._city_weights)
        handle = f"{first}.{last}".lower().replace("-", "")
        emails: tuple[str, ...] = ()
        if rng.random() < 0.85:
            emails = (f"{handle}@{company.domain}",)
            if rng.random() < 0.15:
                emails += (f"{first[0].lower()}{last.lower()}@mail.example",)
        phones: tuple[str, ...] = ()
        if rng.random() < 0.60:
            phones = (_phone(rng, phone_prefix, phone_style),)
            if rng.random() < 0.1:
                phones += (_phone(rng, phone_prefix, phone_style),)
        linkedin = None
        if rng.random() < 0.90:
            linkedin = f"https://www.linkedin.com/in/{handle.replace('.', '-')}-{index:x}"
        return Person(
            person_id=f"dir{index:08d}",
            source=SOURCE,
            name=f"{first} {last}",
            title=title,
            company=company.name,
            industry=company.industry,
            location=f"{city}, {country}",
            emails=emails,
            phones=phones,
            linkedin=linkedin,
            seniority=seniority,
            department=department,
        )

    def _title(self, rng: random.Random, role: int) -> tuple[str, str, str]:
        if role < len(LEADERSHIP):
            titles, seniority, department, likelihood = LEADERSHIP[role]
            if rng.random() < likelihood:
                return rng.choice(titles), seniority, department
        department = rng.choice(DEPARTMENT_NAMES)
        if rng.random() < 0.45:
            pattern, seniority, _ = _weighted(rng, RANKS, self._rank_weights)
            return pattern.format(d=rng.choice(DEPARTMENTS[department])), seniority, department
        title = rng.choice(IC_TITLES[department])
        seniority = SENIOR_IC if title.startswith(("Senior", "Staff")) else "entry"
        return title, seniority, department


def _phone(rng: random.Random, prefix: str, style: str) -> str:
    if style == "us":
        return f"{prefix} 555 01{rng.randrange(100):02d}"
    if style == "uk":
        return f"{prefix} {rng.randrange(1000):03d}"
    return f"{prefix} {rng.randrange(1000, 10000)} {rng.randrange(1000, 10000)}"
