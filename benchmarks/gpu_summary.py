"""summary.json of the device scripts (gpu_check.sh, gpu_pretrain.sh): each step's exit status, the
seconds taken, the GPU, and the fields a script adds. Imported by their closing Python snippets."""

import json
from pathlib import Path
from typing import Any


def load(path: str | Path) -> Any:
    """A step's JSON, or None where the step wrote none (it failed or timed out)."""
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None


def gpu_name() -> str | None:
    try:
        import torch

        return torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    except Exception as exc:  # a broken install is a finding, not a reason to lose the summary
        return f"unknown ({exc})"


def write(out: Path, seconds: int, statuses: str, **fields: Any) -> None:
    """Write `out`/summary.json; `statuses` is the scripts' "step=rc ..." line."""
    summary = {"seconds": seconds, "exit_status": dict(kv.split("=") for kv in statuses.split()), **fields,
               "gpu": gpu_name()}
    (out / "summary.json").write_text(json.dumps(summary, indent=1, default=str))
    print(json.dumps({k: summary[k] for k in ("seconds", "exit_status", "gpu")}))
