"""The GPU-proven path: run palmsweb's engine on CUDA and print its figures beside the plain
transformers baseline, measured in the same run on the same device.

On a CUDA machine, with the packaged SmolLM2-135M-Instruct and the demo values-targeted data:

1. **fine-tune, full and LoRA**: palmsweb's ``run_finetune`` (bf16 weights + fp32 masters)
   against a plain ``transformers.Trainer`` (defaults: fp32, padded batches, loss on every
   token; LoRA through peft), each for ``--steps`` optimizer steps of ``--batch-size``
   examples: training tokens/s and peak GPU memory (torch's allocator peak);
2. **sampling the demo prompts** (40 x 3 outputs, 64 new tokens): palmsweb's batched
   generator against batched bf16 ``model.generate`` with left padding: generated tokens/s and
   peak GPU memory; the first palmsweb outputs are printed, to see the model speak;
3. **the distributed path**, when several GPUs are visible: the same full fine-tune under
   torchrun on every GPU, with DDP and with FSDP2: tokens/s (all ranks summed) and rank 0's
   peak memory;
4. **sampling through vLLM**, when vLLM is installed (the ``gpu`` extra): the same demo
   prompts through ``training.engine.vllm_sampling.generate_vllm`` (vLLM's offline engine,
   per-output seeds), for the base model and for a LoRA adapter trained here (served through
   vLLM's ``LoRARequest``, not merged): generated tokens/s beside palmsweb's generator, that
   every output came back, and that the worker's choice (``SAMPLING_ENGINE=auto``) is vLLM.
   This is the only place the vLLM path runs: the test suite cannot (no CUDA there).

Without CUDA it stops at once, with exit status 2 and the reason; nothing is loaded.

    .venv/bin/python bench/gpu_check.py [--steps 20] [--batch-size 8] [--json out.json]
"""

from __future__ import annotations

import argparse
import gc
import json
import sys
import tempfile
import time
from pathlib import Path

from _engine_common import (
    DATA_PARTS,
    DEFAULT_DATA,
    base_model_dir,
    chat_examples,
    data_files,
    quiet_transformers,
    read_jsonl,
)
from bench_sampling import MAX_NEW_TOKENS, SAMPLES, load_prompts, new_tokens, run_engine

NO_CUDA = 2


def require_cuda() -> None:
    """Fail fast and say why when there is no usable CUDA device."""
    import torch

    if torch.cuda.is_available():
        return
    built = torch.version.cuda or "none (a CPU-only build)"
    sys.stderr.write(
        "gpu_check: no CUDA device is visible (torch.cuda.is_available() is False; "
        f"torch {torch.__version__}, CUDA build: {built}).\n"
        "Run it on a machine with an NVIDIA GPU and a CUDA build of torch. "
        "The README's GPU figures stay 'unmeasured' until it has run there.\n"
    )
    sys.exit(NO_CUDA)


def measured(run, *args, **kwargs) -> dict:
    """``run``'s figures with the peak GPU memory it reached, after a clean slate."""
    import torch

    gc.collect()
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats()
    figures = run(*args, **kwargs)
    figures["peak_gpu_memory_mb"] = round(torch.cuda.max_memory_allocated() / 2**20)
    return figures


# --- fine-tuning ---------------------------------------------------------------------------


def palmsweb_finetune(model_dir: Path, examples: list[dict], method: str, args) -> dict:
    from training.engine.finetune import FineTuneConfig, run_finetune

    config = FineTuneConfig(
        method=method, epochs=1, max_steps=args.steps, batch_size=args.batch_size,
        learning_rate=5e-5 if method == "full" else 2e-4,
    )  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp:
        result = run_finetune(
            base_model_path=model_dir, examples=examples, output_dir=Path(tmp) / "out",
            config=config,
        )  # fmt: skip
    return {
        "steps": result.total_steps,
        "tokens_per_second": round(result.tokens_per_second),
        "last_loss": round(result.final_loss, 4),
    }


def trainer_finetune(model_dir: Path, examples: list[dict], method: str, args) -> dict:
    """A plain transformers.Trainer (LoRA: the model wrapped by peft first)."""
    import torch
    from transformers import (
        AutoModelForCausalLM,
        AutoTokenizer,
        DataCollatorForLanguageModeling,
        Trainer,
        TrainerCallback,
        TrainingArguments,
    )

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    if method == "lora":
        from peft import LoraConfig, get_peft_model

        lora = LoraConfig(task_type="CAUSAL_LM", r=16, lora_alpha=32, target_modules="all-linear")
        model = get_peft_model(model, lora)
    texts = [tokenizer.apply_chat_template(e["messages"], tokenize=False) for e in examples]
    dataset = [tokenizer(t, add_special_tokens=False, truncation=True, max_length=1024)
               for t in texts]  # fmt: skip
    clock = {"tokens": 0}

    class Clock(TrainerCallback):
        def on_train_begin(self, *a, **kw):
            torch.cuda.synchronize()
            clock["start"] = time.perf_counter()

        def on_step_end(self, *a, **kw):
            torch.cuda.synchronize()
            clock["end"] = time.perf_counter()

    class CountingTrainer(Trainer):
        def training_step(self, model, inputs, *rest, **kwargs):
            clock["tokens"] += int(inputs["attention_mask"].sum())
            return super().training_step(model, inputs, *rest, **kwargs)

    with tempfile.TemporaryDirectory() as tmp:
        training_args = TrainingArguments(
            output_dir=tmp, max_steps=args.steps, per_device_train_batch_size=args.batch_size,
            report_to="none", save_strategy="no", disable_tqdm=True, logging_steps=1,
        )  # fmt: skip
        collator = DataCollatorForLanguageModeling(tokenizer, mlm=False)
        CountingTrainer(model=model, args=training_args, train_dataset=dataset,
                        data_collator=collator, callbacks=[Clock()]).train()  # fmt: skip
    seconds = clock["end"] - clock["start"]
    return {"steps": args.steps, "tokens_per_second": round(clock["tokens"] / seconds)}


