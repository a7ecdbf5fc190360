"""Downloading and unpacking the few datasets that have stable direct URLs (IXI, OASIS-1).

Dataset archives are large (IXI-T1.tar is several GB) and servers drop connections, so a
download streams into ``<dest>.part``, resumes it with an HTTP ``Range`` request after a cut,
checks the result against the registry's checksum and only then renames it onto ``dest``: a file
at ``dest`` is always complete. Archives come from the network, so :func:`extract` refuses any
member that could write outside the target directory (``..``, absolute names, links pointing
out, device files) before it writes anything, and builds the directory in a temporary sibling
that is swapped in only when every member is out. Only the standard library is used for the
transfer (urllib), so nothing extra needs installing on a cluster node.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import posixpath
import re
import stat
import tarfile
import time
import zipfile
from pathlib import Path
from urllib.error import HTTPError, URLError
from urllib.parse import urlparse
from urllib.request import Request, urlopen

from tqdm.auto import tqdm

from brainfm.atomic import atomic_dir, write_json
from brainfm.data.datasets.entry import DatasetEntry
from brainfm.errors import ConfigError, DataMissingError, InputError

__all__ = ["download", "extract", "fetch_dataset", "file_digest"]

_CHUNK = 1 << 20
# Statuses worth another try: the server or a proxy is busy, not "this URL is wrong".
_RETRY_STATUS = frozenset({408, 425, 429, 500, 502, 503, 504})
_USER_AGENT = "brainfm-fetch/0.1"
_ARCHIVE_SUFFIXES = (".tar.gz", ".tgz", ".tar.bz2", ".tar.xz", ".tar", ".zip")


class _Transient(Exception):
    """A failure that a later attempt (resuming the .part file) may not meet."""


def file_digest(path: str | Path, algorithm: str = "sha256") -> str:
    """Hex digest of a file, read in 1 MiB blocks so multi-GB archives need no memory."""
    h = hashlib.new(algorithm)
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(_CHUNK), b""):
            h.update(block)
    return h.hexdigest()


def _check_digests(path: Path, sha256: str | None, md5: str | None) -> str | None:
    """Return a description of the first mismatching checksum, or None when all match."""
    for algorithm, expected in (("sha256", sha256), ("md5", md5)):
        if expected:
            got = file_digest(path, algorithm)
            if got != expected.lower():
                return f"{algorithm} mismatch: expected {expected.lower()}, got {got}"
    return None


def _total_from_content_range(value: str | None) -> int | None:
    """Total size from a ``Content-Range: bytes a-b/N`` (or ``bytes */N``) header."""
    if not value:
        return None
    m = re.search(r"/(\d+)\s*$", value)
    return int(m.group(1)) if m else None


def _start_from_content_range(value: str | None) -> int | None:
    m = re.match(r"\s*bytes\s+(\d+)-", value or "")
    return int(m.group(1)) if m else None


def _fetch_once(url: str, part: Path, timeout: float, progress: bool, label: str) -> None:
    """One HTTP request that writes (or appends to) ``part``; raises _Transient on a cut."""
    offset = part.stat().st_size if part.exists() else 0
    request = Request(url, headers={"User-Agent": _USER_AGENT, "Accept-Encoding": "identity"})
    if offset:
        request.add_header("Range", f"bytes={offset}-")
    try:
        response = urlopen(request, timeout=timeout)  # noqa: S310 - scheme checked by download()
    except HTTPError as exc:
        if exc.code == 416 and offset:
            # The range starts at or past the end: the .part may already hold the whole file.
            total = _total_from_content_range(exc.headers.get("Content-Range"))
            if total == offset:
                return
            part.unlink(missing_ok=True)
            raise _Transient("the server refused to resume the partial file; starting again") from exc
        if exc.code in _RETRY_STATUS:
            raise _Transient(f"HTTP {exc.code} {exc.reason}") from exc
        raise DataMissingError(
            f"{url}: HTTP {exc.code} {exc.reason}. The URL in the dataset registry may have moved; "
            f"check the dataset's homepage and update the `download` section.") from exc
    except (URLError, TimeoutError, ConnectionError, http.client.HTTPException, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise _Transient(f"{type(exc).__name__}: {reason}") from exc

    with response:
        length = response.headers.get("Content-Length")
        expected = int(length) if length is not None and length.isdigit() else None
        if offset and response.status == 206:
            start = _start_from_content_range(response.headers.get("Content-Range"))
            if start != offset:
                part.unlink(missing_ok=True)
                raise _Transient(f"the server resumed at byte {start}, not {offset}; starting again")
            mode = "ab"
            total = _total_from_content_range(response.headers.get("Content-Range"))
        else:
            # 200: the server sent the whole file (it may simply not support ranges).
            offset, mode = 0, "wb"
            total = expected
        received = 0
        bar = tqdm(total=total, initial=offset, unit="B", unit_scale=True, unit_divisor=1024, desc=label,
                   leave=False, disable=None if progress else True)
        try:
            with open(part, mode) as fh:
                while True:
                    try:
                        chunk = response.read(_CHUNK)
                    except (http.client.IncompleteRead, ConnectionError, TimeoutError, OSError) as exc:
                        raise _Transient(f"connection lost after {offset + received} bytes ({exc})") from exc
                    if not chunk:
                        break
                    fh.write(chunk)
                    received += len(chunk)
                    bar.update(len(chunk))
                fh.flush()
                os.fsync(fh.fileno())
        finally:
            bar.close()
    if expected is not None and received < expected:
        raise _Transient(f"connection closed after {offset + received} of {offset + expected} bytes")


def download(url: str, dest: str | Path, *, sha256: str | None = None, md5: str | None = None,
             resume: bool = True, retries: int = 3, timeout: float = 60, progress: bool = True,
             backoff: float = 1.0) -> Path:
    """Download ``url`` to ``dest`` and return ``dest``.

    Streams into ``dest.part``; after a cut (or with an existing ``.part`` from an earlier run,
    when ``resume``) the next attempt asks for the remaining bytes with ``Range``. Transient
    failures (cuts, timeouts, 5xx, 429) are retried ``retries`` times with exponential
    ``backoff`` seconds; other HTTP errors (404, 403) fail at once with
    :class:`DataMissingError`. A checksum mismatch removes the bad file and raises
    :class:`InputError`. An existing ``dest`` is trusted (it only ever appears complete) unless
    a checksum is given and it does not match, in which case it is downloaded again.
    """
    scheme = urlparse(url).scheme
    if scheme not in ("http", "https"):
        raise ConfigError(f"{url}: only http(s) URLs can be downloaded (got scheme {scheme!r})")
    if retries < 0:
        raise ConfigError(f"retries must be >= 0, got {retries}")
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    if dest.exists():
        if _check_digests(dest, sha256, md5) is None:
            return dest
        dest.unlink()
    part = dest.with_name(dest.name + ".part")
    if not resume:
        part.unlink(missing_ok=True)
    attempt = 0
    while True:
        try:
            _fetch_once(url, part, timeout, progress, dest.name)
            break
        except _Transient as exc:
            attempt += 1
            if attempt > retries:
                kept = f"; the partial file {part} is kept and the next run resumes it" if part.exists() else ""
                raise DataMissingError(f"{url}: download failed after {attempt} attempt(s): {exc}{kept}") from exc
            if not resume:
                part.unlink(missing_ok=True)
            time.sleep(backoff * 2 ** (attempt - 1))
    if not part.exists():  # a zero-byte body never opened the file
        part.touch()
    problem = _check_digests(part, sha256, md5)
    if problem is not None:
        part.unlink(missing_ok=True)
        raise InputError(dest, f"downloaded from {url} but {problem}; the file was removed. Either the "
                               "server now serves a different file or the transfer was corrupted.")
    os.replace(part, dest)
    return dest


# ----------------------------------------------------------------------------- archives
def _archive_kind(path: Path) -> str:
    name = path.name.lower()
    if name.endswith(".zip"):
        return "zip"
    if name.endswith((".tar", ".tar.gz", ".tgz", ".tar.bz2", ".tar.xz")):
        return "tar"
    if zipfile.is_zipfile(path):
        return "zip"
    if tarfile.is_tarfile(path):
        return "tar"
    raise InputError(path, "not a tar or zip archive")


def _unsafe_name(name: str) -> str | None:
    """Why a member name could escape the target directory, or None when it cannot."""
    if not name or "\x00" in name:
        return "empty name"
    if name.startswith(("/", "\\")) or re.match(r"^[A-Za-z]:", name):
        return "absolute path"
    parts = re.split(r"[\\/]+", name)
    if ".." in parts:
        return "'..' component"
    return None


def _link_escapes(member_name: str, target: str, *, hard: bool) -> bool:
    """True when a link's target resolves outside the extraction root."""
    if not target or target.startswith(("/", "\\")) or re.match(r"^[A-Za-z]:", target):
        return True
    base = "" if hard else posixpath.dirname(member_name.replace("\\", "/"))
    resolved = posixpath.normpath(posixpath.join(base, target.replace("\\", "/")))
    return resolved == ".." or resolved.startswith("../") or resolved.startswith("/")


