"""Finding the image pairs of each benchmark's folder layout.

Every scanner returns a list of ``(blurry_path, sharp_path, name)`` tuples
(or plain paths for CUHK-BD, which has no ground truth) and raises a
:class:`~nrknet.data.io.NRKNetDataError` subclass whose message names the
folder and shows the expected tree when the layout is wrong.

Layouts (see docs/datasets.md):

* DPDD: ``dd_dp_dataset_png/{train_c,val_c,test_c}/{source,target}/*.png``;
  names differ within a pair, so pairs are formed by sorted order. The root
  may be the dataset folder itself, its parent, a split folder inside it or a
  ``source``/``target`` folder. The synthetic sets use the same layout.
* LFDOF: ``{train_data,test_data}/input/IMG_x/*.png`` with ground truth
  ``{train_data,test_data}/ground_truth/IMG_x.png``; optionally a list file.
* RealDOF: ``source/NN.png`` and ``target/NN.png``, paired by name.
* RTF: ``image/0/image_NN.png`` and ``GT/sharp_NN.png``, paired by number.
* CUHK-BD: one flat folder of JPEG/PNG files.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from pathlib import Path

from nrknet.data.io import IMAGE_EXTENSIONS, DatasetLayoutError, PairingError
from nrknet.utils.checks import choice

__all__ = [
    "DPDD_SPLITS",
    "LFDOF_SPLITS",
    "RTF_SCORE_CROP",
    "Pair",
    "find_dpdd_root",
    "list_images",
    "scan_cuhk",
    "scan_dpdd",
    "scan_lfdof",
    "scan_realdof",
    "scan_rtf",
    "split_lfdof_scenes",
]

#: (blurry image, sharp image, name)
Pair = tuple[Path, Path, str]

DPDD_SPLITS = {"train": "train_c", "val": "val_c", "test": "test_c"}
DPDD_DIR_NAMES = ("dd_dp_dataset_png", "dd_dp_dataset_canon")
LFDOF_SPLITS = {"train": "train_data", "test": "test_data"}
#: RTF is scored on rows and columns 4..363 (a Python slice ``start:stop``).
RTF_SCORE_CROP = (4, 364)

DPDD_TREE = """\
dd_dp_dataset_png/            (or dd_dp_dataset_canon/)
├── train_c/source/*.png      blurry
├── train_c/target/*.png      sharp (paired with source by sorted order)
├── val_c/{source,target}/*.png
└── test_c/{source,target}/*.png"""

LFDOF_TREE = """\
LFDOF/
├── train_data/input/IMG_x/IMG_x_apK_NN.png     blurry (several per scene)
├── train_data/ground_truth/IMG_x.png            sharp
├── test_data/input/IMG_x/IMG_x_apK_NN.png
└── test_data/ground_truth/IMG_x.png"""

REALDOF_TREE = """\
RealDOF/
├── source/NN.png     blurry
└── target/NN.png     sharp (same names)"""

RTF_TREE = """\
RTF/
├── image/0/image_NN.png   blurry
└── GT/sharp_NN.png        sharp (paired by the number NN)"""

CUHK_TREE = """\
CUHK-BD/
└── *.jpg | *.png     blurry photos (no ground truth)"""


def _natural_key(path: Path) -> list[object]:
    parts = re.split(r"(\d+)", path.name)
    return [int(p) if p.isdigit() else p.lower() for p in parts]


def list_images(folder: str | os.PathLike) -> list[Path]:
    """Image files (by extension, any case) directly in ``folder``, natural-sorted.

    Hidden files (names starting with ``.``) are ignored.
    """
    folder = Path(folder)
    files = [
        p
        for p in folder.iterdir()
        if p.suffix.lower() in IMAGE_EXTENSIONS and not p.name.startswith(".") and p.is_file()
    ]
    return sorted(files, key=_natural_key)


def _layout_error(what: str, root: Path, problem: str, tree: str) -> DatasetLayoutError:
    return DatasetLayoutError(f"{what} root {root}: {problem}. Expected layout:\n{tree}")


def _require_dir(path: Path, what: str, root: Path, tree: str) -> None:
    if not path.is_dir():
        raise _layout_error(what, root, f"missing folder {path}", tree)


def _nonempty_images(folder: Path, what: str, root: Path, tree: str) -> list[Path]:
    _require_dir(folder, what, root, tree)
    files = list_images(folder)
    if not files:
        raise _layout_error(
            what, root, f"no images ({', '.join(IMAGE_EXTENSIONS)}) in {folder}", tree
        )
    return files


def _format_names(names: Sequence[str], limit: int = 20) -> str:
    shown = ", ".join(names[:limit])
    return shown + (f", ... ({len(names) - limit} more)" if len(names) > limit else "")


# --------------------------------------------------------------------------- DPDD


def _is_dpdd_root(path: Path) -> bool:
    return any((path / s / "source").is_dir() for s in DPDD_SPLITS.values())


def find_dpdd_root(root: str | os.PathLike) -> Path:
    """The folder that holds ``train_c``/``val_c``/``test_c`` for a DPDD-layout root.

    Accepts the dataset folder itself, its parent (containing
    ``dd_dp_dataset_png`` or ``dd_dp_dataset_canon``), a split folder, or a
    ``source``/``target`` folder inside a split.
    """
    root = Path(root).expanduser()
    if not root.exists():
        raise _layout_error("DPDD", root, "folder does not exist", DPDD_TREE)
    if not root.is_dir():
        raise _layout_error("DPDD", root, "is a file, not a folder", DPDD_TREE)
    candidates = [root, *(root / name for name in DPDD_DIR_NAMES)]
    if root.name in DPDD_SPLITS.values():
        candidates.append(root.parent)
    if root.name in ("source", "target") and root.parent.name in DPDD_SPLITS.values():
        candidates.append(root.parent.parent)
    for cand in candidates:
        if cand.is_dir() and _is_dpdd_root(cand):
            return cand
    found = sorted(p.name for p in root.iterdir())[:12]
    raise _layout_error(
        "DPDD",
        root,
        f"no split folder with source/ and target/ found (it contains: {', '.join(found) or 'nothing'})",
        DPDD_TREE,
    )


def _pair_by_order(blurry: list[Path], sharp: list[Path], bdir: Path, sdir: Path) -> list[Pair]:
    if len(blurry) != len(sharp):
        b_stems = {p.stem for p in blurry}
        s_stems = {p.stem for p in sharp}
        if b_stems & s_stems:
            unpaired = [f"{bdir.name}/{n}" for n in sorted(b_stems - s_stems)]
            unpaired += [f"{sdir.name}/{n}" for n in sorted(s_stems - b_stems)]
        else:
            longer, folder = (blurry, bdir) if len(blurry) > len(sharp) else (sharp, sdir)
            unpaired = [f"{folder.name}/{p.name}" for p in longer[min(len(blurry), len(sharp)) :]]
        raise PairingError(
            f"{len(blurry)} blurry images in {bdir} but {len(sharp)} sharp images in {sdir}; "
            f"unpaired: {_format_names(unpaired)}"
        )
    return [(b, s, b.stem) for b, s in zip(blurry, sharp, strict=True)]


def scan_dpdd(root: str | os.PathLike, split: str) -> list[Pair]:
    """Pairs of a DPDD-layout split (``"train"``, ``"val"`` or ``"test"``), by sorted order."""
    choice("DPDD split", split, DPDD_SPLITS)
    base = find_dpdd_root(root)
    split_dir = base / DPDD_SPLITS[split]
    bdir, sdir = split_dir / "source", split_dir / "target"
    blurry = _nonempty_images(bdir, "DPDD", base, DPDD_TREE)
    sharp = _nonempty_images(sdir, "DPDD", base, DPDD_TREE)
    return _pair_by_order(blurry, sharp, bdir, sdir)


# --------------------------------------------------------------------------- LFDOF


def _find_lfdof_split_dir(root: Path, split: str) -> Path:
    if not root.exists():
        raise _layout_error("LFDOF", root, "folder does not exist", LFDOF_TREE)
    name = LFDOF_SPLITS[split]
    for cand in (root / name, root / "LFDOF" / name):
        if (cand / "input").is_dir():
            return cand
    if root.name == name and (root / "input").is_dir():
        return root
    raise _layout_error("LFDOF", root, f"missing folder {root / name / 'input'}", LFDOF_TREE)


def _ground_truth_for(gt_dir: Path, scene: str) -> Path | None:
    for ext in IMAGE_EXTENSIONS:
        for cand in (gt_dir / f"{scene}{ext}", gt_dir / f"{scene}{ext.upper()}"):
            if cand.is_file():
                return cand
    return None


def scan_lfdof(
    root: str | os.PathLike, split: str, list_file: str | os.PathLike | None = None
) -> list[Pair]:
    """Pairs of an LFDOF split (``"train"`` or ``"test"``): each input with its scene's ground truth.

    With ``list_file``, the inputs are the lines of that text file instead of a
    folder scan: one relative path per line (``/`` or Windows ``\\``
    separators; blank lines and ``#`` comments ignored), relative to the
    dataset root (or, failing that, to the list file's folder). A line may
    also hold two paths, input then ground truth, separated by whitespace or
    a comma; otherwise the ground truth is ``<split>/ground_truth/<scene>.png``
    where ``<scene>`` is the input's parent folder.
    """
    choice("LFDOF split", split, LFDOF_SPLITS)
    root = Path(root).expanduser()
    if list_file is not None:
        return _scan_lfdof_list(root, split, Path(list_file).expanduser())
    split_dir = _find_lfdof_split_dir(root, split)
    in_dir, gt_dir = split_dir / "input", split_dir / "ground_truth"
    _require_dir(gt_dir, "LFDOF", root, LFDOF_TREE)
    scenes = sorted((p for p in in_dir.iterdir() if p.is_dir()), key=_natural_key)
    if not scenes:
        raise _layout_error("LFDOF", root, f"no scene folders (IMG_x/) in {in_dir}", LFDOF_TREE)
    pairs: list[Pair] = []
    missing: list[str] = []
    for scene in scenes:
        inputs = list_images(scene)
        if not inputs:
            continue
        gt = _ground_truth_for(gt_dir, scene.name)
        if gt is None:
            missing.append(scene.name)
            continue
        pairs.extend((p, gt, p.stem) for p in inputs)
    if missing:
        raise PairingError(
            f"LFDOF {split_dir}: {len(missing)} scene(s) in {in_dir} have no ground truth "
            f"{gt_dir}/<scene>.png: {_format_names(missing)}"
        )
    if not pairs:
        raise _layout_error("LFDOF", root, f"no input images under {in_dir}/*/", LFDOF_TREE)
    return pairs


