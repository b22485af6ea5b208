"""`layercast train ship`'s recipe: a well-formed chain of stages per task that ends in the shipped
models, the clean-image reference never less trained than the base's task model, and a record of
every stage in docs/results/training_recipe.json."""

from __future__ import annotations

import json
import re
from dataclasses import fields, replace
from pathlib import Path

import pytest

from layercast.train.experiments import experiment_runs
from layercast.train.recipes import ship_stages

RECORD = Path(__file__).resolve().parents[2] / "docs" / "results" / "training_recipe.json"
TASKS = {"detection": "det-tiny", "depth": "depth-tiny"}


def _export(cfg):
    return cfg.out / ("task.pt" if cfg.kind == "task" else "model.pt")


def _parent(cfg):
    """The file a stage starts from: its weights (init / task_init) or, for an enhancement layer,
    its base."""
    if cfg.kind == "enhancement":
        return cfg.base
    return cfg.init if cfg.kind == "base" and cfg.init else cfg.task_init


@pytest.fixture(params=["stills", "footage"])
def recipe(request, tmp_path):
    """The recipe without and with the camera-footage stages."""
    data, large = tmp_path / "synth", tmp_path / "synth10k"
    footage = tmp_path / "footage" if request.param == "footage" else None
    stages = ship_stages(data, tmp_path / "ship", data_large=large, data_footage=footage)
    return stages, data, large


def _by_task(stages, task):
    return [(name, cfg, zoo) for name, cfg, zoo in stages if name.startswith(f"{task}-")]


def test_each_stage_starts_from_an_earlier_stage_of_its_task(recipe):
    stages, _, _ = recipe
    names = [name for name, _, _ in stages]
    assert len(set(names)) == len(names)
    assert len({cfg.out for _, cfg, _ in stages}) == len(stages)  # no stage overwrites another
    for task in TASKS:
        exported: dict[Path, object] = {}
        for name, cfg, _ in _by_task(stages, task):
            assert cfg.out.name == name
            assert cfg.kind == "enhancement" or cfg.task == task  # a layer takes its base's task
            parent = _parent(cfg)
            if name == f"{task}-task":
                assert parent is None  # the clean-image task model starts from scratch
            else:
                assert parent in exported, f"{name} starts from {parent}, not an earlier stage's output"
            # a base's own task model starts from the clean-image task model, never the reverse
            if cfg.kind == "base" and not cfg.init:
                assert exported[cfg.task_init].kind == "task"
            exported[_export(cfg)] = cfg


def test_the_shipped_models_are_the_ends_of_their_chains(recipe):
    stages, _, _ = recipe
    for task, model in TASKS.items():
        mine = _by_task(stages, task)
        parents = {_parent(cfg) for _, cfg, _ in mine}
        shipped = {zoo: cfg for _, cfg, zoo in mine if zoo}
        assert sorted(shipped) == sorted([model, f"{model}-rec", f"tasks/{task}"])
        base, rec, ref = shipped[model], shipped[f"{model}-rec"], shipped[f"tasks/{task}"]
        assert (base.kind, rec.kind, ref.kind) == ("base", "enhancement", "task")
        # the enhancement layer is trained on the shipped base, and nothing builds on either
        assert rec.base == _export(base)
        assert _export(rec) not in parents
        assert [_export(c) for _, c, _ in mine if c.kind == "base" and _parent(c) == _export(base)] == []
        # the reference is the last stage of the clean-image chain
        assert _export(ref) not in {_parent(c) for _, c, _ in mine if c.kind == "task"}


def test_the_first_base_and_the_layer_are_the_experiments_proposal_runs(recipe, tmp_path):
    """The recipe's first base is the sweep's β = 0.01, λ_b = 1 run and its layer the sweep's
    λ_e = 0.01 conditional reconstruction layer, each trained longer."""
    stages, data, _ = recipe
    by_name = {name: cfg for name, cfg, _ in stages}
    x = tmp_path / "x"
    for task in TASKS:
        base, rec = by_name[f"{task}-base"], by_name[f"{task}-rec"]
        runs = experiment_runs(task, data, tmp_path / "exp", x, base.steps, "reconstruction", rec.steps)
        [proposal] = [r for r in runs if r.kind == "base" and r.beta == 0.01 and r.lmbda == 1.0]
        [layer] = [
            r
            for r in runs
            if r.kind == "enhancement"
            and r.lmbda == 0.01
            and not r.standalone
            and r.base == _export(proposal)
        ]
        assert replace(base, out=x, task_init=x) == replace(proposal, out=x, task_init=x)
        assert replace(rec, out=x, base=x) == replace(layer, out=x, base=x)


