"""Sweeps (copg_jax.sweep) and results folders (copg_jax.results).

* The grid size never causes recompilation (``TRACE_COUNTS``).
* A vmapped sweep equals a Python loop over ``train.train`` runs with the sweep's keys,
  seed by seed, bit for bit on CPU, for copg, ipo, rloo (sampled) and md (exact-only, run
  in exact mode).
* Methods trained side by side equal each method swept alone.
* 1 device and 8 simulated host devices give identical curves (subprocesses, since
  ``XLA_FLAGS`` must be set before jax is imported), with padding of the runs axis.
* A CLI run killed with SIGKILL and resumed with ``--resume`` gives the same curves as an
  uninterrupted run; no temporary or half-written file is left behind.
* A folder holding another config is refused unless ``overwrite``; summary/curves shapes.

Small configs throughout, default float32 like the experiments.
"""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import jax
import numpy as np
import pytest

from copg_jax import results as rs
from copg_jax import sweep as sw
from copg_jax import train
from copg_jax.algos.base import StaticConfig
from copg_jax.algos.registry import get_method
from copg_jax.checkpoint import Checkpoint, read_checkpoint, write_checkpoint
from copg_jax.envs.bandit import make_bandit, paper_bandit
from copg_jax.sweep_plan import make_plan

ROOT = Path(__file__).resolve().parents[1]
CFG = StaticConfig(num_steps=40, log_every=10, batch_size=64, dataset_size=512)
METHODS = ("copg", "ipo", "rloo", "md")


def problems():
    """Two instances of the same size (the paper bandit and a variant)."""
    return [paper_bandit(),
            make_bandit([1.0, 3.0, 2.0], None, [0.3, 0.3, 0.4], [0.6, 0.2, 0.2])]


def spec_for(methods=METHODS, grid=None, num_seeds=2, **kw) -> sw.SweepSpec:
    return sw.SweepSpec(
        experiment="test_sweep",
        methods=list(methods),
        grid=grid if grid is not None else {"lr": [1e-2, 5e-2]},
        num_seeds=num_seeds,
        cfg=CFG,
        seed=kw.pop("seed", 3),
        logs_per_chunk=kw.pop("logs_per_chunk", 2),
        **kw,
    )


def metric_curves(curves: dict, method: str) -> dict[str, np.ndarray]:
    pre = f"{method}/"
    return {k[len(pre):]: v for k, v in curves.items() if k.startswith(pre)}


def assert_same(a: dict, b: dict, rtol=1e-5, atol=1e-6) -> bool:
    """allclose on every array of two dicts with the same keys; returns bitwise equality."""
    assert sorted(a) == sorted(b)
    bitwise = True
    for k in a:
        x, y = np.asarray(a[k]), np.asarray(b[k])
        assert x.shape == y.shape, k
        np.testing.assert_allclose(x, y, rtol=rtol, atol=atol, err_msg=k)
        bitwise &= bool(np.array_equal(x, y))
    return bitwise


@pytest.fixture(scope="module")
def side_by_side(tmp_path_factory):
    """All four methods in one sweep over 2 grid points x 2 instances x 2 seeds."""
    out = tmp_path_factory.mktemp("side_by_side")
    spec = spec_for()
    return spec, sw.sweep(spec, problems(), out, progress=False)


# ---------------------------------------------------------------------------------------
# compilation


