"""Continuous batching over llama.cpp's multi-sequence batches, as llama-server's slots do.

One thread owns the context. Each request in flight is a sequence of the KV cache (at most
``parallel`` of them; more wait in line); every step samples the next token of each generating
sequence, then runs one forward pass over a batch holding those tokens and as much of the newly
admitted prompts as ``batch_size`` allows (long prompts go in over several steps, so they never
stall the replies being generated). A request joins at the next step and leaves at its end of
sequence, its limit, or its cancellation, which frees its cache cells at once.

A sequence that ends keeps its prompt in the cache, and a new request takes the free sequence
whose cached prompt shares the longest beginning with its own (as llama-server's slots do): a
conversation's next turn, or the same system prompt again, is not computed twice. When a
sequence still generating shares a longer beginning (by ``shared_prefix_min`` tokens or more),
the new request's sequence starts from a copy of that one's cache instead, and a request that
arrives while such a beginning is still being computed waits the few steps until it is cached:
many users of one system prompt at once compute it once.

With ``prompt_lookup`` on, each generating sequence also puts in the pass the tokens that
followed the last place its last few tokens stood (``promptwire_llamacpp.lookup``), and keeps
those its sampler then picks: a reply that repeats its input takes fewer passes.

Pieces go back to each request's event loop through ``call_soon_threadsafe``; token bytes are
decoded with an incremental UTF-8 decoder, so a character split across tokens is never split
across pieces, and one a reply ends inside (cut by ``max_tokens``) is left out, not written as
U+FFFD.
"""

from __future__ import annotations

import codecs
import logging
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from promptwire.engine import (
    EngineError,
    EngineOverloaded,
    Finish,
    RequestRejected,
    TextChunk,
)
from promptwire.engine.worker import BatchWorker, EventChannel
from promptwire.protocol import FinishReason, Usage

from promptwire_llamacpp.lookup import PromptLookup
from promptwire_llamacpp.runtime import GrammarDeadEnd, LlamaRuntime, SamplerConfig

logger = logging.getLogger(__name__)


#: Steps without guessing after a one-token guess was wrong: in a reply that repeats nothing,
#: a wrong guess costs a token's compute in every pass (benchmarks/prompt_lookup.py).
GUESS_PAUSE = 16


@dataclass(eq=False)
class Job(EventChannel):
    """One request's generation; its events go back on its channel."""

    tokens: list[int]
    sampler: SamplerConfig
    max_new_tokens: int
    special: bool = False
    """Special tokens generated go into the text (a tool-call format whose markers are ones)."""
    handed_off: bool = False
    """Its events go to a ``Handoff``, not to an event loop (``WorkerEngine.generate_to``)."""

    def __post_init__(self) -> None:
        if not self.handed_off:
            EventChannel.__init__(self)  # the request's running loop


@dataclass(eq=False)
class _Sequence:
    """A job holding a sequence of the KV cache (the scheduler thread's own state)."""

    job: Job
    seq_id: int
    sampler: Any
    fed: int = 0
    """Prompt tokens already in the cache."""
    next_token: int | None = None
    """Sampled, not yet in the cache."""
    logits_at: int | None = None
    """Where this sequence's logits are in the last batch, when it has some to sample from."""
    generated: int = 0
    lookup: PromptLookup | None = None
    """The prompt and reply so far, for guesses (with ``prompt_lookup`` on)."""
    guesses: list[tuple[int, int]] = field(default_factory=list)
    """Guessed tokens in the last batch, each with where its logits are."""
    guess_room: int = 0
    """How many tokens the next guess may hold: halved when a guess's first token was wrong
    (down to none, for ``GUESS_PAUSE`` steps), doubled when all were right; a reply that
    repeats nothing costs little."""
    paused: int = 0
    """Steps left without guessing."""
    decoder: codecs.IncrementalDecoder = field(
        default_factory=lambda: codecs.getincrementaldecoder("utf-8")("replace")
    )

    @property
    def position(self) -> int:
        return self.fed + self.generated


@dataclass(slots=True)
class _Entry:
    """A token of the next pass: a sequence's, at ``position``; ``logits``: sampled from after
    the pass; ``guess``: prompt lookup's, kept only if the sampler picks it."""

    sequence: _Sequence
    token: int
    position: int
    logits: bool
    guess: bool = False


@dataclass(frozen=True)
class SchedulerStats:
    """What the scheduler holds, as its thread last counted (read by ``/metrics``)."""

    active: int = 0
    waiting: int = 0


