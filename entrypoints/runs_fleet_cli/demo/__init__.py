"""``runs-fleet demo``: the whole path of a job, on this machine, in about ten seconds.

It starts the GitHub simulator and ``runs-fleet serve`` in local mode as two separate
processes (the same code that serves a real GitHub App), queues six jobs through the
simulator's signed webhooks, prints each job's timeline as it happens and a summary,
then stops everything and removes its temporary directory, also on Ctrl-C. Only GitHub
is simulated; everything on runs-fleet's side is the production code path.
"""
