"""The in-process job backend: one worker thread on the one GPU, a bounded queue.

Generation and certification overlap: while the certification thread watermarks, signs and pins
the images of one job (CPU), the worker thread already runs the next job's diffusion (GPU).
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

from provenance.errors import QueueFullError
from provenance.jobs.runner import JobRunner, is_transient

log = logging.getLogger(__name__)
_STOP = "__stop__"
RETRY_START_S = 2.0


class LocalJobQueue:
    """Jobs run in this process: a generation thread and a certification thread, a bounded queue."""

    name = "local"

    def __init__(self, runner: JobRunner, *, max_queued: int) -> None:
        self.runner = runner
        self.max_queued = max_queued
        self._queue: queue.Queue[str | Callable[[], None]] = queue.Queue()  # job ids, or other work (training)
        self._certify = ThreadPoolExecutor(max_workers=1, thread_name_prefix="certify")
        self._thread = threading.Thread(target=self._run, name="generation-worker", daemon=True)

    def start(self) -> None:
        """Queue the jobs a previous process left unfinished, then start the worker thread."""
        # Jobs a previous process left queued or running come back first; `start` counts attempts.
        for job in self.runner.jobs.unfinished(self.name):
            self._queue.put(job.id)
        self._thread.start()

    def check_capacity(self) -> None:
        """Refuse a job (QueueFullError) when max_queued jobs wait already."""
        if self._queue.qsize() >= self.max_queued:
            raise QueueFullError(f"The generation queue is full ({self.max_queued} jobs waiting); retry later.")

    def enqueue(self, job_id: str) -> None:
        """Queue a job id for the worker thread."""
        self._queue.put(job_id)

    def enqueue_task(self, task: Callable[[], None]) -> None:
        """Queue other device work (a LoRA training run) for the worker thread: it runs between two jobs."""
        self._queue.put(task)

    def _run(self) -> None:
        while True:
            job_id = self._queue.get()
            if job_id == _STOP:
                return
            if callable(job_id):  # a training run: it records its own failure
                try:
                    job_id()
                except Exception:
                    log.exception("a task crashed the worker loop")
                continue
            try:
                generated = self.runner.generate_phase(job_id)
                if generated is not None:
                    self._certify.submit(self.runner.certify_phase, job_id, generated[1])
            except Exception as exc:  # never let one job kill the worker
                if is_transient(exc):  # the database could not start the job: it is still queued there
                    log.warning("job %s could not start (%s); trying again in %.0fs", job_id, exc, RETRY_START_S)
                    timer = threading.Timer(RETRY_START_S, self._queue.put, args=(job_id,))
                    timer.daemon = True
                    timer.start()
                else:
                    log.exception("job %s crashed the worker loop", job_id)

    def stop(self) -> None:
        """Stop the worker thread after its current job and wait for the pending certifications."""
        self._queue.put(_STOP)
        if self._thread.is_alive():
            self._thread.join(timeout=60)
        self._certify.shutdown(wait=True)
