"""A real Llama forward pass for the CPU tier, in place of the deterministic stand-in model.

``RealLlama`` keeps every check of ``cpu_standin.StandIn`` (the kernels' limits on each pass) and
replaces only the model: at load it reads the weights from the model directory's safetensors
files (those ``ExLlamaV2Config`` mapped) into float32, and each forward pass computes the Llama
architecture in torch on the CPU — RMSNorm, grouped-query attention with RoPE ("rotate half", as
Hugging Face's and ExLlamaV2's), SwiGLU — writing each position's keys and values into the
ExLlamaV2 cache's own FP16 tensors at the slots the generator's block table gives, and reading
them back the same way, as flash-attn's paged kernel does. So a page-table mistake changes the
reply, which tests compare with ``reference_reply`` (the same model without any paged cache).

Logits come back in FP16, as ExLlamaV2's head gives them.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.exllama.cpu_standin import StandIn

#: Writes a row's new keys and values for one layer and returns all its keys and values from
#: position 0: ``(layer, row, keys, values) -> (keys, values)``, each (positions, kv heads, dim).
KvStore = Callable[[int, int, Any, Any], tuple[Any, Any]]


@dataclass(frozen=True)
class LlamaWeights:
    """A Llama model's weights in float32 and the hyperparameters its forward pass needs."""

    tensors: dict[str, Any]
    layers: int
    heads: int
    kv_heads: int
    head_dim: int
    rms_eps: float
    rope_theta: float

    @classmethod
    def load(cls, config: Any) -> LlamaWeights:
        """From the safetensors files ``ExLlamaV2Config`` found (its ``tensor_file_map``)."""
        from safetensors import safe_open

        tensors: dict[str, Any] = {}
        for name, path in config.tensor_file_map.items():
            with safe_open(path, framework="pt") as f:
                tensors[name] = f.get_tensor(name).float()
        if "lm_head.weight" not in tensors:  # tied embeddings
            tensors["lm_head.weight"] = tensors["model.embed_tokens.weight"]
        return cls(
            tensors,
            layers=int(config.num_hidden_layers),
            heads=int(config.num_attention_heads),
            kv_heads=int(config.num_key_value_heads),
            head_dim=int(config.head_dim),
            rms_eps=float(config.norm_eps),
            rope_theta=float(config.rotary_embedding_base),
        )

    def __getitem__(self, name: str) -> Any:
        return self.tensors[name]


def _rms_norm(x: Any, weight: Any, eps: float) -> Any:
    import torch

    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps) * weight


