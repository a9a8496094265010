"""The client side: what a device does with its access bundle (``cdp locate``, ``cdp fetch``).

- :mod:`sources`  ask the bundle's content sources in priority order for a location, with fallback
- :mod:`staging`  the destination folder: what it holds, the staging area, resume and delta
- :mod:`fetch`    download, verify, decrypt and install one package version

A client holds nothing but its bundle: the token it shows to a distribution point's front end,
the keys that decrypt content, and the CA that proves a local cloud's HTTPS endpoints.
"""
