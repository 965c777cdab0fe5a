"""Self-ensemble (test-time augmentation): deblur the eight symmetries of an image and average.

The eight transforms are the symmetries of the square, the dihedral group D4:
the four rotations by multiples of 90 degrees, each with and without a mirror
image. Every transformed input is deblurred, its result transformed back, and
the eight results averaged. NRKNet is not itself equivariant (it pads at the
right and bottom only, its pyramid samples from the top-left corner and its
learned atoms need not be symmetric), so the average differs from, and is
usually a little better than, a single pass; it costs eight passes.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

__all__ = ["DIHEDRAL_GROUP", "Symmetry", "self_ensemble"]

#: The image axes of an (N, C, H, W) batch or a (C, H, W) image.
IMAGE_DIMS = (-2, -1)


@dataclass(frozen=True)
class Symmetry:
    """Mirror the columns (if ``mirrored``), then turn by ``quarter_turns`` x 90 degrees counter-clockwise."""

    quarter_turns: int
    mirrored: bool

    @property
    def name(self) -> str:
        return f"rot{90 * self.quarter_turns}" + ("_mirror" if self.mirrored else "")

    def apply(self, x: torch.Tensor, dims: Sequence[int] = IMAGE_DIMS) -> torch.Tensor:
        """``x`` transformed over its ``dims`` (height, width); the result may share memory with ``x``."""
        if self.mirrored:
            x = x.flip(dims[1])
        return torch.rot90(x, self.quarter_turns, dims) if self.quarter_turns else x

    def undo(self, y: torch.Tensor, dims: Sequence[int] = IMAGE_DIMS) -> torch.Tensor:
        """The inverse of :meth:`apply`: ``undo(apply(x)) == x``."""
        if self.quarter_turns:
            y = torch.rot90(y, -self.quarter_turns, dims)
        return y.flip(dims[1]) if self.mirrored else y


#: The identity first, so a partial run would start with the plain result.
DIHEDRAL_GROUP: tuple[Symmetry, ...] = tuple(
    Symmetry(turns, mirrored) for mirrored in (False, True) for turns in range(4)
)


def self_ensemble(
    fn: Callable[[torch.Tensor], torch.Tensor],
    x: torch.Tensor,
    dims: Sequence[int] = IMAGE_DIMS,
) -> torch.Tensor:
    """The mean over :data:`DIHEDRAL_GROUP` of ``undo(fn(apply(x)))``.

    ``fn`` maps an image (or batch) to one of the same height and width over
    ``dims``; it is called eight times, one transform at a time, so memory
    stays that of one pass plus the running sum.
    """
    total: torch.Tensor | None = None
    for symmetry in DIHEDRAL_GROUP:
        y = symmetry.undo(fn(symmetry.apply(x, dims)), dims)
        # clone: fn may return its input (or a view of it), which must stay untouched
        total = y.clone() if total is None else total.add_(y)
    return total.div_(len(DIHEDRAL_GROUP))
