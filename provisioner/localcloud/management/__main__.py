from provisioner.localcloud.management.server import main

main()
