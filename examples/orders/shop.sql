-- The shop's database: its orders, and the outbox that tells others about them (Debezium's shape).
CREATE TABLE orders (
  id        BIGSERIAL PRIMARY KEY,
  customer  TEXT NOT NULL,
  amount    NUMERIC(12,2) NOT NULL,
  placed_at TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE TABLE outbox (
  id            UUID PRIMARY KEY,   -- the message id: the topic stores each once
  aggregatetype TEXT NOT NULL,      -- the topic: outbox.event.{aggregatetype}
  aggregateid   TEXT NOT NULL,      -- the record key: one order's events in order
  type          TEXT NOT NULL,      -- header type
  payload       JSONB NOT NULL,     -- the record value
  created_at    TIMESTAMPTZ NOT NULL DEFAULT now()
);
