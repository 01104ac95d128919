"""Every shipped config equals the recipe record that cites its source, key by key.

Each config is resolved through LightningCLI exactly as ``lightning-ssl fit --config ...``
would (linked data values, class defaults), without training, and every key of its record
(``recipes/<method>/<dataset>.yaml``) is compared with the resolved value, derived ones included
(effective lr at the recipe's global batch, warm-up steps, the augmentation of each view).
"""

from __future__ import annotations

import math
import runpy
from pathlib import Path

import pytest
import yaml
from lightning.pytorch import LightningModule

from lightning_ssl.cli import LightningSSLCLI
from lightning_ssl.data import SSLDataModule
from lightning_ssl.methods import BYOL
from lightning_ssl.recipes import DOCUMENTARY_PREFIX, RECORDS, expected, load_records, resolve
from tests.shallow_vit import shallow_backbone_args

REPO = Path(__file__).resolve().parents[1]
RECORDS_BY_CONFIG = load_records()
SHIPPED = sorted(
    str(p.relative_to(REPO))
    for p in (REPO / "configs").glob("**/*.yaml")
    if p.name != "quickstart.yaml"  # a 5-minute CPU demo, not a recipe of a source
)


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory) -> Path:
    """A tiny BYOL checkpoint for the evaluation configs (they load one when built)."""
    from tests.methods.helpers import SyntheticViews, quick_trainer

    data = SyntheticViews(image_size=32, batch_size=8, n=16)
    small = dict(proj_hidden_dim=32, proj_dim=16, pred_hidden_dim=32)
    method = BYOL(backbone="timm:test_resnet", **small, **data.link())
    trainer = quick_trainer(max_steps=1, limit_val_batches=0)
    trainer.fit(method, datamodule=data)
    path = tmp_path_factory.mktemp("pretrained") / "byol.ckpt"
    trainer.save_checkpoint(path)
    return path


def _resolve(config: str, data_root: Path, record: dict, pretrained: Path) -> dict:
    text = yaml.safe_load((REPO / config).read_text())
    data, model = text["data"]["class_path"], text["model"]["class_path"]
    folder = "imagewoof2-160" if data.endswith("ImageFolderDataModule") else "cifar10-jpeg"
    extra = [f"--model.init_args.pretrained={pretrained}"] if ".eval." in model else []
    cli = LightningSSLCLI(
        LightningModule,
        SSLDataModule,
        subclass_mode_model=True,
        subclass_mode_data=True,
        auto_configure_optimizers=False,
        run=False,
        args=[
            f"--config={REPO / config}",
            f"--data.init_args.data_dir={data_root / folder}",
            "--trainer.accelerator=cpu",
            "--trainer.logger=false",
            *extra,
            *shallow_backbone_args(REPO / config),  # ViT-H: records list no depth
        ],
    )
    return resolve(cli.model, cli.datamodule, cli.trainer, record)


def test_every_shipped_config_has_a_record():
    assert sorted(RECORDS_BY_CONFIG) == SHIPPED


@pytest.mark.parametrize("config", sorted(RECORDS_BY_CONFIG))
def test_config_resolves_to_its_record(config, data_root, pretrained, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    record = RECORDS_BY_CONFIG[config]
    resolved = _resolve(config, data_root, record, pretrained)
    mismatches = []
    for key, entry in record["values"].items():
        assert {"value", "source"} <= set(entry), f"{key}: needs value and source"
        if "ours" in entry:
            assert entry.get("deviation"), f"{key}: a deviation must say why"
        if key.startswith(DOCUMENTARY_PREFIX):
            assert "ours" in entry or "deviation" not in entry, key
            continue
        assert key in resolved, f"{config}: {key} is not a key the config resolves"
        want, got = expected(entry), resolved[key]
        same = (
            math.isclose(got, want, rel_tol=1e-9)
            if isinstance(want, float) and isinstance(got, int | float)
            else got == want
        )
        if not same:
            mismatches.append(f"{key}: config {got!r} != record {want!r}")
    assert not mismatches, "\n".join(mismatches)


def test_readme_table_is_up_to_date(capsys):
    # The script's main in this process (a fresh interpreter only added its imports).
    script = runpy.run_path(str(REPO / "benchmarks" / "recipes_table.py"), run_name="recipes")
    code = script["main"](["--check"])
    assert code == 0, capsys.readouterr().out


def test_records_cite_pinned_sources():
    sources = yaml.safe_load((RECORDS / "sources.yaml").read_text())
    for config, record in RECORDS_BY_CONFIG.items():
        for key, entry in record["values"].items():
            alias = str(entry["source"]).split(":", 1)[0]
            cited = alias in sources or alias.startswith(("paper", "docs", "ours"))
            assert cited, f"{config} {key}: unknown source {alias!r}"
