"""Test-only callback that records what each optimizer step trained on, loaded through the real CLI."""

import json

import lightning as L


class MicroBatchRecorder(L.Callback):
    """Appends every micro-batch's token ids, with the update it belongs to and the rank, to ``path.rank<R>``."""

    def __init__(self, path: str):
        self.path = path

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        with open(f"{self.path}.rank{trainer.global_rank}", "a") as fh:
            fh.write(json.dumps({"update": trainer.global_step + 1, "rank": trainer.global_rank,
                                 "ids": batch.tolist()}) + "\n")


def read_micro_batches(path) -> dict[int, list[list[list[int]]]]:
    """update -> the micro-batches (each a list of blocks) of every rank, in rank order."""
    from pathlib import Path

    rows = []
    for f in sorted(Path(path).parent.glob(Path(path).name + ".rank*")):
        rows += [json.loads(line) for line in f.read_text().splitlines()]
    out: dict[int, list] = {}
    for row in sorted(rows, key=lambda r: (r["update"], r["rank"])):
        out.setdefault(row["update"], []).append(row["ids"])
    return out