def test_a_continuation_changes_only_its_stage_settings(recipe, tmp_path):
    """A stage that continues a base or task model keeps its parent's configuration but for the
    settings its stage is about; a lower-rate stage scales λ_b and β by the same factor."""
    stages, _, _ = recipe
    exported = {_export(cfg): cfg for _, cfg, _ in stages}
    may_change = {"out", "steps", "init", "task_init", "lr", "crop", "data", "freeze_codec", "lmbda", "beta"}
    for name, cfg, _ in stages:
        parent = exported.get(_parent(cfg))
        if parent is None or parent.kind != cfg.kind:
            continue
        changed = {f.name for f in fields(cfg) if getattr(cfg, f.name) != getattr(parent, f.name)}
        assert changed <= may_change, f"{name} changes {changed - may_change}"
        if {"lmbda", "beta"} & changed and parent.beta and not cfg.freeze_codec:
            assert cfg.lmbda < parent.lmbda, name
            if "lmbda" in changed and "beta" in changed:
                assert cfg.beta / cfg.lmbda == pytest.approx(parent.beta / parent.lmbda), name


def test_only_the_large_stages_train_on_the_larger_set(recipe):
    stages, data, large = recipe
    is_large = re.compile(r"-large\d*$").search
    stills = [(name, cfg) for name, cfg, _ in stages if not name.endswith("-footage")]
    assert {cfg.data for name, cfg in stills if is_large(name)} == {large}
    assert {cfg.data for name, cfg in stills if not is_large(name)} == {data}
    assert {cfg.data for name, cfg, _ in stages if name.endswith("-footage")} <= {data.parent / "footage"}


def test_the_reference_trains_no_less_on_whole_images_than_the_base(recipe):
    """JPEG/WebP/AVIF are scored by the clean-image reference: on each data set it has at least as
    many whole-image steps as the shipped base's task model, with the same augmentation."""
    stages, _, _ = recipe
    for task, model in TASKS.items():
        mine = _by_task(stages, task)
        exported = {_export(cfg): cfg for _, cfg, _ in mine}
        shipped = {zoo: cfg for _, cfg, zoo in mine if zoo}

        base_line = [c for c in _lineage(shipped[model], exported) if c.kind == "base" and c.crop is None]
        ref_line = [c for c in _lineage(shipped[f"tasks/{task}"], exported) if c.crop is None]
        assert base_line and ref_line
        for data in {c.data for c in base_line}:
            assert sum(c.steps for c in ref_line if c.data == data) >= sum(
                c.steps for c in base_line if c.data == data
            ), (task, data)
        assert {c.hflip for c in [*base_line, *ref_line]} == {True}


def _lineage(cfg, exported):
    """``cfg`` and the stages it descends from, newest first."""
    chain = []
    while cfg is not None:
        chain.append(cfg)
        cfg = exported.get(_parent(cfg))
    return chain


def test_scale_multiplies_every_stage_and_keeps_at_least_one_step(tmp_path):
    full = ship_stages(tmp_path, tmp_path / "ship")
    small = ship_stages(tmp_path, tmp_path / "ship", scale=0.001)
    assert [n for n, _, _ in small] == [n for n, _, _ in full]
    for (_, a, _), (_, b, _) in zip(full, small, strict=True):
        assert b.steps == max(1, int(a.steps * 0.001))


def test_the_recorded_recipe_lists_every_stage_with_its_steps(tmp_path):
    """docs/results/training_recipe.json, which holds each stage's figures and time, describes the
    recipe as it is: the same stages in the same order, the same steps."""
    stages = ship_stages(tmp_path / "synth", tmp_path / "ship", data_large=tmp_path / "synth10k")
    record = json.loads(RECORD.read_text())
    recorded = []
    for task in TASKS:
        for entry in record["stages"][task]:
            assert len(entry["seconds"]) == len(entry["steps"]), entry["stage"]
            for i, steps in enumerate(entry["steps"]):
                recorded.append((entry["stage"] + (str(i + 1) if i else ""), steps))
    assert recorded == [(name, cfg.steps) for name, cfg, _ in stages]
    assert record["total_seconds"] == sum(sum(e["seconds"]) for t in TASKS for e in record["stages"][t])


