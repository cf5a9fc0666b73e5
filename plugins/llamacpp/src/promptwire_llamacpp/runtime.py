"""A loaded GGUF model and its llama.cpp context, through llama-cpp-python's C bindings.

The high-level ``llama_cpp.Llama`` runs one sequence at a time; continuous batching needs the
C API itself: one context whose KV cache holds ``parallel`` sequences (``n_seq_max``, each in a
cache of its own of ``context_size`` tokens, as llama-server's slots), batches that mix
sequences, and a sampler chain (with a grammar when the reply is constrained) per sequence.

Each sequence has its own cache (``kv_unified`` off) so that a greedy reply is the same token for
token alone and among other requests: in one unified cache a sequence's cells lie wherever they
were free, the attention sums them in another order, and the rounding differs (measured on
SmolLM2, the same greedy question 8 at once: 1 of 8 replies equal to the one alone, 8 of 8 with
a cache per sequence). Only the scheduler thread calls ``decode``
and the samplers; tokenizing and grammar checks are read-only and safe from other threads.

ctypes releases the GIL around every C call, so a forward pass never stalls the event loop. The
calls made for every token (sampling) keep it instead, and token pieces and end-of-generation
checks are cached: each release is a chance for the event loop to take the GIL, and the
scheduler then waits for it (up to Python's 5 ms switch interval) dozens of times a step.
Measured on SmolLM2 with 8 streams: 70 tokens/s in-process against 39 over HTTP before.
"""

from __future__ import annotations

import ctypes
import logging
import math
import os
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from promptwire.errors import ConfigurationError

from promptwire_llamacpp.idle_cores import IdleCores
from promptwire_llamacpp.settings import LlamaCppSettings, ThreadWait
from promptwire_llamacpp.thread_choice import ThreadChoice

logger = logging.getLogger(__name__)

_backend_lock = threading.Lock()
_backend_ready = False
_log_callback: Any = None  # kept alive: llama.cpp calls it for the life of the process
#: While a model loads: llama.cpp's warnings and errors, held back (logged once it has loaded; in
#: the one-line error when it cannot).
_load_errors: list[tuple[int, str]] | None = None
_LOG_LEVELS = {3: logging.WARNING, 4: logging.ERROR}  # ggml.h: GGML_LOG_LEVEL_WARN, _ERROR


def _llama() -> Any:
    """llama_cpp's C bindings, imported on first use (they load the shared libraries, and with
    them the OpenMP runtime, which reads how its threads wait: ``apply_thread_wait`` first)."""
    if _thread_wait_applied is None and "llama_cpp" not in sys.modules:
        apply_thread_wait(DEFAULT_THREAD_WAIT)
    import llama_cpp

    return llama_cpp


#: libgomp's own spin count when no wait policy is set (what llama-server runs with).
LIBGOMP_SPIN_COUNT = 300_000
DEFAULT_THREAD_WAIT: ThreadWait = "auto"
_thread_wait_applied: dict[str, str | None] | None = None


def thread_wait_environment(wait: ThreadWait) -> dict[str, str | None]:
    """The OpenMP variables (None: unset) that make llama.cpp's threads wait as ``wait`` says
    (the ``thread_wait`` setting).

    llama.cpp's OpenMP threads meet at a barrier after each operation of a forward pass (a few
    hundred a token) and wait for the next pass between them. Spinning there is fastest when
    every thread has a core; on shared cores a spinning thread burns the time the thread it
    waits for needs (measured with SmolLM2 on 2 shared cores beside one busy process: 6.6
    tokens/s at one stream spinning, 36 sleeping; bounded spins of 3,000 to 100,000 fell as
    far). Sleeping costs a kernel wake-up per barrier instead. ``auto`` spins, and runs each pass
    on one thread or on all, whichever has been faster for its size (``ThreadChoice``): one
    thread has no barrier to wait at.
    """
    if wait in ("passive", 0):
        return {"OMP_WAIT_POLICY": "PASSIVE", "GOMP_SPINCOUNT": None}
    spins = LIBGOMP_SPIN_COUNT if wait in ("spin", "auto") else wait
    return {"OMP_WAIT_POLICY": None, "GOMP_SPINCOUNT": str(spins)}


