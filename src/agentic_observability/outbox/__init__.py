"""The act stage's outbox: what each sink is told (``plan.py``, one planning entry per sink), the
sinks the config enables (``sinks.py``) and the dispatcher that delivers each action exactly once,
in order per incident and sink (``dispatcher.py``)."""
