"""The mixed package tree the storage tests distribute, with plaintext markers to search for."""

from __future__ import annotations

import os
import random
from pathlib import Path

MiB = 1024 * 1024
MARKER = b"CDP-PLAINTEXT-MARKER-"


def mixed_tree(root: Path) -> None:
    """Nested folders, spaces, non-ASCII names, an empty file and folder, a 20 MiB file with a
    marker every 4 MiB, 1,000 small files each starting with a marker; modes 0755 and 0600."""
    big = bytearray(os.urandom(20 * MiB))
    for n, at in enumerate(range(0, len(big), 4 * MiB)):
        marker = MARKER + b"BIG-%d" % n
        big[at + 999: at + 999 + len(marker)] = marker
    files = {
        "tools/setup program.exe": bytes(big),
        "docs/Ärger mit Umlauten/naïve café ✓.txt": MARKER + "ÄÖÜ naïve".encode(),
        "docs/empty.txt": b"",
        "a b c/d e f/g h.cfg": MARKER + b"spaces all the way down",
    }
    for i in range(1000):
        files[f"small/{i // 100:02d}/file {i:04d}.txt"] = (
            MARKER + b"%04d " % i + os.urandom(random.Random(i).randrange(10, 3000)))
    for rel, data in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    (root / "tools/setup program.exe").chmod(0o755)
    (root / "docs/Ärger mit Umlauten/naïve café ✓.txt").chmod(0o600)
    (root / "empty folder/inside too").mkdir(parents=True)
