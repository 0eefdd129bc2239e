"""Checkpoint sources (offline hub cache, local runs), step presets and tensor-by-tensor streaming."""

import json

import pytest
import torch

from lmdynamics.checkpoints import (
    PAPER_STEPS,
    PYTHIA_STEPS,
    CheckpointError,
    HubSource,
    RunSource,
    add_to_hf_cache,
    check_weight_files,
    iter_tensors,
    open_source,
    parse_steps,
    select_steps,
    tensor_shapes,
    weight_files,
)
from lmdynamics.checkpoints.synthetic import tiny_config, write_synthetic_run


@pytest.fixture(scope="module")
def model():
    from transformers import GPTNeoXForCausalLM

    torch.manual_seed(0)
    return GPTNeoXForCausalLM(tiny_config())


@pytest.fixture(scope="module")
def saved(tmp_path_factory, model):
    path = tmp_path_factory.mktemp("ckpt") / "tiny"
    model.save_pretrained(path)
    return path


def on_disk_state(model):
    """The model's tensors under the names a saved checkpoint uses (transformers 5 saves lm_head as embed_out)."""
    return {("embed_out.weight" if k == "lm_head.weight" else k): v for k, v in model.state_dict().items()}


# ----------------------------------------------------------------------------------------------- steps
def test_step_presets_follow_the_pythia_schedule():
    assert len(PYTHIA_STEPS) == 154 and len(set(PYTHIA_STEPS)) == 154
    assert PYTHIA_STEPS[:12] == (0, 1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1000) and PYTHIA_STEPS[-1] == 143000
    assert all(b - a == 1000 for a, b in zip(PYTHIA_STEPS[11:], PYTHIA_STEPS[12:]))
    assert PAPER_STEPS[:12] == PYTHIA_STEPS[:12]
    assert PAPER_STEPS[12:] == tuple(3000 + 10000 * i for i in range(15)) and PAPER_STEPS[-1] == 143000
    assert set(PAPER_STEPS) <= set(PYTHIA_STEPS)
    assert select_steps("every-10k", None)[-2:] == [140000, 143000]


def test_step_selection_grammar():
    assert parse_steps("0, 1000,step3000") == [0, 1000, 3000]
    assert parse_steps("paper") == "paper" and parse_steps(None) == "all" and parse_steps(7) == [7]
    with pytest.raises(ValueError, match="preset"):
        parse_steps("papr")
    have = [0, 1, 2, 4, 100, 1000, 3000]
    assert select_steps("all", have) == have
    assert select_steps("paper", have) == [0, 1, 2, 4, 1000, 3000]
    assert select_steps([5, 1], have) == [1, 5]  # an unsaved step is kept; it fails, reported, when analysed
    assert select_steps("all", None) == list(PYTHIA_STEPS)


# ------------------------------------------------------------------------------------------- streaming
def test_streams_safetensors_exactly_without_building_the_model(saved, model, monkeypatch):
    from transformers import GPTNeoXForCausalLM

    monkeypatch.setattr(GPTNeoXForCausalLM, "__init__", lambda *a, **k: (_ for _ in ()).throw(AssertionError("built")))
    state = on_disk_state(model)
    streamed = dict(iter_tensors(saved))
    assert set(streamed) == set(state)
    assert all(torch.equal(streamed[k], state[k]) for k in state)
    assert tensor_shapes(saved) == {k: tuple(v.shape) for k, v in state.items()}
    wanted = {"embed_out.weight"}
    assert [k for k, _ in iter_tensors(saved, names=wanted)] == ["embed_out.weight"]


def test_streaming_holds_one_tensor_at_a_time(saved, monkeypatch):
    """While the next tensor is being read, every tensor the consumer dropped is already gone (no mmap of
    the file, no reference kept by the suspended generator)."""
    import weakref

    from lmdynamics.checkpoints import streaming

    refs, real_read, reads = [], streaming._read_tensor, []

    def checked_read(*args):
        assert [n for n, r in refs if r() is not None] == []
        reads.append(args[2])
        return real_read(*args)

    monkeypatch.setattr(streaming, "_read_tensor", checked_read)
    for name, tensor in iter_tensors(saved):
        refs.append((name, weakref.ref(tensor)))
        del tensor
    assert len(refs) == len(reads) == len(tensor_shapes(saved))


