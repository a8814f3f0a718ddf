"""runs-fleet's GitHub plugin: the GitHub port as a GitHub App over the REST API.

:class:`~runs_fleet_github.client.GitHubAppClient` authenticates as the App (an RS256
JWT), finds the installation that owns a repository, caches installation tokens until
five minutes before they expire, registers just-in-time runners, and retries throttled
or failing calls with bounded, jittered backoff. Tokens, JWTs, the private key and JIT
configs never appear in its errors or logs.
"""
