"""Gateway config: the shipped examples load; bad files get errors naming the field."""

from __future__ import annotations

from pathlib import Path

import pytest

from cato.gateway.config import ConfigError, load_config, parse_config

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


@pytest.mark.parametrize("name", ["vllm.yaml", "llamacpp.yaml", "ray-vllm.yaml"])
def test_examples_load(name: str) -> None:
    cfg = load_config(EXAMPLES / name)
    assert cfg.models and all(m.replicas or m.autoscale for m in cfg.models)


def test_ray_example_places_replicas_by_resources() -> None:
    a = load_config(EXAMPLES / "ray-vllm.yaml").models[0].autoscale
    assert a is not None and a.provider == "ray"
    assert a.ray_resources.num_gpus == 1 and a.ray_resources.resources == {"A100": 1}
    assert "{host}" in a.command and "{port}" in a.command  # type: ignore[operator]


@pytest.mark.parametrize("raw,where", [
    ({"models": []}, "models"),
    ({"models": [{"name": "m"}]}, "needs `replicas`"),
    ({"models": [{"name": "m", "replicas": [{"url": "ftp://x"}]}]}, "models.0.replicas.0.url"),
    ({"models": [{"name": "m", "emulated": {}, "concurrency": 0}]}, "models.0.concurrency"),
    ({"models": [{"name": "m", "emulated": {}}], "routing": {"policy": "magic"}},
     "unknown routing policy 'magic'"),
    ({"models": [{"name": "m", "emulated": {}}], "task_models": {"completion": "x"}},
     "task_models.completion"),
    ({"models": [{"name": "m", "emulated": {}}], "limitz": {}}, "limitz"),
    ({"models": [{"name": "m", "emulated": {"preset": "tpu"}}]}, "unknown coefficient preset"),
    ({"models": [{"name": "m", "emulated": {}}, {"name": "m", "emulated": {}}]}, "unique"),
    ({"models": [{"name": "m", "emulated": {}, "autoscale": {"provider": "k8s"}}]},
     "models.0.autoscale.provider"),
    ({"models": [{"name": "m", "emulated": {}, "autoscale": {
        "provider": "ray", "ray_resources": {"num_gpus": -1}}}]},
     "models.0.autoscale.ray_resources.num_gpus"),
    ({"models": [{"name": "m", "emulated": {}}], "ray": {"adress": "auto"}}, "ray.adress"),
    ({"models": [{"name": "m", "emulated": {}}], "local_capacity": 0}, "local_capacity"),
    ({"models": [{"name": "m", "emulated": {"scheduling_policy": "lifo"}}]},
     "models.0.emulated.scheduling_policy"),
    ({"models": [{"name": "m", "emulated": {"scheduling_policy": "priority"}}]},
     "needs accepts_priority: true"),
])
def test_bad_config_names_the_field(raw: dict[str, object], where: str) -> None:
    with pytest.raises(ConfigError) as e:
        parse_config(raw)
    assert where in str(e.value)


def test_unreadable_and_invalid_yaml(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path / "missing.yaml")
    (tmp_path / "bad.yaml").write_text("models: [unclosed")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(tmp_path / "bad.yaml")


def test_emulated_priority_engines_get_the_vllm_flag() -> None:
    from cato.serving.launcher import emulated_engine_argv
    cfg = parse_config({"models": [{"name": "m", "accepts_priority": True,
                                    "emulated": {"scheduling_policy": "priority"}}]})
    em = cfg.models[0].emulated
    assert em is not None and em.scheduling_policy == "priority"
    argv = emulated_engine_argv(1, model="m", preset=em.preset, time_dilation=1.0, seed=0,
                                scheduling_policy=em.scheduling_policy)
    assert argv[argv.index("--scheduling-policy") + 1] == "priority"
    plain = emulated_engine_argv(1, model="m", preset=em.preset, time_dilation=1.0, seed=0)
    assert "--scheduling-policy" not in plain


def test_proactive_scaling_is_a_config_change() -> None:
    cfg = parse_config({"models": [{"name": "m", "emulated": {}, "autoscale": {
        "policy": "proactive", "params": {"headroom": 1.25, "scale_up_by": "fraction"}}}]})
    a = cfg.models[0].autoscale
    assert a is not None and a.policy == "proactive" and a.params["headroom"] == 1.25
    with pytest.raises(ConfigError) as e:
        parse_config({"models": [{"name": "m", "emulated": {}, "autoscale": {
            "policy": "proactive", "params": {"headroom": 0}}}]})
    assert "headroom" in str(e.value)


def test_engine_key_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    raw = {"models": [{"name": "m", "api_key_env": "CATO_TEST_ENGINE_KEY",
                       "replicas": [{"url": "http://127.0.0.1:8001"}]}]}
    monkeypatch.setenv("CATO_TEST_ENGINE_KEY", "s3cret-engine-key")
    model = parse_config(raw).models[0]
    assert model.api_key == "s3cret-engine-key"
    assert "s3cret" not in repr(model)
    monkeypatch.delenv("CATO_TEST_ENGINE_KEY")
    with pytest.raises(ConfigError, match="CATO_TEST_ENGINE_KEY"):
        parse_config(raw)
    both = {"models": [{**raw["models"][0], "api_key": "x"}]}  # type: ignore[index]
    with pytest.raises(ConfigError, match="not both"):
        parse_config(both)
