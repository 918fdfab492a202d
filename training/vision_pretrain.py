"""Pretrain the vision trunk on the world's own images: predict the scene state from both views.

There are no pretrained image weights offline, and a seeded random ResNet-18 keeps little of where
the effector and the objects are (a linear probe says so: see :func:`position_probe`). The
demonstration files store the simulator state of every step (``data/<demo>/states``: for the
built-in world ``[ee_x, ee_y, ee_z, grip, held, hold_d*, (obj_x, obj_y, obj_z) * n]``), so the trunk
can learn exactly that: a linear head on the flattened tokens of every view regresses the
standardized state (mean squared error), the trunk trains with BatchNorm in train mode, then its
BatchNorm statistics are recalibrated (cumulative, as for the random trunk) and it is saved as a
``vision.safetensors`` that FD and ID load frozen (``vision.weights=``), with the head beside the
trunk (``state_head.*``, read by :class:`StateEstimator` and ``python -m training.perception_bound``).

    python -m training.vision_pretrain --data DATA --suite builtin_all --out runs/vision/vision.safetensors
    python -m training.vision_pretrain ... --image-size 128 --head spatial   # soft-argmax on layer2/3's maps

``--head spatial`` (:class:`StateHead`) also reads the finer maps of the trunk's residual stages
(docs/training.md, "A spatial read-out of the trunk's finer maps").

    python -m training.vision_pretrain ... --head spatial --levels 1,2 --pixel-weight 5

``--pixel-weight`` also fits the spatial head's first keypoints to where each object slot is in each view
(the renderer's exact projection; ``--pixel-effector``: the next one to where the gripper is in agentview)
and saves an encoder whose tokens end with those keypoints (keypoint tokens, :mod:`amplify.models.vision`),
which FD and ID trained on the file then read (docs/training.md, "Keypoint tokens").
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import time
from pathlib import Path
from typing import Sequence

import h5py
import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from amplify.config import VisionEncoderConfig
from amplify.devices import native_bf16
from amplify.models.vision import STAGE_CHANNELS, VisionEncoder, spatial_soft_argmax, trunk_features
from training.vision import build_vision_encoder, calibrate_batchnorm, save_vision
from world.scene import MAX_STEP, N_EE  # N_EE: state entries before the objects' xyz (effector xyz, opening, held, hold offset)

# built-in world state entries used for the probe: effector xyz and the 4 objects' xyz
PROBE_EE = [0, 1, 2]
PROBE_OBJECTS = list(range(8, 20))
SPATIAL_LEVELS = (2, 3)  # the stages a spatial head reads unless told otherwise
STEPS_CLIP = 4.0  # frame="steps": object offsets in effector steps, clipped to +- this


def frame_objects(dataset) -> list[tuple[str, ...]]:
    """The object names (state slot order) of every sample's task of an AmplifyDataset of the built-in world."""
    from world.suites import get_task

    per_task = [tuple(o.name for o in get_task(t.name).new_scene().objects) for t in dataset.tasks]
    return [per_task[dataset.demos[int(d)].task] for d, _ in dataset.samples]


