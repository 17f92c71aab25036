"""`make gpu-check`: the first-contact test of percli's GPU path on one node (about 8 minutes).

It checks what CPU tests cannot, each through the real `percli` CLI on the tiny Qwen3 (random weights over
the real 151,669-token vocabulary, so the logits have the real width), with gradient checkpointing and
synthetic data whose examples differ in length (so the ranks' batches do too):

1. parity: the first step's loss agrees across launcher=local, DDP, ZeRO-2 and ZeRO-3 (same global batch)
   within bf16 tolerance;
2. zero3: multi-rank ZeRO-3 trains 4 steps and saves DeepSpeed checkpoints (step-2, step-4, final);
3. resume: a new run resumed from step-2 continues exactly: its steps 3-4 match the uninterrupted run;
4. export: the exported checkpoints/final reloads and is evaluated (`percli eval model.path=...`);
5. dp-generation: `percli eval launcher=ddp` generates data-parallel and returns every example once;
6. vllm: `percli eval eval.backend=vllm` when vLLM is importable; with GPU_CHECK_VLLM=1 a missing vLLM
   fails the check instead of skipping it.

Multi-rank checks use 2 ranks (1 where one GPU is visible). The output is one table (what ran, time,
peak memory per rank from nvidia-smi, pass/fail), printed and written to results/gpu_check.{md,json};
the exit status is 1 when a check failed. Without a GPU it says so in one line and exits 0, or 1 with
--require-gpu (a CPU-only torch build on a GPU node must not pass); --allow-cpu runs it on the CPU (fp32,
gloo), which is how its own tests run it.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from percli.io import atomic_write_json, atomic_write_text, read_jsonl  # noqa: E402
from percli.log import log, result  # noqa: E402

CHECKS = ("parity", "zero3", "resume", "export", "dp-generation", "vllm")
GLOBAL_BATCH = 4
# bf16 keeps 8 significant bits: one unit in the last place is 2^-7 of a value, so two launchers whose
# losses differ only by reduction order and padding agree to that; fp32 (the CPU) to far better.
RTOL = {"bf16": 2**-7, "fp32": 1e-4}
# A resumed run repeats the same computation on the same ranks: only kernels' nondeterministic reduction
# order may move a loss (bf16 atomics), far less than between launchers.
RESUME_RTOL = {"bf16": 1e-3, "fp32": 1e-6}
# What every run shares: offline synthetic data (debug=smoke) with 16 train examples of varied length, and LM-head
# chunks of 16 response positions, so ranks' batches need different numbers of chunks (ZeRO-3 requires every
# rank to call each module equally often: percli's scorer evens the count out).
TRAIN = ["model=tiny", "debug=smoke", "model.gradient_checkpointing=true", "loss.chunk_size=16", "data.num_users=8",
         "data.max_prompt_tokens=256", "data.max_response_tokens=32", "train.lr=1e-3", "train.warmup_ratio=0",
         "eval.after_train=false", "logger=none"]
EVAL = ["debug=smoke", "data.num_users=8", "eval.max_examples=8", "eval.batch_size=4", "eval.max_new_tokens=8"]
VLLM_MISSING = "vllm is not importable here (pip install -e '.[vllm]')"
NO_GPU = "gpu-check: no CUDA GPU is visible on this machine; nothing to check (run it on a GPU node)"


@dataclass
class Row:
    """One line of the table."""

    check: str
    what: str
    status: str = "pass"             # pass | FAIL | skipped
    detail: str = ""
    seconds: float = 0.0
    peak_mb: list[float] = field(default_factory=list)   # per GPU = per rank (one process per GPU)


def launcher_overrides(name: str, ranks: int) -> list[str]:
    """The same global batch on every launcher: 1 process x GLOBAL_BATCH rows, or `ranks` x fewer."""
    if name == "local":
        return ["launcher=local", f"train.batch_size={GLOBAL_BATCH}"]
    chosen = {"ddp": ["launcher=ddp"], "zero2": ["launcher=deepspeed", "launcher.zero_stage=2"],
              "zero3": ["launcher=deepspeed", "launcher.zero_stage=3"]}[name]
    return [*chosen, f"launcher.num_processes={ranks}", f"train.batch_size={GLOBAL_BATCH // ranks}"]


def rank_gpus(ranks: int) -> list[str]:
    """nvidia-smi ids of the GPUs that ranks 0..ranks-1 run on: the first visible ones (CUDA_VISIBLE_DEVICES
    renumbers devices for torch, not for nvidia-smi)."""
    visible = [d.strip() for d in os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",") if d.strip()]
    return (visible or [str(i) for i in range(ranks)])[:ranks]


class MemoryPeaks:
    """Peak device memory of each rank's GPU while a check runs, sampled from nvidia-smi (the workers are other
    processes, so their torch allocator counters are out of reach; this includes each CUDA context)."""

    def __init__(self, gpus: list[str] | None = None, interval: float = 0.25) -> None:
        self.gpus, self.interval, self.peaks = gpus, interval, []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)

    def _sample(self) -> list[float]:
        try:
            ids = [f"--id={','.join(self.gpus)}"] if self.gpus else []
            out = subprocess.run(["nvidia-smi", "--query-gpu=memory.used", "--format=csv,noheader,nounits", *ids],
                                 capture_output=True, text=True, timeout=10).stdout
            return [float(x) for x in out.split()]
        except (OSError, ValueError, subprocess.TimeoutExpired):
            return []

    def _poll_once(self) -> None:
        sample = self._sample()
        self.peaks = [max(a, b) for a, b in zip(self.peaks, sample)] if self.peaks else sample

    def _poll(self) -> None:
        while not self._stop.is_set():
            self._poll_once()
            self._stop.wait(self.interval)

    def __enter__(self) -> MemoryPeaks:
        if shutil.which("nvidia-smi"):
            self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()


def run_percli(args: list[str], work: Path, timeout: float) -> tuple[int, str]:
    """`percli <args>` in a subprocess: (exit code, the last line of stderr)."""
    env = {**os.environ, "PERCLI_OUTPUT_DIR": str(work), "WANDB_MODE": "disabled"}
    try:
        r = subprocess.run([sys.executable, "-m", "percli", *args], capture_output=True, text=True, env=env,
                           cwd=REPO, timeout=timeout)
    except subprocess.TimeoutExpired:
        return 124, f"timed out after {timeout:.0f} s"
    lines = r.stderr.strip().splitlines()
    return r.returncode, lines[-1] if lines else ""


def first_losses(run_dirs: dict[str, Path]) -> dict[str, float | None]:
    """Each run's step-1 loss (None where the run left no log)."""
    out: dict[str, float | None] = {}
    for name, run_dir in run_dirs.items():
        log_file = run_dir / "train_log.jsonl"
        rows = read_jsonl(log_file) if log_file.is_file() else []
        out[name] = rows[0]["loss"] if rows else None
    return out


