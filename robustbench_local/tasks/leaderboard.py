"""Render the leaderboard from the results database (a separate step, so failed sweep jobs don't block it)."""
from __future__ import annotations

from pathlib import Path

from omegaconf import DictConfig

from rbl_core.io import atomic_write_text
from robustbench_local.leaderboard_caption import build_caption_entries, caption_markdown
from robustbench_local.leaderboard import build_entries, eps_label, to_csv, to_markdown, to_robustbench_json
from robustbench_local.leaderboard_page import build_page
from robustbench_local.results import ResultRow, ResultsStore
from robustbench_local.tasks.base import TaskContext


def _write(path_value: object, text: str) -> None:
    if path_value:
        print(f"wrote {atomic_write_text(Path(str(path_value)).expanduser(), text)}")


def render(store: ResultsStore, dataset: str | None, threat_model: str | None, sort_by: str = "robust_acc",
           csv: str | None = None, html: str | None = None, json_dir: str | None = None) -> str:
    """Print the markdown leaderboard of ``store`` for the filters; write the files that are named."""
    entries = build_entries(store, dataset=dataset, threat_model=threat_model, sort_by=sort_by)
    text = to_markdown(entries)
    print(text)
    _write(csv, to_csv(entries))
    if html:
        _write(html, build_page(store, entries, dataset=dataset, threat_model=threat_model))
    if json_dir:
        for entry in entries:
            name = (f"{entry.dataset}_{entry.threat_model}_{entry.model}_{entry.defense}_eps{eps_label(entry.eps)}"
                    f"_n{entry.n}.json")
            _write(Path(str(json_dir)) / name, to_robustbench_json(entry))
    return text


def run(cfg: DictConfig, ctx: TaskContext) -> list[ResultRow]:
    """Leaderboard of ``task.kind`` filtered by ``task.dataset`` / ``task.threat_model`` (null = all)."""
    t = cfg.task
    if t.kind == "caption":
        print(caption_markdown(build_caption_entries(ctx.store, dataset=t.dataset)))
    else:
        render(ctx.store, t.dataset, t.threat_model, sort_by=t.sort_by, csv=t.csv, html=t.html, json_dir=t.json_dir)
    return []