def pixel_targets(states: np.ndarray, objects: list[tuple[str, ...]], views: Sequence[str],
                  effector: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Where every object slot's top centre is in each view: states (N, D) of the built-in world and each
    sample's object names (slot order) -> (positions (N, v, n, 2) float32 as (x, y) in [-1, 1], the
    convention of :func:`spatial_soft_argmax` at any image size; in-image mask (N, v, n) bool). Exact:
    the renderer's own projection (``world.render.project``) of the object's centre at its top height.
    ``effector``: one more slot, n, the gripper palm's top centre (n + 1 slots); it is masked in the wrist
    view, whose camera rides on the effector."""
    from world.render import PALM, SIZE, eye_camera, project
    from world.suites import get_suite

    heights = {o.name: o.height for t in get_suite("builtin_all") for o in t.new_scene().objects}
    n = (states.shape[1] - N_EE) // 3
    xyz = states[:, N_EE:N_EE + 3 * n].reshape(len(states), n, 3).astype(np.float64)
    top = xyz[..., 2] + np.array([[heights[o] for o in objs[:n]] for objs in objects])
    if effector:  # the palm's top centre as slot n (world.render.entity_table's palm entry)
        ee = states[:, None, 0:3].astype(np.float64)
        xyz = np.concatenate([xyz, ee], axis=1)
        top = np.concatenate([top, ee[..., 2] + PALM["dz"]], axis=1)
    out = np.zeros((len(states), len(views), xyz.shape[1], 2), np.float32)
    for i, view in enumerate(views):
        cam = eye_camera(states[:, 0:3])[:, None] if view == "eye_in_hand" else None
        col, row = project(view, cam, xyz[..., 0], xyz[..., 1], top)
        out[:, i, :, 0] = (col + 0.5) / SIZE * 2 - 1
        out[:, i, :, 1] = (row + 0.5) / SIZE * 2 - 1
    mask = (np.abs(out) < 1).all(-1)
    if effector:
        mask[:, [i for i, view in enumerate(views) if view == "eye_in_hand"], n] = False
    return out, mask


def load_frames(dataset) -> tuple[torch.Tensor, np.ndarray]:
    """Upright images (N, v, S, S, 3) uint8 at the encoder's input size and states (N, D) float32 of
    every sample of an :class:`~training.data.dataset.AmplifyDataset` (its frame stride applies)."""
    states_of: dict[tuple[str, str], np.ndarray] = {}
    imgs, states = [], []
    for i, (d, t) in enumerate(dataset.samples):
        rec = dataset.demos[int(d)]
        key = (rec.file, rec.key)
        if key not in states_of:
            with h5py.File(rec.file, "r") as f:
                states_of[key] = np.asarray(f["data"][rec.key]["states"], np.float32)
        states.append(states_of[key][int(t)])
        imgs.append(dataset.images(i))
    return torch.from_numpy(np.stack(imgs)), np.stack(states)


def render_scenes(suite: str, count: int, seed: int = 0) -> tuple[torch.Tensor, np.ndarray, list[tuple[str, ...]]]:
    """``count`` freshly rendered built-in-world scenes: upright images (count, 2, 128, 128, 3) uint8
    (agentview, eye_in_hand), states (count, D) and the scenes' object names (slot order). Objects are placed as demonstrations' initial
    states are (``world.tasks.demo_init_states``, a stream that never returns a benchmark state), the
    effector anywhere in the workspace with a random opening. The demonstrations alone hold a hundred-odd
    object layouts, which a trunk memorizes; these add ``count`` layouts."""
    from world import get_suite
    from world.render import VIEWS, entity_table, render
    from world.tasks import demo_init_states

    tasks = get_suite(suite)
    rng = np.random.default_rng(seed)
    per_task = -(-count // len(tasks))
    imgs, states, objects = [], [], []
    for ti, task in enumerate(tasks):
        inits = demo_init_states(task, per_task, seed=10_000 + seed)  # not the demonstrations' own seed
        scene = task.new_scene()
        names = tuple(o.name for o in scene.objects)
        for s in inits:
            s = s.copy()
            s[0:3] = (rng.uniform(0.05, 0.95), rng.uniform(0.05, 0.95), rng.uniform(0.02, 0.25))
            s[3] = rng.uniform(0.0, 1.0)
            scene.set_state(s)
            ent = entity_table(scene)
            imgs.append(np.stack([render(scene, v, ent)[0] for v in VIEWS]))
            states.append(s.astype(np.float32))
            objects.append(names)
    order = rng.permutation(len(imgs))[:count]
    return torch.from_numpy(np.stack(imgs)[order]), np.stack(states)[order], [objects[i] for i in order]


def _resize(images: torch.Tensor, size: int, chunk: int = 1024) -> torch.Tensor:
    """(N, v, S, S, 3) uint8 -> (N, v, size, size, 3) uint8, the encoder's own resize (bilinear, no antialias)."""
    if images.shape[2] == size:
        return images
    n, v = images.shape[:2]
    flat = images.reshape(n * v, *images.shape[2:])
    out = torch.empty(n * v, size, size, 3, dtype=torch.uint8)
    for i in range(0, n * v, chunk):  # in chunks: float copies of 24,000 128 px images would be 4.7 GB
        x = flat[i:i + chunk].permute(0, 3, 1, 2).float()
        x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=False)
        out[i:i + chunk] = x.round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1)
    return out.reshape(n, v, size, size, 3)


@torch.no_grad()
def encode_all(enc: VisionEncoder, images: torch.Tensor, batch: int = 64) -> torch.Tensor:
    """Frozen tokens of images (N, v, S, S, 3) uint8 -> (N, v*P*512) float32, flattened."""
    enc.eval()
    out = []
    for i in range(0, len(images), batch):
        x = images[i:i + batch]
        b, v = x.shape[:2]
        tok = enc(x.reshape(b * v, *x.shape[2:]).float() / 255.0)  # (b v, P, 512)
        out.append(tok.reshape(b, -1))
    return torch.cat(out)


def position_probe(train_feats: torch.Tensor, train_states: np.ndarray, val_feats: torch.Tensor,
                   val_states: np.ndarray, alpha: float = 10.0) -> dict[str, float]:
    """Ridge probe (closed form, standardized features) of effector and object positions from image
    tokens, fitted on train and scored on held-out val: mean absolute error in table units for the
    effector xyz and the objects' xyz, and the same for predicting the train mean (no image)."""
    x, xv = train_feats.double(), val_feats.double()
    mu = x.mean(0)
    sd = (x - mu).pow(2).mean().sqrt().clamp_min(1e-12)  # one global scale: near-constant features stay small
    x, xv = (x - mu) / sd, (xv - mu) / sd
    groups = [("ee", [c for c in PROBE_EE if c < train_states.shape[1]]),
              ("objects", [c for c in PROBE_OBJECTS if c < train_states.shape[1]])]
    cols = [c for _, g in groups for c in g]
    y = torch.from_numpy(train_states[:, cols]).double()
    yv = torch.from_numpy(val_states[:, cols]).double()
    ym = y.mean(0)
    # dual form: (X X^T + a I)^-1 y, cheap when samples < features; one solve for every target column
    k = x @ x.T
    w = x.T @ torch.linalg.solve(k + alpha * x.shape[1] / 100 * torch.eye(len(k), dtype=k.dtype), y - ym)
    err, err_mean = (xv @ w + ym - yv).abs(), (ym - yv).abs()
    out: dict[str, float] = {}
    start = 0
    for name, g in groups:
        part = slice(start, start + len(g))
        start += len(g)
        out[f"probe_{name}_l1"] = float(err[:, part].mean())
        out[f"probe_{name}_l1_no_image"] = float(err_mean[:, part].mean())
    return out