def apply_thread_wait(wait: ThreadWait) -> None:
    """Set this process's OpenMP variables for ``wait`` before llama.cpp loads (the engine
    process sets them for itself). Once llama.cpp has loaded, the OpenMP runtime has read them
    for good: a different ``wait`` then only logs a warning."""
    global _thread_wait_applied
    wanted = thread_wait_environment(wait)
    if "llama_cpp" in sys.modules:
        if _thread_wait_applied is not None and wanted != _thread_wait_applied:
            logger.warning(
                "thread_wait=%s not applied: llama.cpp is already loaded in this process with "
                "%s (the OpenMP runtime reads it once)",
                wait,
                _thread_wait_applied,
            )
        return
    for name, value in wanted.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value
    _thread_wait_applied = wanted


def _init_backend() -> None:
    """Once per process: route llama.cpp's log to ``logging`` (warnings and errors only; its
    info lines would flood stderr) and initialise its backends."""
    global _backend_ready, _log_callback
    with _backend_lock:
        if _backend_ready:
            return
        llama = _llama()

        def log(level: int, text: bytes, _data: Any) -> None:
            if level in _LOG_LEVELS and (line := text.decode("utf-8", "replace").strip()):
                if _load_errors is not None:
                    _load_errors.append((_LOG_LEVELS[level], line))
                else:
                    logger.log(_LOG_LEVELS[level], "llama.cpp: %s", line)

        _log_callback = llama.llama_log_callback(log)
        llama.llama_log_set(_log_callback, ctypes.c_void_p(0))
        llama.llama_backend_init()
        _backend_ready = True


#: llama.cpp's sampler takes a 32-bit seed, and this one means "pick one at random".
_RANDOM_SEED = 0xFFFFFFFF


def sampler_seed(seed: int) -> int:
    """The 32-bit seed llama.cpp's sampler gets for a request's ``seed`` (0 … 2**63-1): seeds
    below 2**32-1 as they are (as llama-server takes them), larger ones mixed down (splitmix64's
    finalizer) so that they neither mean "random" (2**32-1 did, and every seed equal to it modulo
    2**32) nor fall on a small seed's reply by their low bits alone."""
    if seed < _RANDOM_SEED:
        return seed
    mixed = seed & 0xFFFFFFFFFFFFFFFF
    mixed = ((mixed ^ (mixed >> 30)) * 0xBF58476D1CE4E5B9) & 0xFFFFFFFFFFFFFFFF
    mixed = ((mixed ^ (mixed >> 27)) * 0x94D049BB133111EB) & 0xFFFFFFFFFFFFFFFF
    mixed ^= mixed >> 31
    return mixed % _RANDOM_SEED


class ModelLoadError(ConfigurationError):
    """The GGUF file cannot be loaded (missing, not GGUF, or an architecture llama.cpp lacks), or
    its context does not fit: ``promptwire serve`` says so in one line (a
    ``ConfigurationError``)."""


class GrammarDeadEnd(Exception):
    """No token can continue the reply's grammar (a character no token holds, such as U+0000)."""


#: ``llama.cpp`` rounds each sequence's cache up to a multiple of this (``GGML_PAD(n_ctx_seq,
#: 256)`` in llama-context.cpp).
CONTEXT_PADDING = 256


