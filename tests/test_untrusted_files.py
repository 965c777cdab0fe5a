"""Files from elsewhere are data: a hostile checkpoint runs nothing through any entry point.

Each hostile file tries what an attacker would: a pickle that runs a command
when it is unpickled (in torch's zip format and in its legacy format), and a
checkpoint of plain data whose recorded model config names a callable to
import and call, at the top (``_target_: os.system``) or nested in a
component (``atoms``), one of which would truncate a file of the user's. Every
entry point that reads a checkpoint is run on every file, with
``TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1`` (torch's switch back to full
unpickling, which an explicit ``weights_only=True`` overrides): the payload
never runs, the victim file keeps its content, and the refusal is one line
with exit status 2.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from nrknet.errors import UntrustedCodeError
from nrknet.models.nrknet import NRKNet
from nrknet.weights.checkpoint import load_model, model_checkpoint, save_model

pytestmark = pytest.mark.slow

BIN = Path(sys.executable).parent
VICTIM_TEXT = "the user's own notes\n"


class Payload:
    """Unpickling this runs ``touch PROOF``."""

    def __init__(self, proof: Path) -> None:
        self.proof = proof

    def __reduce__(self):
        return (os.system, (f"touch {self.proof}",))


def _tiny_checkpoint() -> dict:
    torch.manual_seed(0)
    return model_checkpoint(NRKNet(width=4, num_levels=2))


def write_hostile_files(folder: Path, proof: Path, victim: Path) -> dict[str, Path]:
    """Every kind of hostile file, by name."""
    folder.mkdir(parents=True, exist_ok=True)
    files = {}
    pickled = {**_tiny_checkpoint(), "payload": Payload(proof)}
    files["pickle_zip"] = folder / "pickle_zip.ckpt"
    torch.save(pickled, files["pickle_zip"])
    files["pickle_legacy"] = folder / "pickle_legacy.ckpt"
    torch.save(pickled, files["pickle_legacy"], _use_new_zipfile_serialization=False)

    def with_model_config(name: str, config: dict) -> None:
        ckpt = _tiny_checkpoint()
        ckpt["nrknet"]["model_config"] = config
        files[name] = folder / f"{name}.ckpt"
        torch.save(ckpt, files[name])

    base = dict(_tiny_checkpoint()["nrknet"]["model_config"])
    with_model_config("target_top", {"_target_": "os.system", "command": f"touch {proof}"})
    with_model_config(
        "target_nested_call",
        {
            **base,
            "atoms": {"_target_": "os.system", "_partial_": True, "command": f"touch {proof}"},
        },
    )
    with_model_config(
        "target_nested_open",
        {
            **base,
            "atoms": {
                "_target_": "nrknet.ops.atoms.RecursiveAtoms",
                "_partial_": True,
                # Hydra builds nested configs first: this would open the victim for writing
                "bank": {"_target_": "builtins.open", "file": str(victim), "mode": "w"},
            },
        },
    )
    # no _target_ to check: an OmegaConf resolver would make one while Hydra builds the bank
    made = "{_target_: builtins.open, file: " + str(victim) + ", mode: w}"
    with_model_config(
        "interpolation",
        {
            **base,
            "atoms": {
                "_target_": "nrknet.ops.atoms.RecursiveAtoms",
                "_partial_": True,
                "bank": "${oc.create:" + made + "}",
            },
        },
    )
    return files


HOSTILE = (
    "pickle_zip",
    "pickle_legacy",
    "target_top",
    "target_nested_call",
    "target_nested_open",
    "interpolation",
)


@pytest.fixture(scope="module")
def hostile(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("hostile")
    proof, victim = root / "proof", root / "victim.txt"
    victim.write_text(VICTIM_TEXT)
    files = write_hostile_files(root / "files", proof, victim)
    photos = root / "photos"
    photos.mkdir()
    cv2.imwrite(str(photos / "a.png"), np.full((24, 24, 3), 128, np.uint8))
    return {"root": root, "proof": proof, "victim": victim, "files": files, "photos": photos}


def test_the_interpolation_file_would_truncate_the_victim_without_the_check(tmp_path, monkeypatch):
    """The hostile interpolation is real: with the check taken out, building the model opens
    the victim for writing."""
    import nrknet.weights.checkpoint as checkpoint

    victim = tmp_path / "victim.txt"
    victim.write_text(VICTIM_TEXT)
    files = write_hostile_files(tmp_path / "files", tmp_path / "proof", victim)
    monkeypatch.setattr(checkpoint, "recorded_targets", lambda config, where="model": iter(()))
    with pytest.raises(Exception):  # noqa: B017 - the bank is no module; the harm is done first
        load_model(files["interpolation"])
    assert victim.read_text() == ""


def run(program: str, *args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {
        **os.environ,
        "OMP_NUM_THREADS": "1",
        "WANDB_MODE": "offline",
        "TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD": "1",
    }
    env.pop("HYDRA_FULL_ERROR", None)
    return subprocess.run(
        [str(BIN / program), *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=300
    )


def entry_point_command(entry: str, ckpt: Path, work: Path, photos: Path) -> tuple[str, list[str]]:
    hydra = [f"paths.root_dir={work}", f"hydra.run.dir={work}/run", "metrics.lpips=off"]
    return {
        "predict": (
            "nrknet-predict",
            [str(photos), "--out", str(work / "out"), "--ckpt", str(ckpt)],
        ),
        "eval": ("nrknet-eval", [f"ckpt_path={ckpt}", *hydra]),
        "export": ("nrknet-export", [str(ckpt), str(work / "model.onnx")]),
        "convert": ("nrknet-convert", [str(ckpt), str(work / "converted.ckpt")]),
        "init_from": ("nrknet-train", [f"init_from={ckpt}", *hydra]),
        "resume": ("nrknet-train", [f"ckpt_path={ckpt}", *hydra]),
    }[entry]


IN_PROCESS = ("predict", "export", "convert")  # their main() returns the exit status
ENTRY_POINTS = (*IN_PROCESS, "eval", "init_from", "resume")


def run_entry_point(entry: str, ckpt: Path, work: Path, photos: Path, capsys, monkeypatch):
    """``(program, exit status, stderr)`` of one entry point on ``ckpt``."""
    program, args = entry_point_command(entry, ckpt, work, photos)
    if entry not in IN_PROCESS:
        proc = run(program, *args, cwd=work)
        return program, proc.returncode, proc.stderr
    from nrknet.convert import main as convert_main
    from nrknet.export import main as export_main
    from nrknet.predict import main as predict_main

    main = {"predict": predict_main, "export": export_main, "convert": convert_main}[entry]
    monkeypatch.setenv("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")
    monkeypatch.chdir(work)
    capsys.readouterr()
    status = main(args)
    return program, status, capsys.readouterr().err


@pytest.mark.parametrize("entry", ENTRY_POINTS)
def test_no_hostile_file_runs_anything_through_any_entry_point(
    hostile, entry, tmp_path, capsys, monkeypatch
):
    for kind in HOSTILE:
        ckpt = hostile["files"][kind]
        work = tmp_path / kind
        work.mkdir()
        program, status, stderr = run_entry_point(
            entry, ckpt, work, hostile["photos"], capsys, monkeypatch
        )
        where = f"{entry} on {kind}:\n{stderr[-3000:]}"
        assert not hostile["proof"].exists(), f"the payload ran: {where}"
        assert hostile["victim"].read_text() == VICTIM_TEXT, f"the victim was changed: {where}"
        assert status == 2, where
        assert "Traceback" not in stderr, where
        errors = [line for line in stderr.splitlines() if f"{program}: error:" in line]
        assert len(errors) == 1, where
        message = errors[0]
        assert ckpt.name in message, where
        # nothing after the error line: the message is one line
        assert stderr.rstrip().splitlines()[-1] == message, where
        assert not (work / "model.onnx").exists() and not (work / "converted.ckpt").exists()


def test_the_refusals_say_why(hostile, tmp_path):
    """In-process, the reasons: objects beyond plain data, code outside nrknet, not a class."""
    files = hostile["files"]
    for kind in ("pickle_zip", "pickle_legacy"):
        with pytest.raises(Exception, match="objects beyond tensors and plain data"):
            load_model(files[kind])
    with pytest.raises(UntrustedCodeError, match=r"os\.system, code outside nrknet.*trust_code"):
        load_model(files["target_top"])
    with pytest.raises(UntrustedCodeError, match=r"model\.atoms: .*os\.system.*trust_code=true"):
        load_model(files["target_nested_call"])
    with pytest.raises(UntrustedCodeError, match=r"model\.atoms\.bank: .*interpolation"):
        load_model(files["interpolation"], trust_code=True)
    # even when code is trusted, a checkpoint may only name nn.Module subclasses
    for kind, name in (("target_top", "os.system"), ("target_nested_open", "builtins.open")):
        with pytest.raises(UntrustedCodeError, match=f"{name} is not a torch.nn.Module subclass"):
            load_model(files[kind], trust_code=True)
    assert not hostile["proof"].exists()
    assert hostile["victim"].read_text() == VICTIM_TEXT


def test_a_file_named_like_the_default_model_is_not_used(hostile, tmp_path):
    """``nrknet-predict`` without --ckpt uses the bundled file; a name never means a local file."""
    (tmp_path / "unet-synthetic").write_bytes(hostile["files"]["pickle_zip"].read_bytes())
    (tmp_path / "nrknet-synthetic").write_bytes(hostile["files"]["pickle_zip"].read_bytes())
    photos = hostile["photos"]
    plain = run("nrknet-predict", str(photos), "--out", "out", "-q", cwd=tmp_path)
    assert plain.returncode == 0, plain.stderr[-3000:]
    assert (tmp_path / "out" / "a.png").is_file()
    named = run(
        "nrknet-predict", str(photos), "--out", "named", "-q", "--ckpt", "nrknet-synthetic",
        cwd=tmp_path,
    )  # fmt: skip
    assert named.returncode == 0, named.stderr[-3000:]
    assert not hostile["proof"].exists()
    # a path to such a file is written as one: it is then read, as data, and refused
    local = run(
        "nrknet-predict", str(photos), "--out", "local", "--ckpt", "./nrknet-synthetic",
        cwd=tmp_path,
    )  # fmt: skip
    assert local.returncode == 2 and "objects beyond tensors" in local.stderr, local.stderr
    assert not hostile["proof"].exists()


def test_the_project_s_own_checkpoints_load_with_no_option(tmp_path):
    from nrknet.models.unet_baseline import UNetBaseline
    from nrknet.weights import bundled_checkpoint

    for name in ("unet-synthetic", "nrknet-synthetic"):
        load_model(bundled_checkpoint(name))
    save_model(UNetBaseline(width=4, levels=2), tmp_path / "unet.ckpt")
    assert isinstance(load_model(tmp_path / "unet.ckpt"), UNetBaseline)


def test_a_weights_only_clean_file_with_a_state_dict_that_is_not_a_dict(tmp_path):
    ckpt = _tiny_checkpoint()
    ckpt["state_dict"] = [torch.zeros(1)]
    torch.save(ckpt, tmp_path / "odd.ckpt")
    with pytest.raises(Exception, match="not an NRKNet checkpoint"):
        load_model(tmp_path / "odd.ckpt")


def test_every_read_of_weights_goes_through_the_one_reader():
    """No ``torch.load`` outside :mod:`nrknet.utils.safe_load` in the package, the experiments
    or the benchmarks (tests read their own fixtures)."""
    import re

    root = Path(__file__).resolve().parents[1]
    calls = [
        f"{path.relative_to(root)}:{number}"
        for folder in ("src", "experiments", "benchmarks")
        for path in sorted((root / folder).rglob("*.py"))
        if path.name != "safe_load.py"
        for number, line in enumerate(path.read_text().splitlines(), start=1)
        if re.search(r"\btorch\.load\(|\bfrom torch import load\b", line)
    ]
    assert not calls, calls
