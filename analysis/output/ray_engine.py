"""`--engine ray`: a sweep's shards computed by a pool of Ray Data actors, each loading the model once.

Ray is optional (`pip install -r requirements-scale.txt`, on every node of a cluster). Each shard is one row
of a Ray dataset; `map_batches` hands it to an actor, which runs the same `batch_rows` as the local engine
and writes the shard with the same write-then-rename, so the dataset stays resumable and exact. The output
folder must be reachable from every node (a shared file system) when the sweep runs on a cluster.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np

from analysis.corpus.engine import batch_rows
from analysis.devices import resolve_device
from analysis.model.loading import load_model
from analysis.output.reaper import watch_descendants
from analysis.output.sweep import ShardDone, ShardRunner, Sweep, spool_texts, write_shard
from analysis.settings import SweepSettings

PACKAGE = Path(__file__).resolve().parents[1]
"""The `analysis` package's folder, shipped to Ray's workers."""
INSTALL_HINT = "--engine ray needs Ray: pip install -r requirements-scale.txt (on every node of a cluster)."
_FORWARDED_ENVIRONMENT = ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_HOME", "HF_HUB_CACHE", "TOKEN_TRAILS_DEVICE")


class ShardWorker:
    """A Ray Data actor: loads the model once, then computes and writes whole shards."""

    def __init__(self, model: str, out: str, settings: dict, batch_tokens: int, device: str):
        self.lm = load_model(model)
        self.lm.move_to(resolve_device(device))
        self.out = Path(out)
        self.settings = SweepSettings.from_identity(settings)
        self.batch_tokens = batch_tokens

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        for shard, first, offset, size in zip(batch["shard"], batch["first"], batch["offset"], batch["size"],
                                              strict=True):  # fmt: skip
            texts = spool_texts(self.out, int(offset), int(size))
            ids = list(range(int(first), int(first) + len(texts)))
            write_shard(self.out, int(shard), batch_rows(self.lm, texts, ids, self.settings, self.batch_tokens))
        return {"shard": batch["shard"], "sentences": batch["size"]}


def require_ray():
    """The `ray` module, or a ValueError saying how to install it (checked before a sweep claims its folder)."""
    try:
        import ray
    except ImportError as error:
        raise ValueError(INSTALL_HINT) from error
    return ray


def ray_shard_runner(
    model: str,
    sweep: Sweep,
    *,
    batch_tokens: int,
    device: str,
    address: str | None,
    actors: int,
) -> ShardRunner:
    """A `ShardRunner` that sends the shards to `actors` Ray actors, on a local Ray started here or on the
    cluster at `address`."""
    ray = require_ray()

    def run(shards: list[int], done: ShardDone) -> None:
        environment = {name: os.environ[name] for name in _FORWARDED_ENVIRONMENT if name in os.environ}
        logging.getLogger("ray.data").setLevel(logging.WARNING)  # our progress bar says how far it is
        helpers = watch_descendants() if address is None else None  # a local Ray ends with the sweep
        try:
            ray.init(
                address=address,
                ignore_reinit_error=True,
                include_dashboard=False,
                log_to_driver=False,
                logging_level=logging.WARNING,
                runtime_env={"env_vars": environment, "py_modules": [str(PACKAGE)]},
            )
            items = [
                {"shard": shard, "first": shard * sweep.shard_size, "offset": sweep.shard_offset(shard),
                 "size": len(sweep.shard_ids(shard))}
                for shard in shards
            ]  # fmt: skip
            ray.data.DataContext.get_current().enable_progress_bars = False
            results = ray.data.from_items(items).map_batches(
                ShardWorker,
                fn_constructor_kwargs={
                    "model": model,
                    "out": str(sweep.out.resolve()),
                    "settings": sweep.settings.identity,
                    "batch_tokens": batch_tokens,
                    "device": device,
                },
                batch_size=1,
                concurrency=actors,
                num_cpus=1,
            )
            for row in results.iter_rows():
                done(int(row["shard"]), int(row["sentences"]))
        finally:
            ray.shutdown()
            if helpers is not None and helpers.stdin is not None:
                helpers.stdin.close()
                helpers.wait()

    return run
