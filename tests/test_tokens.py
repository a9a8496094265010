"""Access tokens: signed by the site key, checked with the public key only."""

import base64
import hashlib
import hmac
import json
import os
import stat

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from provisioner import tokens
from provisioner.errors import CdpError, UsageError
from provisioner.site import Site
from provisioner.tokens import TokenForbidden, TokenInvalid

NOW = 1_800_000_000


@pytest.fixture
def site(tmp_path):
    return Site.open(tmp_path / "home")


@pytest.fixture
def pem(site):
    return tokens.public_key_pem(site)


def issue(site, ttl=tokens.DEFAULT_TTL, now=NOW, cdps=("dp1", "dp2"), pkgs=("app1",)):
    return tokens.issue(site, "pc-1", list(cdps), list(pkgs), ttl, now=now)


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


@pytest.mark.parametrize("text, seconds", [
    ("24h", 86400), ("90m", 5400), ("2s", 2), ("7d", 604800), ("1s", 1), ("30d", 2592000), (" 5m ", 300),
])
def test_parse_ttl(text, seconds):
    assert tokens.parse_ttl(text) == seconds


@pytest.mark.parametrize("text", ["", "0s", "31d", "721h", "24", "h", "1.5h", "-1h", "24H", "1w", "2 h"])
def test_parse_ttl_refuses(text):
    with pytest.raises(UsageError, match="bad ttl"):
        tokens.parse_ttl(text)


def test_round_trip_claims_and_header(site, pem):
    token = issue(site, ttl=3600)
    claims = tokens.verify(token, pem, "dp2", "app1", now=NOW + 10, issuer=site.site_id)
    assert claims["sub"] == "pc-1" and claims["iss"] == site.site_id
    assert claims["cdps"] == ["dp1", "dp2"] and claims["pkgs"] == ["app1"]
    assert claims["iat"] == claims["nbf"] == NOW and claims["exp"] == NOW + 3600
    assert len(claims["jti"]) >= 16
    header = jwt.get_unverified_header(token)
    assert header["alg"] == "EdDSA"
    assert header["kid"] == tokens.Verifier(pem).kid
    assert issue(site) != issue(site)  # a fresh jti every time


def test_default_ttl_is_24_hours(site, pem):
    claims = tokens.verify(issue(site), pem, "dp1", "app1", now=NOW)
    assert claims["exp"] - claims["iat"] == 24 * 3600


def test_key_file_is_private_and_stable(site, pem):
    path = site.keys_dir / "token.key"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(site.keys_dir.stat().st_mode) == 0o700
    assert tokens.public_key_pem(site) == pem
    assert "PRIVATE" not in pem and pem.startswith("-----BEGIN PUBLIC KEY-----")


def test_key_file_readable_by_others_is_refused(site, pem):
    os.chmod(site.keys_dir / "token.key", 0o644)
    with pytest.raises(CdpError, match="readable by others"):
        tokens.public_key_pem(site)


def test_damaged_key_file_is_refused(site, pem):
    (site.keys_dir / "token.key").write_bytes(b"not a key")
    with pytest.raises(CdpError, match="damaged"):
        issue(site)


def test_tampered_payload_is_invalid(site, pem):
    header, payload, signature = issue(site).split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=="))
    claims["pkgs"] = ["app1", "other"]
    forged = ".".join([header, _b64(json.dumps(claims).encode()), signature])
    with pytest.raises(TokenInvalid, match="signature"):
        tokens.verify(forged, pem, "dp1", "other", now=NOW)


def test_tampered_signature_is_invalid(site, pem):
    header, payload, signature = issue(site).split(".")
    raw = bytearray(base64.urlsafe_b64decode(signature + "=="))
    raw[0] ^= 1
    with pytest.raises(TokenInvalid, match="signature"):
        tokens.verify(".".join([header, payload, _b64(bytes(raw))]), pem, "dp1", "app1", now=NOW)


@pytest.mark.parametrize("token", [None, "", "garbage", "a.b.c", "Bearer x.y.z"])
def test_missing_or_malformed_is_invalid(pem, token):
    with pytest.raises(TokenInvalid):
        tokens.verify(token, pem, "dp1", "app1", now=NOW)


def test_unsigned_and_other_algorithms_are_invalid(site, pem):
    claims = tokens.verify(issue(site), pem, "dp1", "app1", now=NOW)
    unsigned = jwt.encode(claims, None, algorithm="none")
    # The classic confusion attack: HS256 with the public key as the HMAC secret.
    signing_input = _b64(b'{"alg":"HS256","typ":"JWT"}') + "." + _b64(json.dumps(claims).encode())
    mac = hmac.new(pem.encode(), signing_input.encode(), hashlib.sha256).digest()
    for token in (unsigned, f"{signing_input}.{_b64(mac)}"):
        with pytest.raises(TokenInvalid):
            tokens.verify(token, pem, "dp1", "app1", now=NOW)


