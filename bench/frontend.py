"""Benchmark: location requests per second and latency of ONE front-end worker, beside /health.

Usage: .venv/bin/python bench/frontend.py [--seconds 15] [--connections 64] [--client wrk|python [--rounds 3]]

It starts a local cloud of its own (Azurite over HTTPS, in a temporary site), writes one
package in the storage layout (a ``current`` pointer and a manifest), starts one front-end
process (``python -m provisioner.frontend``: one uvicorn worker over HTTPS, as the local cloud
runs it) and loads it over keep-alive HTTPS connections: ``GET /health`` (the ceiling: the same
server, TLS and HTTP stack doing no work) and ``GET /v1/locations/PKG`` with a valid token
(token check, cache lookups, SAS, egress counting). It prints requests/s, p50 and p99 latency,
the server process's CPU time per request (from /proc: the figure that does not depend on what
else the machine runs) and the ratio of locations to health; it exits 1 when the locations miss
the target (>= 1,500/s, p99 <= 50 ms).

The load generator is wrk when installed (Debian package ``wrk``; a Lua script adds the
Authorization header): one run per endpoint, whose figures include opening the connections,
i.e. 64 TLS handshakes with the local cloud's RSA-4096 certificate (they weigh on the p99 of a
short run). ``--client python`` is a minimal HTTP/1.1 client on asyncio streams (uvloop if
installed) in this process: it opens all connections first, loads for a second of warm-up and
then measures the steady state, alternating the endpoints ``--rounds`` times so that both meet
the same machine; it costs more CPU per request than wrk, and on two cores it is the
bottleneck (about 2,500 requests/s). The server and the load generator share the cores.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import shutil
import socket
import ssl
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from provisioner import tokens  # noqa: E402
from provisioner.content import layout  # noqa: E402
from provisioner.localcloud import LocalCloud  # noqa: E402
from provisioner.site import Site  # noqa: E402

DP = "dp-bench"
PACKAGE = "bench.package"
ACCOUNT = "cdpbenchfrontend"
TARGET_RPS = 1500
TARGET_P99_MS = 50.0
WARM_UP = 1.0
_CONTENT_LENGTH = re.compile(rb"(?i)\r\ncontent-length:\s*(\d+)")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=15, help="measured time per endpoint")
    parser.add_argument("--rounds", type=int, default=3,
                        help="python client: alternate the endpoints this many times within --seconds")
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--client", choices=["wrk", "python"], default="wrk" if shutil.which("wrk") else "python")
    args = parser.parse_args()
    if args.client == "wrk" and not shutil.which("wrk"):
        raise SystemExit("wrk is not installed (apt-get install -y wrk)")
    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="cdp-bench-frontend-") as tmp:
        site = Site.open(Path(tmp) / "cdp-home")
        cloud = LocalCloud(site, progress=lambda message: print(message, file=sys.stderr))
        cloud.start()
        front = None
        try:
            key = cloud.add_account(ACCOUNT)
            put_content(cloud)
            front, port = start_front_end(cloud, site, key, Path(tmp))
            token = tokens.issue(site, "bench-client", [DP], [PACKAGE])
            base = f"https://127.0.0.1:{port}"
            runs = {"GET /health": (base + "/health", None),
                    "GET /v1/locations/{pkg}": (base + f"/v1/locations/{PACKAGE}", token)}
            rounds = args.rounds if args.client == "python" else 1
            print(f"one front-end worker, {args.connections} keep-alive HTTPS connections, load generator "
                  f"{args.client}, {rounds} x {args.seconds / rounds:g} s per endpoint", file=sys.stderr)
            if args.client == "wrk":
                results = {name: run_wrk(url, auth, args.seconds, args.connections, Path(tmp), front.pid)
                           for name, (url, auth) in runs.items()}
            else:
                results = run_python_rounds(runs, args.seconds / rounds, rounds, args.connections,
                                            str(cloud.ca_bundle), front.pid)
        finally:
            if front is not None:
                front.terminate()
                front.wait(15)
            cloud.stop()
    print(f"{'endpoint':<28}{'requests/s':>12}{'p50 ms':>9}{'p99 ms':>9}{'errors':>8}{'server CPU us/req':>19}")
    for name, result in results.items():
        print(f"{name:<28}{result['rps']:>12.0f}{result['p50']:>9.2f}{result['p99']:>9.2f}{result['errors']:>8}"
              f"{result['cpu_us']:>19.0f}")
    health, located = results["GET /health"], results["GET /v1/locations/{pkg}"]
    print(f"locations / health: {located['rps'] / health['rps'] if health['rps'] else 0.0:.2f}")
    print(f"machine: {os.cpu_count()} cores, load average {load_before:.1f} before, "
          f"{os.getloadavg()[0]:.1f} after (the load generator and server share the cores)")
    capacity = 1e6 / located["cpu_us"] if located["cpu_us"] else 0.0
    print(f"server CPU per location: {located['cpu_us']:.0f} us, i.e. about {capacity:.0f} locations/s "
          f"for one worker on a core of its own")
    ok = located["rps"] >= TARGET_RPS and located["p99"] <= TARGET_P99_MS and not located["errors"]
    print(f"target (>= {TARGET_RPS} locations/s, p99 <= {TARGET_P99_MS:.0f} ms, no errors): "
          f"{'met' if ok else 'NOT met'}")
    return 0 if ok else 1


def put_content(cloud: LocalCloud) -> None:
    service = cloud.blob_service_client(ACCOUNT)
    container = service.get_container_client(layout.container_name(PACKAGE))
    if not container.exists():
        container.create_container()
    container.upload_blob(layout.manifest_blob("1.0"), b"m" * 1000, overwrite=True,
                          metadata={"stored_bytes": str(256 * 1024 * 1024)})
    container.upload_blob(layout.CURRENT_BLOB, layout.current_pointer("1.0"), overwrite=True)


def start_front_end(cloud: LocalCloud, site: Site, key: str, folder: Path) -> tuple[subprocess.Popen, int]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    env = {k: v for k, v in os.environ.items() if not k.startswith("CDP_")}
    env.update({
        "CDP_DISTRIBUTION_POINT": DP, "CDP_SITE_ID": site.site_id,
        "CDP_TOKEN_PUBLIC_KEY": tokens.public_key_pem(site), "CDP_STORAGE_ACCOUNT": ACCOUNT,
        "CDP_BLOB_ENDPOINT": cloud.blob_endpoint(ACCOUNT), "CDP_STORAGE_KEY": key,
        "CDP_CA_BUNDLE": str(cloud.ca_bundle), "WEBSITE_INSTANCE_ID": "bench",
        "PYTHONPATH": str(ROOT),
    })
    certs = cloud.cert_paths
    log = open(folder / "frontend.log", "wb")
    proc = subprocess.Popen([sys.executable, "-m", "provisioner.frontend", "--port", str(port),
                             "--cert", str(certs.server_cert), "--key", str(certs.server_key)],
                            env=env, cwd=folder, stdout=log, stderr=subprocess.STDOUT)
    context = ssl.create_default_context(cafile=str(cloud.ca_bundle))
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"the front end exited:\n{(folder / 'frontend.log').read_text()}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=2) as raw:
                with context.wrap_socket(raw, server_hostname="127.0.0.1") as tls:
                    tls.sendall(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
                    if tls.recv(64).startswith(b"HTTP/1.1 200"):
                        return proc, port
        except OSError:
            time.sleep(0.2)
    proc.terminate()
    raise SystemExit("the front end did not answer /health")


# -- load generators -----------------------------------------------------------------------------

_WRK_LATENCY = re.compile(r"^\s*(50|99)(?:\.0+)?%\s+([\d.]+)(us|ms|s)\s*$", re.M)
_UNIT_MS = {"us": 0.001, "ms": 1.0, "s": 1000.0}


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of process ``pid`` so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def run_wrk(url: str, token: str | None, seconds: float, connections: int, folder: Path, server_pid: int) -> dict:
    """One wrk run. Its figures include the connections' TLS handshakes (RSA-4096 locally)."""
    script = folder / "auth.lua"
    script.write_text(f'wrk.headers["Authorization"] = "Bearer {token}"\n' if token else "\n")
    script.chmod(0o600)
    cpu_before = cpu_seconds(server_pid)
    proc = subprocess.run(["wrk", "-t2", f"-c{connections}", f"-d{max(1, round(seconds))}s", "--latency",
                           "-s", str(script), url], capture_output=True, text=True, check=True)
    cpu = cpu_seconds(server_pid) - cpu_before
    out = proc.stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out)[1])
    latency = {int(p): float(v) * _UNIT_MS[u] for p, v, u in _WRK_LATENCY.findall(out)}
    non_2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    socket_errors = re.search(r"Socket errors:.*", out)
    errors = int(non_2xx[1]) if non_2xx else 0
    if socket_errors:
        errors += sum(int(n) for n in re.findall(r"\d+", socket_errors[0]))
    requests = int(re.search(r"(\d+) requests in", out)[1])
    return {"rps": rps, "p50": latency[50], "p99": latency[99], "errors": errors,
            "cpu_us": cpu / requests * 1e6 if requests else 0.0}


