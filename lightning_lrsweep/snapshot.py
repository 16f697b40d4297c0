"""Capture and restore everything a training step mutates, in memory.

A sweep trains for real; this module makes that invisible. It keeps parameters, gradients and
buffers, optimizer state and param groups, LR scheduler state, the AMP grad scaler, module train/eval
modes, torchmetrics states, the global RNGs, and the ``torch.Generator`` objects that data loaders
draw their shuffle order from.

Sharded tensors (``DTensor``, as FSDP2's ``fully_shard`` and tensor parallelism make them) are copied as
this rank's local shard only: no rank gathers or sends anything, and each keeps ``1/world_size`` of a
fully sharded model.
"""

from __future__ import annotations

import copy
import random
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn.parameter import UninitializedBuffer, UninitializedParameter

from lightning_lrsweep.compat import local_tensor, metric_state_names

try:
    from torch.distributed.tensor import DTensor
except ImportError:  # pragma: no cover - torch built without torch.distributed
    DTensor = None  # type: ignore[assignment,misc]


def local_part(tensor: torch.Tensor) -> torch.Tensor:
    """The tensor this rank stores: a ``DTensor``'s local shard (the live storage, not a copy), else the tensor."""
    if DTensor is not None and isinstance(tensor, DTensor):
        return local_tensor(tensor)
    return tensor


class _Saved:
    """A copy of a tensor's local part that remembers its device and, for a ``DTensor``, its layout."""

    __slots__ = ("device", "layout", "tensor")

    def __init__(self, tensor: torch.Tensor, device: torch.device | str | None) -> None:
        local = local_part(tensor)
        self.layout: tuple[Any, ...] | None = None
        if local is not tensor:
            self.layout = (tensor.device_mesh, tensor.placements, tensor.shape, tensor.stride())  # type: ignore[attr-defined]
        self.device = local.device
        self.tensor = local.detach().to(device=device or local.device, copy=True)

    def get(self) -> torch.Tensor:
        """A fresh copy on the original device; a ``DTensor`` again (no communication) if it was one."""
        local = self.tensor.to(self.device, copy=True)
        if self.layout is None:
            return local
        mesh, placements, shape, stride = self.layout
        return DTensor.from_local(local, mesh, placements, run_check=False, shape=shape, stride=stride)


