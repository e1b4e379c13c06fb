"""Remediation with a person in the loop (issue 22): the catalogue in config says which actions exist;
``catalogue.propose`` matches them to an incident (pure), ``guardrails`` decides whether one may run now
(pure), and the ``Executor`` runs one through ``kube`` (lightkube) or ``http_action`` (aiohttp), each
run answering with an ``Outcome`` rather than an exception. Nothing here decides *to* act: a person's
approval (or an ``auto`` entry within its limits) does, and nothing outside the catalogue is ever run.
"""