def loss_parity(losses: dict[str, float | None], rtol: float, reference: str = "local") -> tuple[bool, str]:
    """Do all first-step losses agree with the reference's within rtol (relative)? And the line that says so."""
    ref = losses.get(reference)
    if ref is None:
        return False, f"{reference}: no loss"
    parts, ok = [f"{reference} {ref:.4f}"], True
    for name, loss in losses.items():
        if name == reference:
            continue
        if loss is None:
            parts.append(f"{name}: no loss")
            ok = False
            continue
        rel = abs(loss - ref) / abs(ref)
        ok &= rel <= rtol
        parts.append(f"{name} {loss:.4f} ({rel:.1e})")
    return ok, ", ".join(parts) + f"; relative tolerance {rtol:.1e}"


def continuation(full: list[dict], resumed: list[dict], from_step: int, rtol: float) -> tuple[bool, str]:
    """Do the resumed run's steps after `from_step` repeat the uninterrupted run's losses (within rtol)?"""
    after = {r["step"]: r["loss"] for r in full if r["step"] > from_step}
    again = {r["step"]: r["loss"] for r in resumed if r["step"] > from_step}
    if not after or sorted(after) != sorted(again):
        return False, f"steps after {from_step}: uninterrupted {sorted(after)}, resumed {sorted(again)}"
    worst = max(abs(again[s] - after[s]) / abs(after[s]) for s in after)
    return worst <= rtol, f"steps {min(after)}-{max(after)}: max relative difference {worst:.1e} (tolerance {rtol:.1e})"


