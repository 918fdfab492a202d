"""The client library against a live ``amplify serve``: every endpoint in msgpack and JSON gives the
numbers of the model run in-process; typed errors; the metadata check; the async client; and the
client imported where torch cannot be."""
from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch

import world
from amplify import points_to_velocities
from clients import (
    AmplifyClient, AsyncAmplifyClient, AuthenticationError, BadRequestError, IncompatibleModelError, NotFoundError,
)

VIEWS = ["agentview", "eye_in_hand"]
TEXT = world.instructions("builtin_push")["push_the_red_cube_to_the_left_edge"]


@pytest.fixture(scope="module")
def inputs():
    rng = np.random.default_rng(0)
    return {"images": rng.integers(0, 256, (2, 2, 128, 128, 3), dtype=np.uint8),
            "proprio": rng.standard_normal((2, 9)).astype(np.float32),
            "tracks": np.clip(rng.standard_normal((3, 2, 16, 16, 2)).cumsum(2) * 0.05, -1, 1).astype(np.float32),
            "text_emb": world.get_text_embedding(TEXT)}


@pytest.mark.parametrize("fmt", ["msgpack", "json"])
def test_every_endpoint_matches_in_process_model(server, local_policy, inputs, fmt):
    imgs, tracks = inputs["images"], inputs["tracks"]
    with AmplifyClient(server.url, api_key=server.api_key, format=fmt, expect_views=VIEWS, expect_image_size=(128, 128),
                       expect_action_dim=7) as c:
        assert c.health() and c.ready()
        meta = c.metadata()
        assert meta["code_length"] == 15 and TEXT in meta["instructions"]
        mt = local_policy.motion_tokenizer
        with torch.no_grad():
            codes_ref, idx_ref = mt.tokenize(points_to_velocities(torch.from_numpy(tracks), time_dim=2))
            vel_ref, logits_ref = mt.decode(codes_ref)
        enc = c.encode(tracks, return_codes=True)
        assert enc["indices"].shape == (3, 15) and np.array_equal(enc["indices"], idx_ref.numpy())
        np.testing.assert_allclose(enc["codes"], codes_ref.numpy(), atol=1e-5)
        single = c.encode(tracks[0])  # no batch axis in, none out
        assert single["indices"].shape == (15,) and np.array_equal(single["indices"], idx_ref[0].numpy())

        dec = c.decode(enc["indices"], init_points=tracks[:, :, 0], return_logits=True)
        np.testing.assert_allclose(dec["velocities"], vel_ref.numpy(), atol=1e-5)
        np.testing.assert_allclose(dec["tracks"][:, :, 0], tracks[:, :, 0], atol=1e-6)
        np.testing.assert_allclose(dec["logits"], logits_ref.numpy(), atol=1e-4)

        images_f = torch.from_numpy(imgs).float() / 255
        with torch.no_grad():
            act_ref = local_policy.act(images_f[:1], torch.from_numpy(inputs["proprio"][:1]), text=[TEXT]).numpy()[0]
            pidx_ref, _ = local_policy.predict_codes(images_f[:1], text=[TEXT])
        act = c.act(imgs[0], inputs["proprio"][0], text=TEXT)  # a single observation
        assert act.shape == (16, 7)
        np.testing.assert_allclose(act, act_ref, atol=1e-4)
        by_emb = c.act({"agentview": imgs[0, 0], "eye_in_hand": imgs[0, 1]}, inputs["proprio"][0], text_emb=inputs["text_emb"])
        np.testing.assert_allclose(by_emb, act_ref, atol=1e-4)
        batch = c.act(imgs, inputs["proprio"], text=[TEXT, TEXT])
        assert batch.shape == (2, 16, 7)

        pc = c.predict_codes(imgs[0], TEXT, return_codes=True)
        assert np.array_equal(pc["indices"], pidx_ref[0].numpy()) and pc["codes"].shape == (15, 64)
        t1 = c.predict_traj(imgs[0], tracks[0, :, 0], TEXT, sampling="topk", seed=7)
        t2 = c.predict_traj(imgs[0], tracks[0, :, 0], TEXT, sampling="topk", seed=7)
        assert t1.shape == (2, 16, 16, 2) and np.array_equal(t1, t2)
        assert "request" in c.metrics()
        assert c.last_request_id and c.last_server_timing


def test_server_errors_become_typed_exceptions(server, inputs):
    with AmplifyClient(server.url, api_key=server.api_key) as c:
        with pytest.raises(BadRequestError) as e:
            c.encode(inputs["tracks"][:, :, :9])
        assert e.value.status == 400 and e.value.field == "tracks" and "16" in e.value.message and e.value.request_id
        with pytest.raises(NotFoundError) as e:
            c.act(inputs["images"][0], inputs["proprio"][0], text="dance on the table")
        assert e.value.field == "text"
        with pytest.raises(ValueError, match="proprio"):  # caught before sending
            c.act(inputs["images"][0], inputs["proprio"], text=TEXT)
    with pytest.raises(AuthenticationError):
        AmplifyClient(server.url, api_key="wrong")


def test_metadata_check_refuses_a_model_the_robot_cannot_feed(server):
    with pytest.raises(IncompatibleModelError, match="image_size"):
        AmplifyClient(server.url, api_key=server.api_key, expect_image_size=(224, 224))
    with pytest.raises(IncompatibleModelError, match="action_dim"):
        AmplifyClient(server.url, api_key=server.api_key, expect_action_dim=6)
    with pytest.raises(IncompatibleModelError, match="views"):
        AmplifyClient(server.url, api_key=server.api_key, expect_views=["agentview", "wrist"])


def test_async_client_many_requests_at_once(server, inputs):
    async def main():
        async with AsyncAmplifyClient(server.url, api_key=server.api_key, expect_action_dim=7) as c:
            return await asyncio.gather(*[c.act(inputs["images"][i % 2], inputs["proprio"][i % 2], text=TEXT)
                                          for i in range(8)])

    outs = asyncio.run(main())
    assert len(outs) == 8 and all(o.shape == (16, 7) for o in outs)
    np.testing.assert_allclose(outs[0], outs[2], atol=1e-4)  # same input, same answer in any batch


def test_client_works_where_torch_cannot_be_imported(server):
    script = textwrap.dedent(f"""
        import sys
        sys.modules["torch"] = None   # any 'import torch' now raises ImportError
        import numpy as np
        from clients import AmplifyClient
        c = AmplifyClient({server.url!r}, api_key={server.api_key!r}, expect_action_dim=7)
        a = c.act(np.zeros((2, 128, 128, 3), np.uint8), np.zeros(9), text={TEXT!r})
        e = c.encode(np.zeros((2, 16, 16, 2), np.float32))
        assert a.shape == (16, 7) and e["indices"].shape == (15,)
        bad = sorted(m for m in sys.modules if m.split(".")[0] in ("amplify", "service", "torch") and sys.modules[m] is not None)
        assert not bad, bad
        print("ok")
    """)
    env = {**os.environ, "PYTHONPATH": str(server.repo)}
    out = subprocess.run([sys.executable, "-c", script], cwd=server.repo, env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr
