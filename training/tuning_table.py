"""The trial table of a Keras Tuner search: one row per trial, the best in bold, and best.json's fields."""
from __future__ import annotations

from common.checks import eps_label


def best_fields(settings, values: dict) -> dict:
    """The best trial as the recipe (and adversarial) fields ``train.py --hparams`` reads."""
    if settings.search == "optimizer":
        return {"optimizer": values["optimizer"], "learning_rate": float(values["learning_rate"])}
    best = {"augment": values["augment"]}
    if settings.adv and "eps" in values:
        best.update(adv=settings.adv, adv_fraction=settings.adv_fraction, eps=float(values["eps"]))
    return best


def _columns(settings) -> list[tuple[str, str]]:
    """(row key, column title) pairs of the table."""
    if settings.search == "optimizer":
        columns = [("optimizer", "optimizer"), ("learning_rate", "learning rate")]
    else:
        columns = [("augment", "augment")] + ([("eps", "eps")] if settings.adversarial_options() else [])
    if settings.tuner == "hyperband":
        columns.append(("epochs", "epochs"))
    columns.append(("val_accuracy", "val accuracy"))
    if settings.adversarial_options():
        columns.append(("val_robust_accuracy", f"PGD-10 accuracy at {eps_label(settings.eval_eps)}"))
    return [("trial", "trial")] + columns + [("seconds", "seconds")]


def trial_rows(oracle, settings) -> list[dict]:
    rows = []
    for trial_id in sorted(oracle.trials, key=int):  # ids widen as --trials grows
        trial = oracle.trials[trial_id]
        values = trial.hyperparameters.values
        fields = best_fields(settings, values)
        row = {"trial": trial_id, "status": trial.status,
               **{key: value for key, value in fields.items() if key not in ("adv", "adv_fraction")}}
        if "tuner/epochs" in values:
            row["epochs"] = values["tuner/epochs"]
        for name in ("val_accuracy", "val_robust_accuracy", "seconds"):
            if trial.metrics.exists(name):
                row[name] = float(trial.metrics.get_last_value(name))
        rows.append(row)
    return rows


_FORMATS = {"learning_rate": "{:.2e}".format, "eps": eps_label, "seconds": "{:.1f}".format,
            "val_accuracy": "{:.4f}".format, "val_robust_accuracy": "{:.4f}".format}


def _cell(key: str, row: dict) -> str:
    value = row.get(key)
    if value is None:  # a trial that failed or is still running
        return row["status"].lower() if key in ("val_accuracy", "seconds") else ""
    return _FORMATS.get(key, str)(value)


def trial_table(settings, rows: list[dict], best_id: str | None, command: str = "") -> str:
    """The trials as Markdown, best trial in bold, with what produced them."""
    columns = _columns(settings)
    budget = "Hyperband" if settings.tuner == "hyperband" else f"{settings.tuner}, {settings.trials} trials"
    where = settings.dataset + (f", {settings.classes} classes" if settings.classes else "") + (
        f", {settings.per_class}/class" if settings.per_class else "")
    epochs = ("at most " if settings.tuner == "hyperband" else "") + f"{settings.epochs} epoch" + (
        "s" if settings.epochs > 1 else "")
    lines = [f"{settings.model} on {where}: {settings.search} search ({budget}, {epochs} each, "
             f"objective {settings.objective})", ""]
    if command:
        lines += [f"    {command}", ""]
    lines.append("| " + " | ".join(title for _, title in columns) + " |")
    lines.append("|" + " --- |" * len(columns))
    for row in rows:
        cells = [_cell(key, row) for key, _ in columns]
        if row["trial"] == best_id:
            cells = [f"**{cell}**" if cell else cell for cell in cells]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"
