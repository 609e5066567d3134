"""Sampling jobs: prompts × model versions × n samples, run on a worker, stored batch by
batch so that a crash or a cancel loses at most one batch and a re-run resumes after it."""

from __future__ import annotations

import math

from django.conf import settings
from django.db import transaction

from training.models import Generation, JobStatus, ModelVersion, SamplingJob
from training.services.base_models import api_key_for, remote_base_url, version_local_path
from training.services.compute import energy_meter, sampling_compute
from training.services.errors import TrainingError
from training.services.jobs import (
    JobReporter,
    claim_job,
    fail_job,
    finish_job,
    heartbeat,
    worker_name,
)

MAX_PROMPTS = 2_000
REMOTE_BACKEND = "openai-compatible"
MAX_SAMPLES_PER_PROMPT = 100


def clean_prompts(prompts: list) -> list[dict]:
    """Accept strings or {"text", "category"} dicts; refuse empties and oversize lists."""
    cleaned = []
    for index, prompt in enumerate(prompts, start=1):
        if isinstance(prompt, str):
            prompt = {"text": prompt}
        if not isinstance(prompt, dict) or set(prompt) - {"text", "category"}:
            raise TrainingError(f"Prompt {index}: expected text (and optionally a category).")
        text = str(prompt.get("text", "")).strip()
        if not text:
            raise TrainingError(f"Prompt {index} is empty.")
        cleaned.append({"text": text, "category": prompt.get("category") or ""})
    if not cleaned:
        raise TrainingError("Give at least one prompt.")
    if len(cleaned) > MAX_PROMPTS:
        raise TrainingError(f"At most {MAX_PROMPTS} prompts per job.")
    return cleaned


@transaction.atomic
def sampling_launch(
    *,
    prompts: list,
    model_versions: list[ModelVersion],
    n_samples: int = 3,
    temperature: float = 0.7,
    top_p: float = 0.9,
    max_new_tokens: int = 200,
    seed: int = 0,
    name: str = "",
    system_prompt: str = "",
    restricted: bool = False,
    profile_id: int | None = None,
    user=None,
) -> SamplingJob:
    """Queue prompts × model versions × n samples on the gpu queue. A ``restricted`` job
    and its outputs are for admins only until :func:`sampling_job_release`; a job given the
    value profile its prompts come from (``profile_id``) only for that profile's members."""
    if not model_versions:
        raise TrainingError("Choose at least one model version.")
    if not 1 <= n_samples <= MAX_SAMPLES_PER_PROMPT:
        raise TrainingError(f"Samples per prompt must be 1–{MAX_SAMPLES_PER_PROMPT}.")
    if not (0 <= temperature <= 2 and 0 < top_p <= 1 and 1 <= max_new_tokens <= 4096):
        raise TrainingError("Need 0 ≤ temperature ≤ 2, 0 < top_p ≤ 1, 1 ≤ max new tokens ≤ 4096.")
    cleaned = clean_prompts(prompts)
    job = SamplingJob.objects.create(
        name=name.strip(),
        prompts=cleaned,
        n_samples=n_samples,
        temperature=temperature,
        top_p=top_p,
        max_new_tokens=max_new_tokens,
        seed=seed,
        system_prompt=system_prompt,
        restricted=restricted,
        profile_id=profile_id,
        progress_total=len(cleaned) * n_samples * len(model_versions),
        created_by=user,
    )
    job.model_versions.set(model_versions)
    from training import tasks

    tasks.run_sampling.delay_on_commit(job.pk)
    return job


@transaction.atomic
def sampling_job_release(*, job: SamplingJob) -> SamplingJob:
    """Open a restricted job and its outputs to every role that reads training data
    (a study calls this when it is unblinded). Idempotent."""
    SamplingJob.objects.filter(pk=job.pk, restricted=True).update(restricted=False)
    job.restricted = False
    return job


def sampling_execute(job_id: int) -> None:
    """Run a sampling job on this worker, skipping outputs already stored (resume)."""
    if not claim_job(SamplingJob, job_id, worker=worker_name()):
        return
    job = SamplingJob.objects.get(pk=job_id)
    reporter = JobReporter(job)
    meter = energy_meter()
    try:
        with heartbeat(job), meter:
            versions = list(job.model_versions.select_related("base_model").order_by("pk"))
            progress = SamplingProgress(job, reporter, len(versions))
            for index, version in enumerate(versions, start=1):
                if reporter.should_cancel():
                    from training.engine.errors import Cancelled

                    raise Cancelled()
                _sample_version(job, version, reporter, progress.for_model(index, version))
    except Exception as exc:  # the outputs stored so far were computed: they are recorded
        partial = sampling_compute(job, meter.reading, meter.device) if meter.reading else {}
        fail_job(job, reporter, exc, compute=partial)
        return
    reporter.update(force=True, progress_done=job.generations.count())
    compute = sampling_compute(job, meter.reading, meter.device)
    finish_job(SamplingJob, job.pk, JobStatus.SUCCEEDED, compute=compute)