def test_grid_size_does_not_recompile():
    counts = []
    for lrs in ([1e-2], list(np.geomspace(1e-3, 1e-1, 16))):
        sw.TRACE_COUNTS.clear()
        spec = spec_for(methods=("copg",), grid={"lr": lrs}, num_seeds=2)
        res = sw.sweep(spec, paper_bandit(), progress=False)
        assert res.curves["copg/regret"].shape == (len(lrs), 1, 2, CFG.num_steps // 10 + 1)
        counts.append(dict(sw.TRACE_COUNTS))
    assert counts[0] == counts[1]
    assert counts[0] == {("copg", "init"): 1, ("copg", "chunk"): 1}


# ---------------------------------------------------------------------------------------
# equivalences


def test_sweep_equals_loop_of_single_runs(side_by_side):
    """Every (grid point, instance, seed) of the sweep against its own unbatched run.

    ``train.train`` re-jits on every call (seconds each), so the loop uses one jitted
    ``train.run_single`` per method (what ``train.train`` runs) and ``train.train`` itself
    checks one run per method."""
    spec, res = side_by_side
    probs = problems()
    base = jax.random.PRNGKey(spec.seed)
    bitwise = {}
    for name in METHODS:
        m = get_method(name, "bandit")
        cfg = CFG if m.has_sampled_mode else CFG.replace(mode="exact")
        assert res.summary["grid"][0]["methods"][name]["mode"] == cfg.mode
        curves = metric_curves(res.curves, name)
        single = jax.jit(lambda p, h, k, m=m, cfg=cfg: train.run_single(m, p, h, cfg, k))
        same = True
        for gi, point in enumerate(spec.grid_points()):
            hp = m.resolve_hparams({**spec.hparams, **point})
            for i, problem in enumerate(probs):
                for s in range(spec.num_seeds):
                    key = jax.random.fold_in(jax.random.fold_in(base, i), s)
                    got = {k: v[gi, i, s] for k, v in curves.items()}
                    run = single(problem, train.to_hparams(m, hp), key)
                    same &= assert_same(got, jax.device_get(run.metrics))
                    if (gi, i, s) == (1, 1, 1):
                        run = train.train(name, problem, hp, cfg, seed=key)
                        same &= assert_same(got, jax.device_get(run.metrics))
        bitwise[name] = same
    print("sweep vs single runs, bitwise equal:", bitwise)
    # The grid is vmapped inside each (instance, seed) unit on its shared data: on CPU a
    # sweep's run is the single run bit for bit (before, only to float32 rounding).
    assert all(bitwise.values()), bitwise


def test_side_by_side_equals_methods_alone(side_by_side):
    spec, res = side_by_side
    bitwise = {}
    for name in METHODS:
        if "lr" in get_method(name).hparams:
            alone = sw.sweep(spec_for(methods=(name,)), problems(), progress=False)
            bitwise[name] = assert_same(metric_curves(res.curves, name),
                                        metric_curves(alone.curves, name))
            continue
        # A method that ignores lr cannot be swept over lr alone (refused: the runs would
        # be identical); side by side, each lr grid point equals its run without the axis.
        alone = sw.sweep(spec_for(methods=(name,), grid={}), problems(), progress=False)
        side = metric_curves(res.curves, name)
        bitwise[name] = all(assert_same({k: v[g:g + 1] for k, v in side.items()},
                                        metric_curves(alone.curves, name))
                            for g in range(len(spec.grid["lr"])))
    print("side by side vs alone, bitwise equal:", bitwise)


DEVICE_SCRIPT = textwrap.dedent("""
    import sys
    import jax
    import numpy as np
    from copg_jax import sweep as sw
    from copg_jax.algos.base import StaticConfig
    from copg_jax.envs.bandit import paper_bandit

    n_dev, out = int(sys.argv[1]), sys.argv[2]
    assert jax.device_count() == n_dev, jax.devices()
    cfg = StaticConfig(num_steps=40, log_every=10, batch_size=64, dataset_size=512)
    # 2 x 5 = 10 runs: one program of 10 runs on 1 device, padded to 16 on 8 devices.
    spec = sw.SweepSpec("devices", methods=["copg", "rloo", "md"], grid={"lr": [1e-2, 5e-2]},
                        num_seeds=5, cfg=cfg, seed=1, logs_per_chunk=2)
    arrays = sw.sweep(spec, paper_bandit(), progress=False).curves
    np.savez(out, **arrays)
""")


def _env(**extra) -> dict:
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    env.update(JAX_PLATFORMS="cpu", **extra)
    return env


def test_one_device_equals_eight_devices(tmp_path):
    script = tmp_path / "run.py"
    script.write_text(DEVICE_SCRIPT)
    procs = {}
    for n in (1, 8):
        env = _env(XLA_FLAGS=f"--xla_force_host_platform_device_count={n}")
        procs[n] = subprocess.Popen([sys.executable, str(script), str(n),
                                     str(tmp_path / f"curves{n}.npz")],
                                    cwd=ROOT, env=env, stdout=subprocess.PIPE,
                                    stderr=subprocess.PIPE, text=True)
    for n, p in procs.items():
        _, err = p.communicate(timeout=300)
        assert p.returncode == 0, f"{n} devices:\n{err[-3000:]}"
    one = rs.read_npz(tmp_path / "curves1.npz")
    eight = rs.read_npz(tmp_path / "curves8.npz")
    bitwise = assert_same(one, eight)
    # Bitwise: the same per-run arithmetic whatever the sharding. (With max_parallel
    # slices of different per-device sizes, XLA may vectorize rloo differently: last-ulp
    # differences, ~2e-7, were seen; hence no max_parallel here.)
    assert bitwise


# ---------------------------------------------------------------------------------------
# kill and resume


CLI_ARGS = ["--seeds", "8", "--epochs", "100", "--num_pairs", "1024", "--batch_size",
            "128", "--methods", "copg,rloo", "--noprogress"]


def _cli(out: Path, *extra: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "experiments.copg_bandit", "--out", str(out), *CLI_ARGS,
         *extra],
        cwd=ROOT, env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )


