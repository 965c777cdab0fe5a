"""The web demo (``nrknet-demo``): the work done per upload, the command line, the Gradio API through
``gradio_client``, and the page in a real browser (headless Chromium driven by Playwright).

The browser test saves a screenshot of the page; with ``NRKNET_DEMO_SCREENSHOT=docs/images/demo.png``
it is also written there (the README shows that file)::

    NRKNET_DEMO_SCREENSHOT=docs/images/demo.png .venv/bin/python -m pytest tests/test_demo.py -k browser
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from importlib.metadata import entry_points
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from nrknet.data.io import ImageReadError
from nrknet.demo import main
from nrknet.demo.engine import DemoEngine, bundled_models
from nrknet.demo.examples import EXAMPLES, example_paths
from nrknet.errors import UsageError
from nrknet.inference import SettingError

pytestmark = pytest.mark.usefixtures("one_thread")

BIN = Path(sys.executable).parent
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def engine(ckpt, unet_ckpt, tmp_path_factory) -> DemoEngine:
    return DemoEngine(
        [str(ckpt), str(unet_ckpt)],
        device=torch.device("cpu"),
        out_dir=tmp_path_factory.mktemp("results"),
    )


def _scene(height: int, width: int, seed: int = 0) -> np.ndarray:
    """A smooth random RGB scene in [0, 1] with some texture."""
    rng = np.random.default_rng(seed)
    coarse = rng.random((height // 8 + 2, width // 8 + 2, 3)).astype(np.float32)
    smooth = cv2.resize(coarse, (width, height), interpolation=cv2.INTER_CUBIC)
    return np.clip(0.8 * smooth + 0.2 * rng.random((height, width, 3)), 0, 1)


def _write_png(path: Path, rgb: np.ndarray, bit_depth: int = 8) -> Path:
    maxv = 255 if bit_depth == 8 else 65535
    dtype = np.uint8 if bit_depth == 8 else np.uint16
    assert cv2.imwrite(str(path), (rgb[:, :, ::-1] * maxv + 0.5).astype(dtype))
    return path


def _bad_uploads(folder: Path) -> dict[str, Path]:
    """Not an image, a truncated PNG, and files too small to hold an image."""
    good = _write_png(folder / "good.png", _scene(24, 32)).read_bytes()
    files = {
        "notes.png": b"not an image, just text\n",
        "truncated.png": good[: len(good) // 2],
        "tiny.jpg": b"\xff\xd8\xff",
        "empty.png": b"",
    }
    for name, data in files.items():
        (folder / name).write_bytes(data)
    return {name: folder / name for name in files}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# ----------------------------------------------------------------------------- the work per upload


def test_a_16_bit_photo_comes_back_16_bit_at_full_size_with_its_defocus_map(engine, ckpt, tmp_path):
    photo = _write_png(tmp_path / "photo16.png", _scene(40, 56), bit_depth=16)
    seen = []
    result = engine.deblur(photo, str(ckpt), progress=lambda f, m: seen.append((f, m)))
    written = cv2.imread(str(result.download), cv2.IMREAD_UNCHANGED)
    assert result.download.name == "photo16.deblurred.png"
    assert written.dtype == np.uint16 and written.shape == (40, 56, 3)
    assert result.before.shape == result.after.shape == (40, 56, 3)
    assert result.before.dtype == np.uint8
    assert np.abs(result.after.astype(int) - result.before.astype(int)).mean() > 1
    assert [p.name for p in result.defocus_files] == [
        "photo16.defocus.png",
        "photo16.defocus_color.png",
    ]
    radius = cv2.imread(str(result.defocus_files[0]), cv2.IMREAD_UNCHANGED)
    assert radius.dtype == np.uint16 and radius.shape == (40, 56)
    assert result.defocus_view is not None and result.defocus_view.shape[0] == 40
    assert "56 x 40 px, 16-bit RGB" in result.summary
    fractions = [f for f, _ in seen]
    assert fractions == sorted(fractions) and fractions[0] == 0 and fractions[-1] == 1


def test_greyscale_and_alpha_are_kept_and_a_u_net_has_no_defocus_map(engine, unet_ckpt, tmp_path):
    rgb = _scene(30, 36)
    grey = (cv2.cvtColor(rgb.astype(np.float32), cv2.COLOR_RGB2GRAY) * 255 + 0.5).astype(np.uint8)
    cv2.imwrite(str(tmp_path / "grey.png"), grey)
    alpha = np.tile(np.linspace(0, 255, 36).astype(np.uint8), (30, 1))
    bgr = (rgb[:, :, ::-1] * 255 + 0.5).astype(np.uint8)
    cv2.imwrite(str(tmp_path / "rgba.png"), np.dstack([bgr, alpha]))

    result = engine.deblur(tmp_path / "grey.png", str(unet_ckpt))
    assert cv2.imread(str(result.download), cv2.IMREAD_UNCHANGED).shape == (30, 36)
    assert result.defocus_view is None and result.defocus_files == []
    result = engine.deblur(tmp_path / "rgba.png")  # the default: the first model
    written = cv2.imread(str(result.download), cv2.IMREAD_UNCHANGED)
    assert written.shape == (30, 36, 4) and np.array_equal(written[..., 3], alpha)


def test_a_large_photo_is_deblurred_tile_by_tile_with_progress(engine, tmp_path):
    # a strip, so that the 36 windows (64 px cores with 128 px of context) are small
    photo = _write_png(tmp_path / "strip.png", _scene(48, 2304))
    seen = []
    result = engine.deblur(photo, tile=64, defocus=False, progress=lambda f, m: seen.append(m))
    assert "36 tiles" in result.summary
    assert "deblurring: 1 of 36 tiles" in seen and "deblurring: 36 of 36 tiles" in seen
    assert cv2.imread(str(result.download)).shape == (48, 2304, 3)


def test_bad_uploads_and_settings_get_one_line_messages(engine, tmp_path):
    for name, path in _bad_uploads(tmp_path).items():
        with pytest.raises(ImageReadError) as info:
            engine.deblur(path)
        message = str(info.value)
        assert message.startswith(f"cannot read image {name}: "), message
        assert str(tmp_path) not in message and "\n" not in message
    photo = _write_png(tmp_path / "ok.png", _scene(20, 20))
    with pytest.raises(UsageError, match="unknown model 'nope'; choose one of"):
        engine.deblur(photo, "nope")
    with pytest.raises(SettingError, match="tile must be a positive integer"):
        engine.deblur(photo, tile=0)


def test_the_example_photos_ship_small_and_decode():
    paths = example_paths()
    assert [p.name for p in paths] == [e.filename for e in EXAMPLES]
    assert sum(p.stat().st_size for p in paths) < 300_000
    for path in paths:
        assert cv2.imread(str(path)).shape == (384, 384, 3)


# ----------------------------------------------------------------------------- the command line


def test_console_script_help_and_light_import():
    scripts = {e.name: e.value for e in entry_points(group="console_scripts")}
    assert scripts.get("nrknet-demo") == "nrknet.demo:main"
    code = (
        "import sys, contextlib, io\n"
        "from nrknet.demo import main\n"
        "out = io.StringIO()\n"
        "with contextlib.redirect_stdout(out), contextlib.suppress(SystemExit):\n"
        "    main(['--help'])\n"
        "print(sorted(m for m in ('gradio', 'gradio_client', 'torch') if m in sys.modules))\n"
        "import nrknet.predict, nrknet.train, nrknet.eval, nrknet.export, nrknet.convert\n"
        "import nrknet.synth, nrknet.inference, nrknet.training\n"
        "print(sorted(m for m in ('gradio', 'gradio_client') if m in sys.modules))\n"
        "print(out.getvalue())\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    for_help, for_the_others, help_text = proc.stdout.split("\n", 2)
    assert for_help == "[]"  # --help loads neither Gradio nor torch
    assert for_the_others == "[]"  # the other commands never load Gradio
    for option in ("--ckpt", "--host", "--port", "--share", "--trust-code", "--device"):
        assert option in help_text
    assert "127.0.0.1" in help_text
    assert bundled_models()[0] == "nrknet-synthetic"


@pytest.mark.slow
def test_a_bad_checkpoint_or_a_busy_port_is_one_error_line(ckpt, tmp_path, capsys):
    assert main(["--ckpt", str(tmp_path / "missing.ckpt"), "--port", "0"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("nrknet-demo: error: checkpoint not found: ")
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        assert main(["--ckpt", str(ckpt), "--port", str(port)]) == 2
    err = capsys.readouterr().err
    assert f"nrknet-demo: error: Cannot find empty port in range: {port}-{port}" in err
    assert "Traceback" not in err


# ----------------------------------------------------------------------------- the API, through gradio_client


@pytest.fixture(scope="module")
def served(engine):
    """The page of ``engine`` served in this process (Gradio's server runs in its own thread)."""
    from nrknet.demo.app import build_app, launch

    app = build_app(engine)
    url, _ = launch(app, port=_free_port(), block=False)
    yield url
    app.close()


@pytest.mark.slow
def test_the_api_deblurs_an_upload(served, ckpt, tmp_path):
    from gradio_client import Client, handle_file

    photo = _write_png(tmp_path / "photo16.png", _scene(48, 64), bit_depth=16)
    client = Client(served, download_files=str(tmp_path / "downloads"), verbose=False)
    (before, after), defocus_view, download, defocus_files, summary = client.predict(
        handle_file(str(photo)), str(ckpt), 512, False, True, api_name="/deblur"
    )
    before, after = cv2.imread(before), cv2.imread(after)
    assert before.shape == after.shape == (48, 64, 3)
    assert np.abs(after.astype(int) - before.astype(int)).mean() > 1
    written = cv2.imread(download, cv2.IMREAD_UNCHANGED)
    assert Path(download).name == "photo16.deblurred.png"
    assert written.dtype == np.uint16 and written.shape == (48, 64, 3)
    assert cv2.imread(defocus_view) is not None
    assert [Path(p).name for p in defocus_files] == [
        "photo16.defocus.png",
        "photo16.defocus_color.png",
    ]
    assert summary.startswith(f"{ckpt}: 64 x 48 px, 16-bit RGB, whole image")


@pytest.mark.slow
def test_the_api_answers_a_bad_upload_with_the_project_message(served, tmp_path):
    from gradio_client import Client, handle_file
    from gradio_client.exceptions import AppError

    client = Client(served, download_files=str(tmp_path / "downloads"), verbose=False)
    for name, path in _bad_uploads(tmp_path).items():
        with pytest.raises(AppError) as info:
            client.predict(handle_file(str(path)), api_name="/deblur")
        message = str(info.value)
        assert re.fullmatch(rf"cannot read image {re.escape(name)}: [^\n]+", message), message
        assert "Traceback" not in message


# ----------------------------------------------------------------------------- the page, in a browser


@pytest.fixture
def chromium() -> str:
    """The system Chromium's path; skips with the reason where Playwright or Chromium is missing."""
    pytest.importorskip(
        "playwright.sync_api",
        reason="playwright is not importable (pip install -e '.[demo]')",
        exc_type=ImportError,
    )
    found = [shutil.which(name) for name in ("chromium", "chromium-browser")]
    executable = next(filter(None, found), None)
    if executable is None:
        pytest.skip(
            "no Chromium found (chromium or chromium-browser on PATH; apt-get install chromium)"
        )
    return executable


@pytest.fixture
def demo_command(tmp_path):
    """``nrknet-demo`` as a user starts it (the bundled models), on a free port; yields its URL."""
    log = tmp_path / "demo.log"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "GRADIO_ANALYTICS_ENABLED": "False"}
    with log.open("w") as out:
        proc = subprocess.Popen(
            [str(BIN / "nrknet-demo"), "--port", "0", "--threads", "1"],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=tmp_path,
        )
    try:
        deadline, url = time.monotonic() + 90, None
        while url is None or not _answers(url):
            assert proc.poll() is None, log.read_text()[-3000:]
            assert time.monotonic() < deadline, log.read_text()[-3000:]
            found = re.search(r"serving on (http://\S+)", log.read_text())
            url = found.group(1) if found else None
            time.sleep(0.3)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return response.status == 200
    except OSError:
        return False


