"""Transformer blocks shared by the motion tokenizer, forward and inverse dynamics.

Pre-LayerNorm blocks in the style of nanoGPT. Parameter names follow the original AMPLIFY
checkpoints (``transformer.pos_emb``, ``transformer.h.<i>.attn.c_attn`` ...) so that their state
dicts load by name. Attention masks are boolean, True = may attend, and are built on the fly
(the original stores them as buffers; the checkpoint importer drops those).
"""
from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn as nn
import torch.nn.functional as F

MaskKind = Literal["causal", "diag", "causal_cond", "full"]


class KVBuffer:
    """One layer's keys and values, written in place into (B, heads, max_len, head_dim) tensors made on
    the first write; ``length`` tokens are filled. Appending copies only the new tokens, where
    concatenation copies the whole cache at every step."""

    def __init__(self, max_len: int):
        self.max_len, self.length = max_len, 0
        self.k: torch.Tensor | None = None
        self.v: torch.Tensor | None = None

    def append(self, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Write k, v (B, heads, T_new, head_dim) after the filled tokens; -> all keys and values so far."""
        b, nh, t, hd = k.shape
        if self.k is None:
            self.k, self.v = k.new_empty(b, nh, self.max_len, hd), v.new_empty(b, nh, self.max_len, hd)
        end = self.length + t
        if end > self.max_len:
            raise ValueError(f"key/value buffer of {self.max_len} tokens cannot take {end}")
        self.k[:, :, self.length:end] = k
        self.v[:, :, self.length:end] = v
        self.length = end
        return self.k[:, :, :end], self.v[:, :, :end]


# Per-layer key/value cache: a list over layers of (k, v), each (B, heads, T, head_dim), grown by
# concatenation (what the exported graphs trace), or of KVBuffer, filled in place (eager inference).
KVCache = list[tuple[torch.Tensor, torch.Tensor]] | list[KVBuffer]


# ---------------------------------------------------------------------------------------------
# masks
# ---------------------------------------------------------------------------------------------
def causal_mask(size: int, device: torch.device | None = None) -> torch.Tensor:
    """Lower-triangular (size, size) mask."""
    return torch.ones(size, size, dtype=torch.bool, device=device).tril()


def full_mask(size: int, device: torch.device | None = None) -> torch.Tensor:
    """All True (size, size) mask."""
    return torch.ones(size, size, dtype=torch.bool, device=device)


def diag_cond_mask(size: int, num_cond: int = 0, device: torch.device | None = None) -> torch.Tensor:
    """Identity, then the first ``num_cond`` columns set to True."""
    m = torch.eye(size, dtype=torch.bool, device=device)
    m[:, :num_cond] = True
    return m


def causal_cond_mask(size: int, num_cond: int, device: torch.device | None = None) -> torch.Tensor:
    """Causal, then the first ``num_cond`` columns True: condition tokens see each other, every later
    token sees all of them and the tokens before it."""
    m = causal_mask(size, device)
    m[:, :num_cond] = True
    return m


def make_mask(kind: MaskKind, size: int, num_cond: int = 0, device: torch.device | None = None) -> torch.Tensor:
    """Build a mask by name: ``causal``, ``diag``, ``causal_cond`` or ``full``."""
    if kind == "causal":
        return causal_mask(size, device)
    if kind == "diag":
        return diag_cond_mask(size, num_cond, device)
    if kind == "causal_cond":
        return causal_cond_mask(size, num_cond, device)
    if kind == "full":
        return full_mask(size, device)
    raise ValueError(f"unknown mask kind {kind!r}; expected causal, diag, causal_cond or full")


# ---------------------------------------------------------------------------------------------
# blocks
# ---------------------------------------------------------------------------------------------
class SelfAttention(nn.Module):
    """Multi-head self-attention with one fused q/k/v projection ``c_attn`` (h -> 3h)."""

    def __init__(self, hidden_dim: int, num_heads: int, dropout: float = 0.0, bias: bool = False):
        super().__init__()
        if hidden_dim % num_heads:
            raise ValueError(f"hidden_dim {hidden_dim} is not divisible by num_heads {num_heads}")
        self.num_heads = num_heads
        self.c_attn = nn.Linear(hidden_dim, 3 * hidden_dim, bias=bias)
        self.c_proj = nn.Linear(hidden_dim, hidden_dim, bias=bias)
        self.dropout = dropout
        self.resid_dropout = nn.Dropout(dropout)

    def _heads(self, x: torch.Tensor) -> torch.Tensor:
        b, t, h = x.shape
        return x.view(b, t, self.num_heads, h // self.num_heads).transpose(1, 2)  # (B, nh, T, hd)

    def forward(
        self,
        x: torch.Tensor,  # (B, T, h)
        mask: torch.Tensor | None,  # (T, T_total) bool or None for full
        cache: tuple[torch.Tensor, torch.Tensor] | KVBuffer | None = None,
    ) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor] | KVBuffer]:
        b, t, h = x.shape
        q, k, v = self.c_attn(x).split(h, dim=2)
        q, k, v = self._heads(q), self._heads(k), self._heads(v)
        if isinstance(cache, KVBuffer):
            k, v = cache.append(k, v)
        elif cache is not None:
            k = torch.cat([cache[0], k], dim=2)
            v = torch.cat([cache[1], v], dim=2)
        y = F.scaled_dot_product_attention(
            q, k, v, attn_mask=mask, dropout_p=self.dropout if self.training else 0.0
        )  # (B, nh, T, hd)
        y = y.transpose(1, 2).contiguous().view(b, t, h)
        return self.resid_dropout(self.c_proj(y)), (cache if isinstance(cache, KVBuffer) else (k, v))


class CrossAttention(nn.Module):
    """Multi-head attention from x to condition tokens c (no mask; c is not normalized)."""

    def __init__(self, hidden_dim: int, num_heads: int, dropout: float = 0.0, bias: bool = False):
        super().__init__()
        if hidden_dim % num_heads:
            raise ValueError(f"hidden_dim {hidden_dim} is not divisible by num_heads {num_heads}")
        self.num_heads = num_heads
        self.q_proj = nn.Linear(hidden_dim, hidden_dim, bias=bias)
        self.kv_proj = nn.Linear(hidden_dim, 2 * hidden_dim, bias=bias)
        self.c_proj = nn.Linear(hidden_dim, hidden_dim, bias=bias)
        self.dropout = dropout
        self.resid_dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        b, t, h = x.shape
        nh, hd = self.num_heads, h // self.num_heads
        q = self.q_proj(x).view(b, t, nh, hd).transpose(1, 2)
        k, v = self.kv_proj(c).split(h, dim=2)
        k = k.reshape(b, c.shape[1], nh, hd).transpose(1, 2)
        v = v.reshape(b, c.shape[1], nh, hd).transpose(1, 2)
        y = F.scaled_dot_product_attention(q, k, v, dropout_p=self.dropout if self.training else 0.0)
        y = y.transpose(1, 2).contiguous().view(b, t, h)
        return self.resid_dropout(self.c_proj(y))


class MLP(nn.Module):
    """h -> 4h -> GELU (exact) -> h, dropout."""

    def __init__(self, hidden_dim: int, dropout: float = 0.0, bias: bool = False):
        super().__init__()
        self.c_fc = nn.Linear(hidden_dim, 4 * hidden_dim, bias=bias)
        self.c_proj = nn.Linear(4 * hidden_dim, hidden_dim, bias=bias)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.c_proj(F.gelu(self.c_fc(x))))


class EncoderBlock(nn.Module):
    """``x += attn(ln_1(x)); x += mlp(ln_2(x))``."""

    def __init__(self, hidden_dim: int, num_heads: int, dropout: float = 0.0, bias: bool = False):
        super().__init__()
        self.ln_1 = nn.LayerNorm(hidden_dim, bias=bias)
        self.attn = SelfAttention(hidden_dim, num_heads, dropout, bias)
        self.ln_2 = nn.LayerNorm(hidden_dim, bias=bias)
        self.mlp = MLP(hidden_dim, dropout, bias)

    def forward(self, x, mask, cache=None):
        a, new_cache = self.attn(self.ln_1(x), mask, cache)
        x = x + a
        x = x + self.mlp(self.ln_2(x))
        return x, new_cache


class DecoderBlock(nn.Module):
    """``x += self_attn(ln_1(x)); x += mlp(ln_2(x)); x += cross_attn(ln_3(x), c); x += mlp_2(ln_4(x))``."""

    def __init__(self, hidden_dim: int, num_heads: int, dropout: float = 0.0, bias: bool = False):
        super().__init__()
        self.ln_1 = nn.LayerNorm(hidden_dim, bias=bias)
        self.self_attn = SelfAttention(hidden_dim, num_heads, dropout, bias)
        self.ln_2 = nn.LayerNorm(hidden_dim, bias=bias)
        self.mlp = MLP(hidden_dim, dropout, bias)
        self.ln_3 = nn.LayerNorm(hidden_dim, bias=bias)
        self.cross_attn = CrossAttention(hidden_dim, num_heads, dropout, bias)
        self.ln_4 = nn.LayerNorm(hidden_dim, bias=bias)
        self.mlp_2 = MLP(hidden_dim, dropout, bias)

    def forward(self, x: torch.Tensor, c: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        x = x + self.self_attn(self.ln_1(x), mask)[0]
        x = x + self.mlp(self.ln_2(x))
        x = x + self.cross_attn(self.ln_3(x), c)
        x = x + self.mlp_2(self.ln_4(x))
        return x


class TransformerEncoder(nn.Module):
    """Learned positions, dropout, N encoder blocks, final LayerNorm ``ln_f``.

    ``forward`` runs a whole sequence; ``forward_cached`` appends tokens to a key/value cache
    (positions continue from the cache length), which is exact whenever earlier tokens never
    attend to later ones (causal and causal_cond masks).
    """

    def __init__(
        self, seq_len: int, hidden_dim: int, num_heads: int, num_layers: int,
        dropout: float = 0.0, bias: bool = False, mask: MaskKind = "causal", num_cond: int = 0,
    ):
        super().__init__()
        self.seq_len, self.mask_kind, self.num_cond = seq_len, mask, num_cond
        self.transformer = nn.ModuleDict(dict(
            pos_emb=nn.Embedding(seq_len, hidden_dim),
            drop=nn.Dropout(dropout),
            h=nn.ModuleList([EncoderBlock(hidden_dim, num_heads, dropout, bias) for _ in range(num_layers)]),
            ln_f=nn.LayerNorm(hidden_dim, bias=bias),
        ))
        self.register_buffer("_mask", make_mask(mask, seq_len, num_cond), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, T, h) -> (B, T, h)
        t = x.shape[1]
        if t > self.seq_len:
            raise ValueError(f"sequence of {t} tokens is longer than the model's {self.seq_len}")
        tr = self.transformer
        x = tr.drop(x + tr.pos_emb.weight[:t])
        mask = self._mask[:t, :t]
        for block in tr.h:
            x, _ = block(x, mask)
        return tr.ln_f(x)

    def forward_cached(self, x: torch.Tensor, cache: KVCache | None) -> tuple[torch.Tensor, KVCache]:
        """Run new tokens x (B, T_new, h) after the cached ones; returns outputs and the new cache.

        ``cache``: None (start), the (k, v) list this returned, or :meth:`kv_buffers` (filled in place)."""
        if cache and isinstance(cache[0], KVBuffer):
            past = cache[0].length
        else:
            past = 0 if not cache else cache[0][0].shape[2]
        t = x.shape[1]
        if past + t > self.seq_len:
            raise ValueError(f"sequence of {past + t} tokens is longer than the model's {self.seq_len}")
        tr = self.transformer
        x = tr.drop(x + tr.pos_emb.weight[past:past + t])
        mask = self._mask[past:past + t, :past + t]
        new_cache: KVCache = []
        for i, block in enumerate(tr.h):
            x, kv = block(x, mask, cache[i] if cache else None)
            new_cache.append(kv)
        return tr.ln_f(x), new_cache

    def kv_buffers(self) -> list[KVBuffer]:
        """An empty in-place key/value cache for :meth:`forward_cached`, one buffer per layer."""
        return [KVBuffer(self.seq_len) for _ in self.transformer.h]


class TransformerDecoder(nn.Module):
    """Learned positions on the queries, dropout, N decoder blocks (self-attention with the given
    mask, cross-attention to condition tokens), final LayerNorm ``ln_f``."""

    def __init__(
        self, seq_len: int, hidden_dim: int, num_heads: int, num_layers: int,
        dropout: float = 0.0, bias: bool = False, mask: MaskKind = "full", num_cond: int = 0,
    ):
        super().__init__()
        self.seq_len = seq_len
        self.transformer = nn.ModuleDict(dict(
            pos_emb=nn.Embedding(seq_len, hidden_dim),
            drop=nn.Dropout(dropout),
            h=nn.ModuleList([DecoderBlock(hidden_dim, num_heads, dropout, bias) for _ in range(num_layers)]),
            ln_f=nn.LayerNorm(hidden_dim, bias=bias),
        ))
        m = make_mask(mask, seq_len, num_cond)
        # An all-True mask is the same as none, and SDPA is faster without one.
        self.register_buffer("_mask", None if bool(m.all()) else m, persistent=False)

    def forward(self, x: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:  # (B, T, h), (B, C, h)
        t = x.shape[1]
        tr = self.transformer
        x = tr.drop(x + tr.pos_emb.weight[:t])
        mask = None if self._mask is None else self._mask[:t, :t]
        for block in tr.h:
            x = block(x, cond, mask)
        return tr.ln_f(x)


def init_weights(module: nn.Module, std: float = 0.02) -> None:
    """GPT-style initialization for freshly built models (normal(0, std) linear/embedding weights)."""
    for m in module.modules():
        if isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, 0.0, std)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Embedding):
            nn.init.normal_(m.weight, 0.0, std)
    for name, p in module.named_parameters():
        if name.endswith("c_proj.weight"):
            nn.init.normal_(p, 0.0, std / math.sqrt(2 * max(1, _num_blocks(module))))


def _num_blocks(module: nn.Module) -> int:
    return sum(1 for m in module.modules() if isinstance(m, (EncoderBlock, DecoderBlock)))
