"""Sweeps under DDP and ModelParallelStrategy for real: 2 CPU processes (gloo) with ``ddp``, ``ddp_spawn``,
FSDP2 and tensor parallel, and 2 nodes under torchrun.

Lightning's ``ddp`` launcher re-runs the *script* in the other ranks, which cannot be pytest itself, so each
fixture runs ``ddp_scripts/sweep_ddp.py`` in a subprocess (with a timeout: a hang fails instead of blocking)
and every rank dumps what it saw as JSON; the tests compare the ranks.
"""

from __future__ import annotations

import json
import math
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.distributed

pytestmark = [
    pytest.mark.ddp,
    pytest.mark.skipif(not torch.distributed.is_available(), reason="needs torch.distributed"),
]

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = Path(__file__).resolve().parent / "ddp_scripts" / "sweep_ddp.py"
FSDP_SCRIPT = SCRIPT.with_name("sweep_fsdp.py")
_LAUNCH_VARS = ("LOCAL_RANK", "RANK", "WORLD_SIZE", "LOCAL_WORLD_SIZE", "NODE_RANK", "GROUP_RANK", "MASTER_ADDR")
_LAUNCH_VARS += ("MASTER_PORT", "TORCHELASTIC_RUN_ID", "SLURM_NTASKS", "SLURM_JOB_ID", "PL_GLOBAL_SEED")


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in _LAUNCH_VARS}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH", "")) if p)  # this checkout
    env["OMP_NUM_THREADS"] = "1"
    return env


def _launch(*commands: list[str], timeout: float) -> None:
    """Run the commands side by side; kill their process groups (launched ranks included) if they overrun."""
    procs = [
        subprocess.Popen(
            cmd,
            cwd=ROOT,
            env=_env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )
        for cmd in commands
    ]
    outputs = []
    try:
        for proc in procs:
            outputs.append(proc.communicate(timeout=timeout)[0])
    except subprocess.TimeoutExpired:
        for proc in procs:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
        pytest.fail(f"DDP run did not finish within {timeout}s (a hang?): {commands}")
    for proc, output in zip(procs, outputs, strict=True):
        assert proc.returncode == 0, output[-6000:]


def _ranks(out: Path, mode: str, n: int = 2) -> list[dict]:
    return [json.loads((out / f"{mode}_rank_{rank}.json").read_text()) for rank in range(n)]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _run(tmp_path_factory: pytest.TempPathFactory, script: Path, mode: str, n: int, timeout: float):
    """Runs ``script mode OUT`` in a subprocess: what its ``n`` ranks reported, and OUT."""
    out = tmp_path_factory.mktemp(mode)
    _launch([sys.executable, str(script), mode, str(out)], timeout=timeout)
    return _ranks(out, mode, n), out


@pytest.fixture(scope="module")
def ddp_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[list[dict], Path]:
    return _run(tmp_path_factory, SCRIPT, "ddp", n=2, timeout=150)


@pytest.fixture(scope="module")
def spawn_run(tmp_path_factory: pytest.TempPathFactory) -> dict:
    ranks, _ = _run(tmp_path_factory, SCRIPT, "ddp_spawn", n=1, timeout=150)  # the main process: the workers are gone
    return ranks[0]


@pytest.fixture(scope="module")
def multinode_run(tmp_path_factory: pytest.TempPathFactory) -> list[dict]:
    out, port = tmp_path_factory.mktemp("multinode"), _free_port()
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--nnodes=2", "--nproc-per-node=1"]
    nodes = [
        [*torchrun, f"--node-rank={node}", "--master-addr=127.0.0.1", f"--master-port={port}"]
        + [str(SCRIPT), "multinode", str(out)]
        for node in (0, 1)
    ]
    _launch(*nodes, timeout=150)
    return _ranks(out, "multinode")


@pytest.fixture(scope="module")
def fsdp_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[list[dict], Path]:
    return _run(tmp_path_factory, FSDP_SCRIPT, "fsdp", n=2, timeout=240)


@pytest.fixture(scope="module")
def mesh2d_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[list[dict], Path]:
    return _run(tmp_path_factory, FSDP_SCRIPT, "2d", n=4, timeout=240)


