"""Trainer: learns, is deterministic on CPU, resumes exactly, stops early on val AUC."""

from dataclasses import replace

import pytest
import torch

from conftest import small_data_config
from deepfm.config import ExperimentConfig
from deepfm.data import synthetic
from deepfm.data.movielens import MovieLensAdapter
from deepfm.data.raw import write_raw
from deepfm.data.releases import parse_release
from deepfm.metrics import roc_auc
from deepfm.models.registry import build_model
from deepfm.predict import dataset_logits
from deepfm.training.optimizers import CTROptimizer
from deepfm.training.trainer import CheckpointError, DivergedError, Trainer

CPU = torch.device("cpu")
SEED = 42


@pytest.fixture
def data(small_config):
    return MovieLensAdapter(small_config.data).build()


def fit(config, data, name="deepfm", seed=SEED, **fit_args):
    schema, train_ds, val_ds, _ = data
    torch.manual_seed(seed)
    model = build_model(name, schema, config)
    trainer = Trainer(model, config.train, CPU, seed)
    return model, trainer.fit(train_ds, val_ds, **fit_args)


def small_train(config, **changes):
    return replace(config, train=replace(config.train, batch_size=128, **changes))


@pytest.fixture
def planted(tmp_path):
    """Synthetic ml-100k (20,000 ratings) whose labels follow a planted signal."""
    data = small_data_config(tmp_path)
    release = synthetic.generate("ml-100k", 20_000, tmp_path / "release", folder=True)
    write_raw(parse_release("ml-100k", release), data.raw_path, "ml-100k")
    return replace(ExperimentConfig(), data=data)


def test_training_beats_chance_and_records_history(planted):
    config = small_train(planted, max_epochs=4, patience=4, lr=0.01)
    data = MovieLensAdapter(config.data).build()
    model, result = fit(config, data, "fm")
    assert result.epochs_run == 4
    assert [r.epoch for r in result.history] == [1, 2, 3, 4]
    assert result.history[-1].train_loss < result.history[0].train_loss
    assert result.best_val_auc == max(r.val_auc for r in result.history)
    _, _, val_ds, test_ds = data
    assert roc_auc(val_ds.labels, dataset_logits(model, val_ds, CPU)) == result.best_val_auc
    # Chance is 0.5; the planted signal lets FM reach well above it on unseen rows.
    assert result.best_val_auc > 0.65
    assert roc_auc(test_ds.labels, dataset_logits(model, test_ds, CPU)) > 0.65


def test_seeds_order_the_rows_and_draw_the_weights(small_config, data):
    config = small_train(small_config, max_epochs=1)
    model_a, result_a = fit(config, data, seed=42)
    model_b, result_b = fit(config, data, seed=43)
    differs = [
        name
        for name, a in model_a.state_dict().items()
        if not torch.equal(a, model_b.state_dict()[name])
    ]
    assert differs
    assert result_a.history[0].train_loss != result_b.history[0].train_loss


def test_non_finite_loss_stops_naming_epoch_and_step(small_config, data, tmp_path):
    config = small_train(small_config, max_epochs=3, lr=1e30)  # finite, so params allow it
    checkpoint = tmp_path / "checkpoint.pt"
    with pytest.raises(
        DivergedError,
        match=r"^training diverged: the loss is (nan|inf) at epoch 1, "
        r"step \d+ of \d+; lower train.lr \(now 1e\+30\)$",
    ):
        fit(config, data, checkpoint=checkpoint, run_key="k")
    assert not checkpoint.exists()  # no epoch ended well


@pytest.mark.parametrize("embedding_optimizer", ["adam", "lazy_adam"])
def test_same_seed_same_weights_and_metrics(small_config, data, embedding_optimizer):
    config = small_train(small_config, max_epochs=2, embedding_optimizer=embedding_optimizer)
    model_a, result_a = fit(config, data)
    model_b, result_b = fit(config, data)
    for (name, a), (_, b) in zip(
        model_a.state_dict().items(), model_b.state_dict().items(), strict=True
    ):
        assert torch.equal(a, b), name
    assert [r.val_auc for r in result_a.history] == [r.val_auc for r in result_b.history]


