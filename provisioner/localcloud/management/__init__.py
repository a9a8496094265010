"""The local Azure Resource Manager endpoint, split the way moto splits a service.

- :mod:`.models`: state and logic, one method per ARM operation (with :mod:`.deployments`,
  :mod:`.whatif` and the persistent :mod:`.store`);
- :mod:`.provider`: what resources become on this machine (Azurite accounts, front-end
  processes of :mod:`.sites`);
- :mod:`.responses`: parse a request, one backend call, serialise the answer;
- :mod:`.urls`: the routes;
- :mod:`.server`: the ASGI app and the HTTPS process (``python -m
  provisioner.localcloud.management --home CDP_HOME --port PORT``);
- :mod:`.service`: how :class:`~provisioner.localcloud.LocalCloud` starts, recognises and
  stops that process beside Azurite.
"""