def _tmp_files(folder: Path) -> list[Path]:
    return sorted(folder.rglob(".*.tmp"))


def test_kill_and_resume_gives_identical_curves(tmp_path):
    ref_dir, run_dir = tmp_path / "reference", tmp_path / "killed"
    ref = _cli(ref_dir)
    proc = _cli(run_dir)
    ckpt = run_dir / rs.CHECKPOINT / "group.npz"
    deadline = time.monotonic() + 240
    while not ckpt.exists():
        assert proc.poll() is None, f"finished before a checkpoint:\n{proc.stderr.read()}"
        assert time.monotonic() < deadline, "no checkpoint appeared"
        time.sleep(0.002)
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=60)
    assert proc.returncode == -signal.SIGKILL
    # Killed mid-sweep: a checkpoint, no final results yet.
    assert ckpt.exists()
    assert not (run_dir / rs.CURVES).exists() and not (run_dir / rs.SUMMARY).exists()
    # Nothing under a final name is half-written.
    for path in run_dir.rglob("*"):
        if path.name.startswith("."):
            continue
        if path.suffix == ".json":
            json.loads(path.read_text())
        elif path.suffix == ".npz":
            saved = rs.read_npz(path)
            assert "slice" in saved and "chunk" in saved
            assert (int(saved["slice"]), int(saved["chunk"])) != (0, 0)

    resumed = _cli(run_dir, "--resume")
    _, err = resumed.communicate(timeout=300)
    assert resumed.returncode == 0, err[-3000:]
    _, err = ref.communicate(timeout=300)
    assert ref.returncode == 0, err[-3000:]

    a, b = rs.read_npz(ref_dir / rs.CURVES), rs.read_npz(run_dir / rs.CURVES)
    assert sorted(a) == sorted(b)
    for k in a:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)
    assert not _tmp_files(run_dir) and not _tmp_files(ref_dir)
    assert not (run_dir / rs.CHECKPOINT).exists()
    for path in (run_dir / rs.SUMMARY, run_dir / rs.CONFIG):
        json.loads(path.read_text())


# ---------------------------------------------------------------------------------------
# results folders


def test_folder_with_other_config_is_refused(tmp_path):
    spec_a = spec_for(methods=("copg",), grid={"lr": [1e-2]}, num_seeds=1)
    spec_b = spec_for(methods=("copg",), grid={"lr": [2e-2]}, num_seeds=1)
    sw.sweep(spec_a, paper_bandit(), tmp_path, progress=False)
    fp_a = rs.read_json(tmp_path / rs.CONFIG)["fingerprint"]
    with pytest.raises(ValueError, match="--overwrite"):
        sw.sweep(spec_b, paper_bandit(), tmp_path, progress=False)
    assert rs.read_json(tmp_path / rs.CONFIG)["fingerprint"] == fp_a  # untouched
    res_b = sw.sweep(spec_b, paper_bandit(), tmp_path, overwrite=True, progress=False)
    cfg = rs.read_json(tmp_path / rs.CONFIG)
    assert cfg["fingerprint"] != fp_a and cfg["config"]["grid"] == {"lr": [2e-2]}
    # The same config again is allowed (and reproduces the curves).
    again = sw.sweep(spec_b, paper_bandit(), tmp_path, progress=False)
    assert rs.read_json(tmp_path / rs.CONFIG)["fingerprint"] == cfg["fingerprint"]
    for k, v in res_b.curves.items():
        np.testing.assert_array_equal(v, again.curves[k], err_msg=k)
    assert not _tmp_files(tmp_path)


