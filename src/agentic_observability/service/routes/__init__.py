"""The HTTP routes, one module per feature, each with its own ``routes`` table (composed in
``service/app.py``): the Alertmanager webhook, the incident API, ad-hoc analysis, health and
metrics, and the OpenAPI document with its docs page."""
