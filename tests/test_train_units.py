"""Training engine pieces that need no model: LR schedule, data order, checkpoint bookkeeping, resume
compatibility, launch commands, DeepSpeed config, tracking, loss plot."""

from __future__ import annotations

import json
import math
import signal
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from percli import checkpoint as ckpt_lib
from percli.distributed import world_size
from percli.errors import ConfigError, EnvironmentProblem
from percli.launch import check_deepspeed_version, check_launcher, deepspeed_config, worker_envs
from percli.lr import lr_at
from percli.preflight import compose_config
from percli.sampler import StepSampler
from percli.tracking import Tracker, plot_loss


def _train_cfg(**kw):
    base = {"lr": 1.0, "warmup_ratio": 0.2, "lr_scheduler": "cosine"}
    return OmegaConf.create({**base, **kw})


def test_lr_schedule_values():
    # total 10, warmup ceil(0.2 * 10) = 2: 0.5, 1.0, then cosine over the remaining 8 steps.
    cos = [lr_at(s, 10, _train_cfg()) for s in range(10)]
    assert cos[:3] == [0.5, 1.0, 1.0]
    assert cos[4] == pytest.approx(0.5 * (1 + math.cos(math.pi * 2 / 8)))
    assert cos[6] == pytest.approx(0.5)
    lin = [lr_at(s, 10, _train_cfg(lr_scheduler="linear")) for s in range(10)]
    assert lin[2:] == pytest.approx([1.0, 0.875, 0.75, 0.625, 0.5, 0.375, 0.25, 0.125])
    const = [lr_at(s, 10, _train_cfg(lr_scheduler="constant", warmup_ratio=0.0)) for s in range(10)]
    assert const == [1.0] * 10


def test_step_sampler_same_rows_for_same_global_batch():
    lengths = list(range(10, 27))  # 17 rows: global batch 4 -> 4 steps per epoch, 1 row dropped
    one = StepSampler(lengths, batch_size=4, grad_accum=1, world=1, seed=3)
    two = StepSampler(lengths, batch_size=2, grad_accum=1, world=2, seed=3)
    acc = StepSampler(lengths, batch_size=2, grad_accum=2, world=1, seed=3)
    assert one.steps_per_epoch == two.steps_per_epoch == acc.steps_per_epoch == 4
    for step in range(9):  # across two epoch boundaries
        rows = one.micro_batches(step, 0)[0]
        assert two.micro_batches(step, 0)[0] + two.micro_batches(step, 1)[0] == rows
        assert acc.micro_batches(step, 0)[0] + acc.micro_batches(step, 0)[1] == rows
    epoch0 = [i for s in range(4) for i in one.micro_batches(s, 0)[0]]
    epoch1 = [i for s in range(4, 8) for i in one.micro_batches(s, 0)[0]]
    assert len(set(epoch0)) == 16 and len(set(epoch1)) == 16 and epoch0 != epoch1
    # A pure function of (seed, step): a fresh sampler (a resumed run) agrees.
    assert StepSampler(lengths, 4, 1, 1, seed=3).micro_batches(6, 0) == one.micro_batches(6, 0)
    assert StepSampler(lengths, 4, 1, 1, seed=4).micro_batches(0, 0) != one.micro_batches(0, 0)


def _fake_ckpt(run_dir: Path, step: int, fingerprint: dict | None = None, complete: bool = True) -> Path:
    path = run_dir / "checkpoints" / f"step-{step}"
    path.mkdir(parents=True)
    if complete:
        (path / ckpt_lib.STATE_FILE).write_text(json.dumps({"step": step, "fingerprint": fingerprint or {}}))
    return path


def test_latest_checkpoint_skips_incomplete_and_temp(tmp_path):
    _fake_ckpt(tmp_path, 2)
    _fake_ckpt(tmp_path, 10)
    _fake_ckpt(tmp_path, 12, complete=False)  # killed before trainer_state.json: not a checkpoint
    (tmp_path / "checkpoints" / ".tmp-step-14").mkdir()
    assert [s for s, _ in ckpt_lib.list_checkpoints(tmp_path)] == [2, 10]
    assert ckpt_lib.latest_checkpoint(tmp_path).name == "step-10"
    assert ckpt_lib.resolve_resume("auto", tmp_path).name == "step-10"
    assert ckpt_lib.resolve_resume(str(tmp_path), tmp_path / "elsewhere").name == "step-10"
    assert ckpt_lib.resolve_resume(str(tmp_path / "checkpoints" / "step-2"), tmp_path).name == "step-2"
    assert ckpt_lib.resolve_resume(None, tmp_path) is None
    assert ckpt_lib.resolve_resume("auto", tmp_path / "fresh") is None
    with pytest.raises(ConfigError, match=r"train.resume=.*step-12 is neither a checkpoint"):
        ckpt_lib.resolve_resume(str(tmp_path / "checkpoints" / "step-12"), tmp_path)


