"""Inverse dynamics (ID): images, text, proprioception and motion codes -> an action chunk.

Condition sequence, in this order, each part present if its flag is on:
    img_proj(image tokens (b, 49, v*512))   (b, 49, h)
    text_proj(text_emb (b, E))              (b, 1, h)
    proprio_proj(proprio (b, 9))            (b, 1, h)
    codes                                   (b, S, h)
then an action head (see action_heads.py) -> actions (b, A, action_dim).
"""
from __future__ import annotations

import torch
import torch.nn as nn

from amplify.config import InverseDynamicsConfig
from amplify.layers import init_weights
from amplify.models.action_heads import build_action_head


class InverseDynamics(nn.Module):
    """Conditioned action head; see the module docstring."""

    def __init__(self, cfg: InverseDynamicsConfig, init: bool = True):
        super().__init__()
        self.cfg = cfg
        h = cfg.hidden_dim
        if cfg.cond_on_img:
            self.img_proj = nn.Linear(cfg.img_embed_dim, h)
        if cfg.cond_on_text:
            self.text_proj = nn.Linear(cfg.text_embed_dim, h)
        if cfg.cond_on_proprio:
            self.proprio_proj = nn.Linear(cfg.proprio_dim, h)
        self.head = build_action_head(cfg)
        if init:
            init_weights(self)

    def cond_tokens(
        self,
        img_tokens: torch.Tensor | None = None,  # (b, 49, v*512)
        text_emb: torch.Tensor | None = None,  # (b, E)
        proprio: torch.Tensor | None = None,  # (b, 9)
        codes: torch.Tensor | None = None,  # (b, S, h)
    ) -> torch.Tensor:
        """The condition sequence (b, C, h); every input its flags ask for must be given."""
        cfg = self.cfg
        parts = []
        for flag, name, value in (
            (cfg.cond_on_img, "img_tokens", img_tokens),
            (cfg.cond_on_text, "text_emb", text_emb),
            (cfg.cond_on_proprio, "proprio", proprio),
            (cfg.cond_on_tracks, "codes", codes),
        ):
            if flag and value is None:
                raise ValueError(f"inverse dynamics is conditioned on {name}: pass it")
        if cfg.cond_on_img:
            parts.append(self.img_proj(img_tokens))
        if cfg.cond_on_text:
            parts.append(self.text_proj(text_emb.reshape(text_emb.shape[0], 1, -1)))
        if cfg.cond_on_proprio:
            parts.append(self.proprio_proj(proprio.reshape(proprio.shape[0], 1, -1)))
        if cfg.cond_on_tracks:
            parts.append(codes)
        return torch.cat(parts, dim=1)

    def forward(self, img_tokens=None, text_emb=None, proprio=None, codes=None) -> torch.Tensor:
        """-> actions (b, A, action_dim)."""
        return self.head(self.cond_tokens(img_tokens, text_emb, proprio, codes))

    def loss(self, actions: torch.Tensor, img_tokens=None, text_emb=None, proprio=None, codes=None) -> torch.Tensor:
        """The head's training loss for target actions (b, A, action_dim)."""
        return self.head.loss(self.cond_tokens(img_tokens, text_emb, proprio, codes), actions)
