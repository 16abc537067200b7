"""Everything between "this worker runs job X" and its outcome: runtimes, sandbox, limits, env.

The rest of the worker (dispatching, results, heartbeats) sees only this facade, so how code is
isolated can change without touching the job protocol. Group config reaches it through `apply`
(at start and on every hot reload): the group's sandbox and network setting, its limits, its
static variables and its dedicated scripts take effect for the next job, without a restart.
"""

from __future__ import annotations

import os

from services.common.log import Logger
from services.worker import sandbox
from services.worker.initsandbox import InitSandbox
from services.worker import languages
from services.worker.runner import SANDBOX_PATH, Outcome, job_env, run_job
from services.worker.workspace import Workspace, remove_tree
from services.worker.cgroups import Cgroups
from services.worker.sandbox import Policy
from services.worker.settings import WorkerSettings
from services.worker.warm import WarmPool
from shared import limits as lim
from shared.jobs import Job
from shared.routing import target_tag
from shared.tags import dedicated_tag
from shared.state import GroupConfig

INIT_ENV = ("PATH", "LANG")


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
        self.ws = Workspace(settings.work_dir, sandbox.default_uid())
        self.cgroups, self.cgroup_note = Cgroups.detect()
        self.warm = WarmPool(self.ws, self.cgroups)
        self.init: InitSandbox | None = None
        self.policy = self._policy(None)
        if self.policy.kind == "none":
            self.logger.warning(
                "sandbox_off", sandbox="none", warning="JOBS RUN WITHOUT A SANDBOX: every job"
                " can read what this worker's user can read, see every process and outlive"
                " itself (docs/security.md)", note=self.note())
        if self.cgroups is None:
            self.logger.warning("cgroups_unavailable", note=self.cgroup_note,
                                effect="memory is limited per process; processes per job are"
                                       " not limited")

    def _policy(self, config: GroupConfig | None) -> Policy:
        kind = (config.sandbox if config and config.sandbox else None) or self.settings.sandbox
        network = config.network if config else True
        return Policy(kind=kind, network=network, limits=lim.effective(
            config.limits if config else None), uid=sandbox.default_uid(),
            devices=self.settings.devices)

    def apply(self, config: GroupConfig | None) -> bool:
        """Take a group's (new) config: sandbox, limits, static env, dedicated warm processes.
        True when how code is isolated changed (an init script then runs again, in the new
        sandbox: its daemons must not stay in the old one)."""
        self.config = config
        old, self.policy = self.policy, self._policy(config)
        self.dedicated_tags = {target_tag(t) for t in config.dedicated} if config else set()
        self.warm.keep_only(self.dedicated_tags)
        return old != self.policy

    def unavailable(self) -> str | None:
        """Why jobs cannot run as configured here (a group asking for bwrap where it can't)."""
        if self.policy.kind == "bwrap":
            return sandbox.probe()
        return None

    def note(self) -> str | None:
        """What a user should know about isolation on this worker (heartbeat, Workers page)."""
        notes = []
        if self.policy.kind == "none":
            notes.append("no sandbox: " + (sandbox.probe() or "JOB_SANDBOX=none or the group's"
                                           " sandbox setting"))
        elif why := self.unavailable():
            notes.append(f"the group asks for bwrap but {why}: its jobs fail")
        if self.cgroup_note:
            notes.append(f"no cgroups ({self.cgroup_note}): memory limited per process")
        return "; ".join(notes) or None

    def isolation(self) -> tuple[str, bool, str | None]:
        """(sandbox, network, note) for heartbeats: how this worker's jobs are isolated."""
        return self.policy.kind, self.policy.network, self.note()

    def timeout(self, job: Job) -> float:
        """The job's timeout, else the worker's default, never above the group's max_timeout."""
        cap = self.policy.limits.max_timeout or lim.DEFAULTS.max_timeout or lim.MAX_TIMEOUT
        return min(job.timeout or self.settings.job_timeout, cap)

    async def run(self, tag: str, job: Job) -> Outcome:
        """Run one (non-flow) job to its outcome; never raises for a failing script."""
        if why := self.unavailable():
            return Outcome(status="failure", error=f"this worker cannot sandbox jobs: {why}")
        timeout = self.timeout(job)
        policy = self.policy
        boxed = policy.kind == "bwrap"
        static = self.config.env if self.config else {}
        extra = {**static, "GO_WORKER_ID": self.worker_id, "GO_WORKER_GROUP": self.group or ""}
        init_dir = self.init.dir if self.init is not None else None
        if init_dir is not None:
            extra["GO_INIT_DIR"] = sandbox.INIT_POINT if boxed else str(init_dir)
        base = job_env(job, extra, self.settings.env_allowlist, sandboxed=boxed)
        found = languages.registry()
        lang = found.get(job.language)
        warm = getattr(lang, "warm_launch", None)
        if (warm is not None and tag in self.dedicated_tags and job.kind == "script"
                and job.path is not None and dedicated_tag(job.workspace, job.path) == tag):
            # Only the dedicated script's own jobs share its runtime: any other job that reached
            # this tag (an inline job an admin sent there) runs cold, never inside it.
            per_job = {"GO_JOB_ID": job.id, "GO_WORKSPACE": job.workspace, "GO_TAG": job.tag}
            ctx = languages.Context(runtime=found.found[job.language], timeout=timeout,
                                    cache=self.settings.cache_dir, network=policy.network)
            try:
                launch = await warm(job, ctx)
            except languages.PrepareFailed as exc:
                return Outcome(status="failure", error=str(exc), logs=exc.logs)
            return await self.warm.run(tag, launch, job.args, per_job, timeout, base, policy,
                                       init_dir)
        return await run_job(job, ws=self.ws, policy=policy, env=base, timeout=timeout,
                             cgroups=self.cgroups, cache=self.settings.cache_dir,
                             init_dir=init_dir)

    async def run_init(self, script: str) -> tuple[bool, str]:
        """Run the group's init script in its own lasting sandbox; (ok, log tail)."""
        if why := self.unavailable():
            return False, f"this worker cannot sandbox its init script: {why}"
        if self.init is not None:  # its daemons and cgroup gone before the next run starts
            await self.init.close()
        self.init = InitSandbox(self.ws, self.policy, self.cgroups)
        env = {k: os.environ[k] for k in INIT_ENV if k in os.environ}
        if self.policy.kind == "bwrap":
            env.update(PATH=SANDBOX_PATH, HOME=sandbox.INIT_POINT, TMPDIR="/tmp")
        env["GO_INIT_DIR"] = (sandbox.INIT_POINT if self.policy.kind == "bwrap"
                              else str(self.init.dir))
        return await self.init.run(script, env, self.settings.init_timeout)

    def stop(self) -> None:
        """The worker is stopping: no warm process, init daemon or cgroup may outlive it."""
        self.warm.stop_all()
        if self.init is not None:
            self.init.stop()
        if self.cgroups is not None:
            self.cgroups.remove()
        if self.settings.work_dir_owned:
            remove_tree(self.settings.work_dir)
