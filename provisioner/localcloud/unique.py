"""``uniqueString()`` exactly as Azure Resource Manager computes it.

ARM joins the arguments with ``-``, hashes the UTF-8 bytes with a 64-bit MurmurHash variant
(two 32-bit lanes, MurmurHash3-style mixing with its own constants; from
``Microsoft.WindowsAzure.ResourceStack`` ``ComputeHash``, as used by
``Azure.Deployments.Expression``) and writes the top 65 bits (the hash, then zeros) as 13
characters of the base-32 alphabet ``a-z2-7``. This is a port of that published algorithm;
tests/test_engine.py checks it against outputs of Microsoft's own implementation.
"""

from __future__ import annotations

_MASK32 = 0xFFFFFFFF
_MASK64 = 0xFFFFFFFFFFFFFFFF
_C1 = 0x239B961B
_C2 = 0xAB0E9789
_FMIX1 = 0x85EBCA6B
_FMIX2 = 0xC2B2AE35
_ALPHABET = "abcdefghijklmnopqrstuvwxyz234567"


def _rotl(value: int, bits: int) -> int:
    return ((value << bits) | (value >> (32 - bits))) & _MASK32


def _fmix(value: int) -> int:
    value = ((value ^ (value >> 16)) * _FMIX1) & _MASK32
    value = ((value ^ (value >> 13)) * _FMIX2) & _MASK32
    return value ^ (value >> 16)


def _k1(block: int) -> int:
    return (_rotl((block * _C1) & _MASK32, 15) * _C2) & _MASK32


def _k2(block: int) -> int:
    return (_rotl((block * _C2) & _MASK32, 17) * _C1) & _MASK32


def compute_hash(data: bytes) -> int:
    """The 64-bit hash of ``data`` (high lane ``h2``, low lane ``h1``)."""
    h1 = h2 = 0
    length = len(data)
    full = length - length % 8
    for i in range(0, full, 8):
        h1 = _rotl(h1 ^ _k1(int.from_bytes(data[i : i + 4], "little")), 19)
        h1 = (((h1 + h2) & _MASK32) * 5 + 0x561CCD1B) & _MASK32
        h2 = _rotl(h2 ^ _k2(int.from_bytes(data[i + 4 : i + 8], "little")), 13)
        h2 = (((h2 + h1) & _MASK32) * 5 + 0x0BCAA747) & _MASK32
    tail = data[full:]
    if tail:
        h1 ^= _k1(int.from_bytes(tail[:4], "little"))
        if len(tail) > 4:
            h2 ^= _k2(int.from_bytes(tail[4:], "little"))
    h1 ^= length
    h2 ^= length
    h1 = (h1 + h2) & _MASK32
    h2 = (h2 + h1) & _MASK32
    h1, h2 = _fmix(h1), _fmix(h2)
    h1 = (h1 + h2) & _MASK32
    h2 = (h2 + h1) & _MASK32
    return (h2 << 32) | h1


def unique_string(*values: str) -> str:
    """``uniqueString(values...)``: 13 characters of ``a-z2-7``."""
    if not values:
        raise ValueError("uniqueString needs at least one value")
    digest = compute_hash("-".join(values).encode("utf-8"))
    return "".join(_ALPHABET[((digest << (5 * i)) & _MASK64) >> 59] for i in range(13))
