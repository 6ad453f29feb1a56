"""Does the learned controller find better students than the baselines? Measured, not assumed.

Runs the same small KD-NAS search (same teacher, profile, proxy set and number of
proxy-distilled candidates) with the lstm, random and evolution controllers over several seeds
and prints a Markdown table: best reward found (mean +- std over seeds), best hidden-state
loss, and wall time per search.

    .venv/bin/python benchmarks/search_controllers.py --target profiles/amd-epyc-onnxruntime.json \
        --episodes 5 --candidates 4 --seeds 0 1 2 --output runs/bench-search
"""

from __future__ import annotations

import argparse
import statistics
from pathlib import Path

from kdcompress.search.proxy import ProxySettings
from kdcompress.search.reward import RewardSettings
from kdcompress.search.runner import RESULT_FILE, SearchResult, SearchSettings, run_search
from kdcompress.space import SearchSpace


def parse() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--target", type=Path, required=True)
    parser.add_argument("--teacher", default="me5-small")
    parser.add_argument("--episodes", type=int, default=5)
    parser.add_argument("--candidates", type=int, default=4)
    parser.add_argument("--pool", type=int, default=100)
    parser.add_argument("--proxy-size", type=int, default=256)
    parser.add_argument("--proxy-steps", type=int, default=40)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--controllers", nargs="+", default=["lstm", "random", "evolution"])
    parser.add_argument("--output", type=Path, default=Path("runs/bench-search"))
    return parser.parse_args()


def one_search(args: argparse.Namespace, controller: str, seed: int) -> SearchResult:
    out = args.output / f"{controller}-seed{seed}"
    if (out / RESULT_FILE).is_file():  # finished earlier: the benchmark resumes too
        return SearchResult.load(out / RESULT_FILE)
    settings = SearchSettings(
        teacher=args.teacher,
        target=str(args.target),
        episodes=args.episodes,
        candidates=args.candidates,
        pool=args.pool,
        seed=seed,
        seq_len=128,
        controller=controller,
        reward=RewardSettings(),
        proxy=ProxySettings(sentences=args.proxy_size, steps=args.proxy_steps),
        space=SearchSpace(),
    )
    # The proxy set depends on the seed only, so every controller of one seed is scored on the
    # same sentences; the teacher's targets for them are computed once and shared.
    shared_cache = args.output / f"teacher-cache-seed{seed}"
    out.mkdir(parents=True, exist_ok=True)
    if shared_cache.exists() and not (out / "teacher-cache").exists():
        (out / "teacher-cache").symlink_to(shared_cache.resolve())
    resume = (out / "search-settings.json").is_file()
    # The folder may already hold the shared teacher-cache link: overwrite keeps it.
    result = run_search(settings=settings, output=out, resume=resume, overwrite=not resume)
    if not shared_cache.exists():
        (out / "teacher-cache").rename(shared_cache)
        (out / "teacher-cache").symlink_to(shared_cache.resolve())
    return result


def main() -> None:
    args = parse()
    rows = []
    for controller in args.controllers:
        results = [one_search(args, controller, seed) for seed in args.seeds]
        best_rewards = [r.ranked[0].reward for r in results]
        best_losses = [min(c.proxy_loss for c in r.ranked) for r in results]
        minutes = [r.wall_s / 60 for r in results]
        spread = statistics.stdev(best_rewards) if len(best_rewards) > 1 else 0.0
        rows.append(
            f"| {controller} | {statistics.mean(best_rewards):.4f} +- {spread:.4f} | "
            f"{statistics.mean(best_losses):.4f} | {len(results[0].ranked)} | "
            f"{statistics.mean(minutes):.1f} |"
        )
    print(
        f"{args.episodes} episodes x {args.candidates} candidates, proxy "
        f"{args.proxy_size} sentences x {args.proxy_steps} steps, seeds {args.seeds}\n"
    )
    print("| controller | best reward (mean +- std) | best L_HS (mean) | candidates | min/search |")
    print("|---|---|---|---|---|")
    print("\n".join(rows))


if __name__ == "__main__":
    main()