class StateHead(nn.Module):
    """The pretraining head: image tokens of all views (b, v, P, C) -> standardized state entries (b, K).

    ``kind="linear"``: one linear map of the flattened tokens. ``kind="mlp"``: a hidden layer (512,
    ReLU) before it, so the tokens may say where things are in a form only a non-linear reader (as FD's
    and ID's transformers are) decodes. ``kind="keypoints"``: per view, a 1x1
    projection to ``keypoints`` maps, a softmax over the P patches and the expected patch (x, y) of each
    (spatial soft-argmax), concatenated with the linear map's input: positions have to be *where* the
    activations are, not only what they say. ``kind="spatial"``: the same soft-argmax on the finer maps
    of the trunk's residual stages ``levels`` (see :func:`trunk_features`: at 128 px layer2 is 16x16 and
    layer3 8x8 where the tokens are 4x4), ``keypoints`` maps per view and level through a 1x1
    convolution with a learned temperature per level, concatenated with the flattened tokens; its
    ``forward`` takes those maps."""

    def __init__(self, views: int, tokens: int, dim: int, out: int, kind: str = "linear", keypoints: int = 32,
                 levels: Sequence[int] = SPATIAL_LEVELS):
        super().__init__()
        self.views, self.tokens, self.dim, self.kind, self.keypoints = views, tokens, dim, kind, keypoints
        self.levels: tuple[int, ...] = ()
        feats = views * tokens * dim
        if kind == "spatial":
            self.levels = tuple(sorted(set(levels)))
            if not self.levels or any(level not in STAGE_CHANNELS for level in self.levels):
                raise ValueError(f"spatial levels must be among {sorted(STAGE_CHANNELS)}, got {list(levels)}")
            self.maps = nn.ModuleList(nn.Conv2d(STAGE_CHANNELS[level], keypoints, 1) for level in self.levels)
            self.log_temperature = nn.Parameter(torch.zeros(len(self.levels)))
            feats += views * keypoints * 2 * len(self.levels)
        elif kind == "keypoints":
            self.kp = nn.Linear(dim, keypoints)
            side = int(round(tokens ** 0.5))
            g = (torch.arange(side, dtype=torch.float32) + 0.5) / side * 2 - 1
            yy, xx = torch.meshgrid(g, g, indexing="ij")
            self.register_buffer("grid", torch.stack([xx.flatten(), yy.flatten()], -1), persistent=False)  # (P, 2)
            feats += views * keypoints * 2
        elif kind not in ("linear", "mlp"):
            raise ValueError(f"head kind must be linear, mlp, keypoints or spatial, got {kind!r}")
        self.hidden = nn.Sequential(nn.Linear(feats, 512), nn.ReLU()) if kind == "mlp" else nn.Identity()
        self.linear = nn.Linear(512 if kind == "mlp" else feats, out)
        nn.init.zeros_(self.linear.weight)
        nn.init.zeros_(self.linear.bias)

    def forward(self, tokens: torch.Tensor, maps: Sequence[torch.Tensor] = (),
                keypoints: list[torch.Tensor] | None = None) -> torch.Tensor:
        """``tokens`` (b, v, P, C); ``maps``: for ``kind="spatial"``, the stages' maps (b v, C_l, H_l, W_l)
        (or ``keypoints``: their :meth:`spatial_keypoints`, when the caller has them already)."""
        b = tokens.shape[0]
        feats = [tokens.reshape(b, -1)]
        if self.kind == "keypoints":
            attn = self.kp(tokens).softmax(dim=2)  # (b, v, P, K): softmax over patches
            feats.append(torch.einsum("bvpk,pc->bvkc", attn, self.grid).reshape(b, -1))
        elif self.kind == "spatial":
            keypoints = self.spatial_keypoints(maps, b) if keypoints is None else keypoints
            feats.extend(k.reshape(b, -1) for k in keypoints)  # (b, v K 2) per level
        return self.linear(self.hidden(torch.cat(feats, 1)))

    def spatial_keypoints(self, maps: Sequence[torch.Tensor], b: int) -> list[torch.Tensor]:
        """``kind="spatial"``: per stage in ``levels``, each map's soft-argmax (b, v, K, 2) in [-1, 1]."""
        if len(maps) != len(self.levels):
            raise ValueError(f"a spatial head reads the maps of stages {self.levels}; got {len(maps)} maps")
        return [spatial_soft_argmax(conv(m.float()) / self.log_temperature[i].exp()).reshape(b, self.views, -1, 2)
                for i, (conv, m) in enumerate(zip(self.maps, maps))]


