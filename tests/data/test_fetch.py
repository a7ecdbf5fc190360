"""Downloader and archive extraction against a real HTTP server on loopback.

The server serves in-memory files, honours (or, on request, ignores) ``Range`` headers, can cut a
response short after N bytes (declaring the full Content-Length, as a dropped connection looks),
and can answer with an error status first. Every request is logged, so resuming is checked by
the Range header the client actually sent, not by trusting the client.
"""

from __future__ import annotations

import hashlib
import io
import re
import socket
import tarfile
import threading
import zipfile
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
import yaml

from brainfm.data.fetch import download, extract, fetch_dataset, file_digest
from brainfm.data.datasets import build_manifest, load_dataset_entry
from brainfm.data.datasets.catalog import BUILTIN_ENTRIES
from brainfm.errors import ConfigError, DataMissingError, InputError


@dataclass
class _State:
    files: dict[str, bytes] = field(default_factory=dict)
    cut: dict[str, int] = field(default_factory=dict)  # path -> bytes sent before the connection drops (once)
    fail: dict[str, list[int]] = field(default_factory=dict)  # path -> statuses to answer first
    ignore_range: set[str] = field(default_factory=set)
    log: list[tuple[str, str | None]] = field(default_factory=list)


class _Handler(BaseHTTPRequestHandler):
    def do_GET(self):  # noqa: N802 - http.server API
        st: _State = self.server.state  # type: ignore[attr-defined]
        rng = self.headers.get("Range")
        st.log.append((self.path, rng))
        if st.fail.get(self.path):
            self.send_error(st.fail[self.path].pop(0))
            return
        body = st.files.get(self.path)
        if body is None:
            self.send_error(404, "Not Found")
            return
        start = 0
        if rng and self.path not in st.ignore_range:
            start = int(re.fullmatch(r"bytes=(\d+)-", rng).group(1))
            if start >= len(body):
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{len(body)}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
        else:
            self.send_response(200)
        payload = body[start:]
        self.send_header("Content-Length", str(len(payload)))
        self.send_header("Accept-Ranges", "bytes")
        self.end_headers()
        cut = st.cut.pop(self.path, None)
        if cut is not None:
            self.wfile.write(payload[:cut])
            self.wfile.flush()
            self.connection.shutdown(socket.SHUT_RDWR)
            self.close_connection = True
            return
        self.wfile.write(payload)

    def log_message(self, *args):  # keep pytest output clean
        pass


@pytest.fixture
def server():
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    httpd.state = _State()  # type: ignore[attr-defined]
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    base = f"http://127.0.0.1:{httpd.server_address[1]}"
    try:
        yield base, httpd.state
    finally:
        httpd.shutdown()
        httpd.server_close()


def _blob(n: int, seed: int = 0) -> bytes:
    return np.random.default_rng(seed).integers(0, 256, n, dtype=np.uint8).tobytes()


def _sha(b: bytes) -> str:
    return hashlib.sha256(b).hexdigest()


# ----------------------------------------------------------------------------- download
def test_download_verifies_and_is_idempotent(server, tmp_path):
    base, st = server
    body = _blob(300_000)
    st.files["/a.bin"] = body
    dest = download(f"{base}/a.bin", tmp_path / "d" / "a.bin", sha256=_sha(body), md5=hashlib.md5(body).hexdigest(),
                    progress=False)
    assert dest.read_bytes() == body and not (tmp_path / "d" / "a.bin.part").exists()
    assert st.log == [("/a.bin", None)]
    assert file_digest(dest) == _sha(body)
    download(f"{base}/a.bin", dest, sha256=_sha(body), progress=False)  # complete file: no request
    assert len(st.log) == 1


def test_resume_after_a_cut_within_one_call(server, tmp_path):
    base, st = server
    body = _blob(250_000, seed=1)
    st.files["/b.bin"], st.cut["/b.bin"] = body, 100_000
    dest = download(f"{base}/b.bin", tmp_path / "b.bin", sha256=_sha(body), retries=2, backoff=0, progress=False)
    assert dest.read_bytes() == body
    assert st.log == [("/b.bin", None), ("/b.bin", "bytes=100000-")]


def test_resume_across_runs_keeps_the_partial_file(server, tmp_path):
    base, st = server
    body = _blob(200_000, seed=2)
    st.files["/c.bin"], st.cut["/c.bin"] = body, 70_000
    dest = tmp_path / "c.bin"
    with pytest.raises(DataMissingError, match="after 1 attempt.*partial file .*c.bin.part is kept"):
        download(f"{base}/c.bin", dest, retries=0, progress=False)
    assert not dest.exists() and (tmp_path / "c.bin.part").stat().st_size == 70_000
    download(f"{base}/c.bin", dest, sha256=_sha(body), retries=0, progress=False)
    assert dest.read_bytes() == body and st.log[-1] == ("/c.bin", "bytes=70000-")