def test_summary_and_curves_shape(side_by_side):
    spec, res = side_by_side
    summary, curves = rs.load_results(res.out)
    assert {"experiment", "version", "config", "grid", "timing"} <= set(summary)
    assert summary["experiment"] == "test_sweep"
    assert summary["config"]["grid"] == {"lr": [1e-2, 5e-2]}
    assert summary["config"]["num_seeds"] == 2
    assert isinstance(summary["grid"], list) and len(summary["grid"]) == 2
    for entry, point in zip(summary["grid"], spec.grid_points(), strict=True):
        assert set(entry) == {"hparams", "methods"}
        assert entry["hparams"] == point
        assert list(entry["methods"]) == list(METHODS)
        for stats in entry["methods"].values():
            # Two distinct problems: an interval for each, none over both (copg_jax.stats).
            assert stats["final_regret_ci95"] is None
            for (lo, hi), mean in zip(stats["final_regret_ci95_by_instance"],
                                      stats["final_regret_by_instance"], strict=True):
                assert lo <= mean <= hi
    assert {"compile_s", "run_s"} <= set(summary["timing"])
    assert all(summary["timing"][k] >= 0 for k in ("compile_s", "run_s"))
    num_logs = CFG.num_steps // CFG.log_every + 1
    np.testing.assert_array_equal(curves["steps"], np.arange(0, CFG.num_steps + 1, 10))
    for name in METHODS:
        for metric in ("regret", "expected_reward", "kl_to_ref"):
            assert curves[f"{name}/{metric}"].shape == (2, 2, 2, num_logs)  # G, I, S, L
            assert np.all(np.isfinite(curves[f"{name}/{metric}"]))
    assert sorted(curves) == sorted(res.curves)
    assert not _tmp_files(res.out) and not (res.out / rs.CHECKPOINT).exists()


# ---------------------------------------------------------------------------------------
# epoch permutations computed ahead of each chunk (keeps the chunk program cacheable)


def test_permutations_ahead_of_chunks_give_identical_curves(monkeypatch):
    """4 steps per epoch, 15 per chunk: chunks start mid-epoch. The sweep's permutations
    computed ahead (the default on CPU) give the curves of shuffling inside the chunk."""
    cfg = StaticConfig(num_steps=60, log_every=5, batch_size=64, dataset_size=300)
    spec = sw.SweepSpec("ahead", methods=["copg", "ipo", "is_pg_self_normalized", "rloo"],
                        grid={"lr": [1e-2, 3e-2]}, num_seeds=3, cfg=cfg, seed=2,
                        logs_per_chunk=3)
    ahead = sw.sweep(spec, paper_bandit(), progress=False).curves
    monkeypatch.setattr(sw, "PERMS_MAX_BYTES", 0)  # too large: shuffle inside
    inside = sw.sweep(spec, paper_bandit(), progress=False).curves
    assert assert_same(ahead, inside)


def test_chunk_program_with_permutations_ahead_has_no_host_callback():
    """JAX's persistent cache skips programs with host callbacks (the CPU NumPy sort): with
    the permutations passed in, the chunk program has none."""
    from copg_jax import data as data_lib

    problem = paper_bandit()
    cfg = StaticConfig(num_steps=20, log_every=5, batch_size=64, dataset_size=256)
    m = get_method("copg", "bandit")
    group = train.Group((m,), (cfg,))
    hps = (train.to_hparams(m, None),)
    gs, targets, _ = train.init_group(group, problem, hps, jax.random.PRNGKey(0))
    first, count = train.chunk_epochs(group, 0, 4)
    perms = data_lib.epoch_permutations(gs.data.shuffle_key, first, count, 256)

    def chunk(*pm):
        return train.run_group_chunk(group, problem, hps, gs, targets, 0, 4, *pm)

    assert data_lib.uses_host_sort(256)
    assert "callback" in jax.jit(chunk).lower().as_text()
    assert "callback" not in jax.jit(chunk).lower(perms).as_text()