def encoder_input(enc: VisionEncoder, images: torch.Tensor) -> torch.Tensor:
    """Upright uint8 images (n, S, S, 3) -> the trunk's input (n, 3, s, s) float in [0, 1], resized to the
    encoder's size as :meth:`amplify.models.vision.VisionEncoder.forward` resizes (bilinear, in float), for
    reading the trunk stage by stage (:func:`trunk_features`)."""
    x = images.permute(0, 3, 1, 2).float() / 255.0
    size = enc.cfg.image_size
    if x.shape[-2:] != (size, size):
        x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=False)
    return x


@torch.no_grad()
def head_predictions(enc: VisionEncoder, head: StateHead, images: torch.Tensor, batch: int = 64) -> np.ndarray:
    """The head's standardized outputs (N, K) for upright uint8 images (N, v, S, S, 3) of all views."""
    out = []
    for i in range(0, len(images), batch):
        x = images[i:i + batch]
        b, v = x.shape[:2]
        feats, maps = trunk_features(enc.model, encoder_input(enc, x.reshape(b * v, *x.shape[2:])), head.levels)
        tokens = feats.float().flatten(2).transpose(1, 2).reshape(b, v, -1, feats.shape[1])  # as the encoder's
        out.append(head(tokens, maps))
    return torch.cat(out).double().numpy()


def save_state_head(head: StateHead, path: str | Path, cols: list[int], mean: np.ndarray, std: np.ndarray,
                    frame: str, names: list[str] | None = None) -> None:
    """Add the pretraining head to a vision file (keys ``state_head.*``; :func:`training.vision.load_vision`
    and the bundle loaders read only the trunk's ``model.*`` keys) with how to decode it in the metadata."""
    from safetensors import safe_open
    from safetensors.torch import load_file, save_file

    with safe_open(str(path), "pt") as f:
        meta = dict(f.metadata() or {})
    state = load_file(str(path))
    state.update({f"state_head.{k}": v.detach().contiguous() for k, v in head.state_dict().items()})
    meta["state_head"] = json.dumps({"kind": head.kind, "views": head.views, "tokens": head.tokens, "dim": head.dim,
                                     "keypoints": head.keypoints, "levels": list(head.levels),
                                     "cols": [int(c) for c in cols],
                                     "mean": [float(x) for x in mean], "std": [float(x) for x in std], "frame": frame,
                                     "names": names})
    save_file(state, str(path), metadata=meta)


class StateEstimator:
    """A vision file written by the pretraining: images of all views -> the scene state it estimates.

    ``estimate(images (b, v, S, S, 3) uint8 upright, ee=None, objects=None) -> (b, D)``: the state in
    the scene's own layout (see :func:`decode_state`; ``objects``: each sample's object names in slot
    order, needed when the head regresses objects by name)."""

    def __init__(self, path: str | Path):
        from safetensors import safe_open
        from safetensors.torch import load_file

        from training.vision import load_vision

        self.encoder = load_vision(path)
        with safe_open(str(path), "pt") as f:
            meta = f.metadata() or {}
        if "state_head" not in meta:
            raise ValueError(f"{path} has no state head (written by python -m training.vision_pretrain / build-default)")
        h = json.loads(meta["state_head"])
        head = StateHead(h["views"], h["tokens"], h["dim"], len(h["cols"]), h["kind"], h["keypoints"],
                         h.get("levels") or SPATIAL_LEVELS)
        state = load_file(str(path))
        head.load_state_dict({k[len("state_head."):]: v for k, v in state.items() if k.startswith("state_head.")})
        self.info = {"head": head.eval(), "cols": np.array(h["cols"]), "mean": np.array(h["mean"]),
                     "std": np.array(h["std"]), "frame": h["frame"], "names": h.get("names")}

    def estimate(self, images: np.ndarray, ee: np.ndarray | None = None,
                 objects: list[tuple[str, ...]] | None = None) -> np.ndarray:
        raw = head_predictions(self.encoder, self.info["head"], torch.from_numpy(np.ascontiguousarray(images)))
        return decode_state(self.info, raw, ee, objects)


