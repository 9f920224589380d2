"""Structured-config schemas: every task and preset composes, bad types fail at compose, bad values in validate."""
from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest
from hydra.errors import ConfigCompositionException
from omegaconf import DictConfig, OmegaConf

from attacks.caption.gan import GANConfig
from attacks.fooling.gradient_ascent import GradientAscentConfig
from attacks.fooling.map_elites import MapElitesConfig
from attacks.unlearnable.evaluation import VictimConfig
from robustbench_local.api import compose_config
from robustbench_local.config_schema import TASKS, register_configs, validate
from robustbench_local.errors import ConfigError

REPO = Path(__file__).resolve().parent.parent
TASK_NAMES = sorted(p.stem for p in (REPO / "conf" / "task").glob("*.yaml"))
EXPERIMENTS = sorted(p.stem for p in (REPO / "conf" / "experiment").glob("*.yaml"))


def test_every_task_yaml_has_a_schema() -> None:
    assert TASK_NAMES == sorted(TASKS)


@pytest.mark.parametrize("name", TASK_NAMES)
def test_every_task_composes_with_its_defaults_and_validates(name: str) -> None:
    cfg = compose_config(f"task={name}")
    assert OmegaConf.get_type(cfg.task) is TASKS[name]
    assert cfg.task._target_ == TASKS[name]._target_
    validate(cfg)


@pytest.mark.parametrize("name", TASK_NAMES)
def test_a_task_yaml_repeats_no_schema_default(name: str) -> None:
    # A default lives in the schema only; the YAML adds the entries of mappings keyed by data (schema default {}).
    yaml = OmegaConf.load(REPO / "conf" / "task" / f"{name}.yaml")
    schema = OmegaConf.structured(TASKS[name])
    assert all(schema[key] == {} for key in yaml if key != "defaults")


def test_the_root_yaml_repeats_no_schema_default() -> None:
    assert set(OmegaConf.load(REPO / "conf" / "config.yaml")) == {"defaults", "hydra"}


@pytest.mark.parametrize("name", EXPERIMENTS)
def test_every_experiment_preset_composes_and_validates(name: str) -> None:
    validate(compose_config(f"+experiment={name}"))


def test_register_configs_is_idempotent() -> None:
    register_configs()
    register_configs()
    assert compose_config("task=certify").task.timeout == 30.0


def _compose_error(*overrides: str) -> str:
    with pytest.raises(ConfigCompositionException) as info:
        compose_config(*overrides)
    return f"{info.value}\n{info.value.__cause__}"


@pytest.mark.parametrize("overrides,key", [
    (["dataset.n_test=abc"], "dataset.n_test"),
    (["batch_size=abc"], "batch_size"),
    (["task=certify", "task.timeout=abc"], "task.timeout"),
    (["task=unlearnable_poison", "task.victim.epochs=many"], "task.victim.epochs"),
    (["task=fooling_map_elites_cppn", "task.cppn_rates.weight=abc"], "task.cppn_rates.weight"),
])
def test_a_wrong_type_fails_at_compose_time_naming_the_key(overrides: list[str], key: str) -> None:
    message = _compose_error(*overrides)
    assert f"full_key: {key}" in message and "could not be converted" in message


@pytest.mark.parametrize("task", ["evaluate", "certify", "fooling_map_elites_direct"])
def test_an_unknown_task_key_fails_at_compose_time(task: str) -> None:
    assert "full_key: task.no_such_key" in _compose_error(f"task={task}", "task.no_such_key=1")


def test_a_key_added_with_plus_fails_validate() -> None:
    # `+key=value` bypasses struct mode while composing, so validate catches it.
    cfg = compose_config("task=fooling_map_elites_direct", "+task.map_elites.popsize=3")
    with pytest.raises(ConfigError, match=r"^task\.map_elites\.popsize is not a key of task\.map_elites; "):
        validate(cfg)


