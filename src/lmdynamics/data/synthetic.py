"""A synthetic language whose softmax rank R we choose: the test bed for the softmax bottleneck.

What it is. Vocabulary: ids ``0 .. V-1``; id 0 is the start symbol that opens every sequence and is never
emitted afterwards, ids ``1 .. V-1`` are the emitted symbols. Each symbol belongs to one of ``C`` classes
(a seeded, balanced assignment); the start symbol and positions before it have the extra class ``C``. The
next symbol after a prefix depends on the *state*: the classes of the symbols at the lags in ``lags``
(default ``(1, 2)``: the previous symbol's class and the class of the one before it), so a model must look
back more than one position (attention has work to do). The true conditional distribution is

    log p(v | s) = a * <U_s, E_v> / sqrt(R) - log Z_s,     v = 1 .. V-1   (p(0 | s) = 0)

with ``U`` (states x R) and ``E`` ((V-1) x R) standard normal from ``seed`` and ``a`` = ``logit_scale``.

What R means. Stack the log-probabilities of every reachable context (rows) over the emitted symbols
(columns) and subtract each row's mean: the result is ``U E_c^T`` (``E_c``: E with its column means
removed), of rank exactly R when there are at least R reachable states and R <= V - 2 (tested with a
float64 SVD). Contexts with the same state share a row, so the matrix over all reachable contexts has the
same rank.

Why d < R must saturate. A GPT-NeoX head computes logits ``h W^T`` with ``W`` (V x d): over all contexts
the logit matrix has rank <= d, the log-probability matrix (logits minus log Z per row) rank <= d + 1, and
its row-centred version rank <= d. A model with hidden size d < R cannot express the true log-probability
matrix whatever its backbone learns, so its loss stays above the entropy floor by at least the cost of the
best rank-d approximation; for d >= R the head is no obstacle. A mixture of softmaxes (non-linear in the
logits) escapes the limit; a low-rank head ``W = A B`` tightens it to r.

How to pick V, R and the context structure. R must be <= V - 2 and at most the number of reachable states
(``(C + 1)^k``-ish for k lags: every class tuple plus the start patterns); V a few times R so that the
vocabulary, not the number of states, is not what limits the rank; C^k a few times R so that every
direction of the R-dimensional space is used by many states. ``logit_scale`` sets how peaked the
distributions are (entropy floor well below log V); 2-3 makes the rank visible in the loss. A ladder of
model widths d around R then shows the bottleneck (``configs/train/interventions/``).

Exact entropy floor. Each block is an independent sequence starting at the start symbol, so the state of
every position is known from its prefix. The expected true conditional entropy at position t is computed by
propagating the exact distribution over class histories (lags 1..max(lags)) from the start; the floor is
its mean over the ``context_length - 1`` predicted positions, in nats: the expected validation loss of the
true distribution, which no model can beat in expectation.

Zipf frequencies (``zipf`` = s > 0). Real text has a few very frequent symbols and a long tail. With
``zipf`` > 0 one of the R directions is a fixed per-symbol bias, the log of a Zipf law over a seeded
frequency order pi(v) (1 = most frequent):

    log p(v | s) = a * <U_s, E_v> / sqrt(R - 1) + b_v - log Z_s,   b_v = -s * log pi(v),

with U (states x (R - 1)) and E ((V - 1) x (R - 1)) standard normal. The centred matrix is then
``[U, 1] [E_c, b_c]^T``: still rank exactly R (the bias is a rank-one, "frequent" part shared by every
state; the R - 1 random directions are the context-dependent tail a narrow head has to trade against it).
The floor is computed as for s = 0, from the exact conditionals.

A finite training set (``train_blocks`` = n). By default every training block is new (an endless stream).
With n set, the training split holds blocks 0 .. n-1 only, served in epochs: the g-th block a run trains on is
block ``perm_e[g mod n]`` with e = g // n and ``perm_e`` a permutation seeded by (data seed, e), so each epoch
sees every block once in a new order (as a second epoch over a deduplicated corpus). Validation blocks are
drawn from their own split as before; the language, its rank and its floor do not depend on n.

Streaming. Block i of a split is drawn from its own generator seeded by ``(data seed, split, i)``, so any
block can be produced on its own, in any batch, on any rank, and nothing is held beyond a batch.
"""

from __future__ import annotations

import hashlib
import itertools
import json
from dataclasses import asdict, dataclass
from functools import cached_property

import numpy as np
import torch

