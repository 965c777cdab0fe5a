"""Helpers for code that runs on one process or on several under DDP."""

from __future__ import annotations

from typing import Any

import torch


def is_distributed() -> bool:
    """Whether this process is one of several in an initialised process group (DDP)."""
    return (
        torch.distributed.is_available()
        and torch.distributed.is_initialized()
        and torch.distributed.get_world_size() > 1
    )


def gather_shards(items: list[Any]) -> list[Any]:
    """Every process's ``items``, interleaved back into the order a distributed sampler dealt them.

    A distributed sampler gives item ``i`` of the dataset to process ``i % world_size``,
    so taking the first item of each process, then the second, ... restores the
    dataset order. Outside DDP ``items`` comes back as is.
    """
    if not is_distributed():
        return items
    gathered: list[list[Any] | None] = [None] * torch.distributed.get_world_size()
    torch.distributed.all_gather_object(gathered, items)
    return [
        item
        for i in range(max(map(len, gathered)))
        for part in gathered
        for item in part[i : i + 1]
    ]


def drop_sampler_repeats(rows: list[dict]) -> list[dict]:
    """Drop exact repeats (same name and scores): what a distributed sampler adds to even out
    its shards. Distinct images that share a name are kept."""
    seen, kept = set(), []
    for row in rows:
        key = tuple(sorted((k, repr(v)) for k, v in row.items()))
        if key not in seen:
            seen.add(key)
            kept.append(row)
    return kept