def _losses(curve: dict) -> list[float]:
    return [float(x) for x in curve["losses"]]


def test_curve_is_the_mean_over_ranks_and_accumulated_micro_batches(ddp_run):
    ranks, _ = ddp_run
    first, second = (r["tuner_curve"] for r in ranks)
    assert first["curve"] == second["curve"]  # the same SweepResult on every rank
    steps = len(first["curve"]["lrs"])
    assert steps == 8
    assert first["gradient_allreduces"] == second["gradient_allreduces"] == steps  # only the last micro-batch syncs
    own = [r["rank_losses"] for r in (first, second)]
    assert all(len(losses) == 2 * steps for losses in own)  # accumulate_grad_batches=2
    assert own[0] != own[1]  # each rank swept its own shard
    expected = [sum(losses[2 * k] + losses[2 * k + 1] for losses in own) / 4 for k in range(steps)]
    assert _losses(first["curve"]) == pytest.approx(expected, rel=1e-9)
    assert first["restored"] and second["restored"]


def test_validation_mode_and_race_agree_on_every_rank(ddp_run):
    ranks = [r["val_mode_and_race"] for r in ddp_run[0]]
    assert ranks[0]["val_curve"] == ranks[1]["val_curve"] and len(ranks[0]["val_curve"]["losses"]) == 8
    race = ranks[0]["race"]
    assert race == ranks[1]["race"] and race["judged_on"] == "validation loss" and len(race["lrs"]) >= 2
    assert ranks[0]["applied"] == ranks[1]["applied"] == race["lrs"][race["scores"].index(min(race["scores"]))]
    first, second = ranks[0]["gathered_lrs"]
    assert first == second and first[0] == pytest.approx(ranks[0]["applied"], rel=1e-12)


@pytest.mark.parametrize("run", ["ddp_run", "fsdp_run"], ids=["ddp", "fsdp2"])
def test_one_rank_nan_stops_every_rank_at_the_same_step(request, run):
    ranks, _ = request.getfixturevalue(run)
    first, second = (r["one_rank_nan"] for r in ranks)
    assert first == second
    losses = _losses(first["curve"])
    assert first["curve"]["stop_reason"] == "non_finite"
    assert len(losses) == 4 and math.isnan(losses[-1]) and all(math.isfinite(x) for x in losses[:-1])
    assert first["calls"] == second["calls"] == 4  # rank 0's loss was finite, it stopped all the same


@pytest.mark.parametrize(
    ("run", "scenario", "cause", "step"),
    [
        ("ddp_run", "one_rank_raises", "RuntimeError: boom on rank 1 in training_step", 2),
        ("ddp_run", "raises_reading_data", "OSError: sample", 2),  # the dataset, drawing the 3rd batch
        ("ddp_run", "raises_moving_first_batch", "RuntimeError: boom on rank 1 in on_after_batch_transfer", 0),
        ("ddp_run", "raises_in_backward", "RuntimeError: boom on rank 1 in backward", 2),  # before its all-reduce
        ("ddp_run", "raises_in_last_optimizer_step", "RuntimeError: boom on rank 1 in on_before_optimizer_step", 4),
        # with a grad scaler that skips that step on rank 0 (infinite gradients) but not on the failed rank 1
        (
            "ddp_run",
            "raises_in_last_optimizer_step_the_scaler_skips",
            "RuntimeError: boom on rank 1 in on_before_optimizer_step",
            4,
        ),
        ("fsdp_run", "raises_after_forward", "RuntimeError: boom on rank 1 in training_step", 2),
        ("fsdp_run", "raises_in_backward", "RuntimeError: boom on rank 1 in backward", 2),  # before its reduce-scatter
        ("fsdp_run", "raises_in_last_optimizer_step", "RuntimeError: boom on rank 1 in on_before_optimizer_step", 4),
    ],
    ids=[
        "ddp-training_step",
        "ddp-dataset",
        "ddp-batch_transfer",
        "ddp-backward",
        "ddp-last_optimizer_step",
        "ddp-last_optimizer_step_scaler_skips",
        "fsdp2-after_forward",
        "fsdp2-backward",
        "fsdp2-last_optimizer_step",
    ],
)
def test_one_rank_raising_stops_every_rank_restores_and_names_the_rank(request, run, scenario, cause, step):
    ranks, _ = request.getfixturevalue(run)
    first, second = (r[scenario] for r in ranks)
    assert second["error"]["text"].startswith(cause)  # rank 1 raises its own exception...
    assert any(f"step {step}," in note and "on rank 1 of 2" in note for note in second["error"]["notes"])
    assert first["error"]["type"] == "SweepStepError"  # ...and rank 0 says which rank raised what
    assert f"rank 1 raised during an LR sweep step, so rank 0 stopped too (rank 1: {cause}" in first["error"]["text"]
    assert f"(at sweep step {step})" in first["error"]["text"]  # where rank 1 failed, not where rank 0 learned it
    for rank in (first, second):  # every rank's model, optimizer and LR as they were before the sweep
        assert rank["restored"] and rank["optimizer_state_empty"] and rank["lrs"] == [0.01]


