"""Content: what the distribution manager does to a package before and while it leaves the site.

- :mod:`layout`   where a package lives in a distribution point's storage (pure; the front end uses it too)
- :mod:`keys`     per-package content and id keys, wrapped by the site master key
- :mod:`crypto`   AES-256-GCM blobs and keyed chunk ids
- :mod:`chunking` FastCDC over the package stream
- :mod:`manifest` scanning PATH, the package stream, the manifest of a version
- :mod:`store`    one package's container in one distribution point, and the site chunk index
- :mod:`upload`   storing a version in one or more distribution points

This package imports nothing from Azure; :mod:`store` and :mod:`upload` do.
"""
