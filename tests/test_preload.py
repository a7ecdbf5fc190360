"""``brainfm preload``: steps forked from one warm process behave like steps started fresh.

The workflow test runs the tiny demo DAG under ``brainfm preload`` and reruns two of its jobs in fresh
processes to compare outputs exactly; here, the hand-off itself: streams, exit status, working
directory, environment, thread count, signals, and when a step must run on its own.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from brainfm import preload

BIN = Path(sys.executable).parent

# The preloading process with brainfm.cli.main replaced by a probe: each forked step reports where
# and how it ran. The `brainfm` commands of the runner script are ordinary fresh processes.
SERVER = textwrap.dedent("""
    import json, os, sys, time
    import brainfm.cli

    def probe(argv):
        import torch
        print(json.dumps({"pid": os.getpid(), "ppid": os.getppid(), "threads": torch.get_num_threads(),
                          "cwd": os.getcwd(), "mark": os.environ.get("MARK"), "argv": argv}), flush=True)
        print("a line on stderr", file=sys.stderr)
        if argv[0] == "sleep":
            time.sleep(120)
        return int(argv[1]) if argv[0] == "exit" else 0

    brainfm.cli.main = probe
    from brainfm.preload import preloaded
    print(json.dumps({"server": os.getpid()}), flush=True)
    sys.exit(preloaded(["bash", sys.argv[1]], modules=("torch",)))
""")

RUNNER = textwrap.dedent("""
    set -u
    cd sub
    MARK=first OMP_NUM_THREADS=1 brainfm exit 3 > out1 2> err1; echo $? > rc1
    OMP_NUM_THREADS=2 brainfm exit 0 > out2 2>&1; echo $? > rc2
    SLURM_JOB_ID=7 brainfm list-encoders > out3 2>&1; echo $? > rc3
    OMP_NUM_THREADS=1 brainfm sleep > out4 2>&1 &
    step=$!
    for i in $(seq 200); do [ -s out4 ] && break; sleep 0.1; done
    kill -TERM $step; wait $step; echo $? > rc4
    exit 5
""")


def _serve(tmp_path, runner: str) -> subprocess.CompletedProcess:
    """The probing preloading process (SERVER) running the bash script ``runner`` in ``tmp_path``."""
    (tmp_path / "sub").mkdir()
    (tmp_path / "runner.sh").write_text(runner)
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}"}
    env.pop(preload.ENV, None)
    return subprocess.run([sys.executable, "-c", SERVER, "runner.sh"], cwd=tmp_path, env=env, capture_output=True,
                          text=True, timeout=300)


def test_steps_fork_from_the_preloading_process_with_their_own_streams_status_and_threads(tmp_path):
    proc = _serve(tmp_path, RUNNER)
    assert proc.returncode == 5, proc.stderr  # the command's own exit status
    server = json.loads(proc.stdout.splitlines()[0])["server"]
    sub = tmp_path / "sub"
    first = json.loads((sub / "out1").read_text())
    assert first["ppid"] == server and first["argv"] == ["exit", "3"]  # forked by the preloading process
    assert first["cwd"] == str(sub) and first["mark"] == "first" and first["threads"] == 1
    assert (sub / "err1").read_text() == "a line on stderr\n"
    assert (sub / "rc1").read_text().strip() == "3"
    second = json.loads((sub / "out2").read_text().splitlines()[0])
    assert second["threads"] == 2 and second["mark"] is None and (sub / "rc2").read_text().strip() == "0"
    # inside a SLURM job the step runs in its own process: the real CLI, not the probe
    assert "braindino" in (sub / "out3").read_text().split() and (sub / "rc3").read_text().strip() == "0"
    # SIGTERM to the step's process reaches the forked child; the shell sees 128 + 15
    sleeper = json.loads((sub / "out4").read_text().splitlines()[0])["pid"]
    assert (sub / "rc4").read_text().strip() == "143"
    with pytest.raises(ProcessLookupError):
        os.kill(sleeper, 0)


def test_a_step_runs_on_its_own_without_a_preloading_process(tmp_path, monkeypatch):
    monkeypatch.delenv("SLURM_JOB_ID", raising=False)
    monkeypatch.delenv(preload.ENV, raising=False)
    assert preload.delegate(["list-encoders"]) is None
    monkeypatch.setenv(preload.ENV, str(tmp_path / "gone.socket"))  # the preloading process has ended
    assert preload.delegate(["list-encoders"]) is None
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(str(tmp_path / "live.socket"))
    listener.listen(1)
    monkeypatch.setenv(preload.ENV, str(tmp_path / "live.socket"))
    monkeypatch.setenv("SLURM_JOB_ID", "12")  # a SLURM job stays inside its allocation
    assert preload.delegate(["list-encoders"]) is None
    listener.close()


def test_preload_without_a_command_says_how_to_use_it():
    proc = subprocess.run([str(BIN / "brainfm"), "preload"], capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0 and "brainfm preload -- snakemake" in proc.stderr


def test_a_step_killed_outright_takes_its_child_with_it(tmp_path):
    """SIGKILL leaves no handler to forward: the preloading process sees the hang-up and stops the child."""
    runner = textwrap.dedent("""
        cd sub
        OMP_NUM_THREADS=1 brainfm sleep > out 2>&1 &
        step=$!
        for i in $(seq 200); do [ -s out ] && break; sleep 0.1; done
        kill -KILL $step; wait $step
        sleep 1
    """)
    proc = _serve(tmp_path, runner)
    assert proc.returncode == 0, proc.stderr
    sleeper = json.loads((tmp_path / "sub" / "out").read_text().splitlines()[0])["pid"]
    with pytest.raises(ProcessLookupError):
        os.kill(sleeper, 0)