# --- sampling ------------------------------------------------------------------------------


def palmsweb_sampling(model_dir: Path, prompts: list[str], batch_size: int) -> dict:
    from training.engine.generation import GenerationParams, generate_local

    figures = run_engine(model_dir, prompts, batch_size)
    params = GenerationParams(temperature=0.7, top_p=0.9, max_new_tokens=64, seed=0)
    shown = generate_local(model_dir, prompts[:3], n=1, params=params, batch_size=3)
    return figures | {"examples": [g.text for g in shown]}


def generate_baseline(model_dir: Path, prompts: list[str], batch_size: int) -> dict:
    """Batched bf16 ``model.generate`` on the GPU, left padding, the same sampling."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir, padding_side="left")
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.bfloat16).cuda().eval()
    stop_ids = {tokenizer.eos_token_id, tokenizer.pad_token_id}
    texts = [tokenizer.apply_chat_template([{"role": "user", "content": p}],
                                           add_generation_prompt=True, tokenize=False)
             for p in prompts for _ in range(SAMPLES)]  # fmt: skip
    torch.manual_seed(0)
    tokens, started = 0, time.perf_counter()
    for start in range(0, len(texts), batch_size):
        batch = tokenizer(texts[start : start + batch_size], return_tensors="pt", padding=True)
        batch = batch.to("cuda")
        with torch.inference_mode():
            out = model.generate(**batch, do_sample=True, temperature=0.7, top_p=0.9,
                                 max_new_tokens=MAX_NEW_TOKENS,
                                 pad_token_id=tokenizer.pad_token_id)  # fmt: skip
        tokens += new_tokens(out[:, batch["input_ids"].shape[1] :], stop_ids)
    seconds = time.perf_counter() - started
    return {"outputs": len(texts), "tokens": tokens, "tokens_per_second": tokens / seconds}


# --- the distributed path ------------------------------------------------------------------


def distributed_finetune(model_dir: Path, examples: list[dict], strategy: str, args) -> dict:
    import torch

    from training.engine.distributed_launch import run_distributed_finetune
    from training.engine.distributed_plan import DistributedPlan
    from training.engine.finetune import FineTuneConfig

    devices = torch.cuda.device_count()
    config = FineTuneConfig(method="full", epochs=1, max_steps=args.steps,
                            batch_size=args.batch_size, learning_rate=5e-5)  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp:
        result = run_distributed_finetune(
            base_model_path=model_dir, examples=examples, output_dir=Path(tmp) / "out",
            config=config, plan=DistributedPlan(nproc_per_node=devices, strategy=strategy),
        )  # fmt: skip
    peak = result.metadata.get("peak_device_memory_bytes", 0)
    return {
        "devices": devices,
        "steps": result.total_steps,
        "tokens_per_second": round(result.tokens_per_second),
        "rank0_peak_gpu_memory_mb": round(peak / 2**20),
    }


# --- sampling through vLLM ----------------------------------------------------------------


def trained_adapter(model_dir: Path, examples: list[dict], out: Path) -> Path:
    """A LoRA adapter from a few steps of palmsweb's fine-tune, for vLLM to serve."""
    from training.engine.finetune import FineTuneConfig, run_finetune

    config = FineTuneConfig(method="lora", epochs=1, max_steps=5, learning_rate=2e-4)
    run_finetune(base_model_path=model_dir, examples=examples, output_dir=out, config=config)
    return out


def vllm_sampling(model_path: Path, prompts: list[str]) -> dict:
    """The demo prompts x 3 through vLLM's offline engine: tokens/s, including the engine's
    start (as a sampling job pays it), and whether every output came back."""
    from training.engine.generation import GenerationParams
    from training.engine.vllm_sampling import generate_vllm

    params = GenerationParams(temperature=0.7, top_p=0.9, max_new_tokens=MAX_NEW_TOKENS, seed=0)
    started = time.perf_counter()
    outputs = generate_vllm(model_path, prompts, n=SAMPLES, params=params)
    seconds = time.perf_counter() - started
    tokens = sum(g.tokens_generated for g in outputs)
    return {
        "outputs": len(outputs),
        "complete": len(outputs) == len(prompts) * SAMPLES and all(g.text for g in outputs),
        "tokens": tokens,
        "seconds": round(seconds, 1),
        "tokens_per_second": tokens / seconds,
        "examples": [g.text for g in outputs[:3]],
    }