@pytest.mark.parametrize("embedding_optimizer", ["adam", "lazy_adam"])
def test_resume_from_checkpoint_equals_uninterrupted(
    small_config, data, tmp_path, embedding_optimizer
):
    config = small_train(
        small_config, max_epochs=4, patience=4, embedding_optimizer=embedding_optimizer
    )
    reference, reference_result = fit(config, data)

    checkpoint = tmp_path / "checkpoint.pt"

    def crash_after_epoch_2(record):
        if record.epoch == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        fit(config, data, checkpoint=checkpoint, run_key="k", on_epoch=crash_after_epoch_2)
    assert checkpoint.is_file()
    resumed, resumed_result = fit(config, data, checkpoint=checkpoint, run_key="k")
    assert not checkpoint.exists()  # removed once training ends
    for (name, a), (_, b) in zip(
        reference.state_dict().items(), resumed.state_dict().items(), strict=True
    ):
        assert torch.equal(a, b), name
    assert [r.val_auc for r in resumed_result.history] == [
        r.val_auc for r in reference_result.history
    ]


def test_checkpoint_with_the_old_row_wise_state_is_a_clear_error(small_config, data, tmp_path):
    """A checkpoint whose row-wise Adam state has the earlier `moments` layout names itself
    and says what to do, instead of a KeyError at the first step."""
    config = small_train(small_config, max_epochs=3, embedding_optimizer="lazy_adam")
    checkpoint = tmp_path / "checkpoint.pt"

    def crash_after_epoch_2(record):
        if record.epoch == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        fit(config, data, checkpoint=checkpoint, run_key="k", on_epoch=crash_after_epoch_2)
    state = torch.load(checkpoint, weights_only=True)
    for saved in state["optimizer"]["row_wise_adam"]["state"].values():
        saved["moments"] = torch.stack([saved.pop("exp_avg"), saved.pop("exp_avg_sq")], dim=1)
    torch.save(state, checkpoint)
    with pytest.raises(CheckpointError, match=f"{checkpoint}: .*older layout.*delete"):
        fit(config, data, checkpoint=checkpoint, run_key="k")


def test_checkpoint_of_other_params_is_ignored(small_config, data, tmp_path):
    config = small_train(small_config, max_epochs=2)
    checkpoint = tmp_path / "checkpoint.pt"

    def stop(record):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        fit(config, data, checkpoint=checkpoint, run_key="old", on_epoch=stop)
    _, result = fit(config, data, checkpoint=checkpoint, run_key="new")
    assert [r.epoch for r in result.history] == [1, 2]  # started over


def test_early_stopping_restores_best_weights(small_config, data):
    # A huge learning rate makes validation AUC fall after the first epochs.
    config = small_train(small_config, max_epochs=10, patience=1, lr=0.5)
    model, result = fit(config, data, "fm")
    assert result.epochs_run == result.best_epoch + 1
    _, _, val_ds, _ = data
    assert roc_auc(val_ds.labels, dataset_logits(model, val_ds, CPU)) == pytest.approx(
        result.best_val_auc, abs=1e-12
    )


def test_embedding_tables_get_their_own_l2(small_config, data):
    schema = data[0]
    config = replace(
        small_config, train=replace(small_config.train, embedding_l2=1e-4, weight_decay=1e-6)
    )
    model = build_model("deepfm", schema, config)
    embedding_group, other_group = CTROptimizer(model, config.train).adam.param_groups
    assert embedding_group["weight_decay"] == 1e-4 and other_group["weight_decay"] == 1e-6
    tables = [
        m.weight
        for m in model.modules()
        if isinstance(m, torch.nn.Embedding | torch.nn.EmbeddingBag)
    ]
    assert {id(p) for p in embedding_group["params"]} == {id(p) for p in tables}
    assert len(embedding_group["params"]) + len(other_group["params"]) == len(
        list(model.parameters())
    )
