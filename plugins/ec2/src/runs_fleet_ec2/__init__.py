"""runs-fleet on EC2: Fleet provider, warm pools, DynamoDB state store, SSM config store."""
