"""Running sekmet's workflows, through its web console over HTTP or through its CLI."""

from __future__ import annotations

import html
import json
import re
import subprocess
from collections.abc import Mapping
from pathlib import Path
from typing import Literal

from fhirbridge.testing.sekmet._command import clean_env, sekmet_command
from fhirbridge.testing.sekmet._errors import SekmetWorkflowError
from fhirbridge.testing.sekmet._fhir import JSON
from fhirbridge.testing.sekmet._rest import RestCalls

WorkflowVia = Literal["http", "cli"]

_PRE_RE = re.compile(r"<pre>(.*?)</pre>", re.DOTALL)
_FAILED_RE = re.compile(r'<p class="bad"><b>Failed:</b>(.*?)</p>', re.DOTALL)
_TAG_RE = re.compile(r"<[^>]+>")


def _parse_workflow_html(key: str, status: int, text: str) -> JSON:
    """Turn the console's HTML answer to ``POST /ui/workflows/{key}`` into the result JSON."""
    if status != 200:
        raise SekmetWorkflowError(f"workflow {key}: HTTP {status}: {text[:500]}")
    failed = _FAILED_RE.search(text)
    if failed:
        reason = html.unescape(_TAG_RE.sub("", failed.group(1))).strip()
        raise SekmetWorkflowError(f"workflow {key} failed: {reason}")
    pre = _PRE_RE.search(text)
    if pre is None:
        raise SekmetWorkflowError(f"workflow {key}: no result in the answer: {text[:500]}")
    result = json.loads(html.unescape(pre.group(1)))
    if not isinstance(result, dict):
        raise SekmetWorkflowError(f"workflow {key}: result is not an object: {result!r:.200}")
    return result


class WorkflowRunner(RestCalls):
    """Runs sekmet workflows by key; the hospital workflows are built on :meth:`run_workflow`.

    Expects the server to set :attr:`workdir`, :attr:`settings_path` and :attr:`workflow_via`.
    """

    workdir: Path
    settings_path: Path
    workflow_via: WorkflowVia
    _facility: JSON | None

    def run_workflow(
        self,
        key: str,
        args: Mapping[str, object] | None = None,
        *,
        target: str = "local",
        via: WorkflowVia | None = None,
    ) -> JSON:
        """Run the sekmet workflow ``key`` (see ``sekmet workflow list``) and return its result.

        ``args`` are the workflow's parameters (``None`` values are left out, booleans become
        the console's checkbox or the CLI's true/false).  ``target`` is sekmet's: ``local``
        writes straight into the store (origin "internal": no inbound validation, the
        simulator does not react); ``self`` makes the server call its own REST API (origin
        "external": validated, simulator reacts; needs a bearer token or basic user when
        ``server_auth`` is on).  ``via`` picks the web console over HTTP (default, fast,
        in-process) or ``sekmet workflow run`` in :attr:`workdir` (slow; its subscription
        notifications are sent by the CLI process).  The result maps names such as
        ``patient`` or ``encounter`` to resources, plus ``_meta``.
        """
        via = via or self.workflow_via
        args = {k: v for k, v in (args or {}).items() if v is not None}
        if via == "cli":
            return self._run_workflow_cli(key, args, target)
        form: dict[str, str] = {"_target": target}
        for name, value in args.items():
            if isinstance(value, bool):
                if value:
                    form[name] = "on"
            else:
                form[name] = str(value)
        response = self._http.post(
            f"{self.root_url}/ui/workflows/{key}", data=form, headers={"HX-Request": "true"}
        )
        return _parse_workflow_html(key, response.status_code, response.text)

    def _run_workflow_cli(self, key: str, args: Mapping[str, object], target: str) -> JSON:
        argv = [
            *sekmet_command(),
            "workflow",
            "run",
            key,
            "--target",
            target,
            "--config",
            str(self.settings_path),
        ]
        for name, value in args.items():
            text = str(value).lower() if isinstance(value, bool) else str(value)
            argv += ["--arg", f"{name}={text}"]
        done = subprocess.run(  # noqa: S603 - argv is built here from fixed parts and paths
            argv,
            cwd=self.workdir,
            capture_output=True,
            text=True,
            timeout=300,
            env=clean_env(),
            check=False,
        )
        if done.returncode != 0:
            tail = "\n".join((done.stderr or done.stdout).splitlines()[-15:])
            raise SekmetWorkflowError(
                f"sekmet workflow run {key} exited {done.returncode}:\n{tail}"
            )
        result = json.loads(done.stdout)
        if not isinstance(result, dict):
            raise SekmetWorkflowError(f"workflow {key}: result is not an object")
        return result

    def facility(self) -> JSON:
        """sekmet's master data (workflow ``adt.facility``), fetched once and cached.

        Keys look like ``org:hospital``, ``location:bed-401-1``, ``practitioner:attending``,
        ``role:nurse``; values are the resources.
        """
        if self._facility is None:
            self._facility = self.run_workflow("adt.facility")
        return self._facility