# ---------------------------------------------------------------------------------------
# per-method hyperparameters


def test_method_hparams_in_one_sweep_equal_separate_sweeps():
    """Each method's own step size inside one program gives the curves of one sweep per
    method with that step size as a shared hyperparameter."""
    cfg = StaticConfig(num_steps=30, log_every=10, batch_size=64, dataset_size=256)
    own = {"copg": {"lr": 3e-2}, "rloo": {"lr": 1e-2}, "md": {"eta": 0.2}}
    spec = sw.SweepSpec("per_method", methods=list(own), grid={"beta": [0.5, 1.0]},
                        num_seeds=2, cfg=cfg, method_hparams=own, seed=4)
    together = sw.sweep(spec, paper_bandit(), progress=False)
    for m, hp in own.items():
        alone = sw.sweep(sw.SweepSpec("alone", methods=[m], grid={"beta": [0.5, 1.0]},
                                      num_seeds=2, cfg=cfg, hparams=hp, seed=4),
                         paper_bandit(), progress=False)
        keys = [k for k in alone.curves if k.startswith(f"{m}/")]
        assert assert_same({k: together.curves[k] for k in keys},
                           {k: alone.curves[k] for k in keys})
        for entry in together.summary["grid"]:
            assert entry["methods"][m]["hparams"].items() >= hp.items()
    assert together.summary["config"]["method_hparams"] == own


def test_method_hparams_are_validated():
    cfg = StaticConfig(num_steps=10, log_every=10, batch_size=64, dataset_size=256)
    with pytest.raises(ValueError, match=r"method_hparams: .*'ipo'"):
        sw.validate(sw.SweepSpec("x", methods=["copg"], cfg=cfg,
                                 method_hparams={"ipo": {"lr": 1.0}}))
    with pytest.raises(ValueError, match=r"lr: must lie in \(0, inf\), got -1"):
        sw.validate(sw.SweepSpec("x", methods=["copg"], cfg=cfg,  # no problems: the kind
                                 method_hparams={"copg": {"lr": -1.0}}, problem_kind="bandit"))


# ---------------------------------------------------------------------------------------
# the problems own their kind (no kind string)


def test_sweeps_over_an_mdp_and_a_game_need_no_kind_string():
    """``copg`` exists for bandits and MDPs: the Garnet instances decide. The curves and
    the fingerprinted config equal those of the spec that names the kind."""
    from copg_jax.envs.games import egpo_random
    from copg_jax.envs.mdp import garnet

    mdps = [garnet(jax.random.PRNGKey(i), 4, 2, 2, 3) for i in range(2)]
    mdp_cfg = StaticConfig(num_steps=20, log_every=10, batch_size=16, dataset_size=64)
    game_cfg = StaticConfig(data="on_policy", num_steps=20, log_every=10, batch_size=16,
                            optimizer="sgd")
    cases = [("mdp", mdps, ["copg", "pmd"], {"beta": [0.5]}, mdp_cfg),
             ("game", egpo_random(jax.random.PRNGKey(0), 3), ["nash_md"], {"tau": [0.1]},
              game_cfg)]
    for kind, probs, methods, grid, cfg in cases:
        spec = sw.SweepSpec("no_kind", methods=methods, grid=grid, num_seeds=2, cfg=cfg)
        assert spec.problem_kind is None
        res = sw.sweep(spec, probs, progress=False)
        named = sw.sweep(sw.SweepSpec("no_kind", kind, methods, grid, 2, cfg), probs,
                         progress=False)
        assert res.summary["config"]["problem_kind"] == kind
        assert res.summary["config"] == named.summary["config"]
        assert assert_same(res.curves, named.curves), kind  # bitwise
        assert all(np.all(np.isfinite(v)) for v in res.curves.values())