def sequence_cells(context_size: int) -> int:
    """The cells llama.cpp gives each sequence's own cache for ``context_size`` tokens."""
    return -(-context_size // CONTEXT_PADDING) * CONTEXT_PADDING


#: Below this temperature a sequence picks its most likely token (greedy decoding).
GREEDY_BELOW = 0.01


@dataclass(frozen=True)
class SamplerConfig:
    """How one sequence picks its tokens."""

    temperature: float
    top_p: float
    top_k: int
    seed: int | None
    repeat_penalty: float = 1.0
    """Above 1, tokens of the last ``repeat_last_n`` are made less likely (1: off)."""
    repeat_last_n: int = 64
    grammar: str | None = None
    """GBNF the reply must match (``root`` rule), or None."""

    @property
    def plain_greedy(self) -> bool:
        """Greedy with nothing else in the chain: the token is the logits' largest, which
        ``LlamaRuntime.most_likely`` reads without the chain."""
        greedy = self.temperature < GREEDY_BELOW
        return greedy and self.repeat_penalty == 1.0 and self.grammar is None


class LlamaRuntime:
    """One GGUF model, one multi-sequence context, and the helpers around them."""

    def __init__(self, settings: LlamaCppSettings) -> None:
        apply_thread_wait(settings.thread_wait)
        _init_backend()
        llama = _llama()
        self.path = settings.model_path()
        check_model_file(self.path)
        model_params = llama.llama_model_default_params()
        model_params.n_gpu_layers = settings.gpu_layers if settings.gpu_layers >= 0 else 1 << 30
        with _llama_log_held() as held:
            self._model = llama.llama_model_load_from_file(str(self.path).encode(), model_params)
        if not self._model:
            raise ModelLoadError(
                f"llama.cpp could not load {self.path}: "
                f"{_reason(held, 'not a GGUF model, or an architecture it does not know')}"
            )
        _release(held)
        self._vocab = llama.llama_model_get_vocab(self._model)
        self.context_size = settings.context_size
        self.parallel = settings.parallel
        self.batch_size = settings.batch_size
        threads = settings.thread_count()
        context_params = llama.llama_context_default_params()
        # A cache per sequence (see the module's docstring), each of context_size tokens
        # rounded up as llama.cpp rounds it: the same cells as one unified cache of
        # context_size * parallel, and llama.cpp has no remainder to warn about.
        context_params.n_ctx = sequence_cells(settings.context_size) * settings.parallel
        context_params.n_batch = settings.batch_size
        context_params.n_ubatch = settings.batch_size
        context_params.n_seq_max = settings.parallel
        context_params.kv_unified = settings.kv_unified
        context_params.n_threads = threads
        context_params.n_threads_batch = threads
        context_params.no_perf = True
        if settings.gpu_layers == 0:
            self._check_memory(context_params.n_ctx, settings)
        with _llama_log_held() as held:
            self._context = llama.llama_init_from_model(self._model, context_params)
        if not self._context:
            llama.llama_model_free(self._model)
            raise ModelLoadError(
                f"llama.cpp could not make a context of {context_params.n_ctx} tokens "
                f"({settings.parallel} sequences of {settings.context_size}) for {self.path}: "
                f"{_reason(held, 'too large for memory')}; lower context_size or parallel"
            )
        _release(held)
        self._memory = llama.llama_get_memory(self._context)
        self.n_vocab = llama.llama_vocab_n_tokens(self._vocab)
        # The candidates a grammar sequence's chain picks from (see ``sample_checked``).
        self._candidates = (llama.llama_token_data * self.n_vocab)()
        self._candidate_view = _token_data_view(self._candidates, self.n_vocab)
        self._token_ids = _arange(self.n_vocab)
        self.weights_bytes = int(llama.llama_model_size(self._model))
        self.model_name = settings.model_name or self.path.stem
        self.threads = threads
        # thread_wait="auto": each pass on one thread or on all, whichever has been faster.
        self._choice = (
            ThreadChoice(threads, _idle_cores_probe())
            if settings.thread_wait == "auto" and threads > 1
            else None
        )
        self._threads_now = threads
        self.passes = 0
        self.single_thread_passes = 0
        self._pieces: dict[tuple[int, bool], bytes] = {}
        self._ends: dict[int, bool] = {}
        self._sample = ctypes.PYFUNCTYPE(  # keeps the GIL: see the module's docstring
            ctypes.c_int32,
            llama.llama_sampler_p_ctypes,
            llama.llama_context_p_ctypes,
            ctypes.c_int32,
        )(("llama_sampler_sample", llama.llama_cpp._lib))
        self._logits_ith = ctypes.PYFUNCTYPE(  # keeps the GIL, as ``_sample``
            ctypes.POINTER(ctypes.c_float), llama.llama_context_p_ctypes, ctypes.c_int32
        )(("llama_get_logits_ith", llama.llama_cpp._lib))

    def _check_memory(self, cells: int, settings: LlamaCppSettings) -> None:
        """Refuse a KV cache larger than this machine's memory before llama.cpp tries: it
        would allocate (and clear) it, or spend minutes and gigabytes on the cells' own
        bookkeeping first (measured: 2 GB and rising after 10 s for 256 x 2^20 cells)."""
        llama = _llama()
        heads = max(1, llama.llama_model_n_head(self._model))
        head_size = llama.llama_model_n_embd(self._model) // heads
        per_token = (
            2  # keys and values
            * llama.llama_model_n_layer(self._model)
            * llama.llama_model_n_head_kv(self._model)
            * head_size
            * 2  # bytes of an f16, llama.cpp's default cache type
        )
        needed = cells * per_token
        memory = physical_memory()
        if memory and needed > memory:
            raise ModelLoadError(
                f"a KV cache of {settings.parallel} sequences of {settings.context_size} tokens "
                f"for {self.path} needs {needed / 2**30:,.1f} GiB, more than this machine's "
                f"{memory / 2**30:,.1f} GiB of memory: lower context_size or parallel"
            )

    # -- the model's facts ---------------------------------------------------------------------

    def metadata(self, key: str) -> str | None:
        """A GGUF metadata value as text (``general.name``, ``tokenizer.chat_template``, ...)."""
        llama = _llama()
        size = llama.llama_model_meta_val_str(self._model, key.encode(), None, 0)
        if size < 0:
            return None
        buffer = ctypes.create_string_buffer(size + 1)
        llama.llama_model_meta_val_str(self._model, key.encode(), buffer, size + 1)
        return buffer.value.decode("utf-8", "replace")

    def chat_template(self) -> str | None:
        """The model's own chat template (``tokenizer.chat_template``), if it ships one."""
        template = _llama().llama_model_chat_template(self._model, None)
        return template.decode("utf-8", "replace") if template else None

    def special_tokens(self) -> dict[str, str]:
        """``bos_token`` and ``eos_token`` as text, for the chat template."""
        llama = _llama()
        found = {}
        for key, token in (
            ("bos_token", llama.llama_vocab_bos(self._vocab)),
            ("eos_token", llama.llama_vocab_eos(self._vocab)),
        ):
            if token >= 0:
                found[key] = self.piece(token, special=True).decode("utf-8", "replace")
        return found

    # -- text and tokens (any thread) ----------------------------------------------------------

    def tokenize(self, text: str, *, add_special: bool) -> list[int]:
        """``text``'s tokens, special tokens written in it read as such (as llama-server does);
        ``add_special``: with the BOS the model wants in front."""
        llama = _llama()
        data = text.encode("utf-8", "surrogatepass")
        room = len(data) + 8
        tokens = (llama.llama_token * room)()
        count = llama.llama_tokenize(self._vocab, data, len(data), tokens, room, add_special, True)
        if count < 0:  # more tokens than bytes (cannot happen with BPE, but llama.cpp says so)
            room = -count
            tokens = (llama.llama_token * room)()
            count = llama.llama_tokenize(
                self._vocab, data, len(data), tokens, room, add_special, True
            )
        return list(tokens[:count])

    def piece(self, token: int, *, special: bool = False) -> bytes:
        """The bytes a token stands for (a piece of a UTF-8 character, for some)."""
        key = (token, special)
        if (found := self._pieces.get(key)) is None:
            found = self._pieces[key] = self._piece(token, special)
        return found

    def _piece(self, token: int, special: bool) -> bytes:
        llama = _llama()
        buffer = ctypes.create_string_buffer(64)
        size = llama.llama_token_to_piece(self._vocab, token, buffer, 64, 0, special)
        if size < 0:
            buffer = ctypes.create_string_buffer(-size)
            size = llama.llama_token_to_piece(self._vocab, token, buffer, -size, 0, special)
        return buffer.raw[:size]

    def is_end(self, token: int) -> bool:
        """End of generation (EOS, EOT and the model's other end tokens)."""
        if (found := self._ends.get(token)) is None:
            found = self._ends[token] = bool(_llama().llama_vocab_is_eog(self._vocab, token))
        return found

    def grammar_error(self, grammar: str) -> str | None:
        """Why llama.cpp refuses ``grammar`` (its parser logs the details), None if it parses."""
        llama = _llama()
        sampler = llama.llama_sampler_init_grammar(self._vocab, grammar.encode(), b"root")
        if not sampler:
            return "llama.cpp could not parse the grammar made from it"
        llama.llama_sampler_free(sampler)
        return None

    # -- generation (the scheduler thread only) ------------------------------------------------

    def new_sampler(self, config: SamplerConfig) -> Any:
        """A sampler chain for one sequence; free it with ``free_sampler``."""
        llama = _llama()
        chain = llama.llama_sampler_chain_init(llama.llama_sampler_chain_default_params())
        if config.repeat_penalty != 1.0:
            # Older bindings declare a leading n_vocab that llama.cpp no longer takes; passing
            # the window twice gives llama.cpp the right first integer either way.
            last_n = config.repeat_last_n
            penalties = llama.llama_sampler_init_penalties(
                last_n, last_n, config.repeat_penalty, 0.0, 0.0
            )
            llama.llama_sampler_chain_add(chain, penalties)
        if config.grammar is not None:
            grammar = llama.llama_sampler_init_grammar(
                self._vocab, config.grammar.encode(), b"root"
            )
            if not grammar:
                llama.llama_sampler_free(chain)
                raise ValueError("the grammar does not parse")
            llama.llama_sampler_chain_add(chain, grammar)
        if config.temperature < GREEDY_BELOW:
            llama.llama_sampler_chain_add(chain, llama.llama_sampler_init_greedy())
            return chain
        if config.top_k > 0:
            llama.llama_sampler_chain_add(chain, llama.llama_sampler_init_top_k(config.top_k))
        if config.top_p < 1.0:
            llama.llama_sampler_chain_add(chain, llama.llama_sampler_init_top_p(config.top_p, 1))
        llama.llama_sampler_chain_add(chain, llama.llama_sampler_init_temp(config.temperature))
        seed = llama.LLAMA_DEFAULT_SEED if config.seed is None else sampler_seed(config.seed)
        llama.llama_sampler_chain_add(chain, llama.llama_sampler_init_dist(seed))
        return chain

    def sample(self, sampler: Any, index: int) -> int:
        """The next token from the logits at ``index`` of the last batch (accepted by the
        chain, so a grammar moves on)."""
        return int(self._sample(sampler, self._context, index))

    def most_likely(self, index: int) -> int:
        """The token with the largest logit at ``index`` of the last batch (the first of equal
        ones), as llama.cpp's greedy sampler picks it. Its chain first copies the whole
        vocabulary into a candidate array: 126-135 us a token against 81-100 here, for every
        sequence of every pass (SmolLM2, the call's median time in the scheduler's step, one
        stream in-process; most of what is left is reading the logits the pass just wrote)."""
        return int(_floats(self._logits_ith(self._context, index), self.n_vocab).argmax())

    def sample_checked(self, sampler: Any, index: int) -> int:
        """``sample`` for a chain with a grammar, which never hands the grammar a token it
        refuses: llama.cpp aborts the whole process when the chain picks one (every token
        masked, greedy picks end-of-text, the grammar's accept calls ``GGML_ABORT``). So the
        chain's apply step picks, the pick is checked (a finite logit: a token the grammar
        allows), and only then is it accepted. ``GrammarDeadEnd`` when no token is allowed.

        Plain ctypes calls: the GIL is released while the grammar masks the vocabulary.
        """
        llama = _llama()
        logits = llama.llama_get_logits_ith(self._context, index)
        view = self._candidate_view
        view["id"] = self._token_ids
        view["logit"] = _floats(logits, self.n_vocab)
        view["p"] = 0.0
        candidates = llama.llama_token_data_array(self._candidates, self.n_vocab, -1, False)
        llama.llama_sampler_apply(sampler, ctypes.byref(candidates))
        selected = int(candidates.selected)
        if not 0 <= selected < candidates.size:
            raise GrammarDeadEnd("the sampler chain picked no token")
        chosen = self._candidates[selected]
        if not math.isfinite(chosen.logit):
            raise GrammarDeadEnd("no token can continue the grammar")
        llama.llama_sampler_accept(sampler, chosen.id)
        return int(chosen.id)

    def free_sampler(self, sampler: Any) -> None:
        _llama().llama_sampler_free(sampler)

    def new_batch(self) -> Any:
        return _llama().llama_batch_init(self.batch_size, 0, 1)

    def free_batch(self, batch: Any) -> None:
        _llama().llama_batch_free(batch)

    def decode(self, batch: Any, *, prompt: bool = False) -> int:
        """One forward pass over ``batch`` (``prompt``: it holds prompt tokens); llama.cpp's
        status (0: done)."""
        llama = _llama()
        choice, tokens = self._choice, batch.n_tokens
        threads = self.threads if choice is None else choice.threads_for(tokens, prompt=prompt)
        if threads != self._threads_now:
            llama.llama_set_n_threads(self._context, threads, threads)
            self._threads_now = threads
        self.passes += 1
        self.single_thread_passes += threads == 1
        started, cpu_started = time.perf_counter(), time.process_time()
        status = int(llama.llama_decode(self._context, batch))
        if choice is not None:
            seconds, cpu = time.perf_counter() - started, time.process_time() - cpu_started
            choice.measured(tokens, threads, seconds, prompt=prompt, cpu=cpu)
        return status

    def copy_cache(self, source: int, target: int) -> None:
        """Give ``target`` the cells ``source`` holds, in place of its own. With a cache per
        sequence llama.cpp copies ``source``'s whole cache, at the next ``decode`` (before its
        pass); with one unified cache the cells are shared, nothing is copied."""
        llama = _llama()
        llama.llama_memory_seq_rm(self._memory, target, -1, -1)
        llama.llama_memory_seq_cp(self._memory, source, target, -1, -1)

    def forget(self, sequence: int, *, start: int = 0) -> None:
        """Free a sequence's cells of the KV cache from position ``start`` on."""
        _llama().llama_memory_seq_rm(self._memory, sequence, start if start > 0 else -1, -1)

    def close(self) -> None:
        llama = _llama()
        if self._context:
            llama.llama_free(self._context)
            self._context = None
        if self._model:
            llama.llama_model_free(self._model)
            self._model = None


def _idle_cores_probe() -> Callable[[], float | None] | None:
    """The machine's idle cores since the last call, where it says (Linux), for ThreadChoice."""
    probe = IdleCores()
    return probe.since_last if probe.available() else None


@contextmanager
def _llama_log_held() -> Iterator[list[tuple[int, str]]]:
    """llama.cpp's warnings and errors while the block runs, held back: logged by ``_release``
    when what the block made is fine, summed up by ``_reason`` in the one-line error when not."""
    global _load_errors
    held: list[tuple[int, str]] = []
    _load_errors = held
    try:
        yield held
    finally:
        _load_errors = None


def _release(held: list[tuple[int, str]]) -> None:
    for level, line in held:
        logger.log(level, "llama.cpp: %s", line)


def _reason(held: list[tuple[int, str]], default: str) -> str:
    """The first of llama.cpp's errors that says why (its later lines only say that it failed)."""
    for level, line in held:
        _, _, reason = line.partition(": ")
        reason = reason.removeprefix("error loading model: ").strip()
        if level == logging.ERROR and reason and "failed to" not in reason:
            return reason
    return default


def physical_memory() -> int | None:
    """Bytes of memory of this machine, where the system says."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return None


def check_model_file(path: Path) -> None:
    """Refuse, in one line naming it, a model path that is no GGUF file: missing, a directory,
    empty, or not starting with GGUF's magic bytes (llama.cpp checks the rest when it loads)."""
    if not path.exists():
        raise ModelLoadError(f"no GGUF model file at {path}")
    if path.is_dir():
        raise ModelLoadError(f"{path} is a directory, not a GGUF model file")
    try:
        with path.open("rb") as file:
            magic = file.read(len(GGUF_MAGIC))
    except OSError as exc:
        raise ModelLoadError(f"cannot read the model file {path}: {exc.strerror}") from None
    if not magic:
        raise ModelLoadError(f"{path} is empty (0 bytes), not a GGUF model file")
    if magic != GGUF_MAGIC:
        raise ModelLoadError(f"{path} is not a GGUF model file (it does not begin with 'GGUF')")


GGUF_MAGIC = b"GGUF"


def _token_data_view(buffer: Any, count: int) -> Any:
    """``buffer`` (``llama_token_data[count]``) as a numpy record array, written in place
    (numpy comes with llama-cpp-python, which depends on it)."""
    import numpy as np

    dtype = np.dtype([("id", "<i4"), ("logit", "<f4"), ("p", "<f4")])
    return np.frombuffer(buffer, dtype=dtype, count=count)


def _arange(count: int) -> Any:
    import numpy as np

    return np.arange(count, dtype=np.int32)


def _floats(pointer: Any, count: int) -> Any:
    import numpy as np

    return np.ctypeslib.as_array(pointer, shape=(count,))
