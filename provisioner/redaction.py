"""Secrets out of text that leaves the process: log lines, error messages, remote answers.

A SAS signature (and the delegation-key fields of a user delegation SAS), a bearer token,
anything shaped like a JWT and a storage account key become ``***``. The front end's log
formatter, storage errors on the site and what a client reports of a source all use it.
"""

from __future__ import annotations

import re

_SECRETS = [
    (re.compile(r"(?i)\b(sig|skoid|sktid|skt|ske|sks|skv)=[^&\s'\"]+"), r"\1=***"),
    (re.compile(r"(?i)\bbearer\s+[^\s'\"]+"), "Bearer ***"),
    (re.compile(r"eyJ[\w-]*\.[^\s&'\"]*"), "***"),  # a JWT, or what is left of one
    (re.compile(r"(?i)(AccountKey=|account_key['\"]?\s*[:=]\s*['\"]?)[^;\s'\"]+"), r"\1***"),
]


def redact(text: str) -> str:
    for pattern, replacement in _SECRETS:
        text = pattern.sub(replacement, text)
    return text
