"""``torch.compile`` of NRKNet by regions: the U-Net, the coefficient head, the RKR operator.

Compiling a whole training step unrolls every atom level of every operator
application at every scale into one graph (21 levels x 9 applications by
default), which takes longer to compile than many runs take to train. The
three regions compile on their own instead; the loop over scales and Neumann
steps between them stays plain Python. Each region gets a few graphs: one per
scale's shape (``dynamic=False``: fixed shapes let the compiler fuse and tune
for them), for training and for evaluation, forward and backward.

:func:`plan` decides, from the ``compile`` and ``accel`` settings, whether a run
compiles and which ``accel`` mode goes with it: ``auto`` compiles for training
on CUDA only; compiled regions always run the plain model, so a run that
compiles skips the acceleration layer (:mod:`nrknet.accel`), and one log line
says so. :func:`compile_regions` compiles (in place), :func:`uncompile_regions`
undoes it, :func:`region_status` tells what each region runs.

Compilation is lazy: it happens at a region's first call with new shapes. Where
it fails, then or when the region is wrapped, the region runs eagerly from then
on, one warning line naming it and the error, and training continues.
A compiled region runs its ``forward`` compiled; a call made while forward hooks are
registered on the region (or globally) runs eagerly instead, so that the hooks fire (the
validation figures capture the coefficient maps with one).

Options (:class:`CompileOptions`, ``compile_options`` in the configs):

* ``mode``: ``default`` (the default: fusion without CUDA graphs, the shortest
  compile), ``max-autotune-no-cudagraphs`` (also benchmarks kernel choices: a
  longer compile, sometimes faster steps), ``reduce-overhead`` /
  ``max-autotune`` (CUDA graphs: the least launch overhead, but one recorded
  graph per call site and shape, with its own memory pool, and the RKR
  operator runs at nine sites a step). ``default`` is the choice because the
  operator's launch overhead, the cost that CUDA graphs remove, is mostly gone
  once its ~85 small kernels are fused, at no extra memory;
* ``backend``: ``inductor`` (the default), or another ``torch.compile``
  backend (``aot_eager`` traces the same graphs without generating code: a
  check of the tracing, no speed-up); ``mode`` applies to ``inductor`` only;
* ``channels_last``: on CUDA, store the U-Net's and the head's convolution
  weights channels-last (off by default: inductor already picks the layout of
  the convolutions inside a compiled graph);
* ``fullgraph``: refuse graph breaks inside a region (a failure, hence eager).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any

import torch
from torch import nn

from nrknet.accel import resolve_mode as resolve_accel_mode
from nrknet.models.nrknet import has_blur_operator
from nrknet.utils.checks import choice
from nrknet.utils.switches import SWITCH_VALUES, resolve_switch

COMPILE_MODES = SWITCH_VALUES
#: the submodules of :class:`~nrknet.models.nrknet.NRKNet` compiled on their own
REGIONS = ("unet", "coefficients", "blur")
TORCH_COMPILE_MODES = (
    "default",
    "max-autotune-no-cudagraphs",
    "reduce-overhead",
    "max-autotune",
)
#: graphs per region before dynamo gives up compiling it (its default, 8, is below the
#: 3 scales x training and validation x the last, shorter batch of an epoch)
RECOMPILE_LIMIT = 32

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class CompileOptions:
    """How the regions compile (see the module's documentation)."""

    backend: str = "inductor"
    mode: str = "default"
    channels_last: bool = False
    fullgraph: bool = False

    def __post_init__(self) -> None:
        choice("compile_options.mode", self.mode, TORCH_COMPILE_MODES)
        if self.mode != "default" and self.backend != "inductor":
            raise ValueError(
                f"compile_options.mode {self.mode!r} applies to the inductor backend only; "
                f"got backend {self.backend!r}"
            )
        for name in ("channels_last", "fullgraph"):
            choice(f"compile_options.{name}", getattr(self, name), (True, False))

    @classmethod
    def from_config(cls, options: CompileOptions | Mapping[str, Any] | None) -> CompileOptions:
        """Options from a mapping (a config section) or ``None`` (the defaults)."""
        if isinstance(options, cls):
            return options
        options = dict(options or {})
        known = [f.name for f in fields(cls)]
        unknown = sorted(set(options) - set(known))
        if unknown:
            raise ValueError(
                f"compile_options: unknown setting(s) {', '.join(unknown)}; "
                f"expected {', '.join(known)}"
            )
        return cls(**options)


def resolve_mode(mode: str | bool) -> str:
    """``auto``, ``on`` or ``off`` (``True``/``False`` accepted); anything else is refused."""
    return resolve_switch("compile", mode)


def plan(
    compile_mode: str | bool, accel_mode: str | bool, device, *, training: bool
) -> tuple[bool, str]:
    """Whether to compile, and the ``accel`` mode to apply with it.

    ``compile: auto`` compiles when ``training`` on CUDA, unless ``accel`` is
    explicitly ``on`` (an explicit setting beats ``auto``). The two never
    combine: when compiling, ``accel`` is ``off`` (logged when it would have been on).
    """
    compile_mode, accel_mode = resolve_mode(compile_mode), resolve_accel_mode(accel_mode)
    device_type = torch.device(device).type
    if compile_mode == "auto":
        compiling = training and device_type == "cuda" and accel_mode != "on"
        if training and device_type == "cuda" and accel_mode == "on":
            log.info("compile: auto stays off, since accel is on (the two never combine)")
    else:
        compiling = compile_mode == "on"
    if compiling and (accel_mode == "on" or (accel_mode == "auto" and device_type == "cpu")):
        log.info("compile: on, so accel is skipped (compiled regions run the plain model)")
    return compiling, "off" if compiling else accel_mode


def _has_forward_hooks(module: nn.Module) -> bool:
    """Whether a call of ``module`` would run forward (pre-)hooks, its own or global ones."""
    from torch.nn.modules import module as torch_module

    global_hooks = (
        getattr(torch_module, "_global_forward_hooks", None),
        getattr(torch_module, "_global_forward_pre_hooks", None),
    )
    return bool(module._forward_hooks or module._forward_pre_hooks or any(global_hooks))


class _CompiledRegion:
    """A region's compiled call; the region turns eager for good when compiling it fails."""

    def __init__(self, name: str, module: nn.Module, compiled) -> None:
        self.name = name
        self.module = module
        self.compiled = compiled

    def __call__(self, *args, **kwargs):
        if _has_forward_hooks(self.module):
            # hooks run only on the module's own call path (e.g. the coefficient capture of
            # the validation figures): this call runs eagerly, the next without hooks compiled
            return self.module._call_impl(*args, **kwargs)
        try:
            return self.compiled(*args, **kwargs)
        except Exception as exc:  # noqa: BLE001 - any compiler failure falls back to eager
            self.module._compiled_call_impl = None
            try:
                out = self.module._call_impl(*args, **kwargs)
            except Exception:
                # eager fails as well: the call itself is at fault, not the compiler
                self.module._compiled_call_impl = self
                raise
            _fall_back(self.module, self.name, exc)
            return out


def _fall_back(module: nn.Module, name: str, exc: BaseException) -> None:
    # dynamo wraps a backend's error (e.g. BackendCompilerFailed); name the original one
    cause = getattr(exc, "inner_exception", None) or exc.__cause__ or exc
    lines = [line for line in str(cause).strip().splitlines() if line.strip()]
    message = f"{type(cause).__name__}: {lines[0] if lines else ''}"[:300]
    module._compile_fallback = message
    log.warning("compile: region %s runs eagerly, compiling it failed (%s)", name, message)


def compile_regions(
    model: nn.Module,
    options: CompileOptions | Mapping[str, Any] | None = None,
    *,
    device=None,
    regions: tuple[str, ...] = REGIONS,
) -> list[str]:
    """Compile ``regions`` of ``model`` in place (lazily: on their first call); idempotent.

    Returns the names of the regions that compile. A region that cannot be
    wrapped stays eager, with a warning; ``device`` (default: where the
    parameters are) decides whether ``channels_last`` applies.
    """
    import torch._dynamo

    options = CompileOptions.from_config(options)
    unknown = [name for name in regions if name not in REGIONS]
    if unknown:
        raise ValueError(f"compile regions must be among {', '.join(REGIONS)}; got {unknown}")
    # every region and scale, training and evaluation, is a graph of its own
    limit = torch._dynamo.config.recompile_limit
    torch._dynamo.config.recompile_limit = max(limit, RECOMPILE_LIMIT)
    if device is None:
        param = next(model.parameters(), None)
        device = "cpu" if param is None else param.device
    compiled = []
    if not has_blur_operator(model):  # another architecture (the U-Net baseline)
        log.info("compile: %s is not an NRKNet; it runs eagerly", type(model).__name__)
        return compiled
    for name in regions:
        module = getattr(model, name)
        if isinstance(module._compiled_call_impl, _CompiledRegion):
            compiled.append(name)
            continue
        if options.channels_last and torch.device(device).type == "cuda" and name != "blur":
            module.to(memory_format=torch.channels_last)
        try:
            fn = torch.compile(
                module.forward,
                backend=options.backend,
                mode=None if options.mode == "default" else options.mode,
                dynamic=False,
                fullgraph=options.fullgraph,
            )
        except Exception as exc:  # noqa: BLE001 - a region that cannot compile runs eagerly
            _fall_back(module, name, exc)
            continue
        module._compile_fallback = None
        module._compiled_call_impl = _CompiledRegion(name, module, fn)
        compiled.append(name)
    return compiled


def uncompile_regions(model: nn.Module) -> None:
    """Run every region of ``model`` eagerly again (in place)."""
    for name in REGIONS:
        module = getattr(model, name, None)
        if module is not None and isinstance(module._compiled_call_impl, _CompiledRegion):
            module._compiled_call_impl = None


def region_status(model: nn.Module) -> dict[str, str]:
    """Per region: ``compiled``, ``eager``, or ``eager (<error>)`` after a failed compile."""
    status = {}
    for name in REGIONS:
        module = getattr(model, name, None)
        if module is None:
            continue
        failure = getattr(module, "_compile_fallback", None)
        if isinstance(module._compiled_call_impl, _CompiledRegion):
            status[name] = "compiled"
        else:
            status[name] = f"eager ({failure})" if failure else "eager"
    return status


def apply(
    model: nn.Module,
    compile_mode: str | bool,
    accel_mode: str | bool,
    options: CompileOptions | Mapping[str, Any] | None = None,
    *,
    device,
    training: bool,
) -> bool:
    """Set ``model`` up as ``compile`` and ``accel`` say (see :func:`plan`); returns whether it compiles."""
    from nrknet.accel import accelerate

    compiling, accel_mode = plan(compile_mode, accel_mode, device, training=training)
    accelerate(model, accel_mode, device=device, training=training)
    if compiling:
        compile_regions(model, options, device=device)
    else:
        uncompile_regions(model)
    return compiling


__all__ = [
    "COMPILE_MODES",
    "REGIONS",
    "TORCH_COMPILE_MODES",
    "CompileOptions",
    "apply",
    "compile_regions",
    "plan",
    "region_status",
    "resolve_mode",
    "uncompile_regions",
]
