"""`launcher` group (conf/launcher/*.yaml): how many processes train, and with which engine."""

from __future__ import annotations

from percli.schema.field import NUMBER, Field, between, non_negative, positive

GROUP = "launcher"
FIELDS: dict[str, Field] = {
    "name": Field(str, "local: run in this process; ddp / deepspeed: one supervised worker per process",
                  choices=("local", "ddp", "deepspeed")),
    "num_processes": Field((int, str), "processes (GPUs) per machine; auto: one per visible GPU (1 without)",
                           lambda v: v == "auto" if isinstance(v, str) else v > 0, "a positive integer or auto"),
    "num_machines": Field(int, "machines; run the same command on each", positive, "a positive integer"),
    "machine_rank": Field(int, "this machine's rank (multi-node)", non_negative, "a non-negative integer"),
    "main_process_ip": Field(str, "multi-node: address of machine_rank 0",
                             expect="an address such as 10.0.0.1, or null", nullable=True),
    "main_process_port": Field(int, "rendezvous port; null: a free port (29500 across machines)",
                               between(1, 65535), "a port in [1, 65535] or null", nullable=True),
    "stop_grace_s": Field(NUMBER, "seconds workers get after a stop signal to finish the step and save "
                          "(below SLURM's signal_delay_s)", positive,
                          "a positive number of seconds"),
    "mixed_precision": Field(str, "auto: bf16 on a bf16-capable GPU, fp32 on CPU; no: fp32",
                             choices=("auto", "bf16", "no")),
    "zero_stage": Field(int, "deepspeed: ZeRO stage", choices=(0, 1, 2, 3)),
    "offload": Field(bool, "deepspeed: ZeRO-Offload optimizer states (stage 3: parameters too) to CPU"),
    "deepspeed_config": Field(str, "deepspeed: your own JSON (null: conf/launcher/deepspeed/zero{2,3}.json)",
                              expect="a DeepSpeed JSON path or null", nullable=True),
}
