-- One order and its OrderPlaced event, in one statement of the caller's transaction
-- (psql -1 -v customer=c1 -v amount=12.50 -f place_order.sql).
WITH placed AS (
  INSERT INTO orders (customer, amount) VALUES (:'customer', :amount)
  RETURNING id, customer, amount
)
INSERT INTO outbox (id, aggregatetype, aggregateid, type, payload)
SELECT gen_random_uuid(), 'order', id::text, 'OrderPlaced',
       jsonb_build_object('order_id', id, 'customer', customer, 'amount', amount)
FROM placed;
