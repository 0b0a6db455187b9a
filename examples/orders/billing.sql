-- Billing's database: one invoice per order (once sink adds its own once_sink_offsets table).
CREATE TABLE invoices (
  order_id    BIGINT NOT NULL,
  customer    TEXT NOT NULL,
  amount      NUMERIC(12,2) NOT NULL,
  invoiced_at TIMESTAMPTZ NOT NULL DEFAULT now()
);
