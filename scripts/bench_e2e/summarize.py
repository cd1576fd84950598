#!/usr/bin/env python3
"""The table of scripts/bench-e2e.sh: medians over rounds of each run's figures, ours/diffusers
ratios, and whether the goals are met.

    python scripts/bench_e2e/summarize.py RESULTS.tsv [--cpu NAME] [--flags F] [--dtypes D] \
        [--model DIR] [--strict]

RESULTS.tsv has one `run<TAB>round<TAB>key<TAB>value` line per figure; value `FAIL` (key
`status`) marks a failed run. Goals (for "ours" = the native-kernel run): total time <= 0.6 x
diffusers', peak RSS <= diffusers'. With --strict the exit status is 1 when a goal is missed
or a run failed (else only a failed run makes it nonzero).
"""

import argparse
import collections
import statistics
import sys

RUNS = [("ours", "ours (native)"), ("ours-generic", "ours (WAN_KERNELS=generic)"), ("diffusers", "diffusers")]
STAGES = ["load_s", "text_encode_s", "steps_s", "vae_decode_s", "encode_mp4_s"]
# rest_s: total_s less the stages printed (process start, imports, anything not in a stage).
KEYS = ["total_s"] + STAGES + ["rest_s", "peak_rss_mib"]
TIME_GOAL = 0.6


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("results")
    ap.add_argument("--cpu", default="?")
    ap.add_argument("--flags", default="?")
    ap.add_argument("--dtypes", default="?")
    ap.add_argument("--model", default="?")
    ap.add_argument("--strict", action="store_true")
    a = ap.parse_args()

    per_round = collections.defaultdict(dict)  # (run, round) -> {key: value}
    failed = collections.Counter()
    rounds = set()
    with open(a.results) as f:
        for line in f:
            parts = line.rstrip("\n").split("\t")
            if len(parts) != 4:
                continue
            run, rnd, key, value = parts
            rounds.add(rnd)
            if key == "status":
                if value != "ok":
                    failed[run] += 1
                continue
            try:
                per_round[(run, rnd)][key] = float(value)
            except ValueError:
                pass

    vals = collections.defaultdict(lambda: collections.defaultdict(list))
    for (run, _), figs in per_round.items():
        stages = [figs[k] for k in STAGES if k in figs]
        if stages and "total_s" in figs:
            figs["rest_s"] = figs["total_s"] - sum(stages)
        for k, v in figs.items():
            vals[run][k].append(v)

    med = {run: {k: statistics.median(v) for k, v in keys.items() if v} for run, keys in vals.items()}

    def cell(run, key):
        v = med.get(run, {}).get(key)
        if v is None:
            return "-"
        return f"{v:.0f}" if key == "peak_rss_mib" else f"{v:.2f}"

    def ratio(run, key):
        x, y = med.get(run, {}).get(key), med.get("diffusers", {}).get(key)
        return f"{x / y:.2f}x" if x is not None and y else "-"

    header = ["run"] + KEYS + ["time/diff", "rss/diff", "n", "failed"]
    rows = []
    for run, label in RUNS:
        if run not in vals and not failed[run]:
            continue
        n = len(vals.get(run, {}).get("total_s", []))
        rows.append([label] + [cell(run, k) for k in KEYS] + [ratio(run, "total_s"), ratio(run, "peak_rss_mib"), str(n), str(failed[run])])
    widths = [max(len(r[i]) for r in [header] + rows) for i in range(len(header))]

    print()
    print(f"bench-e2e: text-to-video, medians over {len(rounds)} round(s)")
    print(f"  model:  {a.model}")
    print(f"  dtypes: {a.dtypes}")
    print(f"  CPU:    {a.cpu}")
    print(f"  flags:  {a.flags}")
    print("  total_s = wall time from process start to the mp4 written (measured outside the process); peak_rss_mib = max RSS;")
    print("  stage columns as each side prints them (- = not printed); rest_s = total_s less the printed stages")
    print()
    print("  ".join(h.ljust(w) for h, w in zip(header, widths)))
    print("  ".join("-" * w for w in widths))
    for r in rows:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths)))
    print()

    ok = True
    o, d = med.get("ours", {}), med.get("diffusers", {})
    if "total_s" in o and "total_s" in d:
        t = o["total_s"] / d["total_s"]
        met = t <= TIME_GOAL
        ok &= met
        print(f"goal time  (ours total <= {TIME_GOAL}x diffusers'): {o['total_s']:.2f} s vs {d['total_s']:.2f} s = {t:.2f}x  {'MET' if met else 'NOT MET'}")
    else:
        ok = False
        print("goal time: not measured (a run failed)")
    if "peak_rss_mib" in o and "peak_rss_mib" in d:
        r = o["peak_rss_mib"] / d["peak_rss_mib"]
        met = o["peak_rss_mib"] <= d["peak_rss_mib"]
        ok &= met
        print(f"goal RSS   (ours peak RSS <= diffusers'):    {o['peak_rss_mib']:.0f} MiB vs {d['peak_rss_mib']:.0f} MiB = {r:.2f}x  {'MET' if met else 'NOT MET'}")
    else:
        ok = False
        print("goal RSS: not measured (a run failed)")
    if sum(failed.values()):
        print(f"failed runs: {dict(failed)}")
        return 1
    return 0 if ok or not a.strict else 1


if __name__ == "__main__":
    sys.exit(main())