@pytest.mark.slow
def test_the_page_in_a_browser(chromium, demo_command, tmp_path):
    from playwright.sync_api import expect, sync_playwright

    # a non-square crop of an example, so that a transposed result would show
    photo = tmp_path / "crop.png"
    cv2.imwrite(str(photo), cv2.imread(str(example_paths()[0]))[48:336])
    source = cv2.imread(str(photo))
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium, headless=True)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.goto(demo_command)
            expect(page.locator("#model input")).to_have_value("nrknet-synthetic")
            page.locator("#photo input[type=file]").set_input_files(str(photo))
            expect(page.locator("#input-preview img")).to_be_visible()
            page.locator("#deblur").click()
            link = page.locator("#download a[download]")
            expect(link).to_have_attribute("download", "crop.deblurred.png", timeout=60_000)
            expect(page.locator("#defocus img")).to_be_visible()
            expect(page.locator("#summary")).to_contain_text("384 x 288 px, 8-bit RGB")

            def fetch(url: str) -> np.ndarray:
                data = page.request.get(url).body()
                return cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)

            result = fetch(link.evaluate("a => a.href"))
            assert result.shape == source.shape == (288, 384, 3)
            assert np.abs(result.astype(int) - source.astype(int)).mean() > 1
            shown = [fetch(img.evaluate("i => i.src")) for img in page.locator("#result img").all()]
            assert len(shown) == 2 and all(s.shape[:2] == (288, 384) for s in shown)

            page.evaluate("window.scrollTo(0, 0)")
            page.mouse.move(0, 0)
            page.wait_for_timeout(500)
            shot = page.screenshot(path=tmp_path / "demo.png")
            assert cv2.imdecode(np.frombuffer(shot, np.uint8), 1).shape == (900, 1280, 3)
            if target := os.environ.get("NRKNET_DEMO_SCREENSHOT"):
                Path(target).parent.mkdir(parents=True, exist_ok=True)
                Path(target).write_bytes(shot)

            # a file that is no image: the project's one-line message on the page, no traceback
            page.reload()
            bad = tmp_path / "notes.png"
            bad.write_text("not an image")
            page.locator("#photo input[type=file]").set_input_files(str(bad))
            message = page.get_by_text("cannot read image notes.png: not a readable image")
            expect(message.first).to_be_visible(timeout=30_000)
            assert "Traceback" not in page.locator("body").inner_text()
        finally:
            browser.close()
