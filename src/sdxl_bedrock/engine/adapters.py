"""LoRA adapters per row: rows with different adapters, at different weights, share one model call.

A LoRA (Hu et al. 2021, "LoRA: Low-Rank Adaptation of Large Language Models") adds `B(A(x)) * alpha / r` to
a layer's output. Adapters are loaded by diffusers' own loaders (`StableDiffusionXLLoraLoaderMixin`:
kohya files converted by its converters, PEFT's LoRA layers injected into the UNet and both text
encoders), then PEFT's own forward is turned off for them (`enable_adapters(False)`: every LoRA layer runs
its base layer alone) and a forward hook on each LoRA layer adds, for each adapter the call's rows use,
that adapter's delta to its own rows at their own weight:

    out[rows_a] += weight_a[rows_a] * scaling_a * B_a(A_a(x[rows_a]))

PEFT's `LoraLayer._mixed_batch_forward` (its `adapter_names=` argument) does this for one adapter per row at
the adapter's one scale; here a row may carry several adapters (the sum of their deltas, as
`set_adapters([...], adapter_weights=[...])` gives one image) and each row its own weights, taken as
tensors, so a new weight changes no code path. The base layer runs once for the whole batch; an adapter
costs two thin matmuls on its own rows (S-LoRA's and Punica's split: slices of the batch where its rows
are a few runs, else a gather and an index_add).

`AdapterPlan` is one call's rows per adapter; `LoadedAdapters` holds one checkpoint's adapters and applies a
plan around a model call; `HostLoras` reads LoRA files into host memory (the library's files, checked:
finite weights, ranks within the bound), off the engine thread.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import threading
import time
import warnings
from collections import OrderedDict
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from sdxl_bedrock.errors import InvalidRequest
from sdxl_bedrock.schema import LoraUse

log = logging.getLogger(__name__)

MODELS = ("unet", "text_encoder", "text_encoder_2")
_KEYS = itertools.count()

# Beyond this many runs of consecutive rows (a row's two guided halves are two), an adapter's rows are
# gathered into one call instead: on a CPU, more slices measured no faster than one gathered call.
MAX_SLICED_RUNS = 2

AdapterWeights = tuple[tuple[str, float], ...]
"""One batch row's adapters: (adapter key, weight) each, weight != 0."""


@dataclass(frozen=True)
class AdapterPlan:
    """For one model call of a batch: each adapter's batch rows (int64 [n]; None: every row, in order),
    their weights ([n], the model's dtype), on the model's device, and the rows as runs of consecutive
    batch rows (start, stop), known on the host: a few runs are sliced (views, no copy), more gathered."""

    rows: dict[str, tuple[torch.Tensor | None, torch.Tensor, tuple[tuple[int, int], ...]]]

    @classmethod
    def of(
        cls, batch_rows: Sequence[AdapterWeights], device: torch.device, dtype: torch.dtype
    ) -> AdapterPlan | None:
        """The plan for a batch whose row i carries `batch_rows[i]`; None when no row carries any."""
        indices: dict[str, list[int]] = {}
        weights: dict[str, list[float]] = {}
        for index, adapters in enumerate(batch_rows):
            for key, weight in adapters:
                indices.setdefault(key, []).append(index)
                weights.setdefault(key, []).append(weight)
        if not indices:
            return None
        every = list(range(len(batch_rows)))
        return cls(
            {
                key: (
                    None if indices[key] == every else to_device(indices[key], torch.int64, device),
                    to_device(weights[key], dtype, device),
                    runs_of(indices[key]),
                )
                for key in indices
            }
        )


def runs_of(indices: list[int]) -> tuple[tuple[int, int], ...]:
    """Ascending batch rows as (start, stop) runs of consecutive rows."""
    runs: list[list[int]] = []
    for index in indices:
        if runs and runs[-1][1] == index:
            runs[-1][1] = index + 1
        else:
            runs.append([index, index + 1])
    return tuple((start, stop) for start, stop in runs)


