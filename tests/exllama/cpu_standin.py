"""The CPU tier's stand-in for what only a GPU runs: loading weights and the forward pass.

Everything else is exllamav2 0.3.2 itself, running on the CPU: ``ExLlamaV2Config`` reading the
model directory, the ``ExLlamaV2`` model object and its modules, the caches (FP16, Q4, Q6, Q8)
allocated by their own code, ``ExLlamaV2Tokenizer``, the dynamic generator with its page table,
prefix reuse, defragmentation and stop-string handling, ``ExLlamaV2DynamicJob`` and the sampler
(its C++ compiled by ``cpu_ext``).

``ExLlamaV2.load_autosplit`` is replaced by placing every module on the CPU without weights and
letting the cache allocate its tensors (what the real method does after moving weights to GPUs).
``ExLlamaV2.forward_chunk`` is replaced by a deterministic language model that keeps its state in
the cache's own tensors:

- each position it computes writes (token id, position) into the layer-0 key storage, at the slot
  the block table (paged) or the position (unpaged) gives, as the attention kernel would write
  keys and values;
- the next token at a position is a function of every token before it, read back from the cache
  through the same block table. A page-table mistake (a missing, stale or foreign page) is caught
  by the position check or changes the reply, which tests compare with ``reference_reply``;
- and it asserts the limits the CUDA kernels rely on without checking them: tokens per forward
  pass within the scratch buffers (``max_input_len * max_batch_size``), positions below
  ``max_seq_len`` (the RoPE tables) and inside the pages the block table gives, page indices inside
  the cache, no page written by two sequences of one pass, one sequence at a time unpaged.

Only the numerics of attention, matmuls, norms, RoPE and cache quantization are not run here: the
GPU tests cover them. ``real_llama.RealLlama`` keeps every check and replaces the deterministic
model (``StandIn.run_model``) with a real Llama over a real model's weights, in torch.
"""

from __future__ import annotations

import contextlib
import json
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.exllama import cpu_ext

PAGE_SIZE = 256
PEAK = 10.0  # logit of the chosen token; the others lie in [-2, 2)
MASKED = -65504.0  # what ExLlamaV2 writes into padded logits


class KernelLimitError(AssertionError):
    """A forward pass the CUDA kernels could not have run (they would crash or corrupt memory)."""


@dataclass(frozen=True)
class ForwardCall:
    batch: int
    q_len: int
    paged: bool
    logits: bool
    positions: tuple[tuple[int, int], ...]
    """Each sequence's first and last position in this pass."""


def choose(context: Any, allowed: Any) -> int:
    """The stand-in model: the next token after ``context`` (int64 ids), one of ``allowed``."""
    import torch

    n = int(context.shape[0])
    weights = torch.arange(1, n + 1, dtype=torch.int64)
    mixed = int((context * weights).sum()) * 2654435761 + int(context[-1]) * 40503 + n
    return int(allowed[mixed % int(allowed.shape[0])])


def _text_ids(model_dir: Path) -> list[int]:
    """Ids of the tokenizer that decode to text (no special tokens, nothing empty)."""
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(model_dir / "tokenizer.json"))
    raw = json.loads((model_dir / "tokenizer.json").read_text(encoding="utf-8"))
    special = {int(t["id"]) for t in raw.get("added_tokens", []) if t.get("special")}
    return [
        i
        for i in range(tokenizer.get_vocab_size())
        if i not in special and tokenizer.decode([i]) and "\ufffd" not in tokenizer.decode([i])
    ]