def test_suggestion_applied_lr_and_hparams_are_identical_on_all_ranks(ddp_run):
    ranks, _ = ddp_run
    first, second = (r["callback_fit"] for r in ranks)
    assert first["history"] == second["history"]
    assert [len(r["curve"]["lrs"]) for r in first["history"]] == [12, 8]
    final = first["history"][-1]["applied"]
    assert first["history"][-1]["suggested"] == 10.0 and final == pytest.approx(2 * first["history"][0]["applied"])
    for rank in (first, second):
        assert rank["gathered_lrs"] == [[final], [final]]  # all_gather of every rank's param-group LRs
        assert rank["lrs"] == [final] and rank["hparams_lr"] == final


def test_warnings_come_from_rank_zero_only(ddp_run):
    ranks, _ = ddp_run
    assert [r["callback_fit"]["clamp_warnings"] for r in ranks] == [1, 0]


def test_sweeps_every_epoch_leave_a_ddp_fit_bit_for_bit_equal_to_a_plain_one(ddp_run):
    ranks, out = ddp_run
    assert [r["bit_for_bit"]["sweeps"] for r in ranks] == [2, 2]
    for rank in ranks:  # after each sweep, the DistributedSampler's epoch and order are a plain fit's
        plain, swept = rank["bit_for_bit"]["samplers"]
        assert plain == swept and [(name, epoch) for name, epoch, _ in swept] == [
            ("DistributedSampler", 0),
            ("DistributedSampler", 1),
        ]
    assert ranks[0]["bit_for_bit"]["samplers"] != ranks[1]["bit_for_bit"]["samplers"]  # each rank its own shard
    saved = [torch.load(out / f"weights_{rank}.pt") for rank in (0, 1)]
    for weights in saved:
        assert weights["plain"].keys() == weights["swept"].keys()
        different = [k for k in weights["plain"] if not torch.equal(weights["plain"][k], weights["swept"][k])]
        assert not different, f"tensors differ: {different}"
    params = [k for k in saved[0]["swept"] if "running_" not in k and "num_batches" not in k]  # BN stats are per rank
    assert all(torch.equal(saved[0]["swept"][k], saved[1]["swept"][k]) for k in params)


def test_ddp_spawn_history_and_tuner_result_reach_the_main_process(spawn_run):
    history = spawn_run["history"]
    assert len(history) == 2 and all(len(r["curve"]["lrs"]) >= 6 for r in history)
    assert history[0]["applied"] is not None
    assert len(spawn_run["tuner_curve"]["lrs"]) == 10 and spawn_run["tuner_suggestion"] is not None
    assert spawn_run["restored"]  # the weights the workers sent back are the untouched ones
    assert spawn_run["tuner_logs"] == {"same_logger": True, "wrote": False}  # a DummyLogger went to the workers
    assert spawn_run["trained_after_tuning"]  # and the same trainer could fit afterwards


