"""Base models: register them, find their weights on a worker, reach the remote ones."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from django.conf import settings
from django.db import transaction

from palmsweb.lib.keyenv import KeyEnvError, check_endpoint, check_key_env, read_key
from training.models import BaseModel, ModelVersion
from training.services.errors import TrainingError

if TYPE_CHECKING:
    from training.services.jobs import JobReporter

DEFAULT_MODEL_NAME = "SmolLM2-135M-Instruct"
REMOTE_KINDS = {BaseModel.Kind.OPENAI, BaseModel.Kind.OPENAI_COMPATIBLE, BaseModel.Kind.TOGETHER}
# The kinds that need a key: a local OpenAI-compatible server may take none.
KEYED_KINDS = {BaseModel.Kind.OPENAI, BaseModel.Kind.TOGETHER}
DEFAULT_KEY_ENV = {BaseModel.Kind.TOGETHER: "TOGETHER_API_KEY"}
DEFAULT_MODEL_PARAMETERS = 134_515_008


def artifacts_dir() -> Path:
    path = Path(settings.ARTIFACTS_DIR)
    path.mkdir(parents=True, exist_ok=True)
    return path


@transaction.atomic
def base_model_create(
    *,
    name: str,
    kind: str,
    path: str = "",
    model_id: str = "",
    base_url: str = "",
    api_key_env: str | None = None,
    parameter_count: int | None = None,
    is_default: bool = False,
) -> BaseModel:
    """Register a base model and the "base" model version that samples it as is. The kind
    picks the hosted provider (OpenAI, Together) that fine-tunes it, if any. A remote
    model's key variable and endpoint must be ones the operator allows (palmsweb.lib.keyenv);
    without one, the provider's usual variable (``TOGETHER_API_KEY``…) is named."""
    _validate_base_model(name=name, kind=kind, path=path, model_id=model_id, base_url=base_url)
    api_key_env = api_key_env or DEFAULT_KEY_ENV.get(kind, "OPENAI_API_KEY")
    if kind == BaseModel.Kind.TOGETHER and not base_url.strip():
        base_url = settings.TOGETHER_BASE_URL
    if kind in REMOTE_KINDS:
        try:
            check_key_env(api_key_env)
            check_endpoint(base_url)
        except KeyEnvError as error:
            raise TrainingError(str(error)) from None
    base = BaseModel.objects.create(
        name=name.strip(),
        kind=kind,
        path=path.strip(),
        model_id=model_id.strip(),
        base_url=base_url.strip(),
        api_key_env=api_key_env.strip(),
        parameter_count=parameter_count,
        is_default=is_default,
    )
    ModelVersion.objects.create(
        base_model=base,
        name=f"{base.name} (base)",
        arm=ModelVersion.Arm.BASE,
        path=base.path,
        remote_model_id=base.model_id,
        parameter_count=parameter_count,
    )
    return base


def _validate_base_model(*, name, kind, path, model_id, base_url) -> None:
    if not name.strip():
        raise TrainingError("A base model needs a name.")
    if BaseModel.objects.filter(name__iexact=name.strip()).exists():
        raise TrainingError(f"A base model named {name.strip()!r} already exists.")
    if kind == BaseModel.Kind.LOCAL_DIR:
        directory = Path(path)
        if not (directory / "config.json").is_file():
            raise TrainingError(f"{path!r} is not a Hugging Face model directory (no config.json).")
    elif kind in REMOTE_KINDS:
        if not model_id.strip():
            raise TrainingError("Give the model name the API knows it by.")
        if kind == BaseModel.Kind.OPENAI_COMPATIBLE and not base_url.strip():
            raise TrainingError("An OpenAI-compatible endpoint needs its base URL.")
    elif kind != BaseModel.Kind.PACKAGED:
        raise TrainingError(f"Unknown base model kind {kind!r}.")


def base_model_register_default() -> BaseModel:
    """Register the packaged SmolLM2-135M-Instruct once (conversion happens on first use)."""
    existing = BaseModel.objects.filter(kind=BaseModel.Kind.PACKAGED).first()
    if existing:
        return existing
    return base_model_create(
        name=DEFAULT_MODEL_NAME,
        kind=BaseModel.Kind.PACKAGED,
        parameter_count=DEFAULT_MODEL_PARAMETERS,
        is_default=True,
    )


def base_version(base_model: BaseModel) -> ModelVersion:
    return base_model.versions.get(arm=ModelVersion.Arm.BASE)


def local_model_path(base_model: BaseModel, reporter: JobReporter | None = None) -> Path:
    """Where the weights are on this worker; converts the packaged model on first use
    (and says so through ``reporter``: it takes a while, and only the first time)."""
    if base_model.kind == BaseModel.Kind.PACKAGED:
        from training.engine.loading import default_model_converted, default_model_dir

        if reporter is not None and not default_model_converted(artifacts_dir()):
            reporter.phase("converting the base model (first run only)")
        return default_model_dir(artifacts_dir())
    if base_model.kind == BaseModel.Kind.LOCAL_DIR:
        return Path(base_model.path)
    raise TrainingError(f"{base_model} is not a local model.")


def version_local_path(version: ModelVersion, reporter: JobReporter | None = None) -> Path:
    if version.arm == ModelVersion.Arm.BASE:
        return local_model_path(version.base_model, reporter)
    return Path(version.path)


def remote_base_url(base_model: BaseModel) -> str:
    """Where a remote model's requests (and its key) go: its OpenAI-compatible URL."""
    if base_model.kind == BaseModel.Kind.TOGETHER:
        return base_model.base_url or settings.TOGETHER_BASE_URL
    return base_model.base_url or settings.OPENAI_BASE_URL or "https://api.openai.com/v1"


def api_key_for(base_model: BaseModel) -> str:
    """The model's key, read now on the worker. The variable and the endpoint are checked
    against the operator's allow-lists again here: the row may predate them."""
    try:
        key = read_key(base_model.api_key_env or "OPENAI_API_KEY", url=remote_base_url(base_model))
    except KeyEnvError as error:
        raise TrainingError(f"{base_model}: {error}") from None
    if not key and base_model.kind in KEYED_KINDS:
        raise TrainingError(
            f"No API key: set the environment variable {base_model.api_key_env!r} on the workers."
        )
    return key or "not-needed"


def openai_backend(base_model: BaseModel):
    """The OpenAI fine-tuning API client for ``base_model``, with its key read now."""
    from training.engine.hosted.openai import OpenAIFineTuneBackend

    return OpenAIFineTuneBackend(
        api_key=api_key_for(base_model),
        base_url=remote_base_url(base_model),
    )
