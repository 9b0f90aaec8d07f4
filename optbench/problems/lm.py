"""Language models: a small decoder-only transformer on the bytes of a text corpus (nanoGPT-style).

The corpus is a dataset of the data directory (:mod:`optbench.data.store`): ``tiny-shakespeare`` (fetched
from its canonical URL, SHA-256 verified) or ``text``, any local file (``optbench data import text FILE``).
Its bytes are the tokens (vocabulary 256, so losses are per byte whatever the encoding); the first 90% train,
the last 10% validate (nanoGPT's split). An example is a window of ``block_size`` bytes and the ``block_size``
bytes that follow each position: the training and validation texts are cut into consecutive, non-overlapping
windows, so an epoch sees every training byte once, and mini-batches are drawn like the classifiers' (a
per-epoch permutation from the run seed). ``train_size`` / ``test_size`` count windows.

Model (Radford et al. 2019, GPT-2; Karpathy, nanoGPT ``model.py``): token + learned position embeddings →
dropout → ``n_layer`` pre-norm blocks x + Attn(LN(x)), x + MLP(LN(x)) with causal multi-head self-attention
(``n_head`` heads) and a 4× GELU MLP → LN → logits by the token embedding's transpose (weight tying). Biases
throughout, as GPT-2. Initialisation as nanoGPT: every weight N(0, 0.02²) except the residual output
projections, N(0, (0.02/√(2·n_layer))²); biases 0; LayerNorm weight 1.

Loss: the mean next-byte cross-entropy over every position of the mini-batch, in nats (``f* = 0``). Columns:
``test_loss`` is the validation loss in nats per byte, ``test_bpb`` the same in bits per byte
(``test_loss / ln 2``), ``test_acc`` the next-byte accuracy. Target (steps to target): training loss
1.5 nats; result target for tiny-shakespeare: validation loss ≤ 1.47 nats/byte, nanoGPT's
shakespeare-char baby GPT (6 layers, 6 heads, 384 wide, block 256, dropout 0.2) — the size
``text-lm(n_layer=6, n_head=6, n_embd=384, block_size=256, dropout=0.2)``; the defaults are smaller, so that a
CPU epoch of a ``train_size``-limited run takes seconds.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, cast

from optbench.errors import DataError, SpecError
from optbench.params import Param
from optbench.problems.base import ProblemEntry, register_problem
from optbench.problems.nets import (
    EvalTarget,
    NetData,
    NetworkProblem,
    _common_params,
    parameter_categories,
    resolve_recipe_options,
)
from optbench.randomness import derive_seed
from optbench.spec import Spec

VOCAB = 256  # byte-level tokens
CORPORA = ("tiny-shakespeare", "text")
LM_TARGET = 1.5  # training loss (nats per byte) counted as "reached"
INIT_STD = 0.02  # nanoGPT / GPT-2
NANOGPT_SHAKESPEARE = {"n_layer": 6, "n_head": 6, "n_embd": 384, "block_size": 256, "dropout": 0.2}


def build_gpt(block_size: int, n_layer: int, n_head: int, n_embd: int, dropout: float = 0.0):
    """The decoder-only transformer of the module docstring; ``forward(tokens [b, T]) → logits [b, T, 256]``."""
    import torch
    import torch.nn as nn
    import torch.nn.functional as F

    class CausalSelfAttention(nn.Module):
        def __init__(self):
            super().__init__()
            self.qkv = nn.Linear(n_embd, 3 * n_embd)
            self.proj = nn.Linear(n_embd, n_embd)
            self.attn_dropout = nn.Dropout(dropout)
            self.resid_dropout = nn.Dropout(dropout)

        def forward(self, x):
            b, t, c = x.shape
            q, k, v = self.qkv(x).view(b, t, 3, n_head, c // n_head).permute(2, 0, 3, 1, 4)
            att = (q @ k.transpose(-2, -1)) / math.sqrt(c // n_head)
            causal = torch.ones(t, t, dtype=torch.bool, device=x.device).tril()
            att = self.attn_dropout(att.masked_fill(~causal, float("-inf")).softmax(-1))
            return self.resid_dropout(self.proj((att @ v).transpose(1, 2).reshape(b, t, c)))

    class Block(nn.Module):
        def __init__(self):
            super().__init__()
            self.ln1, self.attn = nn.LayerNorm(n_embd), CausalSelfAttention()
            self.ln2 = nn.LayerNorm(n_embd)
            self.mlp = nn.Sequential(nn.Linear(n_embd, 4 * n_embd), nn.GELU(), nn.Linear(4 * n_embd, n_embd),
                                     nn.Dropout(dropout))

        def forward(self, x):
            x = x + self.attn(self.ln1(x))
            return x + self.mlp(self.ln2(x))

    class GPT(nn.Module):
        def __init__(self):
            super().__init__()
            self.tok = nn.Embedding(VOCAB, n_embd)
            self.pos = nn.Embedding(block_size, n_embd)
            self.drop = nn.Dropout(dropout)
            self.blocks = nn.Sequential(*[Block() for _ in range(n_layer)])
            self.ln_f = nn.LayerNorm(n_embd)

        def forward(self, tokens):
            positions = torch.arange(tokens.shape[-1], device=tokens.device)
            x = self.drop(self.tok(tokens) + self.pos(positions))
            return F.linear(self.ln_f(self.blocks(x)), self.tok.weight)  # weight tying: logits by wteᵀ

    return GPT()


class TokenData(NetData):
    """Byte windows on the device: ``train_x`` / ``test_x`` uint8 ``[N, T]`` inputs, ``*_y`` int64 ``[N, T]``
    next bytes; ``inputs`` turns bytes into token ids (no normalisation)."""

    def inputs(self, images, dtype):
        return images.long()


def windows(tokens, block_size: int, limit: int | None):
    """Consecutive non-overlapping windows: inputs ``tokens[i·T : (i+1)·T]``, targets shifted by one."""
    n = (len(tokens) - 1) // block_size
    if limit is not None:
        n = min(n, limit)
    x = tokens[: n * block_size].view(n, block_size)
    y = tokens[1: n * block_size + 1].view(n, block_size).long()
    return x, y


@dataclass(eq=False)
class LanguageModelProblem(NetworkProblem):
    """A byte-level language model on a text corpus (module docstring)."""

    reports_bits_per_byte = True  # the engines add test_bpb = test_loss / ln 2

    @property
    def block_size(self) -> int:
        return int(self.config["block_size"])

    def device_data(self, device) -> TokenData:
        from optbench.data.store import load_dataset
        from optbench.problems import nets

        ds = load_dataset(self.dataset)
        key = (self.dataset, str(device), self.block_size, self.config["train_size"], self.config["test_size"])
        cached = nets._DEVICE_DATA.get(key)
        if cached is None or cached[0] is not ds:
            train_x, train_y = windows(ds.train_x, self.block_size, self.config["train_size"])
            test_x, test_y = windows(ds.test_x, self.block_size, self.config["test_size"])
            if not len(train_x) or not len(test_x):
                raise DataError(f"Corpus {self.dataset!r} is too short for block_size={self.block_size}: "
                                f"{len(ds.train_x)} training and {len(ds.test_x)} validation bytes.")
            nets._DEVICE_DATA.clear()
            cached = (ds, TokenData(train_x.to(device), train_y.to(device), test_x.to(device), test_y.to(device),
                                    None, None))
            nets._DEVICE_DATA[key] = cached
        return cast(TokenData, cached[1])  # this key (with block_size) is only ever stored with TokenData

    @property
    def n_train(self) -> int:
        from optbench.data.store import load_dataset

        n = (len(load_dataset(self.dataset).train_x) - 1) // self.block_size
        return min(n, self.config["train_size"] or n)

    def init_params(self, seed: int) -> dict[str, Any]:
        """nanoGPT's initialisation (module docstring), in float64 on the CPU from the run seed."""
        import torch

        gen = torch.Generator().manual_seed(derive_seed(seed, "init"))
        with torch.device("meta"):
            model = self.build_model()
        categories = parameter_categories(model)
        residual_std = INIT_STD / math.sqrt(2 * self.config["n_layer"])
        out = {}
        for name, p in model.named_parameters():
            if categories[name] == "norm" and name.endswith("weight"):
                out[name] = torch.ones(p.shape, dtype=torch.float64)
            elif p.ndim == 1:
                out[name] = torch.zeros(p.shape, dtype=torch.float64)
            else:
                std = residual_std if name.endswith(("attn.proj.weight", "mlp.2.weight")) else INIT_STD
                out[name] = torch.empty(p.shape, dtype=torch.float64).normal_(0.0, std, generator=gen)
        return out

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "metrics": "test_loss: nats per byte; test_bpb: bits per byte"}