def test_server_without_range_support_restarts_cleanly(server, tmp_path):
    base, st = server
    body = _blob(50_000, seed=3)
    st.files["/d.bin"] = body
    st.ignore_range.add("/d.bin")
    (tmp_path / "d.bin.part").write_bytes(b"stale bytes from another file")
    dest = download(f"{base}/d.bin", tmp_path / "d.bin", sha256=_sha(body), progress=False)
    assert dest.read_bytes() == body and st.log == [("/d.bin", "bytes=29-")]


def test_complete_partial_file_is_accepted_on_416(server, tmp_path):
    base, st = server
    body = _blob(10_000, seed=4)
    st.files["/e.bin"] = body
    (tmp_path / "e.bin.part").write_bytes(body)
    dest = download(f"{base}/e.bin", tmp_path / "e.bin", sha256=_sha(body), progress=False)
    assert dest.read_bytes() == body and st.log == [("/e.bin", "bytes=10000-")]


def test_checksum_mismatch_removes_the_file(server, tmp_path):
    base, st = server
    st.files["/f.bin"] = _blob(5_000, seed=5)
    with pytest.raises(InputError, match="sha256 mismatch: expected 0{64}, got [0-9a-f]{64}; the file was removed"):
        download(f"{base}/f.bin", tmp_path / "f.bin", sha256="0" * 64, progress=False)
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(InputError, match="md5 mismatch"):
        download(f"{base}/f.bin", tmp_path / "f.bin", md5="f" * 32, progress=False)
    assert list(tmp_path.iterdir()) == []


def test_404_fails_at_once_and_503_is_retried(server, tmp_path):
    base, st = server
    with pytest.raises(DataMissingError, match=r"/missing.tar: HTTP 404 Not Found.*update the `download` section"):
        download(f"{base}/missing.tar", tmp_path / "m.tar", retries=3, backoff=0, progress=False)
    assert st.log == [("/missing.tar", None)] and not (tmp_path / "m.tar").exists()
    body = _blob(1_000, seed=6)
    st.files["/g.bin"], st.fail["/g.bin"] = body, [503, 503]
    download(f"{base}/g.bin", tmp_path / "g.bin", retries=2, backoff=0, progress=False)
    assert (tmp_path / "g.bin").read_bytes() == body and len(st.log) == 4
    st.fail["/g2.bin"], st.files["/g2.bin"] = [503, 503, 503], body
    with pytest.raises(DataMissingError, match="after 3 attempt.*HTTP 503"):
        download(f"{base}/g2.bin", tmp_path / "g2.bin", retries=2, backoff=0, progress=False)


def test_unsupported_scheme_and_unreachable_host(tmp_path):
    with pytest.raises(ConfigError, match="only http"):
        download("ftp://example.org/x.tar", tmp_path / "x.tar")
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()  # nothing listens there now
    with pytest.raises(DataMissingError, match="failed after 2 attempt"):
        download(f"http://127.0.0.1:{port}/x", tmp_path / "x", retries=1, backoff=0, timeout=2, progress=False)


# ----------------------------------------------------------------------------- extract
def _tar(path: Path, members: list[tuple[tarfile.TarInfo, bytes | None]], mode: str = "w") -> Path:
    with tarfile.open(path, mode) as tar:
        for info, data in members:
            if data is not None:
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
            else:
                tar.addfile(info)
    return path


def _file(name: str) -> tarfile.TarInfo:
    return tarfile.TarInfo(name)


def _link(name: str, target: str, kind=tarfile.SYMTYPE) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.linkname = kind, target
    return info


def test_extract_good_archives(tmp_path):
    good = _tar(tmp_path / "good.tar.gz", [(_file("data/a.txt"), b"A"), (_file("data/sub/b.txt"), b"BB"),
                                           (_link("data/alias.txt", "sub/b.txt"), None)], mode="w:gz")
    out = extract(good, tmp_path / "out")
    assert (out / "data/a.txt").read_bytes() == b"A" and (out / "data/alias.txt").read_bytes() == b"BB"
    zpath = tmp_path / "good.zip"
    with zipfile.ZipFile(zpath, "w") as zf:
        zf.writestr("x/y.txt", "why")
    assert (extract(zpath, tmp_path / "zout") / "x/y.txt").read_text() == "why"
    # extraction replaces the target directory as a whole
    assert not (extract(zpath, tmp_path / "out") / "data").exists()


