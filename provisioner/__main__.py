"""``python -m provisioner``: the same as the ``cdp`` command."""

from provisioner.cli.main import main

if __name__ == "__main__":
    main()
