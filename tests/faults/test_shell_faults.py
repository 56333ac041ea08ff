"""Params that try to reach a shell through `dvc.yaml`: DVC pastes `${...}` values into the
command line it gives a shell, so the pipeline's matrix stages take their model and seed from
`$DVC_STAGE` instead, and no params value is ever run as code."""

from __future__ import annotations

import os
import subprocess

import pytest
import yaml


@pytest.mark.slow
def test_a_model_name_from_params_never_reaches_a_shell(dvc_repo):
    """DVC pastes `${...}` values into the command it gives a shell; the stages take their
    model and seed from `$DVC_STAGE` instead, so this name is an unknown model, not code."""
    name = "fm; touch pwned; echo"
    params = yaml.safe_load((dvc_repo / "params.yaml").read_text())
    params["train"]["models"] = [name]
    params["model"][name] = {}
    (dvc_repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    env = {key: value for key, value in os.environ.items() if key != "MLFLOW_TRACKING_URI"}
    done = subprocess.run(
        ["dvc", "repro", f"train@{name}-42"], cwd=dvc_repo, env=env, capture_output=True, text=True
    )
    assert done.returncode != 0
    assert "'model.fm; touch pwned; echo'" in done.stdout + done.stderr  # refused by name
    assert not (dvc_repo / "pwned").exists()
    assert not list(dvc_repo.rglob("pwned"))