SOURCE = "synthetic"
START = 0  # the start symbol's id
SPLITS = {"train": 0, "val": 1}
EPOCH_TAG = 7919  # seeds the epoch permutations of a finite training set (apart from the splits)


@dataclass
class SyntheticSpec:
    """The synthetic language (used when ``data.source: synthetic``).

    Args:
        vocab_size: V, ids the language uses (id 0 = start symbol); the model's vocabulary must hold them.
        rank: R, the rank of the centred log-probability matrix; at most V - 2 and the reachable states.
        classes: C, symbol classes; the state is the tuple of classes at ``lags``.
        lags: how far back the state looks (1 = the previous symbol); more than one lag needs attention.
        logit_scale: standard deviation of the true logits (higher: lower entropy floor).
        seed: fixes the language (classes, U, E); ``data.seed`` fixes the sampled blocks.
        zipf: exponent s of the Zipf law of symbol frequencies carried by one of the R directions (0: none).
        train_blocks: number of distinct training blocks, repeated in epochs (empty: every block new).
    """

    vocab_size: int = 256
    rank: int = 32
    classes: int = 8
    lags: tuple[int, ...] = (1, 2)
    logit_scale: float = 2.5
    seed: int = 0
    zipf: float = 0.0
    train_blocks: int | None = None

    def check(self) -> None:
        if self.vocab_size < 3:
            raise ValueError(f"data.synthetic.vocab_size must be at least 3, got {self.vocab_size}")
        if not 1 <= self.rank <= self.vocab_size - 2:
            raise ValueError(f"data.synthetic.rank {self.rank} must be between 1 and vocab_size - 2 = {self.vocab_size - 2} "
                             "(a centred log-probability matrix over V - 1 emitted symbols has rank <= V - 2); "
                             "lower the rank or raise data.synthetic.vocab_size")
        if not 1 <= self.classes <= self.vocab_size - 1:
            raise ValueError(f"data.synthetic.classes must be between 1 and vocab_size - 1, got {self.classes}")
        lags = list(self.lags)
        if not lags or any(int(l) < 1 for l in lags) or len(set(lags)) != len(lags):
            raise ValueError(f"data.synthetic.lags must be distinct positive integers, got {lags}")
        if self.zipf < 0 or (self.zipf > 0 and self.rank < 2):
            raise ValueError(f"data.synthetic.zipf must be >= 0 and needs rank >= 2 (one direction carries the Zipf "
                             f"frequencies), got zipf {self.zipf} with rank {self.rank}")
        if self.train_blocks is not None and self.train_blocks < 1:
            raise ValueError(f"data.synthetic.train_blocks must be a positive number of blocks or empty, got {self.train_blocks}")
        if (self.classes + 1) ** max(lags) > 200_000:
            raise ValueError(f"data.synthetic: (classes + 1)^max(lags) = {(self.classes + 1) ** max(lags):,} class histories; "
                             "lower classes or the largest lag")

    @property
    def language_id(self) -> str:
        fields = {**asdict(self), "lags": list(self.lags)}
        for name in ("zipf", "train_blocks"):  # the options added later enter the id only when used (ids stay stable)
            if fields[name] == SyntheticSpec.__dataclass_fields__[name].default:
                del fields[name]
        text = json.dumps(fields, sort_keys=True)
        return "synthetic-" + hashlib.sha256(text.encode()).hexdigest()[:16]