def test_two_nodes_under_torchrun_record_the_same_curve_and_end_with_the_same_lr(multinode_run):
    first, second = multinode_run
    assert first["world_size"] == second["world_size"] == 2
    assert {first["node_rank"], second["node_rank"]} == {0, 1}
    assert first["history"] == second["history"] and len(first["history"]) == 2
    final = first["history"][-1]["applied"]
    assert first["lrs"] == second["lrs"] == [final]
    assert first["hparams_lr"] == second["hparams_lr"] == final


def test_two_nodes_under_torchrun_with_fsdp2_record_the_same_curve_and_end_with_the_same_lr(multinode_run):
    first, second = (r["fsdp2"] for r in multinode_run)
    assert first["data_parallel_size"] == second["data_parallel_size"] == 2
    assert first["history"] == second["history"] and len(first["history"]) == 2
    final = first["history"][-1]["applied"]
    assert first["lrs"] == second["lrs"] == [final]
    assert first["hparams_lr"] == second["hparams_lr"] == final


# -- ModelParallelStrategy: FSDP2 (data_parallel_size=2) and tensor parallel (tensor_parallel_size=2) --------------


@pytest.mark.parametrize("layout", ["fsdp2", "tp"], ids=["fsdp2", "tensor_parallel"])
def test_sharded_fit_with_sweeps_equals_a_plain_fit_bit_for_bit_on_every_rank_shards(fsdp_run, layout):
    ranks, out = fsdp_run
    first, second = (r[f"{layout}_bit_for_bit"] for r in ranks)
    assert first["param_types"] == ["DTensor"]
    assert first["history"] == second["history"]
    assert [(r["kind"], r["applied"]) for r in first["history"]] == [("fit_start", 0.02)] + [("retune", 0.02)] * 2
    for rank in (0, 1):
        _assert_shards_equal(out / f"{layout}_shards_{rank}.pt")
    saved = [torch.load(out / f"{layout}_shards_{rank}.pt") for rank in (0, 1)]
    # each rank holds a part: the output layer's 3 rows split 2 + 1 (FSDP2), the hidden layer's 64 split 32 + 32
    rows = [shards["swept"]["net.0.weight"].shape[0] for shards in saved]
    assert rows == [32, 32]
    if layout == "fsdp2":
        assert [shards["swept"]["net.2.weight"].shape[0] for shards in saved] == [2, 1]


@pytest.mark.parametrize("layout", ["fsdp2", "tp"], ids=["fsdp2", "tensor_parallel"])
def test_snapshot_holds_only_this_rank_shards(fsdp_run, layout):
    ranks, _ = fsdp_run
    sizes = [r[f"{layout}_bit_for_bit"]["snapshot_sizes"] for r in ranks]
    full = sizes[0]["params_grads_adam"]  # the whole model's parameters, gradients and Adam moments
    assert all(size["snapshot"] < 0.6 * full for size in sizes)
    # together the ranks hold the model once, plus Adam's step counters (and, under TP, the replicated output bias)
    assert full <= sum(size["snapshot"] for size in sizes) <= 1.02 * full


def _assert_shards_equal(path: Path) -> None:
    shards = torch.load(path)
    assert shards["plain"].keys() == shards["swept"].keys()
    assert any(k.endswith("exp_avg_sq") for k in shards["swept"])  # Adam's state is compared too
    different = [k for k in shards["plain"] if not torch.equal(shards["plain"][k], shards["swept"][k])]
    assert not different, f"tensors differ: {different}"


def test_fsdp2_tuner_curve_is_the_mean_over_data_parallel_ranks(fsdp_run):
    ranks, _ = fsdp_run
    first, second = (r["fsdp2_tuner"] for r in ranks)
    assert first["curve"] == second["curve"] and first["suggestion"] == second["suggestion"]
    own = [r["rank_losses"] for r in (first, second)]
    assert len(own[0]) == len(own[1]) == 8 and own[0] != own[1]  # each rank swept its own batches
    assert _losses(first["curve"]) == pytest.approx([(a + b) / 2 for a, b in zip(*own, strict=True)], rel=1e-9)
    assert first["optimizer_state_empty"] and second["optimizer_state_empty"]


