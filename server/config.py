"""Settings: every knob of the server, read once from the environment.

`Settings.from_env()` is the only place that reads `os.environ`; everything
else receives the `Settings` object (or the parts it needs) as an argument.
Variable names and defaults are those of PROTOCOL.md and the README.
"""

from __future__ import annotations

import importlib.util
import os
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path

from leadstream.agent.tokens import PriceTable
from leadstream.server.ratelimit.policy import (
    Limit,
    RateLimitSettings,
    Tier,
    default_tiers,
    parse_limits,
)

# HS256 keys shorter than the hash (32 bytes) can be brute-forced offline from one token.
MIN_SECRET_BYTES = 32


class ConfigError(ValueError):
    """A configuration value that cannot be used; the message names the variable."""


@dataclass(frozen=True)
class Settings:
    """Typed server configuration. Defaults are the embedded, zero-setup ones."""

    store_url: str = "sqlite:///./data/leadstream.db"
    data_dir: Path = Path("./data")
    redis_url: str | None = None
    secret: str = ""
    auth_mode: str = "token"  # "token" or "dev"
    token_ttl_s: int = 7 * 24 * 3600
    token_leeway_s: int = 1
    openai_api_key: str | None = None
    openai_base_url: str | None = None
    model: str = "gpt-4o-mini"
    rocketreach_api_key: str | None = None
    search_max: int = 200
    search_default: int = 100
    search_batch_size: int = 25
    search_ttl_s: int = 24 * 3600
    people: int = 100_000
    people_seed: int = 42
    max_text: int = 16_000
    max_packet: int = 1_000_000
    max_upload: int = 50 * 1024 * 1024
    agent_max_steps: int = 6
    delta_flush_ms: int = 40
    delta_flush_chars: int = 256
    export_url_ttl_s: int = 3600
    job_concurrency: int = 2
    job_max_attempts: int = 3
    job_visibility_s: int = 30
    serve_workers: bool = True
    export_page: int = 1000
    changes_retention_s: int = 7 * 24 * 3600
    changes_page: int = 1000
    cors_origins: tuple[str, ...] = field(default_factory=tuple)
    model_timeout_s: int = 60
    model_max_retries: int = 3
    max_prompt_tokens: int = 100_000
    prices: str = ""
    daily_budget_usd: float | None = None
    daily_budget_tokens: int | None = None
    rate_limits: RateLimitSettings = field(default_factory=RateLimitSettings)
    org_tiers: Mapping[str, str] = field(default_factory=dict)
    slow_query_ms: int = 500
    rocketreach_base_url: str = "https://api.rocketreach.co/api/v2"
    rocketreach_search_path: str = "/person/search"
    rocketreach_requests_per_s: int = 10
    rocketreach_concurrency: int = 8
    events_per_s: int = 20
    events_burst: int = 40
    connections_per_user: int = 20
    # permessage-deflate costs ~110 KB and a compression per socket and frame (README).
    ws_compression: bool = False
    # Bounds on what one user can spend (README "Configuration", PROTOCOL.md protocol 2).
    max_json: int = 256 * 1024
    page_cache_bytes: int = 32 * 1024 * 1024
    page_cache_ttl_s: int = 60
    query_max_terms: int = 8
    query_min_prefix: int = 2
    query_time_ms: int = 250
    planner_max_chars: int = 2000
    replies_per_user: int = 2
    replies_per_org: int = 10
    reply_reserve_tokens: int = 8000
    daily_credits: int | None = 1000
    connections_per_ip: int = 500
    connect_timeout_s: int = 5
    csv_max_line: int = 64 * 1024
    import_progress_ms: int = 250
    jobs_per_user: int = 3
    export_quota_bytes: int = 256 * 1024 * 1024
    search_rows_quota: int = 20_000
    usage_max_days: int = 366  # days one GET /api/usage may span
    # Garbage collector (server/gc_tuning.py): thresholds, freeze after start-up, pause log.
    gc_thresholds: tuple[int, int, int] | None = (10_000, 5, 100)
    gc_freeze: bool = True
    gc_log_ms: int = 100
    # `serve`'s event loop: "uvloop" (libuv, transports in C) or "asyncio" (the standard one).
    event_loop: str = "uvloop"
    # Logging (server/logs.py): level name, and `json`, `text` or "" (JSON unless a terminal).
    log_level: str = "INFO"
    log_format: str = ""
    # `leadstream chat`'s token when no --token is given (LEADSTREAM_TOKEN).
    client_token: str | None = None

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        """Build settings from environment variables (PROTOCOL.md names them)."""
        env = os.environ if env is None else env
        data_dir = Path(env.get("LEADSTREAM_DATA_DIR") or "./data")
        auth_mode = env.get("LEADSTREAM_AUTH") or "token"
        if auth_mode not in ("token", "dev"):
            raise ConfigError(f"LEADSTREAM_AUTH must be 'token' or 'dev', not {auth_mode!r}")
        store_url = env.get("LEADSTREAM_STORE") or "sqlite:///./data/leadstream.db"
        if not store_url.startswith(("sqlite:///", "mongodb://", "mongodb+srv://")):
            raise ConfigError(
                f"LEADSTREAM_STORE must be sqlite:///PATH or a mongodb:// URI, not {store_url!r}"
            )
        settings = cls(
            store_url=store_url,
            data_dir=data_dir,
            redis_url=env.get("REDIS_URL") or None,
            secret=env.get("LEADSTREAM_SECRET") or "",
            auth_mode=auth_mode,
            token_ttl_s=_int(env, "LEADSTREAM_TOKEN_TTL", cls.token_ttl_s, low=1),
            openai_api_key=env.get("OPENAI_API_KEY") or None,
            openai_base_url=env.get("OPENAI_BASE_URL") or None,
            model=env.get("LEADSTREAM_MODEL") or cls.model,
            rocketreach_api_key=env.get("ROCKETREACH_API_KEY") or None,
            search_max=_int(env, "LEADSTREAM_SEARCH_MAX", cls.search_max, low=1),
            search_default=_int(env, "LEADSTREAM_SEARCH_DEFAULT", cls.search_default, low=1),
            people=_int(env, "LEADSTREAM_PEOPLE", cls.people, low=0),
            max_text=_int(env, "LEADSTREAM_MAX_TEXT", cls.max_text, low=1),
            agent_max_steps=_int(env, "LEADSTREAM_AGENT_STEPS", cls.agent_max_steps, low=1),
            max_packet=_int(env, "LEADSTREAM_MAX_PACKET", cls.max_packet, low=1024),
            max_upload=_int(env, "LEADSTREAM_MAX_UPLOAD", cls.max_upload, low=1024),
            job_concurrency=_int(env, "LEADSTREAM_JOB_CONCURRENCY", cls.job_concurrency, low=1),
            job_max_attempts=_int(env, "LEADSTREAM_JOB_ATTEMPTS", cls.job_max_attempts, low=1),
            job_visibility_s=_int(env, "LEADSTREAM_JOB_VISIBILITY", cls.job_visibility_s, low=1),
            serve_workers=(env.get("LEADSTREAM_SERVE_WORKERS") or "1") not in ("0", "false", "no"),
            export_page=_int(env, "LEADSTREAM_EXPORT_PAGE", cls.export_page, low=1),
            changes_retention_s=_int(
                env, "LEADSTREAM_CHANGES_RETENTION", cls.changes_retention_s, low=1
            ),
            model_timeout_s=_int(env, "LEADSTREAM_MODEL_TIMEOUT", cls.model_timeout_s, low=1),
            model_max_retries=_int(env, "LEADSTREAM_MODEL_RETRIES", cls.model_max_retries, low=0),
            max_prompt_tokens=_int(
                env, "LEADSTREAM_MAX_PROMPT_TOKENS", cls.max_prompt_tokens, low=1000
            ),
            prices=env.get("LEADSTREAM_PRICES", ""),
            daily_budget_usd=_float_or_none(env, "LEADSTREAM_DAILY_BUDGET_USD"),
            daily_budget_tokens=(
                _int(env, "LEADSTREAM_DAILY_BUDGET_TOKENS", 0, low=1)
                if env.get("LEADSTREAM_DAILY_BUDGET_TOKENS")
                else None
            ),
            rate_limits=_rate_limits(env),
            org_tiers=_org_tiers(env.get("LEADSTREAM_ORG_TIERS", "")),
            slow_query_ms=_int(env, "LEADSTREAM_SLOW_QUERY_MS", cls.slow_query_ms, low=1),
            rocketreach_base_url=env.get("ROCKETREACH_BASE_URL") or cls.rocketreach_base_url,
            rocketreach_search_path=env.get("ROCKETREACH_SEARCH_PATH")
            or cls.rocketreach_search_path,
            rocketreach_requests_per_s=_int(
                env, "ROCKETREACH_REQUESTS_PER_S", cls.rocketreach_requests_per_s, low=1
            ),
            rocketreach_concurrency=_int(
                env, "ROCKETREACH_CONCURRENCY", cls.rocketreach_concurrency, low=1
            ),
            events_per_s=_int(env, "LEADSTREAM_EVENTS_PER_S", cls.events_per_s, low=1),
            events_burst=_int(env, "LEADSTREAM_EVENTS_BURST", cls.events_burst, low=1),
            connections_per_user=_int(
                env, "LEADSTREAM_CONNECTIONS_PER_USER", cls.connections_per_user, low=1
            ),
            ws_compression=(env.get("LEADSTREAM_WS_COMPRESSION") or "0")
            not in ("0", "false", "no"),
            max_json=_int(env, "LEADSTREAM_MAX_JSON", cls.max_json, low=1024),
            page_cache_bytes=_int(env, "LEADSTREAM_PAGE_CACHE_BYTES", cls.page_cache_bytes, low=0),
            page_cache_ttl_s=_int(env, "LEADSTREAM_PAGE_CACHE_TTL", cls.page_cache_ttl_s, low=1),
            query_max_terms=_int(env, "LEADSTREAM_QUERY_MAX_TERMS", cls.query_max_terms, low=1),
            query_min_prefix=_int(env, "LEADSTREAM_QUERY_MIN_PREFIX", cls.query_min_prefix, low=1),
            query_time_ms=_int(env, "LEADSTREAM_QUERY_TIME_MS", cls.query_time_ms, low=10),
            planner_max_chars=_int(
                env, "LEADSTREAM_PLANNER_MAX_CHARS", cls.planner_max_chars, low=100
            ),
            replies_per_user=_int(env, "LEADSTREAM_REPLIES_PER_USER", cls.replies_per_user, low=1),
            replies_per_org=_int(env, "LEADSTREAM_REPLIES_PER_ORG", cls.replies_per_org, low=1),
            reply_reserve_tokens=_int(
                env, "LEADSTREAM_REPLY_RESERVE_TOKENS", cls.reply_reserve_tokens, low=1
            ),
            daily_credits=_int_or_none(env, "LEADSTREAM_DAILY_CREDITS", cls.daily_credits),
            connections_per_ip=_int(
                env, "LEADSTREAM_CONNECTIONS_PER_IP", cls.connections_per_ip, low=1
            ),
            connect_timeout_s=_int(env, "LEADSTREAM_CONNECT_TIMEOUT", cls.connect_timeout_s, low=1),
            event_loop=_event_loop(env.get("LEADSTREAM_EVENT_LOOP") or None),
            log_level=env.get("LEADSTREAM_LOG_LEVEL") or cls.log_level,
            log_format=env.get("LEADSTREAM_LOG_FORMAT") or "",
            client_token=env.get("LEADSTREAM_TOKEN") or None,
            csv_max_line=_int(env, "LEADSTREAM_CSV_MAX_LINE", cls.csv_max_line, low=1024),
            import_progress_ms=_int(
                env, "LEADSTREAM_IMPORT_PROGRESS_MS", cls.import_progress_ms, low=0
            ),
            jobs_per_user=_int(env, "LEADSTREAM_JOBS_PER_USER", cls.jobs_per_user, low=1),
            export_quota_bytes=_int(
                env, "LEADSTREAM_EXPORT_QUOTA_BYTES", cls.export_quota_bytes, low=1024
            ),
            search_rows_quota=_int(
                env, "LEADSTREAM_SEARCH_ROWS_QUOTA", cls.search_rows_quota, low=1
            ),
            usage_max_days=_int(env, "LEADSTREAM_USAGE_MAX_DAYS", cls.usage_max_days, low=1),
            cors_origins=tuple(
                o.strip() for o in env.get("LEADSTREAM_CORS_ORIGINS", "").split(",") if o.strip()
            ),
            gc_thresholds=_gc_thresholds(env.get("LEADSTREAM_GC_THRESHOLDS"), cls.gc_thresholds),
            gc_freeze=(env.get("LEADSTREAM_GC_FREEZE") or "1") not in ("0", "false", "no"),
            gc_log_ms=_int(env, "LEADSTREAM_GC_LOG_MS", cls.gc_log_ms, low=0),
        )
        unknown = set(settings.org_tiers.values()) - set(settings.rate_limits.tiers)
        if unknown:
            raise ConfigError(f"LEADSTREAM_ORG_TIERS names unknown tiers: {sorted(unknown)}")
        try:
            PriceTable.from_spec(settings.prices)
        except ValueError as exc:
            raise ConfigError(f"LEADSTREAM_PRICES: {exc}") from None
        if settings.secret and len(settings.secret.encode()) < MIN_SECRET_BYTES:
            raise ConfigError(
                f"LEADSTREAM_SECRET must be at least {MIN_SECRET_BYTES} bytes "
                "(e.g. `python -c 'import secrets; print(secrets.token_urlsafe(48))'`)"
            )
        if settings.search_default > settings.search_max:
            raise ConfigError("LEADSTREAM_SEARCH_DEFAULT must not exceed LEADSTREAM_SEARCH_MAX")
        return settings

    def with_secret(self) -> Settings:
        """Return settings whose `secret` is set: the configured one, or one kept
        in `data_dir/secret`, generated on first run."""
        if self.secret:
            return self
        path = self.data_dir / "secret"
        if not path.exists():
            make_private_dir(self.data_dir)
            # O_EXCL: two processes starting together keep the same secret.
            try:
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            except FileExistsError:
                pass
            else:
                with os.fdopen(fd, "w") as f:
                    f.write(secrets.token_urlsafe(48))
        secret = path.read_text().strip()
        if len(secret.encode()) < MIN_SECRET_BYTES:
            raise ConfigError(
                f"{path} holds a secret shorter than {MIN_SECRET_BYTES} bytes; "
                "delete it (a new one is generated) or set LEADSTREAM_SECRET"
            )
        return replace(self, secret=secret)


