"""Data-parallel triplet mining: two gloo ranks of 32 images each mine batch-hard triplets over the
whole batch of 64, as one process does, and DDP's averaged gradient is the one-process gradient
(``train.batch_losses``, the trainer's own loss step)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import torch
from torch import nn

from trainables.reid.losses import batch_hard_triplet
from trainables.reid.train import batch_losses

REPO = Path(__file__).resolve().parents[2]
LOSS = {"xent_weight": 1.0, "htri_weight": 1.0, "margin": 0.3, "label_smoothing": 0.0}

TWO_RANKS = """
import sys, torch, torch.distributed as dist, torch.multiprocessing as mp
from torch import nn
sys.path.insert(0, sys.argv[2])
from test_reid_ddp_mining import LOSS, batch, model
from trainables.reid.losses import batch_hard_triplet
from trainables.reid.train import batch_losses

def rank_main(rank, out, init):
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=init, rank=rank, world_size=2)
    x, labels = batch()
    mine = slice(32 * rank, 32 * (rank + 1))  # samplers.rank_batches: rank r's contiguous share
    net = nn.parallel.DistributedDataParallel(model())
    logits, embeddings = net(x[mine])
    loss, xent, htri = batch_losses(logits, embeddings, labels[mine], LOSS, 2)
    loss.backward()
    local_only = batch_hard_triplet(embeddings.detach(), labels[mine], LOSS["margin"])
    torch.save({"htri": htri.detach(), "local_only": local_only, "xent": xent.detach(),
                "grads": [p.grad for p in net.module.parameters()]}, f"{out}/rank{rank}.pt")
    dist.destroy_process_group()

if __name__ == "__main__":
    out = sys.argv[1]
    mp.start_processes(rank_main, args=(out, f"file://{out}/rendezvous"), nprocs=2, start_method="fork")
"""


def batch() -> tuple[torch.Tensor, torch.Tensor]:
    """A fixed batch of 64: 16 identities × 4 images in runs (the identity sampler's layout)."""
    generator = torch.Generator().manual_seed(7)
    return torch.randn(64, 10, generator=generator), torch.arange(16).repeat_interleave(4)


class Tiny(nn.Module):
    """(logits, embedding) in training mode, as a ReIDModel; no BatchNorm (its statistics are
    per rank unless sync_bn, which is not what this test compares)."""

    def __init__(self):
        super().__init__()
        self.embed = nn.Linear(10, 8)
        self.classifier = nn.Linear(8, 16)

    def forward(self, x):
        v = self.embed(x)
        return self.classifier(v), v


def model() -> Tiny:
    torch.manual_seed(0)
    return Tiny()


def test_two_gloo_ranks_mine_the_whole_batch_and_get_the_one_process_gradient(tmp_path):
    script = tmp_path / "two_ranks.py"
    script.write_text(textwrap.dedent(TWO_RANKS))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run([sys.executable, str(script), str(tmp_path), str(Path(__file__).parent)],
                          env=env, capture_output=True, text=True, timeout=300)  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=False) for r in (0, 1)]

    x, labels = batch()
    one = model()
    logits, embeddings = one(x)
    loss, xent, htri = batch_losses(logits, embeddings, labels, LOSS, 1)
    loss.backward()
    direct = batch_hard_triplet(embeddings.detach(), labels, LOSS["margin"])  # mined over all 64

    for r in ranks:
        torch.testing.assert_close(r["htri"], htri.detach())
        torch.testing.assert_close(r["htri"], direct)
        for got, expected in zip(r["grads"], one.parameters()):
            torch.testing.assert_close(got, expected.grad)  # DDP's average = one process's gradient
    torch.testing.assert_close((ranks[0]["xent"] + ranks[1]["xent"]) / 2, xent.detach())
    # Mining each rank's 32 alone (the earlier behaviour) gives another loss on this batch: the
    # comparison above tells the two apart.
    per_rank = (ranks[0]["local_only"] + ranks[1]["local_only"]) / 2
    assert abs(per_rank.item() - direct.item()) > 1e-3, (per_rank, direct)
