"""The command line: parses options, prints results, picks exit codes. The library does the work."""