class SyntheticLanguage:
    """The language of a ``SyntheticSpec``: true conditionals, sampling, reachable states, entropy floor."""

    def __init__(self, spec: SyntheticSpec):
        spec.check()
        self.spec = spec
        self.V, self.R, self.C = spec.vocab_size, spec.rank, spec.classes
        self.lags = tuple(int(l) for l in spec.lags)
        self.depth = max(self.lags)  # class-history length that determines every future state
        rng = np.random.default_rng([spec.seed, 1729])
        emitted = self.V - 1
        cls = np.empty(self.V, dtype=np.int64)
        cls[START] = self.C
        cls[1:] = rng.permutation(np.arange(emitted) % self.C)
        self.token_class = cls
        self.num_states = (self.C + 1) ** len(self.lags)
        reachable = self.reachable_states()
        if len(reachable) < self.R:
            raise ValueError(f"data.synthetic: rank {self.R} needs at least {self.R} reachable states, the language has "
                             f"{len(reachable)}; raise data.synthetic.classes or add lags")
        if spec.zipf > 0:  # R - 1 random directions and the Zipf bias (module docstring)
            u = rng.standard_normal((self.num_states, self.R - 1))
            e = rng.standard_normal((emitted, self.R - 1))
            order = rng.permutation(emitted) + 1  # frequency rank pi(v) of each emitted symbol
            self.zipf_bias = -spec.zipf * np.log(order.astype(np.float64))
            logits = spec.logit_scale * (u @ e.T) / np.sqrt(self.R - 1) + self.zipf_bias[None, :]
        else:
            u = rng.standard_normal((self.num_states, self.R))
            e = rng.standard_normal((emitted, self.R))
            logits = spec.logit_scale * (u @ e.T) / np.sqrt(self.R)
        logp = np.full((self.num_states, self.V), -np.inf)
        logp[:, 1:] = logits - _logsumexp(logits)[:, None]
        self.log_probs = logp  # [state, V] float64: the true conditional for every state
        self.probs = np.exp(logp)
        self._cdf = np.cumsum(self.probs, axis=1)
        self._cdf[:, -1] = 1.0

    # -- states ------------------------------------------------------------------------------------
    def state_of_classes(self, classes_at_lags: np.ndarray) -> np.ndarray:
        """State index of class tuples ``[..., len(lags)]`` (classes at lags, in the order of ``lags``)."""
        idx = np.zeros(classes_at_lags.shape[:-1], dtype=np.int64)
        for j in range(len(self.lags)):
            idx = idx * (self.C + 1) + classes_at_lags[..., j]
        return idx

    def state(self, context: np.ndarray) -> np.ndarray:
        """State of the next position after each context ``[..., t]`` (t >= 1, starting with the start symbol)."""
        context = np.asarray(context)
        t = context.shape[-1]
        cols = []
        for lag in self.lags:
            if lag <= t:
                cols.append(self.token_class[context[..., t - lag]])
            else:  # before the sequence: the start class
                cols.append(np.full(context.shape[:-1], self.C, dtype=np.int64))
        return self.state_of_classes(np.stack(cols, axis=-1))

    def conditional(self, context) -> np.ndarray:
        """True next-symbol log-probabilities ``[..., V]`` (float64; -inf for the start symbol) after ``context``."""
        return self.log_probs[self.state(np.asarray(context))]

    def reachable_states(self) -> np.ndarray:
        """Indices of the states some prefix of some sequence reaches (sorted)."""
        found = set()
        for t in range(1, self.depth + 2):  # position t predicts symbol t; lags >= t still see the start class
            choices = [range(self.C) if lag < t else [self.C] for lag in self.lags]
            for combo in itertools.product(*choices):
                found.add(int(self.state_of_classes(np.array(combo))))
        return np.array(sorted(found))

    def centred_log_prob_matrix(self) -> np.ndarray:
        """Reachable states x emitted symbols, each row's mean removed (float64): its rank is R."""
        m = self.log_probs[self.reachable_states()][:, 1:]
        return m - m.mean(axis=1, keepdims=True)

    # -- entropy floor -------------------------------------------------------------------------------
    @cached_property
    def _history(self):
        """Class histories (classes at lags 1..depth) as indices, their state and their successors."""
        base = self.C + 1
        n = base**self.depth
        digits = np.array(list(itertools.product(range(base), repeat=self.depth)))  # [n, depth]: lag 1 first
        states = self.state_of_classes(digits[:, [lag - 1 for lag in self.lags]])
        shifted = digits[:, :-1]
        successor = np.empty((n, self.C), dtype=np.int64)
        for c in range(self.C):
            new = np.concatenate([np.full((n, 1), c), shifted], axis=1)
            successor[:, c] = (new * base ** np.arange(self.depth - 1, -1, -1)).sum(axis=1)
        return digits, states, successor

    def class_probs(self) -> np.ndarray:
        """``[state, C]``: probability that the next symbol has each class."""
        out = np.zeros((self.num_states, self.C))
        for c in range(self.C):
            out[:, c] = self.probs[:, self.token_class == c].sum(axis=1)
        return out

    def state_marginals(self, context_length: int) -> np.ndarray:
        """``[context_length - 1, state]``: the exact probability of each state at positions 1 .. context_length - 1."""
        digits, states, successor = self._history
        q = self.class_probs()[states]  # [history, C]
        pi = np.zeros(len(digits))
        pi[-1] = 1.0  # all start class: (C, ..., C) is the last index
        out = np.zeros((max(0, context_length - 1), self.num_states))
        for t in range(context_length - 1):
            np.add.at(out[t], states, pi)
            nxt = np.zeros_like(pi)
            np.add.at(nxt, successor.ravel(), (pi[:, None] * q).ravel())
            pi = nxt
        return out

    def position_entropies(self, context_length: int) -> np.ndarray:
        """Expected true conditional entropy (nats) of positions 1 .. context_length - 1 of a block, exactly."""
        with np.errstate(invalid="ignore"):
            ent = -np.where(self.probs > 0, self.probs * self.log_probs, 0.0).sum(axis=1)
        return self.state_marginals(context_length) @ ent

    def entropy_floor(self, context_length: int) -> float:
        """Expected next-token loss of the true distribution over a block's predicted positions (nats)."""
        return float(self.position_entropies(context_length).mean())

    # -- sampling ------------------------------------------------------------------------------------
    def blocks(self, indices, context_length: int, seed: int, split: str = "train") -> torch.Tensor:
        """Blocks ``[len(indices), context_length]`` (int64): block i of a split is fixed by ``(seed, split, i)``."""
        indices = list(indices)
        b = len(indices)
        u = np.stack([np.random.default_rng([seed, SPLITS[split], int(i)]).random(context_length) for i in indices]) if b else np.zeros((0, context_length))
        tokens = np.zeros((b, context_length), dtype=np.int64)
        hist = np.full((b, self.depth), self.C, dtype=np.int64)  # classes at lags 1..depth
        cols = [lag - 1 for lag in self.lags]
        for t in range(1, context_length):
            s = self.state_of_classes(hist[:, cols])
            x = (self._cdf[s] < u[:, t : t + 1]).sum(axis=1)
            x = np.minimum(np.maximum(x, 1), self.V - 1)
            tokens[:, t] = x
            hist = np.concatenate([self.token_class[x][:, None], hist[:, :-1]], axis=1)
        return torch.from_numpy(tokens)

    def true_loss(self, blocks: torch.Tensor) -> float:
        """Mean next-token cross-entropy of the true distribution on ``blocks`` (the sample's own floor)."""
        x = blocks.numpy()
        total, count = 0.0, 0
        for t in range(1, x.shape[1]):
            lp = self.conditional(x[:, :t])
            total += float(-lp[np.arange(len(x)), x[:, t]].sum())
            count += len(x)
        return total / count


