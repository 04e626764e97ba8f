"""workflow/envs/*.yaml pin the same versions as requirements.txt (conda channels are unreachable here)."""

import re

import yaml
from conftest import ROOT


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def test_conda_env_pins_match_requirements():
    req = {}
    for line in (ROOT / "requirements.txt").read_text().splitlines():
        line = line.split("#")[0].strip()
        if "==" in line:
            n, v = line.split("==")
            req[_norm(n)] = v
    envs = list((ROOT / "workflow/envs").glob("*.yaml"))
    assert envs
    for env in envs:
        spec = yaml.safe_load(env.read_text())
        assert "python=3.11" in spec["dependencies"]
        pips = next(d["pip"] for d in spec["dependencies"] if isinstance(d, dict))
        pinned = [p for p in pips if "==" in p]
        assert len(pinned) >= 10
        for p in pinned:
            n, v = p.split("==")
            assert req.get(_norm(n)) == v, f"{env.name}: {p} but requirements.txt has {req.get(_norm(n))}"


def test_every_rule_names_a_conda_env_log_and_benchmark():
    for smk in (ROOT / "workflow/rules").glob("*.smk"):
        if smk.name == "common.smk":
            continue
        text = smk.read_text()
        rules = re.findall(r"^(?:rule|checkpoint) (\w+):", text, re.M)
        assert rules
        for part in re.split(r"^(?:rule|checkpoint) \w+:", text, flags=re.M)[1:]:
            for key in ("conda:", "log:", "benchmark:", "script:"):
                assert key in part, f"{smk.name}: a rule lacks {key}"
