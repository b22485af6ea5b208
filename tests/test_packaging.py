"""Packaging: the wheel holds every package and data folder, builds without setuptools warnings,
installs in a clean environment and runs the CLI from there; the edge and cloud entry points import
none of the training-only libraries."""

from __future__ import annotations

import os
import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
#: Libraries the edge and cloud must not import at start-up: the training-only ones, and
#: torch-geometric (with torch._dynamo), which only CompressAI's package __init__ would pull in.
TRAIN_ONLY = ("matplotlib", "pycocotools", "faster_coco_eval", "torchmetrics", "torch_geometric")


def test_packages_list_every_folder_of_code_or_data() -> None:
    setup = PYPROJECT["tool"]["setuptools"]
    found = set()
    for package, folder in setup["package-dir"].items():
        for d in [ROOT / folder, *(p for p in (ROOT / folder).rglob("*") if p.is_dir())]:
            if d.name == "__pycache__" or not any(f.is_file() for f in d.iterdir()):
                continue
            rel = d.relative_to(ROOT / folder).parts
            found.add(".".join((package, *rel)))
    assert set(setup["packages"]) == found


def test_extras_by_role() -> None:
    extras = PYPROJECT["project"]["optional-dependencies"]
    names = {
        role: {d.split(">")[0].split("=")[0].split("[")[0] for d in deps} for role, deps in extras.items()
    }
    core = {d.split(">")[0].split("=")[0] for d in PYPROJECT["project"]["dependencies"]}
    assert "av" in names["edge"] and "compressai" in core and "grpcio" in core
    for lib in ("matplotlib", "pycocotools", "faster-coco-eval", "torchmetrics", "scipy"):
        assert lib in names["train"] and lib not in core | names["edge"] | names["cloud"], lib
    assert "layercast[edge,cloud,train]" in extras["dev"]
    dockerfile = (ROOT / "deploy/docker/Dockerfile").read_text()
    assert f"ARG LAYERCAST_VERSION={PYPROJECT['project']['version']}\n" in dockerfile
    assert dockerfile.count('"layercast[edge]==${LAYERCAST_VERSION}"') == 2  # edge, edge-cuda
    assert dockerfile.count('"layercast[cloud]==${LAYERCAST_VERSION}"') == 2  # cloud, cloud-cuda


def test_edge_and_cloud_entry_points_import_no_training_library() -> None:
    code = (
        "import sys, layercast.cli, layercast.edge.app, layercast.commands.edge, layercast.edge.av_source,"
        " layercast.cloud.server, layercast.commands.cloud, layercast.cloud.web.app, layercast.shared.codec;"
        f" print(' '.join(sorted({{m.split('.')[0] for m in sys.modules}} & set({TRAIN_ONLY!r}))))"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=180, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "", f"imported at start-up: {proc.stdout.strip()}"


def test_wheel_builds_cleanly_installs_and_runs(tmp_path: Path) -> None:
    build = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", ".", "--no-deps", "--no-build-isolation", "-w", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=180,
        cwd=ROOT,
    )
    assert build.returncode == 0, build.stdout + build.stderr
    assert "absent from the `packages` configuration" not in build.stdout + build.stderr
    (wheel,) = tmp_path.glob("layercast-*.whl")
    # A clean environment that reuses this one's dependencies (a .pth to its site-packages) but not
    # its layercast, which comes from the wheel alone.
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    site = next((venv / "lib").glob("python3*/site-packages"))
    deps = [p for p in sys.path if p.endswith("site-packages") and Path(p).is_dir()]
    (site / "_deps.pth").write_text("\n".join(deps) + "\n")
    py = venv / "bin" / "python"
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    install = subprocess.run(
        [sys.executable, "-m", "pip", "--python", str(py), "install", "--no-deps", "--no-index", str(wheel)]
        + ["--target", str(site), "--upgrade"],
        capture_output=True,
        text=True,
        timeout=180,
        env=env,
    )
    assert install.returncode == 0, install.stdout + install.stderr
    where = subprocess.run(
        [str(py), "-c", "import layercast, layercast.cloud.web as w, layercast.shared.zoo as z, pathlib;"
         " print(layercast.__file__); print(len(list((pathlib.Path(w.__file__).parent / 'static').iterdir())));"
         " print(len(list((pathlib.Path(z.__file__).parent / 'tasks').glob('*.pt'))))"],
        capture_output=True, text=True, timeout=120, cwd=tmp_path, env=env,
    )  # fmt: skip
    assert where.returncode == 0, where.stderr
    path, statics, tasks = where.stdout.split()
    assert path.startswith(str(site)) and int(statics) >= 3 and int(tasks) == 2
    cli = subprocess.run(
        [str(venv / "bin" / "python"), "-m", "layercast", "demo", "--help"],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
        env=env,
    )
    assert cli.returncode == 0 and "usage: layercast demo" in cli.stdout, cli.stderr