def run_python_rounds(runs: dict[str, tuple[str, str | None]], seconds: float, rounds: int, connections: int,
                      ca: str, server_pid: int) -> dict[str, dict]:
    """Alternate the endpoints ``rounds`` times, so that both see the same machine, and pool the runs."""
    try:
        import uvloop
    except ImportError:
        uvloop = None
    runner = uvloop.run if uvloop else asyncio.run
    pooled = {name: ([], 0, 0.0) for name in runs}
    for _ in range(rounds):
        for name, (url, token) in runs.items():
            latencies, errors, cpu = runner(_python_load(url, token, seconds, connections, ca, server_pid))
            pooled[name] = (pooled[name][0] + latencies, pooled[name][1] + errors, pooled[name][2] + cpu)
    return {name: {"rps": len(latencies) / (seconds * rounds), "p50": _percentile(latencies, 0.50),
                   "p99": _percentile(latencies, 0.99), "errors": errors,
                   "cpu_us": cpu / len(latencies) * 1e6 if latencies else 0.0}
            for name, (latencies, errors, cpu) in pooled.items()}


def _percentile(latencies: list[float], p: float) -> float:
    """The ``p`` quantile in milliseconds."""
    ordered = sorted(latencies)
    return ordered[min(len(ordered) - 1, int(p * len(ordered)))] * 1000 if ordered else 0.0


