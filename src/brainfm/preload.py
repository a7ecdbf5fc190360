"""Warm starts for the many short ``brainfm`` steps of a local run.

A local run starts hundreds of ``brainfm`` processes, and each pays seconds importing torch, timm, pandas,
SciPy and scikit-learn before a job that often computes for less. ``brainfm preload -- CMD`` imports them
once in one process, then runs CMD (typically ``snakemake ...``) with ``BRAINFM_PRELOAD`` naming a Unix
socket. A ``brainfm`` step started under CMD hands its arguments, working directory, environment and
standard streams to that process, which forks a child to run the step and sends back its exit status;
the step's own process waits, forwards signals to the child, and exits with the child's status, so
Snakemake sees an ordinary job (its log, exit code, cancellation).

The child is a copy of a process that has only imported modules: no thread started, no tensor computed, no
file open (:func:`serve` checks the thread count before it forks), and it applies the job's thread
settings (``OMP_NUM_THREADS``, set per job by Snakemake) itself, so it computes what a fresh interpreter
would (tested: byte-identical outputs). Caveat: Snakemake's benchmark files then count the CPU time and
memory of the hand-off process, not of the child; wall time is exact.

A step runs in its own fresh process instead when ``BRAINFM_PRELOAD`` is unset, when the socket does not
answer, and inside a SLURM job (``SLURM_JOB_ID`` set), which must run within its own allocation.
"""

from __future__ import annotations

import contextlib
import importlib
import json
import os
import selectors
import signal
import socket
import struct
import sys
import tempfile
import threading
from collections.abc import Iterable, Sequence
from pathlib import Path

__all__ = ["ENV", "PRELOAD", "preloaded", "delegate", "serve"]

#: the environment variable that names the socket of a preloading process
ENV = "BRAINFM_PRELOAD"
#: the modules imported once: the heavy libraries and the steps' own modules
PRELOAD: tuple[str, ...] = (
    "numpy", "torch", "timm", "pandas", "scipy.stats", "scipy.ndimage", "sklearn.linear_model",
    "sklearn.metrics", "sklearn.model_selection", "nibabel", "matplotlib.pyplot", "brainfm.tasks.runner",
    "brainfm.tasks.data", "brainfm.tasks.runs", "brainfm.features.extract", "brainfm.features.store",
    "brainfm.models", "brainfm.preprocess.pipeline", "brainfm.preprocess.store", "brainfm.data.manifest",
    "brainfm.data.phantom", "brainfm.stats.runners", "brainfm.analysis.knn", "brainfm.analysis.cka",
    "brainfm.analysis.similarity", "brainfm.report.build", "brainfm.ssl.entry", "brainfm.device",
    "monai.networks.nets", "brainfm.models.baselines.brainiac", "brainfm.segmentation.steps",
    "brainfm.segmentation.job", "nnunetv2.inference.predict_from_raw_data",
)
_HEADER = struct.Struct("!I")
_PID = struct.Struct("!q")
_STATUS = struct.Struct("!i")


# ----------------------------------------------------------------------------- the step's side
def delegate(argv: Sequence[str]) -> int | None:
    """Run ``brainfm argv`` in the preloading process; its exit status, or None to run it here instead."""
    path = os.environ.get(ENV)
    if not path or os.environ.get("SLURM_JOB_ID"):
        return None
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.connect(path)
    except OSError:
        sock.close()
        return None
    with sock:
        payload = json.dumps({"argv": list(argv), "cwd": os.getcwd(), "env": dict(os.environ)}).encode()
        message = _HEADER.pack(len(payload)) + payload
        fds = [_open_fd(fd) for fd in (0, 1, 2)]
        socket.send_fds(sock, [message], fds)
        reply = _recv_exact(sock, _PID.size)
        if reply is None:
            print("brainfm: the preloading process closed the connection", file=sys.stderr)
            return 1
        child = _PID.unpack(reply)[0]

        def forward(signum: int, _frame: object) -> None:
            try:
                os.kill(child, signum)
            except ProcessLookupError:
                pass

        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(sig, forward)
        status = _recv_exact(sock, _STATUS.size)
    if status is None:
        print(f"brainfm: the preloading process ended before step pid {child} did", file=sys.stderr)
        return 1
    code = _STATUS.unpack(status)[0]
    return 128 - code if code < 0 else code  # killed by a signal: as a shell reports it


def _open_fd(fd: int) -> int:
    try:
        os.fstat(fd)
        return fd
    except OSError:  # a closed standard stream: hand over /dev/null
        return os.open(os.devnull, os.O_RDWR)


def _recv_exact(sock: socket.socket, n: int) -> bytes | None:
    data = b""
    while len(data) < n:
        try:
            chunk = sock.recv(n - len(data))
        except InterruptedError:
            continue
        if not chunk:
            return None
        data += chunk
    return data


# ----------------------------------------------------------------------------- the preloading side
def preloaded(command: Sequence[str], modules: Iterable[str] = PRELOAD) -> int:
    """Import ``modules``, run ``command`` with :data:`ENV` set, serve its steps; the command's exit status."""
    if not command:
        raise ValueError("preload: no command to run")
    for name in modules:
        try:
            importlib.import_module(name)
        except ImportError:  # an optional library: its steps import it themselves
            pass
    with tempfile.TemporaryDirectory(prefix="brainfm-preload-") as tmp:
        path = str(Path(tmp) / "socket")
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        listener.bind(path)
        listener.listen(64)
        env = dict(os.environ, **{ENV: path})
        sys.stdout.flush()
        sys.stderr.flush()
        runner = os.posix_spawnp(command[0], list(command), env)
        return serve(listener, runner)


