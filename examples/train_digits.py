"""Train a small classifier on scikit-learn's digits, tracked by align-track.

Run from the repository root::

    python examples/train_digits.py
    python examples/train_digits.py -m model.lr=0.01,0.1 model.hidden=32,64
    python examples/train_digits.py model=sgd model.lr=0.05

The primary config (``conf/config.yaml``) puts ``tracker: sqlite`` in its defaults
list, so every job becomes a run in ``./experiments.db``. Each epoch logs
``train_loss``, ``train_acc``, ``val_loss`` and ``val_acc``; the trained model is
pickled into the job's output dir and stored with the run; the task function
returns the final validation accuracy, which align-track records as the metric
``return_value``.
"""
from __future__ import annotations

import logging
import pickle
from pathlib import Path
from typing import Any, Dict, Tuple

import hydra
import numpy as np
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig
from sklearn.datasets import load_digits
from sklearn.linear_model import SGDClassifier
from sklearn.metrics import accuracy_score, log_loss
from sklearn.model_selection import train_test_split
from sklearn.neural_network import MLPClassifier
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

import align_track

log = logging.getLogger(__name__)

CLASSES = np.arange(10)
Split = Tuple[np.ndarray, np.ndarray]


def load_data(cfg: DictConfig, seed: int) -> Tuple[Split, Split, Any]:
    """Split the digits into train and validation sets.

    Returns:
        ``(x_train, y_train)``, ``(x_val, y_val)`` and the fitted scaler (or None).
    """
    if cfg.name != "digits":
        raise ValueError(f"data.name={cfg.name!r}: only 'digits' is available")
    x, y = load_digits(return_X_y=True)
    x_train, x_val, y_train, y_val = train_test_split(
        x, y, test_size=cfg.val_fraction, random_state=seed, stratify=y
    )
    scaler = None
    if cfg.scale:
        scaler = StandardScaler().fit(x_train)
        x_train, x_val = scaler.transform(x_train), scaler.transform(x_val)
    return (x_train, y_train), (x_val, y_val), scaler


def build_model(cfg: DictConfig, seed: int) -> Any:
    """An untrained classifier that learns one epoch per ``partial_fit`` call."""
    if cfg.name == "mlp":
        return MLPClassifier(
            hidden_layer_sizes=(cfg.hidden,), learning_rate_init=cfg.lr,
            batch_size=cfg.batch_size, alpha=cfg.alpha, random_state=seed,
        )
    if cfg.name == "sgd":
        return SGDClassifier(
            loss="log_loss", learning_rate="constant", eta0=cfg.lr, alpha=cfg.alpha,
            random_state=seed,
        )
    raise ValueError(f"model.name={cfg.name!r}: expected 'mlp' or 'sgd'")


def evaluate(model: Any, x: np.ndarray, y: np.ndarray) -> Tuple[float, float]:
    """Cross-entropy loss and accuracy of ``model`` on ``(x, y)``."""
    proba = model.predict_proba(x)
    loss = log_loss(y, proba, labels=CLASSES)
    acc = accuracy_score(y, CLASSES[proba.argmax(axis=1)])
    return float(loss), float(acc)


def train(cfg: DictConfig) -> Tuple[Any, Dict[str, float]]:
    """Train for ``cfg.epochs`` epochs, logging both splits after each one.

    Returns:
        The trained model (with the scaler in front when there is one) and the
        last epoch's metrics.
    """
    (x_train, y_train), (x_val, y_val), scaler = load_data(cfg.data, cfg.seed)
    model = build_model(cfg.model, cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    metrics: Dict[str, float] = {}
    for epoch in range(1, cfg.epochs + 1):
        order = rng.permutation(len(y_train))
        model.partial_fit(x_train[order], y_train[order], classes=CLASSES)
        train_loss, train_acc = evaluate(model, x_train, y_train)
        val_loss, val_acc = evaluate(model, x_val, y_val)
        metrics = {"train_loss": train_loss, "train_acc": train_acc,
                   "val_loss": val_loss, "val_acc": val_acc}
        align_track.log(metrics, step=epoch)
        log.info("epoch %d: train loss %.4f acc %.3f | val loss %.4f acc %.3f",
                 epoch, train_loss, train_acc, val_loss, val_acc)
    return (model if scaler is None else make_pipeline(scaler, model)), metrics


@hydra.main(version_base="1.3", config_path="../conf", config_name="config")
def main(cfg: DictConfig) -> float:
    """Train, store the model with the run, and return the final val accuracy."""
    align_track.set_tags(model=cfg.model.name, dataset=cfg.data.name)
    model, metrics = train(cfg)
    path = Path(HydraConfig.get().runtime.output_dir) / "model.pkl"
    with open(path, "wb") as f:
        pickle.dump(model, f)
    align_track.log_artifact(path)
    log.info("model saved to %s; val accuracy %.3f", path, metrics["val_acc"])
    return metrics["val_acc"]


if __name__ == "__main__":
    main()
