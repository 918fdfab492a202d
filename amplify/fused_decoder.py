"""Forward dynamics' one-token decoding steps with fewer, larger ops (the prepared models' fast path).

``ForwardDynamics.predict`` runs the 100-token prefix through the trunk's modules, then 14 steps of
one token each. Each step through the modules costs ~30 small ops and 10 module calls per layer
(reshapes, a split into heads, a mask slice and its conversion, a key/value append, dropout no-ops).
:class:`FusedDecoder` runs the same step straight on the prepared weights, per layer:

    LayerNorm -> q/k/v product (one matrix) -> k, v written into the cache in place ->
    attention over the filled cache (no mask: a new token may attend to every earlier one, which is
    what the ``causal_cond`` mask says for every row after the condition) -> output product added
    to the residual stream (one ``addmm``) -> LayerNorm -> MLP product -> GELU in place ->
    product added to the residual stream (one ``addmm``).

Same weights, same order of operations: the fixture step logits and indices are checked on it
(``tests/test_fixture_parity.py``, fmt=prepared; ``tests/test_model_math.py``).
"""
from __future__ import annotations

from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F

from amplify.layers import KVBuffer

if TYPE_CHECKING:
    from amplify.models.forward_dynamics import ForwardDynamics


class FusedDecoder:
    """The cached prediction of one prepared :class:`ForwardDynamics` (its linear layers are
    :class:`amplify.inference.InferenceLinear`)."""

    def __init__(self, fd: "ForwardDynamics"):
        self.fd = fd
        tr = fd.trunk.transformer
        self.layers = [(b.ln_1, b.attn.c_attn, b.attn.c_proj, b.ln_2, b.mlp.c_fc, b.mlp.c_proj) for b in tr.h]
        self.num_heads = tr.h[0].attn.num_heads
        self.ln_f, self.pos_emb = tr.ln_f, tr.pos_emb

    def step(self, x: torch.Tensor, cache: list[KVBuffer]) -> torch.Tensor:
        """One new token x (b, h) after the cached ones -> the trunk's output for it (b, h); the cache
        gains its keys and values."""
        b, h = x.shape
        nh = self.num_heads
        hd = h // nh
        p = cache[0].length
        x = x + self.pos_emb.weight[p]
        for (ln1, qkv_proj, out_proj, ln2, fc, fc_out), buf in zip(self.layers, cache):
            a = F.layer_norm(x, (h,), ln1.weight, ln1.bias, ln1.eps)
            qkv = qkv_proj.matmul2d(a)  # (b, 3h)
            buf.k[:, :, p] = qkv[:, h:2 * h].view(b, nh, hd)
            buf.v[:, :, p] = qkv[:, 2 * h:].view(b, nh, hd)
            buf.length = p + 1
            q = qkv[:, :h].view(b, 1, nh, hd).transpose(1, 2)  # (b, nh, 1, hd)
            y = F.scaled_dot_product_attention(q, buf.k[:, :, :p + 1], buf.v[:, :, :p + 1])  # (b, nh, 1, hd)
            x = out_proj.add_to(x, y.transpose(1, 2).reshape(b, h))
            a = F.layer_norm(x, (h,), ln2.weight, ln2.bias, ln2.eps)
            x = fc_out.add_to(x, F.gelu(fc.matmul2d(a)))
        return F.layer_norm(x, (h,), self.ln_f.weight, self.ln_f.bias, self.ln_f.eps)

    @torch.no_grad()
    def predict(self, cond: torch.Tensor, sampling: str, generator: torch.Generator | None = None,
                return_logits: bool = False):
        """As :meth:`ForwardDynamics.predict`: cond (b, C, h) -> indices (b, S) (and logits (b, S, K))."""
        fd = self.fd
        steps = fd.cfg.pred_seq_len
        sos = fd.sos_token.expand(cond.shape[0], -1, -1)
        cache = fd.trunk.kv_buffers()
        hidden, _ = fd.trunk.forward_cached(torch.cat([cond, sos], dim=1), cache)
        last = hidden[:, -1]  # (b, h)
        indices, step_logits = [], []
        for step in range(steps):
            logits = fd._logits(last)  # (b, K)
            idx = fd._choose(logits, sampling, generator)
            indices.append(idx)
            step_logits.append(logits)
            if step + 1 < steps:
                code = fd.quantize.indices_to_codes(idx[:, None])[:, 0]  # (b, h)
                last = self.step(code, cache)
        out = torch.stack(indices, dim=1)
        return (out, torch.stack(step_logits, dim=1)) if return_logits else out


def attach_fused_decoder(model: torch.nn.Module) -> None:
    """Give every :class:`ForwardDynamics` inside ``model`` (prepared) its :class:`FusedDecoder`."""
    from amplify.models.forward_dynamics import ForwardDynamics

    for m in model.modules():
        if isinstance(m, ForwardDynamics):
            m.fused_decoder = FusedDecoder(m)