def test_prune_keeps_newest(tmp_path):
    for s in (2, 4, 6):
        _fake_ckpt(tmp_path, s)
    (tmp_path / "checkpoints" / ".tmp-step-4").mkdir()  # leftover of a killed save, older than step-6
    (tmp_path / "checkpoints" / ".tmp-step-8").mkdir()  # may be a save in progress: kept
    ckpt_lib.prune(tmp_path, keep_last=2)
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == [".tmp-step-8", "step-4", "step-6"]


def test_fingerprint_and_compatibility():
    cfg = compose_config("train", ["debug=smoke"])
    fp = ckpt_lib.fingerprint(cfg, world_size=1, precision="no")
    assert fp["train.lr"] == 1e-3 and fp["model.name"] == "tiny" and fp["loss.name"] == "perce"
    assert fp["world_size"] == 1 and "train.save_every" not in fp and "model.gradient_checkpointing" not in fp
    same = ckpt_lib.fingerprint(compose_config("train", ["debug=smoke", "train.save_every=7", "logger=wandb",
                                                         "model.gradient_checkpointing=true"]), 1, "no")
    ckpt_lib.check_compatible(fp, same, Path("ck"))  # bookkeeping changes resume fine
    lr = ckpt_lib.fingerprint(compose_config("train", ["debug=smoke", "train.lr=2e-3"]), 1, "no")
    with pytest.raises(ConfigError) as e:
        ckpt_lib.check_compatible(fp, lr, Path("ck"))
    assert str(e.value) == ("cannot resume from ck: train.lr changed from 0.001 to 0.002; resume with the "
                            "checkpoint's values, or start a new run without train.resume")
    two = ckpt_lib.fingerprint(cfg, world_size=2, precision="no")
    with pytest.raises(ConfigError, match="world_size changed from 1 to 2"):
        ckpt_lib.check_compatible(fp, two, Path("ck"))


def test_ddp_workers_get_the_rank_layout_and_no_deepspeed(tmp_path):
    cfg = compose_config("train", ["launcher=ddp", "launcher.num_processes=2"])
    envs = worker_envs(cfg, tmp_path)
    assert [(e["RANK"], e["LOCAL_RANK"], e["WORLD_SIZE"], e["LOCAL_WORLD_SIZE"]) for e in envs] == \
        [("0", "0", "2", "2"), ("1", "1", "2", "2")]
    assert envs[0]["MASTER_ADDR"] == "127.0.0.1" and envs[0]["MASTER_PORT"] == envs[1]["MASTER_PORT"]
    assert "ACCELERATE_USE_DEEPSPEED" not in envs[0] or envs[0]["ACCELERATE_USE_DEEPSPEED"] != "true"


def test_multinode_workers_get_global_ranks(tmp_path):
    cfg = compose_config("train", ["launcher=deepspeed", "launcher.num_processes=8", "launcher.num_machines=2",
                                   "launcher.machine_rank=1", "launcher.main_process_ip=10.0.0.1",
                                   "launcher.zero_stage=3"])
    assert world_size(cfg) == 16
    envs = worker_envs(cfg, tmp_path)
    assert [e["RANK"] for e in envs] == [str(r) for r in range(8, 16)]
    assert {(e["WORLD_SIZE"], e["GROUP_RANK"], e["MASTER_ADDR"], e["MASTER_PORT"]) for e in envs} == \
        {("16", "1", "10.0.0.1", "29500")}
    assert envs[0]["ACCELERATE_USE_DEEPSPEED"] == "true" and envs[0]["ACCELERATE_DEEPSPEED_ZERO3_INIT"] == "true"
    assert envs[0]["ACCELERATE_DEEPSPEED_CONFIG_FILE"] == str(tmp_path / "deepspeed_config.json")


def test_num_processes_auto_is_one_per_visible_gpu(monkeypatch):
    cfg = compose_config("train", ["launcher=ddp"])
    assert cfg.launcher.num_processes == "auto"
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 8)
    assert world_size(cfg) == 8
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 0)
    assert world_size(cfg) == 1