async def _python_load(url: str, token: str | None, seconds: float, connections: int, ca: str,
                       server_pid: int) -> tuple[list[float], int, float]:
    """Open every connection (TLS handshakes), load for WARM_UP seconds, then measure ``seconds``.

    A minimal HTTP/1.1 client over asyncio streams, so that the load generator costs as
    little CPU as it can: one pre-built request, responses read by their Content-Length.
    Returns the latencies (seconds) of the measured requests, how many were not 200, and the
    server's CPU seconds while measuring."""
    host_port, path = url.removeprefix("https://").split("/", 1)
    host, port = host_port.split(":")
    auth = f"Authorization: Bearer {token}\r\n" if token else ""
    request = f"GET /{path} HTTP/1.1\r\nHost: {host_port}\r\n{auth}\r\n".encode()
    context = ssl.create_default_context(cafile=ca)
    streams = [await asyncio.open_connection(host, int(port), ssl=context) for _ in range(connections)]
    latencies: list[float] = []
    errors = 0
    measure_from = time.perf_counter() + WARM_UP
    stop_at = measure_from + seconds

    async def worker(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal errors
        while (start := time.perf_counter()) < stop_at:
            writer.write(request)
            head = await reader.readuntil(b"\r\n\r\n")
            await reader.readexactly(int(_CONTENT_LENGTH.search(head)[1]))
            if start >= measure_from:
                latencies.append(time.perf_counter() - start)
                errors += not head.startswith(b"HTTP/1.1 200")

    async def server_cpu() -> float:
        await asyncio.sleep(measure_from - time.perf_counter())
        before = cpu_seconds(server_pid)
        await asyncio.sleep(stop_at - time.perf_counter())
        return cpu_seconds(server_pid) - before

    cpu, *_ = await asyncio.gather(server_cpu(), *(worker(r, w) for r, w in streams))
    for _, writer in streams:
        writer.close()
    return latencies, errors, cpu


if __name__ == "__main__":
    sys.exit(main())
