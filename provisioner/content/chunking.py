"""Content-defined chunking (FastCDC, from pyfastcdc) of a stream with bounded memory.

A package is chunked as one stream: the concatenation of its files in path order (see
:mod:`provisioner.content.manifest`). Cut points depend on the content only, so a change in the
middle of the stream changes the chunks around it and no others.

pyfastcdc was measured against fastcdc in ``bench/chunkers.py``: both cut ~1 GB/s here, but
only pyfastcdc reads a stream (its buffer is twice the maximum chunk size); fastcdc needs the
whole input as one buffer or mmap.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import BinaryIO

import pyfastcdc

KiB = 1024
MiB = 1024 * KiB
CHUNK_MIN = 256 * KiB
CHUNK_AVG = 1 * MiB
CHUNK_MAX = 4 * MiB


@dataclass(frozen=True)
class Piece:
    """A cut of the stream: where it starts, and its bytes (a copy the caller may keep)."""

    offset: int
    data: bytes

    @property
    def size(self) -> int:
        return len(self.data)


def chunker() -> pyfastcdc.FastCDC:
    """The one chunker configuration: changing it changes every chunk id, so it is fixed."""
    return pyfastcdc.FastCDC(CHUNK_AVG, min_size=CHUNK_MIN, max_size=CHUNK_MAX, normalized_chunking=1, seed=0)


def cut(stream: BinaryIO) -> Iterator[Piece]:
    """Cut ``stream`` (anything with ``readinto`` or ``read``) into pieces, in order.

    Memory stays bounded: pyfastcdc keeps a window of ``2 * CHUNK_MAX`` bytes, and each piece
    is copied out of it (pyfastcdc reuses the window for the next cut).
    """
    for chunk in chunker().cut_stream(stream):
        yield Piece(chunk.offset, bytes(chunk.data))
