"""What bench/distribute and bench/fetch share: AzCopy, a local cloud, data, measurement, the table.

Every tool runs as its own process against the same Azurite in the same run, timed by the same
wall clock (process start to exit) and measured by the same peak RSS (``ru_maxrss`` of that
process from ``wait4``: the largest single process of its tree). Progress goes to stderr, the
table to stdout. This file is also the plain-SDK peer: ``python harness.py sdk upload|download``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Self

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
AZCOPY = BENCH / "node_modules" / "@azure-tools" / "azcopy-linux" / "dist" / "bin" / "azcopy_linux_amd64"
MiB = 1 << 20
TIMEOUT = 900.0
DP = "bench"  # the distribution point the cdp rows use


class BenchError(Exception):
    """A failure that stops the benchmark, with one line saying why."""


class Unavailable(Exception):
    """This tool cannot run this case (yet): the row says why instead of showing numbers."""


def say(message: str) -> None:
    print(f"[bench] {message}", file=sys.stderr, flush=True)


def arguments(description: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--quick", action="store_true", help="small data, one repeat: a smoke run")
    parser.add_argument("--repeat", type=int, help="runs per tool and case, median shown (default 3)")
    parser.add_argument("--workdir", type=Path, help="keep the generated data here and reuse it")
    parser.add_argument("--json", action="store_true", help="print the rows as JSON instead of a table")
    args = parser.parse_args()
    args.repeat = args.repeat or (1 if args.quick else 3)
    return args


# -- AzCopy from npm, and the Debian library it links --------------------------------------------

def ensure_azcopy() -> Path:
    """The AzCopy binary: ``npm ci`` in bench/ when missing, libsecret-1-0 installed, version checked."""
    if not AZCOPY.exists():
        if not shutil.which("npm"):
            raise BenchError("npm is not installed; AzCopy comes from npm")
        say("installing AzCopy: npm ci in bench/ (pinned by bench/package-lock.json)")
        subprocess.run(["npm", "ci", "--no-audit", "--no-fund", "--loglevel=error"], cwd=BENCH,
                       stdout=sys.stderr, check=True)
    if not os.access(AZCOPY, os.X_OK):
        say("chmod +x the AzCopy binary (the npm package ships it without the executable bit)")
        AZCOPY.chmod(AZCOPY.stat().st_mode | 0o111)
    ensure_debian_package("libsecret-1-0")
    version = subprocess.run([AZCOPY, "--version"], capture_output=True, text=True, check=False)
    if version.returncode != 0:
        raise BenchError(f"AzCopy does not run: {(version.stderr or version.stdout).strip()}")
    return AZCOPY


def ensure_debian_package(package: str) -> None:
    status = subprocess.run(["dpkg-query", "-W", "-f=${Status}", package], capture_output=True,
                            text=True, check=False)
    if "install ok installed" in status.stdout:
        return
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        raise BenchError(f"AzCopy links {package}; install it: sudo apt-get install -y {package}")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    install = ["apt-get", "install", "-y", "-q", package]
    say(f"installing Debian's {package} (AzCopy links libsecret-1.so.0): {' '.join(install)}")
    if subprocess.run(install, env=env, stdout=sys.stderr, check=False).returncode != 0:
        say("apt-get update (the package lists are missing or stale), then install again")
        subprocess.run(["apt-get", "update", "-q"], env=env, stdout=sys.stderr, check=True)
        subprocess.run(install, env=env, stdout=sys.stderr, check=True)


# -- measuring one process ----------------------------------------------------------------------

@dataclass
class Measured:
    returncode: int
    seconds: float  # wall clock, start to exit
    rss: int  # bytes: ru_maxrss of the process (the largest single process of its tree)
    stdout: str
    stderr: str

    def last_line(self) -> str:
        lines = (self.stderr or self.stdout).strip().splitlines()
        return lines[-1] if lines else f"exit {self.returncode}"


def measure(argv: list, *, logs: Path, env: dict | None = None) -> Measured:
    """Run ``argv`` to its end (output to files under ``logs``); its wall seconds and peak RSS."""
    logs.mkdir(parents=True, exist_ok=True)
    name = logs / f"{Path(str(argv[0])).name}-{time.time_ns()}"
    with open(f"{name}.out", "w+b") as out, open(f"{name}.err", "w+b") as err:
        start = time.perf_counter()
        proc = subprocess.Popen([str(a) for a in argv], stdin=subprocess.DEVNULL, stdout=out,
                                stderr=err, env=env, start_new_session=True)
        timer = threading.Timer(TIMEOUT, _kill, (proc.pid,))
        timer.start()
        _, status, usage = os.wait4(proc.pid, 0)  # this child only: not Azurite, not others
        seconds = time.perf_counter() - start
        timer.cancel()
    proc.returncode = os.waitstatus_to_exitcode(status)  # reaped here; Popen must not wait again
    text = [Path(f"{name}{suffix}").read_text(errors="replace") for suffix in (".out", ".err")]
    return Measured(proc.returncode, seconds, usage.ru_maxrss * 1024, *text)


def _kill(pid: int) -> None:
    say(f"pid {pid} ran past {TIMEOUT:.0f} s: stopping it")
    for sig, wait in ((signal.SIGTERM, 10), (signal.SIGKILL, 0)):  # AzCopy ignores SIGTERM mid-job
        try:
            os.killpg(pid, sig)
        except ProcessLookupError:
            return
        time.sleep(wait)


# -- a local cloud in a temporary site ------------------------------------------------------------

class LocalRun:
    """A temporary ``CDP_HOME`` with a started local cloud, stopped (and deleted) at the end.

    ``CDP_HOME`` is set in this process's environment, so every ``cdp`` subprocess uses this
    site. The peers use the emulator account of the same Azurite.
    """

    def __init__(self, work: Path) -> None:
        self.home = Path(tempfile.mkdtemp(prefix="site-", dir=work))
        self.logs = work / "logs"
        self.cloud = None
        self.provisioned: list[str] = []

    def __enter__(self) -> Self:
        os.environ["CDP_HOME"] = str(self.home)
        from provisioner.localcloud import EMULATOR_ACCOUNT, LocalCloud
        from provisioner.site import Site

        self.cloud = LocalCloud(Site.open(self.home), progress=say)
        status = self.cloud.start()
        self.account, self.key = EMULATOR_ACCOUNT, self.cloud.account_key(EMULATOR_ACCOUNT)
        self.endpoint, self.ca_bundle = status["blob_endpoint"], status["ca_bundle"]
        self.service = self.cloud.blob_service_client(EMULATOR_ACCOUNT)
        return self

    def __exit__(self, *exc) -> None:
        for name in self.provisioned:
            say(f"cdp teardown {name}")
            done, result = Cdp(self).run("teardown", name, "--yes")
            if result is None:
                say(f"cdp teardown {name} failed: {done.last_line()}")
        if self.cloud is not None:
            self.cloud.stop()
        shutil.rmtree(self.home, ignore_errors=True)

    def new_container(self, name: str) -> str:
        """A fresh, empty container (deleted first if an earlier run left one)."""
        from azure.core.exceptions import ResourceExistsError, ResourceNotFoundError

        try:
            self.service.delete_container(name)
        except ResourceNotFoundError:
            pass
        for _ in range(50):  # Azurite refuses to re-create a container while it is being deleted
            try:
                self.service.create_container(name)
                return name
            except ResourceExistsError:
                time.sleep(0.2)
        raise BenchError(f"Azurite did not let container {name} be created again")

    def container_url(self, container: str, path: str = "") -> str:
        """``https://127.0.0.1:PORT/ACCOUNT/CONTAINER[/PATH]?SAS``, the SAS made by azure-storage-blob."""
        from azure.storage.blob import ContainerSasPermissions, generate_container_sas

        sas = generate_container_sas(
            self.account, container, account_key=self.key, protocol="https",
            permission=ContainerSasPermissions(read=True, add=True, create=True, write=True, list=True),
            expiry=datetime.now(UTC) + timedelta(hours=3),
        )
        return f"{self.endpoint}/{container}{'/' + path if path else ''}?{sas}"

    def stored_bytes(self, container: str) -> int:
        return sum(blob.size for blob in self.service.get_container_client(container).list_blobs())


