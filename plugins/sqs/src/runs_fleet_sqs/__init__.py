"""runs-fleet job queue on Amazon SQS."""