@pytest.mark.parametrize(("overrides", "message"), [
    (["launcher.num_processes=2"], "launcher=local runs one process (got launcher.num_processes=2, num_machines=1); "
                                   "use launcher=ddp or launcher=deepspeed"),
    (["launcher=ddp", "launcher.num_machines=2"], "launcher.num_machines=2 needs launcher.main_process_ip"),
    (["launcher=ddp", "launcher.machine_rank=1"], "launcher.machine_rank=1 must be below launcher.num_machines=1"),
    (["launcher=deepspeed", "launcher.zero_stage=3", "model.lora.enabled=true"],
     "model.lora.enabled=true with launcher.zero_stage=3 is not supported"),
])
def test_launcher_cross_checks(overrides, message):
    with pytest.raises(ConfigError) as e:
        check_launcher(compose_config("train", overrides))
    assert str(e.value).startswith(message)


def test_deepspeed_config_completed_from_train_keys():
    cfg = compose_config("train", ["launcher=deepspeed", "launcher.zero_stage=3", "launcher.offload=true",
                                   "train.batch_size=2", "train.grad_accum=4", "train.max_grad_norm=0.5"])
    ds = deepspeed_config(cfg)
    assert ds["zero_optimization"]["stage"] == 3
    assert ds["zero_optimization"]["offload_optimizer"]["device"] == "cpu"
    assert ds["zero_optimization"]["offload_param"]["device"] == "cpu"
    assert ds["zero_optimization"]["stage3_gather_16bit_weights_on_model_save"] is True
    assert (ds["train_micro_batch_size_per_gpu"], ds["gradient_accumulation_steps"], ds["train_batch_size"]) == (2, 4, 8)
    assert ds["gradient_clipping"] == 0.5
    assert ds["bf16"] == {"enabled": False}  # no GPU here: fp32
    two = deepspeed_config(compose_config("train", ["launcher=deepspeed", "train.max_grad_norm=null"]))
    assert two["zero_optimization"]["stage"] == 2 and "offload_optimizer" not in two["zero_optimization"]
    assert two["gradient_clipping"] == 0.0
    # fp32 gradient accumulation, as DDP does: in both templates, and added to a user's file that is silent
    assert ds["data_types"] == two["data_types"] == {"grad_accum_dtype": "fp32"}


def test_deepspeed_config_keeps_a_users_own_accumulation_dtype(tmp_path):
    silent, explicit = tmp_path / "silent.json", tmp_path / "explicit.json"
    silent.write_text(json.dumps({"zero_optimization": {"stage": 2}}))
    explicit.write_text(json.dumps({"zero_optimization": {"stage": 2}, "data_types": {"grad_accum_dtype": "bf16"}}))
    for path, dtype in ((silent, "fp32"), (explicit, "bf16")):
        ds = deepspeed_config(compose_config("train", ["launcher=deepspeed", f"launcher.deepspeed_config={path}"]))
        assert ds["data_types"] == {"grad_accum_dtype": dtype}


def test_deepspeed_floor_refuses_releases_that_apply_non_finite_bf16_steps():
    check_deepspeed_version("0.19.8")
    check_deepspeed_version()  # the installed one
    with pytest.raises(EnvironmentProblem) as e:
        check_deepspeed_version("0.19.7")
    assert str(e.value) == (
        "launcher=deepspeed needs deepspeed>=0.19.8 (installed: 0.19.7, whose ZeRO optimizer can apply a step with "
        "a non-finite bf16 gradient instead of skipping it); run: pip install 'deepspeed>=0.19.8'")