def to_device(values: list[int] | list[float], dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """A small host list on the device without making the host wait for the device's queue (pinned
    memory, non-blocking copy on CUDA), so a tick's plan never syncs."""
    tensor = torch.tensor(values, dtype=dtype)
    if device.type == "cuda":
        return tensor.pin_memory().to(device, non_blocking=True)
    return tensor.to(device)


class RowDeltas:
    """The forward hook on every LoRA layer of one checkpoint's models: adds the current plan's deltas."""

    def __init__(self) -> None:
        self.plan: AdapterPlan | None = None

    def __call__(self, module: Any, args: tuple[Any, ...], output: torch.Tensor) -> torch.Tensor | None:
        plan = self.plan
        if plan is None:
            return None
        x = args[0]
        for key, (rows, weights, runs) in plan.rows.items():
            if key not in module.lora_A:
                continue
            if rows is not None and len(runs) > MAX_SLICED_RUNS:
                output.index_add_(0, rows, self.delta(module, key, x.index_select(0, rows), weights, output))
                continue
            # Every row, or a few runs of them (a row's two halves under guidance): views, no copies.
            taken = 0
            for start, stop in runs:
                part = weights[taken : taken + stop - start]
                output[start:stop].add_(self.delta(module, key, x[start:stop], part, output))
                taken += stop - start
        return output

    @staticmethod
    def delta(
        module: Any, key: str, x: torch.Tensor, weights: torch.Tensor, like: torch.Tensor
    ) -> torch.Tensor:
        """`weights[i] * scaling * B(A(x[i]))` for each row i of `x`, in `like`'s dtype."""
        lora_a, lora_b = module.lora_A[key], module.lora_B[key]
        hidden = lora_a(x.to(lora_a.weight.dtype))
        row_scale = (weights.view(-1, *([1] * (hidden.ndim - 1))) * module.scaling[key]).to(hidden.dtype)
        if lora_b.bias is None:
            # B is linear: scaling its rank-r input, not its wider output, is the same delta for less work.
            return lora_b(hidden * row_scale).to(like.dtype)
        return (lora_b(hidden) * row_scale).to(like.dtype)  # PEFT scales the bias too


@dataclass
class Adapter:
    """One LoRA file loaded into one checkpoint's models, under its internal adapter `key`."""

    key: str
    name: str
    stamp: tuple[str, int, int]  # (path, size, mtime_ns): a changed file is loaded anew
    parts: frozenset[str]  # which of MODELS it adapts
    where: str = "device"  # device | host


@dataclass(frozen=True)
class HostLora:
    """A LoRA file's tensors in host memory, read and checked: `state_dict` as the file holds it."""

    name: str
    stamp: tuple[str, int, int]
    state_dict: dict[str, torch.Tensor]
    read_seconds: float


class LoraRefused(InvalidRequest):
    """A LoRA that cannot be applied (bad weights, shapes that do not fit this checkpoint, a rank over the
    bound)."""


def file_stamp(path: Path) -> tuple[str, int, int]:
    stat = path.stat()
    return (str(path.resolve()), stat.st_size, stat.st_mtime_ns)


def read_lora(name: str, path: Path, max_rank: int) -> HostLora:
    """Read and check one LoRA file (host thread). Raises LoraRefused for non-finite weights or a rank over
    `max_rank` (a 2-D or 4-D down/A matrix's first dimension)."""
    from safetensors.torch import load_file

    started = time.perf_counter()
    stamp = file_stamp(path)
    try:
        state_dict = load_file(path)
    except Exception as error:
        raise LoraRefused(f"LoRA {name!r} cannot be read: {error}") from None
    for key, tensor in state_dict.items():
        if "dora_scale" in key or "lora_magnitude_vector" in key:
            # diffusers drops kohya's dora_scale with a warning and would apply the rest as a plain LoRA.
            raise LoraRefused(f"LoRA {name!r} is a DoRA: not applied per row")
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            raise LoraRefused(f"LoRA {name!r} holds non-finite weights ({key})")
        is_down = "lora_down" in key or "lora_A" in key or "lora.down" in key
        if is_down and tensor.ndim >= 2 and tensor.shape[0] > max_rank:
            raise LoraRefused(f"LoRA {name!r} has rank {tensor.shape[0]}, over this server's {max_rank}")
    return HostLora(name, stamp, state_dict, time.perf_counter() - started)


class HostLoras:
    """LoRA files read into host memory ahead of the rows that use them, on a thread of its own, bounded
    (least recently used out first). `lookup(name)` resolves a library name to its file (raising the
    library's UnknownLora / RefusedLora); `on_ready` is called (from the reading thread) when a read ends."""

    def __init__(
        self,
        lookup: Callable[[str], Any],
        *,
        max_entries: int = 32,
        max_rank: int = 512,
        on_ready: Callable[[], None] | None = None,
        on_read: Callable[[float], None] | None = None,
    ) -> None:
        self.lookup = lookup
        self.max_entries = max_entries
        self.max_rank = max_rank
        self.on_ready = on_ready
        self.on_read = on_read
        self._read: OrderedDict[tuple[str, int, int], HostLora | BaseException] = OrderedDict()
        self._reading: dict[tuple[str, int, int], Future[None]] = {}
        self._lock = threading.Lock()
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="lora-reader")

    def ready(self, loras: Sequence[LoraUse]) -> bool:
        """Whether every adapter named is read (or failed: the row then fails as it joins); starts the
        reads that are not under way. Never blocks."""
        ready = True
        for use in loras:
            try:
                entry = self.lookup(use.name)
                stamp = file_stamp(entry.filename)
            except Exception:
                continue  # unknown, refused or gone: `get` raises it for the row
            with self._lock:
                if stamp in self._read:
                    continue
                ready = False
                if stamp not in self._reading:
                    self._reading[stamp] = self._pool.submit(self._read_one, use.name, entry.filename, stamp)
        return ready

    def _read_one(self, name: str, path: Path, stamp: tuple[str, int, int]) -> None:
        outcome: HostLora | BaseException
        try:
            outcome = read_lora(name, path, self.max_rank)
            if self.on_read is not None:
                self.on_read(outcome.read_seconds)
        except BaseException as error:
            outcome = error
        with self._lock:
            self._reading.pop(stamp, None)
            self._remember(stamp, outcome)
        if self.on_ready is not None:
            self.on_ready()

    def _remember(self, stamp: tuple[str, int, int], outcome: HostLora | BaseException) -> None:
        self._read[stamp] = outcome
        self._read.move_to_end(stamp)
        while len(self._read) > max(self.max_entries, 1):
            self._read.popitem(last=False)

    def get(self, name: str) -> HostLora:
        """The adapter `name`'s file in host memory, read now if it is not yet (engine thread). Raises
        InvalidRequest for a name the library does not serve, LoraRefused for a file that fails its checks."""
        try:
            entry = self.lookup(name)
        except (LookupError, ValueError) as error:
            raise InvalidRequest(str(error)) from None
        stamp = file_stamp(entry.filename)
        with self._lock:
            found = self._read.get(stamp)
            if found is not None:
                self._read.move_to_end(stamp)
        if found is None:
            try:
                found = read_lora(name, entry.filename, self.max_rank)
            except LoraRefused as error:
                found = error
            with self._lock:
                self._remember(stamp, found)
        if isinstance(found, BaseException):
            raise found
        return found

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)


