"""Load-aware expert placement and replication: loads, the EPLB baseline and lower bounds."""
