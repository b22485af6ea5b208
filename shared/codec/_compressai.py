"""Import CompressAI's entropy models and layers without its package ``__init__``.

``import compressai`` runs ``compressai/__init__.py``, which imports every subpackage, among them
its point-cloud data sets and transforms, which import torch-geometric, which imports
``torch._dynamo``: about 3.5 s of start-up per process on this machine, for modules the codec
never uses. :func:`install` registers the ``compressai`` package without running that file, with
the entropy-coder selection functions the package defines there (the only names its
``entropy_models`` read from it), so ``compressai.entropy_models``, ``compressai.layers``,
``compressai.ops``, ``compressai.ans`` (and, when asked for, ``compressai.models``) import as
usual. Nothing changes if CompressAI was imported already.
"""

from __future__ import annotations

import importlib.util
import sys


def install() -> None:
    if "compressai" in sys.modules:
        return
    spec = importlib.util.find_spec("compressai")
    if spec is None or spec.loader is None:  # not installed: the imports themselves will say so
        return
    pkg = importlib.util.module_from_spec(spec)
    pkg._entropy_coder = "ans"
    pkg._available_entropy_coders = ["ans"]

    def available_entropy_coders() -> list[str]:
        return list(pkg._available_entropy_coders)

    def get_entropy_coder() -> str:
        return pkg._entropy_coder

    def set_entropy_coder(entropy_coder: str) -> None:
        if entropy_coder not in pkg._available_entropy_coders:
            raise ValueError(
                f'Invalid entropy coder "{entropy_coder}", choose from ({", ".join(pkg._available_entropy_coders)}).'
            )
        pkg._entropy_coder = entropy_coder

    pkg.available_entropy_coders = available_entropy_coders
    pkg.get_entropy_coder = get_entropy_coder
    pkg.set_entropy_coder = set_entropy_coder
    sys.modules["compressai"] = pkg


install()