# -- the tools: each returns {seconds, rss, bytes, note} for one run --------------------------------

class AzCopy:
    """AzCopy against our Azurite: IP-style SAS URLs, trusting the local CA through SSL_CERT_FILE."""

    def __init__(self, run: LocalRun, binary: Path) -> None:
        self.logs, self.binary, self.settings = run.logs, binary, {}
        self.env = {**os.environ, "SSL_CERT_FILE": str(run.ca_bundle),
                    "AZCOPY_LOG_LOCATION": str(run.logs / "azcopy"),
                    "AZCOPY_JOB_PLAN_LOCATION": str(run.logs / "azcopy-plans"),
                    "NO_PROXY": "127.0.0.1,localhost", "no_proxy": "127.0.0.1,localhost"}

    def version(self) -> str:
        return subprocess.run([self.binary, "--version"], capture_output=True, text=True,
                              check=False).stdout.strip()

    def __call__(self, verb: str, source: str, destination: str, from_to: str, *extra: str) -> dict:
        """``azcopy VERB``; bytes is its summary's BytesOverWire."""
        argv = [self.binary, verb, source, destination, f"--from-to={from_to}", "--output-type=json", *extra]
        done = measure(argv, env=self.env, logs=self.logs)
        messages = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
        by_type = {m.get("MessageType"): m["MessageContent"] for m in messages}  # the last of each
        summary = json.loads(by_type.get("EndOfJob", "{}"))
        if done.returncode != 0 or summary.get("JobStatus") != "Completed":
            why = by_type.get("Error") or done.last_line()
            raise BenchError(f"azcopy {verb} failed: {why.strip()[:300]}")
        if not self.settings and "Init" in by_type:  # what AzCopy chose for itself, from its log
            log = Path(json.loads(by_type["Init"])["LogFileLocation"]).read_text(errors="replace")
            for key, pattern in (("concurrency", r"Max concurrent network operations: (\d+)"),
                                 ("buffer", r"Max file buffer RAM ([\d.]+ GB)")):
                found = re.search(pattern, log)
                self.settings[key] = found.group(1).strip() if found else "?"
        return {"seconds": done.seconds, "rss": done.rss, "bytes": int(summary["BytesOverWire"]),
                "note": f"{summary['TransfersCompleted']} transfers"}


