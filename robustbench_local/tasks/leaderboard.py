"""Render the leaderboard from the results database (a separate step, so failed sweep jobs don't block it)."""
from __future__ import annotations

from pathlib import Path

from omegaconf import DictConfig

from robustbench_local.leaderboard import build_entries, to_csv, to_html, to_markdown, to_robustbench_json
from robustbench_local.results import ResultRow, ResultsStore
from robustbench_local.tasks.base import TaskContext


def _write(path_value: object, text: str) -> None:
    if path_value:
        path = Path(str(path_value)).expanduser()
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        print(f"wrote {path}")


def render(cfg: DictConfig, dataset: str | None, threat_model: str | None) -> str:
    """Print the markdown leaderboard for the filters and write the CSV/HTML/JSON files ``cfg.task`` names."""
    task = cfg.task
    store = ResultsStore(cfg.results.url)
    try:
        entries = build_entries(store, dataset=dataset, threat_model=threat_model,
                                sort_by=task.get("sort_by", "robust_acc"))
    finally:
        store.close()
    text = to_markdown(entries)
    print(text)
    _write(task.get("csv"), to_csv(entries))
    _write(task.get("html"), to_html(entries))
    if task.get("json_dir"):
        for entry in entries:
            name = f"{entry.dataset}_{entry.threat_model}_{entry.model}_{entry.defense}_eps{entry.eps:g}.json"
            _write(Path(str(task.json_dir)) / name, to_robustbench_json(entry))
    return text


def run(cfg: DictConfig, ctx: TaskContext) -> list[ResultRow]:
    """Leaderboard filtered by ``task.dataset`` / ``task.threat_model`` (null = all)."""
    render(cfg, cfg.task.get("dataset"), cfg.task.get("threat_model"))
    return []
