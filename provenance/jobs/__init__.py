"""Generation jobs: submit, queue, run (generate then certify every image), cancel.

The same job code (``JobRunner.run``) runs in the in-process worker (default, one GPU) and in
Celery workers over Redis (many GPU machines). Job state lives in the database, so any process
can report it, and a worker that dies mid-job leaves a job that is retried or failed, never lost.
"""
