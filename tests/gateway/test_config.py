"""Gateway config: the shipped examples load; bad files get errors naming the field."""

from __future__ import annotations

from pathlib import Path

import pytest

from cato.gateway.config import ConfigError, load_config, parse_config

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


@pytest.mark.parametrize("name", ["vllm.yaml", "llamacpp.yaml"])
def test_examples_load(name: str) -> None:
    cfg = load_config(EXAMPLES / name)
    assert cfg.models and all(m.replicas for m in cfg.models)


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