def serve(listener: socket.socket, runner: int) -> int:
    """Fork a child per connection on ``listener`` until process ``runner`` exits; its exit status.

    The preloading process ignores SIGINT meanwhile (as a shell does for its foreground job): Ctrl-C
    reaches the runner and every step in the terminal's process group directly.
    """
    if threading.active_count() != 1:
        raise RuntimeError(f"preload: {threading.active_count()} threads after importing; forking would copy "
                           "their locks (an imported module started a thread)")
    wake_r, wake_w = os.pipe()
    os.set_blocking(wake_w, False)
    old_wakeup = signal.set_wakeup_fd(wake_w)
    old_chld = signal.signal(signal.SIGCHLD, lambda *_: None)
    old_int = signal.signal(signal.SIGINT, signal.SIG_IGN)
    sel = selectors.DefaultSelector()
    sel.register(listener, selectors.EVENT_READ, "accept")
    sel.register(wake_r, selectors.EVENT_READ, "wake")
    children: dict[int, socket.socket] = {}
    result: int | None = None
    try:
        while result is None:
            for key, _ in sel.select(timeout=1.0):
                if key.data == "accept":
                    conn, _ = listener.accept()
                    pid = _start(conn, listener, (wake_r, wake_w))
                    if pid is None:
                        conn.close()
                        continue
                    children[pid] = conn
                    sel.register(conn, selectors.EVENT_READ, pid)
                elif key.data == "wake":
                    os.read(wake_r, 4096)
                else:  # the step's process hung up early (killed): stop its child
                    sel.unregister(key.fileobj)
                    _kill(key.data)
            while True:
                try:
                    pid, status = os.waitpid(-1, os.WNOHANG)
                except ChildProcessError:  # none left
                    break
                if pid == 0:
                    break
                code = os.waitstatus_to_exitcode(status)
                if pid == runner:
                    result = code if code >= 0 else 128 - code
                elif pid in children:
                    conn = children.pop(pid)
                    with contextlib.suppress(KeyError):  # unless it hung up already
                        sel.unregister(conn)
                    try:
                        conn.sendall(_STATUS.pack(code))
                    except OSError:
                        pass
                    conn.close()
        for pid in children:  # the runner is gone: its steps too
            _kill(pid)
        return result
    finally:
        sel.close()
        signal.set_wakeup_fd(old_wakeup)
        signal.signal(signal.SIGCHLD, old_chld)
        signal.signal(signal.SIGINT, old_int)
        os.close(wake_r)
        os.close(wake_w)


def _kill(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        pass


def _start(conn: socket.socket, listener: socket.socket, pipe: tuple[int, int]) -> int | None:
    """Read a step's request from ``conn`` and fork its child; the child's pid (sent to the step too)."""
    try:
        data, fds, _, _ = socket.recv_fds(conn, 1 << 16, 3)
        if len(data) < _HEADER.size or len(fds) != 3:
            raise OSError("malformed request")
        size = _HEADER.unpack(data[:_HEADER.size])[0]
        body = data[_HEADER.size:]
        while len(body) < size:
            more = conn.recv(size - len(body))
            if not more:
                raise OSError("truncated request")
            body += more
        request = json.loads(body)
    except (OSError, ValueError) as exc:
        print(f"brainfm preload: dropped a request: {exc}", file=sys.stderr)
        return None
    pid = os.fork()
    if pid == 0:  # the child never returns
        for fd in (listener.fileno(), conn.fileno(), *pipe):
            os.close(fd)
        _run_step(request, fds)
    for fd in fds:
        os.close(fd)
    conn.sendall(_PID.pack(pid))
    return pid


def _run_step(request: dict, fds: list[int]) -> None:
    """In the forked child: become the step's process (streams, directory, environment, threads), run it."""
    code = 1
    try:
        signal.set_wakeup_fd(-1)
        for sig in (signal.SIGCHLD, signal.SIGTERM, signal.SIGHUP):
            signal.signal(sig, signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.default_int_handler)
        for target, fd in enumerate(fds):
            os.dup2(fd, target)
            os.close(fd)
        sys.stdin = open(0, closefd=False)  # noqa: SIM115 - the process's own streams
        sys.stdout = open(1, "w", closefd=False)  # noqa: SIM115
        sys.stderr = open(2, "w", buffering=1, closefd=False)  # noqa: SIM115
        os.chdir(request["cwd"])
        os.environ.clear()
        os.environ.update(request["env"])
        tempfile.tempdir = None  # TMPDIR of the job, not of the preloading process
        sys.argv = ["brainfm", *request["argv"]]
        _apply_threads(os.environ.get("OMP_NUM_THREADS"))
        import logging

        logging.root.handlers.clear()
        from brainfm.cli import main

        code = main(request["argv"])
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    except KeyboardInterrupt:
        code = 130
    except BaseException:  # noqa: BLE001 - report anything, exit non-zero
        import traceback

        traceback.print_exc()
        code = 1
    finally:
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except Exception:  # noqa: BLE001
                pass
        os._exit(code)


def _apply_threads(value: str | None) -> None:
    """The job's thread count: libraries read ``OMP_NUM_THREADS`` when loaded, here already loaded."""
    if not value or not value.isdigit() or int(value) < 1:
        return
    n = int(value)
    if "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(n)
    try:
        import threadpoolctl
    except ImportError:
        return
    threadpoolctl.threadpool_limits(n)
