"""Helpers for the thin rule scripts: route output to the rule's log, set threads."""

from __future__ import annotations

import logging
import sys
from typing import Any


def setup(snakemake: Any) -> None:
    """Send stdout/stderr and logging of a `script:` job to its `log:` file; honour `threads`."""
    if snakemake.log:
        f = open(snakemake.log[0], "w", buffering=1)  # noqa: SIM115 - lives as long as the job
        sys.stdout = sys.stderr = f
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                        stream=sys.stderr, force=True)
    try:
        import torch

        from wmrepair.hardware import usable_cpus

        # --cores 8 on a 2-core box would oversubscribe torch (measured 6x slower).
        torch.set_num_threads(max(1, min(int(snakemake.threads), usable_cpus())))
    except ImportError:  # pragma: no cover
        pass


def settings(snakemake: Any):
    from wmrepair.settings import Settings

    return Settings.from_config(snakemake.config)