@pytest.mark.parametrize("member, message", [
    ((_file("../evil.txt"), b"x"), "'..' component"),
    ((_file("ok/../../evil.txt"), b"x"), "'..' component"),
    ((_file("/tmp/evil.txt"), b"x"), "absolute path"),
    ((_link("ok/link", "../../outside"), None), "symlink .* points outside"),
    ((_link("link", "/etc/passwd"), None), "symlink .* points outside"),
    ((_link("hard", "../outside", tarfile.LNKTYPE), None), "hard link .* points outside"),
    ((_link("fifo", "", tarfile.FIFOTYPE), None), "special file"),
])
def test_malicious_tar_members_are_rejected(tmp_path, member, message):
    archive = _tar(tmp_path / "bad.tar", [(_file("fine.txt"), b"fine"), member])
    with pytest.raises(InputError, match=message):
        extract(archive, tmp_path / "dest" / "out")
    assert not (tmp_path / "dest" / "out").exists()
    assert not (tmp_path / "evil.txt").exists() and not (tmp_path / "dest" / "evil.txt").exists()


@pytest.mark.parametrize("name, link_target, message", [
    ("../evil.txt", None, "'..' component"),
    ("/abs/evil.txt", None, "absolute path"),
    ("a/link", "../../escape", "symlink .* points outside"),
])
def test_malicious_zip_members_are_rejected(tmp_path, name, link_target, message):
    zpath = tmp_path / "bad.zip"
    with zipfile.ZipFile(zpath, "w") as zf:
        zf.writestr("fine.txt", "fine")
        info = zipfile.ZipInfo(name)
        if link_target is not None:
            info.external_attr = (0o120777 << 16)
            zf.writestr(info, link_target)
        else:
            zf.writestr(info, "evil")
    with pytest.raises(InputError, match=message):
        extract(zpath, tmp_path / "out")
    assert not (tmp_path / "out").exists() and not (tmp_path / "evil.txt").exists()


def test_damaged_archive_is_a_clear_error(tmp_path):
    good = _tar(tmp_path / "x.tar.gz", [(_file("a.txt"), b"A" * 10_000)], mode="w:gz")
    truncated = tmp_path / "y.tar.gz"
    truncated.write_bytes(good.read_bytes()[:40])
    with pytest.raises(InputError, match="damaged archive"):
        extract(truncated, tmp_path / "out")
    assert not (tmp_path / "out").exists()


# ----------------------------------------------------------------------------- fetch_dataset
def _nifti_bytes() -> bytes:
    img = nib.Nifti1Image(np.zeros((2, 2, 2), np.float32), np.eye(4))
    return img.to_bytes()


def test_fetch_dataset_then_build_manifest(server, tmp_path):
    base, st = server
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for sid in ("001", "002"):
            data = _nifti_bytes()
            info = tarfile.TarInfo(f"IXT{sid}-T1.nii")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    archive = buf.getvalue()
    labels = pd.DataFrame({"id": ["001", "002"], "age": [30.5, 41.0]}).to_csv(index=False).encode()
    st.files["/pub/tiny-T1.tar.gz"], st.files["/pub/labels.csv"] = archive, labels
    entry_data = {
        "name": "tiny", "title": "Tiny open dataset", "access": "open", "homepage": f"{base}/pub/",
        "how_to_get": "Downloaded automatically from the loopback server in this test.",
        "license": "CC0", "citation": "Test data.",
        "modalities": {"T1": "tiny-T1/IXT{subject}-T1.nii"},
        "labels": {"file": "labels.csv", "ids": {"subject": "id"}, "columns": {"age": "age"}},
        "roles": {"pretrain": False, "tasks": ["brain_age"]},
        "split": {"type": "holdout", "test_fraction": 0.5, "seed": 0},
        "paper": {"section": "0", "text": "Not in the paper; a test fixture."},
        "download": [{"url": f"{base}/pub/tiny-T1.tar.gz", "archive": "tar.gz", "sha256": _sha(archive)},
                     {"url": f"{base}/pub/labels.csv", "sha256": _sha(labels)}],
    }
    path = tmp_path / "entries" / "tiny.yaml"
    path.parent.mkdir()
    path.write_text(yaml.safe_dump(entry_data))
    entry = load_dataset_entry(path)
    root = tmp_path / "data" / "tiny"
    targets = fetch_dataset(entry, root, progress=False)
    assert targets == [root / "tiny-T1", root / "labels.csv"]
    assert not (root / ".downloads" / "tiny-T1.tar.gz").exists()  # archive removed after unpacking
    df = build_manifest(entry, root, tmp_path / "results" / "manifest.parquet")
    assert df["subject"].tolist() == ["001", "002"] and df["age"].tolist() == [30.5, 41.0]
    n = len(st.log)
    fetch_dataset(entry, root, progress=False)  # finished items are skipped without network
    assert len(st.log) == n
    no_download = load_dataset_entry("adni", (BUILTIN_ENTRIES,))
    with pytest.raises(ConfigError, match="(?s)no `download` section .*access: dua.*adni.loni.usc.edu"):
        fetch_dataset(no_download, tmp_path / "adni")