class Sdk:
    """The plain azure-storage-blob peer, each run in its own process (this file's ``sdk`` mode)."""

    def __init__(self, run: LocalRun) -> None:
        self.logs = run.logs
        self.env = {**os.environ, "BENCH_ENDPOINT": run.endpoint, "BENCH_ACCOUNT": run.account,
                    "BENCH_KEY": run.key, "BENCH_CA": str(run.ca_bundle)}

    def __call__(self, verb: str, container: str, path: Path) -> dict:
        done = measure([sys.executable, __file__, "sdk", verb, container, path], env=self.env, logs=self.logs)
        if done.returncode != 0:
            raise BenchError(f"sdk {verb} failed: {done.last_line()}")
        told = json.loads(done.stdout)
        return {"seconds": done.seconds, "rss": done.rss, "bytes": told["bytes"],
                "note": f"in-process {told['seconds']:.2f} s"}


class Cdp:
    """``cdp`` as subprocesses against the temporary site: this checkout's ``python -m
    provisioner``, or the command line in ``CDP_BENCH_CDP`` (for example another checkout's)."""

    def __init__(self, run: LocalRun) -> None:
        self.logs, self._known = run.logs, {}
        self.argv = os.environ.get("CDP_BENCH_CDP", "").split() or [sys.executable, "-m", "provisioner"]

    def available(self, command: str) -> bool:
        if command not in self._known:
            probe = [*self.argv, *command.split(), "--help"]
            self._known[command] = subprocess.run(probe, capture_output=True, check=False).returncode == 0
        return self._known[command]

    def run(self, *args: str) -> tuple[Measured, dict | None]:
        """``cdp ARGS --json``: the measurement and the JSON result (None when it failed)."""
        done = measure([*self.argv, *args, "--json"], logs=self.logs)
        try:
            return done, (json.loads(done.stdout) if done.returncode == 0 else None)
        except ValueError:
            return done, None

    def must(self, command: str, *args: str) -> tuple[Measured, dict]:
        """``cdp COMMAND ARGS --json`` for a row: Unavailable when missing or failing."""
        if not self.available(command):
            raise Unavailable(f"cdp {command}: not available yet")
        done, result = self.run(*command.split(), *args)
        if result is None:
            raise Unavailable(f"cdp {command}: failed: {done.last_line()[:200]}")
        return done, result


