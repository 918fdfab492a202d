"""Forward dynamics (FD): image and text condition tokens -> S motion-token indices.

Shapes: b batch, C = v*49 + 1 (+ text_select) condition tokens, S code tokens, h hidden, K = codebook_size.

    cond = [img_proj(image tokens (b, v*49, 512)), text_proj(text_scale * text_emb (b, 1, E))]   (b, C, h)
    with text_select = T > 0 (opt-in), T more condition tokens chosen by the instruction among the
    last n = text_select_last (0: all 49) image tokens of each view:
        weights = softmax over positions of select_logits(text_scale * text_emb)         (b, T, v*n)
        cond += weights @ img_proj(those image tokens)                                   (b, T, h)
    training:   trunk([cond, sos, codes[:, :-1]]) -> logits at C..C+S-1               (b, S, K)
    prediction: from [cond, sos], S steps of: last logits -> index -> append its code

The trunk's ``causal_cond`` mask means condition tokens never attend to later tokens, so
prediction caches keys and values and each step runs one token (``predict``);
``predict_uncached`` recomputes the whole sequence every step, as the original does.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F
from vector_quantize_pytorch import FSQ

from amplify.config import ForwardDynamicsConfig, fsq_levels
from amplify.layers import TransformerEncoder, init_weights


def top_k_filter(logits: torch.Tensor, k: int) -> torch.Tensor:
    """Set every logit below the k-th largest to -inf."""
    k = min(k, logits.shape[-1])
    kth = torch.topk(logits, k, dim=-1).values[..., -1:]
    return logits.masked_fill(logits < kth, float("-inf"))


def top_k_from_noise(logits: torch.Tensor, k: int, uniform: torch.Tensor) -> torch.Tensor:
    """A top-k sample per row of logits (b, K) drawn with given uniform noise (b, K) in (0, 1), by the
    Gumbel-max trick: argmax(top-k-filtered logits - log(-log(u))) is a sample of softmax(filtered
    logits). Traceable (the exported top-k graphs use it); -> indices (b,)."""
    u = uniform.clamp(1e-12, 1.0 - 1e-7)
    return (top_k_filter(logits, k) - torch.log(-torch.log(u))).argmax(dim=-1)


class ForwardDynamics(nn.Module):
    """Autoregressive transformer over motion tokens, conditioned on images and text."""

    def __init__(self, cfg: ForwardDynamicsConfig, quantize: FSQ | None = None, init: bool = True):
        super().__init__()
        self.cfg = cfg
        h = cfg.hidden_dim
        self.sos_token = nn.Parameter(torch.zeros(1, 1, h))
        # The FSQ maps chosen indices back to codes; in a bundle it is the tokenizer's own module.
        self.quantize = quantize if quantize is not None else FSQ(dim=h, levels=fsq_levels(cfg.codebook_size))
        self.trunk = TransformerEncoder(
            cfg.seq_len, h, cfg.num_heads, cfg.num_layers, cfg.dropout, cfg.bias,
            mask="causal_cond", num_cond=cfg.cond_seq_len,
        )
        self.img_proj = nn.Linear(cfg.img_embed_dim, h)
        self.text_proj = nn.Linear(cfg.text_embed_dim, h)
        if cfg.text_select:  # one logit per (selected token, image-token position)
            self.select_logits = nn.Linear(cfg.text_embed_dim, cfg.text_select * cfg.num_views * cfg.select_candidates)
        self.unembed = nn.Linear(h, cfg.codebook_size)
        num_codes = 1
        for level in fsq_levels(cfg.codebook_size):
            num_codes *= level
        self.num_codes = num_codes
        # set by amplify.inference.prepare_for_inference: the fused one-token steps (amplify/fused_decoder.py)
        self.fused_decoder = None
        if init:
            # a given quantizer is the (trained) tokenizer's own: re-initializing it would make the targets
            # and the decoded codes those of a random projection
            keep = {k: v.clone() for k, v in quantize.state_dict().items()} if quantize is not None else None
            init_weights(self)
            if keep is not None:
                self.quantize.load_state_dict(keep)
            nn.init.normal_(self.sos_token, 0.0, 0.02)
            if cfg.text_select:  # start from the plain mean of the image tokens
                nn.init.zeros_(self.select_logits.weight)
                nn.init.zeros_(self.select_logits.bias)

    def get_cond_tokens(self, img_tokens: torch.Tensor, text_emb: torch.Tensor) -> torch.Tensor:
        """Image tokens (b, v*49, 512) and text embeddings (b, E) or (b, 1, E) -> (b, C, h)."""
        if text_emb.dim() == 2:
            text_emb = text_emb[:, None]
        if self.cfg.text_scale != 1.0:
            text_emb = text_emb * self.cfg.text_scale
        img = self.img_proj(img_tokens)  # (b, v*49, h)
        parts = [img, self.text_proj(text_emb)]
        if self.cfg.text_select:
            v, n = self.cfg.num_views, self.cfg.select_candidates
            candidates = img.reshape(img.shape[0], v, -1, img.shape[-1])[:, :, -n:].flatten(1, 2)  # (b, v*n, h)
            logits = self.select_logits(text_emb[:, 0]).reshape(img.shape[0], self.cfg.text_select, v * n)
            parts.append(torch.softmax(logits, dim=-1) @ candidates)  # (b, T, v*n) @ (b, v*n, h) -> (b, T, h)
        return torch.cat(parts, dim=1)

    def _logits(self, hidden: torch.Tensor) -> torch.Tensor:
        logits = self.unembed(hidden)
        if self.cfg.mask_unused_logits and self.num_codes < logits.shape[-1]:
            logits[..., self.num_codes:] = float("-inf")
        return logits

    def forward(self, cond: torch.Tensor, target_indices: torch.Tensor) -> torch.Tensor:
        """Teacher forcing: cond (b, C, h), targets (b, S) -> logits (b, S, K)."""
        c = cond.shape[1]
        codes = self.quantize.indices_to_codes(target_indices)
        sos = self.sos_token.expand(cond.shape[0], -1, -1)
        x = torch.cat([cond, sos, codes[:, :-1]], dim=1)
        return self._logits(self.trunk(x)[:, c:])

    def loss(self, cond: torch.Tensor, target_indices: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Cross entropy of teacher-forced logits against the targets; returns (loss, logits)."""
        logits = self(cond, target_indices)
        return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), target_indices.reshape(-1).long()), logits

    def _choose(self, logits: torch.Tensor, sampling: str, generator: torch.Generator | None) -> torch.Tensor:
        if sampling == "argmax":
            return logits.argmax(dim=-1)
        if sampling == "topk":
            probs = F.softmax(top_k_filter(logits, self.cfg.top_k).float(), dim=-1)
            return torch.multinomial(probs, 1, generator=generator).squeeze(-1)
        raise ValueError(f"sampling must be 'argmax' or 'topk', got {sampling!r}")

    @torch.no_grad()
    def predict(
        self, cond: torch.Tensor, sampling: str | None = None, generator: torch.Generator | None = None,
        return_logits: bool = False,
    ):
        """Cached autoregressive prediction: cond (b, C, h) -> indices (b, S) int64
        (and the logits of each step (b, S, K) with ``return_logits``)."""
        sampling = sampling or self.cfg.sampling
        if self.fused_decoder is not None and not self.training:
            return self.fused_decoder.predict(cond, sampling, generator, return_logits)
        sos = self.sos_token.expand(cond.shape[0], -1, -1)
        hidden, cache = self.trunk.forward_cached(torch.cat([cond, sos], dim=1), self.trunk.kv_buffers())
        indices, step_logits = [], []
        for step in range(self.cfg.pred_seq_len):
            logits = self._logits(hidden[:, -1])  # (b, K)
            idx = self._choose(logits, sampling, generator)
            indices.append(idx)
            step_logits.append(logits)
            if step + 1 < self.cfg.pred_seq_len:
                code = self.quantize.indices_to_codes(idx[:, None])  # (b, 1, h)
                hidden, cache = self.trunk.forward_cached(code, cache)
        out = torch.stack(indices, dim=1)
        return (out, torch.stack(step_logits, dim=1)) if return_logits else out

    @torch.no_grad()
    def predict_uncached(
        self, cond: torch.Tensor, sampling: str | None = None, generator: torch.Generator | None = None,
        return_logits: bool = False, uniform: torch.Tensor | None = None, prefix: torch.Tensor | None = None,
    ):
        """The reference computation: the whole sequence runs through the trunk at every step.
        With ``uniform`` (b, S, K) noise, top-k samples are drawn from it (:func:`top_k_from_noise`,
        as the exported top-k graphs draw them) instead of from ``generator``. With ``prefix`` (b, P)
        indices, the first P steps take them instead of choosing (their logits are still returned) and
        the rest is predicted given them: how well the model continues a sequence it did not start."""
        sampling = sampling or self.cfg.sampling
        x = torch.cat([cond, self.sos_token.expand(cond.shape[0], -1, -1)], dim=1)
        indices, step_logits = [], []
        for step in range(self.cfg.pred_seq_len):
            logits = self._logits(self.trunk(x)[:, -1])
            if prefix is not None and step < prefix.shape[1]:
                idx = prefix[:, step].long()
            elif uniform is not None and sampling == "topk":
                idx = top_k_from_noise(logits, self.cfg.top_k, uniform[:, step, :logits.shape[-1]])
            else:
                idx = self._choose(logits, sampling, generator)
            indices.append(idx)
            step_logits.append(logits)
            x = torch.cat([x, self.quantize.indices_to_codes(idx[:, None])], dim=1)
        out = torch.stack(indices, dim=1)
        return (out, torch.stack(step_logits, dim=1)) if return_logits else out
