"""The training dataset: one sample per (demo, start step) of the selected demos.

A sample (all torch tensors):
    index    ()                 position in this dataset (keys the image-token cache)
    task     ()                 index into ``dataset.tasks``
    tracks   (v, H, n, 2)       float32, (row, col) in [-1, 1], H = track_pred_horizon
    actions  (A, 7)             float32, steps t..t+A-1, padded by repeating the last action
    proprio  (9,)               joints (7) + gripper (2) at step t
    text_emb (E,)               the task's text embedding
    images   (v, S, S, 3)       uint8 upright, resized to S (only with ``load_images``)

Tracks, actions and proprioception are read into memory once; images are read on demand.
"""
from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path

import h5py
import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from training.data.libero import demo_keys, read_frame, read_instruction, read_low_dim, task_files, task_name
from training.data.selection import Selection, parse_selection
from training.data.text import read_text_embedding
from training.data.tracks import find_track_method, preprocess_tracks, read_tracks, track_dir


@dataclass
class DataConfig:
    """Where the data is and which parts of it to use."""

    root: str = "data"
    train: list[str] = field(default_factory=lambda: ["[builtin_all:traj0.9]"])
    val: list[str] = field(default_factory=lambda: ["[builtin_all:traj-0.1]"])
    track_method: str = ""  # folder of the track files; '' finds the only one
    interp: str = "linear"  # linear | spline, when the model's horizon differs from the stored one
    frame_stride: int = 1  # use every k-th start step
    num_workers: int = 0
    cache_tokens: bool = True  # precompute the frozen vision encoder's tokens once per dataset


@dataclass
class TaskInfo:
    name: str
    suite: str
    instruction: str
    text_emb: np.ndarray  # (E,)


@dataclass
class DemoRecord:
    task: int
    file: str
    key: str
    tracks: np.ndarray  # (T, v, H, n, 2)
    actions: np.ndarray  # (T, 7)
    proprio: np.ndarray  # (T, 9)


class AmplifyDataset(Dataset):
    """Samples of the selected demos; see the module docstring."""

    def __init__(
        self, root: str | Path, selection: str | list[str] | list[Selection], views: list[str],
        num_tracks: int, track_horizon: int, action_horizon: int, img_size: list[int] = (128, 128),
        image_size: int | None = None, interp: str = "linear", track_method: str = "",
        frame_stride: int = 1, load_images: bool = False, require_actions: bool = False,
    ):
        self.root = Path(root)
        self.views = list(views)
        self.img_size = list(img_size)
        self.image_size = image_size or int(self.img_size[0])
        self.action_horizon = action_horizon
        self.load_images = load_images
        sels = selection if selection and isinstance(selection[0], Selection) else parse_selection(selection)
        if require_actions and not any(s.kind == "action" for s in sels):
            sels = [Selection(s.suite, "action", s.fraction) for s in sels]
        self.tasks: list[TaskInfo] = []
        self.demos: list[DemoRecord] = []
        task_index: dict[tuple[str, str], int] = {}
        for sel in sels:
            method = track_method or find_track_method(self.root, sel.suite)
            for demo_file in task_files(self.root, sel.suite):
                name = task_name(demo_file)
                with h5py.File(demo_file, "r") as f:
                    keys = demo_keys(f)
                    if (sel.suite, name) not in task_index:
                        emb, instr = read_text_embedding(self.root, sel.suite, name)
                        task_index[(sel.suite, name)] = len(self.tasks)
                        self.tasks.append(TaskInfo(name, sel.suite, instr or read_instruction(f, name), emb))
                    ti = task_index[(sel.suite, name)]
                    for i in sel.demo_indices(len(keys)):
                        key = keys[i]
                        low = read_low_dim(f["data"][key])
                        raw = read_tracks(track_dir(self.root, sel.suite, method, name) / f"{key}.hdf5", self.views)
                        tracks = preprocess_tracks(raw, self.img_size, num_tracks, track_horizon, interp)
                        t = min(len(tracks), len(low["actions"]))
                        self.demos.append(DemoRecord(ti, str(demo_file), key, tracks[:t], low["actions"][:t], low["proprio"][:t]))
        self.samples = np.array([(d, t) for d, rec in enumerate(self.demos)
                                 for t in range(0, len(rec.actions), frame_stride)], dtype=np.int64).reshape(-1, 2)
        if len(self.samples) == 0:
            raise ValueError(f"dataset selection {selection!r} under {self.root} holds no samples")
        self._files: dict[str, h5py.File] = {}
        self._pid = os.getpid()

    # -- bookkeeping ---------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.samples)

    def signature(self) -> str:
        """A hash of what this dataset holds (files, demos, steps, views, image size)."""
        h = hashlib.sha256()
        for rec in self.demos:
            st = os.stat(rec.file)
            h.update(f"{rec.file}|{rec.key}|{len(rec.actions)}|{st.st_size}|{st.st_mtime_ns};".encode())
        h.update(f"{self.views}|{self.image_size}|{self.samples.tobytes().hex()[:64]}|{len(self.samples)}".encode())
        return h.hexdigest()[:16]

    def instruction_table(self) -> tuple[list[str], np.ndarray]:
        """The tasks' instructions (n,) and text embeddings (n, E), for ``AMPLIFY.set_instructions``."""
        return [t.instruction for t in self.tasks], np.stack([t.text_emb for t in self.tasks])

    # -- reading -------------------------------------------------------------------------------
    def _file(self, path: str) -> h5py.File:
        if os.getpid() != self._pid:  # in a DataLoader worker: never share handles across fork
            self._files, self._pid = {}, os.getpid()
        if path not in self._files:
            self._files[path] = h5py.File(path, "r")
        return self._files[path]

    def images(self, index: int) -> np.ndarray:
        """Upright images of sample ``index``: (v, S, S, 3) uint8."""
        d, t = self.samples[index]
        rec = self.demos[d]
        img = read_frame(self._file(rec.file)["data"][rec.key], self.views, int(t))
        if img.shape[1] != self.image_size or img.shape[2] != self.image_size:
            x = torch.from_numpy(np.ascontiguousarray(img)).permute(0, 3, 1, 2).float()
            x = F.interpolate(x, size=(self.image_size, self.image_size), mode="bilinear", align_corners=False, antialias=True)
            img = x.round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).numpy()
        return np.ascontiguousarray(img)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        d, t = (int(x) for x in self.samples[index])
        rec = self.demos[d]
        idx = np.minimum(np.arange(t, t + self.action_horizon), len(rec.actions) - 1)  # pad: repeat last
        item = {
            "index": torch.tensor(index),
            "task": torch.tensor(rec.task),
            "tracks": torch.from_numpy(rec.tracks[t]),
            "actions": torch.from_numpy(rec.actions[idx]),
            "proprio": torch.from_numpy(rec.proprio[t]),
            "text_emb": torch.from_numpy(self.tasks[rec.task].text_emb),
        }
        if self.load_images:
            item["images"] = torch.from_numpy(self.images(index))
        return item

    def __getstate__(self):
        state = dict(self.__dict__)
        state["_files"] = {}
        return state
