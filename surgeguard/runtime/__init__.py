"""What the processes run on: embedded Redis and Postgres, child processes, the Redis client."""