def _resolve_listed(text: str, bases: Sequence[Path]) -> Path:
    rel = Path(text.strip().strip('"').replace("\\", "/"))
    if rel.is_absolute():
        return rel
    for base in bases:
        cand = base / rel
        if cand.exists():
            return cand
    return bases[0] / rel


def _scan_lfdof_list(root: Path, split: str, list_file: Path) -> list[Pair]:
    try:
        lines = list_file.read_text(encoding="utf-8-sig").splitlines()
    except OSError as exc:
        raise DatasetLayoutError(
            f"cannot read LFDOF list file {list_file}: {exc.strerror or exc}"
        ) from None
    bases = [root, list_file.parent]
    pairs: list[Pair] = []
    for lineno, raw in enumerate(lines, 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        tokens = [t for t in re.split(r"[,\t]|\s+", line) if t]
        if len(tokens) == 2 and all(Path(t).suffix.lower() in IMAGE_EXTENSIONS for t in tokens):
            inp, gt = _resolve_listed(tokens[0], bases), _resolve_listed(tokens[1], bases)
        elif Path(line).suffix.lower() in IMAGE_EXTENSIONS:
            inp = _resolve_listed(line, bases)
            parts = inp.parts
            scene = inp.parent.name
            if "input" in parts:
                k = len(parts) - 1 - parts[::-1].index("input")
                gt_dir = Path(*parts[:k]) / "ground_truth"
            else:
                gt_dir = _find_lfdof_split_dir(root, split) / "ground_truth"
            gt = _ground_truth_for(gt_dir, scene) or gt_dir / f"{scene}.png"
        else:
            raise DatasetLayoutError(
                f"LFDOF list file {list_file}, line {lineno}: expected an image path "
                f"(or 'input ground_truth'), got {raw!r}"
            )
        pairs.append((inp, gt, inp.stem))
    if not pairs:
        raise DatasetLayoutError(f"LFDOF list file {list_file} lists no images")
    return pairs


def split_lfdof_scenes(pairs: Sequence[Pair], num_val_scenes: int) -> tuple[list[Pair], list[Pair]]:
    """Hold out ``num_val_scenes`` training scenes for validation (LFDOF has no val split).

    Scenes are identified by their ground-truth file; the held-out ones are
    evenly spaced in natural-sorted order, so the choice is fixed and does not
    depend on any seed. Returns ``(train_pairs, val_pairs)``.
    """
    scenes = sorted({p[1] for p in pairs}, key=_natural_key)
    k = min(max(int(num_val_scenes), 0), max(len(scenes) - 1, 0))
    if k == 0:
        return list(pairs), []
    held = {scenes[int(i * len(scenes) / k)] for i in range(k)}
    train = [p for p in pairs if p[1] not in held]
    val = [p for p in pairs if p[1] in held]
    return train, val


# --------------------------------------------------------------------------- RealDOF, RTF, CUHK


def _pair_by_key(
    blurry: dict[str, Path], sharp: dict[str, Path], bdir: Path, sdir: Path, what: str
) -> list[Pair]:
    only_b = sorted(set(blurry) - set(sharp), key=lambda k: _natural_key(Path(k)))
    only_s = sorted(set(sharp) - set(blurry), key=lambda k: _natural_key(Path(k)))
    if only_b or only_s:
        unpaired = [blurry[k].name for k in only_b] + [sharp[k].name for k in only_s]
        raise PairingError(
            f"{what}: {len(blurry)} blurry images in {bdir} and {len(sharp)} sharp images in {sdir} "
            f"do not pair up; unpaired: {_format_names(unpaired)}"
        )
    keys = sorted(blurry, key=lambda k: _natural_key(Path(k)))
    return [(blurry[k], sharp[k], blurry[k].stem) for k in keys]


def _unique_map(files: list[Path], key_of, folder: Path, what: str) -> dict[str, Path]:
    out: dict[str, Path] = {}
    for f in files:
        key = key_of(f)
        if key is None:
            continue
        if key in out:
            raise PairingError(
                f"{what}: {out[key].name} and {f.name} in {folder} share the key {key!r}"
            )
        out[key] = f
    return out


def scan_realdof(root: str | os.PathLike) -> list[Pair]:
    """RealDOF pairs: ``source/NN.png`` with ``target/NN.png`` (same file stem)."""
    root = Path(root).expanduser()
    if not root.exists():
        raise _layout_error("RealDOF", root, "folder does not exist", REALDOF_TREE)
    base = root
    if not (root / "source").is_dir() and (root / "RealDOF" / "source").is_dir():
        base = root / "RealDOF"
    bdir, sdir = base / "source", base / "target"
    blurry = _nonempty_images(bdir, "RealDOF", root, REALDOF_TREE)
    sharp = _nonempty_images(sdir, "RealDOF", root, REALDOF_TREE)
    return _pair_by_key(
        _unique_map(blurry, lambda p: p.stem, bdir, "RealDOF"),
        _unique_map(sharp, lambda p: p.stem, sdir, "RealDOF"),
        bdir,
        sdir,
        "RealDOF",
    )


def _trailing_number(path: Path) -> str | None:
    m = re.search(r"(\d+)$", path.stem)
    return str(int(m.group(1))) if m else None


def scan_rtf(root: str | os.PathLike, subset: str = "0") -> list[Pair]:
    """RTF pairs: ``image/<subset>/image_NN.png`` with ``GT/sharp_NN.png`` (same number NN).

    Score these on rows and columns :data:`RTF_SCORE_CROP` (4..363).
    """
    root = Path(root).expanduser()
    if not root.exists():
        raise _layout_error("RTF", root, "folder does not exist", RTF_TREE)
    base = root
    if not (root / "GT").is_dir() and (root / "RTF" / "GT").is_dir():
        base = root / "RTF"
    bdir = base / "image" / subset
    if not bdir.is_dir() and (base / "image").is_dir() and list_images(base / "image"):
        bdir = base / "image"
    sdir = base / "GT"
    blurry = _nonempty_images(bdir, "RTF", root, RTF_TREE)
    sharp = _nonempty_images(sdir, "RTF", root, RTF_TREE)
    return _pair_by_key(
        _unique_map(blurry, _trailing_number, bdir, "RTF"),
        _unique_map(sharp, _trailing_number, sdir, "RTF"),
        bdir,
        sdir,
        "RTF",
    )


def scan_cuhk(root: str | os.PathLike) -> list[Path]:
    """All images directly inside a CUHK-BD folder (no ground truth)."""
    root = Path(root).expanduser()
    if not root.exists():
        raise _layout_error("CUHK-BD", root, "folder does not exist", CUHK_TREE)
    if not root.is_dir():
        raise _layout_error("CUHK-BD", root, "is a file, not a folder", CUHK_TREE)
    return _nonempty_images(root, "CUHK-BD", root, CUHK_TREE)
