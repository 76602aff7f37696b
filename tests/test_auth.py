"""Tokens: no token, a forged one, an expired one are refused, on sockets and REST."""

from __future__ import annotations

import asyncio

import jwt
import pytest
from support import bearer, refused, settings_with

from leadstream.server.auth import AuthError, TokenSigner


def forged(org: str = "acme", user: str = "alice") -> str:
    return (
        TokenSigner("not-the-server-secret-" + "y" * 32, default_ttl_s=3600).issue(org, user).token
    )


async def test_socket_refuses_missing_forged_and_expired_tokens(server, token):
    expired = token(ttl=-5)
    for auth in (None, {}, {"token": ""}, {"token": forged()}, {"token": expired}, {"token": 42}):
        error = await refused(str(server.make_url("/")), auth)
        assert error["data"]["code"] == "unauthorized", (auth, error)
        assert error["data"]["message"]


async def test_socket_accepts_a_valid_token(server, connect, token):
    client = await connect(server, token())
    assert client.sio.connected


async def test_expiry_leeway_is_at_most_one_second(signer):
    short = signer.issue("acme", "alice", ttl_s=1).token
    assert signer.verify(short).org == "acme"
    await asyncio.sleep(2.2)
    with pytest.raises(AuthError):
        signer.verify(short)


async def test_rest_refuses_missing_forged_and_expired_tokens(server, token, http):
    url = server.make_url("/api/leads")
    for headers in ({}, {"Authorization": "Basic abc"}, bearer(forged()), bearer(token(ttl=-5))):
        response = await http.get(url, headers=headers)
        assert response.status == 401
        body = await response.json()
        assert body["error"]["code"] == "unauthorized" and body["error"]["message"]
    ok = await http.get(url, headers=bearer(token()))
    assert ok.status == 200


async def test_token_claims_are_checked(signer, settings):
    no_org = jwt.encode({"sub": "alice", "exp": 2**31}, settings.secret, algorithm="HS256")
    bad_org = jwt.encode(
        {"sub": "a", "org": "a:b", "exp": 2**31}, settings.secret, algorithm="HS256"
    )
    none_alg = jwt.encode({"sub": "a", "org": "acme", "exp": 2**31}, None, algorithm="none")
    for candidate in (no_org, bad_org, none_alg):
        with pytest.raises(AuthError):
            signer.verify(candidate)
    with pytest.raises(ValueError):
        signer.issue("acme:evil", "alice")


async def test_dev_tokens_only_in_dev_mode(settings, start_server, http):
    server = await start_server(settings)
    response = await http.post(server.make_url("/api/dev/token"), json={"org": "o", "user": "u"})
    assert response.status == 404

    dev = await start_server(settings_with(settings, auth_mode="dev"))
    response = await http.post(dev.make_url("/api/dev/token"), json={"org": "demo", "user": "u1"})
    assert response.status == 200
    body = await response.json()
    assert body["org"] == "demo" and body["user"] == "u1" and body["expiresAt"].endswith("Z")
    listed = await http.get(dev.make_url("/api/leads"), headers=bearer(body["token"]))
    assert listed.status == 200
    bad = await http.post(dev.make_url("/api/dev/token"), json={"org": "a:b", "user": "u"})
    assert bad.status == 422
    not_json = await http.post(dev.make_url("/api/dev/token"), data=b"{")
    assert not_json.status == 400


async def test_principal_carries_the_token_expiry(signer):
    issued = signer.issue("acme", "alice", ttl_s=60)
    principal = signer.verify(issued.token)
    assert principal.expires_at == pytest.approx(issued.expires_at)
    assert principal.expires_at > 0 and principal.org == "acme"