def _check_tar(tar: tarfile.TarFile, archive: Path) -> None:
    for m in tar.getmembers():
        why = _unsafe_name(m.name)
        if why:
            raise InputError(archive, f"refusing to extract member {m.name!r}: {why}")
        if m.issym() and _link_escapes(m.name, m.linkname, hard=False):
            raise InputError(archive, f"refusing to extract symlink {m.name!r} -> {m.linkname!r}: it points "
                                      "outside the extraction directory")
        if m.islnk() and _link_escapes(m.name, m.linkname, hard=True):
            raise InputError(archive, f"refusing to extract hard link {m.name!r} -> {m.linkname!r}: it points "
                                      "outside the extraction directory")
        if m.ischr() or m.isblk() or m.isfifo() or m.isdev():
            raise InputError(archive, f"refusing to extract special file {m.name!r}")


def _check_zip(zf: zipfile.ZipFile, archive: Path) -> None:
    for info in zf.infolist():
        why = _unsafe_name(info.filename)
        if why:
            raise InputError(archive, f"refusing to extract member {info.filename!r}: {why}")
        mode = info.external_attr >> 16
        if stat.S_ISLNK(mode):
            target = zf.read(info).decode("utf-8", "replace")
            if _link_escapes(info.filename, target, hard=False):
                raise InputError(archive, f"refusing to extract symlink {info.filename!r} -> {target!r}: it "
                                          "points outside the extraction directory")