def test_tensor_parallel_tuner_counts_the_one_replica_once(fsdp_run):
    ranks, _ = fsdp_run
    first, second = (r["tp_tuner"] for r in ranks)
    assert first["rank_losses"] == second["rank_losses"]  # both tensor-parallel ranks computed the same batch's loss
    assert _losses(first["curve"]) == first["rank_losses"] == _losses(second["curve"])
    assert first["suggestion"] == second["suggestion"] is not None


def test_tensor_parallel_validation_loss_counts_the_one_replica_once(fsdp_run):
    ranks, _ = fsdp_run
    first, second = (r["tp_tuner_val"] for r in ranks)
    assert first["rank_losses"] == second["rank_losses"]
    assert len(first["rank_losses"]) == 16  # a training and a validation loss per step
    assert _losses(first["curve"]) == first["rank_losses"][1::2] == _losses(second["curve"])


def test_fsdp2_retune_restores_every_rank_shards_and_adam_state(fsdp_run):
    ranks, _ = fsdp_run
    for rank in ranks:
        assert rank["restores_shards"] == {"retunes": [1], "restored": True, "has_adam_state": True}


def test_fsdp2_resume_from_a_distributed_checkpoint_retunes_on_the_same_schedule(fsdp_run):
    ranks, _ = fsdp_run
    for rank in ranks:
        resume = rank["resume"]
        assert resume["checkpoint_is_a_directory"]
        assert [(r["epoch"], r["kind"]) for r in resume["straight"]] == [(0, "fit_start"), (1, "retune"), (2, "retune")]
        assert resume["resumed"] == resume["straight"]  # the loaded history, then the same epoch-2 re-tune
        assert resume["resumed_training_steps"] == 6 + 4  # that re-tune and epoch 2's batches: no fit-start sweep
        assert resume["hparams_lr"][0] == resume["hparams_lr"][1] == resume["straight"][-1]["applied"]
        assert resume["same_shards"]


def test_the_fsdp2_example_runs_and_every_rank_applies_the_same_lr(fsdp_run):
    ranks, _ = fsdp_run
    first, second = (r["example"]["history"] for r in ranks)
    assert first == second and [r["kind"] for r in first] == ["fit_start"]
    assert first[0]["applied"] is not None and first[0]["applied"] != 1e-3


def test_a_2x2_data_by_tensor_mesh_counts_each_replica_once(mesh2d_run):
    ranks, _ = mesh2d_run
    curves = [r["tuner"]["curve"] for r in ranks]
    assert all(c == curves[0] for c in curves)
    losses = [r["tuner"]["rank_losses"] for r in ranks]
    replicas = [losses[0], next(x for x in losses if x != losses[0])]
    assert sorted(map(tuple, losses)) == sorted(map(tuple, replicas * 2))  # two replicas, two tensor ranks each
    assert _losses(curves[0]) == pytest.approx([(a + b) / 2 for a, b in zip(*replicas, strict=True)], rel=1e-9)
    assert all(r["tuner"]["optimizer_state_empty"] for r in ranks)


def test_lrsweep_sweep_under_ddp_prints_and_writes_once(tmp_path):
    # Lightning's ddp launcher re-runs the command in rank 1, which sweeps too: only rank 0 may print and write
    spirals = ["--model", "lightning_lrsweep.demo:SpiralNet", "--data", "lightning_lrsweep.demo:SpiralData"]
    ddp = ["--trainer.accelerator=cpu", "--trainer.devices=2", "--trainer.strategy=ddp", "--data.n=256"]
    command = [sys.executable, "-m", "lightning_lrsweep", "sweep", "--seed_everything=0", *spirals, *ddp]
    done = subprocess.run(
        [*command, "--sweep.num_steps=10", f"--out={tmp_path}"],
        cwd=ROOT,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert done.returncode == 0, done.stderr[-6000:]
    assert done.stdout.count("* valley") == 1 and done.stdout.count("curve: ") == 1, done.stdout
    assert 1 < len((tmp_path / "lr_sweep.csv").read_text().splitlines()) <= 1 + 10
