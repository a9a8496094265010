"""The front end of a distribution point: the web app that runs on its App Service plan.

Locally it is a process (``python -m provisioner.frontend``) started by the local management
endpoint for each ``Microsoft.Web/sites`` resource, with the site's app settings as its
environment, as App Service gives them; it answers ``GET /health`` (the template's health
check path) and the routes of :mod:`provisioner.frontend.app`.
"""