def _rope(x: Any, positions: Any, theta: float) -> Any:
    """Rotary embedding, "rotate half" form: x (..., tokens, heads, dim), positions (tokens,)."""
    import torch

    dim = int(x.shape[-1])
    inv_freq = 1.0 / (theta ** (torch.arange(0, dim, 2, dtype=torch.float32) / dim))
    angles = positions.to(torch.float32)[:, None] * inv_freq[None, :]
    cos = torch.cat((angles, angles), dim=-1).cos()[:, None, :]
    sin = torch.cat((angles, angles), dim=-1).sin()[:, None, :]
    first, second = x[..., : dim // 2], x[..., dim // 2 :]
    return x * cos + torch.cat((-second, first), dim=-1) * sin


def llama_forward(
    w: LlamaWeights,
    input_ids: Any,
    starts: Sequence[int],
    kv: KvStore,
    *,
    last_only: bool = False,
    head: bool = True,
) -> Any:
    """Logits (batch, tokens, vocab) in float32 for ``input_ids`` (batch, q_len), row ``r``'s
    tokens at positions ``starts[r]`` onward, its earlier keys and values in ``kv``. Without
    ``head``, only the keys and values are written (a prefill), and None comes back."""
    import torch
    import torch.nn.functional as F

    batch, q_len = (int(n) for n in input_ids.shape)
    group = w.heads // w.kv_heads
    scale = 1.0 / math.sqrt(w.head_dim)
    x = w["model.embed_tokens.weight"][input_ids]  # (batch, q_len, hidden)
    for layer in range(w.layers):
        p = f"model.layers.{layer}."
        h = _rms_norm(x, w[p + "input_layernorm.weight"], w.rms_eps)
        q = (h @ w[p + "self_attn.q_proj.weight"].T).view(batch, q_len, w.heads, w.head_dim)
        k = (h @ w[p + "self_attn.k_proj.weight"].T).view(batch, q_len, w.kv_heads, w.head_dim)
        v = (h @ w[p + "self_attn.v_proj.weight"].T).view(batch, q_len, w.kv_heads, w.head_dim)
        rows = []
        for row, start in enumerate(starts):
            positions = torch.arange(start, start + q_len)
            q_row = _rope(q[row], positions, w.rope_theta)
            keys, values = kv(layer, row, _rope(k[row], positions, w.rope_theta), v[row])
            keys = keys.repeat_interleave(group, dim=1)  # (context, heads, dim)
            values = values.repeat_interleave(group, dim=1)
            scores = torch.einsum("qhd,khd->hqk", q_row, keys) * scale
            causal = torch.arange(keys.shape[0])[None, :] > positions[:, None]
            scores = scores.masked_fill(causal[None], float("-inf"))
            rows.append(torch.einsum("hqk,khd->qhd", scores.softmax(-1), values))
        attended = torch.stack(rows).reshape(batch, q_len, w.heads * w.head_dim)
        x = x + attended @ w[p + "self_attn.o_proj.weight"].T
        h = _rms_norm(x, w[p + "post_attention_layernorm.weight"], w.rms_eps)
        gate = F.silu(h @ w[p + "mlp.gate_proj.weight"].T)
        x = x + (gate * (h @ w[p + "mlp.up_proj.weight"].T)) @ w[p + "mlp.down_proj.weight"].T
    if not head:
        return None
    if last_only:
        x = x[:, -1:]
    return _rms_norm(x, w["model.norm.weight"], w.rms_eps) @ w["lm_head.weight"].T


@dataclass
class RealLlama(StandIn):
    """The CPU tier with a real Llama forward pass over the model directory's weights."""

    _weights: dict[str, LlamaWeights] = field(default_factory=dict)

    def weights(self, config: Any) -> LlamaWeights:
        with self._lock:
            if config.model_dir not in self._weights:
                self._weights[config.model_dir] = LlamaWeights.load(config)
            return self._weights[config.model_dir]

    def load_autosplit(self, model: Any, cache: Any, *args: Any, **kwargs: Any) -> None:
        super().load_autosplit(model, cache, *args, **kwargs)
        self.weights(model.config)

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
        import torch
        from exllamav2 import ExLlamaV2Cache

        if type(cache) is not ExLlamaV2Cache:
            raise NotImplementedError(
                f"the real forward pass keeps its keys and values in FP16 caches only, not in "
                f"{type(cache).__name__} (its quantization runs in CUDA kernels)"
            )
        q_len = int(input_ids.shape[1])

        def paged_kv(layer: int, row: int, keys: Any, values: Any) -> tuple[Any, Any]:
            """As the attention kernel: this pass's keys and values into the cache's slots,
            then every position of the sequence read back through the same slots."""
            key_states, value_states = cache.key_states[layer], cache.value_states[layer]
            new = slots_of(row, torch.arange(starts[row], starts[row] + q_len))
            key_states[0, new] = keys.to(key_states.dtype)
            value_states[0, new] = values.to(value_states.dtype)
            context = slots_of(row, torch.arange(starts[row] + q_len))
            return key_states[0, context].float(), value_states[0, context].float()

        with torch.inference_mode():
            logits = llama_forward(
                self.weights(model.config),
                input_ids,
                starts,
                paged_kv,
                last_only=last_id_only,
                head=not preprocess_only,
            )
        if logits is None:
            return {}
        return {"logits": _pad_vocab(logits, model.config.vocab_size).half()}

    def reference_reply(
        self,
        model_dir: Path,
        prompt_ids: Sequence[int],
        new_tokens: int,
        stop_tokens: Collection[int] = (),
    ) -> list[int]:
        """Greedy decoding after ``prompt_ids`` with the same weights and a plain list of keys
        and values per layer (no pages, no generator): what the engine must reproduce. Ends
        after a token of ``stop_tokens`` (which the reply includes)."""
        import torch

        w = self._weights[str(model_dir)]
        store: dict[int, tuple[Any, Any]] = {}

        def plain_kv(layer: int, row: int, keys: Any, values: Any) -> tuple[Any, Any]:
            if layer in store:
                keys = torch.cat((store[layer][0], keys))
                values = torch.cat((store[layer][1], values))
            # FP16, as the cache holds them.
            store[layer] = (keys.half().float(), values.half().float())
            return store[layer]

        reply: list[int] = []
        ids, start = list(prompt_ids), 0
        with torch.inference_mode():
            for _ in range(new_tokens):
                batch = torch.tensor([ids[start:]], dtype=torch.long)
                logits = llama_forward(w, batch, [start], plain_kv, last_only=True)
                token = int(logits[0, -1].half().argmax())
                start = len(ids)
                ids.append(token)
                reply.append(token)
                if token in stop_tokens:
                    break
        return reply


def _pad_vocab(logits: Any, vocab_size: int) -> Any:
    """The head's width is padded to a multiple of 32; ExLlamaV2 masks the padding."""
    import torch

    padding = -vocab_size % 32
    if not padding:
        return logits
    masked = torch.full((*logits.shape[:-1], padding), -65504.0, dtype=logits.dtype)
    return torch.cat((logits, masked), dim=-1)