def make_private_dir(path: Path) -> None:
    """Create `path` (and parents) readable by its owner only: it holds every
    tenant's leads, the signing secret, exports and uploads."""
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    if path.stat().st_mode & 0o077:
        path.chmod(0o700)


def _float_or_none(env: Mapping[str, str], name: str) -> float | None:
    raw = env.get(name)
    if not raw:
        return None
    try:
        value = float(raw)
    except ValueError:
        raise ConfigError(f"{name} must be a number, not {raw!r}") from None
    if value < 0:
        raise ConfigError(f"{name} must not be negative")
    return value


def _int_or_none(env: Mapping[str, str], name: str, default: int | None) -> int | None:
    """An optional limit: unset is `default`, `0` or `none` means no limit."""
    raw = (env.get(name) or "").strip().lower()
    if not raw:
        return default
    if raw in ("0", "none", "off"):
        return None
    return _int(env, name, 0, low=1)


def _gc_thresholds(
    raw: str | None, default: tuple[int, int, int] | None
) -> tuple[int, int, int] | None:
    """`10000,5,100` -> (10000, 5, 100); `python` keeps Python's own (700, 10, 10)."""
    raw = (raw or "").strip().lower()
    if not raw:
        return default
    if raw == "python":
        return None
    try:
        first, second, third = (int(part) for part in raw.split(","))
    except ValueError:
        raise ConfigError(
            f"LEADSTREAM_GC_THRESHOLDS must be three integers like 10000,5,100 "
            f"(or 'python'), not {raw!r}"
        ) from None
    if first < 1 or second < 1 or third < 1:
        raise ConfigError("LEADSTREAM_GC_THRESHOLDS values must be at least 1")
    return first, second, third