def _copy_tree(value: Any, device: torch.device | str | None) -> Any:
    """Copy nested dicts/lists/tuples of tensors (tensors to ``device``) and plain values."""
    if isinstance(value, torch.Tensor):
        return _Saved(value, device)
    if isinstance(value, dict):
        return {k: _copy_tree(v, device) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(_copy_tree(v, device) for v in value)
    return copy.deepcopy(value)


def _tree_nbytes(saved: Any) -> int:
    """Bytes of the tensors held in what :func:`_copy_tree` copied."""
    if isinstance(saved, _Saved):
        return saved.tensor.nbytes
    if isinstance(saved, dict):
        return sum(_tree_nbytes(v) for v in saved.values())
    if isinstance(saved, list | tuple):
        return sum(_tree_nbytes(v) for v in saved)
    return 0


def _restore_tree(saved: Any) -> Any:
    """Rebuild what :func:`_copy_tree` copied, each tensor on its original device."""
    if isinstance(saved, _Saved):
        return saved.get()
    if isinstance(saved, dict):
        return {k: _restore_tree(v) for k, v in saved.items()}
    if isinstance(saved, list | tuple):
        return type(saved)(_restore_tree(v) for v in saved)
    return copy.deepcopy(saved)


@dataclass
class RNGState:
    """The global random states a step can draw from."""

    torch_cpu: torch.Tensor
    numpy: Any
    python: Any
    cuda: list[torch.Tensor] = field(default_factory=list)

    @classmethod
    def capture(cls) -> RNGState:
        """Read the current torch (CPU and initialised CUDA), numpy and python RNG states."""
        cuda = torch.cuda.get_rng_state_all() if torch.cuda.is_available() and torch.cuda.is_initialized() else []
        return cls(torch.get_rng_state(), np.random.get_state(), random.getstate(), cuda)

    def restore(self) -> None:
        """Set every RNG back to the captured state."""
        torch.set_rng_state(self.torch_cpu)
        np.random.set_state(self.numpy)
        random.setstate(self.python)
        if self.cuda:
            torch.cuda.set_rng_state_all(self.cuda)


def loader_generators(iterables: Any) -> Iterator[torch.Generator]:
    """Every ``torch.Generator`` owned by the loaders, samplers and batch samplers in ``iterables``."""
    seen: set[int] = set()
    stack = [iterables]
    while stack:
        obj = stack.pop()
        if obj is None or id(obj) in seen:
            continue
        seen.add(id(obj))
        if isinstance(obj, torch.Generator):
            yield obj
        elif isinstance(obj, dict):
            stack.extend(obj.values())
        elif isinstance(obj, list | tuple):
            stack.extend(obj)
        else:
            stack.extend(getattr(obj, name, None) for name in ("generator", "sampler", "batch_sampler"))


def _metric_modules(module: nn.Module) -> Iterator[nn.Module]:
    try:
        from torchmetrics import Metric
    except ImportError:  # pragma: no cover - torchmetrics is a dependency
        return
    yield from (m for m in module.modules() if isinstance(m, Metric))


def check_initialized(module: nn.Module) -> None:
    """Refuse a module with uninitialised lazy parameters or buffers: there is nothing to copy yet.

    Raises:
        ValueError: naming the lazy tensors and how to initialise them.
    """
    lazy = [
        name
        for name, tensor in [*module.named_parameters(), *module.named_buffers()]
        if isinstance(tensor, UninitializedParameter | UninitializedBuffer)
    ]
    if lazy:
        raise ValueError(
            f"LRSweep cannot snapshot {type(module).__name__}: {lazy} are uninitialised lazy parameters. "
            "Initialise them before `fit`, e.g. by running the model once on an example batch in `__init__` "
            "or `setup()`, or use non-lazy modules."
        )


class Snapshot:
    """An in-memory copy of a module's training state; ``restore()`` puts it back exactly.

    Tensors are copied to ``device`` (e.g. ``"cpu"`` to spare accelerator memory) or kept where they are.

    Examples:
        >>> model = nn.Linear(2, 1)
        >>> before = model.weight.clone()
        >>> snap = Snapshot(model, optimizers=[], schedulers=[])
        >>> _ = model.weight.data.add_(1.0)
        >>> snap.restore()
        >>> torch.equal(model.weight, before)
        True
    """

    def __init__(
        self,
        module: nn.Module,
        optimizers: Iterable[torch.optim.Optimizer],
        schedulers: Iterable[Any],
        scaler: Any | None = None,
        data: Any = None,
        device: torch.device | str | None = None,
    ) -> None:
        check_initialized(module)
        self.module = module
        self.device = device
        tensors = [*module.named_parameters(remove_duplicate=False), *module.named_buffers(remove_duplicate=False)]
        self.tensors = [(t, _Saved(t, device)) for _, t in tensors]
        self.grads = [(p, _copy_tree(p.grad, device)) for _, p in module.named_parameters(remove_duplicate=False)]
        self.modes = [(m, m.training) for m in module.modules()]
        self.optimizers = [(opt, self._capture_optimizer(opt)) for opt in optimizers]
        self.schedulers = [(s, copy.deepcopy(s.state_dict())) for s in schedulers]
        self.scaler = (scaler, copy.deepcopy(scaler.state_dict())) if scaler is not None else None
        self.metrics = [(m, self._capture_metric(m)) for m in _metric_modules(module)]
        self.generators = [(g, g.get_state()) for g in loader_generators(data)]
        self.rng = RNGState.capture()

    def _capture_optimizer(self, optimizer: torch.optim.Optimizer) -> tuple[dict, list[dict]]:
        state = {param: _copy_tree(values, self.device) for param, values in optimizer.state.items()}
        groups = [{k: copy.deepcopy(v) for k, v in g.items() if k != "params"} for g in optimizer.param_groups]
        return state, groups

    def _capture_metric(self, metric: Any) -> dict[str, Any]:
        return {name: _copy_tree(getattr(metric, name), self.device) for name in metric_state_names(metric)}

    @property
    def nbytes(self) -> int:
        """Bytes held for parameters, buffers, gradients and optimizer state (of a sharded tensor: its local shard)."""
        held = [saved for _, saved in self.tensors] + [grad for _, grad in self.grads]
        held += [state for _, (state, _) in self.optimizers]
        return _tree_nbytes(held)

    @torch.no_grad()
    def restore(self) -> None:
        """Put every captured value back in place; object identities (params, groups) are kept."""
        for tensor, saved in self.tensors:
            local_part(tensor).copy_(saved.tensor)
        for param, grad in self.grads:
            param.grad = _restore_tree(grad)
        for module, training in self.modes:
            module.training = training
        for optimizer, (state, groups) in self.optimizers:
            optimizer.state.clear()
            for param, values in state.items():
                optimizer.state[param] = _restore_tree(values)
            for group, saved_group in zip(optimizer.param_groups, groups, strict=True):
                group.update(copy.deepcopy(saved_group))
        for scheduler, sched_state in self.schedulers:
            scheduler.load_state_dict(copy.deepcopy(sched_state))
        if self.scaler is not None:
            scaler, scaler_state = self.scaler
            scaler.load_state_dict(copy.deepcopy(scaler_state))
        for metric, values in self.metrics:
            for name, value in values.items():
                setattr(metric, name, _restore_tree(value))
        for generator, gen_state in self.generators:
            generator.set_state(gen_state)
        self.rng.restore()