def test_token_of_another_site_is_invalid(tmp_path, site, pem):
    other = Site.open(tmp_path / "other")
    with pytest.raises(TokenInvalid, match="another key"):
        tokens.verify(issue(other), pem, "dp1", "app1", now=NOW)


def test_wrong_issuer_is_invalid(site, pem):
    with pytest.raises(TokenInvalid, match="another site"):
        tokens.verify(issue(site), pem, "dp1", "app1", now=NOW, issuer="0000000000000000")


def test_missing_claim_is_invalid(site, pem):
    key = serialization.load_pem_private_key((site.keys_dir / "token.key").read_bytes(), None)
    claims = tokens.verify(issue(site), pem, "dp1", "app1", now=NOW)
    del claims["jti"]
    token = jwt.encode(claims, key, algorithm="EdDSA")
    with pytest.raises(TokenInvalid, match="jti"):
        tokens.verify(token, pem, "dp1", "app1", now=NOW)


def test_malformed_claims_are_invalid(site, pem):
    key = serialization.load_pem_private_key((site.keys_dir / "token.key").read_bytes(), None)
    claims = tokens.verify(issue(site), pem, "dp1", "app1", now=NOW)
    token = jwt.encode(dict(claims, cdps="dp1"), key, algorithm="EdDSA")
    with pytest.raises(TokenInvalid, match="malformed"):
        tokens.verify(token, pem, "dp1", "app1", now=NOW)


def test_expired_is_invalid_without_leeway(site, pem):
    token = issue(site, ttl=1)
    assert tokens.verify(token, pem, "dp1", "app1", now=NOW + 0.5)
    with pytest.raises(TokenInvalid, match="expired"):
        tokens.verify(token, pem, "dp1", "app1", now=NOW + 1)
    with pytest.raises(TokenInvalid, match="expired"):
        tokens.verify(token, pem, "dp1", "app1", now=NOW + 3600)


def test_cache_does_not_outlive_expiry(site, pem):
    verifier = tokens.Verifier(pem)
    token = issue(site, ttl=60)
    verifier.verify(token, "dp1", "app1", now=NOW)
    verifier.verify(token, "dp1", "app1", now=NOW + 59)
    with pytest.raises(TokenInvalid, match="expired"):
        verifier.verify(token, "dp1", "app1", now=NOW + 60)
    with pytest.raises(TokenForbidden):
        verifier.verify(token, "dp9", "app1", now=NOW)


def test_clock_leeway_applies_to_not_before_only(site, pem):
    token = issue(site, now=NOW + tokens.LEEWAY)  # a site clock 30 s ahead of the cloud's
    assert tokens.verify(token, pem, "dp1", "app1", now=NOW)
    with pytest.raises(TokenInvalid, match="not valid yet"):
        tokens.verify(issue(site, now=NOW + tokens.LEEWAY + 1), pem, "dp1", "app1", now=NOW)


def test_other_distribution_point_is_forbidden(site, pem):
    with pytest.raises(TokenForbidden, match="distribution point dp3"):
        tokens.verify(issue(site), pem, "dp3", "app1", now=NOW)


def test_other_package_is_forbidden(site, pem):
    with pytest.raises(TokenForbidden, match="package app2"):
        tokens.verify(issue(site), pem, "dp1", "app2", now=NOW)


def test_errors_never_contain_the_token(site, pem):
    token = issue(site, ttl=1)
    for dp, pkg, now in (("dp1", "app1", NOW + 5), ("dp9", "app1", NOW), ("dp1", "app9", NOW)):
        with pytest.raises(tokens.TokenError) as err:
            tokens.verify(token, pem, dp, pkg, now=now)
        assert token not in str(err.value) and token.split(".")[2] not in str(err.value)


@pytest.mark.parametrize("kwargs, match", [
    ({"ttl": 0}, "bad ttl"),
    ({"ttl": tokens.MAX_TTL + 1}, "bad ttl"),
    ({"cdps": ()}, "at least one"),
    ({"pkgs": ()}, "at least one"),
])
def test_issue_refuses_bad_input(site, kwargs, match):
    with pytest.raises(UsageError, match=match):
        issue(site, **kwargs)


@pytest.mark.parametrize("client", ["", "-pc", "pc 1", "pc/1", "x" * 129])
def test_issue_refuses_bad_client_id(site, client):
    with pytest.raises(UsageError, match="bad client id"):
        tokens.issue(site, client, ["dp1"], ["app1"])


def test_verifier_needs_an_ed25519_public_key():
    private_pem = Ed25519PrivateKey.generate().private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    for bad in (b"", b"not pem", private_pem):
        with pytest.raises(CdpError, match="Ed25519 public key"):
            tokens.Verifier(bad)