class SamplingProgress:
    """What a sampling job's page shows while it runs: the phase ("loading model 1 of 3",
    "sampling model 1 of 3: batch 2 of 5"), the outputs stored so far, updated as each
    batch lands, and an ETA from the throughput of this run (resumed outputs excluded)."""

    def __init__(self, job: SamplingJob, reporter: JobReporter, n_models: int) -> None:
        self.job = job
        self.reporter = reporter
        self.n_models = n_models
        # Outputs stored by an earlier attempt are not this run's: the ETA leaves them out.
        reporter.track(total=job.progress_total, start=job.generations.count())
        self.model = ""
        self.local = True
        self.todo = self.model_done = self.batches = self.batch_size = 0

    def for_model(self, index: int, version: ModelVersion) -> SamplingProgress:
        self.model = f"model {index} of {self.n_models}"
        self.local = version.base_model.is_local
        self.todo = self.model_done = self.batches = self.batch_size = 0
        return self

    def start(self, todo: int) -> None:
        self.todo = todo
        self.reporter.phase(
            f"loading {self.model}, then sampling its first batch"
            if self.local
            else f"sampling {self.model} through its API"
        )

    def landed(self, count: int) -> None:
        """``count`` new outputs are stored."""
        self.model_done += count
        self.batches += 1
        self.batch_size = self.batch_size or count
        fields = {"progress_done": self.job.generations.count()}
        if self.local and self.model_done < self.todo:
            batches = math.ceil(self.todo / self.batch_size)
            fields["phase"] = f"sampling {self.model}: batch {self.batches + 1} of {batches}"
        # A local batch takes seconds, so each one is written at once; remote outputs
        # arrive one by one and are written at the bounded rate.
        self.reporter.update(force=self.local, **fields)


def _done_slots(job: SamplingJob, version: ModelVersion) -> set[tuple[int, int]]:
    return set(
        job.generations.filter(model_version=version).values_list("prompt_index", "sample_index")
    )


def _sample_version(
    job: SamplingJob, version: ModelVersion, reporter: JobReporter, progress: SamplingProgress
) -> None:
    """Sample one model version's outputs, storing each batch as soon as it is generated,
    so that a crash or a cancel loses at most one batch and a re-run resumes after it."""
    from training.engine.generation import GenerationParams

    skip = _done_slots(job, version)
    texts = [prompt["text"] for prompt in job.prompts]
    if len(skip) >= len(texts) * job.n_samples:
        return
    params = GenerationParams(
        temperature=job.temperature, top_p=job.top_p, max_new_tokens=job.max_new_tokens,
        seed=job.seed,
    )
    todo = len(texts) * job.n_samples - len(skip)
    sampler = sampler_for(version)
    reporter.log(f"sampling {version.name} through {sampler}: {todo} outputs")

    def on_batch(generations) -> None:
        _store_generations(job, version, generations, params, sampler)
        progress.landed(len(generations))

    common = {
        "n": job.n_samples, "params": params, "skip": skip, "on_batch": on_batch,
        "should_cancel": reporter.should_cancel, "system_prompt": job.system_prompt or None,
    }
    base = version.base_model
    if base.is_local:
        path = version_local_path(version, reporter)
        progress.start(todo)
        _generate_local(sampler, path, texts, common)
        return
    from training.engine.remote import generate_openai_compatible

    progress.start(todo)
    generate_openai_compatible(
        remote_base_url(base),
        api_key_for(base),
        version.remote_model_id or base.model_id,
        texts,
        **common,
    )


def sampler_for(version: ModelVersion):
    """The backend that samples ``version`` on this worker (``vllm_sampling.Sampler``):
    vLLM or our batched generator for a local model (the ``SAMPLING_ENGINE`` setting), the
    OpenAI-compatible client for a remote one."""
    from training.engine.vllm_sampling import Sampler, choose_sampler

    if not version.base_model.is_local:
        return Sampler(REMOTE_BACKEND, "")
    return choose_sampler(settings.SAMPLING_ENGINE)


def _generate_local(sampler, path, texts: list[str], common: dict) -> None:
    from training.engine.vllm_sampling import VLLM

    if sampler.backend == VLLM:
        from training.engine.vllm_sampling import generate_vllm

        memory = settings.VLLM_GPU_MEMORY_UTILIZATION
        generate_vllm(path, texts, gpu_memory_utilization=memory, **common)
        return
    from training.engine.generation import generate_local

    generate_local(path, texts, **common)


def storable_text(text: str) -> str:
    """A model may emit a NUL byte token; PostgreSQL text refuses NUL, so it becomes U+FFFD
    (the replacement character) instead of failing the whole job."""
    return text.replace("\x00", "\ufffd")


def _store_generations(job, version, generations, params, sampler) -> None:
    """Insert outputs, each with the backend that sampled it; a slot that already has one
    keeps it (duplicate deliveries)."""
    rows = [
        Generation(
            job=job, model_version=version, prompt_index=g.prompt_index,
            sample_index=g.sample_index, prompt_text=job.prompts[g.prompt_index]["text"],
            text=storable_text(g.text), tokens_generated=g.tokens_generated,
            temperature=params.temperature,
            top_p=params.top_p, max_new_tokens=params.max_new_tokens, seed=g.seed,
            sampler_backend=sampler.backend, sampler_version=sampler.version,
        )
        for g in generations
    ]
    Generation.objects.bulk_create(rows, ignore_conflicts=True)