def _lm_params() -> dict[str, Param]:
    def positive(doc: str, default: int) -> Param:
        return Param(default, doc, lambda v: isinstance(v, int) and v >= 1, "an integer >= 1", types=(int,))

    common = _common_params(64)
    return {
        "corpus": Param("tiny-shakespeare", "the text dataset: tiny-shakespeare or text (optbench data import text "
                        "FILE)", lambda v: v in CORPORA, "one of " + ", ".join(CORPORA), types=(str,)),
        "block_size": positive("context length in bytes", 128),
        "n_layer": positive("transformer blocks", 4),
        "n_head": positive("attention heads per block", 4),
        "n_embd": positive("embedding width (a multiple of n_head)", 128),
        **common,
        "train_size": Param(None, "use the first N training windows (default: all)",
                            lambda v: isinstance(v, int) and v >= 1, "an integer >= 1", types=(int,)),
        "test_size": Param(None, "use the first N validation windows (default: all)",
                           lambda v: isinstance(v, int) and v >= 1, "an integer >= 1", types=(int,)),
    }


def _build(spec: Spec, config: dict[str, Any]) -> LanguageModelProblem:
    from optbench.data.store import dataset_fingerprint

    if config["n_embd"] % config["n_head"]:
        raise SpecError(f"n_embd={config['n_embd']} must be a multiple of n_head={config['n_head']}.")
    corpus = config["corpus"]
    _, fingerprint = dataset_fingerprint(corpus)  # DataError (fetch/import commands) when missing
    full = resolve_recipe_options({**config, "dataset": corpus, "data": fingerprint})
    sizes = {k: config[k] for k in ("block_size", "n_layer", "n_head", "n_embd")}
    arch = "gpt " + " ".join(f"{k}={v}" for k, v in sizes.items())
    dropout = float(config["dropout"])
    eval_target = None
    if corpus == "tiny-shakespeare" and {**sizes, "dropout": dropout} == NANOGPT_SHAKESPEARE:
        eval_target = EvalTarget("test_loss", 1.47, "nanoGPT's shakespeare-char baby GPT, validation loss 1.4697")
    return LanguageModelProblem(
        "text-lm", spec, full, corpus, VOCAB, (config["block_size"],),
        lambda: build_gpt(sizes["block_size"], sizes["n_layer"], sizes["n_head"], sizes["n_embd"], dropout),
        arch, _DOC, target=LM_TARGET, eval_target=eval_target)


_DOC = ("Byte-level decoder-only transformer LM (nanoGPT-style: causal self-attention, pre-norm, weight tying) on "
        "a text corpus (tiny-shakespeare, or `optbench data import text FILE`): 4 layers, 4 heads, 128 wide, "
        "block 128 by default. Loss: next-byte cross-entropy (nats); test_bpb: validation bits per byte. f* = 0, "
        "target: train loss 1.5; result target: validation loss ≤ 1.47 at nanoGPT's shakespeare-char size.")
register_problem(ProblemEntry("text-lm", _build, _lm_params(), _DOC, "network", True, ("network", "text")))
