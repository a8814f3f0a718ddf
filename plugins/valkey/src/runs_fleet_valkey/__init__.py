"""runs-fleet's Valkey plugin: the job queue on Valkey Streams and the shared StateStore.

Import the adapters from their modules (:mod:`runs_fleet_valkey.queue`,
:mod:`runs_fleet_valkey.state`); this package module stays empty so that loading the
plugin's entry point (:mod:`runs_fleet_valkey.plugin`) never imports the Valkey client.
"""