@dataclass
class StandIn:
    """The replaced load and forward pass, with what they saw (for tests)."""

    calls: list[ForwardCall] = field(default_factory=list)
    loads: int = 0
    eos_when: Callable[[list[int]], bool] | None = None
    """When set and true for a context, the model puts its weight on the EOS token there."""
    delay: float = 0.0
    """Seconds each forward pass takes (a slow GPU)."""
    _allowed: dict[str, Any] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def allowed(self, model_dir: str) -> Any:
        import torch

        if model_dir not in self._allowed:
            self._allowed[model_dir] = torch.tensor(_text_ids(Path(model_dir)), dtype=torch.int64)
        return self._allowed[model_dir]

    # -- what replaces ExLlamaV2.load_autosplit -------------------------------------------------

    def load_autosplit(self, model: Any, cache: Any, *args: Any, **kwargs: Any) -> None:
        # As load_autosplit does first: a forward pass never holds more than a sequence.
        model.config.max_input_len = min(model.config.max_input_len, model.config.max_seq_len)
        for module in model.modules:
            module.set_device_idx(-1)  # "cpu"; no weights are read
        model.set_cache_map()
        cache.update_cache_tensors()  # the cache's own allocation, on the modules' device
        model.loaded = True
        self.loads += 1

    # -- what replaces ExLlamaV2.forward_chunk --------------------------------------------------

    def forward_chunk(
        self,
        model: Any,
        input_ids: Any,
        cache: Any = None,
        input_mask: Any = None,
        preprocess_only: bool = False,
        last_id_only: bool = False,
        loras: Any = None,
        return_last_state: bool = False,
        position_offsets: Any = None,
        abort_event: Any = None,
        attn_params: Any = None,
        extract_state_indices: Any = None,
        **kwargs: Any,
    ) -> dict[str, Any]:
        import time

        import torch
        from exllamav2.attn import ExLlamaV2Attention

        cfg = model.config
        _check(model.loaded, "forward pass on a model that was never loaded")
        _check(
            input_ids.dtype == torch.long
            and input_ids.dim() == 2
            and input_ids.device.type == "cpu",
            "input_ids must be a (batch, length) int64 tensor in system memory",
        )
        _check(cache is not None and attn_params is not None, "the generator always passes both")
        batch, q_len = (int(x) for x in input_ids.shape)
        _check(q_len >= 1, "an empty forward pass")
        rows = cfg.max_input_len * cfg.max_batch_size
        _check(
            batch * q_len <= rows,
            f"{batch} sequences x {q_len} tokens = {batch * q_len} tokens in one forward pass; "
            f"the scratch buffers hold max_input_len x max_batch_size = {cfg.max_input_len} x "
            f"{cfg.max_batch_size} = {rows}",
        )
        storage = _storage(cache)
        slots_total = int(storage.shape[0])
        paged = isinstance(attn_params, ExLlamaV2Attention.PagedParams)
        if paged:
            starts = [int(s) for s in attn_params.cache_seqlens.tolist()]
            block_index = attn_params.block_index
            _check(attn_params.page_size == PAGE_SIZE, "paged attention uses 256-token pages")
            _check(
                len(starts) == batch and int(block_index.shape[0]) == batch,
                "block_index and cache_seqlens must have one row per sequence",
            )
            pages_total = slots_total // PAGE_SIZE
            table = [[int(p) for p in row] for row in block_index.tolist()]
        else:
            _check(batch == 1, f"unpaged attention runs one sequence at a time, got {batch}")
            starts = [int(attn_params.past_len)]
            cache.current_seq_len = starts[0]  # as forward_chunk does with unpaged Params
            pages_total, table = 0, []

        # Where each position of each sequence lives in the cache.
        def slots_of(row: int, positions: Any) -> Any:
            if not paged:
                return positions
            pages = torch.tensor(table[row], dtype=torch.int64)[positions // PAGE_SIZE]
            return pages * PAGE_SIZE + positions % PAGE_SIZE

        written: dict[int, int] = {}
        for row, start in enumerate(starts):
            end = start + q_len  # exclusive
            _check(start >= 0, "a negative cache position")
            _check(
                end <= cfg.max_seq_len,
                f"position {end - 1} is past the model's max_seq_len of {cfg.max_seq_len} "
                "(its RoPE tables end there)",
            )
            if paged:
                needed = (end + PAGE_SIZE - 1) // PAGE_SIZE
                _check(
                    needed <= len(table[row]),
                    f"positions up to {end - 1} need {needed} pages; the block table gives "
                    f"{len(table[row])}",
                )
                pages = table[row][:needed]
                _check(
                    all(0 <= p < pages_total for p in pages),
                    f"page index out of range 0..{pages_total - 1}: {pages}",
                )
                _check(len(set(pages)) == len(pages), f"a page used twice in one sequence: {pages}")
                for page in set((slots_of(row, torch.arange(start, end)) // PAGE_SIZE).tolist()):
                    _check(
                        written.setdefault(page, row) == row,
                        f"page {page} written by two sequences in one forward pass",
                    )
            else:
                _check(end <= slots_total, f"position {end - 1} is past the cache's {slots_total}")

        with self._lock:
            self.calls.append(
                ForwardCall(
                    batch,
                    q_len,
                    paged,
                    not preprocess_only,
                    tuple((s, s + q_len - 1) for s in starts),
                )
            )
        if self.delay:
            time.sleep(self.delay)
        cache.current_seq_len += q_len  # as forward_chunk does
        return self.run_model(
            model, cache, input_ids, starts, slots_of, preprocess_only, last_id_only
        )

    def run_model(
        self,
        model: Any,
        cache: Any,
        input_ids: Any,
        starts: list[int],
        slots_of: Callable[[int, Any], Any],
        preprocess_only: bool,
        last_id_only: bool,
    ) -> dict[str, Any]:
        """The model itself, once the pass is checked: write each position's state into the
        cache at ``slots_of(row, positions)``, then the logits (none when ``preprocess_only``).
        ``starts`` holds each row's first position."""
        import torch

        cfg = model.config
        storage = _storage(cache)
        batch, q_len = (int(x) for x in input_ids.shape)
        # Write this pass's "keys": the token and its position.
        for row, start in enumerate(starts):
            positions = torch.arange(start, start + q_len)
            slots = slots_of(row, positions)
            storage[slots, 0] = input_ids[row].to(torch.int32)
            storage[slots, 1] = positions.to(torch.int32)
        if preprocess_only:
            return {}

        allowed = self.allowed(cfg.model_dir)
        vocab = cfg.vocab_size + (-cfg.vocab_size % 32)  # the head's padded width
        offsets = [q_len - 1] if last_id_only else list(range(q_len))
        logits = torch.full((batch, len(offsets), vocab), MASKED, dtype=torch.float32)
        for row, start in enumerate(starts):
            for column, offset in enumerate(offsets):
                position = start + offset
                stored = storage[slots_of(row, torch.arange(position + 1))]
                expected = torch.arange(position + 1, dtype=stored.dtype)
                if not torch.equal(stored[:, 1], expected):
                    bad = int((stored[:, 1] != expected).nonzero()[0])
                    raise KernelLimitError(
                        f"the cache holds no key/value for position {bad} of this sequence "
                        "(a missing or stale page)"
                    )
                context = stored[:, 0].to(torch.int64)
                logits[row, column] = _logits(context, allowed, vocab, self.eos_when, cfg)
        return {"logits": logits.half()}

    # -- for tests ------------------------------------------------------------------------------

    def reference_reply(
        self, model_dir: Path, prompt_ids: Sequence[int], new_tokens: int
    ) -> list[int]:
        """The tokens greedy decoding must produce after ``prompt_ids``, computed without any
        cache: what the generator must reproduce through its pages."""
        import torch

        allowed = self.allowed(str(model_dir))
        ids = list(prompt_ids)
        reply: list[int] = []
        for _ in range(new_tokens):
            token = choose(torch.tensor(ids, dtype=torch.int64), allowed)
            ids.append(token)
            reply.append(token)
        return reply


def _check(condition: bool, message: str) -> None:
    if not condition:
        raise KernelLimitError(message)


def _storage(cache: Any) -> Any:
    """The cache's layer-0 key tensor as (slots, 2) int32: the stand-in's token and position."""
    import torch

    keys = cache.key_states[0]
    _check(keys is not None, "the cache has no tensors: it was never allocated")
    slots = int(keys.shape[1])
    raw = keys.view(torch.uint8).reshape(slots, -1)
    _check(raw.shape[1] >= 8 and raw.shape[1] % 4 == 0, "cache slots too small for the stand-in")
    return raw[:, :8].view(torch.int32)


def _logits(
    context: Any,
    allowed: Any,
    vocab: int,
    eos_when: Callable[[list[int]], bool] | None,
    cfg: Any,
) -> Any:
    import torch

    row = torch.full((vocab,), MASKED, dtype=torch.float32)
    token = choose(context, allowed)
    spread = ((allowed * 7919 + token * 104729 + int(context.shape[0])) % 1000).float() / 250 - 2
    row[allowed] = spread
    row[token] = PEAK
    if eos_when is not None and eos_when([int(i) for i in context.tolist()]):
        row[int(cfg.eos_token_id)] = PEAK * 2
    return row


@dataclass(frozen=True)
class Platform:
    """What ``_gpu_platform`` reports on the GPU machine being simulated."""

    capabilities: tuple[tuple[int, int], ...] = ((8, 9),)  # one L40S
    flash_attn: str | None = "2.8.3"


@contextlib.contextmanager
def cpu_tier(
    monkeypatch: pytest.MonkeyPatch,
    platform: Platform | None = None,
    stand_in: StandIn | None = None,
) -> Iterator[StandIn]:
    """exllamav2 on the CPU with the stand-ins installed, simulating ``platform`` (default: an
    Ampere-or-newer GPU with flash-attn, so the generator runs paged). ``stand_in`` replaces the
    deterministic model (``real_llama`` computes a real one). Skips the test when the tier
    cannot run here."""
    reason = cpu_ext.unavailable_reason()
    if reason is not None:
        pytest.skip(f"exllamav2 CPU tier: {reason}")
    try:
        cpu_ext.install()
    except cpu_ext.TierUnavailable as exc:
        pytest.skip(f"exllamav2 CPU tier: {exc}")
    import exllamav2.attn
    from exllamav2 import ExLlamaV2
    from promptwire_modal_exllama import runtime

    platform = platform or Platform()
    if stand_in is None:
        stand_in = StandIn()

    def load_autosplit(model: Any, cache: Any, *args: Any, **kwargs: Any) -> None:
        stand_in.load_autosplit(model, cache, *args, **kwargs)

    def forward_chunk(model: Any, *args: Any, **kwargs: Any) -> dict[str, Any]:
        return stand_in.forward_chunk(model, *args, **kwargs)

    monkeypatch.setattr(ExLlamaV2, "load_autosplit", load_autosplit)
    monkeypatch.setattr(ExLlamaV2, "forward_chunk", forward_chunk)
    # The stand-in forward pass is the attention kernel too. exllamav2 decides at import whether
    # it has paged attention: where flash-attn >= 2.5.7 imports, whatever the GPU.
    has_flash_attn = platform.flash_attn is not None
    monkeypatch.setattr(exllamav2.attn, "has_flash_attn", has_flash_attn)
    monkeypatch.setattr(exllamav2.attn, "has_flash_attn_with_paged", has_flash_attn)
    monkeypatch.setattr(
        runtime,
        "_gpu_platform",
        lambda torch: runtime.GpuPlatform(platform.capabilities, platform.flash_attn, None),
    )
    yield stand_in