def vllm_check(model_dir: Path, prompts: list[str], examples: list[dict]) -> dict:
    """vLLM on the base model and on a LoRA adapter, or why it was skipped."""
    from training.engine.vllm_sampling import choose_sampler, vllm_unavailable

    reason = vllm_unavailable()
    if reason:
        return {"skipped": reason}
    report: dict = {"chosen_by_auto": str(choose_sampler("auto"))}
    report["base"] = vllm_sampling(model_dir, prompts)
    with tempfile.TemporaryDirectory() as tmp:
        adapter = trained_adapter(model_dir, examples, Path(tmp) / "adapter")
        report["lora_adapter"] = vllm_sampling(adapter, prompts)
    return report


# --- the run -------------------------------------------------------------------------------


def run_all(args) -> dict:
    import torch

    quiet_transformers()
    model_dir = base_model_dir()
    examples = chat_examples(read_jsonl(data_files(args.data, DEFAULT_DATA, DATA_PARTS)))
    prompts = load_prompts(None, 40)
    report: dict = {"device": torch.cuda.get_device_name(0), "devices": torch.cuda.device_count(),
                    "torch": torch.__version__}  # fmt: skip
    for method in ("full", "lora"):
        ours = measured(palmsweb_finetune, model_dir, examples, method, args)
        theirs = measured(trainer_finetune, model_dir, examples, method, args)
        report[f"finetune_{method}"] = {"palmsweb": ours, "trainer": theirs}
    report["sampling"] = {
        "palmsweb": measured(palmsweb_sampling, model_dir, prompts, args.sample_batch),
        "generate": measured(generate_baseline, model_dir, prompts, args.sample_batch),
    }
    if torch.cuda.device_count() > 1:
        report["distributed"] = {
            strategy: distributed_finetune(model_dir, examples, strategy, args)
            for strategy in ("ddp", "fsdp")
        }
    # Last: vLLM reserves most of the GPU's memory for its KV cache while it runs.
    report["vllm"] = vllm_check(model_dir, prompts, examples)
    return report


def print_report(report: dict) -> None:
    print(f"device: {report['device']} x {report['devices']} (torch {report['torch']})")
    rows = [("fine-tune full", report["finetune_full"], "palmsweb", "trainer"),
            ("fine-tune LoRA", report["finetune_lora"], "palmsweb", "trainer"),
            ("sampling 120 outputs", report["sampling"], "palmsweb", "generate")]  # fmt: skip
    print(f"{'':22} {'palmsweb tok/s':>15} {'peak MB':>8} {'baseline tok/s':>15} "
          f"{'peak MB':>8} {'ratio':>6}")  # fmt: skip
    for label, pair, ours, theirs in rows:
        a, b = pair[ours], pair[theirs]
        ratio = a["tokens_per_second"] / b["tokens_per_second"]
        ours_text = f"{a['tokens_per_second']:>15.0f} {a['peak_gpu_memory_mb']:>8}"
        theirs_text = f"{b['tokens_per_second']:>15.0f} {b['peak_gpu_memory_mb']:>8}"
        print(f"{label:22} {ours_text} {theirs_text} {ratio:>5.1f}x")
    for strategy, figures in report.get("distributed", {}).items():
        speed, peak = figures["tokens_per_second"], figures["rank0_peak_gpu_memory_mb"]
        print(f"torchrun {strategy} x {figures['devices']}: {speed} tok/s, rank 0 peak {peak} MB")
    if "distributed" not in report:
        print("distributed path: skipped (one GPU visible)")
    for text in report["sampling"]["palmsweb"].get("examples", []):
        print(f"sample: {text[:160]!r}")
    print_vllm(report["vllm"], report["sampling"]["palmsweb"]["tokens_per_second"])


def print_vllm(figures: dict, ours: float) -> None:
    if "skipped" in figures:
        print(f"vLLM sampling: skipped ({figures['skipped']})")
        return
    print(f"vLLM sampling (SAMPLING_ENGINE=auto chooses {figures['chosen_by_auto']}):")
    for label in ("base", "lora_adapter"):
        run = figures[label]
        state = "all outputs back" if run["complete"] else "OUTPUTS MISSING OR EMPTY"
        print(f"  {label:13} {run['tokens_per_second']:>8.0f} tok/s "
              f"({run['tokens_per_second'] / ours:.1f}x palmsweb's generator), "
              f"{run['outputs']} outputs, {state}")  # fmt: skip
    for text in figures["base"]["examples"]:
        print(f"  vLLM sample: {text[:160]!r}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", help="JSONL of {prompt, completion} or {messages} rows")
    parser.add_argument("--steps", type=int, default=20, help="optimizer steps per fine-tune")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--sample-batch", type=int, default=24)
    parser.add_argument("--json", help="also write the figures to this file")
    args = parser.parse_args(argv)
    require_cuda()  # before anything is loaded
    report = run_all(args)
    print_report(report)
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
