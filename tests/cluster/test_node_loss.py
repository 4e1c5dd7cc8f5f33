"""A real 2-node Ray cluster on 127.0.0.1 (ray.cluster_utils.Cluster: a head with no CPUs and
two 1-CPU worker nodes): a section spreads its trials over both nodes, and when one node is
killed mid-section, its trial is retried on the other node from its last checkpoint and the
section completes. Runs in its own process (the test session's Ray is a different cluster)."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

SCRIPT = textwrap.dedent('''
    import io, json, sys, threading, time
    from pathlib import Path
    import ray
    from ray.cluster_utils import Cluster
    from ray.util.state import list_actors

    import socket
    with socket.socket() as s:  # the test session's Ray holds the default dashboard port
        s.bind(("127.0.0.1", 0))
        dashboard_port = s.getsockname()[1]
    # The dashboard serves the State API the watcher below uses.
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 0, "dashboard_port": dashboard_port,
                                                            "include_dashboard": True, "dashboard_host": "127.0.0.1"})
    nodes = [cluster.add_node(num_cpus=1) for _ in range(2)]
    ray.init(address=cluster.address, log_to_driver=False)
    from expgrid.runner import RunOptions, prepare, run_study

    study, spec = prepare(sys.argv[1])
    results = Path(sys.argv[2])
    killed = {}

    def kill_a_node_mid_trial():
        rows = results / "sections" / "s" / "rows.jsonl"
        while True:  # once some trial has checkpointed 3 epochs, kill the node it runs on
            lines = rows.read_text().splitlines()[:-1] if rows.exists() else []
            done = [json.loads(x) for x in lines]
            if any(d["row"]["epoch"] >= 3 for d in done):
                break
            time.sleep(0.1)
        # Tune's trial actors (class ImplicitFunc, the wrapped trainable)
        actors = list_actors(address=cluster.address, filters=[("state", "=", "ALIVE")])  # this cluster, not another
        busy = {a.node_id for a in actors if a.class_name in ("ImplicitFunc", "_trial_entry")}
        victim = next(n for n in nodes if n.node_id in busy)
        killed["node"] = victim.node_id
        cluster.remove_node(victim, allow_graceful=False)

    def watch():
        try:
            kill_a_node_mid_trial()
        except Exception as e:  # shown in the test's failure message
            print(f"watcher failed: {type(e).__name__}: {e}", file=sys.stderr)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    outcome = run_study(study, spec, RunOptions(results_dir=results, stream=io.StringIO()))
    watcher.join(timeout=5)
    # A file, not stdout: the dying raylets print their own log lines to stdout.
    Path(sys.argv[3]).write_text(json.dumps({"killed": killed.get("node"), "nodes": [n.node_id for n in nodes],
                                             "trials": [t.to_json() for t in outcome.sections[0].trials]}))
    ray.shutdown()
    cluster.shutdown()
''')

STUDY = textwrap.dedent("""
    study: nodeloss
    trainable: toy
    metric: score
    defaults: {epochs: 8, sleep: 0.5}
    checkpoint_every: 1
    max_failures: 3
    sections:
      - {id: s, grid: {x: [0, 1, 2, 3]}}
""")


def test_a_killed_worker_node_costs_no_finished_work(tmp_path):
    study = tmp_path / "study.yaml"
    study.write_text(STUDY)
    outcome = tmp_path / "outcome.json"
    proc = subprocess.run([sys.executable, "-c", SCRIPT, str(study), str(tmp_path / "r"), str(outcome)],
                          capture_output=True, text=True, timeout=600)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-4000:]
    out = json.loads(outcome.read_text())
    trials = out["trials"]
    assert out["killed"] in out["nodes"], proc.stderr[-3000:]
    # Spread: trials ran on both worker nodes.
    assert {node for t in trials for node in t["nodes"]} == set(out["nodes"])
    # The section completed, every trial with all its epochs.
    assert [t["status"] for t in trials] == ["completed"] * 4
    assert all([r["epoch"] for r in t["history"]] == list(range(1, 9)) for t in trials)
    # The trial on the killed node moved to the other node and went on from its checkpoint.
    moved = [t for t in trials if t["retries"] >= 1]
    assert moved, trials
    for t in moved:
        assert t["nodes"][0] == out["killed"] and t["nodes"][-1] != out["killed"]
        assert t["history"][-1]["resumed_from"] >= 2
    # Trials that had finished before the kill were not run again.
    assert all(t["retries"] == 0 for t in trials if t["ended"] < min(m["ended"] for m in moved) and t not in moved)