def _rate_limits(env: Mapping[str, str]) -> RateLimitSettings:
    """`LEADSTREAM_RATE_LIMITS` (on|off), `LEADSTREAM_RATE_DEFAULT_TIER`,
    `LEADSTREAM_RATE_{FREE,PRO,ENTERPRISE}_{USER,ORG,IP}`, `LEADSTREAM_RATE_ANONYMOUS_IP`
    and `LEADSTREAM_RATE_HANDSHAKE_IP` as limit lists (`20/1s,100/10s`),
    `LEADSTREAM_TRUSTED_PROXY_HOPS`, `LEADSTREAM_RATE_BACKEND_TIMEOUT_MS`."""
    switch = (env.get("LEADSTREAM_RATE_LIMITS") or "on").lower()
    if switch not in ("on", "off"):
        raise ConfigError(f"LEADSTREAM_RATE_LIMITS must be 'on' or 'off', not {switch!r}")
    tiers = {
        name: Tier(
            name,
            user=_limits(env, f"LEADSTREAM_RATE_{name.upper()}_USER", tier.user),
            org=_limits(env, f"LEADSTREAM_RATE_{name.upper()}_ORG", tier.org),
            ip=_limits(env, f"LEADSTREAM_RATE_{name.upper()}_IP", tier.ip),
        )
        for name, tier in default_tiers().items()
    }
    timeout_ms = _int(env, "LEADSTREAM_RATE_BACKEND_TIMEOUT_MS", 250, low=0)
    try:
        return RateLimitSettings(
            enabled=switch == "on",
            tiers=tiers,
            default_tier=env.get("LEADSTREAM_RATE_DEFAULT_TIER") or "free",
            anonymous_ip=_limits(
                env, "LEADSTREAM_RATE_ANONYMOUS_IP", RateLimitSettings.anonymous_ip
            ),
            handshake_ip=_limits(
                env, "LEADSTREAM_RATE_HANDSHAKE_IP", RateLimitSettings.handshake_ip
            ),
            trusted_proxy_hops=_int(env, "LEADSTREAM_TRUSTED_PROXY_HOPS", 0, low=0),
            backend_timeout_s=max(timeout_ms, 1) / 1000,
        )
    except ValueError as exc:  # the default tier is not one of the tiers
        raise ConfigError(f"LEADSTREAM_RATE_DEFAULT_TIER: {exc}") from None