def test_streams_bin_and_sharded_checkpoints(tmp_path, model, saved):
    from safetensors.torch import save_file

    state = on_disk_state(model)
    names = sorted(state)
    # a single .bin
    (tmp_path / "bin").mkdir()
    torch.save(state, tmp_path / "bin" / "pytorch_model.bin")
    got = dict(iter_tensors(tmp_path / "bin"))
    assert set(got) == set(state) and all(torch.equal(got[k], state[k]) for k in state)
    # sharded safetensors and sharded .bin, with their index files
    for kind, ext, index in (("st", "safetensors", "model.safetensors.index.json"),
                             ("pt", "bin", "pytorch_model.bin.index.json")):
        d = tmp_path / kind
        d.mkdir()
        halves = {f"part-1.{ext}": names[::2], f"part-2.{ext}": names[1::2]}
        for fname, keys in halves.items():
            part = {k: state[k].contiguous() for k in keys}
            save_file(part, d / fname) if ext == "safetensors" else torch.save(part, d / fname)
        (d / index).write_text(json.dumps({"weight_map": {k: f for f, ks in halves.items() for k in ks}}))
        assert [p.name for p in weight_files(d)] == list(halves)
        got = dict(iter_tensors(d))
        assert set(got) == set(state) and all(torch.equal(got[k], state[k]) for k in state)
    # other dtypes round-trip exactly through the plain-read safetensors path
    mixed = {"a": torch.randn(3, 4).to(torch.bfloat16), "b": torch.randn(5).half(), "c": torch.arange(6).view(2, 3),
             "d": torch.zeros(0, 4)}
    (tmp_path / "mixed").mkdir()
    save_file(mixed, tmp_path / "mixed" / "model.safetensors")
    got = dict(iter_tensors(tmp_path / "mixed"))
    assert all(got[k].dtype == v.dtype and torch.equal(got[k], v) for k, v in mixed.items())
    (tmp_path / "st" / "part-2.safetensors").unlink()
    with pytest.raises(CheckpointError, match="lacks shard"):
        weight_files(tmp_path / "st")
    # safetensors is preferred when both formats are present
    (tmp_path / "both").mkdir()
    torch.save(state, tmp_path / "both" / "pytorch_model.bin")
    (tmp_path / "both" / "model.safetensors").write_bytes((saved / "model.safetensors").read_bytes())
    assert [p.name for p in weight_files(tmp_path / "both")] == ["model.safetensors"]


def test_truncated_or_corrupt_files_raise_one_clear_error(tmp_path, saved):
    data = (saved / "model.safetensors").read_bytes()
    for name, payload in (("trunc", data[: len(data) // 2]), ("garbage", b"\x07" * 64)):
        d = tmp_path / name
        d.mkdir()
        (d / "model.safetensors").write_bytes(payload)
        with pytest.raises(CheckpointError, match="truncated or corrupt") as err:
            check_weight_files(weight_files(d))
        assert "\n" not in str(err.value)
        with pytest.raises(CheckpointError):
            list(iter_tensors(d))
    d = tmp_path / "badbin"
    d.mkdir()
    (d / "pytorch_model.bin").write_bytes(b"not a zip")
    with pytest.raises(CheckpointError, match="corrupt PyTorch"):
        check_weight_files(weight_files(d))
    (tmp_path / "empty").mkdir()
    with pytest.raises(CheckpointError, match="holds no weights"):
        weight_files(tmp_path / "empty")


# ------------------------------------------------------------------------------------------- sources
def test_hub_source_reads_an_offline_cache(tmp_path, saved, monkeypatch):
    import huggingface_hub.constants as hc

    assert hc.HF_HUB_OFFLINE  # conftest sets HF_HUB_OFFLINE=1: nothing here may touch the network
    cache = tmp_path / "hub"
    (saved / "tokenizer.json").write_text("{}")
    for step in (0, 1000):
        add_to_hf_cache(saved, "Org/tiny-neox", f"step{step}", cache)
    (saved / "tokenizer.json").unlink()
    src = HubSource("Org/tiny-neox", cache_dir=cache)
    ckpt = src.checkpoint(1000)
    assert ckpt.step == 1000 and ckpt.tokens == 1000 * 2_097_152 and ckpt.num_heads == 4
    assert ckpt.run == "Org/tiny-neox" and ckpt.model == "tiny-neox"
    assert "snapshots" in str(ckpt.path) and ckpt.tokenizer_file is not None
    assert src.tokenizer_file(0) is not None
    streamed = dict(iter_tensors(ckpt.weight_files()))
    assert set(streamed) == set(dict(iter_tensors(saved)))
    with pytest.raises(CheckpointError, match="step7") as err:
        src.checkpoint(7)
    assert "\n" not in str(err.value)
    # the default cache location (HF_HUB_CACHE) is what open_source uses
    monkeypatch.setattr(hc, "HF_HUB_CACHE", str(cache))
    assert open_source("Org/tiny-neox").checkpoint(0).step == 0
    with pytest.raises(ValueError, match="not a hub repo id"):
        open_source("not a repo")


def test_run_source_lists_saved_steps(tmp_path):
    run = write_synthetic_run(tmp_path / "run", [0, 2, 10], run="r1", model_name="tiny", tokens_per_step=512)
    src = open_source(run)
    assert isinstance(src, RunSource) and src.run == "r1" and src.model == "tiny"
    assert src.available_steps() == [0, 2, 10] and src.steps("all") == [0, 2, 10]
    ckpt = src.checkpoint(10)
    assert ckpt.tokens == 10 * 512 and (ckpt.path / "config.json").is_file()
    with pytest.raises(CheckpointError, match="no checkpoint for step 3") as err:
        src.checkpoint(3)
    assert "steps are 0, 2, 10" in str(err.value)  # the message says which steps there are
    empty = tmp_path / "empty"
    (empty / "checkpoints").mkdir(parents=True)
    (empty / "run.json").write_text(json.dumps({"run": "e", "model": "m", "tokens_per_step": 1}))
    with pytest.raises(CheckpointError, match="has no checkpoints"):
        RunSource(empty).available_steps()
    (tmp_path / "norun").mkdir()
    with pytest.raises(CheckpointError, match="no run.json"):
        RunSource(tmp_path / "norun")
    # interpolated weights: the first and last checkpoints differ, the middle lies between them
    a, b, c = (dict(iter_tensors(src.checkpoint(s).path)) for s in (0, 2, 10))
    k = "gpt_neox.layers.0.mlp.dense_h_to_4h.weight"
    assert torch.allclose(b[k], 0.8 * a[k] + 0.2 * c[k], atol=1e-6)