class LoadedAdapters:
    """One checkpoint's adapters, injected into its UNet and text encoders by diffusers' loaders, applied
    per row (RowDeltas). At most `max_on_device` stay on the device; the least recently used beyond that
    move to host memory (on a CPU that is where they are), at most `max_on_host` there, then are deleted.
    Adapters used by rows in flight (`in_use`) are never moved or deleted."""

    def __init__(self, pipe: Any, device: torch.device, *, max_on_device: int = 8, max_on_host: int = 32):
        self.pipe = pipe
        self.device = device
        self.max_on_device = max_on_device
        self.max_on_host = max_on_host
        self.deltas = RowDeltas()
        self.adapters: OrderedDict[str, Adapter] = OrderedDict()  # by library name, least recent first
        self._hooked: set[int] = set()
        self.on_load: Callable[[str, float], None] | None = None

    # -- loading --------------------------------------------------------------------------------------------

    def ensure(self, loras: Sequence[LoraUse], source: HostLoras, in_use: set[str]) -> dict[str, Adapter]:
        """The adapters `loras` name, each loaded and on the device (engine thread; moving the least recently
        used out makes room, never one in `in_use` or named here). Raises InvalidRequest / LoraRefused."""
        wanted: dict[str, Adapter] = {}
        for use in loras:
            host = source.get(use.name)
            adapter = self.adapters.get(use.name)
            if adapter is not None and adapter.stamp != host.stamp:
                self.delete(adapter)  # the file changed on disk: the new one is loaded
                adapter = None
            if adapter is None:
                adapter = self.inject(host)
            elif adapter.where != "device":
                self.move(adapter, "device")
            self.adapters.move_to_end(use.name)
            wanted[use.name] = adapter
        self.make_room(in_use | set(wanted))
        return wanted

    def inject(self, host: HostLora) -> Adapter:
        """Load a LoRA through diffusers' SDXL loaders under a fresh internal key; LoraRefused if it does not
        fit this checkpoint (shapes, an unsupported variant), leaving the models as they were."""
        started = time.perf_counter()
        pipe = self.pipe
        key = f"lora{next(_KEYS)}"
        unfuse_projections(pipe.unet)
        try:
            with warnings.catch_warnings():
                # PEFT warns of a second adapter in one model: several are what this module is for.
                warnings.filterwarnings("ignore", "Already found a `peft_config`", UserWarning)
                self._load(pipe, host, key)
        except Exception as error:
            self._remove_key(key)
            raise LoraRefused(f"LoRA {host.name!r} does not fit this checkpoint: {short(error)}") from None
        return self._attached(host, key, started)

    @staticmethod
    def _load(pipe: Any, host: HostLora, key: str) -> None:
        """diffusers' `load_lora_weights`, step by step (its own calls), from the tensors in host memory."""
        from diffusers.loaders.lora_pipeline import StableDiffusionXLLoraLoaderMixin

        # unet_config: kohya files name UNet blocks the SGM way, mapped by the checkpoint's layout.
        state_dict, network_alphas, metadata = StableDiffusionXLLoraLoaderMixin.lora_state_dict(
            dict(host.state_dict), unet_config=pipe.unet.config, return_lora_metadata=True
        )
        if not state_dict or not all("lora" in name for name in state_dict):
            raise ValueError("it holds no LoRA weights diffusers can read")
        pipe.load_lora_into_unet(
            dict(state_dict), network_alphas, pipe.unet, adapter_name=key, metadata=metadata, _pipeline=pipe
        )
        for prefix in ("text_encoder", "text_encoder_2"):
            pipe.load_lora_into_text_encoder(
                dict(state_dict),
                network_alphas,
                getattr(pipe, prefix),
                prefix=prefix,
                adapter_name=key,
                metadata=metadata,
                _pipeline=pipe,
            )

    def _attached(self, host: HostLora, key: str, started: float) -> Adapter:
        """The adapter just loaded under `key`, its layers switched to per-row deltas."""
        from peft.tuners.lora import LoraLayer

        pipe = self.pipe
        parts: set[str] = set()
        for part in MODELS:
            for found in getattr(pipe, part).modules():
                if not isinstance(found, LoraLayer) or key not in found.lora_A:
                    continue
                module: Any = found  # a LoraLayer that is also its torch Module
                parts.add(part)
                variants = getattr(module, "lora_variant", {})
                magnitude = getattr(module, "lora_magnitude_vector", {})
                if key in variants or key in magnitude:
                    self._remove_key(key)
                    raise LoraRefused(f"LoRA {host.name!r} is a DoRA (or other variant): not applied per row")
                if module.lora_A[key].weight.ndim == 4:
                    # The UNet runs channels-last (acceleration.accelerate): a conv of another layout
                    # converts its input and output on every call.
                    module.lora_A[key].to(memory_format=torch.channels_last)
                    module.lora_B[key].to(memory_format=torch.channels_last)
                module.enable_adapters(False)  # the base layer alone; RowDeltas adds each row's own
                if id(module) not in self._hooked:
                    self._hooked.add(id(module))
                    module.register_forward_hook(self.deltas)
        if not parts:
            self._remove_key(key)
            raise LoraRefused(f"LoRA {host.name!r} matches no layer of this checkpoint")
        adapter = Adapter(key, host.name, host.stamp, frozenset(parts))
        self.adapters[host.name] = adapter
        seconds = time.perf_counter() - started
        log.info("LoRA %s loaded (%s) in %.2f s", host.name, ", ".join(sorted(parts)), seconds)
        if self.on_load is not None:
            self.on_load(host.name, seconds)
        return adapter

    def _remove_key(self, key: str) -> None:
        from peft.tuners.tuners_utils import BaseTunerLayer

        with warnings.catch_warnings():
            # PEFT warns that the deleted adapter was the active one: none is active for PEFT here.
            warnings.filterwarnings("ignore", "Adapter .* was active which is now deleted", UserWarning)
            for part in MODELS:
                for module in getattr(self.pipe, part).modules():
                    if isinstance(module, BaseTunerLayer) and key in getattr(module, "lora_A", {}):
                        module.delete_adapter(key)
        config = getattr(self.pipe.unet, "peft_config", None)
        if config is not None:
            config.pop(key, None)
        for part in ("text_encoder", "text_encoder_2"):
            config = getattr(getattr(self.pipe, part), "peft_config", None)
            if config is not None:
                config.pop(key, None)

    # -- memory ---------------------------------------------------------------------------------------------

    def make_room(self, keep: set[str]) -> None:
        """Least recently used first: beyond `max_on_device` on the device move to host, beyond
        `max_on_host` there are deleted; never one in `keep`."""
        for where, bound in (("device", self.max_on_device), ("host", self.max_on_host)):
            placed = [a for a in self.adapters.values() if a.where == where]
            for adapter in placed:
                if len(placed) <= bound:
                    break
                if adapter.name in keep:
                    continue
                placed.remove(adapter)
                if where == "device":
                    self.move(adapter, "host")
                else:
                    self.delete(adapter)

    def move(self, adapter: Adapter, where: str) -> None:
        from peft.tuners.lora import LoraLayer

        target = self.device if where == "device" else torch.device("cpu")
        if target != self.device or self.device.type != "cpu":
            for part in adapter.parts:
                for module in getattr(self.pipe, part).modules():
                    if isinstance(module, LoraLayer) and adapter.key in module.lora_A:
                        module.lora_A[adapter.key].to(target)
                        module.lora_B[adapter.key].to(target)
        adapter.where = where

    def delete(self, adapter: Adapter) -> None:
        self._remove_key(adapter.key)
        self.adapters.pop(adapter.name, None)
        log.info("LoRA %s unloaded", adapter.name)

    def moved_to(self, device: torch.device) -> None:
        """The checkpoint's modules moved whole (engine/checkpoints.py): its adapters went with them."""
        for adapter in self.adapters.values():
            adapter.where = "device" if device == self.device else "host"

    def resident(self) -> dict[str, str]:
        return {name: adapter.where for name, adapter in self.adapters.items()}

    # -- applying -------------------------------------------------------------------------------------------

    @contextlib.contextmanager
    def applied(self, plan: AdapterPlan | None) -> Iterator[None]:
        """Model calls inside add `plan`'s deltas to its rows (none: the base weights alone)."""
        self.deltas.plan = plan
        try:
            yield
        finally:
            self.deltas.plan = None


def unfuse_projections(unet: Any) -> None:
    """Undo acceleration.accelerate's fused q/k/v projections: the fused attention reads `to_qkv` /
    `to_kv`, never the `to_q` / `to_k` / `to_v` layers a LoRA adapts, so its deltas would be skipped. The
    fused weights are freed; the base path then runs three projections instead of one."""
    if getattr(unet, "original_attn_processors", None) is None:
        return
    unet.unfuse_qkv_projections()
    unet.original_attn_processors = None
    for module in unet.modules():
        if getattr(module, "fused_projections", False):
            for fused in ("to_qkv", "to_kv", "to_added_qkv"):
                if hasattr(module, fused):
                    delattr(module, fused)
            module.fused_projections = False
    log.info("the UNet's fused q/k/v projections are undone: LoRA adapters adapt the unfused ones")


def short(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    first = text[0] if text else type(error).__name__
    return first if len(first) <= 300 else first[:297] + "..."
