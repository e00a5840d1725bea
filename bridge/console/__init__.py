"""The web console: server-rendered pages (Jinja2, htmx for partial updates) for data managers, annotators
and reviewers, served by `serve` beside the API with the same tokens, roles and checks."""
