"""Download a file with a progress bar and a checksum; it appears whole or not at all."""

from __future__ import annotations

import glob
import hashlib
import os
import urllib.error
import urllib.request
from pathlib import Path

from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)

from nrknet.errors import NRKNetError
from nrknet.utils.atomic import atomic_path, remove_stale_temporaries

CHUNK_BYTES = 1 << 20


class DownloadError(NRKNetError, OSError):
    """The file could not be fetched, or it is not the file that was expected."""


class ChecksumMismatch(DownloadError):
    pass


def sha256_of(path: str | os.PathLike) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(CHUNK_BYTES), b""):
            digest.update(chunk)
    return digest.hexdigest()


def download(
    url: str,
    dest: str | os.PathLike,
    sha256: str | None = None,
    progress: bool = True,
    timeout: float = 30.0,
) -> Path:
    """Fetch ``url`` into ``dest``, checking ``sha256`` when given.

    The bytes go to a temporary file beside ``dest`` that is renamed only once
    the download is complete and its checksum matches: a failure of any kind
    leaves ``dest`` as it was. Temporaries that interrupted downloads of
    ``dest`` left behind are removed first, once the process that wrote them
    has ended.
    """
    dest = Path(dest)
    if dest.parent.is_dir():  # what interrupted downloads of it left, once their writer has ended
        remove_stale_temporaries(dest.parent, glob.escape(dest.name))
    digest = hashlib.sha256()
    try:
        with (
            atomic_path(dest) as tmp,
            urllib.request.urlopen(url, timeout=timeout) as response,
            open(tmp, "wb") as out,
            _progress(progress) as bar,
        ):
            total = response.length
            task = bar.add_task(dest.name, total=total)
            for chunk in iter(lambda: response.read(CHUNK_BYTES), b""):
                out.write(chunk)
                digest.update(chunk)
                bar.advance(task, len(chunk))
            out.flush()
            if sha256 is not None and digest.hexdigest() != sha256.lower():
                raise ChecksumMismatch(
                    f"{url}: sha256 mismatch (expected {sha256.lower()}, got {digest.hexdigest()}); "
                    f"nothing was saved to {dest}"
                )
    except urllib.error.HTTPError as exc:
        raise DownloadError(f"cannot download {url}: HTTP {exc.code} {exc.reason}") from exc
    except (urllib.error.URLError, TimeoutError, ConnectionError) as exc:
        reason = getattr(exc, "reason", None) or exc
        raise DownloadError(f"cannot download {url}: {reason}") from exc
    return dest


def _progress(enabled: bool) -> Progress:
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        TimeRemainingColumn(),
        transient=True,
        disable=not enabled,
    )
