"""The shared retry and error vocabulary: `Backoff` delays stay in their
jittered bounds, `TokenBucket` refuses past its burst and while held, and a
pydantic validation error becomes the same field messages for every layer."""

from __future__ import annotations

import pytest
from pydantic import BaseModel, ValidationError

from leadstream.errors import MAX_FIELD_ERRORS, LeadstreamError, field_errors, field_summary
from leadstream.pacing import Backoff, TokenBucket
from leadstream.realtime.acks import EventError
from leadstream.server.auth import AuthError
from leadstream.server.http.errors import ApiError, invalid_fields
from leadstream.server.jobs.queue import JobFailed, JobRefused
from leadstream.store.errors import QueryTooBroad


def test_backoff_doubles_up_to_its_cap_with_jitter_between_half_and_all():
    backoff = Backoff(attempts=8, base_delay_s=0.5, max_delay_s=3.0)
    for tries, ceiling in ((1, 0.5), (2, 1.0), (3, 2.0), (4, 3.0), (7, 3.0)):
        delays = {backoff.delay(tries) for _ in range(200)}
        assert all(ceiling / 2 <= d <= ceiling for d in delays), (tries, min(delays), max(delays))
        assert len(delays) > 1  # jittered, not one fixed value


def test_token_bucket_refuses_past_its_burst_and_while_held():
    bucket = TokenBucket(0.001, burst=3)  # refills once in 1,000 s: none during the test
    assert [bucket.try_take() for _ in range(4)] == [True, True, True, False]
    fresh = TokenBucket(0.001, burst=2)
    fresh.hold(60)
    assert not fresh.try_take()  # tokens left, but held
    with pytest.raises(ValueError):
        TokenBucket(0, burst=1)


class Lead(BaseModel):
    name: str
    emails: list[int]


def test_validation_errors_become_the_same_field_messages_everywhere():
    with pytest.raises(ValidationError) as caught:
        Lead.model_validate({"emails": ["x"] * 100})
    fields = field_errors(caught.value)
    assert len(fields) == MAX_FIELD_ERRORS  # 101 errors, the first few named
    assert fields[0] == {"field": "name", "message": "Field required"}
    assert fields[1]["field"] == "emails.0"
    assert field_summary(fields[:2], whole="body").startswith("name: Field required; emails.0: ")
    api = invalid_fields(caught.value)
    assert api.body() == {
        "error": {
            "code": "invalid_fields",
            "message": field_summary(fields, whole="body"),
            "details": {"fields": fields},
        }
    }
    with pytest.raises(ValidationError) as whole:
        Lead.model_validate([])
    assert field_summary(field_errors(whole.value), whole="payload").startswith("payload: ")


def test_every_refusal_carries_a_code_and_a_message():
    refusals = [
        ApiError(404, "not_found", "no such lead"),
        EventError("text_empty", "text must not be blank"),
        JobFailed("unknown_search", "that search is unknown or expired"),
        JobRefused(429, "too_many_jobs", "wait", {"limit": 3}),
        AuthError("the token has expired"),
        QueryTooBroad("q has 40 different words; use at most 32"),
    ]
    for refusal in refusals:
        assert isinstance(refusal, LeadstreamError)
        assert str(refusal) == refusal.message and refusal.code
    assert AuthError("x").code == "unauthorized"
    assert QueryTooBroad("x").code == QueryTooBroad.code == "query_too_broad"
    assert isinstance(QueryTooBroad("x"), ValueError)
    assert JobRefused(429, "too_many_jobs", "wait", {"limit": 3}).to_wire() == {
        "code": "too_many_jobs",
        "message": "wait",
        "details": {"limit": 3},
    }
    assert ApiError(404, "not_found", "no such lead").body() == {
        "error": {"code": "not_found", "message": "no such lead"}
    }