def _logsumexp(a: np.ndarray) -> np.ndarray:
    m = a.max(axis=1)
    return m + np.log(np.exp(a - m[:, None]).sum(axis=1))


def identity_tokenizer(vocab_size: int):
    """The synthetic language's tokenizer: symbol ``i`` is the word ``s<i>`` with id i (id 0 is end-of-text/start)."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    from .tokenizer import EOS

    vocab = {EOS: START, **{f"s{i}": i for i in range(1, vocab_size)}}
    tok = Tokenizer(models.WordLevel(vocab, unk_token=EOS))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    # no decoder: decoding joins the words with spaces, so decoded text encodes back to the same ids
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token=EOS, bos_token=EOS)
    return fast


class SyntheticBlocks(torch.utils.data.IterableDataset):
    """Training micro-batches ``[batch_size, context_length]`` for optimizer steps ``start_step .. max_steps-1``,
    drawn on the fly: global micro-batch m holds blocks ``m*B*world .. (m+1)*B*world - 1``, this rank its slice
    (with ``train_blocks`` = n, the g-th of them is block ``perm_e[g mod n]`` of the finite set, e = g // n)."""

    def __init__(self, language: SyntheticLanguage, seed: int, context_length: int, batch_size: int,
                 max_steps: int, accumulate: int = 1, start_step: int = 0, rank: int = 0, world: int = 1):
        self.language, self.seed, self.context_length = language, seed, context_length
        self.batch_size, self.rank, self.world = batch_size, rank, world
        self.start, self.stop = start_step * accumulate, max_steps * accumulate
        self._epoch, self._perm = None, None  # the current epoch's permutation of a finite training set

    def __len__(self) -> int:
        return self.stop

    def __iter__(self):
        g = self.batch_size * self.world
        for m in range(self.start, self.stop):
            first = m * g + self.rank * self.batch_size
            yield self.language.blocks(self.block_ids(range(first, first + self.batch_size)), self.context_length, self.seed, "train")

    def block_ids(self, positions) -> list[int]:
        """The training blocks at these positions of the run's stream (themselves for an endless stream)."""
        n = self.language.spec.train_blocks
        if n is None:
            return list(positions)
        out = []
        for g in positions:
            epoch, pos = divmod(int(g), n)
            if self._epoch != epoch:
                self._epoch, self._perm = epoch, np.random.default_rng([self.seed, EPOCH_TAG, epoch]).permutation(n)
            out.append(int(self._perm[pos]))
        return out
