"""Access tokens: signed by the site (Ed25519, a JWT with ``alg`` EdDSA), checked by the front end.

The site's private key lives in ``CDP_HOME/keys/token.key`` (PKCS#8 PEM, mode 0600, created on
first use). The front end receives only :func:`public_key_pem` (through the template's app
settings), so the cloud can check tokens but never mint them.

Claims::

    sub   the client id                 iss   the site id
    cdps  distribution point names      pkgs  package ids (always explicit, never a wildcard)
    iat, nbf, exp   seconds since the epoch (exp - iat = the ttl, 24 h by default)
    jti   a random token id             header kid = RFC 7638 thumbprint of the public key

``pkgs`` lists the packages the access bundle carries keys for: a token never covers a package
whose keys its client does not hold, so ``cdp token issue`` without ``--package`` lists every
package the site knows at that moment rather than writing ``"*"``.

A clock leeway of :data:`LEEWAY` seconds applies to ``nbf`` and ``iat`` (a site clock slightly
ahead of the cloud's); ``exp`` is strict: an expired token is expired.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import secrets
import time
from functools import lru_cache
from typing import TYPE_CHECKING, Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from jwt.algorithms import OKPAlgorithm

from provisioner.errors import CdpError, UsageError

if TYPE_CHECKING:
    from provisioner.site import Site

ALGORITHM = "EdDSA"
DEFAULT_TTL = 24 * 3600
MIN_TTL = 1
MAX_TTL = 30 * 24 * 3600
LEEWAY = 30
VERIFIED_CACHE = 4096
KEY_FILE = "token.key"
CLAIMS = ("sub", "iss", "cdps", "pkgs", "iat", "nbf", "exp", "jti")

_CLIENT_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@-]{0,127}")
CLIENT_ID_RULE = "1-128 characters: letters, digits, '.', '_', '@', '-', starting with a letter or digit"
_TTL = re.compile(r"(\d{1,9})([smhd])")
_UNIT = {"s": 1, "m": 60, "h": 3600, "d": 86400}


class TokenError(CdpError):
    """A token the front end must refuse. The message never contains the token."""


class TokenInvalid(TokenError):
    """Missing, malformed, tampered, badly signed, expired or from another site: HTTP 401."""


class TokenForbidden(TokenError):
    """Valid, but it does not cover this distribution point or package: HTTP 403."""


def check_client_id(client_id: str) -> str:
    if not isinstance(client_id, str) or not _CLIENT_ID.fullmatch(client_id):
        raise UsageError(f"bad client id {client_id!r}: {CLIENT_ID_RULE}")
    return client_id


def parse_ttl(text: str) -> int:
    """``"24h"``, ``"90m"``, ``"2s"``, ``"7d"`` -> seconds, from 1 s to 30 days."""
    match = _TTL.fullmatch(text.strip()) if isinstance(text, str) else None
    if not match:
        raise UsageError(f"bad ttl {text!r}: a number and a unit s, m, h or d (e.g. 24h, 90m, 7d)")
    seconds = int(match[1]) * _UNIT[match[2]]
    if not MIN_TTL <= seconds <= MAX_TTL:
        raise UsageError(f"bad ttl {text!r}: must be from 1s to 30d")
    return seconds


# -- the site side: the signing key and issuing ------------------------------------------------


def signing_key(site: "Site") -> Ed25519PrivateKey:
    """The site's token signing key, created on first use."""
    from provisioner.site.keys import write_private  # site-only: keeps the front end's package small

    path = site.keys_dir / KEY_FILE
    new = Ed25519PrivateKey.generate()
    try:
        write_private(path, new.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        ))
    except FileExistsError:
        pass
    mode = path.stat().st_mode & 0o777
    if mode & 0o077:
        raise CdpError(f"key file {path} is readable by others (mode {mode:o}); chmod 600 it")
    try:
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    except (ValueError, TypeError):
        key = None
    if not isinstance(key, Ed25519PrivateKey):
        raise CdpError(f"key file {path} is damaged: not an Ed25519 private key in PEM")
    return key


def public_key_pem(site: "Site") -> str:
    """The public half of the site's token key, PEM (SubjectPublicKeyInfo): the front end's setting."""
    return signing_key(site).public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    ).decode()


def key_id(public_key: Ed25519PublicKey) -> str:
    """The RFC 7638 JWK thumbprint (SHA-256, base64url) of ``public_key``."""
    jwk = OKPAlgorithm.to_jwk(public_key, as_dict=True)
    canonical = json.dumps({k: jwk[k] for k in ("crv", "kty", "x")}, separators=(",", ":"), sort_keys=True)
    return base64.urlsafe_b64encode(hashlib.sha256(canonical.encode()).digest()).rstrip(b"=").decode()


def issue(site: "Site", client_id: str, distribution_points: list[str], packages: list[str],
          ttl: int = DEFAULT_TTL, now: float | None = None) -> str:
    """A token for ``client_id`` covering ``distribution_points`` x ``packages`` for ``ttl`` seconds."""
    check_client_id(client_id)
    if isinstance(ttl, bool) or not isinstance(ttl, int) or not MIN_TTL <= ttl <= MAX_TTL:
        raise UsageError(f"bad ttl {ttl!r}: must be from 1 to {MAX_TTL} seconds")
    if not distribution_points or not packages:
        raise UsageError("a token must cover at least one distribution point and one package")
    issued = int(now if now is not None else time.time())
    claims = {
        "sub": client_id,
        "iss": site.site_id,
        "cdps": list(distribution_points),
        "pkgs": list(packages),
        "iat": issued,
        "nbf": issued,
        "exp": issued + ttl,
        "jti": secrets.token_urlsafe(16),
    }
    key = signing_key(site)
    return jwt.encode(claims, key, algorithm=ALGORITHM, headers={"kid": key_id(key.public_key())})