def decode_state(info: dict, raw: np.ndarray, ee: np.ndarray | None = None,
                 objects: list[tuple[str, ...]] | None = None) -> np.ndarray:
    """The head's standardized output (b, K) -> states (b, D) in the scene's layout. Entries constant in
    training get their training value. With targets in the effector's frame (``frame="relative"``)
    objects are placed relative to ``ee`` when given (the effector from proprioception), else to the
    estimated effector. A head that regresses objects by name (``info["names"]``) needs ``objects``."""
    cols, mu, sd = info["cols"], info["mean"], info["std"]
    full = np.tile(mu, (len(raw), 1))
    full[:, cols] = raw * sd[cols] + mu[cols]
    if info["frame"] == "steps":  # the state as stored, then the step offsets (not decoded)
        full = full[:, :N_EE + (full.shape[1] - N_EE) // 2]
    if info["frame"] == "relative":
        base = full[:, 0:3] if ee is None else np.asarray(ee, np.float64)
        full[:, N_EE:] += np.tile(base, (1, (full.shape[1] - N_EE) // 3))
    names = info.get("names")
    if names is None:
        return full
    if objects is None:
        raise ValueError("this state head regresses objects by name: pass each sample's object names")
    out = np.zeros((len(raw), N_EE + 3 * len(objects[0])))
    out[:, :N_EE] = full[:, :N_EE]
    for i, objs in enumerate(objects):
        for j, o in enumerate(objs):
            k = names.index(o)
            out[i, N_EE + 3 * j:N_EE + 3 * j + 3] = full[i, N_EE + 3 * k:N_EE + 3 * k + 3]
    return out


def named_targets(states: np.ndarray, objects: list[tuple[str, ...]], names: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """States (N, D) in slot order -> (targets (N, N_EE + 3 len(names)), present mask of the same shape):
    every object at the place of its name, names absent from a scene masked out."""
    out = np.zeros((len(states), N_EE + 3 * len(names)), np.float32)
    mask = np.zeros_like(out, dtype=bool)
    out[:, :N_EE], mask[:, :N_EE] = states[:, :N_EE], True
    for i, objs in enumerate(objects):
        for j, o in enumerate(objs):
            k = N_EE + 3 * names.index(o)
            out[i, k:k + 3], mask[i, k:k + 3] = states[i, N_EE + 3 * j:N_EE + 3 * j + 3], True
    return out, mask


def to_frame(states: np.ndarray, frame: str) -> np.ndarray:
    """Scene states in the regression's frame: ``absolute`` as stored, ``relative``: objects' xyz minus the
    effector's, ``steps``: as stored plus every object's offset from the effector in effector steps clipped
    to +-STEPS_CLIP (what the wrist camera shows, and the units an exact-state policy acts on: precise where
    the effector is close to the object)."""
    if frame == "absolute":
        return states
    if frame not in ("relative", "steps"):
        raise ValueError(f"frame must be absolute, relative or steps, got {frame!r}")
    n = (states.shape[1] - N_EE) // 3
    offsets = states[:, N_EE:] - np.tile(states[:, 0:3], (1, n))
    if frame == "steps":
        return np.concatenate([states, np.clip(offsets / MAX_STEP, -STEPS_CLIP, STEPS_CLIP)], axis=1)
    out = states.copy()
    out[:, N_EE:] = offsets
    return out


def pretrain_vision(train_set, val_set, image_size: int = 64, steps: int = 400, batch_size: int = 32,
                    lr: float = 1e-3, seed: int = 0, progress: bool = True, log=print,
                    extra: tuple[torch.Tensor, np.ndarray] | None = None, head: str = "linear",
                    frame: str = "absolute", keypoints: int = 32, position_weight: float = 1.0,
                    probe: bool = True, probe_random: bool = True, objects: str = "slot",
                    eval_every: int = 0, amp: str = "off", levels: Sequence[int] = SPATIAL_LEVELS,
                    pixel_weight: float = 0.0, pixel_effector: bool = False) -> tuple[VisionEncoder, dict]:
    """Train a ResNet-18 trunk to regress the standardized scene state from all views' tokens.

    ``extra``: more (images, states, object names) to train on (e.g. :func:`render_scenes`).
    ``objects``: ``slot`` regresses the objects in the state's slot order (slot 0 is a red cube in one
    task, a blue cube in another); ``named`` regresses every object name of the suite at its own place
    (absent ones masked), so a token says where the blue cube is whatever the task. ``probe``/``probe_random``:
    fit the ridge probes on the trained / the random trunk (encoding every training frame: build time).
    ``eval_every``: every that many steps (and after the last), the head's held-out error as the
    final report measures it (BatchNorm recalibrated, eval mode; the training itself is unchanged),
    in ``report["curve"]``: a learning curve of one run under one OneCycle schedule, not of
    separate shorter runs.
    ``amp``: ``bf16`` runs the trunk's forward and backward under bfloat16 autocast (weights, head and loss stay
    float32); ``auto`` does so only where the CPU multiplies bfloat16 natively
    (:func:`amplify.devices.native_bf16`; emulated, it is slower than float32), ``off`` never. The trained
    trunk is served in float32 either way.
    ``head``/``keypoints``/``levels``:
    see :class:`StateHead`; ``frame``: see :func:`to_frame`; ``position_weight``: loss weight of the
    effector's and objects' xyz relative to the other state entries. ``pixel_weight`` > 0 (spatial head):
    the head's first n keypoints of every stage are also told where object slot 0..n-1 is in each view
    (:func:`pixel_targets`, mean absolute error in [-1, 1] image units, objects outside a view masked), so
    a keypoint is an object's position, not only something a linear map can combine into one; ``pixel_effector``
    adds keypoint n, fitted to the gripper's pixel in agentview (a keypoint token more per stage and view).
    Returns the trained, BatchNorm-recalibrated, frozen encoder (its head in ``enc.state_head``, written by
    :func:`save_pretrained`) and a report: the probe of effector and object positions from the random
    (calibrated) trunk and from the trained one, fitted on ``train_set``'s frames and scored on
    ``val_set``'s (demonstrations never trained on), and the trained head's own error there."""
    t0, c0 = time.perf_counter(), time.process_time()
    cfg = VisionEncoderConfig(image_size=image_size, num_tokens=(image_size // 32) ** 2)
    imgs, states = load_frames(train_set)
    objs = frame_objects(train_set)
    imgs = _resize(imgs, image_size)
    probe_imgs, probe_states = imgs, states
    if extra is not None:
        imgs = torch.cat([imgs, _resize(extra[0], image_size)])
        states = np.concatenate([states, extra[1][:, :states.shape[1]]])
        objs = objs + list(extra[2])
    vimgs, vstates = load_frames(val_set) if val_set is not None else (imgs[:0], states[:0])
    vobjs = frame_objects(val_set) if val_set is not None else []
    vimgs = _resize(vimgs, image_size)
    amp_dtype = _amp_dtype(amp)
    report: dict = {"image_size": image_size, "steps": steps, "batch_size": batch_size, "lr": lr, "head": head,
                    **({"levels": sorted(set(levels))} if head == "spatial" else {}),
                    "amp": "bf16" if amp_dtype is not None else "off",
                    "frame": frame, "objects": objects, "position_weight": position_weight, "train_samples": len(imgs),
                    "rendered_scenes": 0 if extra is None else len(extra[0]),
                    "val_samples": len(vimgs), "seconds_load": time.perf_counter() - t0}
    if pixel_weight > 0:
        if head != "spatial":
            raise ValueError(f"pixel_weight needs head='spatial' (keypoints on the trunk's maps), got head={head!r}")
        pix, pix_mask = pixel_targets(states, objs, ("agentview", "eye_in_hand")[:imgs.shape[1]], pixel_effector)
        if keypoints < pix.shape[2]:
            raise ValueError(f"pixel_weight: {pix.shape[2]} fitted slots need keypoints >= {pix.shape[2]}, got {keypoints}")
        pix, pix_mask = torch.from_numpy(pix), torch.from_numpy(pix_mask).float()[..., None]
        report["pixel_weight"] = pixel_weight
        report["pixel_effector"] = pixel_effector
    elif pixel_effector:
        raise ValueError("pixel_effector needs pixel_weight > 0 (it adds the effector to the fitted keypoints)")

    enc = build_vision_encoder(cfg, seed)
    calib = probe_imgs[np.linspace(0, len(probe_imgs) - 1, min(128, len(probe_imgs))).round().astype(int)]
    calib = calib.reshape(-1, *calib.shape[2:]).float() / 255.0  # (frames x views, H, W, 3) for BatchNorm
    calibrate_batchnorm(enc, calib)
    if len(vimgs) and probe and probe_random:
        report["random"] = position_probe(encode_all(enc, probe_imgs), probe_states, encode_all(enc, vimgs), vstates)
        log(f"vision probe, random trunk: {json.dumps(report['random'])}")

    if objects == "named":
        names = sorted({o for t in objs for o in t})
        fstates, present = named_targets(states, objs, names)
    elif objects == "slot":
        names, fstates, present = None, states, np.ones(states.shape, bool)
    else:
        raise ValueError(f"objects must be slot or named, got {objects!r}")
    fstates = to_frame(fstates, frame)
    if frame == "steps":  # the step offsets of an object are present where the object is
        present = np.concatenate([present, present[:, N_EE:]], axis=1)
    count = present.sum(0).clip(1)
    mu = (fstates * present).sum(0) / count
    sd = np.sqrt((((fstates - mu) * present) ** 2).sum(0) / count)
    cols = np.flatnonzero(sd > 1e-6)
    target = torch.from_numpy((fstates[:, cols] - mu[cols]) / np.where(sd[cols] > 0, sd[cols], 1)).float()  # (N, K)
    mask = torch.from_numpy(present[:, cols]).float()
    weight = torch.tensor([position_weight if (c in PROBE_EE or c >= N_EE) else 1.0 for c in cols])
    weight = weight / weight.mean()
    v = imgs.shape[1]
    state_head = StateHead(v, cfg.num_tokens, cfg.embed_dim, len(cols), head, keypoints, levels)
    head_info = {"head": state_head, "cols": cols, "mean": mu, "std": sd, "frame": frame, "names": names}  # how to decode it
    trunk = enc.model
    # channels-last convolutions (oneDNN) with the fused AdamW: 1.15x a step on the CPU (benchmarks/vision_step.py);
    # the trunk goes back to the default layout below, before it is calibrated, saved or served
    trunk.to(memory_format=torch.channels_last)
    params = list(trunk.parameters()) + list(state_head.parameters())
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=1e-4, fused=True)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=max(steps, 1), pct_start=0.1)
    gen = torch.Generator().manual_seed(seed)
    trunk.train()
    t1 = time.perf_counter()
    losses = []
    curve = []

    def evaluate(done: int) -> None:  # the held-out head error now, measured as the final one is
        calibrate_batchnorm(enc, calib)
        err = head_error(head_info, head_predictions(enc, state_head, vimgs), vstates, vobjs)
        curve.append({"step": done, "loss": float(np.mean(losses[-50:])), **err,
                      "seconds": time.perf_counter() - t1})
        log(f"vision pretrain step {done}/{steps} held-out head error: {json.dumps(err)}")
        trunk.train()

    for step in range(steps):
        idx = torch.randint(0, len(imgs), (batch_size,), generator=gen)
        x = imgs[idx].reshape(batch_size * v, image_size, image_size, 3).permute(0, 3, 1, 2).float() / 255.0
        x = x.contiguous(memory_format=torch.channels_last)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=amp_dtype is not None):
            feats, maps = trunk_features(trunk, x, state_head.levels)
        tok = feats.float().flatten(2).transpose(1, 2).reshape(batch_size, v, cfg.num_tokens, -1)  # as the encoder's tokens
        m = mask[idx]
        kps = state_head.spatial_keypoints(maps, batch_size) if head == "spatial" else None
        loss = ((state_head(tok, maps, kps) - target[idx]).pow(2) * weight * m).sum() / m.sum()
        if pixel_weight > 0:  # the first n keypoints of every stage at the n object slots' pixels
            pm = pix_mask[idx]
            for kp in kps:
                err = (kp[:, :, :pix.shape[2]] - pix[idx]).abs() * pm
                loss = loss + pixel_weight * err.sum() / (2 * pm.sum()).clamp_min(1) / len(maps)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        losses.append(float(loss.detach()))
        if progress and (step % 50 == 0 or step == steps - 1):
            log(f"vision pretrain step {step + 1}/{steps} loss {np.mean(losses[-50:]):.4f} "
                f"({time.perf_counter() - t1:.0f} s)")
        if eval_every > 0 and len(vimgs) and ((step + 1) % eval_every == 0 or step == steps - 1):
            evaluate(step + 1)
    trunk.to(memory_format=torch.contiguous_format)
    for p in list(trunk.parameters()) + list(state_head.parameters()):
        p.requires_grad_(False)
    calibrate_batchnorm(enc, calib)
    if pixel_weight > 0:  # the fitted keypoints become the encoder's keypoint tokens
        enc = with_keypoints(enc, state_head, pix.shape[2])
    enc.eval()
    state_head.eval()
    enc.state_head = head_info
    report["final_loss"] = float(np.mean(losses[-50:])) if losses else 0.0
    if curve:
        report["curve"] = curve
    report["seconds_train"] = time.perf_counter() - t1
    if len(vimgs):
        if probe:
            report["trained"] = position_probe(encode_all(enc, probe_imgs), probe_states, encode_all(enc, vimgs), vstates)
            log(f"vision probe, trained trunk: {json.dumps(report['trained'])}")
        report["head_error"] = head_error(enc.state_head, head_predictions(enc, state_head, vimgs), vstates, vobjs)
        log(f"vision head on held-out frames: {json.dumps(report['head_error'])}")
    report["seconds"] = time.perf_counter() - t0
    report["cpu_seconds"] = time.process_time() - c0  # all threads of this process: the cost under load
    scenes = f" and {len(extra[0])} rendered scene layouts" if extra is not None else ""
    amp_note = ", bfloat16 autocast" if amp_dtype is not None else ""
    enc.note = (f"ResNet-18 trained ({steps} steps of {batch_size}{amp_note}) to regress the scene state from both views of the "
                f"demonstrations{scenes} at {image_size} px, BatchNorm recalibrated, frozen (training/vision_pretrain.py)")
    return enc, report


def with_keypoints(enc: VisionEncoder, head: StateHead, count: int) -> VisionEncoder:
    """A copy of ``enc`` whose tokens end with keypoint tokens: the first ``count`` keypoints of every
    stage a spatial ``head`` reads (its 1x1 convolutions' first ``count`` outputs and its temperatures),
    those ``pixel_weight`` fitted to the object slots (see :mod:`amplify.models.vision`)."""
    cfg = dataclasses.replace(enc.cfg, keypoints=count, keypoint_levels=list(head.levels),
                              num_tokens=enc.cfg.patch_tokens + count * len(head.levels))
    out = VisionEncoder(cfg)
    out.model.load_state_dict(enc.model.state_dict())
    with torch.no_grad():
        for mine, theirs in zip(out.keypoint_maps, head.maps):
            mine.weight.copy_(theirs.weight[:count])
            mine.bias.copy_(theirs.bias[:count])
        out.keypoint_log_temperature.copy_(head.log_temperature)
    out.requires_grad_(False)
    return out


def _amp_dtype(amp: str) -> torch.dtype | None:
    if amp == "bf16" or (amp == "auto" and native_bf16("cpu")):
        return torch.bfloat16
    if amp in ("off", "auto"):
        return None
    raise ValueError(f"amp must be off, bf16 or auto, got {amp!r}")


def head_error(state_head: dict, raw: np.ndarray, states: np.ndarray,
               objects: list[tuple[str, ...]] | None = None) -> dict[str, float]:
    """The pretraining head's mean absolute error (table units) from its outputs ``raw`` (N, K)
    (:func:`head_predictions`) on frames with known states (and their scenes' object names): effector xyz,
    objects' xyz and xy (placed from the estimated effector when the head's frame is relative), and
    objects' xyz placed from the true effector."""
    own = decode_state(state_head, raw, None, objects)
    true_ee = decode_state(state_head, raw, states[:, 0:3], objects)
    obj = np.abs(own[:, N_EE:] - states[:, N_EE:]).reshape(len(states), -1, 3)
    return {"head_ee_l1": float(np.abs(own[:, 0:3] - states[:, 0:3]).mean()),
            "head_objects_l1": float(obj.mean()),
            "head_objects_xy_l1": float(obj[..., :2].mean()),
            "head_objects_l1_true_ee": float(np.abs(true_ee[:, N_EE:] - states[:, N_EE:]).mean())}


def save_pretrained(enc: VisionEncoder, path: str | Path) -> Path:
    """:func:`training.vision.save_vision` and, when ``enc`` comes from :func:`pretrain_vision`, its head."""
    path = save_vision(enc, path, enc.note)
    h = getattr(enc, "state_head", None)
    if h is not None:
        save_state_head(h["head"], path, h["cols"], h["mean"], h["std"], h["frame"], h["names"])
    return path


def main(argv: list[str] | None = None) -> None:
    from training.data.dataset import AmplifyDataset

    p = argparse.ArgumentParser(prog="python -m training.vision_pretrain", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", required=True)
    p.add_argument("--suite", default="builtin_all")
    p.add_argument("--val-fraction", type=float, default=0.17)
    p.add_argument("--frame-stride", type=int, default=2)
    p.add_argument("--image-size", type=int, default=64)
    p.add_argument("--steps", type=int, default=400)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--scenes", type=int, default=0, help="also train on this many freshly rendered scenes")
    p.add_argument("--head", default="linear", choices=["linear", "mlp", "keypoints", "spatial"])
    p.add_argument("--keypoints", type=int, default=32)
    p.add_argument("--levels", default=",".join(map(str, SPATIAL_LEVELS)), help="--head spatial: the residual stages whose maps it reads (1, 2, 3)")
    p.add_argument("--frame", default="absolute", choices=["absolute", "relative", "steps"])
    p.add_argument("--objects", default="slot", choices=["slot", "named"])
    p.add_argument("--position-weight", type=float, default=1.0)
    p.add_argument("--pixel-weight", type=float, default=0.0,
                   help="--head spatial: also fit the first keypoints to the object slots' pixels in each view")
    p.add_argument("--pixel-effector", action="store_true",
                   help="--pixel-weight: one more fitted keypoint, the gripper's pixel in agentview")
    p.add_argument("--amp", default="off", choices=["off", "bf16", "auto"],
                   help="bfloat16 autocast for the trunk while training (auto: where the CPU has it natively)")
    p.add_argument("--no-probe", action="store_true", help="skip the ridge probes (the head's own error is still reported)")
    p.add_argument("--no-random-probe", action="store_true", help="skip the ridge probe of the random trunk")
    p.add_argument("--eval-every", type=int, default=0,
                   help="report the head's held-out error every N steps (one run's curve, in the JSON's 'curve')")
    p.add_argument("--out", required=True, help="vision.safetensors to write")
    a = p.parse_args(argv)
    from amplify.threads import apply_threads

    apply_threads()  # threads for a shared machine (amplify/threads.py), as build-default's vision step
    views = ["agentview", "eye_in_hand"]
    f = a.val_fraction
    train = AmplifyDataset(a.data, [f"[{a.suite}:traj{1 - f:g}]"], views, 16, 16, 1, frame_stride=a.frame_stride)
    val = AmplifyDataset(a.data, [f"[{a.suite}:traj-{f:g}]"], views, 16, 16, 1, frame_stride=a.frame_stride)
    extra = render_scenes(a.suite, a.scenes) if a.scenes else None
    enc, report = pretrain_vision(train, val, a.image_size, a.steps, a.batch_size, a.lr, extra=extra, head=a.head,
                                  frame=a.frame, keypoints=a.keypoints, position_weight=a.position_weight,
                                  probe=not a.no_probe, probe_random=not a.no_random_probe, objects=a.objects,
                                  eval_every=a.eval_every, amp=a.amp, levels=[int(x) for x in a.levels.split(",")],
                                  pixel_weight=a.pixel_weight, pixel_effector=a.pixel_effector)
    save_pretrained(enc, a.out)
    Path(a.out).with_suffix(".json").write_text(json.dumps(report, indent=1))
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
