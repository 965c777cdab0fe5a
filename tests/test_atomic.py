"""Atomic writes: a destination holds the old content or the new, never a partial one."""

from __future__ import annotations

import os
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

from nrknet.utils.atomic import (
    atomic_open,
    atomic_path,
    atomic_write_bytes,
    atomic_write_text,
    remove_stale_temporaries,
    temporary_sibling,
)


class WriterFailed(Exception):
    pass


def test_success_replaces_the_file(tmp_path: Path) -> None:
    target = tmp_path / "sub" / "result.txt"
    assert atomic_write_text(target, "first") == target  # the missing folder is created
    atomic_write_text(target, "second")
    assert target.read_text() == "second"
    atomic_write_bytes(target, b"\x00\x01")
    assert target.read_bytes() == b"\x00\x01"
    with atomic_open(target, "w", newline="") as f:
        f.write("a,b\r\n")
    assert target.read_bytes() == b"a,b\r\n"
    assert os.listdir(target.parent) == ["result.txt"]


def test_an_exception_inside_keeps_the_old_file_and_no_temporary(tmp_path: Path) -> None:
    target = tmp_path / "result.bin"
    atomic_write_bytes(target, b"old")
    with pytest.raises(WriterFailed), atomic_open(target) as f:
        f.write(b"half of the new")
        raise WriterFailed
    assert target.read_bytes() == b"old"
    with pytest.raises(WriterFailed), atomic_path(target) as tmp:
        tmp.write_bytes(b"new")
        raise WriterFailed
    assert target.read_bytes() == b"old"
    assert os.listdir(tmp_path) == ["result.bin"]


def test_an_exception_before_anything_exists_leaves_nothing(tmp_path: Path) -> None:
    with pytest.raises(WriterFailed), atomic_open(tmp_path / "never.txt", "w") as f:
        f.write("partial")
        raise WriterFailed
    assert os.listdir(tmp_path) == []


def test_atomic_open_refuses_reading_and_appending(tmp_path: Path) -> None:
    for mode in ("r", "a", "r+b"):
        with (
            pytest.raises(ValueError, match="mode must start with 'w'"),
            atomic_open(tmp_path / "x", mode),
        ):
            pass


def test_a_folder_destination_is_replaced_whole(tmp_path: Path) -> None:
    target = tmp_path / "dataset"
    target.mkdir()
    (target / "old_only.txt").write_text("old")
    (target / "shared.txt").write_text("old")
    with atomic_path(target) as tmp:
        tmp.mkdir()
        (tmp / "shared.txt").write_text("new")
        (tmp / "new_only.txt").write_text("new")
    assert sorted(os.listdir(target)) == ["new_only.txt", "shared.txt"]
    assert (target / "shared.txt").read_text() == "new"
    assert os.listdir(tmp_path) == ["dataset"]  # the old folder moved aside is gone too


def test_a_failed_folder_write_keeps_the_old_folder(tmp_path: Path) -> None:
    target = tmp_path / "dataset"
    target.mkdir()
    (target / "a.txt").write_text("old")
    with pytest.raises(WriterFailed), atomic_path(target) as tmp:
        tmp.mkdir()
        (tmp / "a.txt").write_text("new")
        raise WriterFailed
    assert os.listdir(target) == ["a.txt"] and (target / "a.txt").read_text() == "old"
    assert os.listdir(tmp_path) == ["dataset"]


def test_remove_stale_temporaries_removes_only_hidden_temporaries(tmp_path: Path) -> None:
    keep = [
        tmp_path / "last.ckpt",
        tmp_path / "notes.tmp",  # not hidden: somebody's own file
        tmp_path / ".hidden",
        tmp_path / ".last.ckpt",
    ]
    for path in keep:
        path.write_text("keep")
    stale_file = temporary_sibling(tmp_path / "last.ckpt")
    stale_file.write_text("partial")
    stale_folder = temporary_sibling(tmp_path / "images")
    stale_folder.mkdir()
    (stale_folder / "0.png").write_text("partial")
    assert stale_file.name.startswith(".last.ckpt.") and stale_file.name.endswith(".tmp")

    assert remove_stale_temporaries(tmp_path, "*.ckpt") == [stale_file]
    assert stale_folder.is_dir()
    assert remove_stale_temporaries(tmp_path) == [stale_folder]
    assert sorted(tmp_path.iterdir()) == sorted(keep)
    assert remove_stale_temporaries(tmp_path / "missing") == []


# A child that rewrites TARGET through atomic_open slowly, touching MARKER once half is written.
SLOW_WRITER = r"""
import sys, time
from pathlib import Path
from nrknet.utils.atomic import atomic_open
target, marker = sys.argv[1], Path(sys.argv[2])
with atomic_open(target, "wb") as f:
    for i in range(10_000):
        f.write(b"new content " * 100)
        f.flush()
        if i == 5:
            marker.touch()
        time.sleep(0.01)
"""


def test_sigkill_mid_write_leaves_the_old_file(tmp_path: Path) -> None:
    target, marker = tmp_path / "model.ckpt", tmp_path / "writing"
    atomic_write_bytes(target, b"old content")
    child = subprocess.Popen([sys.executable, "-c", SLOW_WRITER, str(target), str(marker)])
    try:
        deadline = time.monotonic() + 60
        while not marker.exists():
            assert child.poll() is None, f"the writer ended early with status {child.returncode}"
            assert time.monotonic() < deadline, "the writer never started writing"
            time.sleep(0.02)
        temporaries = list(tmp_path.glob(".model.ckpt.*.tmp"))
        assert len(temporaries) == 1 and temporaries[0].stat().st_size > 0
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=30)
    assert child.returncode == -signal.SIGKILL
    assert target.read_bytes() == b"old content"
    assert remove_stale_temporaries(tmp_path, "model.ckpt") == temporaries
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.ckpt", "writing"]


def test_a_replaced_file_keeps_its_permissions(tmp_path: Path) -> None:
    private = tmp_path / "token.txt"
    private.write_text("old")
    private.chmod(0o600)
    atomic_write_text(private, "new")
    assert private.read_text() == "new"
    assert stat.S_IMODE(private.stat().st_mode) == 0o600
    shared = tmp_path / "shared.txt"
    shared.write_text("old")
    shared.chmod(0o664)
    atomic_write_bytes(shared, b"new")
    assert stat.S_IMODE(shared.stat().st_mode) == 0o664


def test_a_temporary_whose_writer_still_runs_is_kept(tmp_path: Path) -> None:
    writer = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    try:
        tmp = temporary_sibling(tmp_path / "last.ckpt")
        tmp = tmp.with_name(tmp.name.replace(f".{os.getpid()}-", f".{writer.pid}-", 1))
        tmp.write_text("being written")
        assert remove_stale_temporaries(tmp_path, "*.ckpt") == []
        assert tmp.exists()
    finally:
        writer.kill()
        writer.wait()
    assert remove_stale_temporaries(tmp_path, "*.ckpt") == [tmp]
    # a temporary another machine writes into a shared folder is never removed from here
    other = tmp_path / ".last.ckpt.12345-0badc0de-0123abcd.tmp"
    other.write_text("written elsewhere")
    assert remove_stale_temporaries(tmp_path, "*.ckpt") == []