def test_a_kind_that_is_not_the_problems_is_refused_before_anything_runs(tmp_path):
    sw.TRACE_COUNTS.clear()
    spec = spec_for(methods=("copg",), problem_kind="mdp")
    with pytest.raises(ValueError, match=r"^problem_kind: .*'mdp'.*Bandit.*'bandit'"):
        sw.sweep(spec, paper_bandit(), tmp_path / "out", progress=False)
    assert not sw.TRACE_COUNTS and not (tmp_path / "out").exists()


def test_validate_without_problems_refuses_what_every_possible_kind_refuses(monkeypatch):
    """Without problems and without ``problem_kind``, a method name of two kinds leaves
    the kind open: ``validate`` refuses only what both kinds refuse (the sweep checks the
    rest for its problems' kind). Game-only method names imply their kind."""
    from copg_jax.algos import registry

    cfg = StaticConfig(num_steps=10, log_every=10, batch_size=64, dataset_size=256)
    spec = sw.SweepSpec("x", methods=["copg"], grid={"lr": [1e-2]}, cfg=cfg)  # bandit, mdp
    assert sw.resolve_kind(spec) is None and sw.validate(spec) == []
    assert [m.name for m in sw.validate(spec, paper_bandit())] == ["copg"]
    with pytest.raises(ValueError, match=r"lr: must lie in \(0, inf\), got -1"):
        sw.validate(dataclasses.replace(spec, grid={"lr": [-1.0]}))
    with pytest.raises(ValueError, match=r"^methods: no problem kind has all of "
                                         r"\['copg', 'nash_md'\]"):
        sw.validate(dataclasses.replace(spec, methods=["copg", "nash_md"]))
    with pytest.raises(ValueError, match=r"^problem_kind: .*\['copg'\]"):
        spec.to_config()
    # "twin" reads lr for bandits (copg's), eta for MDPs (pmd's): each grid suits one kind.
    monkeypatch.setitem(registry._REGISTRY, ("bandit", "twin"),
                        dataclasses.replace(get_method("copg", "bandit"), name="twin"))
    monkeypatch.setitem(registry._REGISTRY, ("mdp", "twin"),
                        dataclasses.replace(get_method("pmd", "mdp"), name="twin"))
    exact = cfg.replace(mode="exact")
    for grid, kind in (({"lr": [1e-2]}, "bandit"), ({"eta": [0.5]}, "mdp")):
        twin = sw.SweepSpec("t", methods=["twin"], grid=grid, cfg=exact)
        assert sw.validate(twin) == []
        with pytest.raises(ValueError, match=r"^grid: .*read by none"):
            sw.validate(dataclasses.replace(twin, problem_kind={"bandit": "mdp",
                                                                "mdp": "bandit"}[kind]))
        assert [m.name for m in sw.validate(dataclasses.replace(twin, problem_kind=kind))] \
            == ["twin"]
    game = sw.SweepSpec("g", methods=["nash_md", "omd"], grid={"tau": [0.1]}, cfg=cfg)
    assert [m.name for m in sw.validate(game)] == ["nash_md", "omd"]
    assert game.to_config()["problem_kind"] == "game"


# ---------------------------------------------------------------------------------------
# plan and checkpoint records


