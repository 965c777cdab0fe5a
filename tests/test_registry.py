"""Named weights: the shipped registry, and resolve_checkpoint against a real HTTP server on 127.0.0.1."""

from __future__ import annotations

import functools
import hashlib
import http.server
import re
import socket
import threading
from pathlib import Path

import pytest
import torch
import yaml

from conftest import FIXTURES
from nrknet.models.nrknet import NRKNet
from nrknet.weights import Registry, default_registry, resolve_checkpoint
from nrknet.weights.cache import converted_path, download_path
from nrknet.weights.checkpoint import CheckpointError, load_model, save_model
from nrknet.weights.reference import from_official

NAME = "authors-w8"


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def served(tmp_path, parity_fixture):
    """A folder served on 127.0.0.1 holding the authors' layout of a width-8 model."""
    folder = tmp_path / "served"
    folder.mkdir()
    torch.save(parity_fixture["state_dict"], folder / "NRKNet_w8.pth")
    server = http.server.ThreadingHTTPServer(
        ("127.0.0.1", 0), functools.partial(QuietHandler, directory=str(folder))
    )
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", folder / "NRKNet_w8.pth", server
    server.shutdown()
    server.server_close()


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def registry_with(tmp_path: Path, **fields) -> Registry:
    entry = {"kind": "download", "format": "reference", "filename": "NRKNet_w8.pth", **fields}
    path = tmp_path / "registry.yaml"
    path.write_text(yaml.safe_dump({"entries": {NAME: entry}}))
    return Registry.from_yaml(path)


def cached_files(home: Path) -> list[Path]:
    return sorted(p for p in home.rglob("*") if p.is_file())


def test_download_checks_converts_once_then_works_offline(tmp_path, served, parity_fixture):
    url, pth, server = served
    shapes = {k: list(v.shape) for k, v in parity_fixture["state_dict"].items()}
    registry = registry_with(
        tmp_path, url=f"{url}/NRKNet_w8.pth", sha256=sha256(pth), model={"shapes": shapes}
    )
    home = tmp_path / "home"
    path = resolve_checkpoint(NAME, registry=registry, home=home)
    entry = registry.get(NAME)
    assert path == converted_path(entry, home)
    assert sha256(download_path(entry, home)) == sha256(pth)
    expected = from_official(parity_fixture["state_dict"]).state_dict()
    for key, value in load_model(path).state_dict().items():
        torch.testing.assert_close(value, expected[key], rtol=0, atol=0)
    # second call: no network needed, nothing rewritten
    server.shutdown()
    server.server_close()
    mtime = path.stat().st_mtime_ns
    assert resolve_checkpoint(NAME, registry=registry, home=home) == path
    assert path.stat().st_mtime_ns == mtime


def test_checksum_mismatch_leaves_nothing_and_says_so(tmp_path, served):
    url, _, _ = served
    registry = registry_with(tmp_path, url=f"{url}/NRKNet_w8.pth", sha256="0" * 64)
    home = tmp_path / "home"
    with pytest.raises(CheckpointError, match="sha256 mismatch") as info:
        resolve_checkpoint(NAME, registry=registry, home=home)
    assert "nothing was saved" in str(info.value) and "\n" not in str(info.value)
    assert cached_files(home) == []


def test_unreachable_url_names_url_and_where_to_put_the_file(tmp_path):
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    url = f"http://127.0.0.1:{port}/NRKNet_w8.pth"
    registry = registry_with(tmp_path, url=url)
    home = tmp_path / "home"
    with pytest.raises(CheckpointError) as info:
        resolve_checkpoint(NAME, registry=registry, home=home)
    message = str(info.value)
    assert "\n" not in message
    assert url in message
    assert f"put it at {download_path(registry.get(NAME), home)}" in message
    assert cached_files(home) == []


def test_missing_file_on_server_is_a_download_error(tmp_path, served):
    url, _, _ = served
    registry = registry_with(tmp_path, url=f"{url}/absent.pth")
    with pytest.raises(CheckpointError, match=r"cannot download .*absent.pth: HTTP 404 "):
        resolve_checkpoint(NAME, registry=registry, home=tmp_path / "home")


