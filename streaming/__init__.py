"""The streaming core: the event schema, per-reply event logs in Redis, and what a web process
holds to run replies (generation slots, per-user notice feeds). Nothing here knows conversations,
plans or providers; `chat/` and the doors build on it."""