def test_plan_pads_the_units_axis_to_whole_slices_of_devices():
    """3 grid points × 2 instances × 5 seeds: 10 (instance, seed) units of 3 runs each;
    max_parallel = 7 runs is 2 units, rounded up to the 4 devices."""
    plan = make_plan(3, 2, 5, num_steps=60, log_every=5, logs_per_chunk=5, max_parallel=7,
                     num_devices=4)
    assert (plan.num_runs, plan.num_units, plan.per_slice, plan.num_slices, plan.padded) == \
        (30, 10, 4, 3, 12)
    assert (plan.num_logs, plan.logs_per_chunk, plan.num_chunks) == (12, 4, 3)
    unit = np.arange(10)
    np.testing.assert_array_equal(plan.instance[:10], unit // 5)  # seeds vary fastest
    np.testing.assert_array_equal(plan.seed[:10], unit % 5)
    np.testing.assert_array_equal(plan.seed[10:], [0, 1])  # padding repeats the first units
    assert plan.rows(2) == slice(8, 12) and plan.real_rows(2) == 2
    curves = np.arange(12 * 3 * 13.0).reshape(12, 3, 13)  # [units, G, L+1]
    shaped = plan.shaped({"m": {"k": curves}})["m"]["k"]
    assert shaped.shape == (3, 2, 5, 13) and shaped[2, 1, 4, 0] == curves[9, 2, 0]


def test_checkpoint_record_round_trips_through_its_file(tmp_path):
    """The record <-> the file layout that older checkpoints have (``m/<method>/<metric>``,
    ``slice``, ``chunk``, ``s/leaf<i>``; no state at a slice boundary)."""
    curves = {"copg": {"regret": np.arange(6.0).reshape(2, 3)},
              "md": {"kl_to_ref": np.full((2, 3), np.nan, np.float32)}}
    state = (np.arange(3, dtype=np.int32), np.ones((2, 2), np.float32))
    path = tmp_path / "group.npz"
    for ckpt in (Checkpoint(curves, 1, 2, state), Checkpoint(curves, 2, 0, None)):
        write_checkpoint(path, ckpt)
        keys = set(rs.read_npz(path))
        assert {"m/copg/regret", "m/md/kl_to_ref", "slice", "chunk"} <= keys
        assert ({"s/leaf0", "s/leaf1"} <= keys) == (ckpt.state is not None)
        back = read_checkpoint(path)
        assert (back.next_slice, back.next_chunk) == (ckpt.next_slice, ckpt.next_chunk)
        assert assert_same(back.curves["copg"], curves["copg"])
        assert back.curves["md"]["kl_to_ref"].dtype == np.float32
        if ckpt.state is None:
            assert back.state is None
        else:
            assert all(np.array_equal(a, b) and a.dtype == b.dtype
                       for a, b in zip(back.state, state, strict=True))


def test_resume_at_a_slice_boundary_gives_identical_curves(tmp_path, monkeypatch):
    """Interrupted right after a slice's last chunk (a checkpoint without state), the
    resumed sweep starts the next slice from its initialization."""
    spec = spec_for(methods=("copg", "md"), max_parallel=3)  # 8 runs: 3 slices of 3
    ref = sw.sweep(spec, problems(), progress=False)

    def interrupted(path, ckpt):
        write_checkpoint(path, ckpt)
        if ckpt.next_slice == 1 and ckpt.state is None:
            raise KeyboardInterrupt

    monkeypatch.setattr(sw, "write_checkpoint", interrupted)
    with pytest.raises(KeyboardInterrupt):
        sw.sweep(spec, problems(), tmp_path, progress=False)
    monkeypatch.undo()
    saved = read_checkpoint(tmp_path / rs.CHECKPOINT / "group.npz")
    assert (saved.next_slice, saved.next_chunk, saved.state) == (1, 0, None)
    res = sw.sweep(spec, problems(), tmp_path, resume=True, progress=False)
    for k, v in ref.curves.items():
        np.testing.assert_array_equal(v, res.curves[k], err_msg=k)


def test_ctrl_c_inside_a_host_callback_is_a_keyboard_interrupt():
    """JAX reports an exception raised in a host callback (the CPU sort of the epoch
    permutations) as a JaxRuntimeError; a Ctrl-C there must stay a KeyboardInterrupt."""
    def interrupted(x):
        raise KeyboardInterrupt

    f = jax.jit(lambda x: jax.pure_callback(interrupted, jax.ShapeDtypeStruct((3,), x.dtype),
                                            x))
    with pytest.raises(KeyboardInterrupt):
        sw._timed(f, jax.numpy.ones(3))
    with pytest.raises(jax.errors.JaxRuntimeError):  # any other failure stays what it is
        sw._timed(jax.jit(lambda x: jax.pure_callback(lambda _: 1 / 0, jax.ShapeDtypeStruct(
            (3,), x.dtype), x)), jax.numpy.ones(3))