def extract(archive: str | Path, dest_dir: str | Path) -> Path:
    """Unpack a tar (optionally gz/bz2/xz) or zip archive into ``dest_dir`` and return it.

    Every member is checked before anything is written; one unsafe member rejects the whole
    archive with :class:`InputError`. The directory is built next to ``dest_dir`` and swapped
    in when complete (an existing ``dest_dir`` is replaced as a whole).
    """
    archive, dest_dir = Path(archive), Path(dest_dir)
    if not archive.is_file():
        raise InputError(archive, "archive not found")
    kind = _archive_kind(archive)
    try:
        if kind == "tar":
            with tarfile.open(archive) as tar:
                _check_tar(tar, archive)
                with atomic_dir(dest_dir) as tmp:
                    if hasattr(tarfile, "data_filter"):  # Python >= 3.11.4: a second line of defence
                        tar.extractall(tmp, filter="data")
                    else:  # pragma: no cover - older interpreters; members were checked above
                        tar.extractall(tmp)  # noqa: S202
        else:
            with zipfile.ZipFile(archive) as zf:
                _check_zip(zf, archive)
                with atomic_dir(dest_dir) as tmp:
                    zf.extractall(tmp)
    except (tarfile.TarError, zipfile.BadZipFile, EOFError) as exc:
        raise InputError(archive, f"damaged archive ({type(exc).__name__}: {exc}); delete it and download again") from exc
    return dest_dir


def _strip_archive_suffix(name: str) -> str:
    lower = name.lower()
    for suffix in _ARCHIVE_SUFFIXES:
        if lower.endswith(suffix):
            return name[: -len(suffix)]
    return name


def fetch_dataset(entry: DatasetEntry, root: str | Path, *, progress: bool = True,
                  retries: int = 3, timeout: float = 60) -> list[Path]:
    """Download (and unpack) every item of ``entry.download`` under ``root``; return the targets.

    Finished items are recorded in ``root/.brainfm-fetch/``, so a rerun skips them without
    touching the network; an interrupted one resumes its ``.part`` file.
    """
    if not entry.download:
        raise ConfigError(
            f"{entry.source}: dataset '{entry.name}' has no `download` section (access: {entry.access}), so it "
            f"cannot be fetched automatically. Get it by hand:\n{entry.how_to_get.strip()}")
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    done_dir = root / ".brainfm-fetch"
    targets: list[Path] = []
    for item in entry.download:
        url = item["url"]
        fname = posixpath.basename(urlparse(url).path) or "download"
        archive = item.get("archive", "none")
        target = root / item.get("dest", fname if archive == "none" else _strip_archive_suffix(fname))
        # one record per URL (two URLs may share a file name)
        marker = done_dir / f"{hashlib.sha256(url.encode()).hexdigest()[:16]}-{fname}.json"
        if marker.exists() and target.exists():
            try:
                record = json.loads(marker.read_text())
            except (OSError, ValueError):
                record = {}
            if record.get("url") == url:
                targets.append(target)
                continue
        if archive == "none":
            download(url, target, sha256=item.get("sha256"), md5=item.get("md5"), progress=progress,
                     retries=retries, timeout=timeout)
        else:
            cached = root / ".downloads" / fname
            download(url, cached, sha256=item.get("sha256"), md5=item.get("md5"), progress=progress,
                     retries=retries, timeout=timeout)
            extract(cached, target)
            if not item.get("keep_archive", False):
                cached.unlink()
        write_json(marker, {"url": url, "target": str(target.relative_to(root)), "archive": archive,
                            "sha256": item.get("sha256"), "md5": item.get("md5")})
        targets.append(target)
    return targets

