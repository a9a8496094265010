"""Benchmark: FastCDC chunkers from PyPI, pyfastcdc vs fastcdc, on the same data.

Usage: .venv/bin/python bench/chunkers.py [--size-mib 256]

For each chunker and size setting it prints the chunking throughput on random data and the
delta after 1 MiB in the middle is replaced: the bytes of version 2 that fall in chunks
version 1 does not have (what an update would upload). "streaming" means the chunker reads a
file-like object with bounded memory (what cdp needs: it chunks the concatenation of all
files of a package); "buffer" means the whole input is in memory (or mmapped) at once.

fastcdc (1.7) has no stream input; it is measured on a buffer, and through a windowed
adapter written here (feed it max_size-sized windows) to see what streaming would cost.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import random
import time

import fastcdc
import pyfastcdc

MiB = 1024 * 1024
KiB = 1024


def pyfastcdc_stream(data: bytes, lo: int, avg: int, hi: int):
    chunker = pyfastcdc.FastCDC(avg, min_size=lo, max_size=hi)
    for chunk in chunker.cut_stream(io.BytesIO(data)):
        yield chunk.offset, chunk.length


def pyfastcdc_buffer(data: bytes, lo: int, avg: int, hi: int):
    chunker = pyfastcdc.FastCDC(avg, min_size=lo, max_size=hi)
    for chunk in chunker.cut_buf(data):
        yield chunk.offset, chunk.length


def fastcdc_buffer(data: bytes, lo: int, avg: int, hi: int):
    for chunk in fastcdc.fastcdc(data, lo, avg, hi):
        yield chunk.offset, chunk.length


def fastcdc_windowed(data: bytes, lo: int, avg: int, hi: int):
    """Stream through fastcdc: a cut is final once max_size bytes after its start are buffered."""
    stream = io.BytesIO(data)
    buf = bytearray()
    offset = 0
    eof = False
    while True:
        while not eof and len(buf) < 2 * hi:
            block = stream.read(4 * MiB)
            eof = not block
            buf += block
        if not buf:
            return
        first = next(iter(fastcdc.fastcdc(bytes(buf[: hi]) if not eof else bytes(buf), lo, avg, hi)))
        yield offset, first.length
        offset += first.length
        del buf[: first.length]


CHUNKERS = {
    "pyfastcdc (streaming)": pyfastcdc_stream,
    "pyfastcdc (buffer)": pyfastcdc_buffer,
    "fastcdc (buffer)": fastcdc_buffer,
    "fastcdc (windowed stream)": fastcdc_windowed,
}


def random_bytes(rng: random.Random, n: int) -> bytes:
    return b"".join(rng.randbytes(min(MiB, n - i)) for i in range(0, n, MiB))


def run(fn, data: bytes, sizes) -> tuple[float, dict[str, int]]:
    """Chunk ``data`` (timed: the chunker only), then key each chunk by a hash of its bytes."""
    start = time.perf_counter()
    cuts = list(fn(data, *sizes))
    seconds = time.perf_counter() - start
    assert cuts[-1][0] + cuts[-1][1] == len(data)
    view = memoryview(data)
    chunks = {hashlib.blake2b(view[o : o + n], digest_size=16).hexdigest(): n for o, n in cuts}
    return seconds, chunks


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mib", type=int, default=256)
    parser.add_argument("--seed", type=int, default=4)
    parser.add_argument("--repeat", type=int, default=3, help="best of N timed runs")
    parser.add_argument("--positions", type=int, default=8, help="also average the delta over N change offsets")
    args = parser.parse_args()

    rng = random.Random(args.seed)
    size = args.size_mib * MiB
    v1 = random_bytes(rng, size)
    middle = size // 2
    patch = random_bytes(rng, MiB)
    offsets = [middle] + [(i + 1) * size // (args.positions + 1) for i in range(args.positions)]

    settings = [
        ("256K/1M/4M", (256 * KiB, 1 * MiB, 4 * MiB)),
        ("128K/512K/2M", (128 * KiB, 512 * KiB, 2 * MiB)),
        ("512K/2M/8M", (512 * KiB, 2 * MiB, 8 * MiB)),
    ]
    print(f"data: {args.size_mib} MiB random (seed {args.seed}); v2 = 1 MiB replaced in the middle")
    print(f"'mean/max new': the v2 delta over {args.positions} other change offsets; MB/s is best of {args.repeat}")
    print(
        f"{'chunker':28} {'min/avg/max':14} {'MB/s':>8} {'chunks':>7} {'mean KiB':>9}"
        f" {'v2 new MiB':>11} {'v2 new %':>9} {'mean new MiB':>13} {'max new MiB':>12}"
    )
    for label, sizes in settings:
        for name, fn in CHUNKERS.items():
            if name.startswith("fastcdc (windowed") and label != settings[0][0]:
                continue
            seconds, chunks1 = min((run(fn, v1, sizes) for _ in range(args.repeat)), key=lambda r: r[0])
            news = []
            for at in offsets:
                v2 = v1[:at] + patch + v1[at + MiB :]
                _, chunks2 = run(fn, v2, sizes)
                news.append(sum(length for key, length in chunks2.items() if key not in chunks1))
            mean_new = sum(news[1:]) / max(len(news) - 1, 1)
            print(
                f"{name:28} {label:14} {size / seconds / 1e6:8.0f} {len(chunks1):7d}"
                f" {size / len(chunks1) / KiB:9.0f} {news[0] / MiB:11.2f} {100 * news[0] / size:8.2f}%"
                f" {mean_new / MiB:13.2f} {max(news[1:]) / MiB:12.2f}"
            )


if __name__ == "__main__":
    main()
