"""``JobService``: what the API and CLI call to submit, read and cancel generation jobs."""

from __future__ import annotations

import re
import secrets
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from pydantic import ValidationError

from generator.models import HUB_ID, TINY_MODEL_ID, ModelCatalog, ModelError
from generator.request import GenerationRequest, GenerationSpec
from generator.schedulers import SCHEDULER_NAMES
from provenance.db.models import GenerationJob
from provenance.errors import (
    GenerationRequestError,
    JobFinishedError,
    NotFoundError,
    PromptRejectedError,
    UnknownModelError,
)
from provenance.jobs.runner import JobRunner
from provenance.jobs.store import JobRepository


class JobQueue(Protocol):
    """A queue backend: local (in-process thread) or celery (Redis broker, remote workers)."""

    name: str

    def start(self) -> None:
        """Start consuming jobs (the local worker thread; nothing for celery)."""

    def check_capacity(self) -> None:
        """Raise ``QueueFullError`` when no job can be queued now."""

    def enqueue(self, job_id: str) -> None:
        """Queue a created job by id."""

    def stop(self) -> None:
        """Stop consuming and release what the queue holds."""


class PromptFilter:
    """Refuses prompts containing a blocklisted term (whole words, case-insensitive)."""

    def __init__(self, terms: list[str]) -> None:
        self.terms = [t.strip() for t in terms if t.strip()]
        self._patterns = [re.compile(rf"(?<!\w){re.escape(t)}(?!\w)", re.IGNORECASE) for t in self.terms]

    def check(self, *texts: str | None) -> None:
        """Raise PromptRejectedError when any of the texts contains a blocked term."""
        for text in texts:
            if not text:
                continue
            for term, pattern in zip(self.terms, self._patterns, strict=True):
                if pattern.search(text):
                    raise PromptRejectedError(f"The prompt contains the blocked term {term!r}.")


def as_spec(spec: GenerationSpec | Mapping[str, Any]) -> GenerationSpec:
    """``spec`` as a ``GenerationSpec``; a mapping that breaks its limits is a ``GenerationRequestError``."""
    if isinstance(spec, GenerationSpec):
        return spec
    try:
        return GenerationSpec.model_validate(spec)
    except ValidationError as exc:
        raise GenerationRequestError(
            "; ".join(f"{'.'.join(map(str, e['loc'])) or 'request'}: {e['msg']}" for e in exc.errors())
        ) from None


@dataclass(frozen=True)
class GenerationLimits:
    """What ``JobService`` checks a request against: the operator's limits, default model, LoRA folder, blocklist."""

    max_image_side: int
    max_steps: int
    default_model: str
    lora_dir: Path  # API callers name LoRA files inside it only
    prompt_blocklist: tuple[str, ...] = ()


class JobService:
    """Submit, read and cancel generation jobs; checks requests against the operator's limits and blocklist."""

    def __init__(
        self,
        limits: GenerationLimits,
        jobs: JobRepository,
        catalog: ModelCatalog,
        runner: JobRunner,
        queue: JobQueue,
        *,
        model_gate: Callable[[Path], object] | None = None,
    ):
        self.limits = limits
        # PROVENANCE_REQUIRE_REGISTERED_MODELS: raises UnregisteredModelError for a model or LoRA no registered
        # model matches (provenance.lineage.models.ModelMatcher.require), so the request is refused before queueing.
        self.model_gate = model_gate
        self.jobs = jobs
        self.catalog = catalog
        self.runner = runner
        self.queue = queue
        self.prompt_filter = PromptFilter(list(limits.prompt_blocklist))

    def _confine(self, value: str, root: Path, what: str) -> str:
        """API callers name files inside the operator's folders only, never arbitrary server paths."""
        candidate = (root / value).resolve()
        if not candidate.is_relative_to(root.resolve()):
            raise UnknownModelError(f"{what} {value!r} must be a name inside {root.name}/, not a path outside it.")
        return str(candidate)

    def prepare(self, spec: GenerationSpec | Mapping[str, Any], *, trusted: bool = False) -> GenerationRequest:
        """Check what a schema cannot (the operator's limits, prompt filter, model) and fill defaults.

        ``trusted`` callers (the operator's CLI) may name any local path; API callers name models from
        ``PROVENANCE_MODELS``, the built-in tiny model, or folders/checkpoints inside the models folder,
        and LoRA files inside the LoRA folder. A mapping is read as a ``GenerationSpec`` first.
        """
        limits = self.limits
        request = as_spec(spec).model_dump()
        problems = []
        for name in ("width", "height"):
            value = request[name]
            if value % 8 or not 64 <= value <= limits.max_image_side:
                problems.append(f"{name} must be a multiple of 8 between 64 and {limits.max_image_side}, not {value}")
        if not 1 <= request["steps"] <= limits.max_steps:
            problems.append(f"steps must be between 1 and {limits.max_steps}")
        if request["scheduler"] is not None and request["scheduler"] not in SCHEDULER_NAMES:
            problems.append(f"scheduler must be one of {', '.join(SCHEDULER_NAMES)}")
        if problems:
            raise GenerationRequestError("; ".join(problems))
        self.prompt_filter.check(request["prompt"], request["negative_prompt"])
        request["model"] = request["model"] or limits.default_model
        if not trusted:
            model = request["model"]
            local = (self.catalog.models_dir / model).exists()
            if model not in self.catalog.aliases and model != TINY_MODEL_ID and (local or not HUB_ID.match(model)):
                request["model"] = self._confine(model, self.catalog.models_dir, "model")
            request["loras"] = [
                {**lora, "path": self._confine(lora["path"], limits.lora_dir, "LoRA")} for lora in request["loras"]
            ]
        if request["seed"] is None:
            request["seed"] = secrets.randbits(32)
        try:
            source = self.catalog.resolve(request["model"])
        except ModelError as exc:
            raise UnknownModelError(str(exc)) from None
        for lora in request["loras"]:
            if not Path(lora["path"]).is_file():
                raise UnknownModelError(f"LoRA file {lora['path']!r} not found.")
        if self.model_gate is not None:
            self.model_gate(Path(source.location))  # a hub id is no local path: it matches nothing
            for lora in request["loras"]:
                self.model_gate(Path(lora["path"]))
        return GenerationRequest.model_validate(request)

    def submit(self, spec: GenerationSpec | Mapping[str, Any], *, account_id: str | None = None) -> GenerationJob:
        """Validate, then queue the job (429 when the queue is full); its images belong to ``account_id``."""
        request = self.prepare(spec)
        self.queue.check_capacity()
        job = self.jobs.create(request, self.queue.name, account_id=account_id)
        try:
            self.queue.enqueue(job.id)
        except Exception:
            self.jobs.delete(job.id)
            raise
        return job

    def get(self, job_id: str) -> GenerationJob:
        """The job; NotFoundError when there is none."""
        job = self.jobs.get(job_id)
        if job is None:
            raise NotFoundError(f"No generation job {job_id!r}.")
        return job

    def cancel(self, job_id: str) -> GenerationJob:
        """Cancel a queued or running job; JobFinishedError when it has already finished."""
        job = self.get(job_id)
        if not self.jobs.cancel(job_id):
            raise JobFinishedError(f"Job {job_id} has already {job.status}; nothing to cancel.")
        return self.get(job_id)

    def close(self) -> None:
        """Stop the queue backend."""
        self.queue.stop()
