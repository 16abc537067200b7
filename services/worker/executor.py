"""Everything between "this worker runs job X" and its outcome: runtimes, sandbox, limits, env.

The rest of the worker (dispatching, results, heartbeats) sees only this facade, so how code is
isolated can change without touching the job protocol. Group config reaches it through `apply`
(at start and on every hot reload).
"""

from __future__ import annotations

from services.common.log import Logger
from services.worker.runner import Outcome, job_env, run_init_script, run_job
from services.worker.settings import WorkerSettings
from services.worker.warm import WarmPool
from shared.jobs import Job
from shared.routing import target_tag
from shared.state import GroupConfig


class Executor:
    """Runs jobs and init scripts for one worker, with its group's current config."""

    def __init__(self, settings: WorkerSettings, worker_id: str, group: str | None,
                 logger: Logger):
        self.settings = settings
        self.worker_id = worker_id
        self.group = group
        self.logger = logger
        self.config: GroupConfig | None = None
        self.dedicated_tags: set[str] = set()
        self.warm = WarmPool(settings.work_dir, {})

    def apply(self, config: GroupConfig | None) -> None:
        """Take a group's (new) config: static env, dedicated warm processes."""
        self.config = config
        self.dedicated_tags = {target_tag(t) for t in config.dedicated} if config else set()
        self.warm.keep_only(self.dedicated_tags)

    def isolation(self) -> tuple[str, bool, str | None]:
        """(sandbox, network, note) for heartbeats: how this worker's jobs are isolated."""
        return "none", True, None

    async def run(self, tag: str, job: Job) -> Outcome:
        """Run one (non-flow) job to its outcome; never raises for a failing script."""
        timeout = job.timeout or self.settings.job_timeout
        static = self.config.env if self.config else {}
        extra = {**static, "GO_WORKER_ID": self.worker_id, "GO_WORKER_GROUP": self.group or ""}
        if tag in self.dedicated_tags and job.language == "python3":
            per_job = {"GO_JOB_ID": job.id, "GO_WORKSPACE": job.workspace, "GO_TAG": job.tag}
            base = job_env(job, extra, self.settings.env_allowlist)
            return await self.warm.run(tag, job.code, job.args, per_job, timeout, base)
        return await run_job(job, work_root=self.settings.work_dir, timeout=timeout,
                             extra_env=extra, allowlist=self.settings.env_allowlist)

    async def run_init(self, script: str) -> tuple[bool, str]:
        """Run the group's init script; (ok, log tail)."""
        import os

        return await run_init_script(
            script, work_dir=self.settings.work_dir, timeout=self.settings.init_timeout,
            env={k: os.environ[k] for k in ("PATH", "HOME", "LANG") if k in os.environ},
        )

    def stop(self) -> None:
        """The worker is stopping: no warm process may outlive it."""
        self.warm.stop_all()


