#!/usr/bin/env python3
"""Interop check: lanyard's RFC 8693 token exchange and technical tokens, driven from the
outside with the standard library's HTTP client and verified with PyJWT.

  token_exchange.py --issuer URL --client-id ID --client-secret S \
      --subject-token T --actor-token A --expect-sub UUID --expect-actor ID
  token_exchange.py --technical-token T --issuer URL --audience SLUG --expect-app NAME@VERSION

The first form exchanges SUBJECT for a delegated token at {issuer}/oauth2/token (HTTP Basic,
form-encoded, RFC 8693 §2.1), checks the answer's members (§2.2.1), verifies the JWT against
{issuer}/.well-known/jwks.json (RS256, typ at+jwt, iss, aud = the tenant slug, exp), checks
`sub` and `act.sub`, then checks that a wider scope is answered `400 invalid_scope` (§2.2.2).
The second verifies a technical token against the user tenant's JWKS.

Exit 0: all good; 1: a check failed; 2: usage error.
"""
import argparse
import base64
import json
import sys
import urllib.error
import urllib.parse
import urllib.request

import jwt  # PyJWT[crypto]

EXCHANGE = "urn:ietf:params:oauth:grant-type:token-exchange"
ACCESS = "urn:ietf:params:oauth:token-type:access_token"


class Fail(Exception):
    pass


def post_form(url, fields, client_id, secret):
    body = urllib.parse.urlencode(fields).encode()
    req = urllib.request.Request(url, data=body, method="POST")
    req.add_header("Content-Type", "application/x-www-form-urlencoded")
    pair = base64.b64encode(f"{client_id}:{secret}".encode()).decode()
    req.add_header("Authorization", f"Basic {pair}")
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def verified(token, issuer, audience):
    """The claims of an RS256 access token of `issuer`, checked by PyJWT against its JWKS."""
    header = jwt.get_unverified_header(token)
    if header.get("typ") != "at+jwt":
        raise Fail(f"typ is {header.get('typ')!r}, not at+jwt")
    client = jwt.PyJWKClient(f"{issuer}/.well-known/jwks.json")
    key = client.get_signing_key_from_jwt(token)
    return jwt.decode(
        token,
        key.key,
        algorithms=["RS256"],
        issuer=issuer,
        audience=audience,
        options={"require": ["exp", "iat", "iss", "aud", "sub"]},
    )


def exchange(a):
    slug = a.issuer.rstrip("/").rsplit("/", 1)[-1]
    url = f"{a.issuer}/oauth2/token"
    fields = {
        "grant_type": EXCHANGE,
        "subject_token": a.subject_token,
        "subject_token_type": ACCESS,
        "actor_token": a.actor_token,
        "actor_token_type": ACCESS,
    }
    status, body = post_form(url, fields, a.client_id, a.client_secret)
    if status != 200:
        raise Fail(f"exchange answered {status}: {body}")
    for member in ("access_token", "issued_token_type", "token_type", "expires_in"):
        if member not in body:
            raise Fail(f"the answer lacks {member}: {body}")
    if body["issued_token_type"] != ACCESS or body["token_type"] != "Bearer":
        raise Fail(f"unexpected token types: {body}")
    if "refresh_token" in body:
        raise Fail("a refresh token came with an exchanged token")
    claims = verified(body["access_token"], a.issuer, slug)
    if claims["sub"] != a.expect_sub:
        raise Fail(f"sub is {claims['sub']!r}, expected {a.expect_sub!r}")
    if claims.get("act", {}).get("sub") != a.expect_actor:
        raise Fail(f"act is {claims.get('act')!r}, expected sub {a.expect_actor!r}")
    if claims.get("client_id") != a.client_id:
        raise Fail(f"client_id is {claims.get('client_id')!r}")
    status, body = post_form(url, {**fields, "scope": "lanyard:users:write"}, a.client_id, a.client_secret)
    if status != 400 or body.get("error") != "invalid_scope":
        raise Fail(f"a wider scope was answered {status}: {body}")
    print("token exchange: ok")


def technical(a):
    claims = verified(a.technical_token, a.issuer, a.audience)
    name, version = a.expect_app.split("@", 1)
    app = claims.get("app", {})
    if app.get("name") != name or app.get("version") != version:
        raise Fail(f"app is {app!r}")
    if claims["exp"] - claims["iat"] != 1800:
        raise Fail(f"lifetime {claims['exp'] - claims['iat']} s, not 1800")
    print("technical token: ok")


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--issuer", required=True)
    p.add_argument("--client-id")
    p.add_argument("--client-secret")
    p.add_argument("--subject-token")
    p.add_argument("--actor-token")
    p.add_argument("--expect-sub")
    p.add_argument("--expect-actor")
    p.add_argument("--technical-token")
    p.add_argument("--audience")
    p.add_argument("--expect-app")
    a = p.parse_args()
    try:
        if a.technical_token:
            if not (a.audience and a.expect_app):
                p.error("--technical-token needs --audience and --expect-app")
            technical(a)
        else:
            if not all([a.client_id, a.client_secret, a.subject_token, a.actor_token, a.expect_sub, a.expect_actor]):
                p.error("an exchange needs --client-id --client-secret --subject-token --actor-token --expect-sub --expect-actor")
            exchange(a)
    except (Fail, jwt.PyJWTError) as e:
        print(f"FAIL: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