def _limits(env: Mapping[str, str], name: str, default: tuple[Limit, ...]) -> tuple[Limit, ...]:
    """A limit list like `20/1s,100/10s` (see `parse_limits`); unset is `default`."""
    raw = env.get(name)
    if not raw:
        return default
    try:
        return parse_limits(raw)
    except ValueError as exc:
        raise ConfigError(f"{name}: {exc}") from None


def _org_tiers(raw: str) -> dict[str, str]:
    """`acme=pro,globex=enterprise` -> {"acme": "pro", "globex": "enterprise"}."""
    tiers = {}
    for part in raw.split(","):
        if not part.strip():
            continue
        org, sep, tier = part.partition("=")
        if not sep or not org.strip() or not tier.strip():
            raise ConfigError(f"LEADSTREAM_ORG_TIERS: {part!r} is not org=tier")
        tiers[org.strip()] = tier.strip()
    return tiers


def _event_loop(name: str | None) -> str:
    """LEADSTREAM_EVENT_LOOP; unset: uvloop where it is installed (it is not on Windows)."""
    installed = importlib.util.find_spec("uvloop") is not None
    if name is None:
        return "uvloop" if installed else "asyncio"
    if name not in ("uvloop", "asyncio"):
        raise ConfigError(f"LEADSTREAM_EVENT_LOOP must be 'uvloop' or 'asyncio', not {name!r}")
    if name == "uvloop" and not installed:
        raise ConfigError(
            "LEADSTREAM_EVENT_LOOP=uvloop but uvloop is not installed "
            "(pip install uvloop, or set LEADSTREAM_EVENT_LOOP=asyncio)"
        )
    return name


def _int(env: Mapping[str, str], name: str, default: int, *, low: int) -> int:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw.replace("_", ""))
    except ValueError:
        raise ConfigError(f"{name} must be an integer, not {raw!r}") from None
    if value < low:
        raise ConfigError(f"{name} must be at least {low}, not {value}")
    return value