class Scheduler(BatchWorker[Job]):
    """The thread that owns the llama.cpp context and runs every request in one batch.

    ``prompts_in_turn``: a pass finishes at most one request's prompt, so requests that arrive
    together get their first tokens one after another instead of all at the end of one long
    pass. On a CPU a prompt token costs about the same in a pass of 16 tokens as in one of 200
    (SmolLM2 on 2 cores: 3.2-4.0 ms each, about 8 ms a pass besides), so taking the prompts in
    turn brings most first tokens forward and the last one back by a few passes' overhead.
    Eight chat streams arriving together (benchmark 11's prompts, 10 rounds): median first
    token 0.49 s, against 0.57 s with the batch filled and llama-server's 0.53 s. On a GPU a
    pass of many tokens costs little more than one of few: fill the batch there."""

    def __init__(
        self,
        runtime: LlamaRuntime,
        *,
        max_waiting: int,
        shared_prefix_min: int = 0,
        prompt_lookup: int = 0,
        prompts_in_turn: bool = False,
    ) -> None:
        super().__init__(name="promptwire-llamacpp")
        self._runtime = runtime
        self._prompts_in_turn = prompts_in_turn
        self._max_waiting = max_waiting
        self._waiting: deque[Job] = deque()  # the thread's own, like everything below
        # Free sequences, and the prompt each still holds in the cache (the thread's own).
        self._free: dict[int, list[int]] = {seq_id: [] for seq_id in range(runtime.parallel)}
        self._active: dict[Job, _Sequence] = {}
        self._batch: Any = None
        self._queued = 0  # submitted, not yet holding a sequence (under the lock)
        self.stats = SchedulerStats()
        self.steps = 0
        self.reused_tokens = 0
        """Prompt tokens found in the cache instead of computed."""
        self._shared_prefix_min = shared_prefix_min
        self.copied_prefixes = 0
        """Sequences started from a copy of a generating sequence's cache."""
        self._prompt_lookup = prompt_lookup
        self.guessed_tokens = 0
        """Tokens guessed by prompt lookup and put in a pass."""
        self.accepted_tokens = 0
        """Guessed tokens the sampler then picked: reply tokens that took no pass of their own."""

    def _admit_locked(self, job: Job) -> None:
        # Free sequences take queued jobs at the next step (a length read from any thread).
        if self._queued - len(self._free) >= self._max_waiting:
            raise EngineOverloaded("every sequence is busy and the queue is full", retry_after=1)
        self._queued += 1

    # -- the scheduler thread ------------------------------------------------------------------

    def _open(self) -> None:
        self._batch = self._runtime.new_batch()

    def _close(self) -> None:
        if self._batch is not None:
            self._runtime.free_batch(self._batch)
            self._batch = None

    def _busy(self) -> bool:
        return bool(self._active) or (bool(self._waiting) and bool(self._free))

    def _accept(self, job: Job) -> None:
        self._waiting.append(job)

    def _step(self) -> None:
        self._admit()
        self._decode(self._batch)
        self.stats = SchedulerStats(len(self._active), len(self._waiting))

    def _take_all(self) -> list[Job]:
        jobs = [*self._waiting, *self._active]
        self._waiting.clear()
        self._active.clear()
        return jobs

    def _release_all(self) -> list[Job]:
        for sequence in self._active.values():
            self._free_sequence(sequence)
        return self._take_all()

    def _admit(self) -> None:
        deferred: list[Job] = []
        while self._waiting and self._free:
            job = self._waiting.popleft()
            if self._worth_waiting(job.tokens):
                deferred.append(job)  # keeps its place in line
                continue
            try:
                sampler = self._runtime.new_sampler(job.sampler)
            except ValueError as exc:
                self._release_queue_place()
                job.put(EngineError(f"cannot start the generation: {exc}"))
                continue
            seq_id, reused = self._take_sequence(job.tokens)
            lookup = PromptLookup(job.tokens) if self._prompt_lookup else None
            self._active[job] = _Sequence(
                job, seq_id, sampler, fed=reused, lookup=lookup, guess_room=self._prompt_lookup
            )
            self.reused_tokens += reused
            self._release_queue_place()
        self._waiting.extendleft(reversed(deferred))

    def _worth_waiting(self, tokens: list[int]) -> bool:
        """Whether a sequence still feeding its prompt will, within a few steps, hold
        ``shared_prefix_min`` more of ``tokens``' beginning than any sequence holds now: the
        request then waits to copy it rather than compute it alongside."""
        if not self._shared_prefix_min:
            return False
        limit = len(tokens) - 1  # one token is always fed again
        now = max((_common_prefix(cached, tokens) for cached in self._free.values()), default=0)
        later = 0
        for sequence in self._active.values():
            whole = min(_common_prefix(sequence.job.tokens, tokens), limit)
            now = max(now, min(whole, sequence.fed))
            later = max(later, whole)
        return later - min(now, limit) >= self._shared_prefix_min

    def _take_sequence(self, tokens: list[int]) -> tuple[int, int]:
        """The free sequence whose cached prompt begins like ``tokens`` for longest, and how
        many tokens of it stay; the rest of its cells are dropped. At least one token is always
        fed again, for the logits of the first reply token. A generating sequence sharing a
        longer beginning by ``shared_prefix_min`` tokens lends a copy of its cache instead."""
        # With no prompt in common, an empty sequence first: cached prompts stay for later. Ties
        # go to the lowest id: llama.cpp runs consecutive ids in one pass (see ``_step``).
        emptiest = min(self._free, key=lambda seq_id: (len(self._free[seq_id]), seq_id))
        best, shared = emptiest, 0
        for seq_id in sorted(self._free):
            common = _common_prefix(self._free[seq_id], tokens)
            if common > shared:
                best, shared = seq_id, common
        donor, lent = self._donor(tokens)
        if donor is not None and lent >= shared + self._shared_prefix_min:
            best, shared = emptiest, lent
            self._runtime.copy_cache(donor, best)
            self.copied_prefixes += 1
        del self._free[best]
        shared = min(shared, len(tokens) - 1)
        self._runtime.forget(best, start=shared)
        return best, shared

    def _donor(self, tokens: list[int]) -> tuple[int | None, int]:
        """The generating sequence whose prompt in the cache begins like ``tokens`` for
        longest, and for how many tokens (its reply's cells come after its prompt's)."""
        if not self._shared_prefix_min:
            return None, 0
        donor, lent = None, 0
        for sequence in self._active.values():
            common = _common_prefix(sequence.job.tokens[: sequence.fed], tokens)
            if common > lent:
                donor, lent = sequence.seq_id, common
        return donor, lent

    def _release_queue_place(self) -> None:
        with self._cond:
            self._queued -= 1

    def _cancel(self, job: Job) -> None:
        if job in self._active:
            self._free_sequence(self._active.pop(job))
        elif job in self._waiting:
            self._waiting.remove(job)
            self._release_queue_place()

    def _decode(self, batch: Any) -> None:
        runtime = self._runtime
        for sequence in list(self._active.values()):
            if sequence.logits_at is not None:
                self._next_tokens(sequence)
        # What goes in this pass: the sampled tokens (each with its guesses), then as much of
        # the prompts (in the order they came) as the batch holds.
        entries: list[_Entry] = []
        for sequence in self._active.values():
            if sequence.next_token is not None:
                entries.append(_Entry(sequence, sequence.next_token, sequence.position, True))
                sequence.next_token = None
                sequence.generated += 1  # in the cache from this pass on
                for offset, token in enumerate(self._guess(sequence, len(entries))):
                    position = sequence.position + offset
                    entries.append(_Entry(sequence, token, position, True, guess=True))
        replies = len(entries)
        for sequence in self._active.values():
            prompt = sequence.job.tokens
            last = False
            while sequence.fed < len(prompt) and len(entries) < runtime.batch_size:
                last = sequence.fed == len(prompt) - 1
                entries.append(_Entry(sequence, prompt[sequence.fed], sequence.fed, last))
                sequence.fed += 1
            if last and self._prompts_in_turn:
                break  # the next prompts in the next pass, this request's first token first
        # In the batch by sequence id: with a cache per sequence, llama.cpp splits a batch into
        # runs of consecutive sequence ids (split_equal, "sequential"), each a forward pass of
        # its own; in the order requests came, 8 sequences could take 8 passes.
        # Stable: a sequence's sampled token and its guesses stay in their order.
        entries.sort(key=lambda entry: entry.sequence.seq_id)
        for count, entry in enumerate(entries):
            sequence = entry.sequence
            _put(batch, count, entry.token, entry.position, sequence.seq_id, entry.logits)
            if entry.guess:
                sequence.guesses.append((entry.token, count))
            elif entry.logits:
                sequence.logits_at = count
        count = len(entries)
        if count == 0:
            return
        batch.n_tokens = count
        # The tokens sampled above leave now, while this pass runs, not after it: a pass that
        # computes prompts takes 100 ms and more, and held every first token back that long.
        self._send_events()
        status = runtime.decode(batch, prompt=count > replies)
        self.steps += 1
        if status == 0:
            self._pass_succeeded()
            return
        logger.error("llama_decode returned %d; failing the requests in the batch", status)
        for sequence in list(self._active.values()):
            del self._active[sequence.job]
            self._free_sequence(sequence, keep_prompt=False)
            sequence.job.put(EngineError(f"generation failed on the server (decode {status})"))
        self._pass_failed(f"llama_decode status {status}")

    def _guess(self, sequence: _Sequence, used: int) -> list[int]:
        """Prompt lookup's guesses after the token just put in the batch: no more than the
        batch has room for, the reply's limit and the context leave."""
        if sequence.lookup is None:
            return []
        if sequence.paused:
            sequence.paused -= 1
            return []
        job, runtime = sequence.job, self._runtime
        room = min(
            sequence.guess_room,
            runtime.batch_size - used - len(self._active),  # every sequence keeps its place
            job.max_new_tokens - sequence.generated,
            runtime.context_size - sequence.position - 1,
        )
        if room <= 0:
            return []
        guesses = sequence.lookup.guess(room)
        self.guessed_tokens += len(guesses)
        return guesses

    def _next_tokens(self, sequence: _Sequence) -> None:
        """Sample from the sequence's logits, then from each guess's while the sampler picked
        the guessed token (already in the cache); the first other pick drops the guesses after
        it from the cache and goes in the next pass."""
        index = sequence.logits_at
        assert index is not None
        sequence.logits_at = None
        guesses, sequence.guesses = sequence.guesses, []
        for right, (guessed, guess_index) in enumerate(guesses):
            token = self._next_token(sequence, index)
            if token is None:  # finished (its cells are dropped with it)
                return
            if token != guessed:
                self._runtime.forget(sequence.seq_id, start=sequence.position)
                sequence.next_token = token
                if right == 0:
                    sequence.guess_room //= 2
                    if not sequence.guess_room:
                        sequence.guess_room, sequence.paused = 1, GUESS_PAUSE
                return
            sequence.generated += 1  # the guess, in the cache, was right
            self.accepted_tokens += 1
            index = guess_index
        if guesses:
            sequence.guess_room = min(self._prompt_lookup, sequence.guess_room * 2)
        sequence.next_token = self._next_token(sequence, index)

    def _next_token(self, sequence: _Sequence, index: int) -> int | None:
        """Sample from the logits at ``index``; emit the text and return the token, or finish
        the sequence and return None."""
        runtime, job = self._runtime, sequence.job
        if job.sampler.plain_greedy:
            token = runtime.most_likely(index)
        elif job.sampler.grammar is None:
            token = runtime.sample(sequence.sampler, index)
        else:
            try:
                token = runtime.sample_checked(sequence.sampler, index)
            except GrammarDeadEnd as exc:
                self._fail(sequence, RequestRejected(_dead_end_message(exc, sequence.generated)))
                return None
        if runtime.is_end(token):
            self._finish(sequence, FinishReason.STOP, sequence.generated)
            return None
        completion = sequence.generated + 1
        text = sequence.decoder.decode(runtime.piece(token, special=job.special))
        job.put(TextChunk(text, tokens=1))
        if completion >= job.max_new_tokens or sequence.position + 1 >= runtime.context_size:
            self._finish(sequence, FinishReason.LENGTH, completion)
            return None
        if sequence.lookup is not None:
            sequence.lookup.append(token)
        return token

    def _finish(self, sequence: _Sequence, reason: FinishReason, completion: int) -> None:
        job = sequence.job  # the decoder holds at most a character's first bytes: left out
        del self._active[job]
        self._free_sequence(sequence)
        job.put(Finish(reason, Usage(prompt_tokens=len(job.tokens), completion_tokens=completion)))

    def _fail(self, sequence: _Sequence, error: EngineError) -> None:
        """End one request with ``error``; the others go on."""
        del self._active[sequence.job]
        self._free_sequence(sequence)
        sequence.job.put(error)

    def _free_sequence(self, sequence: _Sequence, *, keep_prompt: bool = True) -> None:
        """Give the sequence back, its prompt kept in the cache for a later request (the reply
        dropped: a reply is rarely the next prompt's prefix, and it keeps the cache small)."""
        kept = sequence.job.tokens[: sequence.fed] if keep_prompt else []
        self._runtime.forget(sequence.seq_id, start=len(kept))
        self._runtime.free_sampler(sequence.sampler)
        self._free[sequence.seq_id] = kept


def _dead_end_message(exc: GrammarDeadEnd, generated: int) -> str:
    return (
        f"the reply cannot go on after {generated} tokens: {exc}; the JSON schema (or the tool's "
        "parameters) asks for text no token of this model can write, such as a character it "
        "has no token for (U+0000) or a pattern no character matches"
    )


def _common_prefix(a: list[int], b: list[int]) -> int:
    count = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        count += 1
    return count


def _put(batch: Any, index: int, token: int, position: int, seq_id: int, logits: bool) -> None:
    batch.token[index] = token
    batch.pos[index] = position
    batch.n_seq_id[index] = 1
    batch.seq_id[index][0] = seq_id
    batch.logits[index] = logits
