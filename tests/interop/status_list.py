#!/usr/bin/env python3
"""Interop check: lanyard's Token Status Lists (draft-ietf-oauth-status-list, JWT form)
read by an independent implementation (PyPI `token-status-list`) + PyJWT.

  status_list.py --issuer URL --valid FILE --revoked FILE   (tokens one per line)
  status_list.py --selftest

Exit 0: all good; 1: a check failed; 2: usage error.
"""
import argparse
import base64
import json
import sys
import time
import urllib.request
import zlib

import jwt  # PyJWT[crypto]
from token_status_list import INVALID, VALID, BitArray  # independent decoder

PREFIX = "CLOUD-"
MEDIA_TYPE = "application/statuslist+jwt"


class Fail(Exception):
    pass


def fetch(url, want_type=None):
    try:
        with urllib.request.urlopen(url, timeout=10) as resp:
            ctype = resp.headers.get("Content-Type", "")
            body = resp.read()
    except OSError as e:  # URLError/HTTPError/timeouts
        raise Fail(f"GET {url} failed: {e}")
    if want_type and ctype.split(";")[0].strip().lower() != want_type:
        raise Fail(f"GET {url}: Content-Type {ctype!r}, expected {want_type!r}")
    return body


def read_reference(token):
    """idx and uri of a local API token; its signature is NOT checked (locating only)."""
    if not token.startswith(PREFIX):
        raise Fail(f"token does not start with {PREFIX!r}")
    try:
        claims = jwt.decode(token[len(PREFIX):], options={"verify_signature": False})
        ref = claims["status"]["status_list"]
        idx, uri = ref["idx"], ref["uri"]
    except (jwt.PyJWTError, KeyError, TypeError) as e:
        raise Fail(f"token has no usable status.status_list claim: {e!r}")
    if type(idx) is not int or idx < 0 or not isinstance(uri, str):
        raise Fail(f"bad status_list reference idx={idx!r} uri={uri!r}")
    return idx, uri


def load_list(issuer, uri, jwks):
    """Fetch and verify one Status List Token; return the decoded BitArray."""
    if not uri.startswith(issuer + "/statuslists/"):
        raise Fail(f"uri {uri} is not under {issuer}/statuslists/")
    token = fetch(uri, MEDIA_TYPE).decode("ascii", "replace").strip()
    try:
        header = jwt.get_unverified_header(token)
    except jwt.PyJWTError as e:
        raise Fail(f"{uri}: not a JWT: {e}")
    if (header.get("typ"), header.get("alg")) != ("statuslist+jwt", "RS256"):
        raise Fail(f"{uri}: header {header}, expected typ statuslist+jwt and alg RS256")
    keys = [k for k in jwks.get("keys", []) if k.get("kid") == header.get("kid")]
    if len(keys) != 1:
        raise Fail(f"{uri}: kid {header.get('kid')!r} matches {len(keys)} JWKS keys")
    if keys[0].get("kty") != "RSA" or keys[0].get("alg", "RS256") != "RS256":
        raise Fail(f"{uri}: JWKS key {keys[0].get('kid')!r} is not an RS256 RSA key")
    try:
        claims = jwt.decode(token, jwt.PyJWK(keys[0], "RS256"), algorithms=["RS256"],
                            issuer=issuer, subject=uri,
                            options={"require": ["iss", "sub", "iat", "exp"]})
    except jwt.PyJWTError as e:
        raise Fail(f"{uri}: list JWT rejected: {type(e).__name__}: {e}")
    if (claims["iss"], claims["sub"]) != (issuer, uri) or claims["exp"] <= time.time():
        raise Fail(f"{uri}: iss/sub/exp mismatch")  # belt and braces over PyJWT
    sl = claims.get("status_list")
    if not isinstance(sl, dict) or sl.get("bits") != 1:
        raise Fail(f"{uri}: status_list must be an object with bits=1, got {sl!r}")
    try:
        return BitArray.load(sl)
    except (ValueError, TypeError, zlib.error) as e:
        raise Fail(f"{uri}: status_list.lst does not decode: {e!r}")


def check(issuer, valid, revoked):
    issuer = issuer.rstrip("/")
    try:
        jwks = json.loads(fetch(issuer + "/.well-known/jwks.json"))
    except ValueError as e:
        raise Fail(f"JWKS at {issuer}/.well-known/jwks.json is not JSON: {e}")
    lists, bad = {}, 0
    cases = [(t, VALID, "valid") for t in valid] + [(t, INVALID, "revoked") for t in revoked]
    for n, (token, want, label) in enumerate(cases, 1):
        try:
            idx, uri = read_reference(token)
        except Fail as e:
            raise Fail(f"{label} token #{n}: {e}")
        if uri not in lists:
            lists[uri] = load_list(issuer, uri, jwks)
        try:
            got = lists[uri].get(idx)
        except IndexError:
            raise Fail(f"{label} token #{n}: idx {idx} outside list of {len(lists[uri])} at {uri}")
        bad += got != want
        verdict = "ok" if got == want else "MISMATCH"
        print(f"{verdict}: {label} token #{n} {uri} idx={idx} status={got} expected={want}")
    if bad:
        raise Fail(f"{bad} of {len(cases)} tokens have the wrong status in their list")
    print(f"OK {len(cases)} tokens checked")


def selftest():
    # Encoder of the package: bits 0 and 9 of 16 entries must be bytes 01 02 (LSB first).
    ba = BitArray.of_size(1, 16)
    ba.set(0, INVALID)
    ba.set(9, INVALID)
    if bytes(ba.lst) != b"\x01\x02":
        raise Fail(f"package encoder gave {bytes(ba.lst).hex()}, expected 0102")
    # Decoder of the package on a list made with zlib directly, as lanyard would send it.
    lst = base64.urlsafe_b64encode(zlib.compress(b"\x01\x02")).rstrip(b"=").decode()
    for sl in (ba.dump(), {"bits": 1, "lst": lst}):
        got = BitArray.load(sl)
        if [got.get(i) for i in range(16)] != [int(i in (0, 9)) for i in range(16)]:
            raise Fail(f"package decoder misreads {sl}")
        try:
            got.get(16)
        except IndexError:
            continue
        raise Fail("out-of-range index did not raise IndexError")
    print("selftest: bits 0,9 <-> lst bytes 01 02 (LSB first), ZLIB, base64url: ok")


def read_tokens(path):
    with open(path, encoding="utf-8") as f:
        return [line.strip() for line in f if line.strip()]


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    for opt in ("--issuer", "--valid", "--revoked"):
        p.add_argument(opt)
    p.add_argument("--selftest", action="store_true")
    a = p.parse_args()
    try:
        if a.selftest:
            selftest()
            return 0
        if not (a.issuer and a.valid and a.revoked):
            p.error("--issuer, --valid and --revoked are required (or --selftest)")
        try:
            valid, revoked = read_tokens(a.valid), read_tokens(a.revoked)
        except OSError as e:
            p.error(f"cannot read token file: {e}")
        if not valid and not revoked:
            p.error("no tokens in --valid nor --revoked: nothing would be checked")
        check(a.issuer, valid, revoked)
    except Fail as e:
        print(f"FAIL: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