class Setup:
    """A setup step run once, on first need; if it cannot run, every row needing it says why."""

    def __init__(self, step) -> None:
        self.step, self.outcome = step, None

    def __call__(self) -> None:
        if self.outcome is None:
            try:
                self.step()
                self.outcome = ""
            except Unavailable as why:
                self.outcome = str(why)
        if self.outcome:
            raise Unavailable(self.outcome)


def cdp_distribution_point(run: LocalRun, cdp: Cdp, *commands: str) -> Setup:
    """Setup: ``cdp provision bench`` on the local cloud, once the needed commands exist."""
    def step() -> None:
        for command in commands:
            if not cdp.available(command):
                raise Unavailable(f"cdp {command}: not available yet")
        say(f"cdp provision {DP}")
        cdp.must("provision", DP)
        run.provisioned.append(DP)
    return Setup(step)


# -- data ---------------------------------------------------------------------------------------

class DataSets:
    """The benchmark data under ``work/data[-quick]``: random bytes, generated once and reused."""

    def __init__(self, folder: Path, file_mib: int, files: int, big_mib: int) -> None:
        self.file_mib, self.files, self.big_mib = file_mib, files, big_mib
        self.file = folder / "file" / "app.bin"  # the 256 MiB file
        self.many = folder / "files"  # 200 files of 1 MiB
        self.v2 = folder / "v2" / "app.bin"  # the 256 MiB file with 1 MiB changed in the middle
        self.big = folder / "big"  # the 1 GiB package: three large files and many 1 MiB files

    @classmethod
    def make(cls, work: Path, quick: bool) -> DataSets:
        sets = cls(work / "data-quick", 16, 20, 64) if quick else cls(work / "data", 256, 200, 1024)
        _random_file(sets.file, sets.file_mib * MiB)
        for i in range(sets.files):
            _random_file(sets.many / f"part-{i:03d}.bin", MiB)
        if not sets.v2.exists() or sets.v2.stat().st_size != sets.file.stat().st_size:
            say(f"writing {sets.v2}: a copy of {sets.file.name} with 1 MiB changed in the middle")
            sets.v2.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(sets.file, sets.v2)
            with open(sets.v2, "r+b") as f:
                f.seek(sets.file_mib * MiB // 2 - MiB // 2)
                f.write(os.urandom(MiB))
        quarter = sets.big_mib // 4
        for i in range(3):
            _random_file(sets.big / f"large-{i}.bin", quarter * MiB)
        for i in range(quarter):
            _random_file(sets.big / "small" / f"part-{i:03d}.bin", MiB)
        return sets

    @staticmethod
    def size(path: Path) -> int:
        return path.stat().st_size if path.is_file() else sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def _random_file(path: Path, size: int) -> None:
    if path.exists() and path.stat().st_size == size:
        return
    if size >= 64 * MiB:
        say(f"writing {path} ({size // MiB} MiB of random bytes)")
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as f:
        f.writelines(os.urandom(min(8 * MiB, size - offset)) for offset in range(0, size, 8 * MiB))


# -- cases, repeats and the table ----------------------------------------------------------------

@dataclass
class Row:
    case: str
    tool: str
    data_bytes: int
    samples: list[dict] = field(default_factory=list)
    unavailable: str | None = None

    def summary(self) -> dict:
        if self.unavailable or not self.samples:
            return {"case": self.case, "tool": self.tool, "unavailable": self.unavailable or "no run"}
        seconds = statistics.median(s["seconds"] for s in self.samples)
        middle = sorted(self.samples, key=lambda s: s["seconds"])[(len(self.samples) - 1) // 2]
        return {"case": self.case, "tool": self.tool, "seconds": seconds, "runs": len(self.samples),
                "data_bytes": self.data_bytes, "mb_per_s": self.data_bytes / seconds / 1e6,
                "bytes": middle["bytes"], "peak_rss": max(s["rss"] for s in self.samples),
                "note": middle.get("note", "")}


def run_case(case: str, data_bytes: int, tools: dict, repeat: int) -> list[Row]:
    """Run every tool of a case ``repeat`` times, interleaved so that drift hits all alike.

    ``tools`` maps a name to ``f(i) -> {seconds, rss, bytes, note}``, which may raise
    :class:`Unavailable`; ``i`` is the run, for fresh containers and package ids.
    """
    rows = {name: Row(case, name, data_bytes) for name in tools}
    for i in range(repeat):
        for name, run in tools.items():
            if rows[name].unavailable:
                continue
            say(f"{case}: {name} (run {i + 1}/{repeat})")
            try:
                rows[name].samples.append(run(i))
            except Unavailable as why:
                rows[name].unavailable = str(why)
                say(f"{case}: {why}")
    return list(rows.values())


def report(rows: list[Row], header: dict, as_json: bool) -> None:
    summaries = [row.summary() for row in rows]
    peers = {s["case"]: s for s in summaries if s["tool"].startswith("azcopy") and "seconds" in s}
    for s in summaries:
        if "seconds" in s and s["case"] in peers:
            s["vs_azcopy"] = peers[s["case"]]["seconds"] / s["seconds"]
    if as_json:
        print(json.dumps({"environment": header, "rows": summaries}, indent=2))
        return
    for key, value in header.items():
        print(f"{key + ':':<20} {value}")
    print(f"\n{'case':<22} {'tool':<18} {'seconds':>8} {'MB/s':>6} {'vs AzCopy':>9} {'moved MiB':>9} "
          f"{'% of data':>9} {'peak RSS MiB':>12}  note")
    for s in summaries:
        if "seconds" not in s:
            print(f"{s['case']:<22} {s['tool']:<18} {s['unavailable']}")
            continue
        ratio = f"{s['vs_azcopy']:.2f}x" if "vs_azcopy" in s else "-"
        print(f"{s['case']:<22} {s['tool']:<18} {s['seconds']:>8.2f} {s['mb_per_s']:>6.1f} {ratio:>9} "
              f"{s['bytes'] / MiB:>9.2f} {100 * s['bytes'] / s['data_bytes']:>8.2f}% "
              f"{s['peak_rss'] / MiB:>12.0f}  {s['note']}")


def environment(azcopy: AzCopy, repeat: int) -> dict:
    from importlib.metadata import version

    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor())
    memory = int(Path("/proc/meminfo").read_text().split()[1]) // 1024
    azurite = json.loads((REPO / "azurite" / "package.json").read_text())["dependencies"]["azurite"]
    load = ", ".join(f"{value:.1f}" for value in os.getloadavg())
    return {
        "machine": f"{cpu}, {os.cpu_count()} cores, {memory} MiB RAM, {platform.system()} "
                   f"{platform.release()}, load average {load}",
        "peers": f"{azcopy.version()}; azure-storage-blob {version('azure-storage-blob')}",
        "azcopy settings": f"AZCOPY_CONCURRENCY_VALUE {os.environ.get('AZCOPY_CONCURRENCY_VALUE') or 'unset'}, "
                           f"so {azcopy.settings.get('concurrency', '?')} connections (its own choice); "
                           f"file buffer {azcopy.settings.get('buffer', '?')}",
        "storage": f"Azurite {azurite} over HTTPS on 127.0.0.1, the limit: compare ratios, not MB/s",
        "timing": f"wall clock of each tool's process, median of {repeat}; MB = 10^6 bytes",
    }


# -- the plain-SDK peer, run in its own process -----------------------------------------------------

def _sdk(verb: str, container: str, path: str) -> None:
    from azure.storage.blob import ContainerClient

    env = os.environ
    client = ContainerClient(env["BENCH_ENDPOINT"], container, connection_verify=env["BENCH_CA"],
                             credential={"account_name": env["BENCH_ACCOUNT"], "account_key": env["BENCH_KEY"]})
    base, moved, start = Path(path), 0, time.perf_counter()
    if verb == "upload":  # one upload_blob per file, one file after the other: the plain way
        files = [base] if base.is_file() else sorted(p for p in base.rglob("*") if p.is_file())
        for file in files:
            with open(file, "rb") as data:
                client.upload_blob(file.relative_to(base).as_posix() if file != base else file.name, data,
                                   overwrite=True, max_concurrency=8)
            moved += file.stat().st_size
    else:
        for blob in client.list_blobs():
            target = base / blob.name
            target.parent.mkdir(parents=True, exist_ok=True)
            with open(target, "wb") as out:
                moved += client.download_blob(blob.name, max_concurrency=8).readinto(out)
    print(json.dumps({"bytes": moved, "seconds": time.perf_counter() - start}))


if __name__ == "__main__" and sys.argv[1:2] == ["sdk"]:
    _sdk(*sys.argv[2:5])
