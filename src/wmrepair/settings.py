"""The workflow's config.yaml as typed settings: the one place its sections map onto the library."""

from __future__ import annotations

from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import yaml

from wmrepair.config import OptimizationConfig
from wmrepair.predict import PredictConfig
from wmrepair.repair import RepairConfig
from wmrepair.synth import SynthConfig
from wmrepair.train import TrainConfig

DEFAULT_CONFIG = Path(__file__).resolve().parents[2] / "config" / "config.yaml"


def _make(cls: type, data: dict[str, Any] | None, section: str, drop: tuple[str, ...] = ()) -> Any:
    data = {k: v for k, v in (data or {}).items() if k not in drop}
    known = {f.name for f in fields(cls)}
    bad = sorted(set(data) - known)
    if bad:
        raise ValueError(f"unknown setting {section}.{bad[0]} (known: {', '.join(sorted(known))})")
    return cls(**data)


@dataclass
class Settings:
    optimization: OptimizationConfig
    synth: SynthConfig
    train: TrainConfig
    predict: PredictConfig
    repair: RepairConfig
    inpaint: dict[str, Any]
    raw: dict[str, Any]

    @classmethod
    def from_config(cls, cfg: dict[str, Any]) -> Settings:
        synth = dict(cfg.get("data", {}).get("synth", {}))
        if "test_sizes" in synth:
            synth["test_sizes"] = [tuple(s) for s in synth["test_sizes"]]
        rep = cfg.get("repair", {})
        return cls(
            optimization=OptimizationConfig.from_dict(cfg.get("optimization")),
            synth=_make(SynthConfig, synth, "data.synth"),
            train=TrainConfig.from_dict(cfg.get("train")),
            predict=_make(PredictConfig, cfg.get("predict"), "predict"),
            repair=_make(RepairConfig, rep, "repair",
                         drop=("input_dir", "chunk_size", "mem_mb", "clean_dir", "mask_dir")),
            inpaint=dict(cfg.get("inpaint", {})),
            raw=cfg,
        )

    @classmethod
    def from_yaml(cls, path: str | Path = DEFAULT_CONFIG) -> Settings:
        return cls.from_config(yaml.safe_load(Path(path).read_text()) or {})
