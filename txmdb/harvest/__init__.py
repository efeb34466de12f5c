"""The folder harvester (DESIGN §12): watch rules, complete-file checks, the durable record of every
file seen, and the watcher that ingests files as instruments finish writing them."""