@pytest.mark.parametrize("overrides,message", [
    (["batch_size=0"], "batch_size must be >= 1, got 0"),
    (["workers=0"], "workers must be >= 1, got 0"),
    (["torch_threads=0"], "torch_threads must be >= 1, got 0"),
    (["dataset.n_test=0"], "dataset.n_test must be >= 1 (or null), got 0"),
    (["threat.norm=L3"], "threat.norm must be one of Linf, L2, L1, L0, got 'L3'"),
    (["threat.eps=-0.1"], "threat.eps must be >= 0 (or null), got -0.1"),
    (["task=certify", "task.timeout=0"], "task.timeout must be > 0, got 0.0"),
    (["task=certify", "task.method=magic"], "task.method must be one of auto, bounds, input_split, relu_split"),
    (["task=vnncomp", "task.limit=0"], "task.limit must be >= 1 (or null), got 0"),
    (["task=unlearnable_poison", "task.cuda.kernel_size=4"], "task.cuda.kernel_size must be an odd integer >= 3, got 4"),
    (["task=unlearnable_poison", "task.mixes=[0.5,2.0]"], "task.mixes[1] must be in [0, 1], got 2.0"),
    (["task=unlearnable_poison", "task.mixes=[]"], "task.mixes must not be empty"),
    (["task=unlearnable_poison", "task.trainings=[erm,l2_at]", "task.at_eps.L2=null"], "task.at_eps.L2 must be > 0"),
    (["task=dverge_eval", "task.transferability.n=0"], "task.transferability.n must be >= 1 (or null), got 0"),
    (["task=fooling_map_elites_direct", "task.method=annealing"], "task.method must be one of map_elites"),
    (["task=fooling_map_elites_direct", "task.map_elites.cross_rate=1.5"], "task.map_elites.cross_rate must be in [0, 1]"),
    (["task=fooling_map_elites_cppn", "task.cppn_rates.weight=2"], "task.cppn_rates.weight must be in [0, 1]"),
    (["task=fooling_gradient_ascent", "task.gradient_ascent.center=2"], "task.gradient_ascent.center must be mean"),
    (["task=fooling_gradient_ascent", "task.thresholds=[0.9,1.5]"], "task.thresholds[1] must be in (0, 1]"),
    (["task=feature_guided_compare", "task.attacks.jsma.norm=L7"], "task.attacks.jsma.norm must be one of Linf"),
    (["task=leaderboard", "task.sort_by=speed"], "task.sort_by must be one of robust_acc"),
])
def test_a_value_out_of_range_fails_validate_naming_the_key(overrides: list[str], message: str) -> None:
    cfg = compose_config(*overrides)
    with pytest.raises(ConfigError) as info:
        validate(cfg)
    assert str(info.value).startswith(message)


def test_validate_accepts_nulls_and_range_edges() -> None:
    validate(compose_config("dataset.n_test=1", "threat.eps=null", "threat.norm=L0", "workers=1", "task=certify",
                            "task.n=null", "task.timeout=0.5"))
    validate(compose_config("task=unlearnable_poison", "task.mixes=[0.0,1.0]", "task.at_eps.L2=null"))  # erm needs no eps


def test_validate_leaves_a_task_without_schema_alone() -> None:
    cfg = compose_config()
    cfg.task = OmegaConf.create({"_target_": "somewhere.run", "anything": [1, 2]})
    assert isinstance(cfg.task, DictConfig)
    validate(cfg)


def _rbl(tmp_path: Path, *overrides: str) -> subprocess.CompletedProcess:
    rbl = Path(sys.executable).parent / "rbl"
    cmd = [str(rbl), f"results.url=sqlite:///{tmp_path}/r.db", f"hydra.run.dir={tmp_path}/out", *overrides]
    return subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("override,first_line", [
    ("batch_size=0", "rbl: error: batch_size must be >= 1, got 0"),
    ("dataset.n_test=abc", "Error merging override dataset.n_test=abc"),
])
def test_rbl_rejects_bad_config_quickly_with_the_key_and_no_traceback(tmp_path: Path, override: str,
                                                                       first_line: str) -> None:
    start = time.perf_counter()
    proc = _rbl(tmp_path, override)
    assert time.perf_counter() - start < 60   # no data, model or attack work happened
    assert proc.returncode != 0
    assert proc.stderr.splitlines()[0] == first_line
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "r.db").exists()


@pytest.mark.parametrize("make, message", [
    (lambda: GANConfig(steps=0), "GANConfig.steps must be >= 1, got 0"),
    (lambda: MapElitesConfig(cross_rate=1.5), "MapElitesConfig.cross_rate must be in [0, 1], got 1.5"),
    (lambda: GradientAscentConfig(objective="x"), "GradientAscentConfig.objective must be one of prob, logit, got 'x'"),
    (lambda: VictimConfig(lr=0), "VictimConfig.lr must be > 0, got 0"),
])
def test_library_configs_check_the_ranges_their_fields_declare(make, message):
    # The same Rule (rbl_core.config) the harness checks composed configs with, so the words match.
    with pytest.raises(ValueError) as err:
        make()
    assert str(err.value) == message