# -- the front-end side: verifying with the public key only ------------------------------------


class Verifier:
    """Checks tokens against one public key; build it once (the key is parsed here, not per call)."""

    def __init__(self, public_key_pem: str | bytes, issuer: str | None = None, leeway: int = LEEWAY):
        data = public_key_pem.encode() if isinstance(public_key_pem, str) else public_key_pem
        try:
            key = serialization.load_pem_public_key(data)
        except (ValueError, TypeError):
            key = None
        if not isinstance(key, Ed25519PublicKey):
            raise CdpError("the token public key is not an Ed25519 public key in PEM")
        self._key = key
        self.kid = key_id(key)
        self.issuer = issuer
        self.leeway = leeway
        # A client presents the same token for every request of its 24 hours: remember the exact
        # token strings whose signature checked out (failures are not cached). Times, issuer and
        # coverage are still checked on every call.
        self._signed_claims = lru_cache(maxsize=VERIFIED_CACHE)(self._check_signature)

    def authenticate(self, token: str | None, now: float | None = None) -> dict[str, Any]:
        """The claims of a valid token, else :class:`TokenInvalid` (401)."""
        if not token or not isinstance(token, str):
            raise TokenInvalid("no access token")
        claims = dict(self._signed_claims(token))
        now = time.time() if now is None else now
        if now >= claims["exp"]:
            raise TokenInvalid("the access token has expired")
        if claims["nbf"] > now + self.leeway or claims["iat"] > now + self.leeway:
            raise TokenInvalid("the access token is not valid yet")
        if claims["exp"] - claims["iat"] > MAX_TTL:
            raise TokenInvalid("the access token claims a lifetime longer than 30 days")
        if self.issuer is not None and claims["iss"] != self.issuer:
            raise TokenInvalid("the access token was issued by another site")
        return claims

    def verify(self, token: str | None, distribution_point: str, package: str,
               now: float | None = None) -> dict[str, Any]:
        """The claims of a valid token covering ``distribution_point`` and ``package``.

        :class:`TokenInvalid` (401) or :class:`TokenForbidden` (403) otherwise."""
        claims = self.authenticate(token, now)
        if distribution_point not in claims["cdps"]:
            raise TokenForbidden(f"the access token does not cover distribution point {distribution_point}")
        if package not in claims["pkgs"]:
            raise TokenForbidden(f"the access token does not cover package {package}")
        return claims

    def _check_signature(self, token: str) -> dict[str, Any]:
        try:
            claims = jwt.decode(token, self._key, algorithms=[ALGORITHM], options=_DECODE_OPTIONS)
        except jwt.InvalidSignatureError:
            raise TokenInvalid(self._why_bad_signature(token)) from None
        except jwt.MissingRequiredClaimError as exc:
            raise TokenInvalid(f"the access token lacks the {exc.claim!r} claim") from None
        except jwt.InvalidTokenError:
            raise TokenInvalid("the access token is malformed") from None
        _check_claims(claims)
        return claims

    def _why_bad_signature(self, token: str) -> str:
        try:
            kid = jwt.get_unverified_header(token).get("kid")
        except jwt.InvalidTokenError:
            kid = None
        if kid is not None and kid != self.kid:
            return "the access token was signed by another key"
        return "the access token's signature does not match (tampered?)"


_DECODE_OPTIONS = {
    "require": list(CLAIMS),
    # Times are checked in Verifier.authenticate against an injectable clock, exp without leeway.
    "verify_exp": False, "verify_nbf": False, "verify_iat": False,
    "verify_aud": False, "verify_iss": False,
}


def _check_claims(claims: dict[str, Any]) -> None:
    def strings(value: Any) -> bool:
        return isinstance(value, list) and all(isinstance(item, str) for item in value)

    numbers = all(isinstance(claims[k], int) and not isinstance(claims[k], bool) for k in ("iat", "nbf", "exp"))
    if not (numbers and isinstance(claims["sub"], str) and isinstance(claims["iss"], str)
            and strings(claims["cdps"]) and strings(claims["pkgs"])):
        raise TokenInvalid("the access token's claims are malformed")


@lru_cache(maxsize=8)
def verifier(public_key_pem: str | bytes, issuer: str | None = None) -> Verifier:
    """A cached :class:`Verifier` for this key and issuer."""
    return Verifier(public_key_pem, issuer)


def verify(token: str | None, public_key_pem: str | bytes, distribution_point: str, package: str,
           now: float | None = None, issuer: str | None = None) -> dict[str, Any]:
    """Check ``token`` for ``distribution_point`` and ``package`` with only the public key.

    Returns the claims; raises :class:`TokenInvalid` (401) or :class:`TokenForbidden` (403)."""
    return verifier(public_key_pem, issuer).verify(token, distribution_point, package, now)