def test_without_a_link_the_file_put_by_hand_is_used(tmp_path, served):
    _, pth, _ = served
    registry = registry_with(
        tmp_path, url=None, page="https://example.org/nrknet", sha256=sha256(pth)
    )
    home = tmp_path / "home"
    target = download_path(registry.get(NAME), home)
    with pytest.raises(
        CheckpointError, match=f"https://example.org/nrknet and put it at {target}$"
    ):
        resolve_checkpoint(NAME, registry=registry, home=home)
    target.parent.mkdir(parents=True)
    target.write_bytes(pth.read_bytes())
    path = resolve_checkpoint(NAME, registry=registry, home=home)
    assert load_model(path).config["width"] == 8


def test_file_by_hand_with_wrong_checksum_is_refused(tmp_path, served):
    _, pth, _ = served
    registry = registry_with(tmp_path, sha256="f" * 64)
    target = download_path(registry.get(NAME), tmp_path / "home")
    target.parent.mkdir(parents=True)
    target.write_bytes(pth.read_bytes())
    with pytest.raises(CheckpointError, match=f"{target}: sha256 .* is not the expected"):
        resolve_checkpoint(NAME, registry=registry, home=tmp_path / "home")


def test_announced_shapes_are_checked(tmp_path, served):
    url, _, _ = served
    shipped = default_registry().get("authors-dpdd")
    registry = registry_with(tmp_path, url=f"{url}/NRKNet_w8.pth", model=dict(shipped.model))
    with pytest.raises(
        CheckpointError, match=r"does not hold the weights 'authors-w8' announces: "
    ):
        resolve_checkpoint(NAME, registry=registry, home=tmp_path / "home")
    assert not converted_path(registry.get(NAME), tmp_path / "home").exists()


def test_bundled_entry_resolves_to_the_shipped_file(tmp_path):
    (tmp_path / "files").mkdir()
    save_model(NRKNet(width=8), tmp_path / "files" / "nrknet_w8.ckpt")
    (tmp_path / "registry.yaml").write_text(
        yaml.safe_dump(
            {
                "entries": {
                    "ours": {"kind": "bundled", "format": "nrknet", "filename": "nrknet_w8.ckpt"}
                }
            }
        )
    )
    registry = Registry.from_yaml(tmp_path / "registry.yaml")
    path = resolve_checkpoint("ours", registry=registry, home=tmp_path / "home")
    assert path == tmp_path / "files" / "nrknet_w8.ckpt"


def test_existing_path_is_returned_as_is_and_unknown_names_are_listed(tmp_path):
    path = tmp_path / "mine.ckpt"
    path.write_bytes(b"")
    assert resolve_checkpoint(path) == path
    assert resolve_checkpoint(str(path)) == path
    with pytest.raises(
        CheckpointError, match=r"not found: nope .*known: authors-dpdd, authors-lfdof"
    ):
        resolve_checkpoint("nope")


def test_default_cache_is_nrknet_home(tmp_path, monkeypatch):
    monkeypatch.setenv("NRKNET_HOME", str(tmp_path / "cache"))
    with pytest.raises(CheckpointError, match=str(tmp_path / "cache" / "weights" / "authors-dpdd")):
        resolve_checkpoint("authors-dpdd")


def test_shipped_registry_describes_the_authors_weights():
    reference = {}
    for line in (FIXTURES / "nrknet_reference_state_dict_keys.tsv").read_text().splitlines():
        key, shape, _ = line.split("\t")
        reference[key] = tuple(int(d) for d in shape.strip("()").split(",") if d.strip())
    registry = default_registry()
    for name in ("authors-dpdd", "authors-lfdof"):
        entry = registry.get(name)
        assert entry.kind == "download" and entry.format == "reference"
        assert entry.shapes == reference
        assert entry.model["width"] == 64 and entry.model["num_levels"] == 21
        assert entry.model["num_parameters"] == 6_094_107
        assert entry.page and (entry.url is None or entry.url.startswith("https://"))
    for name in registry:
        entry = registry.get(name)
        if entry.kind == "bundled":
            assert entry.bundled_path.is_file(), f"{name}: {entry.bundled_path} is not shipped"