def test_footage_fine_tunes_the_finished_detection_base_and_reference_which_then_ship(tmp_path):
    """With camera footage the finished detection base (same λ_b, β, lr and whole images as its
    last still-image stage) and the clean-image reference each train on it for the same steps, and
    those two ship; the enhancement layer is trained on the fine-tuned base. Without it the recipe
    has no footage stage."""
    data, large, footage = tmp_path / "synth", tmp_path / "synth10k", tmp_path / "footage"
    stills = ship_stages(data, tmp_path / "ship", data_large=large)
    stages = ship_stages(data, tmp_path / "ship", data_large=large, data_footage=footage)
    assert not [n for n, _, _ in stills if "footage" in n]
    by_name = {name: (cfg, zoo) for name, cfg, zoo in stages}
    (base, base_zoo), (ref, ref_zoo) = by_name["detection-base-footage"], by_name["detection-task-footage"]
    leaner, tuned = by_name["detection-base-leaner-large3"][0], by_name["detection-task-tune-large7"][0]
    assert (base_zoo, ref_zoo) == ("det-tiny", "tasks/detection")
    assert base.init == _export(leaner) and ref.task_init == _export(tuned)
    assert base.data == ref.data == footage and base.steps == ref.steps > 0
    assert replace(base, out=leaner.out, init=leaner.init, data=leaner.data, steps=leaner.steps) == leaner
    assert replace(ref, out=tuned.out, task_init=tuned.task_init, data=tuned.data, steps=tuned.steps) == tuned
    assert by_name["detection-rec"][0].base == _export(base)
    assert [n for n in by_name if n.startswith("depth")] == [n for n, _, _ in stills if n.startswith("depth")]
    names = [n for n, _, _ in stages]
    assert names.index("detection-task-footage") < names.index("detection-base")  # each after its chain
    assert names.index("detection-base-leaner-large3") < names.index("detection-base-footage")


def test_ship_passes_the_footage_to_the_recipe(tmp_path, monkeypatch):
    from layercast.cli import main
    from layercast.train import recipes

    seen = {}

    def fake_run_ship(data, out, scale, data_large=None, data_footage=None):
        seen.update(data=data, data_footage=data_footage)
        return {"wall_time_s": 0}

    monkeypatch.setattr(recipes, "run_ship", fake_run_ship)
    args = ["train", "ship", "--data", str(tmp_path / "d"), "--out", str(tmp_path / "o")]
    assert main([*args, "--data-footage", str(tmp_path / "f")]) == 0
    assert seen == {"data": tmp_path / "d", "data_footage": tmp_path / "f"}


def test_det_tiny_p_model_trains_on_at_camera_resolution_from_the_first_stage_and_that_one_ships(
    tmp_path, monkeypatch
):
    import layercast.train.temporal as temporal
    from layercast.train.recipes import ship_temporal

    runs = []

    def fake_train(cfg):
        runs.append(cfg)
        cfg.out.mkdir(parents=True, exist_ok=True)
        path = cfg.out / "temporal.pt"
        path.write_bytes(f"{cfg.out.name}:{cfg.steps}".encode())
        return path

    monkeypatch.setattr(temporal, "train_temporal", fake_train)
    zoo = tmp_path / "zoo"
    zoo.mkdir()
    ship_temporal(tmp_path / "ship", scale=0.5, zoo=zoo)
    first, camera = [c for c in runs if "det-tiny" in c.base]
    assert first.skip_threshold == 0.0 and first.steps == 300
    assert camera.init == str(first.out / "temporal.pt") and camera.steps == 150
    assert camera.sizes == ((512, 288), (640, 360)) and (camera.skip_threshold, camera.deadzone) == (0.3, 0.6)
    assert (zoo / "det-tiny-temporal.pt").read_bytes() == b"det-tiny-temporal-camera:150"
    assert (zoo / "depth-tiny-temporal.pt").read_bytes() == b"depth-tiny-temporal:300"
