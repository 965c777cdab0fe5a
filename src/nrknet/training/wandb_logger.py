"""A Weights & Biases logger whose run continues when its run folder is resumed or requeued."""

from __future__ import annotations

import os
import secrets
import string
from pathlib import Path
from typing import Any

from lightning.pytorch.loggers.wandb import WandbLogger
from lightning.pytorch.utilities.rank_zero import rank_zero_only

from nrknet.utils.atomic import atomic_write_text


def persistent_run_id(id_file: str | os.PathLike) -> str:
    """The wandb run id kept in ``id_file``; a new one is written there (atomically) on first use."""
    path = Path(id_file)
    if path.is_file():
        run_id = path.read_text().strip()
        if not run_id or any(c.isspace() for c in run_id):
            raise ValueError(f"{path}: expected one wandb run id, got {run_id!r}")
        return run_id
    # wandb's own ids look like this: 8 lowercase letters and digits
    run_id = "".join(secrets.choice(string.ascii_lowercase + string.digits) for _ in range(8))
    atomic_write_text(path, run_id + "\n")
    return run_id


class ResumableWandbLogger(WandbLogger):
    """``WandbLogger`` that logs every start of a run folder to one wandb run.

    ``id_file``: where the run id is kept (``<run_dir>/wandb_id.txt``); a run
    that resumes or is requeued in the same folder reads it back and wandb
    continues that run (``resume="allow"``). An explicit ``id`` or ``version``
    wins. Only the process of rank 0 logs, so only it reads or writes the file.
    """

    def __init__(
        self,
        *args: Any,
        id_file: str | os.PathLike | None = None,
        id: str | None = None,
        version: str | None = None,
        **kwargs: Any,
    ) -> None:
        if id is None and version is None and id_file is not None and rank_zero_only.rank == 0:
            id = persistent_run_id(id_file)
        kwargs.setdefault("resume", "allow")
        super().__init__(*args, id=id, version=version, **kwargs)
