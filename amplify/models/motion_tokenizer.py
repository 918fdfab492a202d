"""Motion tokenizer (MT): point-track velocities <-> discrete FSQ tokens.

Shapes: b batch, v views, t velocities per track, n tracks, h hidden, S tokens
(S = t, or v*t with ``per_view``), R = R0*R1 relative classes.

    velocities (b, v, t, n, 2) --encode--> z (b, S, h) --quantize (FSQ)--> codes (b, S, h), indices (b, S)
    codes --decode--> relative-class logits (b, v*t*n, R) --argmax--> velocities (b, v, t, n, 2)
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F
from einops import rearrange
from vector_quantize_pytorch import FSQ

from amplify.config import MotionTokenizerConfig
from amplify.layers import TransformerDecoder, TransformerEncoder, init_weights
from amplify.models.vision import VisionEncoder
from amplify.tracks import relative_class_targets, relative_classes_to_velocities


def _encoder_mask(causal_encoder: bool | str) -> str:
    return {True: "causal", "diag": "diag", False: "full"}[causal_encoder]


class StandardizedLinear(nn.Linear):
    """A linear map whose outputs are standardized per dimension and scaled to ``std``: batch
    statistics while training (tracked as running means), the running statistics in eval.

    Replaces the FSQ's ``project_in`` (``MotionTokenizerConfig.fsq_input_std``); its weight and bias
    keep their names, the running statistics are two more buffers."""

    def __init__(self, in_features: int, out_features: int, std: float, momentum: float = 0.05, eps: float = 1e-5):
        super().__init__(in_features, out_features)
        self.std, self.momentum, self.eps = std, momentum, eps
        self.register_buffer("running_mean", torch.zeros(out_features))
        self.register_buffer("running_var", torch.ones(out_features))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = super().forward(x)
        if self.training and torch.is_grad_enabled():
            flat = y.reshape(-1, y.shape[-1])
            mean, var = flat.mean(0), flat.var(0, unbiased=False)
            with torch.no_grad():
                self.running_mean.lerp_(mean.detach(), self.momentum)
                self.running_var.lerp_(var.detach(), self.momentum)
        else:
            mean, var = self.running_mean, self.running_var
        return (y - mean) * (self.std * torch.rsqrt(var + self.eps))


class TrackEncoder(nn.Module):
    """Velocities -> continuous latents z (b, S, h)."""

    def __init__(self, cfg: MotionTokenizerConfig):
        super().__init__()
        self.cfg = cfg
        in_dim = cfg.num_tracks * cfg.point_dim * (1 if cfg.per_view else cfg.num_views)
        self.encoder_proj = nn.Linear(in_dim, cfg.hidden_dim)
        args = (cfg.seq_len, cfg.hidden_dim, cfg.num_heads, cfg.num_layers, cfg.dropout, cfg.bias)
        mask = _encoder_mask(cfg.causal_encoder)
        if cfg.cond_on_img:
            # Image-conditioned encoding: a decoder transformer whose condition tokens are the
            # vision encoder's patch tokens of every view, projected to h.
            self.cond_proj = nn.Linear(cfg.vision.embed_dim, cfg.hidden_dim)
            self.encoder = TransformerDecoder(*args, mask=mask)
        else:
            self.encoder = TransformerEncoder(*args, mask=mask)

    def forward(self, vel: torch.Tensor, img_tokens: torch.Tensor | None = None) -> torch.Tensor:
        if self.cfg.per_view:
            x = rearrange(vel, "b v t n d -> b (v t) (n d)")
        else:
            x = rearrange(vel, "b v t n d -> b t (v n d)")
        x = self.encoder_proj(x)  # (b, S, h)
        if self.cfg.cond_on_img:
            if img_tokens is None:
                raise ValueError("this motion tokenizer is image-conditioned: pass images")
            return self.encoder(x, self.cond_proj(img_tokens))
        return self.encoder(x)


class TrackDecoder(nn.Module):
    """Codes (b, S, h) -> relative-class logits (b, v*t*n, R)."""

    def __init__(self, cfg: MotionTokenizerConfig):
        super().__init__()
        self.cfg = cfg
        h = cfg.hidden_dim
        self.decoder = TransformerDecoder(
            cfg.seq_len, h, cfg.num_heads, cfg.num_layers // 2, cfg.dropout, cfg.bias, mask="full"
        )
        self.track_pos_emb = nn.Embedding(cfg.num_tracks, h)
        self.view_emb = nn.Embedding(cfg.num_views, h)
        self.decoder_mlp = nn.Sequential(
            nn.Linear(3 * h, cfg.decoder_mlp_hidden_dim), nn.ReLU(), nn.Linear(cfg.decoder_mlp_hidden_dim, h)
        )
        r0, r1 = cfg.rel_cls_img_size
        self.decoder_proj = nn.Linear(h, r0 * r1)

    def _tokens(self, codes: torch.Tensor) -> torch.Tensor:
        """Decoder transformer output as (b, v or 1, t, 1, h), ready to broadcast over views and tracks."""
        cfg = self.cfg
        queries = codes.new_zeros(codes.shape[0], cfg.seq_len, cfg.hidden_dim)
        x = self.decoder(queries, codes)  # (b, S, h)
        if cfg.per_view:
            return rearrange(x, "b (v t) h -> b v t 1 h", v=cfg.num_views)
        return rearrange(x, "b t h -> b 1 t 1 h")

    def forward_reference(self, codes: torch.Tensor) -> torch.Tensor:
        """The computation as the original writes it: a per-point MLP over [x, track, view]."""
        cfg = self.cfg
        b, v, t, n, h = codes.shape[0], cfg.num_views, cfg.num_steps, cfg.num_tracks, cfg.hidden_dim
        x = self._tokens(codes).expand(b, v, t, n, h)
        tpe = self.track_pos_emb.weight.view(1, 1, 1, n, h).expand(b, v, t, n, h)
        ve = self.view_emb.weight.view(1, v, 1, 1, h).expand(b, v, t, n, h)
        x = x + self.decoder_mlp(torch.cat([x, tpe, ve], dim=-1))
        return rearrange(self.decoder_proj(x), "b v t n r -> b (v t n) r")

    def _separable_parts(self, codes: torch.Tensor):
        """The per-token, per-track and per-view pieces of the decoder MLP (see :meth:`forward_fast`).

        Returns tok (b, v|1, t, 1, m) = W1x x + b1, trk (n, m) = W1p p, view (v, 1, 1, m) = W1e e,
        folded_w (R, m) = Wp W2, folded_b (R,) = bp + Wp b2, tok_out (b, v|1, t, 1, R) = Wp x.
        """
        lin1 = self.decoder_mlp[0]
        x = self._tokens(codes)  # (b, v|1, t, 1, h)
        trk, view, folded_w, folded_b = self._weight_parts()
        return (F.linear(x, lin1.weight[:, :self.cfg.hidden_dim], lin1.bias), trk, view, folded_w, folded_b,
                F.linear(x, self.decoder_proj.weight))

    def _weight_parts(self) -> tuple[torch.Tensor, ...]:
        """trk (n, m), view (v, 1, 1, m), folded_w (R, m), folded_b (R,): functions of the weights alone.

        Kept between calls when gradients are off, and made again when any weight they come from is
        replaced or changed in place (its storage or version counter moves)."""
        cfg, h = self.cfg, self.cfg.hidden_dim
        lin1, lin2, proj = self.decoder_mlp[0], self.decoder_mlp[2], self.decoder_proj
        sources = (lin1.weight, lin2.weight, lin2.bias, proj.weight, proj.bias, self.track_pos_emb.weight,
                   self.view_emb.weight)
        key = tuple((t.data_ptr(), t._version, t.device) for t in sources)
        cached = getattr(self, "_weight_parts_cache", None)
        if cached is not None and cached[0] == key and not torch.is_grad_enabled():
            return cached[1]
        wp = proj.weight  # (R, h)
        parts = (F.linear(self.track_pos_emb.weight, lin1.weight[:, h:2 * h]),
                 F.linear(self.view_emb.weight, lin1.weight[:, 2 * h:]).view(cfg.num_views, 1, 1, -1),
                 wp @ lin2.weight, proj.bias + wp @ lin2.bias)
        if not torch.is_grad_enabled():
            self._weight_parts_cache = (key, parts)
        return parts

    def forward_fast(self, codes: torch.Tensor) -> torch.Tensor:
        """The same logits with the per-point MLP split into its separable parts.

        First layer: W1 [x, p, e] = W1x x (per token) + W1p p (per track) + W1e e (per view), so only
        the ReLU runs per point. Last two maps fold: Wp (x + W2 r + b2) + bp = Wp x + (Wp W2) r + const.
        """
        cfg = self.cfg
        tok, trk, view, folded_w, folded_b, tok_out = self._separable_parts(codes)
        pre = tok + trk.view(1, 1, 1, cfg.num_tracks, -1) + view.unsqueeze(0)  # (b, v, t, n, m)
        logits = F.linear(F.relu(pre), folded_w, folded_b) + tok_out  # (b, v, t, n, R)
        return rearrange(logits, "b v t n r -> b (v t n) r")

    @torch.no_grad()
    def forward_classes(self, codes: torch.Tensor, chunk_points: int = 2048) -> torch.Tensor:
        """Each point's argmax relative class (b, v, t, n) int64, without keeping the logits.

        The separable form of :meth:`forward_fast`, computed over chunks of (view, time) rows of about
        ``chunk_points`` points, so the (points, m) pre-activations and (points, R) logits stay in
        cache; bias, ReLU and the per-token terms are applied in place. Inference only (no gradients).
        """
        cfg = self.cfg
        b, v, t, n = codes.shape[0], cfg.num_views, cfg.num_steps, cfg.num_tracks
        tok, trk, view, folded_w, folded_b, tok_out = self._separable_parts(codes)
        m, r = trk.shape[-1], folded_w.shape[0]
        tok = tok.expand(b, v, t, 1, m).reshape(b * v * t, 1, m)  # rows ordered (b, v, t)
        tok_out = tok_out.expand(b, v, t, 1, r).reshape(b * v * t, 1, r)
        view = view.expand(v, t, 1, m).reshape(1, v * t, 1, m).expand(b, v * t, 1, m).reshape(b * v * t, 1, m)
        wt = folded_w.t().contiguous()  # (m, R)
        rows = b * v * t
        step = max(1, chunk_points // n)
        classes = torch.empty(rows, n, dtype=torch.long, device=codes.device)
        pre = torch.empty(step, n, m, dtype=tok.dtype, device=codes.device)
        logits = torch.empty(step * n, r, dtype=tok.dtype, device=codes.device)
        for i in range(0, rows, step):
            k = min(step, rows - i)
            p, lg = pre[:k], logits[: k * n]
            torch.add(tok[i:i + k], trk, out=p)  # (k, n, m)
            p.add_(view[i:i + k]).relu_()
            torch.mm(p.view(k * n, m), wt, out=lg)  # (k n, R)
            lg3 = lg.view(k, n, r)
            lg3.add_(folded_b).add_(tok_out[i:i + k])
            torch.argmax(lg3, dim=-1, out=classes[i:i + k])
        return classes.view(b, v, t, n)


class MotionTokenizer(nn.Module):
    """Encoder, FSQ quantizer and decoder of point-track velocities. See the module docstring."""

    def __init__(self, cfg: MotionTokenizerConfig, init: bool = True):
        super().__init__()
        self.cfg = cfg
        self.encoder = TrackEncoder(cfg)
        self.quantize = FSQ(dim=cfg.hidden_dim, levels=cfg.fsq_levels)
        if cfg.fsq_input_std > 0:
            proj = self.quantize.project_in
            self.quantize.project_in = StandardizedLinear(proj.in_features, proj.out_features, cfg.fsq_input_std)
            self.quantize.project_in.load_state_dict(proj.state_dict(), strict=False)
        self.decoder = TrackDecoder(cfg)
        self.img_encoder = VisionEncoder(cfg.vision) if cfg.cond_on_img else None
        if init:
            init_weights(self.encoder)
            init_weights(self.decoder)

    # -- encoding -------------------------------------------------------------------------------
    def image_tokens(self, images: torch.Tensor) -> torch.Tensor:
        """Images (b, v, H, W, 3) in [0, 1] -> patch tokens of all views (b, v*49, 512)."""
        b = images.shape[0]
        tokens = self.img_encoder(rearrange(images, "b v h w c -> (b v) h w c"))
        return rearrange(tokens, "(b v) p d -> b (v p) d", b=b)

    def encode(self, x: torch.Tensor, cond: torch.Tensor | None = None) -> torch.Tensor:
        """Velocities (b, v, t, n, 2) -> latents z (b, S, h) (before quantization).

        ``cond``: for image-conditioned tokenizers, images (b, v, H, W, 3) or patch tokens (b, C, 512).
        """
        if cond is not None and cond.dim() == 5:
            cond = self.image_tokens(cond)
        z = self.encoder(x, cond)
        if self.cfg.fsq_input_norm:
            z = F.layer_norm(z, z.shape[-1:])
        return z

    def tokenize(self, velocities: torch.Tensor, cond: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Velocities -> (codes (b, S, h), indices (b, S) int64)."""
        codes, indices = self.quantize(self.encode(velocities, cond))
        return codes, indices.long()

    def indices_to_codes(self, indices: torch.Tensor) -> torch.Tensor:
        """Indices (b, S) -> codes (b, S, h). Indices past the FSQ code count wrap, as in FSQ."""
        return self.quantize.indices_to_codes(indices)

    # -- decoding -------------------------------------------------------------------------------
    def decode_logits(self, codes: torch.Tensor, fast: bool | None = None) -> torch.Tensor:
        """Codes (b, S, h) -> relative-class logits (b, v*t*n, R), ordered view, time, track.

        ``fast`` (default: when not training) uses the separable form of the per-point MLP.
        """
        if fast is None:
            fast = not (self.training and torch.is_grad_enabled())
        return self.decoder.forward_fast(codes) if fast else self.decoder.forward_reference(codes)

    def logits_to_velocities(self, rel_logits: torch.Tensor) -> torch.Tensor:
        """Logits (b, v*t*n, R) -> velocities (b, v, t, n, 2) from each point's argmax class."""
        cfg = self.cfg
        classes = rel_logits.argmax(dim=-1).view(-1, cfg.num_views, cfg.num_steps, cfg.num_tracks)
        return relative_classes_to_velocities(classes, cfg.cls_img_size, cfg.rel_cls_img_size, rel_logits.dtype)

    def decode(self, codes: torch.Tensor, fast: bool | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Codes (b, S, h) -> (velocities (b, v, t, n, 2), logits (b, v*t*n, R))."""
        logits = self.decode_logits(codes, fast)
        return self.logits_to_velocities(logits), logits

    def decode_velocities(self, codes: torch.Tensor) -> torch.Tensor:
        """Codes (b, S, h) -> velocities (b, v, t, n, 2) only: the chunked separable decoder
        (:meth:`TrackDecoder.forward_classes`), no logits materialized. For inference."""
        classes = self.decoder.forward_classes(codes)
        return relative_classes_to_velocities(classes, self.cfg.cls_img_size, self.cfg.rel_cls_img_size, codes.dtype)

    def forward(self, x: torch.Tensor, cond: torch.Tensor | None = None):
        """Velocities -> (reconstructed velocities, indices (b, S), logits)."""
        codes, indices = self.quantize(self.encode(x, cond))
        x_recon, rel_logits = self.decode(codes)
        return x_recon, indices, rel_logits

    # -- loss -----------------------------------------------------------------------------------
    def loss_per_point(self, rel_logits: torch.Tensor, gt_traj: torch.Tensor) -> torch.Tensor:
        """Cross entropy of each point's relative class, (b, v, t, n); targets from ``gt_traj``
        (b, v, H, n, 2); points with a non-finite position are ignored (loss 0)."""
        cfg = self.cfg
        prev, nxt = gt_traj[:, :, :-1], gt_traj[:, :, 1:]
        targets = relative_class_targets(
            torch.nan_to_num(prev), torch.nan_to_num(nxt), cfg.cls_img_size, cfg.rel_cls_img_size
        )
        valid = torch.isfinite(prev).all(-1) & torch.isfinite(nxt).all(-1)
        targets = torch.where(valid, targets, torch.full_like(targets, -1))
        loss = F.cross_entropy(
            rel_logits.reshape(-1, rel_logits.shape[-1]).float(), targets.reshape(-1), ignore_index=-1, reduction="none"
        )
        return loss.view(targets.shape)

    def get_loss(self, x_recon: torch.Tensor, rel_logits: torch.Tensor, gt_vel: torch.Tensor, gt_traj: torch.Tensor) -> torch.Tensor:
        """Relative-classification loss: mean per view over batch, time and tracks, then the sum over
        views weighted by ``loss_weights``. (``x_recon`` and ``gt_vel`` are accepted for the
        original's signature.)"""
        per_point = self.loss_per_point(rel_logits, gt_traj)  # (b, v, t, n)
        total = per_point.new_zeros(())
        for i, view in enumerate(self.cfg.views):
            total = total + self.cfg.loss_weights.get(view, 1.0) * per_point[:, i].mean()
        return total
