"""The exported entry points as plain ``nn.Module`` wrappers that trace to static graphs.

Each wrapper holds the library's own submodules (so weights are shared, not copied) and runs the
same computation with control flow fixed by the config: the FD loop is unrolled over its S steps
with a key/value cache, the FSQ quantizer is written with explicit tensor ops (the library's FSQ
uses einops and autocast contexts that exporters do not need), and shapes other than the batch
axis are constants. ``GRAPHS`` lists, per graph, its input and output names in positional order.

Shapes: b batch (dynamic), v views, H x W image size (the tokenizer's ``img_shape``), t = H_track-1
velocities, n tracks, S code tokens, h hidden, R relative classes, A action horizon.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn

from amplify.config import MotionTokenizerConfig
from amplify.models.forward_dynamics import top_k_from_noise
from amplify.models.motion_tokenizer import MotionTokenizer
from amplify.policy import AMPLIFY


class ExportFSQ(nn.Module):
    """FSQ quantization and index -> code mapping with the library FSQ's weights and exact op order.

    quantize: z (b, S, h) -> project_in -> bound (tanh) -> round -> / half_width -> codes (b, S, h)
    and indices = sum((c * half_width + half_width) * basis) truncated to an integer (as FSQ does).
    """

    def __init__(self, fsq: nn.Module):
        super().__init__()
        if getattr(fsq, "num_codebooks", 1) != 1:
            raise ValueError("only single-codebook FSQ quantizers export")
        self.project_in, self.project_out = fsq.project_in, fsq.project_out
        levels = fsq._levels
        eps = 1e-3
        half_l = (levels - 1) * (1 + eps) / 2
        offset = torch.where(levels % 2 == 0, 0.5, 0.0)
        self.register_buffer("half_l", half_l.float(), persistent=False)
        self.register_buffer("offset", offset.float(), persistent=False)
        self.register_buffer("shift", (offset / half_l).atanh().float(), persistent=False)
        self.register_buffer("half_width", (levels // 2).float(), persistent=False)
        self.register_buffer("half_width_int", (levels // 2).long(), persistent=False)
        self.register_buffer("levels", levels.long(), persistent=False)
        self.register_buffer("basis", fsq._basis.long(), persistent=False)
        self.register_buffer("basis_float", fsq._basis.float(), persistent=False)

    def quantize(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """z (b, S, h) -> (indices (b, S) int64, codes (b, S, h))."""
        zp = self.project_in(z)  # (b, S, d)
        bounded = (zp + self.shift).tanh() * self.half_l - self.offset
        normalized = bounded.round() / self.half_width  # (b, S, d) in [-1, 1]
        indices = ((normalized * self.half_width + self.half_width) * self.basis_float).sum(dim=-1)
        return indices.to(torch.int32).to(torch.int64), self.project_out(normalized)

    def indices_to_codes(self, indices: torch.Tensor) -> torch.Tensor:
        """indices (b, S) int64 -> codes (b, S, h); indices past the code count wrap, as in FSQ."""
        level_idx = torch.remainder(torch.div(indices[..., None], self.basis, rounding_mode="floor"), self.levels)
        normalized = (level_idx - self.half_width_int).float() / self.half_width  # (b, S, d)
        return self.project_out(normalized)


def _check_tokenizer(cfg: MotionTokenizerConfig) -> None:
    if cfg.cond_on_img:
        raise ValueError("image-conditioned motion tokenizers (cond_on_img) are not exportable yet")


def _check_action_head(policy: AMPLIFY) -> None:
    """Sampling heads (diffusion, flow) export only from a fixed start (``sample_noise='zero'``): their
    sampler is then a deterministic unrolled loop. Seeded or fresh noise would be frozen or
    re-drawn differently by a traced graph, so it is refused rather than exported wrong."""
    idc = policy.cfg.inverse_dynamics
    noise = getattr(idc, "sample_noise", "zero")
    if idc.head != "gaussian" and noise != "zero":
        raise ValueError(
            f"the {idc.head} action head starts sampling from {noise!r} noise (inverse_dynamics.sample_noise); "
            "only 'zero' exports. Export the other graphs with --graphs encode,indices_to_codes,decode,predict_codes"
        )


# ---------------------------------------------------------------------------------------------
# motion tokenizer
# ---------------------------------------------------------------------------------------------
class EncodeGraph(nn.Module):
    """velocities (b, v, t, n, 2) -> indices (b, S) int64, codes (b, S, h)."""

    input_names: tuple[str, ...] = ("velocities",)

    def __init__(self, mt: MotionTokenizer):
        super().__init__()
        _check_tokenizer(mt.cfg)
        self.cfg = mt.cfg
        self.encoder_proj, self.encoder = mt.encoder.encoder_proj, mt.encoder.encoder
        self.fsq = ExportFSQ(mt.quantize)

    def forward(self, velocities: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        cfg = self.cfg
        b = velocities.shape[0]
        if cfg.per_view:  # b v t n d -> b (v t) (n d)
            x = velocities.reshape(b, cfg.num_views * cfg.num_steps, cfg.num_tracks * cfg.point_dim)
        else:  # b v t n d -> b t (v n d)
            x = velocities.permute(0, 2, 1, 3, 4).reshape(b, cfg.num_steps, -1)
        z = self.encoder(self.encoder_proj(x))  # (b, S, h)
        if cfg.fsq_input_norm:
            z = torch.nn.functional.layer_norm(z, (cfg.hidden_dim,))  # a static shape: ONNX cannot take z.shape here
        return self.fsq.quantize(z)


class IndicesToCodesGraph(nn.Module):
    """indices (b, S) int64 -> codes (b, S, h)."""

    input_names: tuple[str, ...] = ("indices",)

    def __init__(self, mt: MotionTokenizer):
        super().__init__()
        self.fsq = ExportFSQ(mt.quantize)

    def forward(self, indices: torch.Tensor) -> torch.Tensor:
        return self.fsq.indices_to_codes(indices)


class DecodeGraph(nn.Module):
    """codes (b, S, h) -> velocities (b, v, t, n, 2), logits (b, v*t*n, R).

    The decoder's separable fast form (``TrackDecoder.forward_fast``), then each point's argmax
    relative class -> velocity ``(dr, dc) / img_size * 2``.
    """

    input_names: tuple[str, ...] = ("codes",)

    def __init__(self, mt: MotionTokenizer):
        super().__init__()
        _check_tokenizer(mt.cfg)
        self.cfg = mt.cfg
        self.decoder = mt.decoder
        r0, r1 = mt.cfg.rel_cls_img_size
        classes = torch.arange(r0 * r1)
        offsets = torch.stack([classes // r1 - r0 // 2, classes % r1 - r1 // 2], dim=-1).float()  # (R, 2)
        size = torch.tensor([float(s) for s in mt.cfg.cls_img_size])
        self.register_buffer("class_velocity", offsets / size * 2, persistent=False)  # (R, 2)

    def forward(self, codes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        cfg = self.cfg
        logits = self.decoder.forward_fast(codes)  # (b, v*t*n, R)
        classes = logits.argmax(dim=-1)  # (b, v*t*n)
        velocities = self.class_velocity[classes]  # (b, v*t*n, 2)
        velocities = velocities.reshape(codes.shape[0], cfg.num_views, cfg.num_steps, cfg.num_tracks, 2)
        return velocities, logits


# ---------------------------------------------------------------------------------------------
# bundle: vision, forward dynamics, inverse dynamics
# ---------------------------------------------------------------------------------------------
class _BundleGraph(nn.Module):
    def __init__(self, policy: AMPLIFY):
        super().__init__()
        _check_tokenizer(policy.cfg.motion_tokenizer)
        self.cfg = policy.cfg
        self.vision = policy.img_encoder
        self.fd = policy.forward_dynamics
        self.idm = policy.inverse_dynamics
        self.fsq = ExportFSQ(policy.motion_tokenizer.quantize)

    def image_tokens(self, images: torch.Tensor) -> torch.Tensor:
        """images (b, v, H, W, 3) float in [0, 1] -> patch tokens (b, v, 49, 512)."""
        b, v = images.shape[0], images.shape[1]
        tokens = self.vision(images.reshape(b * v, images.shape[2], images.shape[3], images.shape[4]))
        return tokens.reshape(b, v, tokens.shape[1], tokens.shape[2])

    def predict_indices(self, tokens: torch.Tensor, text_emb: torch.Tensor,
                        uniform: torch.Tensor | None = None) -> torch.Tensor:
        """FD prediction, unrolled over S steps with a key/value cache -> indices (b, S) int64.

        Argmax, or with ``uniform`` (b, S, K) random numbers in (0, 1) top-k sampling by the
        Gumbel-max trick (``top_k_from_noise``, the library's), a sample of the distribution
        ``ForwardDynamics.predict(sampling='topk')`` draws from. This is the loop of
        ``ForwardDynamics.predict`` in the form a tracer can export (a growing key/value cache, the
        export's FSQ), not another algorithm.
        """
        fd, cfg = self.fd, self.fd.cfg
        b = tokens.shape[0]
        cond = fd.get_cond_tokens(tokens.reshape(b, -1, tokens.shape[-1]), text_emb)  # (b, C, h)
        sos = fd.sos_token.expand(b, -1, -1)
        hidden, cache = fd.trunk.forward_cached(torch.cat([cond, sos], dim=1), None)
        num_logits = fd.num_codes if cfg.mask_unused_logits else cfg.codebook_size
        indices = []
        for step in range(cfg.pred_seq_len):
            logits = fd.unembed(hidden[:, -1])[:, :num_logits]  # (b, K)
            if uniform is None:
                idx = logits.argmax(dim=-1)  # (b,)
            else:
                idx = top_k_from_noise(logits, cfg.top_k, uniform[:, step, :num_logits])
            indices.append(idx)
            if step + 1 < cfg.pred_seq_len:
                hidden, cache = fd.trunk.forward_cached(self.fsq.indices_to_codes(idx[:, None]), cache)
        return torch.stack(indices, dim=1)

    def actions(self, tokens: torch.Tensor | None, text_emb: torch.Tensor | None, proprio: torch.Tensor | None,
                codes: torch.Tensor) -> torch.Tensor:
        """ID head on patch tokens (b, v, 49, 512) -> actions (b, A, action_dim)."""
        id_tokens = None
        if tokens is not None:
            b, v, p, d = tokens.shape
            id_tokens = tokens.permute(0, 2, 1, 3).reshape(b, p, v * d)  # (b, 49, v*512)
        return self.idm(img_tokens=id_tokens, text_emb=text_emb, proprio=proprio, codes=codes)


class PredictCodesGraph(_BundleGraph):
    """images (b, v, H, W, 3), text_emb (b, E) -> indices (b, S) int64, codes (b, S, h)."""

    input_names: tuple[str, ...] = ("images", "text_emb")

    def forward(self, images: torch.Tensor, text_emb: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        indices = self.predict_indices(self.image_tokens(images), text_emb)
        return indices, self.fsq.indices_to_codes(indices)


class InverseDynamicsGraph(_BundleGraph):
    """[images], [text_emb (b, E)], [proprio (b, P)], codes (b, S, h) -> actions (b, A, action_dim).

    Only the inputs the ID's ``cond_on_*`` flags use are graph inputs (``input_names``).
    """

    def __init__(self, policy: AMPLIFY):
        super().__init__(policy)
        _check_action_head(policy)
        c = policy.cfg.inverse_dynamics
        self.input_names = tuple(name for name, used in (
            ("images", c.cond_on_img), ("text_emb", c.cond_on_text), ("proprio", c.cond_on_proprio), ("codes", True),
        ) if used)

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
        x = dict(zip(self.input_names, inputs))
        tokens = self.image_tokens(x["images"]) if "images" in x else None
        return self.actions(tokens, x.get("text_emb"), x.get("proprio"), x["codes"])


class ActGraph(_BundleGraph):
    """images, text_emb (b, E), [proprio (b, P)] -> actions (b, A, action_dim), indices (b, S) int64."""

    def __init__(self, policy: AMPLIFY):
        super().__init__(policy)
        _check_action_head(policy)
        self.input_names = ("images", "text_emb") + (("proprio",) if policy.cfg.inverse_dynamics.cond_on_proprio else ())

    def forward(self, *inputs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = dict(zip(self.input_names, inputs))
        tokens = self.image_tokens(x["images"])
        indices = self.predict_indices(tokens, x["text_emb"])
        actions = self.actions(tokens, x["text_emb"], x.get("proprio"), self.fsq.indices_to_codes(indices))
        return actions, indices


class PredictCodesTopKGraph(_BundleGraph):
    """images, text_emb (b, E), uniform (b, S, K) -> indices (b, S) int64, codes (b, S, h): top-k sampling."""

    input_names: tuple[str, ...] = ("images", "text_emb", "uniform")

    def forward(self, images: torch.Tensor, text_emb: torch.Tensor, uniform: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        indices = self.predict_indices(self.image_tokens(images), text_emb, uniform)
        return indices, self.fsq.indices_to_codes(indices)


class ActTopKGraph(ActGraph):
    """As ``act`` with top-k sampled codes: images, text_emb, [proprio], uniform (b, S, K) -> actions, indices."""

    def __init__(self, policy: AMPLIFY):
        super().__init__(policy)
        self.input_names = self.input_names + ("uniform",)

    def forward(self, *inputs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = dict(zip(self.input_names, inputs))
        tokens = self.image_tokens(x["images"])
        indices = self.predict_indices(tokens, x["text_emb"], x["uniform"])
        actions = self.actions(tokens, x["text_emb"], x.get("proprio"), self.fsq.indices_to_codes(indices))
        return actions, indices


# ---------------------------------------------------------------------------------------------
# the table of graphs
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class GraphSpec:
    """One exported entry point: its wrapper, the most inputs it takes (a wrapper's ``input_names``
    are those its model's config uses) and its outputs, in positional order."""

    name: str
    wrapper: type[nn.Module]
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    needs_bundle: bool
    doc: str
    optional: bool = False  # exported only when asked for (--topk, or by name in --graphs)


GRAPHS: dict[str, GraphSpec] = {g.name: g for g in (
    GraphSpec("encode", EncodeGraph, ("velocities",), ("indices", "codes"), False,
              "tokenizer encode: velocities -> FSQ indices and codes"),
    GraphSpec("indices_to_codes", IndicesToCodesGraph, ("indices",), ("codes",), False,
              "FSQ index -> code lookup (wraps indices past the code count)"),
    GraphSpec("decode", DecodeGraph, ("codes",), ("velocities", "logits"), False,
              "tokenizer decode: codes -> velocities (argmax relative class) and logits"),
    GraphSpec("predict_codes", PredictCodesGraph, ("images", "text_emb"), ("indices", "codes"), True,
              "forward dynamics, argmax, S steps unrolled with a key/value cache"),
    GraphSpec("inverse_dynamics", InverseDynamicsGraph, ("images", "text_emb", "proprio", "codes"), ("actions",), True,
              "inverse dynamics (action head mean) from images, text, proprioception and codes"),
    GraphSpec("act", ActGraph, ("images", "text_emb", "proprio"), ("actions", "indices"), True,
              "the whole policy: images, text, proprioception -> actions (and the predicted indices)"),
    GraphSpec("predict_codes_topk", PredictCodesTopKGraph, ("images", "text_emb", "uniform"), ("indices", "codes"), True,
              "forward dynamics with top-k sampling (Gumbel-max on caller-supplied uniform noise (b, S, K))", True),
    GraphSpec("act_topk", ActTopKGraph, ("images", "text_emb", "proprio", "uniform"), ("actions", "indices"), True,
              "the whole policy with top-k sampled codes (uniform noise (b, S, K))", True),
)}


def build_graph(name: str, model: nn.Module) -> nn.Module:
    """The wrapper for graph ``name`` around a bundle (any graph) or a motion tokenizer (MT graphs)."""
    spec = GRAPHS[name]
    if spec.needs_bundle:
        if not isinstance(model, AMPLIFY):
            raise TypeError(f"graph {name!r} needs a bundle, not a {type(model).__name__}")
        return spec.wrapper(model).eval()
    mt = model.motion_tokenizer if isinstance(model, AMPLIFY) else model
    return spec.wrapper(mt).eval()
