"""Run in its own process: ZeRO-3 sharded parameters (DeepSpeed engine on CPU, gloo) are gathered one at a
time by the callbacks' helpers, and probe capture through the sharded model matches the unsharded model."""

import os
import sys

os.environ.setdefault("DS_ACCELERATOR", "cpu")
os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=sys.argv[1] if len(sys.argv) > 1 else "29512",
                  RANK="0", LOCAL_RANK="0", WORLD_SIZE="1")

import deepspeed  # noqa: E402
import torch  # noqa: E402
from transformers import GPTNeoXConfig, GPTNeoXForCausalLM  # noqa: E402

from lmdynamics.distributed import gathered_weight, head_parameter_name, iter_full_parameters  # noqa: E402
from lmdynamics.measure import weight_metric_rows  # noqa: E402
from lmdynamics.probes import ProbeSet, capture  # noqa: E402
from lmdynamics.training.module import parameter_groups  # noqa: E402

deepspeed.init_distributed(dist_backend="gloo")
cfg = GPTNeoXConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=128, vocab_size=128)
torch.manual_seed(0)
ref = GPTNeoXForCausalLM(cfg).eval()
ds_config = {"train_micro_batch_size_per_gpu": 2, "zero_optimization": {"stage": 3},
             "optimizer": {"type": "AdamW", "params": {"lr": 1e-3, "torch_adam": True}}}
with deepspeed.zero.Init(config_dict_or_path=ds_config):
    sharded = GPTNeoXForCausalLM(cfg)
ref_params = dict(ref.named_parameters())


def group_names(model, head_ids=frozenset()):
    return {key: [name for name, _ in named] for key, named in parameter_groups(model, set(head_ids)).items()}


# the optimizer's weight-decay groups of the sharded model are those of the unsharded one (matrices decay), with
# and without a separate head group
assert group_names(sharded) == group_names(ref) and group_names(ref)[(False, True)], group_names(sharded)
head_ids = lambda m: {id(p) for p in m.get_output_embeddings().parameters()}  # noqa: E731
assert group_names(sharded, head_ids(sharded)) == group_names(ref, head_ids(ref))
for name, p in sharded.named_parameters():
    assert p.numel() == 0 and hasattr(p, "ds_id"), f"{name} is not partitioned"
    with deepspeed.zero.GatheredParameters([p], modifier_rank=0):
        p.data.copy_(ref_params[name].data)
engine, *_ = deepspeed.initialize(model=sharded, config=ds_config, model_parameters=sharded.parameters())
model = engine.module

gathered = dict(iter_full_parameters(model))
assert set(gathered) == set(ref_params)
for name, t in gathered.items():
    assert torch.equal(t, ref_params[name].detach()), name
for name, p in model.named_parameters():
    assert p.numel() == 0, f"{name} stayed gathered"
head = head_parameter_name(model)
assert torch.equal(gathered_weight(model, head), ref_params[head].detach())
assert weight_metric_rows(iter_full_parameters(model), 4) == weight_metric_rows(ref.named_parameters(), 4)

probe = ProbeSet.from_sequences(torch.randint(0, 128, (6, 10)), num_sequences=6, positions=3, seed=1)
live, offline = capture(model, probe, batch_size=4), capture(ref, probe, batch_size=4)
assert set(live) == set(offline)
for key in live:
    assert torch.allclose(live[key], offline[key], atol=1e-5, rtol=1e-5), key
print("zero3 ok", len(gathered), "parameters,", len(live), "activation keys")