def predictions(run_dir: Path) -> dict[str, str]:
    path = run_dir / "predictions.jsonl"
    return {r["id"]: r["prediction"] for r in read_jsonl(path)} if path.is_file() else {}


def vllm_wanted() -> bool:
    return os.environ.get("GPU_CHECK_VLLM", "0").lower() in ("1", "true", "yes")


def vllm_row(model_path: Path | None, work: Path, timeout: float, required: bool) -> Row:
    """vLLM generation on the exported model; without vLLM: skipped, or FAIL where it was required."""
    row = Row("vllm", "percli eval eval.backend=vllm on the exported model")
    if importlib.util.find_spec("vllm") is None:
        row.status = "FAIL" if required else "skipped"
        row.detail = VLLM_MISSING + (" and GPU_CHECK_VLLM=1 requires it" if required else "")
        return row
    if model_path is None:
        row.status, row.detail = "FAIL", "no exported model (the zero3 check failed)"
        return row
    run_dir = work / "vllm"
    t0 = time.perf_counter()
    with MemoryPeaks(rank_gpus(1)) as mem:
        code, err = run_percli(["eval", f"model.path={model_path}", *EVAL, "eval.backend=vllm",
                                f"hydra.run.dir={run_dir}"], work, timeout)
    row.seconds, row.peak_mb = time.perf_counter() - t0, mem.peaks
    got = len(predictions(run_dir))
    row.status = "pass" if code == 0 and got > 0 else "FAIL"
    row.detail = f"{got} predictions" if code == 0 else err
    return row


def markdown(res: dict) -> str:
    """The one table: what ran, how long, peak memory per rank, pass/fail (with its numbers)."""
    lines = [f"# percli gpu-check: {res['device']}, {res['precision']}, {res['ranks']} rank(s), torch {res['torch']}, "
             f"{res['wall_s']:.0f} s", "",
             "| check | what ran | time s | peak MiB per rank | result |", "|---|---|---|---|---|"]
    for r in res["rows"]:
        peaks = " / ".join(f"{m:.0f}" for m in r["peak_mb"]) or "-"
        outcome = r["status"] + (f": {r['detail']}" if r["detail"] else "")
        lines.append(f"| {r['check']} | {r['what']} | {r['seconds']:.1f} | {peaks} | {outcome} |")
    return "\n".join(lines) + "\n"


