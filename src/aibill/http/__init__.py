"""HTTP plumbing shared by the API (``aibill.api``) and the dashboard
(``aibill.web``): the HTTP status of each domain error, the security headers
of pages, the body-size limits and the authentication throttle.

Both may import this package; neither imports the other (except that the
API's app, the top of the graph, mounts the dashboard). See
docs/architecture.md.
"""
