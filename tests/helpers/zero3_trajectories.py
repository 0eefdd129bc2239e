"""One rank of a ZeRO-3 job on CPU (DeepSpeed engine, gloo): the live trajectory recorder measures a sharded
model. Every rank calls ``measure`` (as the callback base does), rank 0 alone writes, and its stored losses
equal ``token_losses`` of the same weights unsharded. Arguments: RANK WORLD_SIZE PORT RUN_DIR."""

import os
import sys

rank, world, port, run_dir = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4]
os.environ.setdefault("DS_ACCELERATOR", "cpu")
os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=port, RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(world))

from types import SimpleNamespace  # noqa: E402

import deepspeed  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from transformers import GPTNeoXConfig, GPTNeoXForCausalLM  # noqa: E402

from lmdynamics.callbacks.trajectories import TrajectoryRecorder  # noqa: E402
from lmdynamics.data.synthetic import identity_tokenizer  # noqa: E402
from lmdynamics.trajectories.offline import non_embedding_parameters  # noqa: E402
from lmdynamics.trajectories.record import corpus_perplexity, token_losses  # noqa: E402
from lmdynamics.trajectories.storage import TrajectoryStore  # noqa: E402

torch.set_num_threads(1)
deepspeed.init_distributed(dist_backend="gloo")
cfg = GPTNeoXConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=128, vocab_size=128,
                    max_position_embeddings=64)
torch.manual_seed(0)
ref = GPTNeoXForCausalLM(cfg).eval()
ds_config = {"train_micro_batch_size_per_gpu": 2, "zero_optimization": {"stage": 3, "stage3_param_persistence_threshold": 0},
             "optimizer": {"type": "AdamW", "params": {"lr": 1e-3, "torch_adam": True}}}
with deepspeed.zero.Init(config_dict_or_path=ds_config):
    sharded = GPTNeoXForCausalLM(cfg)
ref_params = dict(ref.named_parameters())
for name, p in sharded.named_parameters():
    with deepspeed.zero.GatheredParameters([p], modifier_rank=0):
        if rank == 0:
            p.data.copy_(ref_params[name].data)
engine, *_ = deepspeed.initialize(model=sharded, config=ds_config, model_parameters=sharded.parameters())
model = engine.module
assert all(p.numel() == 0 for p in model.parameters()), "parameters are not partitioned"

blocks = torch.randint(1, 128, (5, 17), generator=torch.Generator().manual_seed(3))
blocks[1, 6] = 0  # an end-of-text inside a block
datamodule = SimpleNamespace(val_blocks_tensor=blocks, eos_id=0, tokenizer=identity_tokenizer(128))
trainer = SimpleNamespace(is_global_zero=rank == 0, global_rank=rank, world_size=world, default_root_dir=run_dir,
                          datamodule=datamodule, strategy=SimpleNamespace(zero_stage_3=True))
module = SimpleNamespace(model=model, tokens_per_step=64)
recorder = TrajectoryRecorder(num_blocks=3, batch_size=2, enabled=True)
rows = {step: recorder.measure(trainer, module, step) for step in (0, 4)}
assert all(p.numel() == 0 for p in model.parameters()), "parameters stayed gathered"
if rank != 0:
    assert rows == {0: None, 4: None}
    print(f"rank {rank} ok")
    sys.exit(0)
want = token_losses(ref, blocks, 2)
store = TrajectoryStore(recorder.store.dir).read()
assert list(store.steps) == [0, 4] and list(store.tokens) == [0, 256]
for k in range(2):
    np.testing.assert_allclose(store.losses[:, k], want[:3].reshape(-1).numpy(), rtol=2.0 ** -10, atol=1e-5)
    assert rows[(0, 4)[k]][0]["value"] == store.val_ppl[k]
np.testing.assert_allclose(store.val_ppl, corpus_perplexity(want), rtol=1e-5)
assert store.meta["parameters"] == non_embedding_parameters(ref)
print("rank 0 ok: losses of", store.losses.shape, "equal the unsharded model's")