@pytest.mark.parametrize(
    ("entry", "complaint"),
    [
        ({"kind": "ftp", "format": "reference", "filename": "a.pth"}, "kind must be one of"),
        ({"kind": "download", "format": "onnx", "filename": "a.pth"}, "format must be one of"),
        ({"kind": "download", "format": "nrknet", "filename": "../a.ckpt"}, "plain file name"),
        ({"kind": "download", "format": "nrknet", "filename": "a", "sha256": "xyz"}, "64 hex"),
        ({"kind": "download", "format": "nrknet", "filename": "a", "size": 3}, "unknown field"),
    ],
)
def test_bad_registry_entries_are_named(tmp_path, entry, complaint):
    path = tmp_path / "registry.yaml"
    path.write_text(yaml.safe_dump({"entries": {"bad": entry}}))
    with pytest.raises(
        CheckpointError, match=f"{re.escape(str(path))}: entry 'bad': .*{complaint}"
    ):
        Registry.from_yaml(path)


def test_a_name_is_never_a_file_and_a_path_never_a_name(tmp_path, monkeypatch):
    """A registry name means its entry whatever the working directory holds; ./NAME is the file."""
    monkeypatch.chdir(tmp_path)
    for name in ("unet-synthetic", "nrknet-synthetic"):
        (tmp_path / name).write_bytes(b"a file that happens to have the name")
        bundled = default_registry().get(name).bundled_path
        assert resolve_checkpoint(name) == bundled
        assert resolve_checkpoint(f"./{name}") == Path(f"./{name}")
        assert resolve_checkpoint(tmp_path / name) == tmp_path / name


@pytest.mark.parametrize("name", ["../../x", "a/b", ".hidden", "-x", "a b", ""])
def test_registry_names_are_plain_words(tmp_path, name):
    path = tmp_path / "registry.yaml"
    entry = {"kind": "download", "format": "nrknet", "filename": "a.ckpt"}
    path.write_text(yaml.safe_dump({"entries": {name: entry}}))
    with pytest.raises(CheckpointError, match="a name is a plain word"):
        Registry.from_yaml(path)
    path.write_text(yaml.safe_dump({"entries": {"ok": {**entry, "filename": ".."}}}))
    with pytest.raises(CheckpointError, match="plain file name"):
        Registry.from_yaml(path)


def test_a_cached_download_is_checked_at_every_use(tmp_path, served):
    url, pth, _ = served
    registry = registry_with(tmp_path, url=f"{url}/NRKNet_w8.pth", sha256=sha256(pth))
    home = tmp_path / "home"
    resolve_checkpoint(NAME, registry=registry, home=home)
    cached = download_path(registry.get(NAME), home)
    torch.save({"replaced": torch.zeros(1)}, cached)
    with pytest.raises(
        CheckpointError, match=f"{re.escape(str(cached))}: sha256 .* is not the expected"
    ):
        resolve_checkpoint(NAME, registry=registry, home=home)


def test_a_changed_converted_file_is_converted_again(tmp_path, served):
    url, pth, _ = served
    registry = registry_with(tmp_path, url=f"{url}/NRKNet_w8.pth", sha256=sha256(pth))
    home = tmp_path / "home"
    path = resolve_checkpoint(NAME, registry=registry, home=home)
    converted = path.read_bytes()
    save_model(NRKNet(width=8), path)  # another model put in its place
    assert path.read_bytes() != converted
    assert resolve_checkpoint(NAME, registry=registry, home=home) == path
    assert path.read_bytes() == converted


def test_temporaries_of_interrupted_downloads_go_once_their_writer_ended(tmp_path, served):
    import os
    import subprocess
    import sys

    from nrknet.utils.atomic import temporary_sibling

    url, pth, _ = served
    registry = registry_with(tmp_path, url=f"{url}/NRKNet_w8.pth", sha256=sha256(pth))
    home = tmp_path / "home"
    target = download_path(registry.get(NAME), home)
    target.parent.mkdir(parents=True)
    ended = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True
    )
    running = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    try:

        def temporary_of(pid: int) -> Path:
            tmp = temporary_sibling(target)
            tmp = tmp.with_name(tmp.name.replace(f".{os.getpid()}-", f".{pid}-", 1))
            tmp.write_bytes(b"part of a download")
            return tmp

        dead = temporary_of(int(ended.stdout))
        alive = temporary_of(running.pid)
        resolve_checkpoint(NAME, registry=registry, home=home)
        assert not dead.exists()
        assert alive.exists()  # its writer may still finish
    finally:
        running.kill()
        running.wait()
