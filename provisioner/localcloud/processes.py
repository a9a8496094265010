"""The local cloud's background processes: started detached, recognised, stopped by pid.

A service process outlives the command that started it (its own session, output to a log
file). It is recognised later by its pid *and* by an argument only it carries (the folder it
serves), so a pid file left behind after a reboot never makes us signal someone else's process.
"""

from __future__ import annotations

import http.client
import os
import signal
import socket
import ssl
import subprocess
import time
from pathlib import Path
from typing import Callable

from provisioner.errors import CdpError

STOP_TIMEOUT = 15.0
KILL_TIMEOUT = 5.0
POLL = 0.1

# Children started by this Python process, kept so they can be reaped (no zombies, no
# "still running" warnings when the Popen object would be garbage-collected).
_CHILDREN: dict[int, subprocess.Popen] = {}
_HAS_PROC = Path("/proc/self/cmdline").exists()


def spawn(argv: list[str], *, env: dict[str, str], cwd: Path, log_path: Path) -> int:
    """Start ``argv`` in its own session with stdout and stderr appended to ``log_path``."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "ab") as log:
        try:
            proc = subprocess.Popen(
                argv, cwd=cwd, env=env, stdin=subprocess.DEVNULL, stdout=log,
                stderr=subprocess.STDOUT, start_new_session=True, close_fds=True,
            )
        except OSError as exc:
            raise CdpError(f"cannot start {argv[0]}: {exc.strerror}") from None
    _CHILDREN[proc.pid] = proc
    return proc.pid


def alive(pid: int) -> bool:
    """Whether ``pid`` is a live process (a zombie is not)."""
    child = _CHILDREN.get(pid)
    if child is not None:
        if child.poll() is None:
            return True
        del _CHILDREN[pid]
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return _proc_state(pid) != "Z"


def command_line(pid: int) -> list[str]:
    """The arguments of process ``pid``, or [] if it is gone or unreadable."""
    if not _HAS_PROC:  # macOS and the BSDs: ask ps (arguments split on spaces)
        result = subprocess.run(["ps", "-ww", "-o", "args=", "-p", str(pid)],
                                capture_output=True, text=True, check=False)
        return result.stdout.split()
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return []
    return [arg.decode(errors="replace") for arg in raw.split(b"\0") if arg]


def carries(argv: list[str], marker: tuple[str, ...]) -> bool:
    """Whether ``marker`` occurs in ``argv`` as consecutive arguments."""
    n = len(marker)
    return any(tuple(argv[i:i + n]) == marker for i in range(len(argv) - n + 1))


def is_ours(pid: int | None, marker: tuple[str, ...]) -> bool:
    """Whether ``pid`` is alive and carries ``marker`` (e.g. ``("--location", folder)``)."""
    return bool(pid) and alive(pid) and carries(command_line(pid), marker)


def find(marker: tuple[str, ...]) -> list[int]:
    """Every live process that carries ``marker`` as consecutive arguments."""
    found = []
    if not _HAS_PROC:
        return found
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and carries(command_line(int(entry.name)), marker):
            if alive(int(entry.name)):
                found.append(int(entry.name))
    return found


def stop(pid: int, timeout: float = STOP_TIMEOUT) -> None:
    """SIGTERM ``pid``, wait up to ``timeout`` seconds, then SIGKILL it; return once it is gone."""
    for sig, wait in ((signal.SIGTERM, timeout), (signal.SIGKILL, KILL_TIMEOUT)):
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            break
        if _wait_gone(pid, wait):
            break
    else:
        raise CdpError(f"process {pid} did not stop after SIGKILL")
    _CHILDREN.pop(pid, None)


def port_free(port: int) -> bool:
    """Whether a server could listen on 127.0.0.1:``port`` now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        # As servers do (Node sets it): TIME_WAIT leftovers do not make a port busy.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def pick_port(preferred: int | None) -> int:
    """``preferred`` if it is still free (endpoints stay stable), else a free port."""
    if preferred and port_free(preferred):
        return preferred
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_ready(pid: int, check: Callable[[], None], *, what: str, log_path: Path,
               log_offset: int, timeout: float) -> None:
    """Wait until ``check()`` stops raising OSError; if ``pid`` dies or ``timeout`` passes,
    stop it and raise CdpError with the last lines of its log."""
    deadline = time.monotonic() + timeout
    last_error = "no answer"
    while True:
        if not alive(pid):
            _CHILDREN.pop(pid, None)
            raise CdpError(f"{what} exited while starting; its log ({log_path}) ends: "
                           f"{log_tail(log_path, log_offset)}")
        try:
            check()
            return
        except OSError as exc:
            last_error = str(exc) or type(exc).__name__
        if time.monotonic() >= deadline:
            stop(pid)
            raise CdpError(f"{what} did not answer within {timeout:.0f} s ({last_error}); "
                           f"its log ({log_path}) ends: {log_tail(log_path, log_offset)}")
        time.sleep(0.2)


def log_tail(log_path: Path, offset: int = 0, lines: int = 5) -> str:
    """The last ``lines`` non-empty lines written to ``log_path`` after ``offset``, on one line."""
    try:
        with open(log_path, "rb") as fh:
            fh.seek(offset)
            text = fh.read().decode(errors="replace")
    except FileNotFoundError:
        return "(no log)"
    tail = [line.strip() for line in text.splitlines() if line.strip()][-lines:]
    return " | ".join(tail) or "(empty)"


def log_size(log_path: Path) -> int:
    try:
        return log_path.stat().st_size
    except FileNotFoundError:
        return 0


def _wait_gone(pid: int, timeout: float) -> bool:
    child = _CHILDREN.get(pid)
    if child is not None:
        try:
            child.wait(timeout)
            return True
        except subprocess.TimeoutExpired:
            return False
    deadline = time.monotonic() + timeout
    while alive(pid):
        if time.monotonic() >= deadline:
            return False
        time.sleep(POLL)
    return True


def _proc_state(pid: int) -> str:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return ""
    # "pid (comm) S ..."; comm may contain spaces or parentheses, so split after the last ")".
    return stat.rpartition(")")[2].split()[0] if ")" in stat else ""


def https_probe(host: str, port: int, ca_bundle: Path, path: str,
                want_status: int | None = None) -> Callable[[], None]:
    """A check for :func:`wait_ready`: raises OSError until ``GET path`` gets an HTTP answer
    over TLS verified with ``ca_bundle`` (and, with ``want_status``, that status)."""
    context = ssl.create_default_context(cafile=str(ca_bundle))

    def check() -> None:
        conn = http.client.HTTPSConnection(host, port, context=context, timeout=5)
        try:
            conn.request("GET", path)
            response = conn.getresponse()
            response.read()
        except http.client.HTTPException as exc:
            raise OSError(f"bad HTTP answer: {exc!r}") from None
        finally:
            conn.close()
        if want_status is not None and response.status != want_status:
            raise OSError(f"GET {path} answered {response.status}")

    return check