def test_plot_loss_writes_png(tmp_path):
    rows = [{"step": i, "loss": 3.0 - 0.1 * i, "ce_loss": 3.5 - 0.1 * i} for i in range(1, 6)]
    path = plot_loss(rows, tmp_path / "loss.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert [p.name for p in tmp_path.iterdir()] == ["loss.png"]  # no temp file left
    assert plot_loss([], tmp_path / "none.png") is None


def test_logger_none_writes_nothing(tmp_path):
    tracker = Tracker(compose_config("train", ["logger=none"]), tmp_path)
    tracker.log({"step": 1, "loss": 1.0}, step=1)
    tracker.summary({"rouge1": 0.5})
    tracker.finish()
    assert not tracker.active and list(tmp_path.iterdir()) == []


def test_wandb_failure_warns_once_and_never_raises(tmp_path, monkeypatch, capsys):
    import wandb

    class Broken:
        id = "x"

        def log(self, *a, **k):
            raise RuntimeError("network down")

        def finish(self):
            raise RuntimeError("network down")

    monkeypatch.setattr(wandb, "init", lambda **kw: Broken())
    tracker = Tracker(compose_config("train", ["logger=wandb", "logger.mode=online"]), tmp_path)
    assert tracker.active
    tracker.log({"step": 1, "loss": 1.0}, step=1)  # fails: warns, then the tracker is a no-op
    tracker.log({"step": 2, "loss": 1.0}, step=2)
    tracker.finish()
    err = capsys.readouterr().err
    assert err.count("percli: warning: W&B failed") == 1
    assert "RuntimeError: network down); training goes on without it" in err

    def refuse(**kw):
        raise ValueError("bad entity")

    monkeypatch.setattr(wandb, "init", refuse)
    tracker = Tracker(compose_config("train", ["logger=wandb"]), tmp_path)
    assert not tracker.active
    assert "W&B failed (ValueError: bad entity)" in capsys.readouterr().err


def test_stop_request_records_the_first_signal_and_restores_handlers():
    import os

    from percli.signals import StopRequest

    stop = StopRequest()
    try:
        assert stop.poll() == 0
        os.kill(os.getpid(), signal.SIGUSR1)  # the handler only records it: the process goes on
        assert stop.poll() == signal.SIGUSR1
        os.kill(os.getpid(), signal.SIGTERM)  # a second delivery (the group's and the parent's) changes nothing
        assert stop.poll() == signal.SIGUSR1
    finally:
        stop.restore()
    assert signal.getsignal(signal.SIGUSR1) is signal.SIG_DFL
    # SIGUSR2: what hydra-submitit-launcher's SLURM job gets signal_delay_s before its time limit
    previous = signal.signal(signal.SIGUSR2, signal.SIG_IGN)
    usr2 = StopRequest()
    try:
        os.kill(os.getpid(), signal.SIGUSR2)
        assert usr2.poll() == signal.SIGUSR2
    finally:
        usr2.restore()
    assert signal.getsignal(signal.SIGUSR2) is signal.SIG_IGN
    signal.signal(signal.SIGUSR2, previous)


def test_schedule_state_tree_round_trips_without_pickle(tmp_path):
    tree = {"name": "periodic", "last_refresh": None, "cache": {},
            "nested": {"7": {"raw": torch.tensor([0.5, -1.25]), "pir": None}, "empty": torch.zeros(0)}}
    path = tmp_path / "s.safetensors"
    ckpt_lib.save_state_tree(tree, path)
    back = ckpt_lib.load_state_tree(path)
    assert back["name"] == "periodic" and back["last_refresh"] is None and back["cache"] == {}
    assert back["nested"]["7"]["pir"] is None and back["nested"]["empty"].shape == (0,)
    assert torch.equal(back["nested"]["7"]["raw"], torch.tensor([0.5, -1.25]))
    assert path.read_bytes()[8:9] == b"{"  # a safetensors JSON header, not a pickle stream


def test_a_launcher_that_leaves_gpus_idle_says_so(monkeypatch, caplog):
    import percli.launch as launch_lib

    monkeypatch.setattr(launch_lib, "visible_gpus", lambda: 8)
    with caplog.at_level("WARNING", logger="percli"):
        launch_lib.warn_idle_gpus(compose_config("train", ["debug=smoke"]))
        launch_lib.warn_idle_gpus(compose_config("train", ["debug=smoke", "launcher=ddp",
                                                           "launcher.num_processes=2"]))
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 8)
    with caplog.at_level("WARNING", logger="percli"):
        launch_lib.warn_idle_gpus(compose_config("train", ["debug=smoke", "launcher=deepspeed"]))  # auto: all 8
    assert [r.getMessage() for r in caplog.records] == [
        "launcher=local uses 1 of the 8 visible GPUs; 7 stay idle (launcher=ddp|deepspeed with "
        "launcher.num_processes=auto uses them all)",
        "launcher=ddp uses 2 of the 8 visible GPUs; 6 stay idle (launcher=ddp|deepspeed with "
        "launcher.num_processes=auto uses them all)"]


@pytest.mark.parametrize(("status", "expected"), [
    ({"status": "ok"}, ("ok", None)),
    ({"status": "stopped", "exit_code": 140, "error": "training stopped by SIGUSR2 at step 4/8"},
     ("stopped", "stopped: training stopped by SIGUSR2 at step 4/8")),
    ({"status": "failed", "exit_code": 1, "error": "boom"}, ("failed", "failed: boom")),
])
def test_run_status_tells_a_stopped_run_from_a_failed_one(tmp_path, status, expected):
    from percli.io import atomic_write_json
    from percli.rundir import run_status

    atomic_write_json(tmp_path / "status.json", status)
    assert run_status(tmp_path) == expected
