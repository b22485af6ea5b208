"""A base model with another task model on the same codec, for evaluating a task-only fine-tune.

    .venv/bin/python scripts/swap_task_model.py runs/task640/model.pt --out runs/models640 --name det-tiny640

``runs/task640/model.pt`` comes from ``layercast train base --freeze-codec --init <base>``: the
task model trained on the frozen codec's output. The script writes ``<name>.pt``: the shipped base
(``--base``, default det-tiny) with that task model, its codec weights untouched, so its bitstreams
are the shipped ones but for the model id in their header. Beside it go the base's P-frame and
enhancement models, unchanged but for the base model id they name, so ``load_codec`` links them.
Point ``LAYERCAST_MODELS`` at ``--out`` and evaluate ``<name>`` (docs/video.md).
"""

from __future__ import annotations

import argparse
from dataclasses import replace
from pathlib import Path

from layercast.shared.codec.checkpoint import load_checkpoint
from layercast.shared.codec.registry import default_registry


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("trained", type=Path, help="model.pt of a `layercast train base --freeze-codec` run")
    ap.add_argument("--base", default="det-tiny", help="registry name of the base it was trained on")
    ap.add_argument("--out", type=Path, required=True, help="models folder to write")
    ap.add_argument("--name", required=True, help="name of the new base model")
    args = ap.parse_args()

    reg = default_registry()
    base = reg.load(args.base)
    trained = load_checkpoint(args.trained)
    for k, v in base.state_dict.items():  # the codec must be the one the base ships
        if k in trained.state_dict and v.is_floating_point() and not k.endswith("scale_table"):
            if (trained.state_dict[k].float() - v.float()).abs().max() > 1e-3:
                raise SystemExit(
                    f"{args.trained}: codec weight {k} differs from {args.base}'s (not a --freeze-codec run?)"
                )
    if set(trained.task["state_dict"]) != set(base.task["state_dict"]):
        raise SystemExit(f"{args.trained}: not a task model of {args.base}'s kind")

    new = replace(base, task={**base.task, "state_dict": trained.task["state_dict"]}, path=None)
    new.training = {**base.training, "task_fine_tune": trained.training}
    new.to_half()
    new_id = new.save(args.out / f"{args.name}.pt", compact=True)
    print(
        f"{args.out / args.name}.pt: base {base.model_id} with the task model of {args.trained} -> {new_id}"
    )
    for kind, entry in (
        ("temporal", reg.temporal_for(base.model_id)),
        ("enhancement", reg.enhancement_for(base.model_id)),
    ):
        if entry is None:
            continue
        ckpt = reg.load(entry.name)
        linked = replace(ckpt, path=None, **{kind: {**getattr(ckpt, kind), "base_model_id": new_id}})
        path = args.out / f"{args.name}-{kind}.pt"
        linked.save(path, compact=True)
        print(f"{path}: {kind} model {ckpt.model_id}, linked to {new_id}")


if __name__ == "__main__":
    main()