class GpuCheck:
    """The checks in order; later ones use the zero3 run's checkpoints."""

    def __init__(self, work: Path, ranks: int, precision: str, timeout: float, budget: float) -> None:
        self.work, self.ranks, self.timeout = work, ranks, timeout
        self.rtol, self.resume_rtol = RTOL[precision], RESUME_RTOL[precision]
        self.deadline = time.monotonic() + budget
        self.rows: list[Row] = []
        self.zero3_dir = work / "zero3"

    def _train(self, name: str, extra: list[str]) -> tuple[int, str]:
        return run_percli(["train", *TRAIN, *extra, f"hydra.run.dir={self.work / name}"], self.work,
                          min(self.timeout, max(1.0, self.deadline - time.monotonic())))

    def _timed(self, row: Row, step) -> Row:
        if time.monotonic() > self.deadline:
            row.status, row.detail = "FAIL", "not run: the time budget was spent"
        else:
            t0 = time.perf_counter()
            with MemoryPeaks(rank_gpus(self.ranks)) as mem:
                step(row)
            row.seconds, row.peak_mb = time.perf_counter() - t0, mem.peaks
        self.rows.append(row)
        return row

    def parity(self, row: Row) -> None:
        runs = {}
        for name in ("local", "ddp", "zero2"):
            code, err = self._train(f"parity-{name}", [*launcher_overrides(name, self.ranks), "train.max_steps=1"])
            runs[name] = self.work / f"parity-{name}"
            if code != 0:
                row.status, row.detail = "FAIL", f"{name}: {err}"
                return
        runs["zero3"] = self.zero3_dir   # its step 1, from the zero3 check (run first), else a 1-step run
        if not (self.zero3_dir / "train_log.jsonl").is_file():
            runs["zero3"] = self.work / "parity-zero3"
            code, err = self._train("parity-zero3", [*launcher_overrides("zero3", self.ranks), "train.max_steps=1"])
            if code != 0:
                row.status, row.detail = "FAIL", f"zero3: {err}"
                return
        ok, row.detail = loss_parity(first_losses(runs), self.rtol)
        row.status = "pass" if ok else "FAIL"

    def zero3(self, row: Row) -> None:
        code, err = self._train("zero3", [*launcher_overrides("zero3", self.ranks), "train.max_steps=4",
                                          "train.save_every=2", "train.keep_last=5"])
        rows = read_jsonl(self.zero3_dir / "train_log.jsonl") if code == 0 else []
        saved = sorted(p.name for p in (self.zero3_dir / "checkpoints").glob("*")) if code == 0 else []
        ok = code == 0 and len(rows) == 4 and rows[-1]["world_size"] == self.ranks and "step-2" in saved \
            and "final" in saved
        row.status = "pass" if ok else "FAIL"
        row.detail = (f"4 steps, world size {rows[-1]['world_size']}, saved {', '.join(saved)}" if rows else err)

    def resume(self, row: Row) -> None:
        code, err = self._train("resumed", [*launcher_overrides("zero3", self.ranks), "train.max_steps=4",
                                            "train.save_every=2", "train.keep_last=5",
                                            f"train.resume={self.zero3_dir / 'checkpoints' / 'step-2'}"])
        if code != 0:
            row.status, row.detail = "FAIL", err
            return
        ok, row.detail = continuation(read_jsonl(self.zero3_dir / "train_log.jsonl"),
                                      read_jsonl(self.work / "resumed" / "train_log.jsonl"), 2, self.resume_rtol)
        row.status = "pass" if ok else "FAIL"

    def _eval(self, name: str, extra: list[str]) -> tuple[int, str, dict[str, str]]:
        run_dir = self.work / name
        code, err = run_percli(["eval", f"model.path={self.zero3_dir / 'checkpoints' / 'final'}", *EVAL, *extra,
                                f"hydra.run.dir={run_dir}"], self.work,
                               min(self.timeout, max(1.0, self.deadline - time.monotonic())))
        return code, err, predictions(run_dir)

    def export(self, row: Row) -> None:
        code, err, preds = self._eval("export-eval", [])
        metrics = self.work / "export-eval" / "metrics.json"
        n = json.loads(metrics.read_text(encoding="utf-8")).get("num_examples") if metrics.is_file() else None
        row.status = "pass" if code == 0 and n == len(preds) > 0 else "FAIL"
        row.detail = f"{n} examples scored" if code == 0 else err

    def dp_generation(self, row: Row) -> None:
        code, err, preds = self._eval("dp-eval", ["launcher=ddp", f"launcher.num_processes={self.ranks}"])
        single = predictions(self.work / "export-eval")
        if code != 0:
            row.status, row.detail = "FAIL", err
            return
        if not single:   # the export check did not run: nothing to compare with
            row.status = "pass" if preds else "FAIL"
            row.detail = f"{len(preds)} examples"
            return
        same = sum(preds.get(i) == p for i, p in single.items())
        ok = sorted(preds) == sorted(single)
        row.status = "pass" if ok else "FAIL"
        row.detail = (f"{len(preds)} examples, each once; {same}/{len(single)} predictions equal the 1-process "
                      "ones (greedy)") if ok else f"ids differ from the 1-process eval: {len(preds)} vs {len(single)}"

    def run(self, wanted: list[str]) -> list[Row]:
        r = self.ranks
        steps = {
            "zero3": (Row("zero3", f"ZeRO-3 x{r}, tiny Qwen3 (151,669 vocab), gradient checkpointing, unequal "
                                   "lengths, 4 steps, DeepSpeed saves"), self.zero3),
            "parity": (Row("parity", f"first-step loss: local x1, DDP x{r}, ZeRO-2 x{r}, ZeRO-3 x{r}, global batch "
                                     f"{GLOBAL_BATCH}"), self.parity),
            "resume": (Row("resume", f"ZeRO-3 x{r} resumed from step-2 in a new run dir"), self.resume),
            "export": (Row("export", "reload checkpoints/final, percli eval (1 process)"), self.export),
            "dp-generation": (Row("dp-generation", f"percli eval launcher=ddp launcher.num_processes={r}"),
                              self.dp_generation),
        }
        for name, (row, step) in steps.items():
            if name in wanted:
                self._timed(row, step)
        if "vllm" in wanted:
            final = self.zero3_dir / "checkpoints" / "final"
            self.rows.append(vllm_row(final if final.is_dir() else None, self.work, self.timeout, vllm_wanted()))
        return self.rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=str(REPO / "results"))
    ap.add_argument("--checks", default=",".join(CHECKS), help=f"comma-separated subset of {','.join(CHECKS)}")
    ap.add_argument("--ranks", type=int, help="processes of the multi-rank checks (default: 2, 1 on one GPU)")
    ap.add_argument("--timeout", type=float, default=240, help="seconds per percli run")
    ap.add_argument("--budget", type=float, default=480, help="seconds for all checks; later ones fail past it")
    ap.add_argument("--require-gpu", action="store_true", help="exit 1 when torch sees no CUDA device")
    ap.add_argument("--allow-cpu", action="store_true", help="run on the CPU (fp32, gloo): tests this script")
    args = ap.parse_args(argv)
    wanted = args.checks.split(",")
    unknown = sorted(set(wanted) - set(CHECKS))
    if unknown:
        log.error(f"gpu-check: --checks {','.join(unknown)} is not a check; choose from {','.join(CHECKS)}")
        return 2

    n_gpus = torch.cuda.device_count()
    if n_gpus == 0 and args.require_gpu:
        log.error(f"gpu-check: torch {torch.__version__} sees no CUDA device and --require-gpu was given (a CPU-only "
                  "torch build, or no GPU visible: check nvidia-smi and CUDA_VISIBLE_DEVICES)")
        return 1
    if n_gpus == 0 and not args.allow_cpu:
        result(NO_GPU)
        return 0
    ranks = args.ranks or (2 if n_gpus != 1 else 1)
    precision = "bf16" if n_gpus and torch.cuda.is_bf16_supported() else "fp32"
    start = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="percli-gpu-check-") as tmp:
        rows = GpuCheck(Path(tmp), ranks, precision, args.timeout, args.budget).run(wanted)
    res = {"date": time.strftime("%Y-%m-%d %H:%M"), "device": torch.cuda.get_device_name(0) if n_gpus else "cpu",
           "gpus": n_gpus, "ranks": ranks, "precision": precision, "torch": torch.__version__,
           "wall_s": round(time.monotonic() - start, 1), "rows": [asdict(r) for r in rows]}
    out = Path(args.out)
    atomic_write_json(out / "gpu_check.json", res)
    atomic_write_text(out / "gpu_check.md", markdown(res))
    result(markdown(res).rstrip("\n"))
    return 1 if any(r.status == "FAIL" for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
